import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkStaleReads } from "../../../chaos/checkers/stale_reads.js";
import { HistoryBuilder } from "./history_builder.js";

describe("stale reads checker", () => {
  test("accepts a client whose stale reads lag but never go back", () => {
    const h = new HistoryBuilder();
    h.read([], [1, 2], { consistency: "stale", revision: 5 });
    h.read([], [3, 4], { consistency: "stale", revision: 5 });
    h.read([], [5, 6], { consistency: "stale", revision: 9 });
    const v = checkStaleReads(h.build());
    assert.equal(v.ok, true);
    assert.equal(v.stats.staleReads, 3);
  });

  test("flags a stale read whose revision went down for the same client, node and service, naming both reads", () => {
    const h = new HistoryBuilder();
    const first = h.read([], [1, 2], { consistency: "stale", revision: 9, node: "n1" });
    const second = h.read([], [3, 4], { consistency: "stale", revision: 7, node: "n1" });
    const v = checkStaleReads(h.build());
    assert.equal(v.ok, false);
    assert.deepEqual(v.anomalies[0].opIds, [first.id, second.id]);
    assert.match(v.anomalies[0].message, /revision 7, below revision 9/);
  });

  test("flags a linearizable read whose revision went down", () => {
    const h = new HistoryBuilder();
    h.read([], [1, 2], { revision: 9 });
    h.read([], [3, 4], { revision: 8 });
    assert.equal(checkStaleReads(h.build()).ok, false);
  });

  test("compares no stale reads across nodes: a client that moved on may see another node's lag", () => {
    const h = new HistoryBuilder();
    h.read([], [1, 2], { consistency: "stale", revision: 9, node: "n1" });
    h.read([], [3, 4], { consistency: "stale", revision: 7, node: "n2" });
    assert.equal(checkStaleReads(h.build()).ok, true);
  });

  test("compares neither different services, nor different clients, nor stale with linearizable, nor failed reads", () => {
    const h = new HistoryBuilder();
    h.read([], [1, 2], { revision: 9, service: "web" });
    h.read([], [3, 4], { revision: 2, service: "db" });
    h.read([], [5, 6], { revision: 1, service: "web", client: "c2" });
    h.read([], [7, 8], { revision: 3, service: "web", consistency: "stale" });
    h.read([], [9, 10], { revision: 1, service: "web", outcome: "fail" });
    assert.equal(checkStaleReads(h.build()).ok, true);
  });
});
