// Blocking queries: wait until a service's index (or the catalog's) passes the one the caller
// last saw, or until the wait runs out. Waiters are woken only by revisions that touched what
// they watch, a bounded number per event-loop iteration, and their number is bounded.
//
// A parked waiter is small: one object in two sets (what it watches, and its deadline's bucket).
// Nothing of the answer is built here; the first woken reader builds it and the others share it
// (src/common/shared_answers.ts).

import { TooManyWatchersError } from "../common/errors.js";
import { WakeQueue } from "../common/slices.js";
import type { RegistryState } from "./state.js";

/** What a blocking query watches: one service, or the catalog (the set of services and tags). */
export type WatchKey = { readonly service: string } | { readonly catalog: true };

/**
 * How a caller learns that its reader went away: it registers the given function to be called
 * then (a closed connection, a server shutting down), which ends the wait at once.
 */
export type OnGone = (end: () => void) => void;

export interface ChangeWaitersLimits {
  /** Waiters parked at once, at most; one more is refused with TooManyWatchersError. */
  readonly waitersMax: number;
  /** Waiters woken per event-loop iteration, at most: each then answers its request. */
  readonly wakePerTurn: number;
}

export const changeWaitersDefaults: ChangeWaitersLimits = { waitersMax: 100_000, wakePerTurn: 64 };

/**
 * Waits end on a clock of this resolution: a wait may run up to this much past its time. Far
 * below Consul's jitter (up to wait/16), and one timer for every waiter, where a timer each cost
 * 10,000 timers (jittered waits rarely share a duration, so rarely a timer list).
 */
export const DEADLINE_RESOLUTION_MS = 100;

/** One parked blocking query: the set it sits in (until it is woken), its deadline, and how to end it. */
class Waiter {
  done = false;
  /** The deadline's bucket: DEADLINE_RESOLUTION_MS-long slots of performance.now(). */
  bucket = 0;

  /** `service` is undefined for the catalog. */
  constructor(readonly owner: ChangeWaiters, readonly service: string | undefined, readonly set: Set<Waiter>, readonly resolve: () => void) {}

  /** Ends the wait (woken, timed out or gone); later calls do nothing. */
  readonly end = (): void => {
    if (this.done) return;
    this.done = true;
    this.owner.leave(this);
    this.resolve();
  };
}

/** Every waiter's deadline, in buckets of DEADLINE_RESOLUTION_MS; one interval runs while any is set. */
class Deadlines {
  private readonly buckets = new Map<number, Set<Waiter>>();
  /** The first bucket not yet expired. */
  private nextBucket = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly expire: (waiter: Waiter) => void) {}

  add(waiter: Waiter, timeoutMs: number): void {
    if (this.timer === undefined) {
      this.nextBucket = Math.floor(performance.now() / DEADLINE_RESOLUTION_MS);
      // Held (not unref'd) while any wait is, as a timer per wait would be; it stops with the last.
      this.timer = setInterval(this.tick, DEADLINE_RESOLUTION_MS);
    }
    // Never a bucket already expired: it would not be looked at again.
    waiter.bucket = Math.max(this.nextBucket, Math.ceil((performance.now() + timeoutMs) / DEADLINE_RESOLUTION_MS));
    let set = this.buckets.get(waiter.bucket);
    if (set === undefined) this.buckets.set(waiter.bucket, (set = new Set()));
    set.add(waiter);
  }

  remove(waiter: Waiter): void {
    const set = this.buckets.get(waiter.bucket);
    if (set === undefined || !set.delete(waiter)) return;
    if (set.size === 0) this.buckets.delete(waiter.bucket);
    if (this.buckets.size === 0) this.stop();
  }

  private readonly tick = (): void => {
    const current = Math.floor(performance.now() / DEADLINE_RESOLUTION_MS);
    // Every bucket since the last tick: a stalled loop skips none.
    for (; this.nextBucket <= current && this.buckets.size > 0; this.nextBucket++) {
      const set = this.buckets.get(this.nextBucket);
      if (set === undefined) continue;
      this.buckets.delete(this.nextBucket);
      for (const waiter of set) this.expire(waiter);
    }
    this.nextBucket = Math.max(this.nextBucket, current + 1);
    if (this.buckets.size === 0) this.stop();
  };

  private stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

export class ChangeWaiters {
  private readonly byService = new Map<string, Set<Waiter>>();
  private readonly catalog = new Set<Waiter>();
  private count = 0;
  private readonly wakeQueue: WakeQueue;
  private readonly deadlines = new Deadlines((waiter) => this.wakeQueue.push(waiter.end));
  readonly limits: ChangeWaitersLimits;

  constructor(private readonly state: RegistryState, limits: Partial<ChangeWaitersLimits> = {}) {
    this.limits = { ...changeWaitersDefaults, ...limits };
    if (!Number.isInteger(this.limits.waitersMax) || this.limits.waitersMax < 0) {
      throw new RangeError(`waitersMax ${this.limits.waitersMax} must be a whole number >= 0`);
    }
    this.wakeQueue = new WakeQueue(this.limits.wakePerTurn);
    state.onChange((_revision, services, catalogChanged) => {
      for (const s of services) this.wake(this.byService.get(s));
      if (catalogChanged) this.wake(this.catalog);
    });
  }

  get waitersMax(): number {
    return this.limits.waitersMax;
  }

  /** The index a blocking query on `key` reports. */
  indexOf(key: WatchKey): number {
    return "catalog" in key ? this.state.catalogIndex : this.state.serviceIndex(key.service);
  }

  /**
   * Resolves once indexOf(key) > sinceIndex, after timeoutMs, or when the reader is gone (its
   * place is freed at once); never rejects once waiting. Woken waiters resolve a few per
   * event-loop iteration, in the order they were woken.
   */
  wait(key: WatchKey, sinceIndex: number, timeoutMs: number, onGone?: OnGone): Promise<void> {
    if (this.indexOf(key) > sinceIndex || timeoutMs <= 0) return Promise.resolve();
    if (this.count >= this.limits.waitersMax) return Promise.reject(new TooManyWatchersError(this.limits.waitersMax));
    return new Promise((resolve) => {
      const service = "catalog" in key ? undefined : key.service;
      let set = service === undefined ? this.catalog : this.byService.get(service);
      if (set === undefined) this.byService.set(service as string, (set = new Set()));
      const waiter = new Waiter(this, service, set, resolve);
      set.add(waiter);
      this.count++;
      this.deadlines.add(waiter, timeoutMs);
      onGone?.(waiter.end);
    });
  }

  /** Wakes every waiter (the server is shutting down: each answers what is current). */
  wakeAll(): void {
    for (const set of [...this.byService.values(), this.catalog]) this.wake(set);
  }

  get waiting(): number {
    return this.count;
  }

  /** Waiters woken and not yet resolved. */
  get waking(): number {
    return this.wakeQueue.length;
  }

  /** Called once by a waiter as it ends: it leaves its set (if still in it: not yet woken), and the count. */
  leave(waiter: Waiter): void {
    waiter.set.delete(waiter);
    this.deadlines.remove(waiter);
    this.count--;
    this.forgetIfEmpty(waiter.service, waiter.set);
  }

  /**
   * Moves a set's waiters to the wake queue, each once. They stay counted until they resolve, so
   * the bound holds for waiters woken and not yet answered too, and bounds the queue.
   */
  private wake(set: Set<Waiter> | undefined): void {
    if (set === undefined || set.size === 0) return;
    let service: string | undefined;
    for (const waiter of set) {
      service = waiter.service;
      this.wakeQueue.push(waiter.end);
    }
    set.clear();
    this.forgetIfEmpty(service, set);
  }

  private forgetIfEmpty(service: string | undefined, set: Set<Waiter>): void {
    if (service !== undefined && set.size === 0 && this.byService.get(service) === set) this.byService.delete(service);
  }
}
