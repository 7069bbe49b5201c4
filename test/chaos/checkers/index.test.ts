import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkRun, summarize } from "../../../chaos/checkers/index.js";
import { HistoryBuilder } from "./history_builder.js";

describe("checkRun", () => {
  test("runs every checker in order and a clean run sums to no anomalies and nothing lost", async () => {
    const h = new HistoryBuilder();
    h.register("a", [1, 2], { revision: 3 });
    h.read(["a"], [4, 5], { revision: 3, client: "r" });
    h.finalRead("web", ["a"], 3);
    h.roleChanges.push({ node: "n1", role: "leader", term: 1, leader: "n1" });
    const verdicts = await checkRun(h.build());
    assert.deepEqual(verdicts.map((v) => v.checker),
      ["linearizable", "stale-reads", "lost-writes", "watches", "certificates", "leaders", "availability", "ttl"]);
    assert.ok(verdicts.every((v) => v.ok), JSON.stringify(verdicts.filter((v) => !v.ok)));
    assert.deepEqual(summarize(verdicts), { anomalies: 0, lost: 0 });
  });

  test("a lost write shows in the summary as an anomaly and as lost, and breaks linearizability", async () => {
    const h = new HistoryBuilder();
    h.register("a", [1, 2], { revision: 3 });
    h.read([], [4, 5], { revision: 3, client: "r" });
    h.finalRead("web", [], 3);
    const verdicts = await checkRun(h.build());
    assert.deepEqual(summarize(verdicts), { anomalies: 2, lost: 1 });
    assert.deepEqual(verdicts.filter((v) => !v.ok).map((v) => v.checker), ["linearizable", "lost-writes"]);
  });
});
