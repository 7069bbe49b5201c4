// Log compaction and InstallSnapshot (§7): the log before a snapshot is dropped, and a follower
// that needs dropped entries is sent the snapshot instead, then continues from the log.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { SNAPSHOT_DATA_ON_DISK } from "../../src/raft/core/log.js";
import { RaftNode } from "../../src/raft/core/raft.js";
import { RaftInvariantError, type Snapshot } from "../../src/raft/core/types.js";
import { Network, logTerms, messagesOf, nodeConfig, paperState } from "./harness.js";

const ELECTION_TIMEOUT_TICKS = 10;

/** With no catch-up margin, compaction cuts the log at the snapshot: a follower behind it needs the snapshot. */
async function electedCluster(catchUpEntries = 0): Promise<Network> {
  const net = await Network.bootstrap(["a", "b", "c"], 37, { catchUpEntries });
  await net.elect("a");
  return net;
}

void describe("compaction", () => {
  void test("compact() drops the log prefix up to the snapshot index and keeps the rest", async () => {
    const net = await electedCluster();
    await net.propose("a", "p1", "p2", "p3", "p4");
    const a = net.node("a");
    const last = a.log.lastIndex();
    const at = last - 2;
    const termAt = a.log.term(at);

    const snapshot = await net.compact("a", at);
    assert.equal(snapshot.metadata.index, at);
    assert.equal(snapshot.metadata.term, termAt);
    assert.deepEqual(snapshot.metadata.conf.voters, ["a", "b", "c"]);
    assert.equal(a.log.firstIndex(), at + 1);
    assert.equal(a.log.term(at), termAt, "the snapshot still answers for its own index");
    assert.equal(a.log.term(at - 1), undefined, "entries before the snapshot are gone");
    assert.equal(a.log.entryAt(at), undefined);
    assert.equal(a.log.lastIndex(), last);
    assert.ok(a.log.entryAt(at + 1) !== undefined);
  });

  void test("compacting beyond what the state machine applied is an invariant failure", async () => {
    const net = await electedCluster();
    await net.propose("a", "p1");
    const a = net.node("a");
    assert.throws(() => a.compact(a.log.lastIndex() + 1, new Uint8Array(0)), RaftInvariantError);
  });

  void test("a restarted node recovers from its compacted storage", async () => {
    const net = await electedCluster();
    await net.propose("a", "p1", "p2");
    const snapshot = await net.compact("b");
    await net.propose("a", "p3");
    await net.tick(1, ["a"]);
    const disk = net.peer("b").durable;
    assert.equal(disk.snapshot?.metadata.index, snapshot.metadata.index, "b's disk holds the snapshot");
    assert.ok(disk.entries.every((e) => e.index > snapshot.metadata.index), "and no entry it covers");
    await net.restart("b");
    await net.stabilize();
    assert.deepEqual(net.peer("b").appliedTexts(), ["p1", "p2", "p3"]);
  });
});

void describe("a snapshot's bytes kept on disk only", () => {
  void test("a leader that released its snapshot's bytes sends the snapshot marked for the driver to read back", async () => {
    const net = await electedCluster();
    net.isolate("c");
    for (let i = 0; i < 5; i++) await net.propose("a", `p${i}`);
    const snapshot = await net.compact("a");
    const a = net.node("a");
    a.log.releaseSnapshotData(snapshot.metadata.index);
    assert.equal(a.log.snapshot.data, SNAPSHOT_DATA_ON_DISK);
    assert.deepEqual(a.log.snapshot.metadata, snapshot.metadata, "the core keeps what it needs: index, term and configuration");
    net.heal();
    await net.tickUntil(() => net.peer("c").appliedIndex >= snapshot.metadata.index, 2 * ELECTION_TIMEOUT_TICKS, ["a"]);
    // The core can only have handed out the mark, so the bytes that left are the ones the Ready
    // loop read back from a's disk (where compact() wrote them).
    assert.equal(a.log.snapshot.data, SNAPSHOT_DATA_ON_DISK, "the core still holds only the mark");
    const sent = messagesOf(net.sent, "snapshot", "a", "c");
    assert.equal(sent.length, 1);
    assert.deepEqual(sent[0]?.snapshot.metadata, snapshot.metadata);
    assert.notEqual(sent[0].snapshot.data, SNAPSHOT_DATA_ON_DISK, "the mark never leaves the node");
    assert.deepEqual(sent[0].snapshot.data, snapshot.data, "the bytes read back are the state the snapshot was taken of");
    assert.deepEqual(net.peer("c").appliedTexts(), ["p0", "p1", "p2", "p3", "p4"], "c restored the state from them");
  });

  void test("releasing names one snapshot: a newer one keeps its bytes", async () => {
    const net = await electedCluster();
    await net.propose("a", "p1", "p2");
    const older = await net.compact("a", net.peer("a").appliedIndex - 1);
    await net.compact("a");
    const a = net.node("a");
    a.log.releaseSnapshotData(older.metadata.index);
    assert.notEqual(a.log.snapshot.data, SNAPSHOT_DATA_ON_DISK);
    assert.ok(a.log.snapshot.data.byteLength > 0);
  });

  void test("a received snapshot keeps its bytes until it is persisted", () => {
    const voters = ["a", "b", "c"];
    const b = new RaftNode(nodeConfig("b", 1), paperState(voters, [1, 1], 1));
    const data = new TextEncoder().encode("the state at 5");
    const snapshot: Snapshot = { metadata: { index: 5, term: 1, conf: { voters, learners: [] } }, data };
    b.step({ type: "snapshot", from: "a", to: "b", term: 1, snapshot });
    b.log.releaseSnapshotData(5);
    assert.equal(b.log.snapshot.data, data, "not yet on disk: still needed for the Ready");
    const rd = b.ready();
    assert.equal(rd.snapshot?.data, data);
    b.advance();
    b.log.releaseSnapshotData(5);
    assert.equal(b.log.snapshot.data, SNAPSHOT_DATA_ON_DISK);
  });
});

void describe("InstallSnapshot", () => {
  void test("a follower too far behind receives a snapshot and catches up", async () => {
    const net = await electedCluster();
    net.isolate("c");
    for (let i = 0; i < 10; i++) await net.propose("a", `p${i}`);
    await net.compact("a");
    await net.compact("b");
    const compactedTo = net.node("a").log.snapshotIndex();
    net.heal();
    await net.tickUntil(() => net.peer("c").appliedIndex >= compactedTo, 2 * ELECTION_TIMEOUT_TICKS, ["a"]);

    const snapshots = messagesOf(net.sent, "snapshot", "a", "c");
    assert.equal(snapshots.length, 1);
    assert.equal(snapshots[0]?.snapshot.metadata.index, compactedTo);
    const c = net.node("c");
    assert.equal(c.log.snapshotIndex(), compactedTo);
    assert.deepEqual(net.peer("c").appliedTexts(), Array.from({ length: 10 }, (_, i) => `p${i}`));
    assert.equal(net.peer("c").durable.snapshot?.metadata.index, compactedTo, "the snapshot is durable");

    // Afterwards c is an ordinary follower fed by appends.
    assert.equal(net.node("a").progressOf("c")?.state, "replicate");
    await net.propose("a", "after");
    await net.tick(1, ["a"]);
    assert.deepEqual(logTerms(c), logTerms(net.node("a")));
    assert.equal(net.peer("c").appliedTexts().at(-1), "after");
  });

  void test("with a catch-up margin, a follower a little behind the snapshot catches up by append, without a snapshot", async () => {
    const net = await electedCluster(20);
    net.isolate("c");
    for (let i = 0; i < 10; i++) await net.propose("a", `p${i}`);
    await net.compact("a");
    const compactedTo = net.node("a").log.snapshotIndex();
    assert.ok(net.node("a").log.firstIndex() <= net.node("c").log.lastIndex(), "a kept the entries c is missing");
    net.heal();
    await net.tickUntil(() => net.peer("c").appliedIndex >= compactedTo, 2 * ELECTION_TIMEOUT_TICKS, ["a"]);
    assert.equal(messagesOf(net.sent, "snapshot", "a", "c").length, 0);
    assert.deepEqual(net.peer("c").appliedTexts(), Array.from({ length: 10 }, (_, i) => `p${i}`));
  });

  void test("the catch-up margin is bounded by bytes as well as entries", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 37, { catchUpEntries: 1_000, catchUpBytesMax: 10 });
    await net.elect("a");
    for (let i = 0; i < 10; i++) await net.propose("a", `entry-${i}`);
    await net.compact("a");
    const log = net.node("a").log;
    // Each payload is 7 bytes: one entry fits in 10 bytes, two do not.
    assert.equal(log.snapshotIndex() - log.firstIndex() + 1, 1);
  });

  void test("a snapshot whose transfer failed is sent again", async () => {
    const net = await electedCluster();
    net.isolate("c");
    for (let i = 0; i < 5; i++) await net.propose("a", `p${i}`);
    await net.compact("a");
    net.heal();
    let snapshotsLost = 0;
    net.drop((m) => m.type === "snapshot" && snapshotsLost++ === 0);
    await net.tickUntil(() => net.peer("c").appliedTexts().length === 5, 2 * ELECTION_TIMEOUT_TICKS, ["a"]);

    assert.equal(messagesOf(net.sent, "snapshot", "a", "c").length, 2, "one lost, one delivered");
  });

  void test("a follower that already holds the snapshot's last entry keeps the log after it, commits, and acknowledges only its commit index", () => {
    // A snapshot can arrive after the follower got the same entries by append: it must not throw
    // away entries past the snapshot that it already holds. But those entries may be another
    // leader's, so the acknowledgement covers only what is committed (as etcd's does).
    const voters = ["a", "b", "c"];
    const b = new RaftNode(nodeConfig("b", 1), paperState(voters, [1, 1, 1, 1], 1));
    const snapshot: Snapshot = { metadata: { index: 3, term: 1, conf: { voters, learners: [] } }, data: new Uint8Array(0) };
    b.step({ type: "snapshot", from: "a", to: "b", term: 1, snapshot });

    assert.equal(b.log.snapshotIndex(), 0, "no restore");
    assert.equal(b.log.lastIndex(), 4, "entry 4 survives");
    assert.equal(b.log.committed, 3);
    const resp = messagesOf(b.ready().messages, "appendResp", "b", "a")[0];
    assert.ok(resp !== undefined && !resp.reject);
    assert.equal(resp.index, 3, "the commit index, not the last index 4");
  });

  void test("a follower that already committed past a snapshot ignores it and reports its commit index", async () => {
    const net = await electedCluster();
    await net.propose("a", "p1", "p2", "p3");
    await net.tick(1, ["a"]);
    const a = net.node("a");
    const snapshot = await net.compact("a", a.log.committed - 1);
    const b = net.node("b");
    const before = net.sent.length;
    await net.send({ type: "snapshot", from: "a", to: "b", term: a.term, snapshot });

    assert.equal(b.log.snapshotIndex(), 1, "b kept its log");
    const resp = messagesOf(net.sent.slice(before), "appendResp", "b", "a")[0];
    assert.equal(resp?.index, b.log.committed);
  });
});
