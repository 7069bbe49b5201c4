import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { deletionOf, instanceWritesOf, presenceAt } from "../../../chaos/checkers/presence.js";
import { HistoryBuilder } from "./history_builder.js";

describe("instance presence at a revision", () => {
  test("a known register and deregister bound the instance's life: [register, deregister)", () => {
    const h = new HistoryBuilder();
    h.register("x", [1, 2], { revision: 5 });
    h.deregister("x", [3, 4], { revision: 9 });
    const x = instanceWritesOf(h.ops).get("x");
    assert.deepEqual([4, 5, 8, 9, 20].map((r) => presenceAt(x, r).kind), ["absent", "present", "present", "absent", "absent"]);
    assert.deepEqual(deletionOf(x), { kind: "at", revision: 9, opId: 2 });
  });

  test("a failed write never happened; an unknown one or an ok one without a revision decides nothing", () => {
    const h = new HistoryBuilder();
    h.register("failed", [1, 2], { outcome: "fail" });
    h.register("unknown", [1]);
    h.register("unrevisioned", [1, 2]);
    const writes = instanceWritesOf(h.ops);
    assert.equal(presenceAt(writes.get("failed"), 10).kind, "absent");
    assert.equal(presenceAt(writes.get("unknown"), 10).kind, "indeterminate");
    assert.equal(presenceAt(writes.get("unrevisioned"), 10).kind, "indeterminate");
    assert.deepEqual(deletionOf(writes.get("unknown")), { kind: "none" });
  });

  test("a known deregister decides absence from its revision on, whatever is unknown", () => {
    const h = new HistoryBuilder();
    h.register("x", [1]);
    h.deregister("x", [3, 4], { revision: 9 });
    const x = instanceWritesOf(h.ops).get("x");
    assert.deepEqual([8, 9].map((r) => presenceAt(x, r).kind), ["indeterminate", "absent"]);
  });

  test("an unknown deregister leaves the instance undecided from its register on, and its deletion too", () => {
    const h = new HistoryBuilder();
    h.register("x", [1, 2], { revision: 5 });
    h.deregister("x", [3]);
    const x = instanceWritesOf(h.ops).get("x");
    assert.deepEqual([4, 5, 50].map((r) => presenceAt(x, r).kind), ["absent", "indeterminate", "indeterminate"]);
    assert.deepEqual(deletionOf(x), { kind: "indeterminate" });
  });

  test("two registers of one id break the workload's discipline: undecided", () => {
    const h = new HistoryBuilder();
    h.register("x", [1, 2], { revision: 5 });
    h.register("x", [3, 4], { revision: 7 });
    assert.equal(presenceAt(instanceWritesOf(h.ops).get("x"), 6).kind, "indeterminate");
  });
});
