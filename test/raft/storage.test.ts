// LevelLogStorage against a real LevelDB: what is saved comes back after a restart, a conflicting suffix
// and a compacted prefix are really gone from disk, and damage is refused loudly, never skipped.
// Each test gets a fresh temporary directory, removed afterwards even when the test fails.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { Level } from "level";
import { encodeSnapshot } from "../../src/raft/codec.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import { LevelLogStorage, StorageCorruptionError, type StorageRecordKind, metaKeyBytesMax, metaValueBytesMax } from "../../src/raft/storage/leveldb.js";
import { type Entry, type HardState, RaftInvariantError, type Snapshot } from "../../src/raft/core/types.js";
import { type Scratch, withScratch } from "../support/level_scratch.js";
import { NO_CHANGE, entryIndexes, normal, run, snapshotAt } from "../support/storage_history.js";

// ---------------------------------------------------------------- fixtures

const encoder = new TextEncoder();

/** The documented on-disk key of an entry: "e/" and the index as 16 zero-padded decimals. */
function entryKey(index: number): string {
  return "e/" + String(index).padStart(16, "0");
}

/** A record in the documented format: CRC32 (big-endian) over the rest, format byte 1, payload. */
function validRecord(payload: Uint8Array): Uint8Array {
  const record = new Uint8Array(5 + payload.byteLength);
  record[4] = 1;
  record.set(payload, 5);
  new DataView(record.buffer).setUint32(0, crc32(record.subarray(4)));
  return record;
}

/** What a test sees of one LevelDB batch: its operations and the options it was written with. */
interface BatchSeen {
  readonly ops: { type: string; key: string }[];
  options: unknown;
}

/** A chained batch, as far as LevelLogStorage uses one. */
interface ChainedBatchLike {
  put(key: string, value: Uint8Array): unknown;
  del(key: string): unknown;
  write(options: unknown): Promise<void>;
}

/**
 * Replaces LevelDB's batch() for the duration of `fn`, then puts the original back, even on
 * failure: each chained batch it makes reports its operations to `seen` and writes through
 * `write`, which may refuse.
 */
async function withBatchPatched(
  write: (batch: BatchSeen, original: () => Promise<void>) => Promise<void>,
  fn: () => Promise<void>,
  seen: BatchSeen[] = [],
): Promise<void> {
  const proto = Level.prototype as unknown as Record<string, unknown>;
  const original = proto["batch"];
  assert.ok(typeof original === "function");
  assert.ok(!Object.prototype.hasOwnProperty.call(proto, "batch"), "the patch must not shadow an own method");
  proto["batch"] = function (this: unknown, ...args: unknown[]): unknown {
    assert.equal(args.length, 0, "LevelLogStorage writes through chained batches");
    const batch = Reflect.apply(original as (...a: unknown[]) => unknown, this, args) as ChainedBatchLike;
    const mine: BatchSeen = { ops: [], options: undefined };
    seen.push(mine);
    return {
      put: (key: string, value: Uint8Array) => { mine.ops.push({ type: "put", key }); return batch.put(key, value); },
      del: (key: string) => { mine.ops.push({ type: "del", key }); return batch.del(key); },
      write: (options: unknown) => { mine.options = options; return write(mine, () => batch.write(options)); },
      close: async () => { /* nothing was written */ },
    };
  };
  try {
    await fn();
  } finally {
    Reflect.deleteProperty(proto, "batch");
  }
  assert.equal(proto["batch"], original, "the patch is removed");
}

/** A storage holding entries 1..last of term 1 and a hard state committing `commit`, then closed. */
async function seedLog(s: Scratch, last: number, commit = 0): Promise<void> {
  const { storage } = await s.restart();
  await storage.saveReady({ hardState: { term: 1, vote: "a", commit }, entries: run(1, last, 1), snapshot: undefined });
  await storage.close();
}

async function assertLoadRefused(s: Scratch, expected: { record: StorageRecordKind; index: number | undefined; reason: RegExp }): Promise<void> {
  const storage = await s.open();
  try {
    await assert.rejects(storage.load(), (err: unknown) => {
      assert.ok(err instanceof StorageCorruptionError, `expected StorageCorruptionError, got ${String(err)}`);
      assert.equal(err.path, s.dir);
      assert.equal(err.record, expected.record);
      assert.equal(err.index, expected.index);
      assert.match(err.reason, expected.reason);
      assert.ok(err.message.includes(s.dir), `message names the directory: ${err.message}`);
      if (expected.index !== undefined) assert.ok(err.message.includes(`at index ${expected.index}`), err.message);
      assert.match(err.message, /refuses to start/);
      assert.match(err.message, /Restore this node from a peer \(remove its data directory and re-join\)\./);
      return true;
    });
  } finally {
    await storage.close();
  }
}

// ---------------------------------------------------------------- round trips

void describe("what a node saves comes back after a restart", () => {
  void test("hard state, snapshot and entries of every kind survive close and reopen", () =>
    withScratch(async (s) => {
      const hardState: HardState = { term: 4, vote: "b", commit: 9 };
      const snapshot = snapshotAt(5, 2);
      const entries: Entry[] = [
        normal(6, 3),
        { index: 7, term: 3, type: "confChange", change: { type: "addLearner", node: "d", context: "10.0.0.4:7000" } },
        { index: 8, term: 4, type: "confChange", change: { type: "promote", node: "d" } },
        { index: 9, term: 4, type: "confChange", change: { type: "remove", node: "c" } },
        { index: 10, term: 4, type: "normal", data: new Uint8Array(0) },
      ];
      const { storage } = await s.restart();
      await storage.saveReady({ hardState, entries, snapshot });
      const { state } = await s.restart(storage);
      assert.deepEqual(state, { hardState, snapshot, entries });
    }));

  void test("a fresh directory, even a nested one that does not exist yet, loads as empty", () =>
    withScratch(async (s) => {
      const storage = await LevelLogStorage.open(join(s.dir, "a", "b", "raft"));
      try {
        assert.equal(storage.dir, join(s.dir, "a", "b", "raft"));
        assert.deepEqual(await storage.load(), { hardState: undefined, snapshot: undefined, entries: [] });
        assert.deepEqual(storage.stats(), { entries: 0, firstIndex: 1, lastIndex: 0, bytes: 0, snapshotIndex: 0 });
      } finally {
        await storage.close();
      }
    }));

  void test("a snapshot of several megabytes is stored as one value and read back intact", () =>
    withScratch(async (s) => {
      const data = new Uint8Array(3 * 1024 * 1024);
      const random = new SeededRandom(7);
      for (let i = 0; i < data.length; i++) data[i] = random.nextInt(256);
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: { term: 2, vote: "", commit: 40 }, entries: [], snapshot: snapshotAt(40, 2, data) });
      const { state } = await s.restart(storage);
      assert.deepEqual(state.snapshot, snapshotAt(40, 2, data));
    }));

  void test("loadSnapshot reads back the latest stored snapshot, whichever way it was saved", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      assert.equal(await storage.loadSnapshot(), undefined, "none stored yet");
      await storage.saveReady({ hardState: undefined, entries: run(3, 6, 1), snapshot: snapshotAt(2, 1) });
      assert.deepEqual(await storage.loadSnapshot(), snapshotAt(2, 1));
      await storage.saveSnapshot(snapshotAt(5, 1));
      assert.deepEqual(await storage.loadSnapshot(), snapshotAt(5, 1));
      await storage.close();
      // The record is codec's encodeSnapshot output, sealed: an earlier build reads it as before.
      const record = await s.rawGet("snap");
      assert.deepEqual(record, validRecord(encodeSnapshot(snapshotAt(5, 1))));
    }));

  void test("loadSnapshot refuses a damaged snapshot record", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: undefined, entries: [], snapshot: snapshotAt(3, 1) });
      await storage.close();
      const record = await s.rawGet("snap");
      record[7] ^= 0x80;
      await s.rawPut("snap", record);
      const reopened = await s.open();
      await assert.rejects(reopened.loadSnapshot(), (err: unknown) => err instanceof StorageCorruptionError && err.record === "snapshot");
    }));

  void test("a later hard state replaces the earlier one, and a Ready without one keeps it", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: { term: 1, vote: "a", commit: 0 }, entries: run(1, 3, 1), snapshot: undefined });
      await storage.saveReady({ hardState: { term: 2, vote: "", commit: 2 }, entries: [], snapshot: undefined });
      await storage.saveReady({ hardState: undefined, entries: run(4, 4, 2), snapshot: undefined });
      const { state } = await s.restart(storage);
      assert.deepEqual(state.hardState, { term: 2, vote: "", commit: 2 });
      assert.deepEqual(entryIndexes(state), [1, 2, 3, 4]);
    }));

  void test("metadata round trips across reopen, a missing key reads as undefined, and oversize records are refused", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      await storage.putMeta("clusterId", encoder.encode("c-123"));
      await storage.putMeta("members", encoder.encode('{"a":"10.0.0.1:7000"}'));
      await storage.putMeta("members", encoder.encode('{"a":"10.0.0.9:7000"}'));
      await storage.putMeta("empty", new Uint8Array(0));
      await assert.rejects(storage.putMeta("", new Uint8Array(1)), RangeError);
      await assert.rejects(storage.putMeta("k".repeat(metaKeyBytesMax + 1), new Uint8Array(1)), RangeError);
      await assert.rejects(storage.putMeta("big", new Uint8Array(metaValueBytesMax + 1)), RangeError);
      const { storage: reopened } = await s.restart(storage);
      assert.deepEqual(await reopened.getMeta("clusterId"), encoder.encode("c-123"));
      assert.deepEqual(await reopened.getMeta("members"), encoder.encode('{"a":"10.0.0.9:7000"}'));
      assert.deepEqual(await reopened.getMeta("empty"), new Uint8Array(0));
      assert.equal(await reopened.getMeta("nope"), undefined);
      assert.equal(await reopened.getMeta("big"), undefined);
    }));

  void test("metadata lives apart from the log: it neither shows up in nor disturbs load()", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      await storage.putMeta("e", encoder.encode("not an entry"));
      await storage.saveReady({ hardState: { term: 1, vote: "", commit: 2 }, entries: run(1, 2, 1), snapshot: undefined });
      const { state } = await s.restart(storage);
      assert.deepEqual(entryIndexes(state), [1, 2]);
    }));
});

// ---------------------------------------------------------------- log shape

void describe("the log on disk follows the Ready contract", () => {
  void test("entries that overwrite a suffix delete the conflicting tail, also on disk", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 5);
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: { term: 2, vote: "b", commit: 5 }, entries: run(6, 7, 2), snapshot: undefined });
      assert.deepEqual(storage.stats().lastIndex, 7);
      const { storage: reopened, state } = await s.restart(storage);
      assert.deepEqual(state.entries, [...run(1, 5, 1), ...run(6, 7, 2)]);
      assert.deepEqual(state.hardState, { term: 2, vote: "b", commit: 5 });
      await reopened.close();
      assert.deepEqual(await s.rawEntryKeys(), [1, 2, 3, 4, 5, 6, 7].map(entryKey), "entries 8..10 are gone from LevelDB");
    }));

  void test("a longer overwriting suffix replaces the tail and extends the log", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 3);
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: undefined, entries: run(4, 12, 3), snapshot: undefined });
      const { state } = await s.restart(storage);
      assert.deepEqual(state.entries, [...run(1, 3, 1), ...run(4, 12, 3)]);
    }));

  void test("a snapshot in a Ready replaces the whole log, and entries after it follow", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 4);
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: { term: 3, vote: "", commit: 20 }, entries: run(21, 22, 3), snapshot: snapshotAt(20, 3) });
      assert.deepEqual(storage.stats(), { entries: 2, firstIndex: 21, lastIndex: 22, bytes: storage.stats().bytes, snapshotIndex: 20 });
      await storage.close();
      assert.deepEqual(await s.rawEntryKeys(), [entryKey(21), entryKey(22)], "entries 1..10 are gone from LevelDB");
      const { state } = await s.restart();
      assert.deepEqual(state, { hardState: { term: 3, vote: "", commit: 20 }, snapshot: snapshotAt(20, 3), entries: run(21, 22, 3) });
    }));

  void test("saveSnapshot drops the compacted prefix, and load returns only the entries after it", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 10);
      const { storage } = await s.restart();
      await storage.saveSnapshot(snapshotAt(6, 1));
      assert.deepEqual(storage.stats(), { entries: 4, firstIndex: 7, lastIndex: 10, bytes: storage.stats().bytes, snapshotIndex: 6 });
      await storage.close();
      // Checked before any load(), which would clean up leftovers itself and hide a missing delete.
      assert.deepEqual(await s.rawEntryKeys(), [7, 8, 9, 10].map(entryKey), "entries 1..6 are gone from LevelDB");
      const { state } = await s.restart();
      assert.deepEqual(state.snapshot, snapshotAt(6, 1));
      assert.deepEqual(state.entries, run(7, 10, 1));
    }));

  void test("a local snapshot older than the stored one is stale and changes nothing", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 10);
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: { term: 2, vote: "", commit: 20 }, entries: [], snapshot: snapshotAt(20, 2) });
      await storage.saveSnapshot(snapshotAt(8, 1));
      const { state } = await s.restart(storage);
      assert.deepEqual(state.snapshot, snapshotAt(20, 2));
      assert.deepEqual(state.entries, []);
    }));

  void test("a local snapshot whose term disagrees with the stored entry is a bug, refused before writing", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 10);
      const { storage } = await s.restart();
      await assert.rejects(storage.saveSnapshot(snapshotAt(6, 2)), RaftInvariantError);
      const { state } = await s.restart(storage);
      assert.equal(state.snapshot, undefined);
      assert.deepEqual(entryIndexes(state), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    }));

  void test("entries at or below the snapshot, left by a crash mid-compaction, are ignored and then cleaned up", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 10);
      const survivors = new Map<string, Uint8Array>();
      for (let i = 1; i <= 6; i++) survivors.set(entryKey(i), await s.rawGet(entryKey(i)));
      const { storage } = await s.restart();
      await storage.saveSnapshot(snapshotAt(6, 1));
      await storage.close();
      // What a compaction that wrote the snapshot but died before its deletes would leave, plus a
      // damaged leftover: below the snapshot nothing is read, so nothing there can block a restart.
      await s.raw(async (db) => {
        for (const [key, value] of survivors) await db.put(key, value);
        await db.put(entryKey(2), encoder.encode("torn"));
      });
      const { storage: reopened, state } = await s.restart();
      assert.deepEqual(state.snapshot, snapshotAt(6, 1));
      assert.deepEqual(state.entries, run(7, 10, 1));
      assert.deepEqual(reopened.stats(), { entries: 4, firstIndex: 7, lastIndex: 10, bytes: reopened.stats().bytes, snapshotIndex: 6 });
      await reopened.close();
      assert.deepEqual(await s.rawEntryKeys(), [7, 8, 9, 10].map(entryKey), "the leftovers were deleted");
    }));

  void test("every write is exactly one synced LevelDB batch, in the order snapshot, entries, hard state; a compaction's deletes follow unsynced", () =>
    withScratch(async (s) => {
      const calls: BatchSeen[] = [];
      await withBatchPatched((_batch, original) => original(), async () => {
        const { storage } = await s.restart();
        await storage.saveReady({ hardState: { term: 1, vote: "a", commit: 0 }, entries: run(1, 4, 1), snapshot: undefined });
        await storage.saveReady({ hardState: { term: 2, vote: "b", commit: 3 }, entries: run(3, 3, 2), snapshot: undefined });
        await storage.saveReady({ hardState: { term: 3, vote: "", commit: 8 }, entries: run(9, 9, 3), snapshot: snapshotAt(8, 3) });
        await storage.saveSnapshot(snapshotAt(9, 3));
        await storage.putMeta("clusterId", encoder.encode("x"));
        await storage.saveReady(NO_CHANGE);
        await storage.close();
      }, calls);
      assert.equal(calls.length, 6, "one batch per write, none for an empty Ready, and one for a compaction's deletes");
      assert.deepEqual(calls.map((c) => c.options), [{ sync: true }, { sync: true }, { sync: true }, { sync: true }, { sync: false }, { sync: true }]);
      const del = (i: number) => ({ type: "del", key: entryKey(i) });
      const put = (key: string) => ({ type: "put", key });
      assert.deepEqual(calls.map((c) => c.ops), [
        [put(entryKey(1)), put(entryKey(2)), put(entryKey(3)), put(entryKey(4)), put("hs")],
        [put(entryKey(3)), del(4), put("hs")],
        [put("snap"), del(1), del(2), del(3), put(entryKey(9)), put("hs")],
        [put("snap")],
        [del(9)],
        [put("m/clusterId")],
      ]);
    }));

  void test("a compaction deletes a long prefix in bounded batches, and Ready writes made meanwhile go between them", () =>
    withScratch(async (s) => {
      const calls: BatchSeen[] = [];
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: { term: 1, vote: "a", commit: 5000 }, entries: run(1, 5000, 1), snapshot: undefined });
      await withBatchPatched((_batch, original) => original(), async () => {
        const compaction = storage.saveSnapshot(snapshotAt(4999, 1));
        await new Promise((resolve) => setImmediate(resolve));
        const ready = storage.saveReady({ hardState: { term: 1, vote: "a", commit: 5001 }, entries: run(5001, 5001, 1), snapshot: undefined });
        await Promise.all([compaction, ready]);
      }, calls);
      const deletes = calls.filter((c) => c.ops.every((op) => op.type === "del")).map((c) => c.ops.length);
      assert.deepEqual(deletes, [2048, 2048, 903]);
      const readyAt = calls.findIndex((c) => c.ops.some((op) => op.type === "put" && op.key === entryKey(5001)));
      assert.ok(readyAt > 0 && readyAt < calls.length - 1, `the Ready write waited for every delete batch (position ${readyAt} of ${calls.length})`);
      const { state } = await s.restart(storage);
      assert.deepEqual(entryIndexes(state), [5000, 5001]);
    }));

  void test("after a failed write, later writes are refused until the node restarts", () =>
    withScratch(async (s) => {
      await seedLog(s, 3, 3);
      const { storage } = await s.restart();
      let failNext = true;
      await withBatchPatched(async (_batch, original) => {
        if (failNext) {
          failNext = false;
          throw new Error("No space left on device");
        }
        await original();
      }, async () => {
        await assert.rejects(storage.saveReady({ ...NO_CHANGE, entries: run(4, 5, 1) }),
          new RegExp(`^Error: Raft storage in ${s.dir} failed to write: No space left on device; .* restart the node$`));
        await assert.rejects(storage.saveReady({ ...NO_CHANGE, entries: run(4, 5, 1) }), /refuses writes after an earlier write failed \(No space left on device\)/);
        await assert.rejects(storage.putMeta("k", new Uint8Array(1)), /refuses writes after an earlier write failed/);
        assert.equal(storage.stats().lastIndex, 3, "the index did not move for a write that failed");
      });
      const { state } = await s.restart(storage);
      assert.deepEqual(state.entries, run(1, 3, 1));
    }));

  void test("calls made without awaiting the previous one run one at a time, in call order", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      await Promise.all([
        storage.saveReady({ hardState: { term: 1, vote: "a", commit: 0 }, entries: run(1, 6, 1), snapshot: undefined }),
        storage.saveReady({ hardState: { term: 2, vote: "a", commit: 4 }, entries: run(5, 8, 2), snapshot: undefined }),
        storage.saveSnapshot(snapshotAt(4, 1)),
        storage.saveReady({ hardState: { term: 2, vote: "a", commit: 8 }, entries: run(9, 9, 2), snapshot: undefined }),
        storage.close(),
      ]);
      const { state } = await s.restart();
      assert.deepEqual(state, { hardState: { term: 2, vote: "a", commit: 8 }, snapshot: snapshotAt(4, 1), entries: [...run(5, 9, 2)] });
    }));

  void test("saveReady refuses, before writing, entries that would leave a gap, rewrite the snapshot or commit past the log", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: { term: 1, vote: "", commit: 5 }, entries: [], snapshot: snapshotAt(5, 1) });
      await storage.saveReady({ hardState: undefined, entries: run(6, 8, 1), snapshot: undefined });
      const refused: Parameters<LevelLogStorage["saveReady"]>[0][] = [
        { ...NO_CHANGE, entries: run(10, 11, 1) },
        { ...NO_CHANGE, entries: run(5, 6, 1) },
        { ...NO_CHANGE, entries: [normal(9, 1), normal(11, 1)] },
        { ...NO_CHANGE, entries: [normal(9, 2), normal(10, 1)] },
        { ...NO_CHANGE, snapshot: snapshotAt(5, 1) },
        { ...NO_CHANGE, hardState: { term: 1, vote: "", commit: 9 } },
      ];
      for (const part of refused) await assert.rejects(storage.saveReady(part), RaftInvariantError);
      const { state } = await s.restart(storage);
      assert.deepEqual(entryIndexes(state), [6, 7, 8]);
      assert.deepEqual(state.hardState, { term: 1, vote: "", commit: 5 });
    }));

  void test("saving before load() is refused: the log index is not built yet", () =>
    withScratch(async (s) => {
      const storage = await s.open();
      await assert.rejects(storage.saveReady({ ...NO_CHANGE, entries: run(1, 1, 1) }), RaftInvariantError);
      await assert.rejects(storage.saveSnapshot(snapshotAt(1, 1)), RaftInvariantError);
      assert.throws(() => storage.stats(), RaftInvariantError);
    }));

  void test("a second open of a directory in use fails and says the directory is locked", () =>
    withScratch(async (s) => {
      await s.open();
      await assert.rejects(LevelLogStorage.open(s.dir), (err: unknown) => {
        assert.ok(err instanceof Error);
        assert.ok(err.message.includes(s.dir) && /locked by another process/.test(err.message), err.message);
        return true;
      });
    }));

  void test("a random history of appends, overwrites, snapshots and compactions reloads exactly, with matching stats", () =>
    withScratch(async (s) => {
      // A model of what the disk should hold, driven by a seeded schedule, checked at every restart.
      const random = new SeededRandom(2024);
      let snapshot: Snapshot | undefined;
      let entries: Entry[] = [];
      let hardState: HardState | undefined;
      let term = 1;
      let { storage } = await s.restart();
      const lastIndex = () => (entries.at(-1)?.index ?? snapshot?.metadata.index ?? 0);
      for (let step = 0; step < 300; step++) {
        const roll = random.nextInt(100);
        if (roll < 55) {
          // Append, or overwrite a suffix with a higher term.
          const base = snapshot?.metadata.index ?? 0;
          const overwrite = roll < 15 && entries.length > 0;
          const from = overwrite ? base + 1 + random.nextInt(entries.length) : lastIndex() + 1;
          if (overwrite) term++;
          const batch = run(from, from + random.nextInt(5), term);
          entries = [...entries.filter((e) => e.index < from), ...batch];
          hardState = { term, vote: "a", commit: Math.min(hardState?.commit ?? 0, from - 1) };
          await storage.saveReady({ hardState, entries: batch, snapshot: undefined });
        } else if (roll < 70 && entries.length > 0) {
          // Commit some, then compact through a committed entry.
          const commit = lastIndex();
          hardState = { term, vote: "a", commit };
          await storage.saveReady({ hardState, entries: [], snapshot: undefined });
          const through = entries[random.nextInt(entries.length)];
          snapshot = snapshotAt(through.index, through.term);
          entries = entries.filter((e) => e.index > through.index);
          await storage.saveSnapshot(snapshot);
        } else if (roll < 78) {
          // A snapshot from the leader, beyond everything, maybe with entries after it.
          term++;
          const index = lastIndex() + 1 + random.nextInt(4);
          snapshot = snapshotAt(index, term);
          entries = run(index + 1, index + random.nextInt(3), term);
          hardState = { term, vote: "", commit: index };
          await storage.saveReady({ hardState, entries, snapshot });
        } else if (roll < 90) {
          const before = storage.stats();
          const restarted = await s.restart(storage);
          storage = restarted.storage;
          assert.deepEqual(restarted.state, { hardState, snapshot, entries }, `state after restart at step ${step}`);
          assert.deepEqual(storage.stats(), before, `incrementally kept stats match a fresh scan at step ${step}`);
        }
        const stats = storage.stats();
        assert.equal(stats.lastIndex, lastIndex(), `lastIndex at step ${step}`);
        assert.equal(stats.entries, entries.length, `entry count at step ${step}`);
        assert.equal(stats.firstIndex, (snapshot?.metadata.index ?? 0) + 1, `firstIndex at step ${step}`);
      }
      const final = await s.restart(storage);
      assert.deepEqual(final.state, { hardState, snapshot, entries });
    }));
});

// ---------------------------------------------------------------- damage

void describe("damage on disk is refused, never skipped", () => {
  void test("garbage under an entry key refuses the load, naming the directory and the index", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 10);
      await s.rawPut(entryKey(7), encoder.encode("this is not a Raft entry"));
      await assertLoadRefused(s, { record: "entry", index: 7, reason: /checksum mismatch/ });
    }));

  void test("a value too short to hold a record header is refused", () =>
    withScratch(async (s) => {
      await seedLog(s, 3, 3);
      await s.rawPut(entryKey(2), new Uint8Array([1, 2]));
      await assertLoadRefused(s, { record: "entry", index: 2, reason: /shorter than its 5-byte header/ });
    }));

  void test("any single flipped byte in a valid entry record fails its checksum", () =>
    withScratch(async (s) => {
      await seedLog(s, 6, 6);
      const good = await s.rawGet(entryKey(5));
      assert.ok(good.length > 10);
      for (let at = 0; at < good.length; at++) {
        const bad = good.slice();
        bad[at] ^= 0x5a;
        await s.rawPut(entryKey(5), bad);
        await assertLoadRefused(s, { record: "entry", index: 5, reason: /checksum mismatch/ });
      }
      await s.rawPut(entryKey(5), good);
      const { state } = await s.restart();
      assert.deepEqual(state.entries, run(1, 6, 1), "the original record loads again");
    }));

  void test("a record with a valid checksum that does not decode is refused as undecodable", () =>
    withScratch(async (s) => {
      await seedLog(s, 4, 4);
      // index 3, term 1, kind 7: no such entry kind.
      await s.rawPut(entryKey(3), validRecord(new Uint8Array([3, 1, 7])));
      await assertLoadRefused(s, { record: "entry", index: 3, reason: /does not decode.*unknown entry kind 7/ });
    }));

  void test("a record in an unknown format is refused", () =>
    withScratch(async (s) => {
      await seedLog(s, 4, 4);
      const record = await s.rawGet(entryKey(3));
      record[4] = 9;
      new DataView(record.buffer).setUint32(0, crc32(record.subarray(4)));
      await s.rawPut(entryKey(3), record);
      await assertLoadRefused(s, { record: "entry", index: 3, reason: /unknown record format 9/ });
    }));

  void test("an entry stored under another index's key is caught by the index cross-check", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 10);
      await s.rawPut(entryKey(7), await s.rawGet(entryKey(8)));
      await assertLoadRefused(s, { record: "entry", index: 7, reason: /stored under this index is entry 8/ });
    }));

  void test("a missing entry in the middle of the log is a gap, not a shorter log", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 3);
      await s.raw(async (db) => db.del(entryKey(7)));
      await assertLoadRefused(s, { record: "entry", index: 7, reason: /missing \(the next stored entry is 8/ });
    }));

  void test("a log that does not start right after the snapshot has a gap at its start", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: undefined, entries: run(6, 9, 2), snapshot: snapshotAt(5, 2) });
      await storage.close();
      await s.raw(async (db) => db.del(entryKey(6)));
      await assertLoadRefused(s, { record: "entry", index: 6, reason: /missing/ });
    }));

  void test("a lost committed tail is detected from the hard state's commit index", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 9);
      await s.raw(async (db) => {
        await db.del(entryKey(10));
        await db.del(entryKey(9));
      });
      await assertLoadRefused(s, { record: "entry", index: 9, reason: /entries through 9 are committed, but the log ends at 8/ });
    }));

  void test("an entry whose term is lower than the one before it is refused", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: undefined, entries: run(1, 3, 2), snapshot: undefined });
      await storage.close();
      // A well-formed record for entry 3 of term 1 (index 3, term 1, kind normal, no data).
      await s.rawPut(entryKey(3), validRecord(new Uint8Array([3, 1, 0, 0])));
      await assertLoadRefused(s, { record: "entry", index: 3, reason: /term 1 follows term 2/ });
    }));

  void test("a key in the entry range that is not an entry key is refused", () =>
    withScratch(async (s) => {
      await seedLog(s, 2, 2);
      await s.rawPut("e/7", validRecord(new Uint8Array([7, 1, 0, 0])));
      await assertLoadRefused(s, { record: "entry", index: undefined, reason: /unexpected key "e\/7"/ });
    }));

  void test("a damaged hard state record is refused", () =>
    withScratch(async (s) => {
      await seedLog(s, 2, 2);
      const record = await s.rawGet("hs");
      record[record.length - 1] ^= 1;
      await s.rawPut("hs", record);
      await assertLoadRefused(s, { record: "hardState", index: undefined, reason: /checksum mismatch/ });
      const storage = await s.open();
      try {
        await assert.rejects(storage.load(), /^StorageCorruptionError: corrupt Raft hard state in /);
      } finally {
        await storage.close();
      }
    }));

  void test("a damaged snapshot record is refused", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: undefined, entries: [], snapshot: snapshotAt(3, 1) });
      await storage.close();
      const record = await s.rawGet("snap");
      record[7] ^= 0x80;
      await s.rawPut("snap", record);
      await assertLoadRefused(s, { record: "snapshot", index: undefined, reason: /checksum mismatch/ });
    }));

  void test("a damaged metadata record is refused when read", () =>
    withScratch(async (s) => {
      const { storage } = await s.restart();
      await storage.putMeta("clusterId", encoder.encode("c-1"));
      await storage.close();
      await s.rawPut("m/clusterId", encoder.encode("garbage!"));
      const reopened = await s.open();
      await assert.rejects(reopened.getMeta("clusterId"), (err: unknown) => {
        assert.ok(err instanceof StorageCorruptionError);
        assert.equal(err.record, "meta");
        assert.ok(err.message.includes(s.dir) && err.message.includes('"clusterId"'), err.message);
        return true;
      });
    }));
});
