// The chaos workload: concurrent clients that drive a real Cairn cluster through its public
// HTTP and gRPC APIs and record everything they do in the history's types. Writers, readers,
// heartbeats and certificate clients each run one operation at a time with a pause between;
// watchers hold one stream each for the whole run, moving to another node when theirs breaks.

import { SeededRandom } from "../../src/raft/core/random.js";
import type { FinalRead, WatchRecord } from "../history.js";
import { CertClient } from "./certs.js";
import { type ClientContext, SeedSource, StopSignal, pickNode, runLoop } from "./client.js";
import type { NodeTarget } from "./http.js";
import { Reader, readService, type ServiceListing } from "./readers.js";
import { Recorder } from "./recorder.js";
import { AbandonedRegistrar, HeartbeatClient, TTL_SERVICE, readHealth } from "./ttl.js";
import { ResumingWatcher } from "./watcher.js";
import { type WatchTransport, grpcTransport, sseTransport, xdsTransport } from "./watch_transports.js";
import { AddressSequence, LiveCounts, Writer } from "./writers.js";

export { Recorder } from "./recorder.js";
export type { NodeTarget } from "./http.js";

export interface WorkloadOptions {
  readonly services: readonly string[];
  readonly writers: number;
  readonly linearizableReaders: number;
  readonly staleReaders: number;
  /** Long-lived instances with a TTL check, heartbeated every ttlMs / 4. */
  readonly heartbeatInstances: number;
  readonly ttlMs: number;
  /** Register one never-heartbeated TTL instance every this many ms; 0: never. */
  readonly abandonedEvery: number;
  readonly watchers: { readonly grpc: number; readonly sse: number; readonly xds: number };
  readonly certClients: number;
  /** The client-side bound on any one request; past it a write is unknown, a read failed. */
  readonly opTimeoutMs: number;
  /** The pause between a client's operations (jittered by +-50% so clients do not march in step). */
  readonly thinkMs: number;
  readonly seed: number;
}

/** A certificate client pauses at least this long: signing costs the node CPU the cluster needs. */
const CERT_PAUSE_MIN_MS = 250;
/** Between attempts to register a heartbeated instance, and between final read attempts. */
const RETRY_PAUSE_MS = 200;
/** How much longer than one request's bound stop() waits for the clients' last requests. */
const STOP_GRACE_MS = 2000;
/** How often closeWatchers looks at its watchers while they catch up. */
const CONVERGE_POLL_MS = 25;
const SERVICE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function checkOptions(o: WorkloadOptions): void {
  const counts: [string, number][] = [["writers", o.writers], ["linearizableReaders", o.linearizableReaders], ["staleReaders", o.staleReaders],
    ["heartbeatInstances", o.heartbeatInstances], ["watchers.grpc", o.watchers.grpc], ["watchers.sse", o.watchers.sse],
    ["watchers.xds", o.watchers.xds], ["certClients", o.certClients], ["abandonedEvery", o.abandonedEvery], ["thinkMs", o.thinkMs]];
  for (const [name, n] of counts) {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`workload option ${name} must be a whole number >= 0, not ${n}`);
  }
  if (o.services.length === 0) throw new RangeError("workload option services must name at least one service");
  for (const s of o.services) if (!SERVICE_NAME.test(s)) throw new RangeError(`workload service "${s}" must be a DNS label (lower case)`);
  if (!(o.ttlMs >= 4)) throw new RangeError(`workload option ttlMs must be at least 4 (heartbeats go every ttlMs / 4), not ${o.ttlMs}`);
  if (!(o.opTimeoutMs > 0)) throw new RangeError(`workload option opTimeoutMs must be positive, not ${o.opTimeoutMs}`);
}

interface Loop {
  readonly name: string;
  readonly run: () => Promise<void>;
}

export class Workload {
  private readonly stopSignal = new StopSignal();
  private readonly seeds: SeedSource;
  private readonly loops: Loop[] = [];
  private running: Promise<void>[] = [];
  private readonly loopErrors: string[] = [];
  private readonly watchers: ResumingWatcher[] = [];
  private readonly abandoned: AbandonedRegistrar | undefined;

  constructor(private readonly targets: () => readonly NodeTarget[], private readonly recorder: Recorder, private readonly opts: WorkloadOptions) {
    checkOptions(opts);
    this.seeds = new SeedSource(opts.seed);
    const addresses = new AddressSequence();
    const live = new LiveCounts();
    const think = (random: SeededRandom) => (): number => opts.thinkMs * (0.5 + random.nextFloat());
    for (let i = 1; i <= opts.writers; i++) {
      const ctx = this.context(`writer-${i}`);
      const writer = new Writer(ctx, opts.services, addresses, live);
      this.addLoop(ctx.name, () => runLoop(this.stopSignal, think(ctx.random), () => writer.step()));
    }
    const readers: [number, "linearizable" | "stale"][] = [[opts.linearizableReaders, "linearizable"], [opts.staleReaders, "stale"]];
    for (const [count, consistency] of readers) {
      for (let i = 1; i <= count; i++) {
        const ctx = this.context(`${consistency === "stale" ? "stale" : "lin"}-reader-${i}`);
        const reader = new Reader(ctx, opts.services, consistency);
        this.addLoop(ctx.name, () => runLoop(this.stopSignal, think(ctx.random), () => reader.step()));
      }
    }
    for (let i = 1; i <= opts.heartbeatInstances; i++) {
      const ctx = this.context(`heartbeat-${i}`);
      const client = new HeartbeatClient(ctx, `ttl-${i}`, opts.ttlMs, addresses);
      this.addLoop(ctx.name, async () => {
        if (await client.registerOnce(this.stopSignal, RETRY_PAUSE_MS)) await runLoop(this.stopSignal, () => client.heartbeatIntervalMs, () => client.step());
      });
    }
    if (opts.abandonedEvery > 0) {
      const ctx = this.context("abandoner");
      const registrar = new AbandonedRegistrar(ctx, opts.ttlMs, addresses);
      this.abandoned = registrar;
      this.addLoop(ctx.name, () => runLoop(this.stopSignal, () => opts.abandonedEvery, () => registrar.step()));
    }
    for (let i = 1; i <= opts.certClients; i++) {
      const ctx = this.context(`cert-${i}`);
      const client = new CertClient(ctx, opts.services);
      this.addLoop(ctx.name, () => runLoop(this.stopSignal, () => Math.max(CERT_PAUSE_MIN_MS, think(ctx.random)()), () => client.step()));
    }
    const pick = (i: number, wide: boolean): string[] => {
      const s = opts.services;
      return wide && s.length > 1 ? [s[i % s.length], s[(i + 1) % s.length]] : [s[i % s.length]];
    };
    for (let i = 0; i < opts.watchers.grpc; i++) this.watchers.push(this.watcher(`watch-grpc-${i + 1}`, grpcTransport, pick(i, i % 2 === 1)));
    for (let i = 0; i < opts.watchers.sse; i++) this.watchers.push(this.watcher(`watch-sse-${i + 1}`, sseTransport, pick(i + 1, i % 2 === 0)));
    for (let i = 0; i < opts.watchers.xds; i++) {
      const name = `watch-xds-${i + 1}`;
      this.watchers.push(this.watcher(name, xdsTransport(`chaos-${name}`), pick(i, false)));
    }
  }

  start(): void {
    if (this.running.length > 0 || this.stopSignal.stopped) throw new Error("the workload was already started; make a new one for another run");
    for (const w of this.watchers) w.start();
    this.running = this.loops.map((l) => l.run().catch((err: unknown) => {
      this.loopErrors.push(`${l.name}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    }));
  }

  /** Stops issuing operations; waits for the ones in flight, which end within opTimeoutMs. Watchers go on. */
  async stop(): Promise<void> {
    this.stopSignal.stop();
    const boundMs = this.opts.opTimeoutMs + STOP_GRACE_MS;
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([
      Promise.all(this.running).then(() => false),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), boundMs); }),
    ]);
    clearTimeout(timer);
    if (this.loopErrors.length > 0) throw new Error(`workload clients failed (a bug in the workload):\n${this.loopErrors.join("\n")}`);
    if (late) throw new Error(`workload clients were still running ${boundMs} ms after stop(); a request ignored its ${this.opts.opTimeoutMs} ms bound`);
  }

  /**
   * After the runner healed everything: one ok linearizable read of each service on each node
   * (retried, recorded as reads too), and an ok health read of every abandoned instance.
   * Throws when one did not succeed within `timeoutMs`.
   */
  async finalReads(timeoutMs: number): Promise<FinalRead[]> {
    const deadline = this.recorder.now() + timeoutMs;
    const perNode = this.targets().map(async (node) => {
      const ctx = this.context(`final-${node.id}`);
      const reads: FinalRead[] = [];
      for (const service of [...this.opts.services, TTL_SERVICE]) {
        const listing = await this.untilOk(deadline, `a linearizable read of ${service} on ${node.id}`, async () => {
          const { op, listing } = await readService(ctx, node, service, "linearizable");
          return listing === undefined ? op.error ?? `HTTP ${op.status ?? "?"}` : { value: listing };
        });
        reads.push({ node: node.id, service, instances: listing.instances.map((i) => i.id), revision: listing.revision });
      }
      return reads;
    });
    const healthCtx = this.context("final-health");
    const health = (async () => {
      for (const instance of this.abandonedInstances()) {
        await this.untilOk(deadline, `a health read of ${instance}`, async () => {
          const node = pickNode(healthCtx);
          if (node === undefined) return "no node to ask";
          const health = await readHealth(healthCtx, node, instance);
          return health === undefined ? "the read failed" : { value: health };
        });
      }
    })();
    const [reads] = await Promise.all([Promise.all(perNode), health]);
    return reads.flat();
  }

  /**
   * Waits (bounded) until every gRPC and SSE watcher holds a revision >= `revision` and every xDS
   * watcher's last endpoints are its service's passing instances now, then closes them all. A
   * watcher on a node that left the cluster is moved to a member. One that has not converged by
   * `timeoutMs` is closed all the same: the watch checker reports it.
   */
  async closeWatchers(revision: number, timeoutMs: number): Promise<void> {
    const deadline = this.recorder.now() + timeoutMs;
    try {
      const expected = await this.expectedEndpoints(deadline);
      const converged = (w: ResumingWatcher): boolean => {
        if (w.kind !== "xds") return w.revision >= revision;
        const want = expected.get(w.services[0]);
        const have = w.lastEndpoints;
        return want !== undefined && have !== undefined && want.length === have.length && want.every((e, i) => e === have[i]);
      };
      while (this.recorder.now() < deadline) {
        const members = new Set(this.targets().map((n) => n.id));
        const waiting = this.watchers.filter((w) => !converged(w));
        if (waiting.length === 0) return;
        for (const w of waiting) if (w.nodeId !== undefined && !members.has(w.nodeId)) w.moveOff(`${w.nodeId} is no longer a target`);
        await new Promise((r) => setTimeout(r, CONVERGE_POLL_MS));
      }
    } finally {
      for (const w of this.watchers) w.close();
    }
  }

  /** Stops everything at once without waiting, for cleanup when a run fails: clients stop issuing, watchers close. */
  close(): void {
    this.stopSignal.stop();
    for (const w of this.watchers) w.close();
  }

  watchRecords(): WatchRecord[] {
    return this.watchers.map((w) => w.record());
  }

  abandonedInstances(): string[] {
    return [...(this.abandoned?.registered ?? [])];
  }

  stats(): { ops: number; failed: number; unknown: number } {
    return this.recorder.counts();
  }

  private context(name: string): ClientContext {
    return { name, recorder: this.recorder, random: this.seeds.next(), opTimeoutMs: this.opts.opTimeoutMs, targets: this.targets };
  }

  private addLoop(name: string, run: () => Promise<void>): void {
    this.loops.push({ name, run });
  }

  private watcher(name: string, transport: WatchTransport, services: readonly string[]): ResumingWatcher {
    return new ResumingWatcher(name, transport, services, this.targets, this.seeds.next(), () => this.recorder.now());
  }

  /** Each xDS-watched service's passing endpoints, sorted, from one linearizable read. */
  private async expectedEndpoints(deadline: number): Promise<Map<string, readonly string[]>> {
    const ctx = this.context("close-watchers");
    const expected = new Map<string, readonly string[]>();
    for (const w of this.watchers) {
      const service = w.services[0];
      if (w.kind !== "xds" || expected.has(service)) continue;
      const listing = await this.untilOk(deadline, `a linearizable read of ${service}`, async () => {
        const node = pickNode(ctx);
        if (node === undefined) return "no node to ask";
        const { op, listing } = await readService(ctx, node, service, "linearizable");
        return listing === undefined ? op.error ?? `HTTP ${op.status ?? "?"}` : { value: listing };
      });
      expected.set(service, passingEndpoints(listing));
    }
    return expected;
  }

  /** Runs `attempt` until it returns a value (a string says why it did not), pausing between tries; throws past `deadline`. */
  private async untilOk<T>(deadline: number, what: string, attempt: () => Promise<{ value: T } | string>): Promise<T> {
    let last = "never tried";
    while (this.recorder.now() < deadline) {
      const got = await attempt();
      if (typeof got !== "string") return got.value;
      last = got;
      await new Promise((r) => setTimeout(r, RETRY_PAUSE_MS));
    }
    throw new Error(`${what} did not succeed before the deadline; the last attempt: ${last}. Are the nodes healed and a leader elected?`);
  }
}

/** The endpoints EDS serves for a listing: passing instances' address:port, sorted as the xDS client records them. */
export function passingEndpoints(listing: ServiceListing): string[] {
  return listing.instances.filter((i) => i.status === "passing").map((i) => `${i.address}:${i.port}`).sort();
}
