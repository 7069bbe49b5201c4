// The LogStorage contract (src/raft/storage/log_storage.ts) as tests, for any store: what is saved
// comes back after a restart, the log follows the Ready rules, a write that would damage the log is
// refused before anything is written, operations take effect in call order, and a crash keeps every
// durable write and of the rest a prefix, each write whole or absent. Each store's test file calls
// logStorageContract() with a harness that makes, restarts and crashes that store.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { SeededRandom } from "../../src/raft/core/random.js";
import { type Entry, type HardState, RaftInvariantError } from "../../src/raft/core/types.js";
import type { LogStorage, PersistedState, ReadyWrite } from "../../src/raft/storage/log_storage.js";
import { asError } from "../../src/common/errors.js";
import {
  EMPTY_STATE, type HistorySpec, type HistoryStep, NO_CHANGE, applyOp, durableOnReturn, entryIndexes, normal, run, snapshotAt,
  storageHistory,
} from "../support/storage_history.js";

/** One test's storage: it makes stores and restarts them, and is disposed of even when the test fails. */
export interface StoreHarness<S extends LogStorage> {
  /** A store over new, empty storage; not loaded yet. */
  create(): Promise<S>;
  /** A clean process restart: closes `store`, then opens a store over what it left; not loaded yet. */
  reopen(store: S): Promise<S>;
  /** Releases every store and file this harness made. */
  dispose(): Promise<void>;
}

/** What one crash left. */
export interface CrashOutcome {
  /** Says where the crash struck, for a failure message. */
  readonly label: string;
  /** Steps whose call returned before the crash: the durable ones among them must be there. */
  readonly acknowledged: number;
  /** Steps begun before the crash: no more than these can be there. */
  readonly begunMax: number;
  /** Whether a step had begun and not returned when the crash struck. */
  readonly inFlight: boolean;
  /** What load() returned after the crash, or what it threw. */
  readonly loaded: PersistedState | Error;
}

export interface StoreUnderContract<S extends LogStorage> {
  readonly name: string;
  harness(): Promise<StoreHarness<S>>;
  /** Runs the history against stores that crash at several points; cleans up after itself, even when it fails. */
  crashes(spec: HistorySpec): Promise<readonly CrashOutcome[]>;
}

/** Loads a store, capturing a failure as the outcome of a crash test rather than throwing it. */
export async function loadAfterCrash(store: LogStorage): Promise<PersistedState | Error> {
  try {
    return await store.load();
  } catch (err) {
    return asError(err);
  } finally {
    await store.close();
  }
}

/**
 * The crash tests' history. Entries of a few kilobytes make each write take long enough that a kill
 * from another process may land inside one.
 */
export const CRASH_HISTORY: HistorySpec = { seed: 31, steps: 40, options: { compactions: true, entryBytes: 4096 } };

/** The steps' states, indexed by how many steps were done: prefixes[0] is the empty store. */
function prefixStates(history: readonly HistoryStep[]): PersistedState[] {
  return [EMPTY_STATE, ...history.map((s) => s.after)];
}

/** How many steps a crash must keep: through the last durable step among those acknowledged. */
function durablePrefix(history: readonly HistoryStep[], acknowledged: number): number {
  for (let i = acknowledged; i > 0; i--) if (durableOnReturn(history[i - 1].op)) return i;
  return 0;
}

function describeState(s: PersistedState): string {
  const hs = s.hardState === undefined ? "no hard state" : `hard state ${s.hardState.term}/${JSON.stringify(s.hardState.vote)}/commit ${s.hardState.commit}`;
  const snap = s.snapshot === undefined ? "no snapshot" : `snapshot at ${s.snapshot.metadata.index}@${s.snapshot.metadata.term}`;
  const log = s.entries.map((e) => `${e.index}@${e.term}`).join(" ");
  return `${hs}, ${snap}, entries [${log}]`;
}

/** Checks one crash's survivor against the contract; returns how many steps it holds. */
export function checkCrashOutcome(history: readonly HistoryStep[], outcome: CrashOutcome): number {
  const { label, loaded } = outcome;
  if (loaded instanceof Error) assert.fail(`${label}: load() threw after the crash: ${loaded.message}`);
  const held = prefixStates(history).findIndex((p) => isDeepStrictEqual(p, loaded));
  assert.ok(held >= 0, `${label}: the store holds no prefix of the writes, so one was torn or kept without an earlier one: ${describeState(loaded)}`);
  const mustHold = durablePrefix(history, outcome.acknowledged);
  assert.ok(held >= mustHold, `${label}: step ${mustHold} was durable when it returned, but the store holds only the first ${held} steps`);
  assert.ok(held <= outcome.begunMax, `${label}: the store holds ${held} steps, but only ${outcome.begunMax} were begun`);
  return held;
}

/** One store at a time in one harness; restart() swaps in the store a restart finds. */
class Session<S extends LogStorage> {
  private current: S | undefined;

  constructor(private readonly harness: StoreHarness<S>) {}

  get store(): S {
    assert.ok(this.current !== undefined, "start() first");
    return this.current;
  }

  /** A new, empty store, loaded. */
  async start(): Promise<S> {
    this.current = await this.harness.create();
    assert.deepEqual(await this.current.load(), EMPTY_STATE, "a new store loads as empty");
    return this.current;
  }

  /** What the store holds after a clean restart. */
  async restart(): Promise<PersistedState> {
    this.current = await this.harness.reopen(this.store);
    return this.current.load();
  }
}

export function logStorageContract<S extends LogStorage>(kind: StoreUnderContract<S>): void {
  const withStore = (fn: (s: Session<S>, store: S) => Promise<void>) => async (): Promise<void> => {
    const harness = await kind.harness();
    try {
      const session = new Session(harness);
      await fn(session, await session.start());
    } finally {
      await harness.dispose();
    }
  };

  /** A store holding snapshot 5@1, entries 6..8 of term 1 and a hard state committing 5. */
  const seeded = async (store: LogStorage): Promise<void> => {
    await store.saveReady({ hardState: { term: 1, vote: "", commit: 5 }, entries: [], snapshot: snapshotAt(5, 1) }, { sync: true });
    await store.saveReady({ ...NO_CHANGE, entries: run(6, 8, 1) }, { sync: true });
  };

  void describe(`${kind.name} keeps the LogStorage contract`, () => {
    void describe("what is saved comes back after a restart", () => {
      void test("a new store loads as empty, also after a restart", withStore(async (s) => {
        assert.deepEqual(await s.restart(), EMPTY_STATE);
      }));

      void test("hard state, snapshot and entries of every kind come back", withStore(async (s, store) => {
        const hardState: HardState = { term: 4, vote: "b", commit: 9 };
        const snapshot = snapshotAt(5, 2);
        const entries: Entry[] = [
          normal(6, 3),
          { index: 7, term: 3, type: "confChange", change: { type: "addLearner", node: "d", context: "10.0.0.4:7000" } },
          { index: 8, term: 4, type: "confChange", change: { type: "promote", node: "d" } },
          { index: 9, term: 4, type: "confChange", change: { type: "remove", node: "c" } },
          { index: 10, term: 4, type: "normal", data: new Uint8Array(0) },
        ];
        await store.saveReady({ hardState, entries, snapshot }, { sync: true });
        assert.deepEqual(await s.restart(), { hardState, snapshot, entries });
      }));

      void test("a snapshot of several megabytes comes back intact", withStore(async (s, store) => {
        const data = new Uint8Array(3 * 1024 * 1024);
        const random = new SeededRandom(7);
        for (let i = 0; i < data.length; i++) data[i] = random.nextInt(256);
        await store.saveReady({ hardState: { term: 2, vote: "", commit: 40 }, entries: [], snapshot: snapshotAt(40, 2, data) }, { sync: true });
        assert.deepEqual((await s.restart()).snapshot, snapshotAt(40, 2, data));
      }));

      void test("a later hard state replaces the earlier one, and a Ready without one keeps it", withStore(async (s, store) => {
        await store.saveReady({ hardState: { term: 1, vote: "a", commit: 0 }, entries: run(1, 3, 1), snapshot: undefined }, { sync: true });
        await store.saveReady({ hardState: { term: 2, vote: "", commit: 2 }, entries: [], snapshot: undefined }, { sync: true });
        await store.saveReady({ hardState: undefined, entries: run(4, 4, 2), snapshot: undefined }, { sync: true });
        await store.saveReady(NO_CHANGE, { sync: true });
        const state = await s.restart();
        assert.deepEqual(state.hardState, { term: 2, vote: "", commit: 2 });
        assert.deepEqual(state.entries, [...run(1, 3, 1), ...run(4, 4, 2)]);
      }));

      void test("writes made without sync come back after a clean restart", withStore(async (s, store) => {
        await store.saveReady({ hardState: { term: 1, vote: "a", commit: 0 }, entries: run(1, 3, 1), snapshot: undefined }, { sync: true });
        await store.saveReady({ ...NO_CHANGE, hardState: { term: 1, vote: "a", commit: 2 } }, { sync: false });
        await store.saveReady({ ...NO_CHANGE, hardState: { term: 1, vote: "a", commit: 3 } }, { sync: false });
        assert.deepEqual((await s.restart()).hardState, { term: 1, vote: "a", commit: 3 });
      }));

      void test("a seeded history of appends, overwrites, received snapshots and compactions reloads exactly at every restart",
        withStore(async (s) => {
          const random = new SeededRandom(2024);
          let restarts = 0;
          const history = storageHistory({ seed: 2024, steps: 300, options: { compactions: true } });
          for (const [i, step] of history.entries()) {
            await applyOp(s.store, step.op);
            if (random.nextInt(10) < 2 || i === history.length - 1) {
              assert.deepEqual(await s.restart(), step.after, `state after a restart at step ${i + 1}`);
              restarts++;
            }
          }
          assert.ok(restarts > 30, `restarted ${restarts} times`);
        }));
    });

    void describe("the log follows the Ready contract", () => {
      void test("entries overwrite the log from entries[0].index, dropping the conflicting tail", withStore(async (s, store) => {
        await store.saveReady({ hardState: { term: 1, vote: "a", commit: 5 }, entries: run(1, 10, 1), snapshot: undefined }, { sync: true });
        await store.saveReady({ hardState: { term: 2, vote: "b", commit: 5 }, entries: run(6, 7, 2), snapshot: undefined }, { sync: true });
        assert.deepEqual(await s.restart(), { hardState: { term: 2, vote: "b", commit: 5 }, snapshot: undefined, entries: [...run(1, 5, 1), ...run(6, 7, 2)] });
      }));

      void test("a longer overwriting suffix replaces the tail and extends the log", withStore(async (s, store) => {
        await store.saveReady({ hardState: { term: 1, vote: "a", commit: 3 }, entries: run(1, 10, 1), snapshot: undefined }, { sync: true });
        await store.saveReady({ ...NO_CHANGE, entries: run(4, 12, 3) }, { sync: true });
        assert.deepEqual((await s.restart()).entries, [...run(1, 3, 1), ...run(4, 12, 3)]);
      }));

      void test("a received snapshot replaces the whole log, and the entries after it follow", withStore(async (s, store) => {
        await store.saveReady({ hardState: { term: 1, vote: "a", commit: 4 }, entries: run(1, 10, 1), snapshot: undefined }, { sync: true });
        await store.saveReady({ hardState: { term: 3, vote: "", commit: 20 }, entries: run(21, 22, 3), snapshot: snapshotAt(20, 3) }, { sync: true });
        assert.deepEqual(await s.restart(), { hardState: { term: 3, vote: "", commit: 20 }, snapshot: snapshotAt(20, 3), entries: run(21, 22, 3) });
      }));

      void test("a received snapshot inside the log replaces it too: no entry after the snapshot is kept", withStore(async (s, store) => {
        await store.saveReady({ hardState: { term: 1, vote: "a", commit: 4 }, entries: run(1, 10, 1), snapshot: undefined }, { sync: true });
        await store.saveReady({ hardState: { term: 2, vote: "", commit: 6 }, entries: [], snapshot: snapshotAt(6, 2) }, { sync: true });
        assert.deepEqual(await s.restart(), { hardState: { term: 2, vote: "", commit: 6 }, snapshot: snapshotAt(6, 2), entries: [] });
      }));

      void test("a local compaction keeps the entries after its snapshot and drops the rest", withStore(async (s, store) => {
        await store.saveReady({ hardState: { term: 1, vote: "a", commit: 10 }, entries: run(1, 10, 1), snapshot: undefined }, { sync: true });
        await store.saveSnapshot(snapshotAt(6, 1));
        assert.deepEqual(await s.restart(), { hardState: { term: 1, vote: "a", commit: 10 }, snapshot: snapshotAt(6, 1), entries: run(7, 10, 1) });
      }));

      void test("a local compaction at or below the stored snapshot is stale and changes nothing", withStore(async (s, store) => {
        await store.saveReady({ hardState: { term: 1, vote: "a", commit: 10 }, entries: run(1, 10, 1), snapshot: undefined }, { sync: true });
        await store.saveReady({ hardState: { term: 2, vote: "", commit: 20 }, entries: run(21, 22, 2), snapshot: snapshotAt(20, 2) }, { sync: true });
        await store.saveSnapshot(snapshotAt(8, 1));
        await store.saveSnapshot(snapshotAt(20, 2, new TextEncoder().encode("a stale copy")));
        assert.deepEqual(await store.loadSnapshot(), snapshotAt(20, 2));
        assert.deepEqual(await s.restart(), { hardState: { term: 2, vote: "", commit: 20 }, snapshot: snapshotAt(20, 2), entries: run(21, 22, 2) });
      }));

      void test("a local compaction whose term disagrees with the stored entry is refused before writing", withStore(async (s, store) => {
        await store.saveReady({ hardState: { term: 1, vote: "a", commit: 10 }, entries: run(1, 10, 1), snapshot: undefined }, { sync: true });
        await assert.rejects(store.saveSnapshot(snapshotAt(6, 2)), RaftInvariantError);
        const state = await s.restart();
        assert.equal(state.snapshot, undefined);
        assert.deepEqual(entryIndexes(state), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      }));

      void test("loadSnapshot returns the newest snapshot, received or taken locally, and undefined before any", withStore(async (s, store) => {
        assert.equal(await store.loadSnapshot(), undefined);
        await store.saveReady({ hardState: { term: 1, vote: "", commit: 2 }, entries: run(3, 6, 1), snapshot: snapshotAt(2, 1) }, { sync: true });
        assert.deepEqual(await store.loadSnapshot(), snapshotAt(2, 1));
        await store.saveReady({ ...NO_CHANGE, hardState: { term: 1, vote: "", commit: 6 } }, { sync: true });
        await store.saveSnapshot(snapshotAt(5, 1));
        assert.deepEqual(await store.loadSnapshot(), snapshotAt(5, 1));
        await s.restart();
        assert.deepEqual(await s.store.loadSnapshot(), snapshotAt(5, 1), "and after a restart");
      }));
    });

    void describe("a write that would break the log is refused before anything is written", () => {
      const refused: readonly (readonly [string, ReadyWrite])[] = [
        ["entries that would leave a gap after the last index", { ...NO_CHANGE, entries: run(10, 11, 1) }],
        ["entries that start inside the snapshot", { ...NO_CHANGE, entries: run(5, 6, 1) }],
        ["entries out of order", { ...NO_CHANGE, entries: [normal(9, 1), normal(11, 1)] }],
        ["entries whose term decreases", { ...NO_CHANGE, entries: [normal(9, 2), normal(10, 1)] }],
        ["a received snapshot not beyond the stored one", { ...NO_CHANGE, snapshot: snapshotAt(5, 1) }],
        ["a hard state that commits beyond the last index", { ...NO_CHANGE, hardState: { term: 1, vote: "", commit: 9 } }],
        ["a hard state that commits beyond the entries written with it", { hardState: { term: 1, vote: "", commit: 10 }, entries: run(9, 9, 1), snapshot: undefined }],
      ];
      for (const [what, part] of refused) {
        void test(`saveReady refuses ${what}, and the store takes the next valid write`, withStore(async (s, store) => {
          await seeded(store);
          await assert.rejects(store.saveReady(part, { sync: true }), RaftInvariantError);
          await store.saveReady({ ...NO_CHANGE, entries: run(9, 9, 1) }, { sync: true });
          assert.deepEqual(await s.restart(), { hardState: { term: 1, vote: "", commit: 5 }, snapshot: snapshotAt(5, 1), entries: run(6, 9, 1) });
        }));
      }

      void test("saving before load() is refused", async () => {
        const harness = await kind.harness();
        try {
          const store = await harness.create();
          await assert.rejects(store.saveReady({ ...NO_CHANGE, entries: run(1, 1, 1) }, { sync: true }), RaftInvariantError);
          await assert.rejects(store.saveSnapshot(snapshotAt(1, 1)), RaftInvariantError);
          await store.close();
        } finally {
          await harness.dispose();
        }
      });
    });

    void describe("operations take effect in call order", () => {
      void test("calls made without awaiting the previous one take effect in call order", withStore(async (s, store) => {
        await Promise.all([
          store.saveReady({ hardState: { term: 1, vote: "a", commit: 0 }, entries: run(1, 6, 1), snapshot: undefined }, { sync: true }),
          store.saveReady({ hardState: { term: 2, vote: "a", commit: 4 }, entries: run(5, 8, 2), snapshot: undefined }, { sync: true }),
          store.saveSnapshot(snapshotAt(4, 1)),
          store.saveReady({ hardState: { term: 2, vote: "a", commit: 8 }, entries: run(9, 9, 2), snapshot: undefined }, { sync: false }),
        ]);
        assert.deepEqual(await s.restart(), { hardState: { term: 2, vote: "a", commit: 8 }, snapshot: snapshotAt(4, 1), entries: run(5, 9, 2) });
      }));

      void test("close() waits for the operations queued before it, and is safe to call twice", withStore(async (s, store) => {
        const writes = [
          store.saveReady({ hardState: { term: 1, vote: "a", commit: 3 }, entries: run(1, 4, 1), snapshot: undefined }, { sync: true }),
          store.saveSnapshot(snapshotAt(3, 1)),
        ];
        await Promise.all([store.close(), store.close(), ...writes]);
        await store.close();
        assert.deepEqual(await s.restart(), { hardState: { term: 1, vote: "a", commit: 3 }, snapshot: snapshotAt(3, 1), entries: run(4, 4, 1) });
      }));
    });

    void describe("a crash", () => {
      void test("keeps every write that was durable when it returned, and of the rest a prefix, each write whole or absent", async (t) => {
        const history = storageHistory(CRASH_HISTORY);
        assert.ok(history.some((step) => !durableOnReturn(step.op)) && history.some((step) => durableOnReturn(step.op)));
        // A survivor names the prefix it holds only if no two prefixes leave the same state.
        const states = prefixStates(history).map(describeState);
        assert.equal(new Set(states).size, states.length, "every step of the crash history leaves a state of its own");
        const outcomes = await kind.crashes(CRASH_HISTORY);
        assert.ok(outcomes.length > 0, "the harness crashed the store at least once");
        let lost = 0;
        let inFlight = 0;
        let landed = 0;
        for (const outcome of outcomes) {
          const held = checkCrashOutcome(history, outcome);
          if (held < outcome.acknowledged) lost++;
          if (outcome.inFlight) inFlight++;
          if (outcome.inFlight && held === outcome.begunMax) landed++;
        }
        t.diagnostic(`${outcomes.length} crashes; ${inFlight} struck with a step in flight, ${landed} of those steps reached the store;`
          + ` ${lost} lost steps that had returned without being durable`);
      });
    });
  });
}
