import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkLeaders } from "../../../chaos/checkers/leaders.js";
import { HistoryBuilder } from "./history_builder.js";

describe("leaders checker", () => {
  test("accepts one leader per term and counts the changes", () => {
    const h = new HistoryBuilder();
    h.roleChanges.push({ node: "n1", role: "leader", term: 2, leader: "n1" }, { node: "n2", role: "follower", term: 2, leader: "n1" },
      { node: "n2", role: "candidate", term: 3, leader: "" }, { node: "n2", role: "leader", term: 3, leader: "n2" });
    h.observations.push({ atMs: 5, node: "n2", role: "leader", term: 3, leader: "n2", commitIndex: 7 },
      { atMs: 9, node: "n1", role: "leader", term: 5, leader: "n1", commitIndex: 9 });
    const v = checkLeaders(h.build());
    assert.equal(v.ok, true);
    assert.deepEqual([v.stats.termsSeen, v.stats.termsWithLeader, v.stats.leaderChanges], [3, 3, 2]);
  });

  test("flags two leaders in one term from the logs, naming the term and both nodes", () => {
    const h = new HistoryBuilder();
    h.roleChanges.push({ node: "n1", role: "leader", term: 4, leader: "n1" }, { node: "n3", role: "leader", term: 4, leader: "n3" });
    const v = checkLeaders(h.build());
    assert.equal(v.ok, false);
    assert.match(v.anomalies[0].message, /term 4 had 2 leaders: n1 \(by its log\) and n3 \(by its log\)/);
  });

  test("flags two leaders in one term when one shows only in the polls", () => {
    const h = new HistoryBuilder();
    h.roleChanges.push({ node: "n1", role: "leader", term: 4, leader: "n1" });
    h.observations.push({ atMs: 77, node: "n2", role: "leader", term: 4, leader: "n2", commitIndex: 3 });
    assert.match(checkLeaders(h.build()).anomalies[0].message, /n2 \(by a poll at 77 ms\)/);
  });

  test("a follower's second-hand word about the leader is not a claim", () => {
    const h = new HistoryBuilder();
    h.roleChanges.push({ node: "n1", role: "leader", term: 4, leader: "n1" });
    h.observations.push({ atMs: 1, node: "n2", role: "follower", term: 4, leader: "n3", commitIndex: 3 });
    assert.equal(checkLeaders(h.build()).ok, true);
  });
});
