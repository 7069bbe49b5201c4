// Waiters ordered by deadline. Every waiter's deadline is its start plus one fixed timeout, so
// the order they arrive in is the order they fall due: expiry only ever looks at the front.

export interface Expiring {
  readonly deadlineMs: number;
  /** Answered already (by its outcome or a failure): expiry skips it. */
  readonly settled: boolean;
}

/** Compact the array once this many settled waiters sit before the head, and they are half of it. */
const COMPACT_AFTER = 1024;

export class DeadlineQueue<T extends Expiring> {
  private items: T[] = [];
  private head = 0;

  push(waiter: T): void {
    this.items.push(waiter);
  }

  /**
   * Removes every waiter at the front that is settled or due by `nowMs`, and returns those that
   * are due and not yet settled. O(removed): a head index, not Array.shift, which is O(n) per call.
   */
  takeExpired(nowMs: number): T[] {
    const expired: T[] = [];
    while (this.head < this.items.length) {
      const w = this.items[this.head];
      if (!w.settled && w.deadlineMs > nowMs) break;
      if (!w.settled) expired.push(w);
      this.head++;
    }
    if (this.head >= COMPACT_AFTER && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return expired;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}
