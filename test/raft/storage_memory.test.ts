// MemoryLogStorage keeps the LogStorage contract, so the simulator's nodes store their logs as
// production ones do. A restart is a crash that keeps every write (a clean process exit loses
// nothing); a crash is crash(n), tried with every n at every point of the history.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { MemoryLogStorage } from "../../src/raft/storage/memory.js";
import { type CrashOutcome, type StoreUnderContract, loadAfterCrash, logStorageContract } from "./storage_contract.js";
import { EMPTY_STATE, NO_CHANGE, applyOp, run, storageHistory } from "../support/storage_history.js";

const memory: StoreUnderContract<MemoryLogStorage> = {
  name: "MemoryLogStorage",
  harness: () => Promise.resolve({
    create: () => Promise.resolve(new MemoryLogStorage()),
    reopen: async (store) => {
      await store.close();
      return store.crash(store.unsyncedWrites);
    },
    dispose: () => Promise.resolve(),
  }),
  crashes: async (spec) => {
    const history = storageHistory(spec);
    const store = new MemoryLogStorage();
    await store.load();
    const outcomes: CrashOutcome[] = [];
    for (let done = 0; ; done++) {
      const unsynced = store.unsyncedWrites;
      for (let keep = 0; keep <= unsynced; keep++) {
        outcomes.push({
          label: `a crash after ${done} steps, keeping ${keep} of ${unsynced} unsynced writes`,
          acknowledged: done,
          begunMax: done,
          inFlight: false,
          loaded: await loadAfterCrash(store.crash(keep)),
        });
      }
      if (done === history.length) break;
      await applyOp(store, history[done].op);
    }
    await store.close();
    return outcomes;
  },
};

logStorageContract(memory);

void describe("MemoryLogStorage's crash model", () => {
  void test("crash(0) loses every write made without sync since the last synced one, and crash(n) keeps the oldest n", async () => {
    const store = new MemoryLogStorage();
    await store.load();
    await store.saveReady({ hardState: { term: 1, vote: "a", commit: 0 }, entries: run(1, 4, 1), snapshot: undefined }, { sync: true });
    for (const commit of [1, 2, 3]) await store.saveReady({ ...NO_CHANGE, hardState: { term: 1, vote: "a", commit } }, { sync: false });
    assert.equal(store.unsyncedWrites, 3);
    for (const keep of [0, 1, 2, 3]) {
      const state = await loadAfterCrash(store.crash(keep));
      assert.ok(!(state instanceof Error));
      assert.deepEqual(state.hardState, { term: 1, vote: "a", commit: keep });
    }
  });

  void test("a synced write makes every earlier one durable with it", async () => {
    const store = new MemoryLogStorage();
    await store.load();
    await store.saveReady({ hardState: { term: 1, vote: "a", commit: 0 }, entries: run(1, 2, 1), snapshot: undefined }, { sync: false });
    await store.saveReady({ ...NO_CHANGE, entries: run(3, 3, 1) }, { sync: true });
    assert.equal(store.unsyncedWrites, 0);
    assert.deepEqual(await loadAfterCrash(store.crash(0)), { hardState: { term: 1, vote: "a", commit: 0 }, snapshot: undefined, entries: run(1, 3, 1) });
  });

  void test("a crash before any write leaves an empty store", async () => {
    const store = new MemoryLogStorage();
    await store.load();
    await store.saveReady({ ...NO_CHANGE, entries: run(1, 1, 1) }, { sync: false });
    assert.deepEqual(await loadAfterCrash(store.crash(0)), EMPTY_STATE);
  });
});
