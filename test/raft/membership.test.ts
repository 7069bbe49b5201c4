// Membership changes, one node at a time (confchange.ts): learners, promotion, removal, and the
// rule that one change must apply before the next is proposed.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { RaftNode, bootstrapSnapshot } from "../../src/raft/core/raft.js";
import { type ConfChange, type Entry, RaftRefusal, type RefusalReason } from "../../src/raft/core/types.js";
import { Network, bytes, logTerms, messagesOf, nodeConfig, paperState } from "./harness.js";

const ELECTION_TIMEOUT_TICKS = 10;

async function electedCluster(seed = 41): Promise<Network> {
  const net = await Network.bootstrap(["a", "b", "c"], seed);
  await net.elect("a");
  return net;
}

/** Proposes `change` on the leader `a` and lets it commit and apply everywhere. */
async function change(net: Network, c: ConfChange): Promise<void> {
  net.node("a").proposeConfChange(c);
  await net.stabilize();
  await net.tick(1, ["a"]);
}

/** A cluster {a, b, c} led by `a`, with `d` added as a learner that has caught up. */
async function clusterWithLearner(): Promise<Network> {
  const net = await electedCluster();
  await net.propose("a", "before-d");
  await net.add("d");
  await change(net, { type: "addLearner", node: "d" });
  return net;
}

function refusal(reason: RefusalReason): (e: unknown) => boolean {
  return (e: unknown) => e instanceof RaftRefusal && e.reason === reason;
}

/**
 * {a, c} led by a: c holds "remove a" and acknowledged it, so a commits and applies it, but c never
 * hears that it committed (a's appends and heartbeats to c are dropped until the network heals),
 * and a also holds x, which c lacks.
 */
async function removalUnheardByLastFollower(): Promise<{ net: Network; c: RaftNode }> {
  const net = await Network.bootstrap(["a", "b", "c"], 41, { messageBytesMax: 1 });
  await net.elect("a");
  await change(net, { type: "remove", node: "b" });
  const a = net.node("a");
  const { index: removal } = a.proposeConfChange({ type: "remove", node: "a" });
  a.propose([bytes("x")]);
  net.drop((m) => m.from === "a" && m.to === "c" &&
    ((m.type === "append" && (m.commit >= removal || m.entries.some((e) => e.index > removal))) || (m.type === "heartbeat" && m.commit >= removal)));
  await net.stabilize();
  assert.deepEqual(a.conf.voters, ["c"], "a applied its removal");
  const c = net.node("c");
  assert.equal(c.log.lastIndex(), removal, "c holds the removal, not x");
  assert.ok(c.log.committed < removal, "c does not know the removal committed");
  return { net, c };
}

void describe("learners", () => {
  void test("a new learner receives the whole log", async () => {
    const net = await clusterWithLearner();
    for (const id of ["a", "b", "c", "d"]) {
      assert.deepEqual(net.node(id).conf, { voters: ["a", "b", "c"], learners: ["d"] }, `conf on ${id}`);
    }
    await net.propose("a", "after-d");
    await net.tick(1, ["a"]);
    assert.deepEqual(logTerms(net.node("d")), logTerms(net.node("a")));
    assert.deepEqual(net.peer("d").appliedTexts(), ["before-d", "after-d"]);
  });

  void test("a learner is not counted toward the commit quorum", async () => {
    const net = await clusterWithLearner();
    net.isolate("b");
    net.isolate("c");
    const { index } = await net.propose("a", "needs-a-voter");
    await net.tick(2, ["a"]);
    assert.ok(net.node("d").log.lastIndex() >= index, "the learner holds the entry");
    assert.ok(net.node("a").log.committed < index, "leader plus learner is not a majority of three voters");
  });

  void test("a learner never campaigns and is never asked for its vote", async () => {
    const net = await clusterWithLearner();
    net.isolate("a");
    const before = net.sent.length;
    await net.tick(5 * ELECTION_TIMEOUT_TICKS, ["b", "c", "d"]);
    assert.equal(net.node("d").role, "follower");
    assert.equal(net.sent.slice(before).filter((m) => m.from === "d" && (m.type === "vote" || m.type === "preVote")).length, 0);
    assert.equal(net.sent.slice(before).filter((m) => m.to === "d" && (m.type === "vote" || m.type === "preVote")).length, 0);
    assert.ok(net.leaders().some((id) => id === "b" || id === "c"), "the voters elected a leader without d");
  });

  void test("a promoted learner becomes a voter that counts toward the quorum", async () => {
    const net = await clusterWithLearner();
    await change(net, { type: "promote", node: "d" });
    for (const id of ["a", "b", "c", "d"]) {
      assert.deepEqual(net.node(id).conf, { voters: ["a", "b", "c", "d"], learners: [] }, `conf on ${id}`);
    }
    // Four voters need three: a, b and d commit only because d now counts.
    net.isolate("c");
    const { index } = await net.propose("a", "with-d");
    await net.tick(1, ["a"]);
    assert.ok(net.node("a").log.committed >= index);
    // And a and d alone are not enough.
    net.isolate("b");
    const second = await net.propose("a", "two-of-four");
    await net.tick(1, ["a"]);
    assert.ok(net.node("a").log.committed < second.index);
  });
});

void describe("removal", () => {
  void test("a removed follower no longer receives appends", async () => {
    const net = await electedCluster();
    await change(net, { type: "remove", node: "c" });
    for (const id of ["a", "b"]) assert.deepEqual(net.node(id).conf, { voters: ["a", "b"], learners: [] });
    assert.equal(net.node("a").progressOf("c"), undefined);

    const before = net.sent.length;
    await net.propose("a", "after-c");
    await net.tick(2, ["a"]);
    assert.equal(net.sent.slice(before).filter((m) => m.to === "c").length, 0);
    assert.deepEqual(net.peer("b").appliedTexts(), ["after-c"]);
  });

  void test("a leader that removes itself hands leadership to a remaining voter, takes no proposals meanwhile, and never campaigns again", async () => {
    const net = await electedCluster();
    const a = net.node("a");
    await change(net, { type: "remove", node: "a" });
    const removedAt = net.sent.length;
    assert.deepEqual(a.conf.voters, ["b", "c"]);
    assert.throws(() => a.propose([bytes("late")]), refusal("notLeader"), "a removed leader refuses new proposals");

    await net.tickUntil(() => net.leaders().some((id) => id !== "a"), 3 * ELECTION_TIMEOUT_TICKS, ["a", "b", "c"]);
    const leader = net.leader();
    assert.ok(leader === "b" || leader === "c");
    assert.ok(messagesOf(net.sent.slice(removedAt), "timeoutNow", "a").length > 0, "a handed over with TimeoutNow");
    await net.tick(5 * ELECTION_TIMEOUT_TICKS);
    assert.equal(a.role, "follower");
    const campaigns = net.sent.slice(removedAt).filter((m) => m.from === "a" && (m.type === "preVote" || m.type === "vote"));
    assert.equal(campaigns.length, 0, "a removed node does not campaign");

    const { index } = await net.propose(leader, "without-a");
    await net.tick(1, [leader]);
    assert.ok(net.node(leader).log.committed >= index);
  });

  void test("a leader that removes itself, with entries its last follower lacks, still leaves a leader behind", async () => {
    // Had a stepped down at once, c would still count a as a voter, and a would refuse it its
    // vote (a's log is longer): no leader, ever. The simulator found this (seed 2027).
    const { net, c } = await removalUnheardByLastFollower();
    net.heal();
    await net.tickUntil(() => c.role === "leader", 5 * ELECTION_TIMEOUT_TICKS, ["a", "c"]);
    await net.tick(2, ["c"]);
    assert.deepEqual(c.conf.voters, ["c"], "c applied the removal once it led");
    assert.ok(net.peer("c").appliedTexts().includes("x"), "x, which only a held, was not lost");
  });

  void test("a leader that removes itself and crashes before it hands over still leaves a leader behind: a refused vote tells the candidate what committed", async () => {
    // As above, but a is killed right after it applies its removal, so it never hands over, and
    // restarts as a removed node. c still counts a as a voter and needs its vote; a refuses it
    // (its log is longer). Only a knows the removal committed. The simulator found this (seed 1892).
    const { net, c } = await removalUnheardByLastFollower();
    await net.restart("a");
    net.heal();
    assert.deepEqual(c.conf.voters, ["a", "c"]);

    await net.tickUntil(() => c.role === "leader", 10 * ELECTION_TIMEOUT_TICKS, ["a", "c"]);
    assert.deepEqual(c.conf.voters, ["c"], "c learned the removal committed, applied it, and won alone");
    const { index } = await net.propose("c", "after");
    await net.tick(1, ["c"]);
    assert.ok(c.log.committed >= index, "c commits alone");
  });
});

void describe("one change at a time", () => {
  void test("a second membership change is refused with confChangePending while the first is unapplied", async () => {
    const net = await electedCluster();
    const a = net.node("a");
    a.proposeConfChange({ type: "addLearner", node: "d" });
    assert.throws(() => a.proposeConfChange({ type: "addLearner", node: "e" }), refusal("confChangePending"));
    await net.stabilize();
    assert.doesNotThrow(() => a.proposeConfChange({ type: "addLearner", node: "e" }));
  });

  void test("a new leader refuses membership changes until it has applied the entries it inherited", async () => {
    // a's log holds entries of earlier terms that nobody committed; one of them could be a change.
    const voters = ["a", "b", "c"];
    const net = new Network(43);
    await net.add("a", paperState(voters, [1, 1, 2], 2));
    await net.add("b", paperState(voters, [1], 1));
    await net.add("c", paperState(voters, [1], 1));
    net.drop((m) => m.type === "append" && m.from === "a");
    await net.elect("a");
    const a = net.node("a");
    assert.throws(() => a.proposeConfChange({ type: "addLearner", node: "d" }), refusal("confChangePending"));

    net.heal();
    await net.tick(1, ["a"]);
    assert.equal(a.log.applied, a.log.lastIndex());
    assert.doesNotThrow(() => a.proposeConfChange({ type: "addLearner", node: "d" }));
  });

  void test("an invalid change is refused with invalidConfChange", async () => {
    const net = await electedCluster();
    const a = net.node("a");
    assert.throws(() => a.proposeConfChange({ type: "promote", node: "b" }), refusal("invalidConfChange"));
    assert.throws(() => a.proposeConfChange({ type: "remove", node: "zz" }), refusal("invalidConfChange"));
    assert.throws(() => a.proposeConfChange({ type: "addLearner", node: "c" }), refusal("invalidConfChange"));
  });

  void test("a node with a committed but unapplied membership change does not campaign", () => {
    // Node a recovers with a committed, not yet applied change at index 2: it cannot know which
    // voters to ask until it applies it.
    const snapshot = bootstrapSnapshot(["a", "b", "c"]);
    const entries: Entry[] = [{ index: 2, term: 1, type: "confChange", change: { type: "remove", node: "c" } }];
    const a = new RaftNode(nodeConfig("a", 1), { snapshot, entries, hardState: { term: 1, vote: "", commit: 2 }, applied: 1 });

    for (let i = 0; i < 3 * ELECTION_TIMEOUT_TICKS; i++) a.tick();
    assert.equal(a.role, "follower");

    // Once applied, the timeout fires as usual, and the campaign asks only the new voters.
    const rd = a.ready();
    assert.equal(rd.committedEntries.length, 1);
    a.advance();
    assert.deepEqual(a.conf.voters, ["a", "b"]);
    for (let i = 0; i < 2 * ELECTION_TIMEOUT_TICKS && a.role === "follower"; i++) a.tick();
    assert.equal(a.role, "preCandidate");
    assert.deepEqual(messagesOf(a.ready().messages, "preVote").map((m) => m.to), ["b"]);
  });
});
