// Leadership transfer (thesis §3.10): the leader brings the transferee's log up to date, then tells
// it to campaign at once with TimeoutNow; meanwhile it refuses proposals so the target stays caught up.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { RaftRefusal, type RefusalReason } from "../../src/raft/core/types.js";
import { Network, messagesOf } from "./harness.js";

const ELECTION_TIMEOUT_TICKS = 10;

async function electedCluster(): Promise<Network> {
  const net = await Network.bootstrap(["a", "b", "c"], 31);
  await net.elect("a");
  await net.propose("a", "x");
  return net;
}

function refusal(reason: RefusalReason, leaderHint?: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof RaftRefusal, `expected a RaftRefusal, got ${String(e)}`);
    assert.equal(e.reason, reason);
    if (leaderHint !== undefined) assert.equal(e.leaderHint, leaderHint);
    return true;
  };
}

void describe("leadership transfer", () => {
  void test("leadership moves to a caught-up follower, which wins the next term at once", async () => {
    const net = await electedCluster();
    const term = net.node("a").term;
    net.node("a").transferLeadership("b");
    await net.stabilize();

    assert.equal(net.leader(), "b");
    assert.equal(net.node("b").term, term + 1);
    assert.equal(net.node("a").role, "follower");
    assert.equal(net.node("a").leader, "b");
    assert.equal(messagesOf(net.sent, "timeoutNow", "a", "b").length, 1);
  });

  void test("leadership moves to a lagging follower only after its log has caught up", async () => {
    const net = await electedCluster();
    net.isolate("c");
    await net.propose("a", "p1", "p2", "p3");
    net.heal();
    const a = net.node("a");
    const lastIndex = a.log.lastIndex();
    assert.ok((a.progressOf("c")?.match ?? 0) < lastIndex, "c is behind when the transfer starts");

    a.transferLeadership("c");
    await net.tickUntil(() => net.node("c").role === "leader", ELECTION_TIMEOUT_TICKS, ["a"]);

    // TimeoutNow went out only once c acknowledged the leader's last index.
    const timeoutNowAt = net.sent.findIndex((m) => m.type === "timeoutNow" && m.to === "c");
    const caughtUpAt = net.sent.findIndex((m) => m.type === "appendResp" && m.from === "c" && !m.reject && m.index >= lastIndex);
    assert.ok(caughtUpAt >= 0 && caughtUpAt < timeoutNowAt, "c acknowledged the whole log before it was told to campaign");
    await net.tick(1, ["c"]);
    assert.deepEqual(net.peer("c").appliedTexts(), ["x", "p1", "p2", "p3"]);
  });

  void test("a leader refuses proposals with transferInProgress while a transfer is under way, and names the transferee", async () => {
    const net = await electedCluster();
    net.isolate("c");
    await net.propose("a", "p1");
    const a = net.node("a");
    a.transferLeadership("c");
    await net.stabilize();

    assert.throws(() => a.propose([new Uint8Array([1])]), refusal("transferInProgress", "c"));
    assert.throws(() => a.proposeConfChange({ type: "remove", node: "b" }), refusal("transferInProgress", "c"));
  });

  void test("a transfer that cannot finish within an election timeout is abandoned and proposals are taken again", async () => {
    const net = await electedCluster();
    net.isolate("c");
    const a = net.node("a");
    a.transferLeadership("c");
    await net.tick(ELECTION_TIMEOUT_TICKS, ["a", "b"]);

    assert.equal(a.role, "leader");
    assert.equal(a.leadTransferee, "");
    await assert.doesNotReject(net.propose("a", "after"));
  });

  void test("leadership cannot be transferred to a learner (notVoter)", async () => {
    const net = await electedCluster();
    await net.add("d");
    net.node("a").proposeConfChange({ type: "addLearner", node: "d" });
    await net.stabilize();
    assert.throws(() => net.node("a").transferLeadership("d"), refusal("notVoter"));
    assert.equal(net.node("a").leadTransferee, "");
  });

  void test("only the leader can transfer leadership (notLeader)", async () => {
    const net = await electedCluster();
    assert.throws(() => net.node("b").transferLeadership("c"), refusal("notLeader", "a"));
  });
});
