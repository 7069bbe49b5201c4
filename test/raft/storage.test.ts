// What LevelLogStorage does beyond the LogStorage contract (storage_leveldb.test.ts runs that):
// its on-disk layout, that a conflicting suffix and a compacted prefix are really gone from disk,
// which batches are synced, its metadata records and stats, and that damage is refused loudly,
// never skipped. Each test gets a fresh temporary directory, removed afterwards even when it fails.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { Level } from "level";
import { encodeSnapshot } from "../../src/raft/codec.js";
import { LevelLogStorage, StorageCorruptionError, type StorageRecordKind, metaKeyBytesMax, metaValueBytesMax } from "../../src/raft/storage/leveldb.js";
import { RaftInvariantError } from "../../src/raft/core/types.js";
import { type Scratch, withScratch } from "../support/level_scratch.js";
import { NO_CHANGE, applyOp, entryIndexes, run, snapshotAt, storageHistory } from "../support/storage_history.js";

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

void describe("what LevelDB holds", () => {
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

  void test("a snapshot is stored as one record, codec's encodeSnapshot output sealed, whether received or taken locally", () =>
    withScratch(async (s) => {
      // An earlier build, which sealed encodeSnapshot's output, reads it as before.
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: { term: 1, vote: "", commit: 6 }, entries: run(3, 6, 1), snapshot: snapshotAt(2, 1) });
      await storage.close();
      assert.deepEqual(await s.rawGet("snap"), validRecord(encodeSnapshot(snapshotAt(2, 1))));
      const { storage: reopened } = await s.restart();
      await reopened.saveSnapshot(snapshotAt(5, 1));
      await reopened.close();
      assert.deepEqual(await s.rawGet("snap"), validRecord(encodeSnapshot(snapshotAt(5, 1))));
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
  void test("entries that overwrite a shorter suffix delete the conflicting tail from LevelDB", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 5);
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: { term: 2, vote: "b", commit: 5 }, entries: run(6, 7, 2), snapshot: undefined });
      assert.deepEqual(storage.stats().lastIndex, 7);
      await storage.close();
      assert.deepEqual(await s.rawEntryKeys(), [1, 2, 3, 4, 5, 6, 7].map(entryKey), "entries 8..10 are gone from LevelDB");
    }));

  void test("a received snapshot deletes the log it replaces from LevelDB", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 4);
      const { storage } = await s.restart();
      await storage.saveReady({ hardState: { term: 3, vote: "", commit: 20 }, entries: run(21, 22, 3), snapshot: snapshotAt(20, 3) });
      assert.deepEqual(storage.stats(), { entries: 2, firstIndex: 21, lastIndex: 22, bytes: storage.stats().bytes, snapshotIndex: 20 });
      await storage.close();
      assert.deepEqual(await s.rawEntryKeys(), [entryKey(21), entryKey(22)], "entries 1..10 are gone from LevelDB");
    }));

  void test("a compaction deletes the compacted prefix from LevelDB", () =>
    withScratch(async (s) => {
      await seedLog(s, 10, 10);
      const { storage } = await s.restart();
      await storage.saveSnapshot(snapshotAt(6, 1));
      assert.deepEqual(storage.stats(), { entries: 4, firstIndex: 7, lastIndex: 10, bytes: storage.stats().bytes, snapshotIndex: 6 });
      await storage.close();
      // Checked before any load(), which would clean up leftovers itself and hide a missing delete.
      assert.deepEqual(await s.rawEntryKeys(), [7, 8, 9, 10].map(entryKey), "entries 1..6 are gone from LevelDB");
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

  void test("stats() before load() is refused: the log index is not built yet", () =>
    withScratch(async (s) => {
      const storage = await s.open();
      assert.throws(() => storage.stats(), RaftInvariantError);
    }));

  void test("stats kept step by step match the log, and a fresh scan after each restart, through a seeded history", () =>
    withScratch(async (s) => {
      const history = storageHistory({ seed: 2024, steps: 300, options: { compactions: true } });
      let { storage } = await s.restart();
      for (const [i, step] of history.entries()) {
        await applyOp(storage, step.op);
        const snapshotIndex = step.after.snapshot?.metadata.index ?? 0;
        const expected = { entries: step.after.entries.length, firstIndex: snapshotIndex + 1, lastIndex: snapshotIndex + step.after.entries.length, snapshotIndex };
        const { bytes, ...stats } = storage.stats();
        assert.deepEqual(stats, expected, `stats after step ${i + 1}`);
        assert.equal(bytes === 0, step.after.entries.length === 0, `bytes after step ${i + 1}`);
        if (i % 10 === 9) {
          const before = storage.stats();
          ({ storage } = await s.restart(storage));
          assert.deepEqual(storage.stats(), before, `stats kept step by step match a fresh scan after step ${i + 1}`);
        }
      }
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
