// The in-flight window of one follower: appends sent but not yet acknowledged.
// Bounding it by count and by bytes is the flow control that keeps a slow follower from
// piling up unbounded memory in the leader and in the transport.

import { invariant } from "./types.js";

export class Inflights {
  private readonly lastIndexes: number[] = [];
  private readonly sizesBytes: number[] = [];
  private head = 0;
  private totalBytes = 0;

  constructor(
    readonly countMax: number,
    readonly bytesMax: number,
  ) {
    invariant(countMax > 0, "inflight countMax must be positive");
  }

  get count(): number {
    return this.lastIndexes.length - this.head;
  }

  get bytes(): number {
    return this.totalBytes;
  }

  /** Full: no further append may be sent until an acknowledgement frees room. */
  full(): boolean {
    return this.count >= this.countMax || (this.bytesMax > 0 && this.totalBytes >= this.bytesMax);
  }

  add(lastIndex: number, sizeBytes: number): void {
    invariant(!this.full(), "add to a full inflight window");
    const count = this.count;
    if (count > 0) {
      const newest = this.lastIndexes[this.lastIndexes.length - 1];
      invariant(lastIndex > newest, () => `inflight indexes must increase: ${lastIndex} after ${newest}`);
    }
    this.lastIndexes.push(lastIndex);
    this.sizesBytes.push(sizeBytes);
    this.totalBytes += sizeBytes;
  }

  /** Frees every in-flight append whose last index is at or below `index`. */
  freeLE(index: number): void {
    while (this.head < this.lastIndexes.length && (this.lastIndexes[this.head]) <= index) {
      this.totalBytes -= this.sizesBytes[this.head];
      this.head++;
    }
    // Compact lazily so that freeing stays amortized O(1).
    if (this.head > 64 && this.head * 2 > this.lastIndexes.length) {
      this.lastIndexes.splice(0, this.head);
      this.sizesBytes.splice(0, this.head);
      this.head = 0;
    }
  }

  /** Frees the oldest in-flight append: a heartbeat answered means the link lives, and a lost
   * append must not stall the window forever (the follower will reject any gap it sees). */
  freeFirstOne(): void {
    if (this.count === 0) return;
    this.freeLE(this.lastIndexes[this.head]);
  }

  reset(): void {
    this.lastIndexes.length = 0;
    this.sizesBytes.length = 0;
    this.head = 0;
    this.totalBytes = 0;
  }
}
