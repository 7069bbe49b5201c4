// etcd's side of `npm run bench:watch`: many watchers parked on one follower of a three-node etcd
// 3.4 cluster (loopback, fsync on), then one put through the leader. Reported as a FanoutResult:
// the time from just before the put until each watcher had the event, and the follower's RSS
// growth with the watchers parked (measured from before any watcher's client connected, so the
// connections and streams are charged to the watchers, as they are on Cairn's side).
//   - measureEtcdWatchers: the native gRPC API through the npm etcd3 client, `clients` clients
//     (each its own TCP connection and one watch stream) sharing the watchers out between them.
//   - measureEtcdGatewayWatchers: etcd's JSON gateway, one HTTP/1.1 stream on POST /v3/watch per
//     watcher, each on its own connection (what a client without gRPC does).
// Every watcher watches the same key prefix, as every Cairn watcher watches the same service.

import { type ClientRequest, type IncomingMessage, request } from "node:http";
import { Etcd3, type Watcher } from "etcd3";
import { asError, errorMessage } from "../src/common/errors.js";
import { EtcdCluster, prefixRangeEnd } from "./support/etcd.js";
import { type FanoutResult, rssBytesOf, timings } from "./support/fanout.js";

const WATCH_PREFIX = "bench/watch/";
const CHANGED_KEY = `${WATCH_PREFIX}instance-1`;
const CHANGED_VALUE = "v".repeat(100);
/** A watcher that has not seen the change this long after the put counts as missed. */
const DELIVERY_DEADLINE_MS = 30_000;
/** Parking every watcher must finish within this, or the measurement fails (etcd stalled). */
const PARKING_DEADLINE_MS = 180_000;
/** Cancelling every watcher after the measurement must finish within this. */
const CANCEL_DEADLINE_MS = 60_000;
/** How long the follower is left alone after the last watcher parked, before its RSS is read. */
const RSS_SETTLE_MS = 1_000;
/** Gateway streams opened at once while parking: under the listen backlog (somaxconn 4096 here). */
const GATEWAY_OPENS_IN_FLIGHT_MAX = 256;
/** A gateway stream line longer than this is not a watch response: the stream is failed. */
const GATEWAY_LINE_CHARS_MAX = 1 << 20;

/** The cluster, the follower the watchers park on, and a writer connected to the leader. */
interface EtcdTarget {
  readonly followerUrl: string;
  readonly followerPid: number;
  readonly writer: Etcd3;
}

async function withEtcdTarget<T>(use: (target: EtcdTarget) => Promise<T>): Promise<T> {
  const etcd = await EtcdCluster.start(3);
  let writer: Etcd3 | undefined;
  try {
    const leaderUrl = await etcd.leaderUrl();
    const followerUrl = etcd.clientUrls.find((u) => u !== leaderUrl);
    if (followerUrl === undefined) throw new Error(`etcd has no follower: its members are ${etcd.clientUrls.join(", ")}`);
    writer = new Etcd3({ hosts: leaderUrl });
    // Connects the writer now, so the timed put does not pay for a connection.
    await writer.get(CHANGED_KEY).string();
    return await use({ followerUrl, followerPid: etcd.pidOf(followerUrl), writer });
  } finally {
    writer?.close();
    await etcd.close();
  }
}

/** When each of `expected` watchers first had the change, from just before the put. */
class Arrivals {
  private readonly latenciesMs: number[] = [];
  private putStartedMs: number | undefined;
  private allArrived: () => void = () => {};
  private readonly everyone = new Promise<void>((resolve) => { this.allArrived = resolve; });

  constructor(private readonly expected: number) {}

  /** Call once, just before sending the put. */
  putStarting(): void {
    this.putStartedMs = performance.now();
  }

  /** Call once per watcher, on its first event for the changed key. */
  arrived(): void {
    if (this.putStartedMs === undefined) throw new Error("a watcher saw the change before it was written: the bench is broken");
    this.latenciesMs.push(performance.now() - this.putStartedMs);
    if (this.latenciesMs.length === this.expected) this.allArrived();
  }

  /** The latencies of the watchers that had the change within DELIVERY_DEADLINE_MS of the put. */
  async settled(): Promise<readonly number[]> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.everyone, new Promise<void>((resolve) => { timer = setTimeout(resolve, DELIVERY_DEADLINE_MS); })]);
    clearTimeout(timer);
    return [...this.latenciesMs];
  }
}

/**
 * Waits for every one of `work` to settle, so that nothing is still opening when the caller closes
 * what was opened; fails with the first failure, or with `what` past PARKING_DEADLINE_MS.
 */
async function allParkedWithin(work: readonly Promise<void>[], what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${PARKING_DEADLINE_MS} ms: is etcd overloaded? Try fewer watchers.`)), PARKING_DEADLINE_MS);
  });
  try {
    const settled = await Promise.race([Promise.allSettled(work), deadline]);
    const failures = settled.flatMap((r) => r.status === "rejected" ? [errorMessage(r.reason)] : []);
    if (failures.length > 0) throw new Error(`${what}: ${failures.length} failed, the first with: ${failures[0]}`);
  } finally {
    clearTimeout(timer);
  }
}

/** The follower's RSS growth once its watchers are parked and it has settled. */
async function settledGrowthBytes(pid: number, baselineBytes: number): Promise<number> {
  await new Promise((r) => setTimeout(r, RSS_SETTLE_MS));
  return rssBytesOf(pid) - baselineBytes;
}

async function putChange(target: EtcdTarget, arrivals: Arrivals): Promise<readonly number[]> {
  arrivals.putStarting();
  await target.writer.put(CHANGED_KEY).value(CHANGED_VALUE).exec();
  return arrivals.settled();
}

function result(kind: string, watchers: number, latenciesMs: readonly number[], rssGrowthBytes: number): FanoutResult {
  return { kind, watchers, ...timings(latenciesMs), missed: watchers - latenciesMs.length, rssGrowthBytes };
}

/** `watchers` native etcd watchers on one follower, shared out over `clients` etcd3 clients. */
export async function measureEtcdWatchers(opts: { watchers: number; clients: number }): Promise<FanoutResult> {
  const { watchers, clients: clientCount } = opts;
  if (!Number.isInteger(clientCount) || clientCount < 1 || clientCount > watchers) {
    throw new RangeError(`clients=${clientCount}: give a whole number from 1 to the number of watchers (${watchers})`);
  }
  return withEtcdTarget(async (target) => {
    const baselineBytes = rssBytesOf(target.followerPid);
    const arrivals = new Arrivals(watchers);
    // grpc-js shares one connection between channels to the same address unless each channel keeps
    // its own subchannel pool; without this the clients would be streams on a single connection.
    const clients = Array.from({ length: clientCount }, () => new Etcd3({ hosts: target.followerUrl, grpcOptions: { "grpc.use_local_subchannel_pool": 1 } }));
    const parked: Watcher[] = [];
    const watcherErrors: string[] = [];
    try {
      const watch = async (client: Etcd3): Promise<void> => {
        const watcher = await client.watch().prefix(WATCH_PREFIX).create();
        parked.push(watcher);
        let seen = false;
        watcher.on("put", (kv) => {
          if (seen || kv.key.toString() !== CHANGED_KEY) return;
          seen = true;
          arrivals.arrived();
        });
        // An EventEmitter's "error" with no listener would be thrown; a failed watcher counts as missed.
        watcher.on("error", (err) => { watcherErrors.push(err.message); });
      };
      // etcd3 creates one client's watchers one at a time on its stream; the clients work in parallel.
      await allParkedWithin(Array.from({ length: watchers }, (_, i) => watch(clients[i % clientCount])),
        `parking ${watchers} etcd watchers over ${clientCount} clients`);
      const rssGrowthBytes = await settledGrowthBytes(target.followerPid, baselineBytes);
      const latenciesMs = await putChange(target, arrivals);
      if (watcherErrors.length > 0) process.stderr.write(`  etcd: ${watcherErrors.length} watchers failed, the first with: ${watcherErrors[0]}\n`);
      return result(`etcd 3.4 watch (etcd3, ${clientCount} clients)`, watchers, latenciesMs, rssGrowthBytes);
    } finally {
      await closeClients(clients, parked);
    }
  });
}

/**
 * Cancels the watchers, then closes their clients. A watcher still open when its client closes sees
 * its stream fail and retries it on a timer for ever, which would keep the bench from exiting.
 */
async function closeClients(clients: readonly Etcd3[], watchers: readonly Watcher[]): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const cancelled = await Promise.race([
    Promise.allSettled(watchers.map((w) => w.cancel())).then(() => true),
    new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), CANCEL_DEADLINE_MS); }),
  ]);
  clearTimeout(timer);
  if (!cancelled) process.stderr.write(`  etcd: ${watchers.length} watchers were not all cancelled within ${CANCEL_DEADLINE_MS} ms; their clients close anyway\n`);
  for (const c of clients) c.close();
}

/** `watchers` HTTP streams on the follower's JSON gateway (POST /v3/watch), one connection each. */
export async function measureEtcdGatewayWatchers(opts: { watchers: number }): Promise<FanoutResult> {
  const { watchers } = opts;
  return withEtcdTarget(async (target) => {
    const baselineBytes = rssBytesOf(target.followerPid);
    const arrivals = new Arrivals(watchers);
    const streams: GatewayStream[] = [];
    // Set once the measurement ends, so an opener still at work past a failure opens no more.
    let closing = false;
    try {
      let next = 0;
      const opener = async (): Promise<void> => {
        while (next < watchers && !closing) {
          next++;
          const stream = new GatewayStream(target.followerUrl, () => arrivals.arrived());
          streams.push(stream);
          await stream.created;
        }
      };
      // An opener stops at its first failure; the others go on until they fail too or are done.
      await allParkedWithin(Array.from({ length: Math.min(GATEWAY_OPENS_IN_FLIGHT_MAX, watchers) }, opener),
        `opening ${watchers} etcd gateway watch streams`);
      const rssGrowthBytes = await settledGrowthBytes(target.followerPid, baselineBytes);
      const latenciesMs = await putChange(target, arrivals);
      const failed = streams.filter((s) => s.failure !== undefined);
      if (failed.length > 0) process.stderr.write(`  etcd gateway: ${failed.length} streams failed, the first with: ${failed[0].failure}\n`);
      return result("etcd 3.4 watch (JSON gateway, HTTP streams)", watchers, latenciesMs, rssGrowthBytes);
    } finally {
      closing = true;
      for (const s of streams) s.close();
    }
  });
}

/** What a gateway watch stream line holds, as far as this bench reads it. */
interface GatewayLine {
  readonly created: boolean;
  readonly eventKeys: readonly string[];
}

/** One line of the gateway's newline-delimited JSON stream, decoded; throws on anything else. */
function decodeGatewayLine(line: string): GatewayLine {
  const message: unknown = JSON.parse(line);
  if (typeof message !== "object" || message === null) throw new Error(`not a JSON object: ${line.slice(0, 200)}`);
  if ("error" in message) throw new Error(`etcd answered an error: ${line.slice(0, 500)}`);
  const watchResult = "result" in message ? message.result : undefined;
  if (typeof watchResult !== "object" || watchResult === null) throw new Error(`no "result" object: ${line.slice(0, 200)}`);
  const created = "created" in watchResult && watchResult.created === true;
  const events = "events" in watchResult ? watchResult.events : [];
  if (!Array.isArray(events)) throw new Error(`"events" is not an array: ${line.slice(0, 200)}`);
  const eventKeys = events.map((e: unknown) => {
    const kv = typeof e === "object" && e !== null && "kv" in e ? e.kv : undefined;
    const key = typeof kv === "object" && kv !== null && "key" in kv ? kv.key : undefined;
    if (typeof key !== "string") throw new Error(`an event without kv.key: ${line.slice(0, 200)}`);
    return Buffer.from(key, "base64").toString();
  });
  return { created, eventKeys };
}

/** One watch on the gateway: `created` settles when etcd confirms it; `onChange` runs at most once. */
class GatewayStream {
  readonly created: Promise<void>;
  failure: string | undefined;
  private readonly req: ClientRequest;
  private pending = "";
  private changed = false;
  private closing = false;

  constructor(baseUrl: string, private readonly onChange: () => void) {
    const url = new URL("/v3/watch", baseUrl);
    const body = JSON.stringify({ create_request: { key: b64(WATCH_PREFIX), range_end: b64(prefixRangeEnd(WATCH_PREFIX)) } });
    // agent: false gives each stream its own connection, as separate HTTP clients would have.
    this.req = request({ host: url.hostname, port: Number(url.port), path: url.pathname, method: "POST", agent: false,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } });
    this.created = new Promise<void>((resolve, reject) => {
      this.req.on("response", (res: IncomingMessage) => {
        if (res.statusCode !== 200) {
          reject(new Error(`POST /v3/watch answered ${res.statusCode}`));
          res.resume();
          return;
        }
        res.setEncoding("utf8");
        // Without a listener, a reset after the response (close() included) would be thrown.
        res.on("error", (err) => { if (!this.closing) this.fail(err); });
        res.on("data", (chunk: string) => {
          try {
            for (const line of this.lines(chunk)) {
              const decoded = decodeGatewayLine(line);
              if (decoded.created) resolve();
              if (!this.changed && decoded.eventKeys.includes(CHANGED_KEY)) {
                this.changed = true;
                this.onChange();
              }
            }
          } catch (err) {
            this.fail(err);
            reject(asError(err));
          }
        });
      });
      this.req.on("error", (err) => {
        if (!this.closing) this.failure ??= err.message;
        reject(err);
      });
    });
    this.req.end(body);
  }

  /** The complete lines `chunk` finishes; the rest waits for the next chunk, within a bound. */
  private lines(chunk: string): string[] {
    const parts = (this.pending + chunk).split("\n");
    this.pending = parts.pop() ?? "";
    if (this.pending.length > GATEWAY_LINE_CHARS_MAX) throw new Error(`a stream line passed ${GATEWAY_LINE_CHARS_MAX} characters without ending`);
    return parts.filter((l) => l.trim() !== "");
  }

  private fail(err: unknown): void {
    this.failure ??= errorMessage(err);
    this.req.destroy();
  }

  close(): void {
    this.closing = true;
    this.req.destroy();
  }
}

function b64(text: string): string {
  return Buffer.from(text).toString("base64");
}
