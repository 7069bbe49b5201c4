// Failover under load, with real processes: the leader is killed with kill -9 while hundreds of
// registrations are in flight on every node. The two nodes that stay up hold what meets the
// election (the driver's leader wait) and answer it once a new leader is elected, so clients see a
// pause, not errors; the only 503 a survivor may give is for a request it had already forwarded to
// the leader when the leader died, whose outcome nobody can know. Nothing acknowledged is lost.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

/** Registrations in all, sent round robin to the three nodes, one every LAUNCH_INTERVAL_MS. */
const REGISTRATIONS = 400;
const LAUNCH_INTERVAL_MS = 5;
/** The leader is killed once this many registrations have been sent: about 0.6 s into the run. */
const KILL_AFTER_LAUNCHES = 120;
const SERVICE = "failover-web";
/** The driver's message when a forward was cut off by the leader's death: the request may have been applied. */
const OUTCOME_UNKNOWN = /did not answer .*; the request may or may not have been applied/;

interface Outcome {
  readonly id: string;
  readonly node: ProcessNode;
  readonly startedAtMs: number;
  readonly endedAtMs: number;
  /** The HTTP status, or undefined when the connection failed. */
  readonly status: number | undefined;
  readonly body: string;
}

async function register(node: ProcessNode, id: string): Promise<Outcome> {
  const startedAtMs = performance.now();
  try {
    const res = await fetch(node.url("/v1/agent/service/register"), {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ID: id, Name: SERVICE, Port: 8080 }),
    });
    const body = await res.text();
    return { id, node, startedAtMs, endedAtMs: performance.now(), status: res.status, body };
  } catch (err) {
    return { id, node, startedAtMs, endedAtMs: performance.now(), status: undefined, body: String((err as Error).cause ?? err) };
  }
}

async function catalogIds(node: ProcessNode, stale: boolean): Promise<Set<string>> {
  const res = await fetch(node.url(`/v1/catalog/service/${SERVICE}${stale ? "?stale" : ""}`));
  assert.equal(res.status, 200, `catalog read on ${node.info.id}: ${await res.clone().text()}`);
  return new Set(((await res.json()) as { ServiceID: string }[]).map((s) => s.ServiceID));
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0;
}

void describe("failover under load, real processes", () => {
  let cluster: ProcessCluster;

  before(async () => {
    cluster = await ProcessCluster.start(3);
  });

  after(async () => {
    await cluster.close();
  });

  void test("kill -9 of the leader during 400 concurrent registrations: survivors answer 200 (or, for a request already forwarded to the dead leader, outcome unknown), and nothing acknowledged is lost", async (t) => {
    const leader = await cluster.agreedLeader();
    const survivors = cluster.nodes.filter((n) => n !== leader);
    const inFlight: Promise<Outcome>[] = [];
    let killedAtMs = Number.POSITIVE_INFINITY;
    for (let i = 0; i < REGISTRATIONS; i++) {
      if (i === KILL_AFTER_LAUNCHES) {
        // Not awaited: registrations keep going out while the process dies.
        void leader.kill9().then(() => { killedAtMs = performance.now(); });
      }
      inFlight.push(register(cluster.nodes[i % cluster.nodes.length], `fo-${i}`));
      await new Promise((resolve) => setTimeout(resolve, LAUNCH_INTERVAL_MS));
    }
    const outcomes = await Promise.all(inFlight);
    assert.ok(Number.isFinite(killedAtMs), "the leader was killed");

    const toLeader = outcomes.filter((o) => o.node === leader);
    const toSurvivors = outcomes.filter((o) => o.node !== leader);
    const describe = (o: Outcome): string => `${o.id} on ${o.node.info.id} at +${Math.round(o.startedAtMs - killedAtMs)} ms: ${o.status ?? "no connection"} ${o.body}`;
    for (const o of toLeader) {
      assert.ok(o.status === 200 || o.status === undefined, `the killed leader answers 200 before its death, then nothing: ${describe(o)}`);
    }
    for (const o of toSurvivors) {
      if (o.status === 200) continue;
      assert.equal(o.status, 503, `a survivor answers 200 or 503: ${describe(o)}`);
      assert.match(o.body, OUTCOME_UNKNOWN, `a survivor's 503 must be an unknown outcome, never "no leader": ${describe(o)}`);
      assert.ok(o.startedAtMs < killedAtMs, `only a request already forwarded to the leader when it died may have an unknown outcome: ${describe(o)}`);
    }

    const latencies = toSurvivors.map((o) => o.endedAtMs - o.startedAtMs).sort((a, b) => a - b);
    const count = (list: readonly Outcome[], keep: (o: Outcome) => boolean): number => list.filter(keep).length;
    t.diagnostic(`to the killed leader ${leader.info.id}: ${toLeader.length} sent, ${count(toLeader, (o) => o.status === 200)} answered 200, ` +
      `${count(toLeader, (o) => o.status === undefined)} connection errors`);
    t.diagnostic(`to the survivors: ${toSurvivors.length} sent, ${count(toSurvivors, (o) => o.status === 200)} answered 200, ` +
      `${count(toSurvivors, (o) => o.status === 503)} answered 503 (outcome unknown); latency p50 ${Math.round(percentile(latencies, 50))} ms, ` +
      `p99 ${Math.round(percentile(latencies, 99))} ms, max ${Math.round(latencies[latencies.length - 1] ?? 0)} ms`);

    // Every acknowledged registration is on every node, the restarted one included.
    const acknowledged = outcomes.filter((o) => o.status === 200).map((o) => o.id);
    leader.start();
    const missing = (ids: Set<string>): string[] => acknowledged.filter((id) => !ids.has(id));
    await waitFor(async () => {
      const ids = await catalogIds(leader, true).catch(() => undefined);
      return ids !== undefined && missing(ids).length === 0 ? true : undefined;
    }, 15_000, () => `the restarted ${leader.info.id} did not catch up${leader.lastWords()}`);
    for (const node of [...survivors, leader]) {
      const lost = missing(await catalogIds(node, false));
      assert.deepEqual(lost, [], `acknowledged registrations missing on ${node.info.id}`);
    }
  });
});
