// Watch streams over the registry, whatever carries them (gRPC, server-sent events): each stream
// follows the node's own applied state from a revision onward and is sent, in order,
//   - batches of events (an instance upserted, deleted, or its health changed), each event with
//     its revision;
//   - a reset (the full current state of what it watches, in chunks) when the revision it asked
//     to resume from has left the event window, when the state was replaced by a snapshot, or
//     when it fell too far behind: never a silent gap;
//   - progress notifications while nothing changes, if it asked for them.
// After every message the stream is complete up to that message's revision, and the revisions a
// stream is sent never go down (etcd #15220).
//
// Cost: streams that watch the same services share one group, and a fan-out computes each
// group's batch once; the transports encode a batch once and write the same bytes to every
// stream of the group. The fan-out runs in slices, so one change to 100,000 streams never holds
// the event loop for long, and a stream whose transport is full is skipped (it catches up from
// the window when it drains), so a slow stream never delays apply or any other stream. Past a
// bound a stream's backlog is coalesced to the latest change per instance, and past a larger one
// it is reset; both are counted.

import { SERVICE_NAME_PATTERN } from "../common/service_name.js";
import { Fifo } from "../common/fifo.js";
import type { Instance } from "./model.js";
import type { EventWindow, RegistryEvent } from "./events.js";
import { instanceIdOf, serviceOf } from "./events.js";
import type { ServiceViews } from "./service_views.js";
import type { RegistryState } from "./state.js";

export interface EventBatch {
  /** The stream is complete up to this revision once the batch is applied. */
  readonly revision: number;
  readonly events: readonly RegistryEvent[];
  /** Only the latest change per instance since the previous message: intermediate revisions were skipped. */
  readonly coalesced: boolean;
}

export type ResetReason = "initial" | "compacted" | "restored" | "behind";

/** One piece of a reset. The first replaces whatever the client held; after the last, it holds the state at `revision`. */
export interface ResetChunk {
  readonly revision: number;
  readonly reason: ResetReason;
  readonly instances: readonly Instance[];
  readonly first: boolean;
  readonly last: boolean;
}

/**
 * What a transport gives the hub. Each call returns false once the transport's buffer is full;
 * the hub then sends nothing more until the transport calls resume() on its handle.
 */
export interface WatchSink {
  events(batch: EventBatch): boolean;
  reset(chunk: ResetChunk): boolean;
  progress(revision: number): boolean;
}

/** What carries a stream to its client: counted apart, for metrics. */
export type WatchTransport = "grpc" | "sse";
export const WATCH_TRANSPORTS: readonly WatchTransport[] = ["grpc", "sse"];

export interface WatchRequest {
  readonly transport: WatchTransport;
  /** Empty: every service. */
  readonly services: readonly string[];
  /** Send what happened after this revision; 0 starts with a reset to the current state. */
  readonly sinceRevision: number;
  /** 0: no progress notifications. */
  readonly progressIntervalMs: number;
}

export interface WatchHandle {
  /** The transport drained: send what is pending. */
  resume(): void;
  close(): void;
}

export class WatchInputError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "WatchInputError";
  }
}

export class TooManyWatchStreamsError extends Error {
  constructor(limit: number) {
    super(`this node already serves ${limit} watch streams; watch through another node`);
    this.name = "TooManyWatchStreamsError";
  }
}

export interface WatchHubBounds {
  readonly streamsMax: number;
  readonly servicesPerStreamMax: number;
  readonly streamEventsMax: number;
  readonly coalescedInstancesMax: number;
  readonly resetChunkInstances: number;
  readonly resetChunksPerTurn: number;
  readonly sliceStreams: number;
  readonly progressTickMs: number;
  readonly progressIntervalMsMin: number;
  readonly progressIntervalMsMax: number;
  readonly progressJitterFraction: number;
}

export const watchHubDefaults: WatchHubBounds = {
  /** Open streams per node, over every transport. */
  streamsMax: 250_000,
  /** Services one stream may name. */
  servicesPerStreamMax: 64,
  /** A stream's backlog beyond this many events is coalesced to the latest change per instance. */
  streamEventsMax: 1_000,
  /** A coalesced backlog beyond this many instances is sent as a reset instead. */
  coalescedInstancesMax: 10_000,
  /** Instances per reset chunk: bounds one message and the encoding done at once. */
  resetChunkInstances: 500,
  /** Reset chunks one stream is sent before the others get their turn. */
  resetChunksPerTurn: 4,
  /** Streams served per slice of the fan-out before it yields to the event loop. */
  sliceStreams: 500,
  /** How often due progress notifications are looked for. */
  progressTickMs: 250,
  progressIntervalMsMin: 1_000,
  progressIntervalMsMax: 10 * 60_000,
  /** Each notification is due within ±this share of the interval, so streams opened together drift apart. */
  progressJitterFraction: 0.1,
};

/** Bugs a chaos run plants in the hub (CAIRN_PLANTED_BUG), to show its watch checker catches them. */
export const WATCH_HUB_PLANTED_BUGS = {
  watchSkipsEvent: "leave out of every stream's batch the events whose revision is a multiple of 29",
} as const;

export type WatchHubPlantedBug = keyof typeof WATCH_HUB_PLANTED_BUGS;

/** Every 29th revision's events go missing under the planted bug: rare enough to look healthy. */
const SKIPPED_REVISION_MODULUS = 29;

export type WatchHubOptions = Partial<WatchHubBounds> & {
  readonly random?: () => number;
  readonly plantedBug?: WatchHubPlantedBug;
  /**
   * Where a reset takes a service's instances from: the registry's views, which list a service of
   * 100,000 instances in slices (the state lists it in one call of 20-30 ms). Without them, the state.
   */
  readonly views?: ServiceViews;
};

/** What the hub has done, for the metrics endpoint to export. */
export interface WatchHubStats {
  streams: number;
  /** Open streams by what carries them; they sum to `streams`. */
  streamsByTransport: Record<WatchTransport, number>;
  batchesSent: number;
  eventsSent: number;
  coalesced: number;
  resets: Record<ResetReason, number>;
  progressSent: number;
}

const SERVICE_NAME = SERVICE_NAME_PATTERN;
/** A group's key for the streams that watch every service. */
const ALL_SERVICES = "*";

/** The full state of a group's services at one revision, cut into chunks as streams ask for them. */
interface ResetSnapshot {
  readonly epoch: number;
  readonly revision: number;
  readonly reason: ResetReason;
  /** Undefined until the services' views have given their instances (in slices, for a large service). */
  instances: readonly Instance[] | undefined;
  readonly ready: Promise<void>;
  readonly chunks: ResetChunk[];
  chunkCount: number;
}

class Group {
  readonly streams = new Set<Stream>();
  /** Revisions of this group's events still in the window, oldest first. */
  readonly relevant = new Fifo<number>();
  /** The newest revision of this group's that has left the window (0: none). */
  droppedRelevantMax = 0;
  lastRelevant = 0;
  batchMemo: { after: number; upTo: number; batch: EventBatch } | undefined;
  resetMemo: ResetSnapshot | undefined;

  constructor(readonly key: string, readonly services: ReadonlySet<string> | undefined) {}
}

class Stream implements WatchHandle {
  blocked = false;
  closed = false;
  queued = false;
  reset: { snapshot: ResetSnapshot; next: number } | undefined;
  /** On the elapsed clock (performance.now()): a wall clock jump must not stop or flood notifications. */
  progressDueMs = 0;

  constructor(
    private readonly hub: WatchHub,
    readonly group: Group,
    readonly sink: WatchSink,
    readonly transport: WatchTransport,
    public cursor: number,
    public epoch: number,
    readonly progressIntervalMs: number,
  ) {}

  resume(): void {
    if (this.closed || !this.blocked) return;
    this.blocked = false;
    this.hub.enqueue(this);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.hub.remove(this);
  }
}

export class WatchHub {
  readonly stats: WatchHubStats = {
    streams: 0, streamsByTransport: { grpc: 0, sse: 0 }, batchesSent: 0, eventsSent: 0, coalesced: 0,
    resets: { initial: 0, compacted: 0, restored: 0, behind: 0 }, progressSent: 0,
  };
  private readonly opts: WatchHubBounds;
  private readonly random: () => number;
  private readonly views: ServiceViews | undefined;
  private readonly plantedBug: WatchHubPlantedBug | undefined;
  private readonly window: EventWindow;
  private readonly groups = new Map<string, Group>();
  private readonly groupsByService = new Map<string, Set<Group>>();
  private readonly dirty = new Set<Group>();
  /** Streams to serve on their own: new ones, resumed ones, and those in the middle of a reset. */
  private readonly ready = new Fifo<Stream>();
  private current: Iterator<Stream> | undefined;
  private pumpScheduled = false;
  private readonly progressBuckets = new Map<number, Set<Stream>>();
  private progressTimer: NodeJS.Timeout | undefined;
  private progressStreams = 0;

  constructor(private readonly state: RegistryState, options: WatchHubOptions = {}) {
    const { random, views, plantedBug, ...bounds } = options;
    this.plantedBug = plantedBug;
    this.opts = { ...watchHubDefaults, ...bounds };
    this.random = random ?? Math.random;
    this.views = views;
    if (this.opts.resetChunksPerTurn < 1 || this.opts.sliceStreams < 1 || this.opts.resetChunkInstances < 1) {
      throw new RangeError("watch hub: resetChunksPerTurn, sliceStreams and resetChunkInstances must be at least 1");
    }
    if (this.opts.coalescedInstancesMax < this.opts.streamEventsMax) throw new RangeError("watch hub: coalescedInstancesMax must be at least streamEventsMax");
    this.window = state.events;
    state.onChange((revision, services, _catalogChanged, delta) => {
      if (delta.kind === "restored") {
        for (const g of this.groups.values()) {
          g.batchMemo = undefined;
          this.dirty.add(g);
        }
      } else {
        for (const s of services) for (const g of this.groupsByService.get(s) ?? []) this.touch(g, revision);
        const all = this.groups.get(ALL_SERVICES);
        if (all !== undefined) this.touch(all, revision);
      }
      this.schedulePump();
    });
  }

  /** Opens a stream; throws WatchInputError for a bad request and TooManyWatchStreamsError past the bound. */
  open(sink: WatchSink, request: WatchRequest): WatchHandle {
    const services = [...new Set(request.services)].sort();
    if (services.length > this.opts.servicesPerStreamMax) {
      throw new WatchInputError("services", `names ${services.length} services; one stream may watch at most ${this.opts.servicesPerStreamMax} (or all, by naming none)`);
    }
    for (const s of services) {
      if (!SERVICE_NAME.test(s)) throw new WatchInputError("services", `"${s.slice(0, 80)}" is not a service name (a DNS label: letters, digits and '-')`);
    }
    if (!Number.isSafeInteger(request.sinceRevision) || request.sinceRevision < 0) {
      throw new WatchInputError("sinceRevision", `${request.sinceRevision} is not a revision (a whole number >= 0)`);
    }
    const progressMs = request.progressIntervalMs;
    if (progressMs !== 0 && (!Number.isFinite(progressMs) || progressMs < this.opts.progressIntervalMsMin || progressMs > this.opts.progressIntervalMsMax)) {
      throw new WatchInputError("progressInterval", `${progressMs} ms is outside ${this.opts.progressIntervalMsMin} ms to ${this.opts.progressIntervalMsMax / 60_000} min`);
    }
    if (this.stats.streams >= this.opts.streamsMax) throw new TooManyWatchStreamsError(this.opts.streamsMax);
    const group = this.groupFor(services);
    const stream = new Stream(this, group, sink, request.transport, request.sinceRevision, this.window.epoch, progressMs);
    group.streams.add(stream);
    this.stats.streams++;
    this.stats.streamsByTransport[request.transport]++;
    if (request.sinceRevision === 0) this.startReset(stream, "initial");
    if (progressMs > 0) this.scheduleProgress(stream, progressMs * this.random());
    this.enqueue(stream);
    return stream;
  }

  /** @internal A stream wants serving on its own (new, resumed, or resetting). */
  enqueue(stream: Stream): void {
    if (stream.queued || stream.closed) return;
    stream.queued = true;
    this.ready.push(stream);
    this.schedulePump();
  }

  /** @internal */
  remove(stream: Stream): void {
    const g = stream.group;
    g.streams.delete(stream);
    this.stats.streams--;
    this.stats.streamsByTransport[stream.transport]--;
    if (stream.progressIntervalMs > 0) this.unscheduleProgress(stream);
    if (g.streams.size === 0) {
      this.groups.delete(g.key);
      this.dirty.delete(g);
      for (const s of g.services ?? []) {
        const set = this.groupsByService.get(s);
        set?.delete(g);
        if (set?.size === 0) this.groupsByService.delete(s);
      }
    }
  }

  /** No fan-out is pending: every stream that can be sent to has been sent everything. */
  get idle(): boolean {
    return !this.pumpScheduled;
  }

  /** Stops the progress timer; open streams stay open but get nothing more. */
  stop(): void {
    if (this.progressTimer !== undefined) clearInterval(this.progressTimer);
    this.progressTimer = undefined;
  }

  private groupFor(services: readonly string[]): Group {
    const key = services.length === 0 ? ALL_SERVICES : services.join(",");
    let g = this.groups.get(key);
    if (g !== undefined) return g;
    g = new Group(key, services.length === 0 ? undefined : new Set(services));
    // What came before the group is known only by its newest revision. While that is in the
    // window, assume the worst of what left it: a cursor below the floor is reset.
    const newest = services.length === 0 ? this.state.revision : Math.max(0, ...services.map((s) => this.state.serviceIndex(s)));
    g.lastRelevant = newest;
    if (newest > this.window.floor) {
      g.relevant.push(newest);
      g.droppedRelevantMax = this.window.floor;
    } else {
      g.droppedRelevantMax = newest;
    }
    this.groups.set(key, g);
    for (const s of services) {
      let set = this.groupsByService.get(s);
      if (set === undefined) this.groupsByService.set(s, (set = new Set()));
      set.add(g);
    }
    return g;
  }

  private touch(g: Group, revision: number): void {
    if (g.lastRelevant !== revision) g.relevant.push(revision);
    g.lastRelevant = revision;
    this.dirty.add(g);
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => this.pump());
  }

  /** One slice of the fan-out: streams that want serving on their own first, then dirty groups. */
  private pump(): void {
    this.pumpScheduled = false;
    let budget = this.opts.sliceStreams;
    while (budget > 0) {
      const s = this.ready.shift();
      if (s === undefined) break;
      s.queued = false;
      this.serve(s);
      budget--;
    }
    while (budget > 0) {
      if (this.current === undefined) {
        const next = this.dirty.values().next();
        if (next.done === true) break;
        this.dirty.delete(next.value);
        this.current = next.value.streams.values();
      }
      const s = this.current.next();
      if (s.done === true) {
        this.current = undefined;
        continue;
      }
      this.serve(s.value);
      budget--;
    }
    if (this.ready.length > 0 || this.dirty.size > 0 || this.current !== undefined) this.schedulePump();
  }

  private serve(s: Stream): void {
    if (s.closed || s.blocked) return;
    if (s.reset !== undefined) {
      this.continueReset(s);
      return;
    }
    if (s.epoch !== this.window.epoch) {
      this.startReset(s, "restored");
      this.continueReset(s);
      return;
    }
    const head = this.state.revision;
    if (s.cursor >= head || s.cursor >= s.group.lastRelevant) return;
    const after = this.effectiveCursor(s);
    if (after === undefined) {
      this.startReset(s, "compacted");
      this.continueReset(s);
      return;
    }
    const batch = this.batchFor(s.group, after, head);
    s.cursor = head;
    if (batch === undefined) {
      this.startReset(s, "behind");
      this.continueReset(s);
      return;
    }
    if (batch.events.length === 0) return;
    this.stats.batchesSent++;
    this.stats.eventsSent += batch.events.length;
    if (batch.coalesced) this.stats.coalesced++;
    if (!s.sink.events(batch)) s.blocked = true;
  }

  /**
   * Where the stream's next batch starts. A cursor below the window's floor is still good when
   * none of its group's events left the window after it; otherwise undefined: it must be reset.
   */
  private effectiveCursor(s: Stream): number | undefined {
    const g = s.group;
    const floor = this.window.floor;
    for (let r = g.relevant.peek(); r !== undefined && r <= floor; r = g.relevant.peek()) g.droppedRelevantMax = g.relevant.shift() ?? 0;
    if (s.cursor >= floor) return s.cursor;
    return g.droppedRelevantMax <= s.cursor ? floor : undefined;
  }

  /** The group's events in (after, upTo], computed once for every stream at the same place; undefined: too many, reset instead. */
  private batchFor(g: Group, after: number, upTo: number): EventBatch | undefined {
    const memo = g.batchMemo;
    if (memo?.after === after && memo.upTo === upTo) return memo.batch;
    const range = this.window.range(after, upTo);
    if (range === undefined) return undefined;
    let events: readonly RegistryEvent[];
    if (g.services === undefined) events = range.events;
    else if (g.services.size === 1) events = range.byService.get([...g.services][0]) ?? [];
    else {
      const services = g.services;
      events = range.events.filter((e) => services.has(serviceOf(e)));
    }
    if (this.plantedBug === "watchSkipsEvent") events = events.filter((e) => e.revision % SKIPPED_REVISION_MODULUS !== 0);
    let coalesced = false;
    if (events.length > this.opts.streamEventsMax) {
      const latest = new Map<string, RegistryEvent>();
      for (const e of events) {
        const id = instanceIdOf(e);
        // Re-inserting moves the instance to the position of its latest change.
        latest.delete(id);
        latest.set(id, e);
      }
      if (latest.size > this.opts.coalescedInstancesMax) return undefined;
      events = [...latest.values()];
      coalesced = true;
    }
    const batch: EventBatch = { revision: upTo, events, coalesced };
    g.batchMemo = { after, upTo, batch };
    return batch;
  }

  private startReset(s: Stream, reason: ResetReason): void {
    const g = s.group;
    const revision = this.state.revision;
    let snapshot = g.resetMemo;
    if (snapshot === undefined || snapshot.epoch !== this.window.epoch || snapshot.revision !== revision || snapshot.reason !== reason) {
      snapshot = this.captureReset(g, revision, reason);
      g.resetMemo = snapshot;
    }
    this.stats.resets[reason]++;
    s.reset = { snapshot, next: 0 };
    s.epoch = snapshot.epoch;
    s.cursor = revision;
  }

  /** The group's instances at `revision`, taken now (synchronously) and listed as the views allow. */
  private captureReset(g: Group, revision: number, reason: ResetReason): ResetSnapshot {
    const epoch = this.window.epoch;
    const views = this.views;
    const settle = (snapshot: ResetSnapshot, instances: readonly Instance[]): void => {
      snapshot.instances = instances;
      snapshot.chunkCount = Math.max(1, Math.ceil(instances.length / this.opts.resetChunkInstances));
    };
    if (g.services === undefined || views === undefined) {
      const instances: Instance[] = g.services === undefined
        ? [...this.state.allInstances()]
        : [...g.services].flatMap((name) => this.state.instancesOf(name));
      const snapshot: ResetSnapshot = { epoch, revision, reason, instances: undefined, ready: Promise.resolve(), chunks: [], chunkCount: 1 };
      settle(snapshot, instances);
      return snapshot;
    }
    // Each view's snapshot is taken in this same synchronous step, so together they are the state at `revision`.
    const lists = [...g.services].map((name) => views.snapshot(name).instances);
    const ready = Promise.all(lists).then((all) => settle(snapshot, all.length === 1 ? all[0] : all.flat()));
    const snapshot: ResetSnapshot = { epoch, revision, reason, instances: undefined, ready, chunks: [], chunkCount: 1 };
    return snapshot;
  }

  private continueReset(s: Stream): void {
    const reset = s.reset;
    if (reset === undefined) return;
    const { snapshot } = reset;
    if (snapshot.instances === undefined) {
      void snapshot.ready.then(() => this.enqueue(s));
      return;
    }
    for (let sent = 0; sent < this.opts.resetChunksPerTurn; sent++) {
      const chunk = this.resetChunk(snapshot, reset.next++);
      const ok = s.sink.reset(chunk);
      if (chunk.last) {
        s.reset = undefined;
        // Changes applied while the reset was sent follow it.
        if (ok) this.enqueue(s);
        else s.blocked = true;
        return;
      }
      if (!ok) {
        s.blocked = true;
        return;
      }
    }
    this.enqueue(s);
  }

  private resetChunk(snapshot: ResetSnapshot, n: number): ResetChunk {
    const known = snapshot.chunks[n];
    if (known !== undefined) return known;
    const size = this.opts.resetChunkInstances;
    const chunk: ResetChunk = {
      revision: snapshot.revision,
      reason: snapshot.reason,
      instances: (snapshot.instances ?? []).slice(n * size, (n + 1) * size),
      first: n === 0,
      last: n === snapshot.chunkCount - 1,
    };
    snapshot.chunks[n] = chunk;
    return chunk;
  }

  // ---------------------------------------------------------------- progress notifications

  private bucketOf(dueMs: number): number {
    return Math.floor(dueMs / this.opts.progressTickMs);
  }

  private scheduleProgress(s: Stream, inMs: number): void {
    s.progressDueMs = performance.now() + inMs;
    const key = this.bucketOf(s.progressDueMs);
    let bucket = this.progressBuckets.get(key);
    if (bucket === undefined) this.progressBuckets.set(key, (bucket = new Set()));
    bucket.add(s);
    this.progressStreams++;
    if (this.progressTimer === undefined) {
      this.progressTimer = setInterval(() => this.progressTick(), this.opts.progressTickMs);
      this.progressTimer.unref();
    }
  }

  private unscheduleProgress(s: Stream): void {
    const key = this.bucketOf(s.progressDueMs);
    const bucket = this.progressBuckets.get(key);
    if (bucket?.delete(s) === true) {
      this.progressStreams--;
      if (bucket.size === 0) this.progressBuckets.delete(key);
    }
    if (this.progressStreams === 0 && this.progressTimer !== undefined) {
      clearInterval(this.progressTimer);
      this.progressTimer = undefined;
    }
  }

  private progressTick(): void {
    const nowBucket = this.bucketOf(performance.now());
    const due: Stream[] = [];
    for (const [key, bucket] of this.progressBuckets) {
      if (key > nowBucket) continue;
      this.progressBuckets.delete(key);
      this.progressStreams -= bucket.size;
      due.push(...bucket);
    }
    // Sent in slices, like any fan-out.
    const sendSlice = (from: number): void => {
      const end = Math.min(due.length, from + this.opts.sliceStreams);
      for (let i = from; i < end; i++) this.notifyProgress(due[i]);
      if (end < due.length) setImmediate(() => sendSlice(end));
    };
    if (due.length > 0) sendSlice(0);
    else if (this.progressStreams === 0 && this.progressTimer !== undefined) {
      clearInterval(this.progressTimer);
      this.progressTimer = undefined;
    }
  }

  private notifyProgress(s: Stream): void {
    if (s.closed) return;
    const jitter = 1 + (2 * this.random() - 1) * this.opts.progressJitterFraction;
    this.scheduleProgress(s, s.progressIntervalMs * jitter);
    // Only a stream with nothing pending is told where it is: a notification never overtakes an event.
    if (s.blocked || s.reset !== undefined || s.epoch !== this.window.epoch || s.cursor < s.group.lastRelevant) return;
    s.cursor = Math.max(s.cursor, this.state.revision);
    this.stats.progressSent++;
    if (!s.sink.progress(s.cursor)) s.blocked = true;
  }
}
