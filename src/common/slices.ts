// Long work in short slices, so that no request, wake-up or answer holds the event loop for more
// than a few milliseconds: Raft ticks, heartbeats and fsync completions run between the slices.
//
// Every sliced task in the process takes its turns through one scheduler, one turn per event-loop
// iteration: ten tasks that each yield through setImmediate would otherwise all run in the same
// check phase, back to back, with no I/O between them.

import { Fifo } from "./fifo.js";

/** Work one task does in one turn before it yields, at most (a little more: the clock is read every few items). */
export const SLICE_BUDGET_MS = 4;
/** Items a sliced loop handles between two looks at the clock. */
const ITEMS_PER_CLOCK_READ = 64;
/** Sorted runs the merge sort starts from: each is sorted in one call, well inside one slice. */
const SORT_RUN_ITEMS = 1024;

/**
 * Hands out turns to sliced tasks, one per event-loop iteration: a task's turn is the time
 * between its `turn()` resolving and its next call to `turn()`.
 */
export class SliceScheduler {
  private readonly waiting = new Fifo<() => void>();
  private scheduled = false;

  /** Resolves at this task's next turn, after every task that asked earlier has had one. */
  turn(): Promise<void> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.schedule();
    });
  }

  /** Tasks waiting for a turn. */
  get queued(): number {
    return this.waiting.length;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // An immediate queued from inside an immediate runs in the next iteration, after its poll
    // phase: I/O and timers run between two turns.
    setImmediate(this.runOne);
  }

  private readonly runOne = (): void => {
    this.scheduled = false;
    this.waiting.shift()?.();
    if (this.waiting.length > 0) this.schedule();
  };
}

/** The process's one scheduler: every sliced task shares it, so together they take one turn per iteration. */
export const sliceScheduler = new SliceScheduler();

/** A task's clock: `due()` says when its slice is spent, `pause()` waits for its next turn. */
export class SliceClock {
  private sliceStartMs = performance.now();
  private items = 0;

  constructor(private readonly budgetMs = SLICE_BUDGET_MS, private readonly scheduler = sliceScheduler) {}

  /** Counts `items` done; true once the slice's budget is spent (the clock is read every few items). */
  tick(items = 1): boolean {
    this.items += items;
    if (this.items < ITEMS_PER_CLOCK_READ) return false;
    this.items = 0;
    return performance.now() - this.sliceStartMs >= this.budgetMs;
  }

  async pause(): Promise<void> {
    await this.scheduler.turn();
    this.sliceStartMs = performance.now();
    this.items = 0;
  }

  /** Counts one item and, when the slice is spent, waits for the next turn. */
  async step(): Promise<void> {
    if (this.tick()) await this.pause();
  }
}

/**
 * Calls `fn` for each item, yielding whenever the slice is spent. Items are read by index as the
 * loop reaches them, so give it an array nobody changes meanwhile.
 */
export async function forEachInSlices<T>(items: readonly T[], fn: (item: T) => void, clock = new SliceClock()): Promise<void> {
  for (let i = 0; i < items.length; i++) {
    fn(items[i]);
    if (clock.tick()) await clock.pause();
  }
}

/**
 * A stable sort of `items` into a new array, in slices: runs of SORT_RUN_ITEMS are sorted in one
 * call each, then merged pairwise, yielding whenever the slice is spent. Sorting 100,000 items in
 * one call takes 50-150 ms here; no slice of this takes more than a few.
 */
export async function sortInSlices<T>(items: readonly T[], compare: (a: T, b: T) => number, clock = new SliceClock()): Promise<T[]> {
  const n = items.length;
  let from: T[] = items.slice();
  if (n <= SORT_RUN_ITEMS) return from.sort(compare);
  for (let start = 0; start < n; start += SORT_RUN_ITEMS) {
    const run = from.slice(start, start + SORT_RUN_ITEMS).sort(compare);
    for (let i = 0; i < run.length; i++) from[start + i] = run[i];
    if (clock.tick(run.length)) await clock.pause();
  }
  let to: T[] = new Array<T>(n);
  for (let width = SORT_RUN_ITEMS; width < n; width *= 2) {
    for (let left = 0; left < n; left += 2 * width) {
      const mid = Math.min(left + width, n);
      const right = Math.min(left + 2 * width, n);
      let i = left;
      let j = mid;
      let k = left;
      while (i < mid && j < right) {
        // Ties take the left item first: the sort stays stable.
        to[k++] = compare(from[j], from[i]) < 0 ? from[j++] : from[i++];
        if (clock.tick()) await clock.pause();
      }
      while (i < mid) to[k++] = from[i++];
      while (j < right) to[k++] = from[j++];
    }
    [from, to] = [to, from];
  }
  return from;
}

/** Merges two arrays each sorted by `compare` into one, in slices; ties take `a`'s item first. */
export async function mergeInSlices<T>(a: readonly T[], b: readonly T[], compare: (x: T, y: T) => number, clock = new SliceClock()): Promise<T[]> {
  const out = new Array<T>(a.length + b.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < a.length && j < b.length) {
    out[k++] = compare(b[j], a[i]) < 0 ? b[j++] : a[i++];
    if (clock.tick()) await clock.pause();
  }
  while (i < a.length) {
    out[k++] = a[i++];
    if (clock.tick()) await clock.pause();
  }
  while (j < b.length) out[k++] = b[j++];
  return out;
}

/** The items `keep` accepts, in order, in slices. */
export async function filterInSlices<T>(items: readonly T[], keep: (item: T) => boolean, clock = new SliceClock()): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < items.length; i++) {
    if (keep(items[i])) out.push(items[i]);
    if (clock.tick()) await clock.pause();
  }
  return out;
}

/**
 * Runs queued callbacks a bounded number per event-loop iteration: waking 10,000 waiters, each
 * of which then answers its request, is 10,000 answers; in one macrotask that is half a second
 * with no Raft tick in it.
 */
export class WakeQueue {
  private readonly queue = new Fifo<() => void>();
  private scheduled = false;

  /** `perTurn`: callbacks run in one iteration, at most; what each callback's continuation does counts too. */
  constructor(readonly perTurn: number) {
    if (!Number.isInteger(perTurn) || perTurn < 1) throw new RangeError(`perTurn ${perTurn} must be a whole number >= 1`);
  }

  push(fn: () => void): void {
    this.queue.push(fn);
    if (this.scheduled) return;
    this.scheduled = true;
    // The first batch runs at the next check phase, not inside the caller (an apply, a resolve).
    setImmediate(this.drain);
  }

  get length(): number {
    return this.queue.length;
  }

  private readonly drain = (): void => {
    this.scheduled = false;
    for (let n = 0; n < this.perTurn; n++) {
      const fn = this.queue.shift();
      if (fn === undefined) return;
      fn();
    }
    if (this.queue.length > 0) {
      this.scheduled = true;
      setImmediate(this.drain);
    }
  };
}
