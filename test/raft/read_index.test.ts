// Linearizable reads by ReadIndex (thesis §6.4): a read is answered with the commit index only once
// a heartbeat round has shown that a majority still follows the leader, and only after the leader
// has committed an entry of its own term.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { RaftRefusal } from "../../src/raft/core/types.js";
import { Network, messagesOf } from "./harness.js";

const ELECTION_TIMEOUT_TICKS = 10;

async function electedCluster(): Promise<Network> {
  const net = await Network.bootstrap(["a", "b", "c"], 17);
  await net.elect("a");
  await net.propose("a", "x");
  return net;
}

void describe("ReadIndex", () => {
  void test("a leader answers a read only after a heartbeat round confirms a majority still follows it", async () => {
    const net = await electedCluster();
    const a = net.node("a");
    net.drop((m) => m.type === "heartbeatResp");
    a.readIndex("r1");
    await net.stabilize();

    const rounds = messagesOf(net.sent, "heartbeat", "a").filter((m) => m.readContext === "r1");
    assert.equal(rounds.length, 2, "the read started a heartbeat round to both followers");
    assert.deepEqual(net.peer("a").readStates, [], "no answer without acknowledgements");

    net.heal();
    await net.tick(1, ["a"]);
    assert.deepEqual(net.peer("a").readStates, [{ index: a.log.committed, context: "r1" }]);
  });

  void test("one follower's acknowledgement is enough in a cluster of three", async () => {
    const net = await electedCluster();
    net.isolate("c");
    net.node("a").readIndex("r1");
    await net.stabilize();
    assert.equal(net.peer("a").readStates.length, 1);
  });

  void test("a read on a follower is forwarded to the leader and answered with the leader's commit index", async () => {
    const net = await electedCluster();
    net.node("b").readIndex("r2");
    await net.stabilize();

    assert.equal(messagesOf(net.sent, "readIndex", "b", "a").length, 1);
    assert.deepEqual(net.peer("b").readStates, [{ index: net.node("a").log.committed, context: "r2" }]);
    assert.deepEqual(net.peer("a").readStates, [], "the answer goes to the follower, not the leader's own client");
  });

  void test("a read index covers every write committed before the read was asked", async () => {
    const net = await electedCluster();
    const { index } = await net.propose("a", "y");
    net.node("c").readIndex("r3");
    await net.stabilize();
    const read = net.peer("c").readStates[0];
    assert.ok(read !== undefined && read.index >= index, `read index ${read?.index} must cover the write at ${index}`);
  });

  void test("a deposed leader cut off from the majority never answers a read, and reports it failed when it steps down", async () => {
    const net = await electedCluster();
    net.isolate("a");
    net.node("a").readIndex("r4");
    // Meanwhile b and c elect a new leader and commit a write that a stale read would miss.
    await net.tickUntil(() => net.leaders().some((id) => id !== "a"), 10 * ELECTION_TIMEOUT_TICKS, ["b", "c"]);
    const leader = net.leaders().find((id) => id !== "a") as string;
    await net.propose(leader, "newer");
    await net.tick(2 * ELECTION_TIMEOUT_TICKS + 1, ["a"]);

    assert.deepEqual(net.peer("a").readStates, [], "the old leader must not serve the read");
    assert.equal(net.node("a").role, "follower", "check-quorum deposed it");
    assert.deepEqual(net.peer("a").failedReads, ["r4"], "the caller hears that its read failed");
  });

  void test("with plantedBug readWithoutQuorumCheck the deposed leader serves a stale read", async () => {
    // The contrast that shows the test above can fail: answering from the local commit index
    // without a confirmation round returns an index that misses the new leader's write.
    const net = await Network.bootstrap(["a", "b", "c"], 17, { plantedBug: "readWithoutQuorumCheck" });
    await net.elect("a");
    await net.propose("a", "x");
    net.isolate("a");
    await net.tickUntil(() => net.leaders().some((id) => id !== "a"), 10 * ELECTION_TIMEOUT_TICKS, ["b", "c"]);
    const leader = net.leaders().find((id) => id !== "a") as string;
    const { index: newerWrite } = await net.propose(leader, "newer");

    net.node("a").readIndex("stale");
    await net.stabilize();
    const read = net.peer("a").readStates[0];
    assert.ok(read !== undefined && read.index < newerWrite, "the buggy leader answered with an index that misses the newer write");
  });

  void test("a new leader holds reads until it has committed an entry of its own term", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 19);
    // The new leader's appends are lost, so its empty entry of the new term stays uncommitted.
    net.drop((m) => m.type === "append" && m.from === "a");
    await net.elect("a");
    const a = net.node("a");
    const emptyEntryIndex = a.log.lastIndex();
    assert.ok(a.log.committed < emptyEntryIndex);

    a.readIndex("r5");
    await net.stabilize();
    assert.deepEqual(net.peer("a").readStates, []);
    assert.equal(messagesOf(net.sent, "heartbeat", "a").filter((m) => m.readContext === "r5").length, 0,
      "no confirmation round starts before the commit index is known");

    net.heal();
    await net.tick(1, ["a"]);
    const read = net.peer("a").readStates[0];
    assert.ok(read !== undefined, "answered once the entry of its term committed");
    assert.equal(read.context, "r5");
    assert.ok(read.index >= emptyEntryIndex, `read index ${read.index} must cover the leader's first entry ${emptyEntryIndex}`);
  });

  void test("a single-voter leader answers at once", async () => {
    const net = await Network.bootstrap(["solo"], 23);
    await net.elect("solo");
    net.node("solo").readIndex("r6");
    await net.stabilize();
    assert.deepEqual(net.peer("solo").readStates, [{ index: net.node("solo").log.committed, context: "r6" }]);
  });

  void test("a read with no known leader is refused with noLeader", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 29);
    assert.throws(() => net.node("b").readIndex("r7"), (e: unknown) => e instanceof RaftRefusal && e.reason === "noLeader");
  });
  void test("a second read under a context already pending is refused, so one round cannot answer two reads", async () => {
    const net = await electedCluster();
    const a = net.node("a");
    net.drop((m) => m.type === "heartbeatResp");
    a.readIndex("r1");
    await net.stabilize();
    assert.throws(() => a.readIndex("r1"), (err: unknown) => err instanceof RaftRefusal && err.reason === "duplicateRead");
    net.heal();
    await net.tick(1, ["a"]);
    assert.deepEqual(net.peer("a").readStates.map((r) => r.context), ["r1"], "the first read is answered once");
  });

  void test("a follower's read that arrives twice (a duplicated message) is answered once and leaves nothing pending", async () => {
    const net = await electedCluster();
    net.drop((m) => m.type === "heartbeatResp");
    const read = { type: "readIndex", from: "b", to: "a", term: net.node("a").term, context: "b:1" } as const;
    await net.send(read);
    await net.send(read);
    net.heal();
    await net.tick(3, ["a"]);
    assert.equal(messagesOf(net.sent, "readIndexResp", "a", "b").filter((m) => m.context === "b:1").length, 1);
    assert.equal(net.node("a").pendingReadCount, 0, "the copy holds no slot of pendingReadsMax forever");
  });
});
