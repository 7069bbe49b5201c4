import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkAvailability } from "../../../chaos/checkers/availability.js";
import { HistoryBuilder } from "./history_builder.js";

describe("availability checker", () => {
  test("counts failed shares overall, per nemesis and outside faults, and write latencies", () => {
    const h = new HistoryBuilder({ leaderWaitMs: 5_000 });
    h.fault("crash", 1_000, 2_000);
    h.fault("partition-isolate", 1_500, 3_000);
    h.register("a", [100, 110]);
    h.register("b", [1_100, 1_300], { outcome: "fail", status: 503, client: "c2" });
    h.read([], [1_600], { client: "c3" }); // unknown: spans to the run's end, so both faults
    h.register("c", [2_500, 2_540], { client: "c4" });
    const v = checkAvailability(h.build());
    assert.equal(v.ok, true);
    assert.equal(v.stats.failedShare, 0.5);
    assert.deepEqual([v.stats["ops.none"], v.stats["failed.none"]], [1, 0]);
    assert.deepEqual([v.stats["ops.crash"], v.stats["failed.crash"], v.stats["failedShare.crash"]], [2, 2, 1]);
    assert.deepEqual([v.stats["ops.partition-isolate"], v.stats["failed.partition-isolate"]], [2, 1]);
    assert.deepEqual([v.stats["writeLatencyMs.count"], v.stats["writeLatencyMs.p50"], v.stats["writeLatencyMs.max"]], [2, 10, 40]);
    assert.deepEqual([v.stats["writeLatencyDuringFaultsMs.count"], v.stats["writeLatencyDuringFaultsMs.p99"]], [1, 40]);
  });

  test("an unknown operation spans only up to its client's next operation", () => {
    const h = new HistoryBuilder();
    h.read([], [100]);
    h.read([], [200, 210]);
    h.fault("pause", 500, 600);
    const v = checkAvailability(h.build());
    assert.equal(v.stats["ops.pause"], 0);
    assert.equal(v.stats["failed.none"], 1);
  });

  test("flags a write that failed with 503 well before --leader-wait with no fault active", () => {
    const h = new HistoryBuilder({ leaderWaitMs: 5_000 });
    const quick = h.register("a", [100, 600], { outcome: "fail", status: 503 });
    h.register("b", [1_000, 5_100], { outcome: "fail", status: 503, client: "c2" }); // waited (within the slack)
    h.register("c", [6_000, 6_100], { outcome: "fail", status: 400, client: "c3" }); // not about leaders
    h.fault("crash", 7_000, 8_000);
    h.register("d", [7_100, 7_200], { outcome: "fail", status: 503, client: "c4" }); // during a fault: reported as a figure only
    const v = checkAvailability(h.build());
    assert.equal(v.anomalies.length, 1);
    assert.deepEqual(v.anomalies[0].opIds, [quick.id]);
    assert.match(v.anomalies[0].message, /did not wait for a leader: register .* after 500 ms, under 4000 ms/);
  });
});
