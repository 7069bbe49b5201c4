// Waiters ordered by deadline. Every waiter's deadline is its start plus one fixed timeout, so
// the order they arrive in is the order they fall due: expiry only ever looks at the front.

import { Fifo } from "../../common/fifo.js";

export interface Expiring {
  readonly deadlineMs: number;
  /** Answered already (by its outcome or a failure): expiry skips it. */
  readonly settled: boolean;
}

export class DeadlineQueue<T extends Expiring> {
  private readonly waiters = new Fifo<T>();

  push(waiter: T): void {
    this.waiters.push(waiter);
  }

  /**
   * Removes every waiter at the front that is settled or due by `nowMs`, and returns those that
   * are due and not yet settled. O(removed), however many answered waiters sit behind the front.
   */
  takeExpired(nowMs: number): T[] {
    const expired: T[] = [];
    for (let w = this.waiters.peek(); w !== undefined && (w.settled || w.deadlineMs <= nowMs); w = this.waiters.peek()) {
      this.waiters.shift();
      if (!w.settled) expired.push(w);
    }
    return expired;
  }

  clear(): void {
    this.waiters.clear();
  }
}
