// Log store fixtures, and seeded histories of writes with what the store must hold after each one.
// Pure: no test runner, no I/O, so the crash writer (a child process) replays the same history as
// the test that kills it. The model here is written apart from the stores on purpose: a store
// checked against its own arithmetic would pass with the same bug.

import { SeededRandom } from "../../src/raft/core/random.js";
import type { Entry, HardState, Snapshot } from "../../src/raft/core/types.js";
import type { LogStorage, PersistedState, ReadyWrite } from "../../src/raft/storage/log_storage.js";

const encoder = new TextEncoder();

export function normal(index: number, term: number, text = `entry ${index}@${term}`): Entry {
  return { index, term, type: "normal", data: encoder.encode(text) };
}

/** Entries from..to, all of `term`. */
export function run(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(normal(i, term));
  return out;
}

export function snapshotAt(index: number, term: number, data: Uint8Array = encoder.encode(`state through ${index}`)): Snapshot {
  return { metadata: { index, term, conf: { voters: ["a", "b", "c"], learners: ["d"] } }, data };
}

export const NO_CHANGE: ReadyWrite = { hardState: undefined, entries: [], snapshot: undefined };

export const EMPTY_STATE: PersistedState = { hardState: undefined, snapshot: undefined, entries: [] };

export function entryIndexes(state: PersistedState): number[] {
  return state.entries.map((e) => e.index);
}

// ---------------------------------------------------------------- histories

export type HistoryOp =
  | { readonly kind: "ready"; readonly part: ReadyWrite; readonly sync: boolean }
  /** A local compaction (saveSnapshot): durable when it returns. */
  | { readonly kind: "compact"; readonly snapshot: Snapshot };

export interface HistoryStep {
  readonly op: HistoryOp;
  /** What the store holds once this step and every one before it is done. */
  readonly after: PersistedState;
}

export interface HistoryOptions {
  /** Bytes of each entry's data; more makes each write take longer, and a kill more likely to land inside one. */
  readonly entryBytes?: number;
  /** Whether to take local compactions (saveSnapshot) among the writes. */
  readonly compactions?: boolean;
}

/** A history, named by what draws it: a crash writer in a child process rebuilds it from this. */
export interface HistorySpec {
  readonly seed: number;
  readonly steps: number;
  readonly options: HistoryOptions;
}

/** Entries appended, or overwritten, per write: 1 to this many. */
const ENTRIES_PER_WRITE_MAX = 4;

/**
 * `steps` writes drawn from `seed`: appends (synced, and some unsynced so that a crash can lose a
 * batch of several records), commit-only hard states (unsynced, as the driver writes them),
 * overwrites of the uncommitted tail in a new term, snapshots received from a leader, and local
 * compactions. The commit index grows with every Ready and the snapshot with every compaction, so
 * no two steps leave the same state: a state names the one prefix of the history that made it.
 */
export function storageHistory({ seed, steps, options }: HistorySpec): HistoryStep[] {
  const random = new SeededRandom(seed);
  const entryBytes = options.entryBytes ?? 0;
  const entry = (index: number, term: number): Entry => normal(index, term, `entry ${index}@${term} `.padEnd(entryBytes, "."));
  const entriesFrom = (from: number, term: number): Entry[] =>
    Array.from({ length: 1 + random.nextInt(ENTRIES_PER_WRITE_MAX) }, (_, i) => entry(from + i, term));

  let term = 1;
  let hardState: HardState | undefined;
  let snapshot: Snapshot | undefined;
  let entries: Entry[] = [];
  const snapshotIndex = (): number => snapshot?.metadata.index ?? 0;
  const lastIndex = (): number => snapshotIndex() + entries.length;
  const commit = (): number => hardState?.commit ?? 0;
  /** A commit index beyond the current one, at most `last`. */
  const nextCommit = (last: number): number => commit() + 1 + random.nextInt(last - commit());

  const out: HistoryStep[] = [];
  while (out.length < steps) {
    // Each kind of step has its own range of rolls; a step that cannot be taken now becomes an append.
    const roll = random.nextInt(100);
    let op: HistoryOp;
    if (roll < 20 && lastIndex() > commit()) {
      hardState = { term, vote: "a", commit: nextCommit(lastIndex()) };
      op = { kind: "ready", part: { ...NO_CHANGE, hardState }, sync: false };
    } else if (roll < 35 && lastIndex() > commit()) {
      // A new leader overwrites the uncommitted tail.
      term++;
      const from = commit() + 1 + random.nextInt(lastIndex() - commit());
      const written = entriesFrom(from, term);
      entries = [...entries.filter((e) => e.index < from), ...written];
      hardState = { term, vote: "b", commit: nextCommit(lastIndex()) };
      op = { kind: "ready", part: { hardState, entries: written, snapshot: undefined }, sync: true };
    } else if (roll >= 35 && roll < 40) {
      term++;
      const index = lastIndex() + 1 + random.nextInt(3);
      snapshot = snapshotAt(index, term);
      entries = random.chance(0.5) ? entriesFrom(index + 1, term) : [];
      hardState = { term, vote: "", commit: index };
      op = { kind: "ready", part: { hardState, entries, snapshot }, sync: true };
    } else if (roll >= 40 && roll < 50 && options.compactions === true && commit() > snapshotIndex()) {
      const through = entries[random.nextInt(commit() - snapshotIndex())];
      snapshot = snapshotAt(through.index, through.term);
      entries = entries.filter((e) => e.index > through.index);
      op = { kind: "compact", snapshot };
    } else {
      const written = entriesFrom(lastIndex() + 1, term);
      entries = [...entries, ...written];
      hardState = { term, vote: "a", commit: nextCommit(lastIndex()) };
      op = { kind: "ready", part: { hardState, entries: written, snapshot: undefined }, sync: roll % 4 !== 0 };
    }
    out.push({ op, after: { hardState, snapshot, entries } });
  }
  return out;
}

export async function applyOp(store: LogStorage, op: HistoryOp): Promise<void> {
  if (op.kind === "ready") await store.saveReady(op.part, { sync: op.sync });
  else await store.saveSnapshot(op.snapshot);
}

/** Whether the step is durable once its call returns: a synced Ready or a compaction. */
export function durableOnReturn(op: HistoryOp): boolean {
  return op.kind === "compact" || op.sync;
}
