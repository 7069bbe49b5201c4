// The network a chaos run puts its nodes on, and the faults the nemesis injects into it. Two kinds
// stand behind one interface, chosen at creation:
//   netns  one network namespace per node on a bridge (root only): partitions are kernel drops
//   proxy  every node on 127.0.0.1, every ordered pair of nodes through a link proxy (anyone)
// In both, slow and lossy links are the link proxy's (link_proxy.ts): this kernel has no netem.
// docs/chaos-network.md says what each fault is on the wire.

import { ID_PATTERN } from "../../src/cli/config.js";
import { NetnsNetwork, probeNetns } from "./netns.js";
import { ProxyNetwork } from "./proxy.js";

export interface NodeAddresses {
  readonly id: string;
  /** HOST:PORT clients (in the runner's namespace) use. */
  readonly http: string;
  /** HOST:PORT */
  readonly grpc: string;
  /** What to pass to the server's --peer. */
  readonly listenPeer: string;
  /** What to pass to --advertise-peer and to --initial-cluster / members add. */
  readonly advertisePeer: string;
  /** What to pass to --http. */
  readonly listenHttp: string;
  /** What to pass to --grpc. */
  readonly listenGrpc: string;
}

/** A slow, lossy link, one direction. */
export interface LinkFault {
  readonly delayMs: number;
  /** Each chunk's delay is delayMs plus or minus up to jitterMs, uniformly (never below 0). */
  readonly jitterMs: number;
  /** The chance, in percent, that a chunk meets a lost segment and waits out a retransmission. */
  readonly lossPercent: number;
}

export type NetworkKind = "netns" | "proxy";

export interface ChaosNetwork {
  readonly kind: NetworkKind;
  /** Why this kind was chosen (e.g. "netns: root and ip netns work; netem missing, links degraded by the link proxy"). */
  readonly reason: string;
  /** All node ids that may ever exist in the run (founders and spares for membership changes), fixed at creation. */
  readonly ids: readonly string[];
  addresses(id: string): NodeAddresses;
  /** Extra flags for node id's `cairn server` (e.g. --peer-via in proxy mode). */
  serverArgs(id: string): string[];
  /** The command line that runs `command args` as node id (inside its namespace in netns mode). */
  wrap(id: string, command: string, args: readonly string[]): { command: string; args: string[] };
  /** Drops all traffic from `from` to `to` (one direction; call twice for both). Idempotent. */
  cut(from: string, to: string): Promise<void>;
  /** Degrades the link from -> to. */
  degrade(from: string, to: string, fault: LinkFault): Promise<void>;
  /** Removes every cut and degradation. */
  heal(): Promise<void>;
  /** Removes every namespace, interface, proxy and process this network made. Safe to call twice. */
  close(): Promise<void>;
}

export interface CreateNetworkOptions {
  readonly ids: readonly string[];
  /** auto (the default): netns when root and a scratch namespace can be made, else proxy. */
  readonly prefer?: NetworkKind | "auto";
  /** Names this run's namespaces and interfaces (with the runner's pid), so concurrent runs do not clash. */
  readonly runTag: string;
  /** Seeds the link proxies' delays and losses (default: derived from runTag). */
  readonly seed?: number;
}

/** The environment variable that forces a kind, over `prefer`. */
export const NETWORK_KIND_ENV = "CAIRN_CHAOS_NETWORK";

/** More nodes than any run needs; the netns kind numbers node addresses .10 upwards in one /24. */
export const NETWORK_NODES_MAX = 64;

export async function createNetwork(opts: CreateNetworkOptions): Promise<ChaosNetwork> {
  checkIds(opts.ids);
  const forced = process.env[NETWORK_KIND_ENV];
  if (forced !== undefined && forced !== "" && forced !== "netns" && forced !== "proxy") {
    throw new Error(`${NETWORK_KIND_ENV} must be "netns" or "proxy" (or unset for auto), not "${forced}"`);
  }
  const prefer = forced !== undefined && forced !== "" ? forced : opts.prefer ?? "auto";
  const because = forced !== undefined && forced !== "" ? `forced by ${NETWORK_KIND_ENV}=${forced}` : `asked for ${prefer}`;
  const seed = opts.seed ?? tagHash(opts.runTag);
  if (prefer === "proxy") return ProxyNetwork.create({ ids: opts.ids, seed, reason: `proxy: ${because}` });
  const probe = await probeNetns();
  if (probe.ok) {
    const degrading = probe.netem ? "netem works but links are degraded by the link proxy, as in proxy mode" : "netem missing, links degraded by the link proxy";
    const why = prefer === "auto" ? "root and ip netns work" : because;
    return NetnsNetwork.create({ ids: opts.ids, runTag: opts.runTag, seed, reason: `netns: ${why}; ${degrading}` });
  }
  if (prefer === "netns") {
    throw new Error(`a netns chaos network was ${because}, but ${probe.reason}; run as root on Linux with iproute2, or use ${NETWORK_KIND_ENV}=proxy`);
  }
  return ProxyNetwork.create({ ids: opts.ids, seed, reason: `proxy: ${probe.reason}` });
}

function checkIds(ids: readonly string[]): void {
  if (ids.length === 0) throw new Error("a chaos network needs at least one node id");
  if (ids.length > NETWORK_NODES_MAX) throw new Error(`a chaos network holds at most ${NETWORK_NODES_MAX} nodes, not ${ids.length}`);
  const seen = new Set<string>();
  for (const id of ids) {
    if (!ID_PATTERN.test(id)) throw new Error(`node id "${id}" must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit (as cairn server's --id)`);
    if (seen.has(id)) throw new Error(`node id ${id} is given twice`);
    seen.add(id);
  }
}

/** Refuses a fault no link could have, saying which field is wrong. */
export function checkLinkFault(fault: LinkFault): void {
  const { delayMs, jitterMs, lossPercent } = fault;
  if (!Number.isFinite(delayMs) || delayMs < 0) throw new Error(`a link fault's delayMs must be 0 or more, not ${delayMs}`);
  if (!Number.isFinite(jitterMs) || jitterMs < 0) throw new Error(`a link fault's jitterMs must be 0 or more, not ${jitterMs}`);
  if (!Number.isFinite(lossPercent) || lossPercent < 0 || lossPercent > 100) throw new Error(`a link fault's lossPercent must be from 0 to 100, not ${lossPercent}`);
}

/** A 32-bit FNV-1a hash: a stable number from a run tag, for seeds and names. */
export function tagHash(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** Throws unless `id` is one of the network's nodes. */
export function checkKnownId(ids: readonly string[], id: string): void {
  if (!ids.includes(id)) throw new Error(`node ${id} is not on this chaos network (it has ${ids.join(", ")}); give every id, spares too, at creation`);
}
