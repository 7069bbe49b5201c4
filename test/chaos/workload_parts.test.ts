// The workload's pure parts: how an answer becomes an outcome, and how watch pieces become the
// complete messages the history records.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { WatchMessage } from "../../chaos/history.js";
import type { HttpResult } from "../../chaos/workload/http.js";
import { readOutcome, writeOutcome } from "../../chaos/workload/outcome.js";
import { WatchAssembler } from "../../chaos/workload/watch_assembler.js";

const answer = (status: number, error?: string): HttpResult => ({ kind: "answer", status, body: error === undefined ? { index: 7 } : { error }, text: "" });

void describe("write outcomes", () => {
  void test("a write is failed only when it certainly had no effect, and unknown otherwise", () => {
    const cases: [HttpResult, string][] = [
      [answer(200), "ok"],
      [{ kind: "refused", error: "n1: connection refused" }, "fail"],
      [{ kind: "lost", error: "n1: no answer within 2000 ms" }, "unknown"],
      [answer(400, "Name is required"), "fail"],
      [answer(404, "instance x is not registered"), "fail"],
      [answer(408, "request timeout"), "unknown"],
      [answer(503, "no leader was elected within 7000 ms (an election is under way, or a majority of the cluster is unreachable); retry"), "fail"],
      [answer(503, "leader n2 refused: node n2 is no longer the leader"), "fail"],
      [answer(503, "could not reach leader n2: connection refused"), "fail"],
      [answer(503, "leader n2 did not answer (timeout); the request may or may not have been applied"), "unknown"],
      [answer(503, "leader n2 refused: the proposal at index 9 was not applied within 5000 ms; whether it will commit is unknown"), "unknown"],
      [answer(503, "the node is shutting down; retry on another node"), "unknown"],
      [answer(500, "internal error; see the server log"), "unknown"],
    ];
    for (const [result, expected] of cases) assert.equal(writeOutcome(result).outcome, expected, JSON.stringify(result));
  });

  void test("a read is ok on 2xx and failed on anything else, keeping the status and error for the report", () => {
    assert.deepEqual(readOutcome(answer(503, "no leader")), { outcome: "fail", status: 503, error: "no leader" });
    assert.equal(readOutcome({ kind: "lost", error: "reset" }).outcome, "fail");
  });
});

void describe("watch assembler", () => {
  const assemble = (): { assembler: WatchAssembler; out: WatchMessage[] } => {
    const out: WatchMessage[] = [];
    return { assembler: new WatchAssembler(() => 0, (m) => out.push(m)), out };
  };
  const event = (revision: number, instance: string) => ({ revision, type: "upsert" as const, service: "s", instance });

  void test("fragments join into one batch at the last fragment's revision, and only then count as held", () => {
    const { assembler, out } = assemble();
    assert.equal(assembler.apply({ kind: "events", revision: 5, coalesced: false, fragment: true, events: [event(5, "a")] }), undefined);
    assert.equal(assembler.revision, 0);
    assembler.apply({ kind: "events", revision: 6, coalesced: true, fragment: false, events: [event(6, "b")] });
    assert.deepEqual(out, [{ atMs: 0, kind: "events", revision: 6, coalesced: true, events: [event(5, "a"), event(6, "b")] }]);
    assert.equal(assembler.revision, 6);
  });

  void test("reset chunks join into one reset listing every instance; a broken stream drops a partial reset", () => {
    const { assembler, out } = assemble();
    assembler.apply({ kind: "reset", revision: 9, reason: "initial", first: true, last: false, instances: ["a"] });
    assembler.abandonPartial();
    assert.match(assembler.apply({ kind: "reset", revision: 9, reason: "initial", first: false, last: true, instances: ["b"] }) ?? "", /without its first chunk/);
    assembler.apply({ kind: "reset", revision: 9, reason: "initial", first: true, last: false, instances: ["a"] });
    assembler.apply({ kind: "reset", revision: 9, reason: "initial", first: false, last: true, instances: ["b"] });
    assembler.apply({ kind: "progress", revision: 12 });
    assert.deepEqual(out, [
      { atMs: 0, kind: "reset", revision: 9, reason: "initial", instances: ["a", "b"] },
      { atMs: 0, kind: "progress", revision: 12 },
    ]);
    assert.equal(assembler.revision, 12);
  });
});
