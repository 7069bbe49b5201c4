// Virtual time for running real, asynchronous code deterministically: the simulator runs the real
// RaftDriver on it, and the Raft scenario tests let promises settle the same way.
//
// Events run one at a time in (time, sequence) order. After each, every promise it settled runs
// to completion (a macrotask turn drains the microtask queue) before the next event: so
// async/await code behaves as on a real event loop, and since nothing here reads the real clock
// or does real I/O, a run is a pure function of its seed and what the test does.

import type { Clock, Timer } from "../../../src/raft/node/ports.js";
import { EventHeap } from "./heap.js";

interface WorldEvent {
  readonly at: number;
  readonly seq: number;
  readonly run: () => void;
}

/** Lets every microtask queued so far (and those they queue) run: one turn of the real event loop. */
export function settlePromises(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class SimWorld {
  nowMs = 0;
  private readonly heap = new EventHeap<WorldEvent>();
  private seq = 0;
  /** Events run, for statistics and runaway detection. */
  eventsRun = 0;

  /** Runs `run` at `atMs` (now, if that is past). */
  at(atMs: number, run: () => void): void {
    this.heap.push({ at: Math.max(atMs, this.nowMs), seq: this.seq++, run });
  }

  /** Runs events in order until none is left, the next is past `untilMs`, or `stop()` says so. */
  async runUntil(untilMs: number, stop: () => boolean = () => false): Promise<void> {
    await settlePromises();
    while (!stop()) {
      const next = this.heap.peek();
      if (next === undefined || next.at > untilMs) break;
      this.heap.pop();
      this.nowMs = next.at;
      this.eventsRun++;
      next.run();
      await settlePromises();
    }
    if (this.nowMs < untilMs && !stop()) this.nowMs = untilMs;
  }

  get pendingEvents(): number {
    return this.heap.size;
  }
}

/**
 * One process on the simulated machine. Its clock may run a little fast or slow; it can be
 * paused (SIGSTOP: nothing it scheduled runs until it resumes, then all of it does, late) and
 * killed (kill -9: nothing it scheduled ever runs). A restart is a new incarnation with a new clock.
 */
export class SimProcess {
  private incarnation = 0;
  private alive = false;
  private pausedUntilMs = 0;
  /** What came due while paused, in order: it runs when the pause ends. */
  private deferred: (() => void)[] = [];
  /** When the pending wake-up is set for, or -1: a later pause or an early resume moves it. */
  private wakeAtMs = -1;
  private rate = 1;
  private localStartMs = 0;
  private globalStartMs = 0;

  constructor(private readonly world: SimWorld, readonly name: string) {}

  get running(): boolean {
    return this.alive;
  }

  /** Identifies the current incarnation; events and endpoints of an older one are dead. */
  get incarnationId(): number {
    return this.incarnation;
  }

  /** Whether incarnation `id` is the one running now. */
  isAlive(id: number): boolean {
    return this.alive && this.incarnation === id;
  }

  get paused(): boolean {
    return this.pausedUntilMs > this.world.nowMs;
  }

  /** Starts a new incarnation whose clock runs at `rate` times real time. */
  start(rate = 1): void {
    this.incarnation++;
    this.alive = true;
    this.pausedUntilMs = 0;
    this.deferred = [];
    this.wakeAtMs = -1;
    this.rate = rate;
    // A fresh process's monotonic clock starts wherever it likes: use the world's time.
    this.globalStartMs = this.world.nowMs;
    this.localStartMs = this.world.nowMs;
  }

  /** kill -9: nothing this incarnation scheduled will run. */
  kill(): void {
    this.alive = false;
    this.incarnation++;
    this.deferred = [];
    this.wakeAtMs = -1;
  }

  /** SIGSTOP until `untilMs`, then SIGCONT. */
  pauseUntil(untilMs: number): void {
    this.pausedUntilMs = Math.max(this.pausedUntilMs, untilMs);
  }

  /** SIGCONT now: what came due while it was paused runs from now on, late, in order. */
  resume(): void {
    if (this.pausedUntilMs <= this.world.nowMs) return;
    this.pausedUntilMs = this.world.nowMs;
    this.scheduleWake();
  }

  /** Stalls for `ms` from now: a paused process, or one whose event loop is blocked. */
  pauseUntilIn(ms: number): void {
    this.pauseUntil(this.world.nowMs + ms);
  }

  /**
   * Runs `fn` at world time `atMs` in this incarnation: later if the process is paused then, and
   * never if it died meanwhile.
   */
  schedule(atMs: number, fn: () => void, incarnation = this.incarnation): Timer {
    let cancelled = false;
    const run = (): void => {
      if (cancelled || !this.alive || this.incarnation !== incarnation) return;
      if (this.pausedUntilMs > this.world.nowMs) {
        this.deferred.push(run);
        this.scheduleWake();
        return;
      }
      fn();
    };
    this.world.at(atMs, run);
    return { cancel: () => { cancelled = true; } };
  }

  /** Sets the wake-up for the pause's end; each deferred event then runs as its own event, in order. */
  private scheduleWake(): void {
    const atMs = Math.max(this.pausedUntilMs, this.world.nowMs);
    if (this.wakeAtMs === atMs || this.deferred.length === 0) return;
    this.wakeAtMs = atMs;
    this.world.at(atMs, () => {
      if (this.wakeAtMs !== atMs) return;
      this.wakeAtMs = -1;
      // A pause extended meanwhile defers them again, to its new end.
      for (const run of this.deferred.splice(0)) this.world.at(this.world.nowMs, run);
    });
  }

  /** Runs `fn` after `delayMs` of world time, as schedule() does. */
  scheduleIn(delayMs: number, fn: () => void, incarnation = this.incarnation): Timer {
    return this.schedule(this.world.nowMs + delayMs, fn, incarnation);
  }

  /**
   * The clock of this incarnation, as the driver sees it. Bound to the incarnation: code of a dead
   * one that still holds it (a late promise) can schedule nothing that runs.
   */
  clock(): Clock {
    const world = this.world;
    const { rate, localStartMs, globalStartMs, incarnation } = this;
    return {
      nowMs: () => localStartMs + (world.nowMs - globalStartMs) * rate,
      setTimer: (fn, delayMs) => this.schedule(world.nowMs + delayMs / rate, fn, incarnation),
      soon: (fn) => {
        this.schedule(world.nowMs, fn, incarnation);
      },
    };
  }

  /** A promise that resolves after `delayMs` of this incarnation's time, or never if it dies first. */
  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.schedule(this.world.nowMs + delayMs / this.rate, resolve));
  }
}
