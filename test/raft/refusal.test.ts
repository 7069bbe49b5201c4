// The core never drops a proposal silently: it either accepts it, with the index and term it will
// commit at if it commits, or throws a RaftRefusal that says why and whom to ask instead.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { RaftRefusal, type RefusalReason } from "../../src/raft/core/types.js";
import { Network, bytes } from "./harness.js";

function refusal(reason: RefusalReason, leaderHint: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof RaftRefusal, `expected a RaftRefusal, got ${String(e)}`);
    assert.equal(e.reason, reason);
    assert.equal(e.leaderHint, leaderHint);
    assert.ok(e.message.length > 0, "a refusal says what to do");
    return true;
  };
}

void describe("refusals", () => {
  void test("a proposal on a follower is refused with notLeader and names the leader", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 47);
    await net.elect("a");
    assert.throws(() => net.node("b").propose([bytes("x")]), refusal("notLeader", "a"));
    assert.throws(() => net.node("b").proposeConfChange({ type: "remove", node: "c" }), refusal("notLeader", "a"));
  });

  void test("a proposal with no known leader is refused with notLeader and an empty hint", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 47);
    assert.throws(() => net.node("b").propose([bytes("x")]), refusal("notLeader", ""));
  });

  void test("a proposal on a candidate is refused, not queued", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 47);
    net.isolate("a");
    await net.campaign("a");
    assert.equal(net.node("a").role, "preCandidate");
    assert.throws(() => net.node("a").propose([bytes("x")]), refusal("notLeader", ""));
  });

  void test("a leader holding uncommittedBytesMax of uncommitted entries refuses more with tooMuchUncommitted until commits catch up", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 53, { uncommittedBytesMax: 100 });
    await net.elect("a");
    net.isolate("b");
    net.isolate("c");
    await net.propose("a", "x".repeat(60));
    assert.throws(() => net.node("a").propose([bytes("y".repeat(60))]), refusal("tooMuchUncommitted", "a"));
    // Smaller proposals that still fit are taken.
    await assert.doesNotReject(net.propose("a", "z".repeat(40)));

    net.heal();
    await net.tick(1, ["a"]);
    assert.equal(net.node("a").log.committed, net.node("a").log.lastIndex());
    await assert.doesNotReject(net.propose("a", "y".repeat(60)), "commits released the budget");
  });

  void test("a single proposal larger than uncommittedBytesMax is taken when nothing else is uncommitted", async () => {
    // Otherwise such an entry could never be proposed at all.
    const net = await Network.bootstrap(["a", "b", "c"], 53, { uncommittedBytesMax: 100 });
    await net.elect("a");
    await assert.doesNotReject(net.propose("a", "x".repeat(500)));
  });

  void test("every accepted proposal commits at the index and term that propose() returned", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 59);
    await net.elect("a");
    const accepted: { index: number; term: number; text: string }[] = [];
    for (let i = 0; i < 20; i++) {
      const text = `w${i}`;
      const { index, term } = net.node("a").propose([bytes(text)]);
      accepted.push({ index, term, text });
      if (i % 3 === 0) await net.stabilize();
    }
    await net.stabilize();
    await net.tick(1, ["a"]);
    for (const id of net.ids()) {
      const applied = net.peer(id).applied;
      for (const want of accepted) {
        assert.deepEqual(applied.find((x) => x.index === want.index), want, `${id} at index ${want.index}`);
      }
    }
  });
});
