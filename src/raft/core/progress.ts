// What the leader knows about one follower's log, and how it decides what to send next.
//
// probe:     the leader does not know where the follower's log matches; it sends one append at a
//            time and waits for the answer (or the next heartbeat) before sending another.
// replicate: the logs match up to `match`; appends stream optimistically, bounded by inflights.
// snapshot:  the follower needs entries the leader has compacted; nothing is sent until the
//            snapshot transfer finishes or fails.

import { Inflights } from "./inflights.js";

export type ProgressState = "probe" | "replicate" | "snapshot";

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = "probe";
  /** In snapshot state: the index of the snapshot being sent. */
  pendingSnapshot = 0;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  /** In probe state: an append is out and unanswered. */
  probeSent = false;
  readonly inflights: Inflights;

  constructor(
    next: number,
    public isLearner: boolean,
    inflightCountMax: number,
    inflightBytesMax: number,
  ) {
    this.next = next;
    this.inflights = new Inflights(inflightCountMax, inflightBytesMax);
  }

  private resetState(state: ProgressState): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    // After a snapshot, the follower has at least the snapshot: resume probing just past it.
    const next = this.state === "snapshot" ? Math.max(this.match + 1, this.pendingSnapshot + 1) : this.match + 1;
    this.resetState("probe");
    this.next = next;
  }

  becomeReplicate(): void {
    this.resetState("replicate");
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState("snapshot");
    this.pendingSnapshot = snapshotIndex;
  }

  /** Records an acknowledgement up to `index`. Returns false if it told us nothing new. */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * Handles a rejected append that probed `rejected`; `matchHint` is the highest index that may
   * still match. Returns false when the rejection is stale (answers an older append).
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      // Optimistic sending overshot: fall back to just past the known match.
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.full();
      case "snapshot":
        return true;
    }
  }

  /** Records that an append carrying entries up to `lastIndex` (and `bytes` of payload) left. */
  sentEntries(lastIndex: number, entryCount: number, bytes: number): void {
    if (this.state === "replicate") {
      if (entryCount > 0) {
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex, bytes);
      }
    } else if (this.state === "probe") {
      this.probeSent = true;
    }
  }
}
