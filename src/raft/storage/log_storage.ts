// The contract every Raft log store keeps, whatever it is built on: LevelDB in production
// (leveldb.ts), memory for tests and the simulator (memory.ts). Both pass the same contract tests.
//
// - saveReady() writes one Ready's durable part as ONE atomic batch: after a crash the store holds
//   all of it or none of it. With sync it is durable when the promise resolves; without, a crash
//   may lose it, but only together with every later write (writes reach the disk in order).
// - Operations take effect in call order.
// - load() returns exactly what was written, or throws: it never returns a damaged, misplaced
//   or gapped log.

import { type Entry, type HardState, type Snapshot, invariant } from "../core/types.js";

export interface PersistedState {
  readonly hardState: HardState | undefined;
  readonly snapshot: Snapshot | undefined;
  /** The entries after the snapshot's index, consecutive, starting at that index + 1. */
  readonly entries: readonly Entry[];
}

/** One Ready's durable part. */
export interface ReadyWrite {
  readonly hardState: HardState | undefined;
  /** May overwrite the log from entries[0].index on. */
  readonly entries: readonly Entry[];
  /** A snapshot received from the leader: it replaces the whole log. */
  readonly snapshot: Snapshot | undefined;
}

export interface LogStorage {
  /** Reads everything the core needs to restart. Call once, before anything is saved. */
  load(): Promise<PersistedState>;
  /**
   * One Ready's durable part as one atomic batch: snapshot (replaces the log), then entries
   * (overwriting from entries[0].index), then the hard state. `sync: false` only where losing the
   * batch in a crash is harmless (a commit index alone: it is learned again from the leader).
   */
  saveReady(part: ReadyWrite, options: { readonly sync: boolean }): Promise<void>;
  /**
   * Local compaction: writes `snapshot` durably, then drops the entries at or below its index
   * (those deletes need not be durable; load() ignores entries at or below the snapshot). A
   * snapshot at or below the stored one is stale and ignored.
   */
  saveSnapshot(snapshot: Snapshot): Promise<void>;
  /** The stored snapshot with its data, read back and checked; undefined when there is none. */
  loadSnapshot(): Promise<Snapshot | undefined>;
  /** Waits for queued operations, then releases the store. Safe to call twice. */
  close(): Promise<void>;
}

/** Where the log stands after one Ready's write. */
export interface ReadyLayout {
  readonly snapshotIndex: number;
  readonly lastIndex: number;
  /** Entries kept from before the write, counted from the (new) snapshot index + 1. */
  readonly keptEntries: number;
}

/**
 * Checks one Ready's write against a store holding the log (snapshotIndex, lastIndex] and says
 * where it leaves the log. Every store calls this before it writes anything: a write that breaks
 * one of these rules is a bug upstream, and storing it would make load() refuse the log later.
 */
export function layoutReadyWrite(stored: { readonly snapshotIndex: number; readonly lastIndex: number }, part: ReadyWrite): ReadyLayout {
  let { snapshotIndex, lastIndex } = stored;
  if (part.snapshot !== undefined) {
    const s = part.snapshot.metadata;
    // Replacing the log with a snapshot at or below the stored one would delete entries the
    // stored snapshot does not cover; the core only restores snapshots beyond its commit index.
    invariant(s.index > snapshotIndex, () => `saveReady with a snapshot at ${s.index}, not beyond the stored snapshot at ${snapshotIndex}`);
    snapshotIndex = s.index;
    lastIndex = s.index;
  }
  let keptEntries = lastIndex - snapshotIndex;
  const first = part.entries[0];
  if (first !== undefined) {
    invariant(first.index > snapshotIndex, () => `saveReady with entries from ${first.index}, inside the snapshot at ${snapshotIndex}`);
    invariant(first.index <= lastIndex + 1, () => `saveReady with entries from ${first.index} would leave a gap after the last stored entry ${lastIndex}`);
    let prev = first;
    for (const e of part.entries.slice(1)) {
      invariant(e.index === prev.index + 1 && e.term >= prev.term,
        () => `saveReady with entries out of order: ${prev.index}@${prev.term} then ${e.index}@${e.term}`);
      prev = e;
    }
    keptEntries = first.index - 1 - snapshotIndex;
    lastIndex = prev.index;
  }
  if (part.hardState !== undefined) {
    const commit = part.hardState.commit;
    // load() refuses such a state, so refuse to write it.
    invariant(commit <= lastIndex, () => `saveReady with commit ${commit} beyond the last index ${lastIndex}`);
  }
  return { snapshotIndex, lastIndex, keptEntries };
}
