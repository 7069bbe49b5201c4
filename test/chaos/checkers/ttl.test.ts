import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkTtl } from "../../../chaos/checkers/ttl.js";
import { HistoryBuilder } from "./history_builder.js";

const TTL_MS = 3_000;

/** Heartbeats of `instance` every `everyMs` from `fromMs` to `toMs`, each taking 10 ms. */
function beat(h: HistoryBuilder, instance: string, fromMs: number, toMs: number, everyMs: number): void {
  for (let t = fromMs; t <= toMs; t += everyMs) h.heartbeat(instance, [t, t + 10], { client: "hb" });
}

describe("ttl checker", () => {
  test("flags a critical read of an instance heartbeated well within its TTL, with no fault", () => {
    const h = new HistoryBuilder({ ttlMs: TTL_MS });
    beat(h, "a", 0, 20_000, 1_000);
    const read = h.health("a", "critical", [15_000, 15_020], { client: "r" });
    h.health("a", "passing", [16_000, 16_020], { client: "r" });
    const v = checkTtl(h.build());
    assert.equal(v.ok, false);
    assert.deepEqual(v.anomalies[0].opIds, [read.id]);
    assert.match(v.anomalies[0].message, /early expiry: .* instance a critical/);
  });

  test("a clock jump is no excuse for an early expiry", () => {
    const h = new HistoryBuilder({ ttlMs: TTL_MS });
    beat(h, "a", 0, 20_000, 1_000);
    h.fault("clock-jump", 9_000, 16_000);
    h.health("a", "critical", [15_000, 15_020], { client: "r" });
    assert.equal(checkTtl(h.build()).ok, false);
  });

  test("a critical read is no anomaly when heartbeats were sparse, one failed, or a fault overlapped", () => {
    const sparse = new HistoryBuilder({ ttlMs: TTL_MS });
    beat(sparse, "a", 0, 9_000, 1_000);
    beat(sparse, "a", 12_500, 20_000, 1_000); // 3.5 s without a heartbeat before 12.5 s
    sparse.health("a", "critical", [15_000, 15_020], { client: "r" });
    assert.equal(checkTtl(sparse.build()).ok, true);

    const failed = new HistoryBuilder({ ttlMs: TTL_MS });
    beat(failed, "a", 0, 20_000, 1_000);
    failed.heartbeat("a", [13_500, 13_600], { client: "hb2", outcome: "fail" });
    failed.health("a", "critical", [15_000, 15_020], { client: "r" });
    assert.equal(checkTtl(failed.build()).ok, true);

    const faulted = new HistoryBuilder({ ttlMs: TTL_MS });
    beat(faulted, "a", 0, 20_000, 1_000);
    faulted.fault("partition-isolate", 9_000, 10_000);
    faulted.health("a", "critical", [15_000, 15_020], { client: "r" });
    assert.equal(checkTtl(faulted.build()).ok, true);
  });

  test("a critical read soon after registration, before any heartbeat, is no anomaly", () => {
    const h = new HistoryBuilder({ ttlMs: TTL_MS });
    h.health("a", "critical", [100, 120], { client: "r" });
    beat(h, "a", 500, 5_000, 1_000);
    assert.equal(checkTtl(h.build()).ok, true);
  });

  test("abandoned instances must be critical in their last read after the faults ended", () => {
    const h = new HistoryBuilder({ ttlMs: TTL_MS });
    h.abandonedInstances.push("gone", "stuck", "unread");
    h.fault("partition-halves", 1_000, 5_000);
    h.health("gone", "passing", [2_000, 2_010], { client: "r" }); // during the fault: not the final word
    h.health("gone", "critical", [9_000, 9_010], { client: "r" });
    h.health("stuck", "critical", [8_000, 8_010], { client: "r" });
    const last = h.health("stuck", "passing", [9_000, 9_010], { client: "r2" });
    h.health("unread", "critical", [4_000, 4_010], { client: "r" });
    const v = checkTtl(h.build());
    assert.equal(v.anomalies.length, 2);
    assert.match(v.anomalies[0].message, /abandoned instance stuck is passing/);
    assert.deepEqual(v.anomalies[0].opIds, [last.id]);
    assert.match(v.anomalies[1].message, /abandoned instance unread: no ok health read after the last fault ended \(5000 ms\)/);
  });
});
