// A first-in first-out queue whose shift is O(1): a head index, not Array.shift (which moves
// every item behind it). The array is compacted once the consumed head is both large and half
// of it, so memory stays proportional to what is queued.

/** Consumed slots at the front before the array is compacted (and only once they are half of it). */
const COMPACT_AFTER = 1024;

export class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** The item `offset` places behind the front (0 is the front), or undefined past the end. */
  peek(offset = 0): T | undefined {
    return this.head + offset < this.items.length ? this.items[this.head + offset] : undefined;
  }

  /** Removes and returns the front, or undefined when empty. Its slot is cleared, so the queue keeps no reference to it. */
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head++;
    if (this.head >= COMPACT_AFTER && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}
