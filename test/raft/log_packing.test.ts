// Applied entries are packed into segments (log.ts): whatever the core reads back from a packed
// segment, by index, by term or as a slice, is exactly the entry it appended, and compaction,
// truncation and restore keep the log's bounds as they were.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { runSimulation } from "../../chaos/sim/simulator.js";
import { RaftLog, logPacking } from "../../src/raft/core/log.js";
import { type Entry, RaftInvariantError, type Snapshot } from "../../src/raft/core/types.js";

const SEGMENT_ENTRIES = 4;
const voters = ["a", "b", "c"];

function snapshotAt(index: number, term: number): Snapshot {
  return { metadata: { index, term, conf: { voters, learners: [] } }, data: new Uint8Array([index % 256]) };
}

/** Entries from..to: a membership change every seventh, empty payloads every fifth, terms rising. */
function entries(from: number, to: number, termOf = (i: number) => 1 + Math.floor(i / 10)): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) {
    if (i % 7 === 0) out.push({ index: i, term: termOf(i), type: "confChange", change: { type: "addLearner", node: `n${i}`, context: `10.0.0.${i}:7000` } });
    else out.push({ index: i, term: termOf(i), type: "normal", data: new TextEncoder().encode(i % 5 === 0 ? "" : `payload ${i}`) });
  }
  return out;
}

/** A log whose segments hold SEGMENT_ENTRIES entries, as the simulator test below uses too. */
function withSmallSegments<T>(fn: () => T): T {
  const saved = logPacking.segmentEntries;
  logPacking.segmentEntries = SEGMENT_ENTRIES;
  try {
    return fn();
  } finally {
    logPacking.segmentEntries = saved;
  }
}

function applied(from: number, to: number, through: number): RaftLog {
  const log = withSmallSegments(() => new RaftLog(snapshotAt(from - 1, 1), entries(from, to), to, from - 1));
  log.appliedTo(through);
  return log;
}

void describe("packed applied entries", () => {
  void test("read back exactly: entries, terms, slices and byte bounds, membership changes included", () => {
    const all = entries(1, 40);
    const log = applied(1, 40, 30);
    for (const e of all) {
      assert.deepEqual(log.entryAt(e.index), e, `entry ${e.index}`);
      assert.equal(log.term(e.index), e.term);
    }
    assert.deepEqual(log.slice(3, 41, Number.MAX_SAFE_INTEGER), all.slice(2));
    const bounded = log.slice(9, 41, 20);
    assert.ok(bounded !== undefined && bounded.length >= 1 && bounded.length < 32);
    assert.deepEqual(bounded, all.slice(8, 8 + bounded.length));
    assert.equal(log.lastIndex(), 40);
    assert.deepEqual(log.unstableEntries(), [], "everything given at start is durable");
  });

  void test("a new log packs what was applied before a restart", () => {
    const log = withSmallSegments(() => new RaftLog(snapshotAt(0, 1), entries(1, 20), 20, 0));
    assert.deepEqual(log.slice(1, 21, Number.MAX_SAFE_INTEGER), entries(1, 20));
    log.appliedTo(20);
    assert.deepEqual(log.slice(1, 21, Number.MAX_SAFE_INTEGER), entries(1, 20));
  });

  void test("compaction inside a segment, at its end and past every segment keeps exactly the entries after it", () => {
    const all = entries(1, 40);
    const log = applied(1, 40, 36);
    for (const at of [6, 8, 13, 36]) {
      log.compact(snapshotAt(at, all[at - 1].term), at);
      assert.equal(log.firstIndex(), at + 1);
      assert.equal(log.entryAt(at), undefined);
      assert.equal(log.term(at), all[at - 1].term, "the compaction point answers for its own index");
      assert.equal(log.term(at - 1), undefined);
      assert.equal(log.slice(at, 41, Number.MAX_SAFE_INTEGER), undefined, "compacted");
      assert.deepEqual(log.slice(at + 1, 41, Number.MAX_SAFE_INTEGER), all.slice(at));
    }
    log.appliedTo(40);
    assert.deepEqual(log.slice(37, 41, Number.MAX_SAFE_INTEGER), all.slice(36));
  });

  void test("a follower overwrites a conflicting unapplied suffix and keeps its packed entries", () => {
    const log = withSmallSegments(() => new RaftLog(snapshotAt(0, 1), entries(1, 20), 12, 0));
    log.appliedTo(12);
    const replacement = entries(15, 22, () => 9);
    assert.equal(log.maybeAppend(14, log.term(14) as number, 22, replacement), 22);
    assert.deepEqual(log.slice(1, 23, Number.MAX_SAFE_INTEGER), [...entries(1, 14), ...replacement]);
    assert.equal(log.stableIndex, 14, "the overwritten suffix is no longer durable");
    assert.deepEqual(log.unstableEntries(), replacement);
  });

  void test("overwriting an applied entry is refused as the bug it would be", () => {
    const log = withSmallSegments(() => new RaftLog(snapshotAt(0, 1), entries(1, 20), 20, 0));
    log.appliedTo(20);
    assert.throws(() => log.maybeAppend(4, log.term(4) as number, 20, entries(5, 6, () => 99)), RaftInvariantError);
  });

  void test("a snapshot from the leader replaces packed and unpacked entries alike", () => {
    const log = withSmallSegments(() => new RaftLog(snapshotAt(0, 1), entries(1, 20), 12, 0));
    log.appliedTo(12);
    log.restore(snapshotAt(30, 5));
    assert.equal(log.lastIndex(), 30);
    assert.equal(log.entryAt(12), undefined);
    log.append(entries(31, 40, () => 5));
    assert.deepEqual(log.slice(31, 41, Number.MAX_SAFE_INTEGER), entries(31, 40, () => 5));
  });

  void test("simulated seeds with four-entry segments break no invariant", async () => {
    // Each seed packs and compacts hundreds of four-entry segments.
    const saved = logPacking.segmentEntries;
    logPacking.segmentEntries = SEGMENT_ENTRIES;
    try {
      for (let seed = 1; seed <= 25; seed++) {
        const r = await runSimulation({ seed });
        assert.deepEqual(r.violations, [], `seed ${seed}`);
      }
    } finally {
      logPacking.segmentEntries = saved;
    }
  });
  void test("compaction may keep a catch-up margin: entries at and below the new snapshot stay readable down to the compaction point", () => {
    const all = entries(1, 40);
    const log = applied(1, 40, 36);
    log.compact(snapshotAt(30, all[29].term), 20);
    assert.equal(log.snapshotIndex(), 30, "the latest snapshot");
    assert.equal(log.firstIndex(), 21, "the log starts after the compaction point");
    assert.equal(log.term(20), all[19].term);
    assert.equal(log.term(19), undefined);
    assert.deepEqual(log.slice(21, 41, Number.MAX_SAFE_INTEGER), all.slice(20), "a follower behind the snapshot is caught up by append");
    assert.equal(log.slice(20, 41, Number.MAX_SAFE_INTEGER), undefined);
  });
});
