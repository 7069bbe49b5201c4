// The timeline page: it draws every part of a run, escapes what the run recorded, and stays small
// and quick on a long run.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { ClusterObservation, FaultRecord, Operation, RunHistory, Verdict } from "../../chaos/history.js";
import { leaderLanes } from "../../chaos/report/leader_lanes.js";
import { opColumns } from "../../chaos/report/op_columns.js";
import { latencyRange, scatterPoints, type ScatterFrame } from "../../chaos/report/scatter.js";
import { renderTimeline } from "../../chaos/report/timeline.js";
import { SeededRandom } from "../../src/raft/core/random.js";

const runDurationMs = 60_000;
const pollIntervalMs = 250;
const nodeNames = ["n1", "n2", "n3"];

const FAULTS: readonly FaultRecord[] = [
  { nemesis: "partition-isolate", detail: "isolated n2 (leader)", nodes: ["n2"], startMs: 10_000, endMs: 20_000 },
  { nemesis: "crash", detail: "killed n1 & restarted", nodes: ["n1"], startMs: 30_000, endMs: 35_000 },
  { nemesis: "clock-jump", detail: "n3 clock +40s", nodes: ["n3"], startMs: 40_000, endMs: 50_000 },
];

/** n2 leads in term 1 until it is isolated, then n1 in term 2; n1 answers no polls while it is down. */
function observationsOf(): ClusterObservation[] {
  const observations: ClusterObservation[] = [];
  for (let atMs = 0; atMs <= runDurationMs; atMs += pollIntervalMs) {
    const term = atMs < 11_000 ? 1 : 2;
    const leader = term === 1 ? "n2" : "n1";
    for (const node of nodeNames) {
      if (node === "n1" && atMs > 30_000 && atMs < 35_000) continue;
      const role = node === leader ? "leader" : "follower";
      observations.push({ atMs, node, role, term, leader, commitIndex: atMs });
    }
  }
  return observations;
}

const KINDS: readonly Operation["kind"][] = ["register", "deregister", "read", "cert", "heartbeat", "health"];

/** `count` operations spread over the run, with log-spread latencies, 2% failed and 1% unknown. */
function opsOf(count: number, seed: number): Operation[] {
  const random = new SeededRandom(seed);
  const ops: Operation[] = [];
  for (let id = 0; id < count; id++) {
    const invokedAtMs = random.nextFloat() * runDurationMs;
    const latencyMs = 10 ** (random.nextFloat() * 3.5 - 0.5);
    const roll = random.nextFloat();
    const outcome = roll < 0.01 ? "unknown" : roll < 0.03 ? "fail" : "ok";
    const completedAtMs = outcome === "unknown" ? undefined : invokedAtMs + latencyMs;
    const client = `c${id % 16}`;
    const node = nodeNames[id % nodeNames.length];
    const instance = `i${id}`;
    // Each kind its own literal, as a parsed history has them: a spread would make this generator the slow part of the test.
    switch (random.pick(KINDS)) {
      case "register": ops.push({ id, client, node, invokedAtMs, completedAtMs, outcome, kind: "register", service: "web", instance, address: "10.0.0.1", port: 80 }); break;
      case "deregister": ops.push({ id, client, node, invokedAtMs, completedAtMs, outcome, kind: "deregister", service: "web", instance }); break;
      case "read": ops.push({ id, client, node, invokedAtMs, completedAtMs, outcome, kind: "read", service: "web", consistency: "linearizable" }); break;
      case "cert": ops.push({ id, client, node, invokedAtMs, completedAtMs, outcome, kind: "cert", spiffeId: "spiffe://cairn/web" }); break;
      case "heartbeat": ops.push({ id, client, node, invokedAtMs, completedAtMs, outcome, kind: "heartbeat", instance, checkId: `ttl-${instance}` }); break;
      case "health": ops.push({ id, client, node, invokedAtMs, completedAtMs, outcome, kind: "health", instance }); break;
    }
  }
  return ops;
}

function historyOf(opCount: number, extra: Partial<RunHistory> = {}): RunHistory {
  return {
    settings: { nodes: 3, durationMs: runDurationMs, nemeses: ["crash", "partition-isolate", "clock-jump"], leaderWaitMs: 5000, ttlMs: 3000, network: "netns", seed: 42 },
    ops: opsOf(opCount, 7),
    watches: [],
    faults: FAULTS,
    observations: observationsOf(),
    roleChanges: [],
    finalReads: [],
    abandonedInstances: [],
    ...extra,
  };
}

const VERDICTS: readonly Verdict[] = [
  { checker: "linearizability", ok: true, anomalies: [], stats: { keys: 120, ops: 4000 } },
  {
    checker: "lost-writes", ok: false,
    anomalies: [{ message: "acknowledged registration i7 is missing <script>alert(1)</script>", opIds: [7], atMs: 12_500 }],
    stats: { acknowledged: 900, lost: 1 },
  },
  { checker: "availability", ok: true, anomalies: [], stats: { "partition-isolate failed share": 0.0125, "crash failed share": 0.03, "no fault failed share": 0 } },
];

describe("the timeline page", () => {
  const page = renderTimeline(historyOf(4000), VERDICTS);

  test("is one complete HTML document that fetches nothing and runs no script", () => {
    assert.match(page, /^<!DOCTYPE html>/);
    assert.match(page, /<\/html>$/);
    assert.doesNotMatch(page, /<script|\bsrc=|\bhref=|@import|<link/i);
  });

  test("the header gives the run, the totals and each verdict", () => {
    assert.match(page, /3 nodes · 1m 0s · network netns · seed 42 · 4,000 ops · 1 anomalies · 1 lost/);
    assert.match(page, /linearizability ok \(0\)/);
    assert.match(page, /lost-writes FAIL \(1\)/);
  });

  test("every fault is a band labelled with its detail, escaped", () => {
    assert.match(page, /<text class="band"[^>]*>isolated n2 \(leader\)</);
    assert.match(page, /<text class="after-band"[^>]*>killed n1 &amp; restarted</, "a label too long for its band runs on after it");
    assert.match(page, /<text class="band"[^>]*>n3 clock \+40s</);
    assert.match(page, /<title>killed n1 &amp; restarted \[crash; nodes n1\] 30.000 s to 35.000 s/);
    for (const nemesis of ["partition-isolate", "crash", "clock-jump"]) assert.match(page, new RegExp(`>${nemesis}</text>`));
  });

  test("every node has one lane, with the leader, the term change and the crash's hole in it", () => {
    for (const node of nodeNames) assert.equal(page.split(`data-node="${node}"`).length - 1, 1, `one lane for ${node}`);
    assert.match(page, />t1</);
    assert.match(page, />t2</);
    assert.match(page, /term 1 → 2/);
    assert.match(page, /n1: unreachable/);
  });

  test("an anomaly's message is listed and marked on the axis, escaped", () => {
    const escaped = "acknowledged registration i7 is missing &lt;script&gt;alert(1)&lt;/script&gt;";
    assert.equal(page.split(escaped).length - 1, 2, "once in the list, once in the marker's tooltip");
    assert.match(page, /class="anomaly"/);
    assert.doesNotMatch(page, /<script>/);
  });

  test("availability by fault and every verdict's stats are tables", () => {
    assert.match(page, /<th>partition-isolate failed share<\/th><td>0.0125<\/td>/);
    assert.match(page, /<th>acknowledged<\/th><td>900<\/td>/);
    assert.match(page, /<th>keys<\/th><td>120<\/td>/);
  });

  test("a node that was never polled still gets a lane", () => {
    const withLearner = renderTimeline(historyOf(10, { faults: [...FAULTS, { nemesis: "membership", detail: "added n4", nodes: ["n4"], startMs: 20_000, endMs: 25_000 }] }), []);
    assert.match(withLearner, /data-node="n4"/);
    assert.match(withLearner, /n4 \(never polled\)/);
    assert.match(withLearner, /n\/a lost/);
  });

  test("an empty run renders", () => {
    const empty = renderTimeline({ ...historyOf(0), faults: [], observations: [] }, []);
    assert.match(empty, /0 ops · 0 anomalies · n\/a lost/);
    assert.match(empty, /no verdicts/);
  });

  test("200k operations make a page of a few MB at most, quickly", (t) => {
    const pageBytesMax = 3 * 1024 * 1024;
    const history = historyOf(200_000);
    const startedMs = performance.now();
    const big = renderTimeline(history, VERDICTS);
    const tookMs = performance.now() - startedMs;
    assert.ok(big.length < pageBytesMax, `page is ${big.length} bytes`);
    assert.match(big, /of 200,000 operations drawn/);
    // The brief asks for under 1 s at 100k; the bound here is loose because the machine is shared.
    assert.ok(tookMs < 5000, `took ${tookMs} ms`);
    t.diagnostic(`200k operations: ${Math.round(tookMs)} ms, ${big.length} bytes`);
  });

  test("is the same page every time for the same run", () => {
    assert.equal(renderTimeline(historyOf(4000), VERDICTS), page);
  });
});

describe("leader lanes", () => {
  const observe = (atMs: number, role: string, term: number): ClusterObservation => ({ atMs, node: "n1", role, term, leader: "", commitIndex: 0 });

  test("polls in one state merge, a hole over the bound is unreachable, and a new term is marked", () => {
    const [lane] = leaderLanes([observe(0, "follower", 1), observe(500, "follower", 1), observe(3000, "leader", 2), observe(3500, "leader", 2)], ["n1"], 1000);
    // The last poll stands for as long as the one before it: 3500 + 500.
    assert.deepEqual(lane.segments.map((s) => [s.state, s.startMs, s.endMs]), [["follower", 0, 500], ["unreachable", 500, 3000], ["leader", 3000, 4000]]);
    assert.deepEqual(lane.termChanges, [{ atMs: 3000, fromTerm: 1, toTerm: 2 }]);
  });
});

describe("scatter thinning", () => {
  const frame: ScatterFrame = { xPxOfMs: (ms) => ms / 100, heightPx: 300, latency: { minMs: 1, maxMs: 10_000 }, unknownYPx: -7 };

  test("keeps every point under the bound and thins above it, never losing a lone outlier", () => {
    const ops = opsOf(50_000, 3);
    const outlier: Operation = { id: 50_000, client: "c", node: "n1", kind: "read", service: "web", consistency: "stale", invokedAtMs: 100, completedAtMs: 9_100, outcome: "ok" };
    assert.deepEqual(latencyRange(opColumns(ops)), { minMs: 0.1, maxMs: 1000 });
    assert.equal(scatterPoints(opColumns(ops), frame, 100_000).keptCount, 50_000);
    const thinned = scatterPoints(opColumns([...ops, outlier]), frame, 5000);
    assert.ok(thinned.keptCount <= 5000 && thinned.cellPx > 0, `kept ${thinned.keptCount}`);
    const reads = thinned.byClass.get("read") ?? [];
    const outlierX = frame.xPxOfMs(100);
    assert.ok(reads.some((value, i) => i % 2 === 0 && value === outlierX && reads[i + 1] < 10), "the outlier survives");
  });
});
