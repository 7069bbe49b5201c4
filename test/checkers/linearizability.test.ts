import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type Operation, checkLinearizable } from "../../chaos/checkers/linearizability.js";

const write = (key: string, value: string, invokedAt: number, completedAt: number | undefined): Operation =>
  ({ kind: "write", key, value, invokedAt, completedAt, acknowledged: completedAt !== undefined });
const read = (key: string, value: string | null, invokedAt: number, completedAt: number): Operation =>
  ({ kind: "read", key, value, invokedAt, completedAt });

describe("linearizability checker", () => {
  test("accepts reads that overlap a write and see either side of it", () => {
    const history = [write("k", "v1", 1, 10), read("k", null, 2, 3), read("k", "v1", 4, 11), write("k", "v2", 12, 20), read("k", "v1", 13, 14)];
    assert.deepEqual(checkLinearizable(history, new Map([["k", ["v1", "v2"]]])), { ok: true, problems: [] });
  });

  test("flags a stale read: the value before a write that completed before the read began", () => {
    const history = [write("k", "v1", 1, 2), write("k", "v2", 3, 4), read("k", "v1", 5, 6)];
    const r = checkLinearizable(history, new Map([["k", ["v1", "v2"]]]));
    assert.equal(r.ok, false);
    assert.match(r.problems[0], /stale read/);
  });

  test("flags a read that goes back in time after another read saw a newer value", () => {
    const history = [write("k", "v1", 1, 2), write("k", "v2", 3, 100), read("k", "v2", 4, 5), read("k", "v1", 6, 7)];
    assert.equal(checkLinearizable(history, new Map([["k", ["v1", "v2"]]])).ok, false);
  });

  test("flags an acknowledged write that the log never applied", () => {
    const r = checkLinearizable([write("k", "v1", 1, 2)], new Map());
    assert.match(r.problems[0], /lost/);
  });

  test("flags a log order that contradicts real time between two writes", () => {
    const r = checkLinearizable([write("k", "v1", 1, 2), write("k", "v2", 3, 4)], new Map([["k", ["v2", "v1"]]]));
    assert.equal(r.ok, false);
  });

  test("lets a write whose outcome is unknown take effect at any later time", () => {
    const history = [write("k", "v1", 1, undefined), read("k", null, 50, 51), read("k", "v1", 60, 61)];
    assert.equal(checkLinearizable(history, new Map([["k", ["v1"]]])).ok, true);
  });

  test("flags a read of a value nobody wrote", () => {
    assert.equal(checkLinearizable([read("k", "ghost", 1, 2)], new Map()).ok, false);
  });

  test("checks keys independently", () => {
    const history = [write("a", "1", 1, 2), read("b", null, 3, 4), write("b", "2", 5, 6), read("a", "1", 7, 8)];
    assert.equal(checkLinearizable(history, new Map([["a", ["1"]], ["b", ["2"]]])).ok, true);
  });
});
