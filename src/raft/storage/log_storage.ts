// The contract every Raft log store keeps, whatever it is built on: LevelDB in production
// (leveldb.ts), memory for tests and the simulator (memory.ts). Both pass the same contract tests.
//
// - saveReady() writes one Ready's durable part as ONE atomic batch: after a crash the store holds
//   all of it or none of it. With sync it is durable when the promise resolves; without, a crash
//   may lose it, but only together with every later write (writes reach the disk in order).
// - Operations take effect in call order.
// - load() returns exactly what was written, or throws: it never returns a damaged, misplaced
//   or gapped log.

import type { Entry, HardState, Snapshot } from "../core/types.js";

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
