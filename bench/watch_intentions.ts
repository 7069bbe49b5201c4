// The intentions piece of `npm run bench:watch` (issue 14): how long an intention write takes to
// reach the RBAC filter of the server listeners it affects, and how large that filter grows.
//
// On a cluster the runner started (leader and follower):
//   1. Setup. `services` services, one instance each at its own address (10.1.x.y:8080, meta
//      cairn-mtls=true, so each server listener carries TLS as a mesh's does); `intentions` exact
//      intentions spread round-robin over the destinations, each from a seeded random source,
//      allow or deny; and one destination (WIDE_DESTINATION) that `rbacSources` services may
//      call. All written to the leader, SETUP_WRITE_CONCURRENCY at a time.
//   2. The wide destination's server listener, on one stream: the encoded size of its RBAC
//      filter config and of the whole Listener, as the client receives them.
//   3. `listeners` SotW ADS streams on the follower (a raw client on Envoy's protos, one
//      connection each, as separate XdsServer processes would hold), each subscribed to the
//      server listener of a different destination, each waiting until it holds the RBAC the
//      intentions call for.
//   4. `writes` timed writes, one after another: each flips an intention of one subscribed
//      destination (or adds one where it has none). Latency runs from just before the HTTP PUT
//      until that destination's stream holds a listener whose decoded RBAC is the one the
//      intentions now call for (the whole principal list compared, not just "some new bytes").
//   5. One write of an intention to destination `*`, which every listener's RBAC holds: the time
//      until each of the streams has it.
// The default action is deny (the runner starts the cluster with --intentions-default deny), so
// each RBAC filter is an ALLOW policy naming the allowed sources. Never part of npm test.

import { loadXdsProtos, type XdsProtos } from "../src/api/xds/protos.js";
import { MTLS_META_KEY } from "../src/registry/model.js";
import { RBAC_TYPE_URL, rbacRulesFor, SERVER_LISTENER_NAME_PREFIX, serviceIdPattern } from "../src/api/xds/mesh.js";
import { LISTENER_TYPE } from "../src/api/xds/resources.js";
import { errorMessage } from "../src/common/errors.js";
import { type IntentionAction, type IntentionRule, WILDCARD } from "../src/intentions/precedence.js";
import { SeededRandom } from "../src/raft/core/random.js";
import { waitFor } from "../test/support/cluster.js";
import { adsClient, type AnyMessage, decodeAny, RawAdsStream, type SotwResponse } from "../test/xds/raw_client.js";
import { type FanoutResult, rssBytesOf, timings } from "./support/fanout.js";

/** Each bound the options are held to; the runner's env knobs take the same. */
export const MESH_SERVICES_MAX = 10_000;
export const MESH_INTENTIONS_MAX = 100_000;
export const MESH_LISTENERS_MAX = 1_000;
export const MESH_WRITES_MAX = 1_000;

/** Setup writes in flight at once: enough to keep Raft's batches full, few enough for one client process. */
const SETUP_WRITE_CONCURRENCY = 64;
/** One HTTP call, setup or timed, before it counts as failed. */
const HTTP_TIMEOUT_MS = 10_000;
/** How long the trust domain may take to appear (the CA initializes once a leader is elected). */
const CA_READY_TIMEOUT_MS = 30_000;
/** How long every stream may take to hold its first listener with the setup's RBAC (the follower may still be applying the setup's tail). */
const FIRST_LISTENER_DEADLINE_MS = 60_000;
/** How long one write may take to reach its listeners before they count as missed: ten times the issue's one-second goal. */
const UPDATE_DEADLINE_MS = 10_000;
/** The same intentions, sources and flips every run. */
const SEED = 20_261_414;

const SERVICE_PREFIX = "mesh-svc-";
const WIDE_DESTINATION = "mesh-wide";
/** The source of the `*`-destination write: a name no service of the setup has, so every listener's RBAC gains it. */
const WILDCARD_WRITE_SOURCE = "mesh-everyone";
/** Every instance listens here, each at its own IP. */
const INSTANCE_PORT = 8080;
const WIDE_ADDRESS = "10.2.0.1";

export interface IntentionsBenchOptions {
  /** The leader's HTTP base, which every write goes to. */
  readonly writerHttpBase: string;
  /** The follower's public gRPC address, which every stream goes to. */
  readonly grpcAddress: string;
  /** The follower's process, for its RSS with the streams parked. */
  readonly serverPid: number;
  readonly services: number;
  readonly intentions: number;
  readonly listeners: number;
  readonly writes: number;
  /** Sources allowed to call the wide destination, whose RBAC size is reported. */
  readonly rbacSources: number;
}

export interface IntentionsResult {
  /** One sample per timed write: from the PUT until its destination's stream had the new RBAC. */
  readonly perWrite: FanoutResult;
  /** One sample per stream: from the `*`-destination PUT until that stream had the new RBAC. */
  readonly wildcard: FanoutResult;
  /** The wide destination's RBAC filter config (the HTTP filter's typed_config value), as received. */
  readonly rbacFilterBytes: number;
  /** Its whole Listener resource (the Any's value), as received. */
  readonly listenerBytes: number;
  readonly setupWrites: number;
  readonly setupMs: number;
}

/** The bounds of the options, checked once; each error names the option and what to give. */
export function checkIntentionsOptions(o: Pick<IntentionsBenchOptions, "services" | "intentions" | "listeners" | "writes" | "rbacSources">): void {
  const bound = (name: string, v: number, min: number, max: number): void => {
    if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} = ${v}: give a whole number from ${min} to ${max}`);
  };
  bound("services", o.services, 2, MESH_SERVICES_MAX);
  // Each destination's sources are distinct services other than itself.
  bound("intentions", o.intentions, 0, Math.min(MESH_INTENTIONS_MAX, o.services * (o.services - 1)));
  bound("listeners", o.listeners, 1, Math.min(MESH_LISTENERS_MAX, o.services));
  bound("writes", o.writes, 1, MESH_WRITES_MAX);
  bound("rbacSources", o.rbacSources, 1, o.services);
}

// ---------------------------------------------------------------- the intentions as the benchmark wrote them

/** What the cluster holds, kept on this side so that each stream's RBAC can be predicted exactly. */
class WrittenIntentions {
  private readonly byDestination = new Map<string, Map<string, IntentionAction>>();

  set(source: string, destination: string, action: IntentionAction): void {
    let sources = this.byDestination.get(destination);
    if (sources === undefined) this.byDestination.set(destination, (sources = new Map<string, IntentionAction>()));
    sources.set(source, action);
  }

  sourcesOf(destination: string): ReadonlyMap<string, IntentionAction> {
    return this.byDestination.get(destination) ?? new Map();
  }

  /** What the server's IntentionsView gives for `destination`: its own intentions and the `*` ones. */
  candidates(destination: string): IntentionRule[] {
    const rules: IntentionRule[] = [];
    for (const d of [destination, WILDCARD]) for (const [source, action] of this.sourcesOf(d)) rules.push({ source, destination: d, action });
    return rules;
  }
}

// ---------------------------------------------------------------- RBAC, decoded from what a stream received

/** The parts of a server listener's RBAC filter the benchmark compares. */
interface ListenerRbac {
  readonly action: string;
  /** Every policy's principals, as their SPIFFE ID regexes, in order. */
  readonly principals: readonly string[];
}

interface ReceivedListener {
  readonly rbac: ListenerRbac;
  readonly rbacFilterBytes: number;
  readonly listenerBytes: number;
}

interface DecodedListener { readonly filter_chains?: readonly { readonly filters?: readonly { readonly typed_config?: AnyMessage | null }[] }[] }
interface DecodedConnectionManager { readonly http_filters?: readonly { readonly name?: string; readonly typed_config?: AnyMessage | null }[] }
interface DecodedRbac {
  readonly rules?: {
    readonly action?: string;
    readonly policies?: Readonly<Record<string, { readonly principals?: readonly { readonly authenticated?: { readonly principal_name?: { readonly safe_regex?: { readonly regex?: string } | null } | null } | null }[] }>>;
  } | null;
}

const RBAC_CONVERSION = { defaults: true, arrays: true, objects: true, enums: String } as const;

/** A server listener's RBAC, from the listener's bytes: Listener, its first filter chain's HttpConnectionManager, the RBAC HTTP filter. */
function receivedListener(protos: XdsProtos, listener: AnyMessage): ReceivedListener {
  const decoded = decodeAny(protos, listener) as DecodedListener;
  const hcm = decoded.filter_chains?.[0]?.filters?.[0]?.typed_config;
  if (hcm === undefined || hcm === null) throw new Error("the server listener has no filter chain with an HttpConnectionManager");
  const filters = (decodeAny(protos, hcm) as DecodedConnectionManager).http_filters ?? [];
  const rbacAny = filters.find((f) => f.typed_config?.type_url === RBAC_TYPE_URL)?.typed_config;
  if (rbacAny === undefined || rbacAny === null) throw new Error(`the server listener has no RBAC HTTP filter (its filters: ${filters.map((f) => f.name ?? "?").join(", ")})`);
  const rbac = protos.Rbac.toObject(protos.Rbac.decode(rbacAny.value), RBAC_CONVERSION) as DecodedRbac;
  const principals: string[] = [];
  for (const policy of Object.values(rbac.rules?.policies ?? {})) {
    for (const p of policy.principals ?? []) {
      const regex = p.authenticated?.principal_name?.safe_regex?.regex;
      if (regex === undefined) throw new Error(`an RBAC principal that is not a SPIFFE ID regex: ${JSON.stringify(p)}`);
      principals.push(regex);
    }
  }
  return { rbac: { action: rbac.rules?.action ?? "(no rules)", principals }, rbacFilterBytes: rbacAny.value.length, listenerBytes: listener.value.length };
}

/** The RBAC the server must generate for `destination` from what was written: the one piece that decides it (mesh.ts), called, not copied. */
function expectedRbac(written: WrittenIntentions, destination: string, trustDomain: string): ListenerRbac {
  const rules = rbacRulesFor(destination, written.candidates(destination), false);
  return { action: rules.action, principals: rules.sources.map((s) => serviceIdPattern(trustDomain, s)) };
}

function sameRbac(a: ListenerRbac, b: ListenerRbac): boolean {
  return a.action === b.action && a.principals.length === b.principals.length && a.principals.every((p, i) => p === b.principals[i]);
}

function describeRbac(r: ListenerRbac | undefined): string {
  return r === undefined ? "nothing" : `${r.action} with ${r.principals.length} principals`;
}

// ---------------------------------------------------------------- one stream per server listener

class ListenerStream {
  /** The last listener received, decoded. */
  held: ReceivedListener | undefined;
  /** The RBAC being waited for, and when a listener holding it arrived. */
  private awaited: ListenerRbac | undefined;
  arrivedAtMs: number | undefined;
  failure: string | undefined;

  private constructor(readonly destination: string, readonly name: string, private readonly stream: RawAdsStream<SotwResponse>, private readonly closeStream: () => void) {}

  static async open(protos: XdsProtos, grpcAddress: string, destination: string, address: string, nodeId: string, expected: ListenerRbac): Promise<ListenerStream> {
    const client = adsClient(grpcAddress);
    const stream = await RawAdsStream.sotw(client).catch((err: unknown) => {
      client.close();
      throw err;
    });
    const name = `${SERVER_LISTENER_NAME_PREFIX}${address}:${INSTANCE_PORT}`;
    const s = new ListenerStream(destination, name, stream, () => {
      stream.close();
      client.close();
    });
    s.expect(expected);
    stream.onResponse = (r) => s.received(protos, r);
    stream.onEnd = (status) => { s.failure ??= `the stream ended: ${status.code} ${status.details}`; };
    stream.send({ node: { id: nodeId, cluster: "bench-mesh" }, type_url: LISTENER_TYPE.typeUrl, resource_names: [name] });
    return s;
  }

  /** From now on, waits for a listener holding `rbac` (one already held counts only if it arrives again). */
  expect(rbac: ListenerRbac): void {
    this.awaited = rbac;
    this.arrivedAtMs = undefined;
  }

  get arrived(): boolean {
    return this.arrivedAtMs !== undefined;
  }

  describe(): string {
    return `${this.destination}'s listener holds ${describeRbac(this.held?.rbac)}, waiting for ${describeRbac(this.awaited)}${this.failure === undefined ? "" : ` (${this.failure})`}`;
  }

  close(): void {
    this.closeStream();
  }

  private received(protos: XdsProtos, r: SotwResponse): void {
    const nowMs = performance.now();
    this.stream.send({ type_url: LISTENER_TYPE.typeUrl, resource_names: [this.name], response_nonce: r.nonce, version_info: r.version_info });
    const resource = r.resources[0];
    if (resource === undefined) {
      this.held = undefined;
      return;
    }
    try {
      this.held = receivedListener(protos, resource);
    } catch (err) {
      this.failure = `version ${r.version_info}: ${errorMessage(err)}`;
      return;
    }
    if (this.awaited !== undefined && this.arrivedAtMs === undefined && sameRbac(this.held.rbac, this.awaited)) this.arrivedAtMs = nowMs;
  }
}

// ---------------------------------------------------------------- HTTP

async function send(method: string, url: URL, body: unknown, what: string): Promise<void> {
  let res: Response;
  try {
    res = await fetch(url, { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  } catch (err) {
    throw new Error(`${what}: ${method} ${url.href} failed: ${errorMessage(err)}`, { cause: err });
  }
  const text = await res.text();
  if (!res.ok) throw new Error(`${what}: ${method} ${url.href} answered ${res.status}: ${text.slice(0, 300)}`);
}

function putIntention(base: string, source: string, destination: string, action: IntentionAction): Promise<void> {
  const url = new URL("/v1/connect/intentions/exact", base);
  url.searchParams.set("source", source);
  url.searchParams.set("destination", destination);
  return send("PUT", url, { Action: action }, `writing the intention ${source} -> ${destination} ${action}`);
}

function register(base: string, service: string, address: string): Promise<void> {
  return send("POST", new URL("/v1/registry/instances", base),
    { name: service, id: `${service}-1`, address, port: INSTANCE_PORT, meta: { [MTLS_META_KEY]: "true" } }, `registering ${service} at ${address}:${INSTANCE_PORT}`);
}

/** Runs `write` over `items`, `concurrency` at a time; the first failure fails the whole. */
async function concurrently<T>(items: readonly T[], concurrency: number, write: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await write(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

async function trustDomainOf(base: string): Promise<string> {
  return waitFor(async () => {
    const res = await fetch(new URL("/v1/connect/ca/roots", base), { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) }).catch(() => undefined);
    if (res === undefined || !res.ok) return undefined;
    const domain = ((await res.json()) as { TrustDomain?: unknown }).TrustDomain;
    return typeof domain === "string" && domain !== "" ? domain : undefined;
  }, CA_READY_TIMEOUT_MS, () => `${base}/v1/connect/ca/roots never named a trust domain`);
}

// ---------------------------------------------------------------- the measurement

function serviceName(i: number): string {
  return `${SERVICE_PREFIX}${String(i).padStart(5, "0")}`;
}

/** Service i's instance address: one IP each, below 10.1.255.255 for up to MESH_SERVICES_MAX. */
function serviceAddress(i: number): string {
  return `10.1.${Math.floor(i / 256)}.${i % 256}`;
}

/** Waits until every stream has what it expects, or fails naming the first few that do not. */
async function allArrived(streams: readonly ListenerStream[], timeoutMs: number, what: string): Promise<void> {
  await waitFor(() => Promise.resolve(streams.every((s) => s.arrived) ? true : undefined), timeoutMs, () => {
    const late = streams.filter((s) => !s.arrived);
    return `${what}: ${late.length} of ${streams.length} streams never had it; ${late.slice(0, 3).map((s) => s.describe()).join("; ")}`;
  });
}

export async function measureIntentions(opts: IntentionsBenchOptions): Promise<IntentionsResult> {
  checkIntentionsOptions(opts);
  const rng = new SeededRandom(SEED);
  const services = Array.from({ length: opts.services }, (_, i) => serviceName(i));
  const written = new WrittenIntentions();
  const base = opts.writerHttpBase;
  const [trustDomain, protos] = await Promise.all([trustDomainOf(base), loadXdsProtos()]);

  // 1. Setup: the services, then the intentions (a destination's round-robin turn, a random source not yet used for it).
  const setupStartedMs = performance.now();
  const instances = [...services.map((s, i) => ({ service: s, address: serviceAddress(i) })), { service: WIDE_DESTINATION, address: WIDE_ADDRESS }];
  await concurrently(instances, SETUP_WRITE_CONCURRENCY, (r) => register(base, r.service, r.address));
  const intentions: IntentionRule[] = [];
  for (let i = 0; i < opts.intentions; i++) {
    const destinationIndex = i % services.length;
    const destination = services[destinationIndex];
    const used = written.sourcesOf(destination);
    // A random start, then the next unused source: bounded, since a destination gets at most services - 1 intentions.
    let sourceIndex = rng.nextInt(services.length);
    while (sourceIndex === destinationIndex || used.has(services[sourceIndex])) sourceIndex = (sourceIndex + 1) % services.length;
    const action: IntentionAction = rng.chance(0.5) ? "allow" : "deny";
    written.set(services[sourceIndex], destination, action);
    intentions.push({ source: services[sourceIndex], destination, action });
  }
  for (const source of services.slice(0, opts.rbacSources)) {
    written.set(source, WIDE_DESTINATION, "allow");
    intentions.push({ source, destination: WIDE_DESTINATION, action: "allow" });
  }
  await concurrently(intentions, SETUP_WRITE_CONCURRENCY, (i) => putIntention(base, i.source, i.destination, i.action));
  const setupMs = performance.now() - setupStartedMs;
  const setupWrites = instances.length + intentions.length;

  const streams: ListenerStream[] = [];
  try {
    // 2. The wide destination's listener: its sizes as received. Its stream is also the follower's
    // first xDS stream, which loads Envoy's protos there, so that is not counted as the listeners' memory.
    const wide = await ListenerStream.open(protos, opts.grpcAddress, WIDE_DESTINATION, WIDE_ADDRESS, `bench-mesh-${process.pid}-wide`, expectedRbac(written, WIDE_DESTINATION, trustDomain));
    let sizes: ReceivedListener | undefined;
    try {
      await allArrived([wide], FIRST_LISTENER_DEADLINE_MS, `the listener of ${WIDE_DESTINATION} with ${opts.rbacSources} allowed sources`);
      sizes = wide.held;
    } finally {
      wide.close();
    }
    if (sizes === undefined) throw new Error(`the stream of ${WIDE_DESTINATION} had its listener, then held none`);

    // 3. The listeners, each of a different destination, spread over the services.
    const rssBeforeBytes = rssBytesOf(opts.serverPid);
    for (let j = 0; j < opts.listeners; j++) {
      const i = Math.floor((j * services.length) / opts.listeners);
      streams.push(await ListenerStream.open(protos, opts.grpcAddress, services[i], serviceAddress(i), `bench-mesh-${process.pid}-${j}`, expectedRbac(written, services[i], trustDomain)));
    }
    await allArrived(streams, FIRST_LISTENER_DEADLINE_MS, "the first listener with the setup's RBAC");
    const rssGrowthBytes = rssBytesOf(opts.serverPid) - rssBeforeBytes;

    // 4. Timed writes, one at a time, each to the next listener's destination in turn.
    const perWriteMs: number[] = [];
    for (let k = 0; k < opts.writes; k++) {
      const target = streams[k % streams.length];
      const existing = [...written.sourcesOf(target.destination)];
      let source: string;
      let action: IntentionAction;
      if (existing.length > 0) {
        const [s, was] = rng.pick(existing);
        source = s;
        action = was === "allow" ? "deny" : "allow";
      } else {
        source = rng.pick(services.filter((s) => s !== target.destination));
        action = "allow";
      }
      written.set(source, target.destination, action);
      target.expect(expectedRbac(written, target.destination, trustDomain));
      const sentAtMs = performance.now();
      await putIntention(base, source, target.destination, action);
      try {
        await allArrived([target], UPDATE_DEADLINE_MS, `write ${k + 1}, ${source} -> ${target.destination} ${action}`);
        if (target.arrivedAtMs !== undefined) perWriteMs.push(target.arrivedAtMs - sentAtMs);
      } catch (err) {
        process.stderr.write(`  missed: ${errorMessage(err)}\n`);
      }
    }

    // 5. One `*` write: every listener's RBAC gains the source.
    written.set(WILDCARD_WRITE_SOURCE, WILDCARD, "allow");
    for (const s of streams) s.expect(expectedRbac(written, s.destination, trustDomain));
    const wildcardSentAtMs = performance.now();
    await putIntention(base, WILDCARD_WRITE_SOURCE, WILDCARD, "allow");
    await allArrived(streams, UPDATE_DEADLINE_MS, `${WILDCARD_WRITE_SOURCE} -> ${WILDCARD} allow`).catch((err: unknown) => {
      process.stderr.write(`  missed: ${errorMessage(err)}\n`);
    });
    const wildcardMs = streams.flatMap((s) => (s.arrivedAtMs === undefined ? [] : [s.arrivedAtMs - wildcardSentAtMs]));

    return {
      perWrite: {
        kind: `cairn RBAC push, per write (${opts.writes} writes, each to its destination's listener)`,
        watchers: opts.listeners, ...timings(perWriteMs), missed: opts.writes - perWriteMs.length, rssGrowthBytes,
      },
      // The same streams: their memory is the per-write line's.
      wildcard: {
        kind: `cairn RBAC push, one * write to every listener`,
        watchers: opts.listeners, ...timings(wildcardMs), missed: opts.listeners - wildcardMs.length, rssGrowthBytes,
      },
      rbacFilterBytes: sizes.rbacFilterBytes,
      listenerBytes: sizes.listenerBytes,
      setupWrites,
      setupMs,
    };
  } finally {
    for (const s of streams) s.close();
  }
}
