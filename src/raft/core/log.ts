// The replicated log as one node sees it: a compaction point, then the entries after it.
//
//   base.index  <=  snapshot.index  <=  applied      stableIndex  <=  lastIndex
//   ├ compacted ──┼ kept to catch followers up ─┼ ... ┼ on disk ──────┼ not yet persisted
//
// The latest snapshot is normally past the compaction point: a margin of entries before it stays,
// so that a follower a little behind catches up by append rather than by a whole snapshot.
//
//   applied <= applying <= committed <= lastIndex
//
// The core keeps the uncompacted suffix in memory; the driver compacts regularly so it stays small.
// Applied entries are kept packed (see PackedSegment) until compaction drops them.

import { type Entry, type Snapshot, entryPayloadBytes, invariant } from "./types.js";

/**
 * The data of a snapshot whose bytes are on disk only (see releaseSnapshotData). A snapshot
 * message that carries it must have its bytes read back from storage before it leaves the node.
 */
export const SNAPSHOT_DATA_ON_DISK: Uint8Array = new Uint8Array(0);

/**
 * Applied entries are packed this many to a segment. A log reads it once, when it is created;
 * tests shrink it so that short simulated runs pack all the time.
 */
export const logPacking = { segmentEntries: 1024 };
/** A segment's payloads are addressed by 32-bit offsets. */
const PACKED_SEGMENT_BYTES_MAX = 0xffff_ffff;

/**
 * Applied entries in three flat arrays instead of an Entry and a Uint8Array view per entry,
 * which cost ~150 bytes of heap each, more than a typical payload. Up to a compaction interval
 * of applied entries stays in memory to catch followers up, and the heap that many small objects
 * take is multiplied by V8's room to grow. A segment is never changed once built, so the views
 * that entryAt() and slice() hand out stay valid.
 */
interface PackedSegment {
  /** The index of the segment's first entry. */
  readonly firstIndex: number;
  readonly terms: Float64Array;
  /** Payload i is bytes[ends[i - 1] .. ends[i]) (from 0 for the first). */
  readonly ends: Uint32Array;
  readonly bytes: Uint8Array;
  /** Membership changes by position in the segment: rare, kept as they are. */
  readonly changes: ReadonlyMap<number, Entry> | undefined;
}

export class RaftLog {
  private snapshotValue: Snapshot;
  /** The log is compacted through this entry; it may trail the latest snapshot by a catch-up margin. */
  private base: { readonly index: number; readonly term: number };
  /** Applied entries from the snapshot (or a little before it) through packedThrough, in order. */
  private packed: PackedSegment[] = [];
  /** The last packed index; the snapshot's index when none after it is packed. */
  private packedThrough: number;
  /** entries[i].index === packedThrough + 1 + i */
  private entries: Entry[];
  /** Every segment holds exactly this many entries. */
  private readonly segmentEntries = logPacking.segmentEntries;
  /** Highest index known to be durable on this node. */
  stableIndex: number;
  /** A snapshot received from the leader and not yet persisted. */
  pendingSnapshot: Snapshot | undefined;
  committed: number;
  /** Highest index the state machine has acknowledged applying. */
  applied: number;
  /** Highest index handed to the state machine (applied <= applying). */
  applying: number;

  constructor(snapshot: Snapshot, entries: readonly Entry[], committed: number, applied: number) {
    this.snapshotValue = snapshot;
    this.base = { index: snapshot.metadata.index, term: snapshot.metadata.term };
    this.packedThrough = snapshot.metadata.index;
    this.entries = [...entries];
    const first = snapshot.metadata.index + 1;
    this.entries.forEach((e, i) =>
      invariant(e.index === first + i, () => `log entry ${e.index} is out of place; expected ${first + i}`),
    );
    this.stableIndex = this.lastIndex();
    this.pendingSnapshot = undefined;
    invariant(
      committed >= snapshot.metadata.index && committed <= this.lastIndex(),
      () => `commit ${committed} outside the log [${snapshot.metadata.index}, ${this.lastIndex()}]`,
    );
    this.committed = committed;
    this.applied = Math.max(applied, snapshot.metadata.index);
    invariant(this.applied <= committed, () => `applied ${this.applied} beyond commit ${committed}`);
    this.applying = this.applied;
    this.packApplied();
  }

  get snapshot(): Snapshot {
    return this.snapshotValue;
  }

  snapshotIndex(): number {
    return this.snapshotValue.metadata.index;
  }

  /** The first index still in the log (it may be at or below the latest snapshot's index). */
  firstIndex(): number {
    return this.base.index + 1;
  }

  lastIndex(): number {
    return this.packedThrough + this.entries.length;
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) as number;
  }

  /** The term of the entry at `index`, or undefined when it is compacted or beyond the log. */
  term(index: number): number | undefined {
    if (index === this.base.index) return this.base.term;
    if (index < this.base.index || index > this.lastIndex()) return undefined;
    if (index <= this.packedThrough) {
      const [segment, at] = this.segmentOf(index);
      return segment.terms[at];
    }
    return (this.entries[index - this.packedThrough - 1]).term;
  }

  entryAt(index: number): Entry | undefined {
    if (index <= this.base.index || index > this.lastIndex()) return undefined;
    if (index <= this.packedThrough) return this.unpack(index);
    return this.entries[index - this.packedThrough - 1];
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** Raft §5.4.1: a candidate's log is at least as up to date as ours. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /** The leader's append of its own new entries. */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    invariant(
      (entries[0]).index === this.lastIndex() + 1,
      () => `append at ${(entries[0]).index} does not follow the last index ${this.lastIndex()}`,
    );
    for (const e of entries) this.entries.push(e);
  }

  /**
   * A follower's append: if our log has `prevIndex` at `prevTerm`, reconcile `entries` into it
   * (keeping what matches, truncating from the first conflict) and advance the commit index.
   * Returns the index of the last new entry, or undefined when the logs do not match at prev.
   */
  maybeAppend(prevIndex: number, prevTerm: number, commit: number, entries: readonly Entry[]): number | undefined {
    if (!this.matchTerm(prevIndex, prevTerm)) return undefined;
    const lastNew = prevIndex + entries.length;
    const conflict = this.findConflict(entries);
    if (conflict !== 0) {
      invariant(conflict > this.committed, () => `entry ${conflict} conflicts with committed ${this.committed}`);
      const start = entries.length - (lastNew - conflict + 1);
      this.truncateAndAppend(entries.slice(start));
    }
    this.commitTo(Math.min(commit, lastNew));
    return lastNew;
  }

  /**
   * The first index where `entries` disagree with our log, or where they run past it.
   * 0 when every entry is already here (nothing to write).
   */
  private findConflict(entries: readonly Entry[]): number {
    for (const e of entries) {
      // Compacted entries are committed, and so already match.
      if (e.index <= this.base.index) continue;
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  private truncateAndAppend(entries: readonly Entry[]): void {
    const from = (entries[0]).index;
    invariant(from > this.base.index, () => `truncate at ${from} inside the compacted log through ${this.base.index}`);
    invariant(from <= this.lastIndex() + 1, () => `append at ${from} leaves a gap after ${this.lastIndex()}`);
    // Only applied entries are packed, and applied entries are committed, which never conflict.
    invariant(from > this.packedThrough, () => `truncate at ${from} inside the applied entries through ${this.packedThrough}`);
    this.entries.length = from - this.packedThrough - 1;
    for (const e of entries) this.entries.push(e);
    // The overwritten suffix may have been on disk; the new one is not yet.
    this.stableIndex = Math.min(this.stableIndex, from - 1);
  }

  /**
   * Fast backtracking: the largest index <= `index` whose term is <= `term`. A follower uses it to
   * skip a whole conflicting term in one round trip instead of one index per round trip.
   */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    for (; i > this.base.index; i--) {
      if ((this.term(i) as number) <= term) return i;
    }
    return this.base.index;
  }

  /**
   * Entries [lo, hi), at most `bytesMax` of payload but always at least one entry.
   * Undefined when `lo` has been compacted.
   */
  slice(lo: number, hi: number, bytesMax: number): Entry[] | undefined {
    if (lo <= this.base.index) return undefined;
    invariant(hi <= this.lastIndex() + 1, () => `slice to ${hi} beyond the last index ${this.lastIndex()}`);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = i <= this.packedThrough ? this.unpack(i) : this.entries[i - this.packedThrough - 1];
      bytes += entryPayloadBytes(e);
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(e);
    }
    return out;
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    invariant(index <= this.lastIndex(), () => `commit ${index} beyond the last index ${this.lastIndex()}`);
    this.committed = index;
  }

  /** Entries not yet handed to the driver for persisting. */
  unstableEntries(): Entry[] {
    // Packed entries are applied, so durable: stableIndex >= packedThrough.
    return this.entries.slice(this.stableIndex - this.packedThrough);
  }

  /** The driver persisted entries through `index`, which had `term`. */
  stableTo(index: number, term: number): void {
    // If the entry was overwritten while the write was in flight, the new one is not yet durable.
    if (index > this.stableIndex && this.matchTerm(index, term)) this.stableIndex = index;
  }

  /**
   * The highest index the state machine may apply: committed, and already durable here. Handing
   * out only entries an earlier Ready persisted lets the driver apply them while it writes the
   * next batch, instead of after (as etcd's raft does).
   */
  appliableIndex(): number {
    return Math.min(this.committed, this.stableIndex);
  }

  /** Committed entries to hand to the state machine next. */
  nextCommitted(bytesMax: number): Entry[] {
    const lo = Math.max(this.applying + 1, this.firstIndex());
    const hi = this.appliableIndex();
    if (lo > hi) return [];
    return this.slice(lo, hi + 1, bytesMax) ?? [];
  }

  /** Whether a committed but unapplied entry is a membership change. */
  hasUnappliedConfChange(): boolean {
    for (let i = Math.max(this.applied + 1, this.firstIndex()); i <= this.committed; i++) {
      if ((this.entryAt(i) as Entry).type === "confChange") return true;
    }
    return false;
  }

  /** Replaces the log with a snapshot received from the leader. */
  restore(snapshot: Snapshot): void {
    const index = snapshot.metadata.index;
    invariant(index > this.committed, () => `restore of snapshot ${index} at or below commit ${this.committed}`);
    this.snapshotValue = snapshot;
    this.base = { index, term: snapshot.metadata.term };
    this.packed = [];
    this.packedThrough = index;
    this.entries = [];
    this.pendingSnapshot = snapshot;
    this.stableIndex = index;
    this.committed = index;
    this.applying = Math.max(this.applying, index);
  }

  /** The driver persisted the received snapshot at `index`. */
  snapshotPersisted(index: number): void {
    if (this.pendingSnapshot?.metadata.index === index) this.pendingSnapshot = undefined;
  }

  /**
   * Forgets the bytes of the snapshot at `index` once the caller holds them durably elsewhere:
   * the core needs only its metadata, and the bytes (the whole state) are wanted again only to
   * catch a follower up. Nothing changes while a received snapshot still waits to be persisted,
   * or once a newer snapshot has replaced this one.
   */
  releaseSnapshotData(index: number): void {
    if (this.pendingSnapshot !== undefined || this.snapshotValue.metadata.index !== index) return;
    this.snapshotValue = { metadata: this.snapshotValue.metadata, data: SNAPSHOT_DATA_ON_DISK };
  }

  /**
   * Records the state machine's snapshot of the applied prefix through its index, and drops the
   * log through `compactThrough` (at most the snapshot's index): the entries between stay to
   * catch followers up.
   */
  compact(snapshot: Snapshot, compactThrough: number): void {
    const index = snapshot.metadata.index;
    invariant(index <= this.applied, () => `compaction at ${index} beyond applied ${this.applied}`);
    invariant(compactThrough <= index, () => `compaction through ${compactThrough} beyond its snapshot at ${index}`);
    if (index <= this.snapshotIndex()) return;
    invariant(this.term(index) === snapshot.metadata.term, () => `compaction at ${index} names the wrong term`);
    this.snapshotValue = snapshot;
    if (compactThrough <= this.base.index) return;
    const baseTerm = this.term(compactThrough) as number;
    if (compactThrough <= this.packedThrough) {
      // Whole segments go; one that straddles the new base stays until a later compaction.
      this.packed = this.packed.filter((seg) => seg.firstIndex + seg.terms.length - 1 > compactThrough);
    } else {
      this.entries = this.entries.slice(compactThrough - this.packedThrough);
      this.packed = [];
      this.packedThrough = compactThrough;
    }
    this.base = { index: compactThrough, term: baseTerm };
  }

  appliedTo(index: number): void {
    invariant(index <= this.committed, () => `applied ${index} beyond commit ${this.committed}`);
    this.applied = Math.max(this.applied, index);
    this.applying = Math.max(this.applying, this.applied);
    this.packApplied();
  }

  /** Packs applied entries a whole segment at a time. Applied entries are committed and durable. */
  private packApplied(): void {
    while (this.applied - this.packedThrough >= this.segmentEntries) {
      this.packed.push(packSegment(this.entries.splice(0, this.segmentEntries)));
      this.packedThrough += this.segmentEntries;
    }
  }

  /** The segment holding `index` (which must be packed) and its position there. */
  private segmentOf(index: number): [PackedSegment, number] {
    const first = (this.packed[0]).firstIndex;
    const segment = this.packed[Math.floor((index - first) / this.segmentEntries)];
    invariant(segment !== undefined, () => `entry ${index} is not in the packed log from ${first} through ${this.packedThrough}`);
    return [segment, index - segment.firstIndex];
  }

  private unpack(index: number): Entry {
    const [segment, at] = this.segmentOf(index);
    const change = segment.changes?.get(at);
    if (change !== undefined) return change;
    const start = at === 0 ? 0 : segment.ends[at - 1];
    return { index, term: segment.terms[at], type: "normal", data: segment.bytes.subarray(start, segment.ends[at]) };
  }
}

function packSegment(run: readonly Entry[]): PackedSegment {
  const first = run[0];
  invariant(first !== undefined, "an empty packed segment");
  let total = 0;
  for (const e of run) if (e.type === "normal") total += e.data.byteLength;
  invariant(total <= PACKED_SEGMENT_BYTES_MAX, () => `a packed segment of ${total} bytes`);
  const terms = new Float64Array(run.length);
  const ends = new Uint32Array(run.length);
  const bytes = new Uint8Array(total);
  let changes: Map<number, Entry> | undefined;
  let at = 0;
  run.forEach((e, i) => {
    invariant(e.index === first.index + i, () => `packing entry ${e.index} at position ${i} of a segment from ${first.index}`);
    terms[i] = e.term;
    if (e.type === "normal") {
      bytes.set(e.data, at);
      at += e.data.byteLength;
    } else {
      (changes ??= new Map()).set(i, e);
    }
    ends[i] = at;
  });
  return { firstIndex: first.index, terms, ends, bytes, changes };
}
