import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkWatches } from "../../../chaos/checkers/watches.js";
import type { WatchEvent, WatchMessage } from "../../../chaos/history.js";
import { HistoryBuilder } from "./history_builder.js";

const upsert = (instance: string, revision: number): WatchEvent => ({ revision, type: "upsert", service: "web", instance });
const remove = (instance: string, revision: number): WatchEvent => ({ revision, type: "delete", service: "web", instance });
const events = (atMs: number, revision: number, list: readonly WatchEvent[], coalesced = false): WatchMessage =>
  ({ atMs, kind: "events", revision, coalesced, events: list });

/** a registered at 5, b at 7, a deregistered at 9; the final state is [b] at revision 9. */
function writes(): HistoryBuilder {
  const h = new HistoryBuilder();
  h.register("a", [1, 2], { revision: 5, address: "10.0.0.1", port: 80 });
  h.register("b", [3, 4], { revision: 7, address: "10.0.0.2", port: 81 });
  h.deregister("a", [5, 6], { revision: 9 });
  h.finalRead("web", ["b"], 9);
  return h;
}

function withStream(h: HistoryBuilder, messages: readonly WatchMessage[]): HistoryBuilder {
  h.watches.push({ watcher: "w1", transport: "grpc", services: ["web"], messages });
  return h;
}

const good: readonly WatchMessage[] = [
  { atMs: 0, kind: "connected", node: "n1", sinceRevision: 0 },
  { atMs: 1, kind: "reset", revision: 4, reason: "initial", instances: [] },
  events(4, 7, [upsert("a", 5), upsert("b", 7)]),
  { atMs: 5, kind: "disconnected", error: "node crashed" },
  { atMs: 6, kind: "connected", node: "n2", sinceRevision: 7 },
  { atMs: 7, kind: "progress", revision: 8 },
  events(8, 9, [remove("a", 9)]),
];

describe("watches checker", () => {
  test("accepts a stream that resumes across a reconnect and converges", () => {
    const v = checkWatches(withStream(writes(), good).build());
    assert.equal(v.ok, true, JSON.stringify(v.anomalies));
    assert.deepEqual([v.stats.watchers, v.stats.messages, v.stats.events, v.stats["resets.initial"]], [1, 7, 3, 1]);
  });

  test("a coalesced message may skip an instance's earlier revision but not the instance", () => {
    // From revision 4 straight to 9: a's register at 5 is covered by its delete at 9.
    const skipsA = [...good.slice(0, 2), events(8, 9, [upsert("b", 7), remove("a", 9)], true)];
    assert.equal(checkWatches(withStream(writes(), skipsA).build()).ok, true);
    const h = writes();
    h.register("c", [7, 8], { revision: 8 });
    h.finalRead("web", ["b", "c"], 9, "n2");
    h.finalReads.shift();
    const coalescedWithoutC = [...good.slice(0, 3), events(8, 9, [remove("a", 9)], true)];
    const v = checkWatches(withStream(h, coalescedWithoutC).build());
    assert.equal(v.ok, false);
    assert.match(v.anomalies[0].message, /gap: register #4 of instance c .* revision 8/);
  });

  test("flags a gap: a message that moves past a write without its event, naming the write", () => {
    const messages = [...good.slice(0, 2), events(4, 7, [upsert("b", 7)]), ...good.slice(3)];
    const v = checkWatches(withStream(writes(), messages).build());
    assert.equal(v.ok, false);
    assert.match(v.anomalies[0].message, /gap: register #1 of instance a .* from revision 4 to 7/);
    assert.deepEqual(v.anomalies[0].opIds, [1]);
  });

  test("flags a progress message that claims a revision whose write it never sent", () => {
    const messages = [...good.slice(0, 5), { atMs: 7, kind: "progress", revision: 9 } as const, events(8, 10, [remove("a", 9)])];
    assert.match(checkWatches(withStream(writes(), messages).build()).anomalies[0].message, /gap: deregister #3/);
  });

  test("a reset in place of the missing events is no gap", () => {
    const messages = [...good.slice(0, 5), { atMs: 7, kind: "reset", revision: 9, reason: "compacted", instances: ["b"] } as const];
    const v = checkWatches(withStream(writes(), messages).build());
    assert.equal(v.ok, true, JSON.stringify(v.anomalies));
    assert.equal(v.stats["resets.compacted"], 1);
  });

  test("flags revisions that go down, and an event repeated after a reconnect", () => {
    const down = [...good, { atMs: 9, kind: "progress", revision: 8 } as const];
    assert.match(checkWatches(withStream(writes(), down).build()).anomalies[0].message, /revision 8, below the 9/);
    const repeated = [...good.slice(0, 5), events(7, 7, [upsert("b", 7)]), events(8, 9, [remove("a", 9)])];
    const v = checkWatches(withStream(writes(), repeated).build());
    assert.equal(v.ok, false);
    assert.match(v.anomalies[0].message, /does not follow the previous event's revision 7/);
  });

  test("flags a watcher that never converged, or stopped before the final revision", () => {
    const missingDelete = [...good.slice(0, 6), events(8, 9, [])];
    const v = checkWatches(withStream(writes(), missingDelete).build());
    assert.ok(v.anomalies.some((a) => /never converged on service web: at revision 9 it holds \[a\]/.test(a.message)));
    const stoppedEarly = good.slice(0, 6);
    assert.match(checkWatches(withStream(writes(), stoppedEarly).build()).anomalies[0].message, /last revision is 8, below the final read's 9/);
  });

  test("flags events of a service the watcher does not watch", () => {
    const messages = [...good, events(10, 11, [{ revision: 11, type: "upsert", service: "db", instance: "x" }])];
    assert.match(checkWatches(withStream(writes(), messages).build()).anomalies[0].message, /service db, which it does not watch/);
  });

  test("xDS: accepts new versions ending at the final endpoints; flags a re-sent version and wrong endpoints", () => {
    const xds = (atMs: number, version: string, endpoints: readonly string[]): WatchMessage => ({ atMs, kind: "xds", version, endpoints });
    const record = (messages: readonly WatchMessage[]): HistoryBuilder => {
      const h = writes();
      h.watches.push({ watcher: "envoy", transport: "xds", services: ["web"], messages });
      return h;
    };
    assert.equal(checkWatches(record([xds(1, "5", ["10.0.0.1:80"]), xds(2, "9", ["10.0.0.2:81"])]).build()).ok, true);
    const resent = checkWatches(record([xds(1, "9", ["10.0.0.2:81"]), xds(2, "9", ["10.0.0.2:81"])]).build());
    assert.match(resent.anomalies[0].message, /version 9 was sent again/);
    const wrong = checkWatches(record([xds(1, "5", ["10.0.0.1:80", "10.0.0.2:81"])]).build());
    assert.match(wrong.anomalies[0].message, /endpoints \[10.0.0.1:80, 10.0.0.2:81\], but the final state is \[10.0.0.2:81\]/);
  });
});
