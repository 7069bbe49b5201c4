// Leader election (§5.2, §5.4.1), pre-vote and check-quorum (thesis §9.6).

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { RaftNode, bootstrapSnapshot } from "../../src/raft/core/raft.js";
import type { Message, VoteRequest } from "../../src/raft/core/types.js";
import { type ConfigOverrides, Network, messagesOf, nodeConfig, paperState } from "./harness.js";

const ELECTION_TIMEOUT_TICKS = 10;

function voteRequest(from: string, to: string, term: number, lastLogIndex: number, lastLogTerm: number, transfer = false): VoteRequest {
  return { type: "vote", from, to, term, lastLogIndex, lastLogTerm, transfer };
}

/** Steps `m` into `r` and returns the messages it answers with. */
function answer(r: RaftNode, m: Message): readonly Message[] {
  r.step(m);
  const rd = r.ready();
  r.advance();
  return rd.messages;
}

function voteGranted(messages: readonly Message[]): boolean {
  const resp = messages.find((m) => m.type === "voteResp");
  assert.ok(resp !== undefined && resp.type === "voteResp", "expected a vote response");
  return !resp.reject;
}

/** A fresh founding member `a` of {a, b, c}: term 1, no vote, log ending at index 1. */
function freshNode(overrides: ConfigOverrides = {}): RaftNode {
  return new RaftNode(nodeConfig("a", 1, overrides), { snapshot: bootstrapSnapshot(["a", "b", "c"]) });
}

/** Three nodes with `a` elected. */
async function electedCluster(defaults: ConfigOverrides = {}): Promise<Network> {
  const net = await Network.bootstrap(["a", "b", "c"], 3, defaults);
  await net.elect("a");
  return net;
}

void describe("leader election", () => {
  void test("a five-node cluster elects exactly one leader, and every other node follows it", async () => {
    const net = await Network.bootstrap(["n1", "n2", "n3", "n4", "n5"], 42);
    await net.tickUntil(() => net.leaders().length > 0, 10 * ELECTION_TIMEOUT_TICKS);
    // Keep running: a stable cluster stays with that one leader.
    await net.tick(5 * ELECTION_TIMEOUT_TICKS);

    const leaders = net.leaders();
    assert.equal(leaders.length, 1, `leaders: ${leaders.join(", ")}`);
    const leader = leaders[0];
    for (const id of net.ids()) {
      assert.equal(net.node(id).leader, leader, `${id} follows the leader`);
      assert.equal(net.node(id).term, net.node(leader).term, `${id} is in the leader's term`);
    }
  });

  void test("election timeouts are randomized in [electionTimeoutTicks, 2 * electionTimeoutTicks)", () => {
    const timeouts = new Set<number>();
    for (let seed = 0; seed < 30; seed++) {
      const r = new RaftNode(nodeConfig("a", seed), { snapshot: bootstrapSnapshot(["a", "b", "c"]) });
      let ticks = 0;
      while (r.role === "follower") {
        r.tick();
        ticks++;
        assert.ok(ticks < 2 * ELECTION_TIMEOUT_TICKS, `seed ${seed}: no campaign after ${ticks} ticks`);
      }
      assert.ok(ticks >= ELECTION_TIMEOUT_TICKS, `seed ${seed}: campaigned after only ${ticks} ticks`);
      timeouts.add(ticks);
    }
    // Identical timeouts would let nodes split votes forever.
    assert.ok(timeouts.size >= 5, `only ${timeouts.size} distinct timeouts over 30 seeds`);
  });

  void test("a node votes at most once per term", () => {
    const a = freshNode();
    assert.equal(voteGranted(answer(a, voteRequest("b", "a", 2, 1, 1))), true, "the first candidate of term 2 gets the vote");
    assert.equal(voteGranted(answer(a, voteRequest("c", "a", 2, 1, 1))), false, "a second candidate of term 2 is refused");
    assert.equal(voteGranted(answer(a, voteRequest("b", "a", 2, 1, 1))), true, "a repeated request from the same candidate is granted again");
    assert.equal(a.vote, "b");
  });

  void test("with plantedBug grantTwoVotesPerTerm a node grants a second vote in the same term", () => {
    const a = freshNode({ plantedBug: "grantTwoVotesPerTerm" });
    assert.equal(voteGranted(answer(a, voteRequest("b", "a", 2, 1, 1))), true);
    assert.equal(voteGranted(answer(a, voteRequest("c", "a", 2, 1, 1))), true, "the planted bug grants c as well");
  });

  void test("a vote survives a restart: the restarted node still refuses a second candidate of that term", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 5);
    await net.send(voteRequest("b", "a", 2, 1, 1));
    assert.equal(net.peer("a").durable.hardState?.vote, "b", "the vote is durable before the grant leaves");
    await net.restart("a");
    const before = net.sent.length;
    await net.send(voteRequest("c", "a", 2, 1, 1));
    assert.equal(voteGranted(net.sent.slice(before)), false);
  });

  void test("a candidate whose log is behind is refused votes (§5.4.1)", () => {
    // The voter's log ends at index 3 with term 2.
    const voter = (): RaftNode => new RaftNode(nodeConfig("a", 1), paperState(["a", "b", "c"], [1, 1, 2], 2));
    assert.equal(voteGranted(answer(voter(), voteRequest("b", "a", 3, 9, 1))), false, "lower last term, however long");
    assert.equal(voteGranted(answer(voter(), voteRequest("b", "a", 3, 2, 2))), false, "same last term, shorter");
    assert.equal(voteGranted(answer(voter(), voteRequest("b", "a", 3, 3, 2))), true, "same last term, as long");
    assert.equal(voteGranted(answer(voter(), voteRequest("b", "a", 3, 1, 3))), true, "higher last term, however short");
  });

  void test("a vote request from an older term is refused with the voter's term, so its candidate catches up", () => {
    // n4 campaigns in term 3; its one voter, n2, is at term 9 (campaigning in a configuration that
    // leaves n4 out, so it never writes to n4). Silence would leave n4 behind n2's term for good.
    for (const cfg of [{ preVote: false, checkQuorum: true }, { preVote: true, checkQuorum: true }, { preVote: true, checkQuorum: false }]) {
      const n2 = new RaftNode(nodeConfig("n2", 7, cfg), paperState(["n2", "n4"], [1], 9));
      n2.step({ type: "vote", from: "n4", to: "n2", term: 3, lastLogIndex: 1, lastLogTerm: 1, transfer: false });
      const answers = messagesOf(n2.ready().messages, "voteResp", "n2", "n4");
      assert.deepEqual(answers.map((m) => ({ term: m.term, reject: m.reject })), [{ term: 9, reject: true }], JSON.stringify(cfg));
    }
    const n4 = new RaftNode(nodeConfig("n4", 7), paperState(["n2", "n4"], [1], 3));
    n4.step({ type: "voteResp", from: "n2", to: "n4", term: 9, reject: true });
    assert.equal(n4.term, 9, "the candidate adopts the newer term, and campaigns above it next");
  });

  void test("a node that missed committed entries cannot become leader", async () => {
    const net = await electedCluster();
    net.isolate("c");
    await net.propose("a", "x", "y");
    net.heal();
    net.isolate("a");
    // c campaigns first, but b holds entries c lacks and refuses it.
    await net.forceCampaign("c");
    assert.notEqual(net.node("c").role, "leader");
    await net.tickUntil(() => net.leaders().some((id) => id !== "a"), 10 * ELECTION_TIMEOUT_TICKS, ["b", "c"]);
    assert.equal(net.leader(), "b");
    await net.tick(1, ["b"]);
    assert.deepEqual(net.peer("c").appliedTexts(), ["x", "y"], "the committed entries survive the change of leader");
  });
});

void describe("pre-vote", () => {
  void test("a pre-candidate does not increase its term, and asks for votes in the next term", () => {
    const r = freshNode();
    while (r.role === "follower") r.tick();
    assert.equal(r.role, "preCandidate");
    assert.equal(r.term, 1);
    const rd = r.ready();
    assert.equal(rd.hardState, undefined, "nothing about the term or vote changed on disk");
    const requests = messagesOf(rd.messages, "preVote");
    assert.equal(requests.length, 2);
    for (const m of requests) assert.equal(m.term, 2);
  });

  void test("a partitioned node neither raises the cluster's term nor deposes the leader when it rejoins", async () => {
    const net = await electedCluster();
    const term = net.node("a").term;
    net.isolate("c");
    await net.tick(10 * ELECTION_TIMEOUT_TICKS);
    assert.equal(net.node("c").term, term, "failed pre-votes do not move the term");
    assert.equal(net.leader(), "a");

    net.heal();
    await net.tick(5 * ELECTION_TIMEOUT_TICKS);
    assert.equal(net.leader(), "a");
    for (const id of net.ids()) assert.equal(net.node(id).term, term, `term of ${id}`);
    assert.equal(net.node("c").leader, "a");
  });

  void test("without pre-vote, the same rejoining node raises the term and deposes the leader", async () => {
    // The contrast that shows the test above can fail.
    const net = await electedCluster({ preVote: false, checkQuorum: false });
    const term = net.node("a").term;
    net.isolate("c");
    await net.tick(10 * ELECTION_TIMEOUT_TICKS);
    assert.ok(net.node("c").term > term, "c campaigns in ever higher terms");

    net.heal();
    await net.tick(5 * ELECTION_TIMEOUT_TICKS);
    assert.ok(net.node("a").term > term, "a was deposed by c's higher term");
  });
});

void describe("check-quorum", () => {
  void test("a leader that cannot hear a majority for an election timeout steps down", async () => {
    const net = await electedCluster();
    net.isolate("a");
    const ticks = await net.tickUntil(() => net.node("a").role !== "leader", 2 * ELECTION_TIMEOUT_TICKS + 1, ["a"]);
    assert.ok(ticks >= ELECTION_TIMEOUT_TICKS, `stepped down after ${ticks} ticks, before a full election timeout`);
    assert.equal(net.node("a").role, "follower");
    assert.equal(net.node("a").leader, "");
  });

  void test("without check-quorum an isolated leader keeps believing it leads", async () => {
    const net = await electedCluster({ checkQuorum: false });
    net.isolate("a");
    await net.tick(5 * ELECTION_TIMEOUT_TICKS, ["a"]);
    assert.equal(net.node("a").role, "leader");
  });

  void test("a leader that hears a majority keeps leading though one follower is gone", async () => {
    const net = await electedCluster();
    net.isolate("c");
    await net.tick(5 * ELECTION_TIMEOUT_TICKS, ["a", "b"]);
    assert.equal(net.node("a").role, "leader");
  });

  void test("a follower in a live leader's lease ignores vote requests of a higher term", async () => {
    const net = await electedCluster();
    const b = net.node("b");
    const term = b.term;
    const before = net.sent.length;
    await net.send(voteRequest("c", "b", term + 1, 100, term));
    assert.equal(b.term, term, "the request did not move b's term");
    assert.equal(messagesOf(net.sent.slice(before), "voteResp", "b").length, 0, "b did not answer");
    assert.equal(net.leader(), "a");
  });

  void test("a vote request that follows a leadership transfer breaks the lease", async () => {
    const net = await electedCluster();
    const b = net.node("b");
    const term = b.term;
    const before = net.sent.length;
    await net.send(voteRequest("c", "b", term + 1, 100, term, true));
    assert.ok(b.term > term);
    const responses = messagesOf(net.sent.slice(before), "voteResp", "b");
    assert.equal(responses.length, 1);
    assert.equal(responses[0]?.reject, false);
  });

  void test("a node that may not campaign still lets a silent leader's lease lapse, so it can vote (sim seed 4536)", () => {
    // A learner, promoted in a log entry it never received, is needed for the remaining quorum:
    // it must answer a vote even though it never campaigns itself.
    const learner = new RaftNode(nodeConfig("d", 1), {
      snapshot: { metadata: { index: 5, term: 2, conf: { voters: ["a", "b"], learners: ["d"] } }, data: new Uint8Array(0) },
      hardState: { term: 2, vote: "", commit: 5 },
    });
    learner.step({ type: "heartbeat", from: "a", to: "d", term: 2, commit: 5, readContext: "" });
    learner.ready();
    learner.advance();
    // Twice the timeout: past any randomized timeout, so a lease renewed by the timer would still hold.
    for (let i = 0; i < 2 * ELECTION_TIMEOUT_TICKS; i++) learner.tick();
    assert.equal(learner.role, "follower", "a learner never campaigns");
    assert.equal(voteGranted(answer(learner, voteRequest("b", "d", 3, 9, 2))), true);
  });

  void test("a follower whose leader went silent for an election timeout answers vote requests again", async () => {
    const net = await electedCluster();
    net.isolate("a");
    await net.tick(ELECTION_TIMEOUT_TICKS, ["b"]);
    const b = net.node("b");
    const term = b.term;
    const before = net.sent.length;
    await net.send(voteRequest("c", "b", term + 1, 100, term));
    assert.equal(b.term, term + 1);
    assert.equal(messagesOf(net.sent.slice(before), "voteResp", "b").length, 1);
  });
});
