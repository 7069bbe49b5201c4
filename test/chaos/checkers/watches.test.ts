import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkWatches } from "../../../chaos/checkers/watches.js";
import type { WatchEvent, WatchMessage } from "../../../chaos/history.js";
import { HistoryBuilder } from "./history_builder.js";

const upsert = (instance: string, revision: number): WatchEvent => ({ revision, type: "upsert", service: "web", instance });
const remove = (instance: string, revision: number): WatchEvent => ({ revision, type: "delete", service: "web", instance });
const events = (atMs: number, revision: number, list: readonly WatchEvent[], coalesced = false): WatchMessage =>
  ({ atMs, kind: "events", revision, coalesced, events: list });
const health = (instance: string, revision: number): WatchEvent => ({ revision, type: "health", service: "web", instance });
const reset = (atMs: number, revision: number, instances: readonly string[]): WatchMessage =>
  ({ atMs, kind: "reset", revision, reason: "compacted", instances });
const connected: WatchMessage = { atMs: 0, kind: "connected", node: "n1", sinceRevision: 0 };

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
    assert.deepEqual([v.stats.resetInstancesJudged, v.stats.resetInstancesIndeterminate], [2, 0]);
    assert.deepEqual([v.stats.eventRevisionsJudged, v.stats.eventRevisionsIndeterminate], [3, 0]);
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

  test("xDS: accepts new versions ending at the final endpoints; flags a re-sent version, a re-sent assignment and wrong endpoints", () => {
    const xds = (atMs: number, version: string, endpoints: readonly string[]): WatchMessage => ({ atMs, kind: "xds", version, endpoints });
    const record = (messages: readonly WatchMessage[]): HistoryBuilder => {
      const h = writes();
      h.watches.push({ watcher: "envoy", transport: "xds", services: ["web"], messages });
      return h;
    };
    assert.equal(checkWatches(record([xds(1, "5", ["10.0.0.1:80"]), xds(2, "9", ["10.0.0.2:81"])]).build()).ok, true);
    const resent = checkWatches(record([xds(1, "9", ["10.0.0.2:81"]), xds(2, "9", ["10.0.0.2:81"])]).build());
    assert.match(resent.anomalies[0].message, /version 9 was sent again on the same stream/);
    // The same assignment under a new version is sent again all the same.
    const renamed = checkWatches(record([xds(1, "9", ["10.0.0.2:81"]), xds(2, "9.1", ["10.0.0.2:81"])]).build());
    assert.match(renamed.anomalies[0].message, /ACKed at 1 ms \(version 9\) was sent again on the same stream at 2 ms as version 9.1, with the same endpoints/);
    // A new stream (here on another node) starts with the full state, whatever version it carries.
    const reconnected = checkWatches(record([xds(1, "9", ["10.0.0.2:81"]), { atMs: 2, kind: "disconnected", error: "reset" },
      { atMs: 3, kind: "connected", node: "n2", sinceRevision: 0 }, xds(4, "9", ["10.0.0.2:81"])]).build());
    assert.equal(reconnected.ok, true, JSON.stringify(reconnected.anomalies));
    const wrong = checkWatches(record([xds(1, "5", ["10.0.0.1:80", "10.0.0.2:81"])]).build());
    assert.match(wrong.anomalies[0].message, /endpoints \[10.0.0.1:80, 10.0.0.2:81\], but the final state is \[10.0.0.2:81\]/);
  });

  test("a reset lists exactly the instances present at its revision", () => {
    const v = checkWatches(withStream(writes(), [connected, reset(1, 7, ["a", "b"]), events(2, 9, [remove("a", 9)])]).build());
    assert.equal(v.ok, true, JSON.stringify(v.anomalies));

    const lacks = checkWatches(withStream(writes(), [connected, reset(1, 7, ["b"]), events(2, 9, [remove("a", 9)])]).build());
    assert.equal(lacks.anomalies.length, 1, JSON.stringify(lacks.anomalies));
    assert.match(lacks.anomalies[0].message,
      /w1 \(grpc\): reset at revision 7 \(1 ms\) lacks instance a of service web, present at 7: registered by #1 at revision 5, deregistered by #3 only at revision 9/);
    assert.deepEqual(lacks.anomalies[0].opIds, [1, 3]);

    const deregistered = checkWatches(withStream(writes(), [connected, reset(1, 9, ["a", "b"])]).build());
    const listsA = deregistered.anomalies.find((a) => /lists instance a of service web, absent at 9: deregistered by #3 at revision 9/.test(a.message));
    assert.deepEqual(listsA?.opIds, [3], JSON.stringify(deregistered.anomalies));

    const early = checkWatches(withStream(writes(), [connected, reset(1, 6, ["a", "b"]), events(2, 9, [upsert("b", 7), remove("a", 9)])]).build());
    assert.equal(early.anomalies.length, 1, JSON.stringify(early.anomalies));
    assert.match(early.anomalies[0].message, /lists instance b of service web, absent at 6: registered by #2 only at revision 7/);
  });

  test("a reset that lists an instance whose every register failed is an anomaly", () => {
    const h = writes();
    h.register("ghost", [1, 2], { outcome: "fail" });
    const v = checkWatches(withStream(h, [connected, reset(1, 9, ["b", "ghost"])]).build());
    assert.ok(v.anomalies.some((a) => /reset at revision 9 \(1 ms\) lists instance ghost, which was never registered/.test(a.message)),
      JSON.stringify(v.anomalies));
  });

  test("an unknown register leaves its instance undecided: a reset may list it or not", () => {
    for (const committed of [true, false]) {
      const h = writes();
      h.register("c", [6]);
      h.finalReads.splice(0);
      h.finalRead("web", committed ? ["b", "c"] : ["b"], 9);
      const v = checkWatches(withStream(h, [connected, reset(1, 9, committed ? ["b", "c"] : ["b"])]).build());
      assert.equal(v.ok, true, JSON.stringify(v.anomalies));
      assert.deepEqual([v.stats.resetInstancesJudged, v.stats.resetInstancesIndeterminate], [2, 1]);
    }
  });

  test("an unknown deregister leaves its instance undecided after its register, but not before it", () => {
    const unknownDeregisterOfB = (): HistoryBuilder => {
      const h = writes();
      h.deregister("b", [10]);
      h.finalReads.splice(0);
      h.finalRead("web", [], 12);
      return h;
    };
    // b still listed at 12, deleted at 13: neither can be judged against a deregister of unknown revision.
    const v = checkWatches(withStream(unknownDeregisterOfB(), [connected, reset(1, 12, ["b"]), events(2, 13, [remove("b", 13)])]).build());
    assert.equal(v.ok, true, JSON.stringify(v.anomalies));
    assert.deepEqual([v.stats.resetInstancesIndeterminate, v.stats.eventRevisionsIndeterminate], [1, 1]);
    const before = checkWatches(withStream(unknownDeregisterOfB(), [
      connected, reset(1, 6, ["a", "b"]), events(2, 13, [upsert("b", 7), remove("a", 9), remove("b", 13)]),
    ]).build());
    assert.equal(before.anomalies.length, 1, JSON.stringify(before.anomalies));
    assert.match(before.anomalies[0].message, /reset at revision 6 .* lists instance b of service web, absent at 6: registered by #2 only at revision 7/);
  });

  test("an upsert or health event is for an instance present at its revision", () => {
    const beforeRegister = [connected, reset(1, 4, []), events(2, 7, [upsert("a", 5), upsert("b", 6)]), events(3, 9, [remove("a", 9)])];
    const early = checkWatches(withStream(writes(), beforeRegister).build());
    const b = early.anomalies.find((a) => /upsert event for instance b at revision 6 \(2 ms\), but the instance was absent at 6: registered by #2 only at revision 7/.test(a.message));
    assert.deepEqual(b?.opIds, [2], JSON.stringify(early.anomalies));

    const afterDeregister = checkWatches(withStream(writes(), [...good, events(10, 10, [health("a", 10)])]).build());
    // The replay then also holds the instance the final read lacks: a convergence anomaly follows it.
    assert.equal(afterDeregister.anomalies.length, 2, JSON.stringify(afterDeregister.anomalies));
    assert.match(afterDeregister.anomalies[0].message, /health event for instance a at revision 10 .* absent at 10: deregistered by #3 at revision 9/);
    assert.deepEqual(afterDeregister.anomalies[0].opIds, [3]);
  });

  test("an upsert of an instance whose register is unknown is not judged", () => {
    const h = writes();
    h.register("c", [6]);
    h.finalReads.splice(0);
    h.finalRead("web", ["b", "c"], 9);
    const messages = [...good.slice(0, 2), events(4, 7, [upsert("a", 5), upsert("c", 6), upsert("b", 7)]), ...good.slice(3)];
    const v = checkWatches(withStream(h, messages).build());
    assert.equal(v.ok, true, JSON.stringify(v.anomalies));
    assert.deepEqual([v.stats.eventRevisionsJudged, v.stats.eventRevisionsIndeterminate], [3, 1]);
  });

  test("a delete event is at its deregister's revision, and needs a deregister at all", () => {
    const wrongRevision = [connected, reset(1, 4, []), events(2, 7, [upsert("a", 5), upsert("b", 7)]), events(3, 9, [remove("a", 8)])];
    const v = checkWatches(withStream(writes(), wrongRevision).build());
    const a = v.anomalies.find((x) => /delete event for instance a at revision 8 \(3 ms\), but its deregister #3 committed at revision 9/.test(x.message));
    assert.deepEqual(a?.opIds, [3], JSON.stringify(v.anomalies));

    const h = writes();
    h.deregister("b", [7, 8], { outcome: "fail" });
    const undeleted = checkWatches(withStream(h, [...good.slice(0, 6), events(8, 9, [remove("a", 9), remove("b", 9)])]).build());
    assert.ok(undeleted.anomalies.some((x) => /delete event for instance b at revision 9 .* no deregister of it took effect or may have/.test(x.message)),
      JSON.stringify(undeleted.anomalies));
  });
});
