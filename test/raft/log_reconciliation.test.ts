// Figure 7 of the Raft paper: a leader for term 8 meets followers whose logs are missing entries
// (a, b), hold extra uncommitted entries (c, d), or both (e, f). AppendEntries' consistency check
// must bring every one of them into agreement with the leader, and the follower's reject hint
// (fast backtracking) must get there in a few round trips rather than one per index.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Network, logTerms, messagesOf, paperState } from "./harness.js";

/** The leader's log in Figure 7 (indexes 1..10); it campaigns from term 7 into term 8. */
const LEADER_TERMS = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];

/** Followers (a)-(f) of Figure 7, each with the term it last saw. */
const FIGURE_7 = {
  a: { terms: [1, 1, 1, 4, 4, 5, 5, 6, 6], term: 6 },
  b: { terms: [1, 1, 1, 4], term: 4 },
  c: { terms: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], term: 6 },
  d: { terms: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], term: 7 },
  e: { terms: [1, 1, 1, 4, 4, 4, 4], term: 4 },
  f: { terms: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], term: 3 },
} as const;

/** What every log must hold once reconciled: the leader's entries and its empty entry of term 8. */
const AGREED_TERMS = [...LEADER_TERMS, 8];
const LEADER_TEXTS = LEADER_TERMS.map((term, i) => `${i + 1}@${term}`);

function rejectionsFrom(net: Network, follower: string): number {
  return messagesOf(net.sent, "appendResp", follower).filter((m) => m.reject).length;
}

void describe("Figure 7: log reconciliation", () => {
  void test("a leader in term 8 brings followers (a)-(f) into agreement with its log", async () => {
    const voters = ["leader", ...Object.keys(FIGURE_7)];
    const net = new Network(7);
    await net.add("leader", paperState(voters, LEADER_TERMS, 7));
    for (const [id, f] of Object.entries(FIGURE_7)) await net.add(id, paperState(voters, f.terms, f.term));

    // (c) and (d) hold logs more up to date than the leader's and refuse it; (a), (b), (e) and
    // (f) are enough for a majority of seven.
    await net.elect("leader");
    assert.equal(net.node("leader").term, 8);
    // Followers that caught up last learn the final commit index from the next heartbeat.
    await net.tick(1, ["leader"]);

    for (const id of voters) {
      const r = net.node(id);
      assert.deepEqual(logTerms(r), AGREED_TERMS, `log of ${id}`);
      assert.equal(r.log.committed, AGREED_TERMS.length, `commit index of ${id}`);
      assert.deepEqual(net.peer(id).appliedTexts(), LEADER_TEXTS, `state machine of ${id}`);
    }
    assert.equal(net.appliedDisagreement(), undefined);
  });

  for (const [name, f] of Object.entries(FIGURE_7)) {
    void test(`follower (${name}) ends with exactly the leader's log, extra entries removed, in at most one rejected append`, async () => {
      // A third voter with a short log gives the leader its majority even when (c) or (d) refuse.
      const voters = ["leader", name, "z"];
      const net = new Network(70);
      await net.add("leader", paperState(voters, LEADER_TERMS, 7));
      await net.add(name, paperState(voters, f.terms, f.term));
      await net.add("z", paperState(voters, [1, 1, 1], 1));

      await net.elect("leader");
      await net.tick(1, ["leader"]);

      assert.deepEqual(logTerms(net.node(name)), AGREED_TERMS);
      assert.equal(net.node(name).log.committed, AGREED_TERMS.length);
      assert.deepEqual(net.peer(name).appliedTexts(), LEADER_TEXTS);
      // Each follower's reject hint lands the leader on the match point in one round trip; the
      // naive scheme would need one per divergent index (eight for (f)).
      assert.ok(rejectionsFrom(net, name) <= 1, `${rejectionsFrom(net, name)} rejected appends from (${name})`);
    });
  }
});

void describe("fast backtracking", () => {
  void test("a follower missing a long run of the leader's entries is repaired in O(terms) round trips, not O(indexes)", async () => {
    // The follower's log diverges at index 2 and runs 100 entries past it in term 2; the leader's
    // 50 entries after index 1 are of term 3.
    const voters = ["leader", "follower", "z"];
    const follower = [1, ...Array<number>(100).fill(2)];
    const leader = [1, ...Array<number>(50).fill(3)];
    const net = new Network(11);
    await net.add("leader", paperState(voters, leader, 3));
    await net.add("follower", paperState(voters, follower, 2));
    await net.add("z", paperState(voters, [1], 1));

    await net.elect("leader");
    await net.tick(1, ["leader"]);

    assert.deepEqual(logTerms(net.node("follower")), [...leader, 4]);
    const rejections = rejectionsFrom(net, "follower");
    assert.ok(rejections >= 1, "the follower must have rejected the first probe");
    assert.ok(rejections <= 2, `${rejections} rejected appends for a 100-entry divergence`);
  });

  void test("a follower whose longer log ends in lower terms skips whole terms at once", async () => {
    // Shared prefix 1..6; then the leader has 50 entries of term 5 and the follower 50 of term 3
    // followed by 50 of term 4. Backtracking by term skips both follower terms in one step.
    const voters = ["leader", "follower", "z"];
    const prefix = [1, 2, 2, 2, 2, 2];
    const leader = [...prefix, ...Array<number>(50).fill(5)];
    const follower = [...prefix, ...Array<number>(50).fill(3), ...Array<number>(50).fill(4)];
    const net = new Network(12);
    await net.add("leader", paperState(voters, leader, 5));
    await net.add("follower", paperState(voters, follower, 4));
    await net.add("z", paperState(voters, [1], 1));

    await net.elect("leader");
    await net.tick(1, ["leader"]);

    assert.deepEqual(logTerms(net.node("follower")), [...leader, 6]);
    assert.ok(rejectionsFrom(net, "follower") <= 2, `${rejectionsFrom(net, "follower")} rejected appends`);
  });

  void test("a follower whose conflicting entries are of a later term than the leader's hints past all of them at once", async () => {
    // Here the leader alone cannot skip: its own term at the probed index (2) is below the
    // follower's (3). The follower's hint, the last index whose term is at most 2, does it.
    const voters = ["leader", "follower", "z"];
    const leader = [1, ...Array<number>(50).fill(2), 4];
    const follower = [1, ...Array<number>(60).fill(3)];
    const net = new Network(14);
    await net.add("leader", paperState(voters, leader, 4));
    await net.add("follower", paperState(voters, follower, 3));
    await net.add("z", paperState(voters, [1], 1));

    await net.elect("leader");
    await net.tick(1, ["leader"]);

    assert.deepEqual(logTerms(net.node("follower")), [...leader, 5]);
    assert.ok(rejectionsFrom(net, "follower") <= 2, `${rejectionsFrom(net, "follower")} rejected appends`);
  });

  void test("findConflictByTerm returns the last index at or below the given index whose term is at most the given term", async () => {
    const net = new Network(13);
    await net.add("n", paperState(["n"], [1, 1, 2, 2, 2, 5, 5], 5));
    const log = net.node("n").log;
    assert.equal(log.findConflictByTerm(7, 5), 7);
    assert.equal(log.findConflictByTerm(7, 4), 5);
    assert.equal(log.findConflictByTerm(4, 2), 4);
    assert.equal(log.findConflictByTerm(7, 1), 2);
    assert.equal(log.findConflictByTerm(7, 0), 0);
    assert.equal(log.findConflictByTerm(100, 3), 5, "an index past the log is clamped to the last index");
  });
});
