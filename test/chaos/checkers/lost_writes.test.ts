import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkLostWrites } from "../../../chaos/checkers/lost_writes.js";
import { HistoryBuilder } from "./history_builder.js";

function twoNodes(h: HistoryBuilder, service: string, instances: readonly string[]): void {
  h.finalRead(service, instances, 10, "n1");
  h.finalRead(service, instances, 10, "n2");
}

describe("lost writes checker", () => {
  test("accepts final reads that hold every acknowledged register and no acknowledged deregister", () => {
    const h = new HistoryBuilder();
    h.register("a", [1, 2]);
    h.register("b", [1, 2]);
    h.deregister("b", [3, 4]);
    h.register("c", [1]); // unknown: may or may not be there
    h.register("d", [1, 2]);
    h.deregister("d", [3]); // unknown deregister: either is fine
    twoNodes(h, "web", ["a", "c"]);
    const v = checkLostWrites(h.build());
    assert.equal(v.ok, true, JSON.stringify(v.anomalies));
    assert.deepEqual([v.stats.acknowledgedRegisters, v.stats.acknowledgedDeregisters, v.stats.lost], [3, 1, 0]);
  });

  test("flags an acknowledged register missing from a final read, and counts it lost once", () => {
    const h = new HistoryBuilder();
    const reg = h.register("a", [1, 2], { revision: 5 });
    h.finalRead("web", [], 10, "n1");
    h.finalRead("web", [], 10, "n2");
    const v = checkLostWrites(h.build());
    assert.equal(v.ok, false);
    assert.equal(v.stats.lost, 1);
    assert.deepEqual(v.anomalies[0].opIds, [reg.id]);
    assert.match(v.anomalies[0].message, /lost register: instance a .* missing from the final reads on n1, n2/);
  });

  test("flags an acknowledged deregister whose instance is still listed", () => {
    const h = new HistoryBuilder();
    h.register("a", [1, 2]);
    h.deregister("a", [3, 4]);
    twoNodes(h, "web", ["a"]);
    const v = checkLostWrites(h.build());
    assert.equal(v.stats.lost, 1);
    assert.match(v.anomalies[0].message, /lost deregister/);
  });

  test("flags an instance listed at the end that was never registered, or whose register failed", () => {
    const h = new HistoryBuilder();
    h.register("failed", [1, 2], { outcome: "fail" });
    h.finalRead("web", ["failed", "ghost"], 10);
    const v = checkLostWrites(h.build());
    assert.equal(v.anomalies.length, 2);
    assert.match(v.anomalies[0].message, /failed, which was never registered/);
  });

  test("flags final reads of one service that disagree between nodes", () => {
    const h = new HistoryBuilder();
    h.register("a", [1]);
    h.finalRead("web", ["a"], 10, "n1");
    h.finalRead("web", [], 9, "n2");
    const v = checkLostWrites(h.build());
    assert.equal(v.ok, false);
    assert.match(v.anomalies[0].message, /disagree: n1 .* alone lists \[a\]/);
  });

  test("fails when there are no final reads, or none of a service that acknowledged writes touched", () => {
    const none = new HistoryBuilder();
    none.register("a", [1, 2]);
    const v = checkLostWrites(none.build());
    assert.equal(v.ok, false);
    assert.match(v.anomalies[0].message, /no final reads: the run could not check for lost writes/);
    const partial = new HistoryBuilder();
    partial.register("a", [1, 2], { service: "db" });
    partial.finalRead("web", [], 1);
    assert.match(checkLostWrites(partial.build()).anomalies[0].message, /no final read of service db/);
  });
});
