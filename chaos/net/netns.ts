// The chaos network for root on Linux: one network namespace per node, each joined by a veth pair
// to a bridge in the runner's namespace, on a /24 of its own. Clients in the runner's namespace
// reach every node through the bridge; the nodes reach each other the same way.
//
//   runner (10.x.y.1 on bridge cb<tag>) ── cv<tag><i> ═══ cn<tag><i> ── ns cairn-<tag>-<id> (10.x.y.(10+i))
//
// A cut from A to B is a policy rule in B's namespace that blackholes packets arriving on B's veth
// from A's address: the kernel drops them silently, so A's TCP retransmits into the void and its
// connects hang, as in a real partition. Blackhole, not prohibit or unreachable, because those
// answer with an ICMP error and the sender fails at once. And on the receiving side, not as a
// blackhole route in A's namespace: a route there makes A's own connect() fail with EINVAL at
// once, which is a refusal, not a partition. The rule names A's address only, so the runner's
// clients (from the bridge's address) still reach B.
//
// Slow links: each node's advertised peer address is a link proxy inside its namespace, in front
// of the server's real peer listener on 127.0.0.1 there; it names the sending node by the
// connection's source address. It is a process of its own, so it stays up while the server is
// killed and restarted.
//
// Ownership: the bridge, made first and removed last, carries the alias "cairn-chaos pid=P tag=T".
// A later run removes every namespace and interface of a tag whose pid is gone (cleanupStale).

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { errorMessage } from "../../src/common/errors.js";
import { LINK_PROXY_MAIN_PATH, type LinkProxyChildConfig, LinkProxyChild } from "./link_proxy_ipc.js";
import { type ChaosNetwork, type LinkFault, type NodeAddresses, checkKnownId, checkLinkFault, tagHash } from "./network.js";

const execFileAsync = promisify(execFile);

/** Every namespace this module makes starts with it. */
export const NAMESPACE_PREFIX = "cairn-";
const LINK_ALIAS_PREFIX = "cairn-chaos";
const LINK_ALIAS_PATTERN = /^cairn-chaos pid=(\d+) tag=([0-9a-z]+)$/;

// Each node has its own namespace, so every node uses the same ports.
const NODE_HTTP_PORT = 8500;
const NODE_GRPC_PORT = 8502;
/** The advertised peer port: the node's inbound link proxy. */
const NODE_PEER_PORT = 7000;
/** The server's real peer listener, on the namespace's loopback, reached only through the proxy. */
const SERVER_PEER_PORT = 7001;
/** The first node's host number in the /24; .1 is the bridge (the runner). */
const NODE_HOST_FIRST = 10;
/** Cut rules sit before the local table, which is moved from preference 0 to this one. */
const CUT_RULE_PREF = 10;
const LOCAL_RULE_PREF = 100;
/** Second octets the /24s are drawn from (10.200.0.0 - 10.249.255.255), and how many to try. */
const SUBNET_SECOND_OCTET_MIN = 200;
const SUBNET_SECOND_OCTET_SPAN = 50;
const SUBNET_CANDIDATES_MAX = 64;

interface NetnsNode {
  readonly id: string;
  readonly index: number;
  readonly namespace: string;
  readonly ip: string;
  /** The veth end in the runner's namespace, and the one inside the node's. */
  readonly hostVeth: string;
  readonly nodeVeth: string;
  readonly addresses: NodeAddresses;
}

export interface NetnsProbe {
  readonly ok: boolean;
  /** Why not, when not ok. */
  readonly reason: string;
  /** Whether `tc qdisc ... netem` works (reported only: links are degraded by the link proxy either way). */
  readonly netem: boolean;
}

let probed: Promise<NetnsProbe> | undefined;

/** Whether this process can make namespaces: root, and a scratch namespace comes and goes. Probed once. */
export function probeNetns(): Promise<NetnsProbe> {
  probed ??= probeOnce();
  return probed;
}

async function probeOnce(): Promise<NetnsProbe> {
  if (process.platform !== "linux") return { ok: false, reason: `network namespaces need Linux, and this is ${process.platform}`, netem: false };
  const uid = process.getuid?.();
  if (uid !== 0) return { ok: false, reason: `not root (uid ${uid}), so no network namespaces`, netem: false };
  const scratch = `${NAMESPACE_PREFIX}probe-${process.pid}`;
  try {
    await ip(["netns", "add", scratch]);
  } catch (err) {
    return { ok: false, reason: `ip netns add failed: ${errorMessage(err)}`, netem: false };
  }
  try {
    await ip(["-n", scratch, "link", "set", "lo", "up"]);
    const netem = await run("tc", ["-n", scratch, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]).then(() => true, () => false);
    return { ok: true, reason: "root and ip netns work", netem };
  } catch (err) {
    return { ok: false, reason: `a scratch namespace does not work: ${errorMessage(err)}`, netem: false };
  } finally {
    await ipQuiet(["netns", "del", scratch]);
  }
}

export class NetnsNetwork implements ChaosNetwork {
  readonly kind = "netns";
  private readonly cuts = new Map<string, { readonly from: NetnsNode; readonly to: NetnsNode }>();
  private readonly proxies = new Map<string, LinkProxyChild>();
  private closing: Promise<void> | undefined;

  private constructor(
    readonly ids: readonly string[],
    readonly reason: string,
    private readonly tag: string,
    private readonly bridge: string,
    private readonly nodes: ReadonlyMap<string, NetnsNode>,
  ) {}

  static async create(opts: { ids: readonly string[]; runTag: string; seed: number; reason: string }): Promise<NetnsNetwork> {
    await cleanupStale();
    const tag = `${process.pid.toString(36)}${(tagHash(opts.runTag) % 1296).toString(36).padStart(2, "0")}`;
    const subnet = await freeSubnet(tagHash(`${opts.runTag}/${process.pid}`));
    const nodes = new Map<string, NetnsNode>();
    opts.ids.forEach((id, index) => {
      const nodeIp = `${subnet}.${NODE_HOST_FIRST + index}`;
      const http = `${nodeIp}:${NODE_HTTP_PORT}`;
      const grpc = `${nodeIp}:${NODE_GRPC_PORT}`;
      nodes.set(id, {
        id,
        index,
        namespace: `${NAMESPACE_PREFIX}${tag}-${id}`,
        ip: nodeIp,
        hostVeth: `cv${tag}${index}`,
        nodeVeth: `cn${tag}${index}`,
        addresses: {
          id,
          http,
          grpc,
          listenHttp: http,
          listenGrpc: grpc,
          listenPeer: `127.0.0.1:${SERVER_PEER_PORT}`,
          advertisePeer: `${nodeIp}:${NODE_PEER_PORT}`,
        },
      });
    });
    const network = new NetnsNetwork(opts.ids, opts.reason, tag, `cb${tag}`, nodes);
    try {
      await network.build(subnet, opts.seed);
    } catch (err) {
      await network.close();
      throw err;
    }
    return network;
  }

  private async build(subnet: string, seed: number): Promise<void> {
    const alias = `${LINK_ALIAS_PREFIX} pid=${process.pid} tag=${this.tag}`;
    await ip(["link", "add", this.bridge, "type", "bridge"]);
    await ip(["link", "set", this.bridge, "alias", alias]);
    await ip(["addr", "add", `${subnet}.1/24`, "dev", this.bridge]);
    await ip(["link", "set", this.bridge, "up"]);
    for (const node of this.nodes.values()) {
      await ip(["netns", "add", node.namespace]);
      await ip(["-n", node.namespace, "link", "set", "lo", "up"]);
      await ip(["link", "add", node.hostVeth, "type", "veth", "peer", "name", node.nodeVeth, "netns", node.namespace]);
      await ip(["link", "set", node.hostVeth, "alias", alias]);
      await ip(["link", "set", node.hostVeth, "master", this.bridge, "up"]);
      await ip(["-n", node.namespace, "addr", "add", `${node.ip}/24`, "dev", node.nodeVeth]);
      await ip(["-n", node.namespace, "link", "set", node.nodeVeth, "up"]);
      // Cut rules must be judged before local delivery, so the local table moves behind them.
      await ip(["-n", node.namespace, "rule", "add", "pref", String(LOCAL_RULE_PREF), "lookup", "local"]);
      await ip(["-n", node.namespace, "rule", "del", "pref", "0"]);
    }
    const dialers = Object.fromEntries([...this.nodes.values()].map((n) => [n.ip, n.id]));
    await Promise.all([...this.nodes.values()].map(async (node) => {
      const config: LinkProxyChildConfig = {
        listenHost: node.ip,
        listenPort: NODE_PEER_PORT,
        targetHost: "127.0.0.1",
        targetPort: SERVER_PEER_PORT,
        targetId: node.id,
        dialers,
        seed: (seed + node.index) >>> 0,
      };
      const proxy = await LinkProxyChild.start(`the link proxy of node ${node.id}`, this.wrap(node.id, process.execPath, [LINK_PROXY_MAIN_PATH, JSON.stringify(config)]));
      this.proxies.set(node.id, proxy);
    }));
  }

  addresses(id: string): NodeAddresses {
    return this.node(id).addresses;
  }

  serverArgs(id: string): string[] {
    checkKnownId(this.ids, id);
    return [];
  }

  wrap(id: string, command: string, args: readonly string[]): { command: string; args: string[] } {
    return { command: "ip", args: ["netns", "exec", this.node(id).namespace, command, ...args] };
  }

  async cut(fromId: string, toId: string): Promise<void> {
    const [from, to] = this.pair(fromId, toId);
    const key = `${from.id} ${to.id}`;
    if (this.cuts.has(key)) return;
    await ip(["-n", to.namespace, "rule", "add", ...cutRule(from, to)]);
    this.cuts.set(key, { from, to });
  }

  async degrade(fromId: string, toId: string, fault: LinkFault): Promise<void> {
    const [from, to] = this.pair(fromId, toId);
    checkLinkFault(fault);
    // Bytes from -> to cross to's proxy (connections from dialed) and from's (answers on connections to dialed).
    await Promise.all([from, to].map((n) => this.proxy(n.id).degrade(from.id, to.id, fault)));
  }

  async heal(): Promise<void> {
    for (const [key, { from, to }] of this.cuts) {
      await ip(["-n", to.namespace, "rule", "del", ...cutRule(from, to)]);
      this.cuts.delete(key);
    }
    await Promise.all([...this.proxies.values()].map((p) => p.heal()));
  }

  close(): Promise<void> {
    this.closing ??= this.removeAll();
    return this.closing;
  }

  private async removeAll(): Promise<void> {
    await Promise.all([...this.proxies.values()].map((p) => p.close()));
    this.proxies.clear();
    await removeTag(this.tag, NAMESPACE_PREFIX);
  }

  private node(id: string): NetnsNode {
    checkKnownId(this.ids, id);
    return this.nodes.get(id) as NetnsNode;
  }

  private pair(fromId: string, toId: string): [NetnsNode, NetnsNode] {
    if (fromId === toId) throw new Error(`cannot cut or degrade node ${fromId}'s link to itself`);
    return [this.node(fromId), this.node(toId)];
  }

  private proxy(id: string): LinkProxyChild {
    const proxy = this.proxies.get(id);
    if (proxy === undefined) throw new Error(`the link proxy of node ${id} is not running: the network is closed or failed to start`);
    return proxy;
  }
}

/** The policy rule, in `to`'s namespace, that drops what arrives from `from`. */
function cutRule(from: NetnsNode, to: NetnsNode): string[] {
  return ["pref", String(CUT_RULE_PREF), "from", `${from.ip}/32`, "iif", to.nodeVeth, "blackhole"];
}

/**
 * Removes the namespaces and interfaces of every earlier run whose runner is gone (a crashed or
 * killed run), and kills what still runs in those namespaces. A live run's are left alone.
 * Returns the names it removed.
 */
export async function cleanupStale(namespacePrefix = NAMESPACE_PREFIX): Promise<string[]> {
  const staleTags = new Set<string>();
  for (const link of await listLinks()) {
    const match = LINK_ALIAS_PATTERN.exec(link.alias);
    if (match !== null && !isAlive(Number(match[1]))) staleTags.add(match[2]);
  }
  const removed: string[] = [];
  for (const tag of staleTags) removed.push(...await removeTag(tag, namespacePrefix));
  // A probe's scratch namespace outlives a runner killed mid-probe.
  for (const namespace of await listNamespaces()) {
    const probe = new RegExp(`^${namespacePrefix}probe-(\\d+)$`).exec(namespace);
    if (probe !== null && !isAlive(Number(probe[1]))) {
      await ipQuiet(["netns", "del", namespace]);
      removed.push(namespace);
    }
  }
  return removed;
}

/** Kills what runs in a tag's namespaces, then removes them, its veths and (last) its bridge. */
async function removeTag(tag: string, namespacePrefix: string): Promise<string[]> {
  const removed: string[] = [];
  for (const namespace of (await listNamespaces()).filter((n) => n.startsWith(`${namespacePrefix}${tag}-`))) {
    const pids = await ip(["netns", "pids", namespace]).catch(() => "");
    for (const pid of pids.split(/\s+/).filter((p) => p !== "").map(Number)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await ipQuiet(["netns", "del", namespace]);
    removed.push(namespace);
  }
  const links = (await listLinks()).filter((l) => LINK_ALIAS_PATTERN.exec(l.alias)?.[2] === tag);
  // Veths first: deleting a namespace removes its veth ends only asynchronously, and the bridge goes last (it marks ownership).
  for (const link of [...links.filter((l) => l.name !== `cb${tag}`), ...links.filter((l) => l.name === `cb${tag}`)]) {
    await ipQuiet(["link", "del", link.name]);
    removed.push(link.name);
  }
  return removed;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function listNamespaces(): Promise<string[]> {
  const text = (await ip(["-j", "netns", "list"])).trim();
  if (text === "") return [];
  return (JSON.parse(text) as { name?: unknown }[]).map((n) => n.name).filter((n): n is string => typeof n === "string");
}

async function listLinks(): Promise<{ name: string; alias: string }[]> {
  const text = (await ip(["-j", "link", "show"])).trim();
  if (text === "") return [];
  return (JSON.parse(text) as { ifname?: unknown; ifalias?: unknown }[])
    .filter((l) => typeof l.ifname === "string")
    .map((l) => ({ name: String(l.ifname), alias: typeof l.ifalias === "string" ? l.ifalias : "" }));
}

/** "10.x.y" of a /24 that no address on this machine overlaps, starting from a place `seed` picks. */
async function freeSubnet(seed: number): Promise<string> {
  const text = (await ip(["-j", "-4", "addr", "show"])).trim();
  const taken = (text === "" ? [] : JSON.parse(text) as { addr_info?: { local?: string; prefixlen?: number }[] }[])
    .flatMap((l) => l.addr_info ?? [])
    .filter((a): a is { local: string; prefixlen: number } => typeof a.local === "string" && typeof a.prefixlen === "number");
  for (let attempt = 0; attempt < SUBNET_CANDIDATES_MAX; attempt++) {
    const pick = (seed + attempt * 7919) >>> 0;
    const second = SUBNET_SECOND_OCTET_MIN + (pick % SUBNET_SECOND_OCTET_SPAN);
    const third = (pick >>> 8) % 256;
    const candidate = ipv4Number(`10.${second}.${third}.0`);
    const overlaps = taken.some((a) => {
      const bits = Math.min(24, a.prefixlen);
      const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
      return ((candidate & mask) >>> 0) === ((ipv4Number(a.local) & mask) >>> 0);
    });
    if (!overlaps) return `10.${second}.${third}`;
  }
  throw new Error(`no free 10.${SUBNET_SECOND_OCTET_MIN}-${SUBNET_SECOND_OCTET_MIN + SUBNET_SECOND_OCTET_SPAN - 1}.x.0/24 for a chaos network after ${SUBNET_CANDIDATES_MAX} tries; remove stale bridges (ip -br addr)`);
}

function ipv4Number(address: string): number {
  return address.split(".").reduce((n, octet) => ((n << 8) | Number(octet)) >>> 0, 0);
}

async function run(command: string, args: readonly string[]): Promise<string> {
  try {
    return (await execFileAsync(command, args)).stdout;
  } catch (err) {
    const stderr = (err as { stderr?: unknown }).stderr;
    const detail = typeof stderr === "string" && stderr.trim() !== "" ? stderr.trim() : errorMessage(err);
    throw new Error(`${command} ${args.join(" ")} failed: ${detail}`, { cause: err });
  }
}

function ip(args: readonly string[]): Promise<string> {
  return run("ip", args);
}

/** For cleanup: what is already gone is fine. */
async function ipQuiet(args: readonly string[]): Promise<void> {
  await ip(args).catch(() => undefined);
}
