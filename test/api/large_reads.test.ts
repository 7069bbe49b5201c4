// A service of 100,000 instances read in full, several times at once, on the leader of a real
// three-node cluster: the answers are complete and in Consul's shapes, and the leader keeps its
// pace meanwhile (its event loop is never held long, no election, writes commit).
//
// The instances are registered over HTTP, 512 at a time, on the leader: ~15-20 s here. All but a
// hundred have no checks: the leader's health scan walks every checked instance in one call, and
// that is not what this test is about.

import assert from "node:assert/strict";
import { Agent, request } from "node:http";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode } from "../support/cluster.js";

const INSTANCES = 100_000;
const CHECKED_INSTANCES = 100;
const SERVICE = "big";
/**
 * Registrations in flight at once. Each Raft round commits what the leader holds, so the rounds'
 * fsyncs set the pace until a round carries hundreds: 512 register 100,000 in about two thirds of
 * the time 128 took, and with less work on the followers (fewer, larger appends).
 */
const REGISTER_CONCURRENCY = 512;
/** Full reads in flight at once, of each kind (Consul's health, Cairn's instances). */
const READERS_PER_KIND = 3;
/** The leader's event loop, sampled while the reads run: its 99th percentile, at most. */
const EVENT_LOOP_P99_MS_MAX = 50;
/** A registration made while the reads run is acknowledged within this long (it takes ~10 ms idle). */
const WRITE_DURING_READS_MS_MAX = 1000;
const WRITE_INTERVAL_MS = 100;

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

const agent = new Agent({ keepAlive: true, maxSockets: REGISTER_CONCURRENCY + 2 * READERS_PER_KIND + 8 });

function call(node: ProcessNode, method: string, path: string, body?: unknown): Promise<Answer> {
  const [host, port] = node.info.http.split(":");
  const text = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), method, path, agent, headers: text === undefined ? {} : { "content-type": "application/json" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${path} took over 60 s`)));
    req.on("error", reject);
    req.end(text);
  });
}

async function registerAll(leader: ProcessNode): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: REGISTER_CONCURRENCY }, async () => {
    for (let i = next++; i < INSTANCES; i = next++) {
      const checked = i < CHECKED_INSTANCES;
      const res = await call(leader, "POST", "/v1/registry/instances", {
        name: SERVICE, id: `${SERVICE}-${String(i).padStart(6, "0")}`, address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, port: 8000 + (i % 1000),
        tags: [i % 2 === 0 ? "even" : "odd"], ...(checked ? { checks: [{ ttl: "10m", status: i % 4 === 0 ? "warning" : "passing" }] } : {}),
      });
      assert.equal(res.status, 200, res.body.toString());
    }
  }));
}

interface HealthEntry {
  Node: { Node: string; Address: string; Datacenter: string };
  Service: { ID: string; Service: string; Tags: string[]; Address: string; Port: number; CreateIndex: number; ModifyIndex: number };
  Checks: { CheckID: string; Status: string; ServiceID: string }[];
}

void describe("large reads on the leader", () => {
  let cluster: ProcessCluster | undefined;
  let leader: ProcessNode;
  let registerMs = 0;

  before(async () => {
    cluster = await ProcessCluster.start(3);
    leader = await cluster.agreedLeader();
    const startMs = performance.now();
    await registerAll(leader);
    registerMs = performance.now() - startMs;
  });

  after(async () => {
    agent.destroy();
    await cluster?.close();
  });

  void test(`${READERS_PER_KIND} Consul health, ${READERS_PER_KIND} native and one agent read of ${INSTANCES} instances at once, and the catalog: complete answers, the leader's loop never held long, no election, writes commit`, { timeout: 120_000 }, async (t) => {
    const c = cluster as ProcessCluster;
    const before = await leader.cluster();
    // The runtime route's window starts at its previous call.
    assert.equal((await call(leader, "GET", "/v1/status/runtime")).status, 200);

    let reading = true;
    const writeLatenciesMs: number[] = [];
    const writes = (async () => {
      for (let n = 0; reading; n++) {
        const startMs = performance.now();
        const res = await call(leader, "POST", "/v1/registry/instances", { name: "during", id: `during-${n}`, port: 1 });
        assert.equal(res.status, 200, res.body.toString());
        writeLatenciesMs.push(performance.now() - startMs);
        await new Promise((resolve) => setTimeout(resolve, WRITE_INTERVAL_MS));
      }
    })();
    const readsStartMs = performance.now();
    const reads = await Promise.all([
      ...Array.from({ length: READERS_PER_KIND }, () => call(leader, "GET", `/v1/health/service/${SERVICE}`)),
      ...Array.from({ length: READERS_PER_KIND }, () => call(leader, "GET", `/v1/registry/services/${SERVICE}/instances`)),
      // The catalog, and the agent's own list (every instance here: the leader registered them all).
      call(leader, "GET", "/v1/catalog/services"),
      call(leader, "GET", "/v1/agent/services"),
    ]);
    const readsMs = performance.now() - readsStartMs;
    reading = false;
    await writes;
    const runtime = JSON.parse((await call(leader, "GET", "/v1/status/runtime")).body.toString()) as { eventLoopDelayMs: { p50: number; p99: number; max: number } };

    const health = reads.slice(0, READERS_PER_KIND);
    const native = reads.slice(READERS_PER_KIND, 2 * READERS_PER_KIND);
    const [catalog, agentServices] = reads.slice(2 * READERS_PER_KIND);
    assert.deepEqual((JSON.parse(catalog.body.toString()) as Record<string, string[]>)[SERVICE]?.sort(), ["even", "odd"]);
    const mine = JSON.parse(agentServices.body.toString()) as Record<string, { ID: string; Service: string }>;
    assert.equal(Object.keys(mine).filter((id) => mine[id].Service === SERVICE).length, INSTANCES);
    for (const res of health) {
      assert.equal(res.status, 200);
      assert.match(String(res.headers["content-type"]), /^application\/json/);
      assert.ok(Number(res.headers["x-consul-index"]) > 0);
      assert.equal(res.headers["content-length"], String(res.body.length));
    }
    // The readers shared one build: their answers are the same bytes.
    for (const res of health.slice(1)) assert.ok(res.body.equals(health[0].body), "every health reader got the same answer");
    const entries = JSON.parse(health[0].body.toString()) as HealthEntry[];
    assert.equal(entries.length, INSTANCES);
    const ids = entries.map((e) => e.Service.ID);
    assert.deepEqual(ids, [...ids].sort(), "in node order, then by ID (one node registered them all)");
    assert.equal(new Set(ids).size, INSTANCES);
    const first = entries[0];
    assert.equal(first.Service.ID, `${SERVICE}-000000`);
    assert.deepEqual(first.Service.Tags, ["even"]);
    assert.equal(first.Service.Address, "10.0.0.0");
    assert.equal(first.Node.Node, leader.info.id);
    assert.equal(first.Checks.length, 1);
    assert.equal(first.Checks[0].Status, "warning");
    assert.equal(entries.filter((e) => e.Checks.length === 1).length, CHECKED_INSTANCES);
    assert.deepEqual(entries[INSTANCES - 1].Checks, []);

    for (const res of native) {
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(native[0].body), "every native reader got the same answer");
    }
    const listed = JSON.parse(native[0].body.toString()) as { index: number; instances: { id: string; status: string }[] };
    assert.equal(listed.instances.length, INSTANCES);
    assert.equal(String(listed.index), native[0].headers["x-cairn-index"]);
    assert.equal(listed.instances.filter((i) => i.status === "warning").length, CHECKED_INSTANCES / 4);

    const p99 = runtime.eventLoopDelayMs.p99;
    assert.ok(p99 <= EVENT_LOOP_P99_MS_MAX, `the leader's event loop: p99 ${p99.toFixed(1)} ms (max ${runtime.eventLoopDelayMs.max.toFixed(1)} ms) during the reads`);
    assert.ok(writeLatenciesMs.length > 0, "a write was made during the reads");
    const slowestWriteMs = Math.max(...writeLatenciesMs);
    assert.ok(slowestWriteMs <= WRITE_DURING_READS_MS_MAX, `writes during the reads: ${writeLatenciesMs.map((ms) => ms.toFixed(0)).join(", ")} ms`);

    // No node saw an election: same leader, same term, everywhere.
    const views = await Promise.all(c.nodes.map((n) => n.cluster()));
    for (const v of views) {
      assert.equal(v.leader, leader.info.id, `${v.id} follows ${v.leader}`);
      assert.equal(v.term, before.term, `${v.id} is in term ${v.term}, the reads began in ${before.term}`);
    }
    t.diagnostic(`leader event loop during the reads: p50 ${runtime.eventLoopDelayMs.p50.toFixed(1)} p99 ${p99.toFixed(1)} max ${runtime.eventLoopDelayMs.max.toFixed(1)} ms; ` +
      `reads took ${readsMs.toFixed(0)} ms; ${writeLatenciesMs.length} writes meanwhile, slowest ${slowestWriteMs.toFixed(0)} ms; ` +
      `health answer ${(health[0].body.length / 1048576).toFixed(1)} MB, native ${(native[0].body.length / 1048576).toFixed(1)} MB; registering took ${registerMs.toFixed(0)} ms`);
  });
});
