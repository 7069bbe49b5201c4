// A local, always-current view of services' instances, kept by one watch stream (watch_stream.ts)
// that resumes across nodes. It holds only the instances its health filter keeps: upsert and
// health events carry the whole instance, so an instance that becomes healthy again needs nothing
// the view dropped. It changes only by whole messages: an events batch (applied in one go) or a
// complete reset (which replaces the state), so instances() never shows half of either.

import type { Logger } from "pino";
import { asError } from "../common/errors.js";
import type { EventsMessage } from "./decode.js";
import { CairnAbortedError, CairnLimitError } from "./errors.js";
import type { ClientHttp } from "./http.js";
import type { HealthFilter } from "./watch.js";
import { type CompleteReset, WatchStream, type WatchStreamStats } from "./watch_stream.js";
import type { Instance, ResetReason, WatchEvent } from "./types.js";

export interface ServiceViewOptions {
  /** passing (the default): every check passing. notCritical: passing or warning. all: everything. */
  readonly health?: HealthFilter;
  /**
   * The node sends a progress notification this often while nothing changes; a stream silent for
   * stallIntervals of them is given up for another node. Default 5000 (a stall is noticed in 15 s);
   * from 1000 to 600000.
   */
  readonly progressIntervalMs?: number;
  /** The most instances the view holds (or a reset may bring); past it the view ends with CairnLimitError. Default 100000. */
  readonly instancesMax?: number;
  /** Every failure: those the view survives (it resumes on another node) and the one that ends it. */
  readonly onError?: (err: Error) => void;
}

export const viewDefaults = {
  health: "passing",
  progressIntervalMs: 5_000,
  /** The server's notifications are jittered by ±10% and sent on a 250 ms tick: three intervals leave room for both. */
  stallIntervals: 3,
  instancesMax: 100_000,
} as const;

/** What the server accepts for ?progress=. */
export const viewLimits = {
  progressIntervalMsMin: 1_000,
  progressIntervalMsMax: 600_000,
} as const;

interface ResolvedViewOptions {
  readonly health: HealthFilter;
  readonly progressIntervalMs: number;
  readonly stallMs: number;
  readonly instancesMax: number;
  readonly onError: ((err: Error) => void) | undefined;
}

const HEALTH_FILTERS: readonly HealthFilter[] = ["passing", "notCritical", "all"];

export function resolveViewOptions(opts: ServiceViewOptions): ResolvedViewOptions {
  const health = opts.health ?? viewDefaults.health;
  if (!HEALTH_FILTERS.includes(health)) throw new RangeError(`health "${String(health)}" must be one of ${HEALTH_FILTERS.join(", ")}`);
  const progressIntervalMs = opts.progressIntervalMs ?? viewDefaults.progressIntervalMs;
  if (!Number.isSafeInteger(progressIntervalMs) || progressIntervalMs < viewLimits.progressIntervalMsMin || progressIntervalMs > viewLimits.progressIntervalMsMax) {
    throw new RangeError(`progressIntervalMs ${progressIntervalMs} must be a whole number from ${viewLimits.progressIntervalMsMin} to ${viewLimits.progressIntervalMsMax}`);
  }
  const instancesMax = opts.instancesMax ?? viewDefaults.instancesMax;
  if (!Number.isSafeInteger(instancesMax) || instancesMax < 1) throw new RangeError(`instancesMax ${instancesMax} must be a whole number >= 1`);
  return { health, progressIntervalMs, stallMs: progressIntervalMs * viewDefaults.stallIntervals, instancesMax, onError: opts.onError };
}

/** One change the view applied. */
export interface ViewChange {
  readonly kind: "events" | "reset";
  /** The view is complete up to this revision. */
  readonly revision: number;
  /** For "events": the batch as applied, every event of the watched services before the health filter. Empty for a reset. */
  readonly events: readonly WatchEvent[];
  /** The batch holds only the latest change per instance; intermediate revisions were skipped. */
  readonly coalesced: boolean;
  /** For "reset": why the state was replaced. */
  readonly reason: ResetReason | undefined;
  /** Whether instances() differs from before (a reset always counts as a change). */
  readonly changed: boolean;
}

export interface ViewDeps {
  readonly endpoints: readonly string[];
  readonly http: ClientHttp;
  readonly firstEndpoint: number;
  readonly eventCharsMax: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly random: () => number;
  readonly logger?: Logger | undefined;
}

function keeps(health: HealthFilter, inst: Instance): boolean {
  if (health === "all") return true;
  return health === "passing" ? inst.status === "passing" : inst.status !== "critical";
}

export class ServiceView {
  /** Resolves once the view holds its first complete state; rejects if it ends (or is closed) before. */
  readonly ready: Promise<void>;
  /** Resolves once the view has stopped: closed, or ended by a final error (see `error`). */
  readonly done: Promise<void>;
  private readonly opts: ResolvedViewOptions;
  private readonly held = new Map<string, Instance>();
  /** instances(), sorted by id, made once per change. */
  private sorted: readonly Instance[] | undefined;
  private readonly listeners = new Set<(change: ViewChange) => void>();
  private readonly stream: WatchStream;
  private isReady = false;
  private endedBy: Error | undefined;
  private settleReady!: (err?: Error) => void;

  constructor(private readonly deps: ViewDeps, readonly services: readonly string[], opts: ServiceViewOptions) {
    this.opts = resolveViewOptions(opts);
    this.ready = new Promise<void>((resolve, reject) => {
      this.settleReady = (err) => (err === undefined ? resolve() : reject(err));
    });
    // A caller that never awaits ready must not see an unhandled rejection; one that does still gets it.
    this.ready.catch(() => undefined);
    this.stream = new WatchStream({
      ...deps,
      services,
      progressIntervalMs: this.opts.progressIntervalMs,
      stallMs: this.opts.stallMs,
      instancesMax: this.opts.instancesMax,
    }, {
      events: (batch) => this.applyEvents(batch),
      reset: (reset) => this.applyReset(reset),
      failed: (err, final) => this.failed(err, final),
    });
    this.done = this.stream.done;
  }

  /** The revision the view is complete up to: every change at or below it is applied, none above. */
  get revision(): number {
    return this.stream.revision;
  }

  /** The node the view's stream is attached to now; undefined while it (re)connects. */
  get endpoint(): string | undefined {
    return this.stream.endpoint;
  }

  get stats(): Readonly<WatchStreamStats> {
    return this.stream.stats;
  }

  /** The error that ended the view, if one did. It keeps the last state it held. */
  get error(): Error | undefined {
    return this.endedBy;
  }

  /** The instances the health filter keeps, sorted by id; of one service when named (for a view of several). */
  instances(service?: string): readonly Instance[] {
    this.sorted ??= Object.freeze([...this.held.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));
    return service === undefined ? this.sorted : this.sorted.filter((i) => i.service === service);
  }

  instance(id: string): Instance | undefined {
    return this.held.get(id);
  }

  get size(): number {
    return this.held.size;
  }

  /**
   * Calls `listener` after every batch and reset the view applies, synchronously (the stream
   * reads on once it returns). A listener that throws is reported to onError. Returns a function
   * that removes it.
   */
  onChange(listener: (change: ViewChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops the stream. The view keeps the state it held. Idempotent. */
  close(): void {
    this.stream.stop();
    if (!this.isReady) this.settleReady(new CairnAbortedError("watch", this.describe()));
  }

  private applyEvents(batch: EventsMessage): void {
    let changed = false;
    for (const e of batch.events) {
      if (e.type !== "delete" && keeps(this.opts.health, e.instance)) {
        this.held.set(e.id, e.instance);
        changed = true;
      } else if (this.held.delete(e.id)) {
        changed = true;
      }
    }
    if (changed) this.sorted = undefined;
    this.notify({ kind: "events", revision: batch.revision, events: batch.events, coalesced: batch.coalesced, reason: undefined, changed });
    // Checked after the whole batch: the view ends holding it all, over the bound by one batch at most.
    if (this.held.size > this.opts.instancesMax) {
      throw new CairnLimitError("instancesMax", this.opts.instancesMax,
        `the view of ${this.describe()} holds more than instancesMax (${this.opts.instancesMax}) instances; raise instancesMax or watch fewer services`);
    }
  }

  private applyReset(reset: CompleteReset): void {
    this.held.clear();
    for (const inst of reset.instances) if (keeps(this.opts.health, inst)) this.held.set(inst.id, inst);
    this.sorted = undefined;
    if (!this.isReady) {
      this.isReady = true;
      this.settleReady();
    }
    this.notify({ kind: "reset", revision: reset.revision, events: [], coalesced: false, reason: reset.reason, changed: true });
  }

  private failed(err: Error, final: boolean): void {
    if (final) {
      this.endedBy = err;
      if (!this.isReady) this.settleReady(err);
    }
    this.report(err);
  }

  private notify(change: ViewChange): void {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch (err) {
        const e = asError(err);
        this.deps.logger?.warn({ services: this.services, err: e.message }, "a view's onChange listener threw");
        this.report(e);
      }
    }
  }

  private report(err: Error): void {
    try {
      this.opts.onError?.(err);
    } catch {
      // An onError that throws has nowhere further to report to; the view goes on.
    }
  }

  private describe(): string {
    return this.services.length === 0 ? "every service" : this.services.join(", ");
  }
}
