// What blocking queries and large reads share: one build per (query, index) for every reader,
// sliced sorting and encoding, and chunked answers; then the same through a real cluster, where
// many parked queries of one shape are answered alike, a client that hangs up frees its place,
// and a node shutting down answers its parked queries at once.

import assert from "node:assert/strict";
import { Agent, request } from "node:http";
import { after, before, describe, test } from "node:test";
import { type EncodedBody, JSON_WHOLE_BYTES_MAX, JsonArrayWriter, encodeArrayInSlices } from "../../src/common/json_chunks.js";
import { SharedAnswers } from "../../src/common/shared_answers.js";
import { SliceClock, TurnBudget, mergeInSlices, sortInSlices } from "../../src/common/slices.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";
import { ConsulEncoder, catalogService, serviceEntry } from "../../src/api/consul/shapes.js";
import type { Check, Instance } from "../../src/registry/model.js";

const body = (text: string): EncodedBody => ({ chunks: [Buffer.from(text)], bytes: Buffer.byteLength(text) });
const text = (b: EncodedBody): string => Buffer.concat(b.chunks).toString("utf8");

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

void describe("shared answers", () => {
  void test("readers of one (query, version) share one build; a newer version builds again and replaces it; an older one is built for its reader alone", async () => {
    const answers = new SharedAnswers();
    let builds = 0;
    const build = (t: string) => (): Promise<EncodedBody> => {
      builds++;
      return Promise.resolve(body(t));
    };
    const first = await Promise.all(Array.from({ length: 100 }, () => Promise.resolve(answers.get("q", 5, build("five")))));
    assert.equal(builds, 1);
    assert.ok(first.every((b) => text(b) === "five"));
    assert.equal(text(await answers.get("q", 5, build("again"))), "five", "a kept answer is served without a build");
    assert.equal(text(await answers.get("q", 6, build("six"))), "six");
    assert.equal(text(await answers.get("q", 4, build("four"))), "four");
    assert.equal(text(await answers.get("q", 6, build("not built"))), "six", "the older version did not replace the newer");
    assert.equal(builds, 3);
    assert.equal(answers.size, 1, "one entry per query: its latest version");
  });

  void test("kept answers are bounded in entries and bytes; one larger than the byte bound is shared while built, then not kept", async () => {
    const answers = new SharedAnswers({ entriesMax: 2, bytesMax: 10 });
    await answers.get("a", 1, () => Promise.resolve(body("aaaa")));
    await answers.get("b", 1, () => Promise.resolve(body("bbbb")));
    await answers.get("c", 1, () => Promise.resolve(body("cccc")));
    assert.equal(answers.size, 2, "the least recently used query is dropped");
    assert.ok(answers.bytes <= 10);
    let resolveBig: (b: EncodedBody) => void = () => undefined;
    let bigBuilds = 0;
    const bigBuild = (): Promise<EncodedBody> => {
      bigBuilds++;
      return new Promise((resolve) => { resolveBig = resolve; });
    };
    const readers = [1, 2, 3].map(() => Promise.resolve(answers.get("big", 1, bigBuild)));
    resolveBig(body("x".repeat(50)));
    assert.ok((await Promise.all(readers)).every((b) => b.bytes === 50));
    assert.equal(bigBuilds, 1, "readers that came while it was built shared it");
    await answers.get("big", 1, () => Promise.resolve(body("y".repeat(50))));
    assert.equal(bigBuilds, 1);
    assert.ok(answers.bytes <= 10, `${answers.bytes} bytes kept`);
  });

  void test("readers that joined a running build are released at most releasePerTurn per event-loop iteration", async () => {
    const answers = new SharedAnswers({ releasePerTurn: 10 });
    let finish: (b: EncodedBody) => void = () => undefined;
    const build = (): Promise<EncodedBody> => new Promise((resolve) => { finish = resolve; });
    let released = 0;
    const readers = Array.from({ length: 100 }, () => Promise.resolve(answers.get("q", 1, build)).then(() => { released++; }));
    finish(body("[]"));
    const perTurn: number[] = [];
    while (released < 100) {
      const before = released;
      await turns(1);
      perTurn.push(released - before);
    }
    await Promise.all(readers);
    // The first reader holds the build itself; the 99 that joined come out ten at a time.
    assert.ok(Math.max(...perTurn) <= 11, `released per iteration: ${perTurn.join(",")}`);
  });
});

void describe("sliced work", () => {
  void test("sortInSlices sorts as Array.prototype.sort does, stably, at every size around its run length", async () => {
    const random = new SeededRandom(1);
    for (const n of [0, 1, 2, 1023, 1024, 1025, 3000, 5000]) {
      const items = Array.from({ length: n }, (_, i) => ({ key: random.nextInt(50), i }));
      const byKey = (a: { key: number }, b: { key: number }): number => a.key - b.key;
      assert.deepEqual(await sortInSlices(items, byKey), [...items].sort(byKey), `n=${n}`);
    }
  });

  void test("sorting 200,000 items yields to the event loop: timers run while it sorts", async () => {
    const items = Array.from({ length: 200_000 }, (_, i) => `k${(i * 7919) % 200_000}`);
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 0);
    try {
      const sorted = await sortInSlices(items, (a, b) => (a < b ? -1 : a > b ? 1 : 0), new SliceClock(1));
      assert.deepEqual(sorted, [...items].sort());
    } finally {
      clearInterval(timer);
    }
    assert.ok(ticks > 0, "no timer ran during the sort");
  });

  void test("a TurnBudget runs what fits at once, the rest in order in later iterations, and always one piece per iteration however large", async () => {
    const budget = new TurnBudget(100);
    const ran: string[] = [];
    budget.run(60, () => ran.push("a"));
    budget.run(30, () => ran.push("b"));
    budget.run(30, () => ran.push("c"));
    budget.run(5, () => ran.push("d"));
    assert.deepEqual(ran, ["a", "b"], "what fits runs at once; the rest waits, and nothing overtakes it");
    assert.equal(budget.queued, 2);
    await turns(1);
    assert.deepEqual(ran, ["a", "b", "c", "d"]);
    budget.run(500, () => ran.push("huge"));
    budget.run(1, () => ran.push("after"));
    assert.deepEqual(ran.slice(4), [], "an iteration that has spent its budget runs nothing more");
    await turns(1);
    assert.deepEqual(ran.slice(4), ["huge"], "a piece larger than the budget runs alone");
    await turns(1);
    assert.deepEqual(ran.slice(4), ["huge", "after"]);
  });

  void test("mergeInSlices merges two sorted lists, taking the first list's item on ties", async () => {
    const a = [{ k: 1, from: "a" }, { k: 3, from: "a" }];
    const b = [{ k: 1, from: "b" }, { k: 2, from: "b" }, { k: 4, from: "b" }];
    const merged = await mergeInSlices(a, b, (x, y) => x.k - y.k);
    assert.deepEqual(merged.map((x) => `${x.k}${x.from}`), ["1a", "1b", "2b", "3a", "4b"]);
  });

  void test("a JSON array is written in chunks of at most the chunk size (an item larger gets its own), and multi-byte text survives the cuts; up to JSON_WHOLE_BYTES_MAX it is joined into one", async () => {
    const small = new JsonArrayWriter("[", "]", 64);
    for (let i = 0; i < 50; i++) small.item(JSON.stringify({ i }));
    const joined = small.finish();
    assert.equal(joined.chunks.length, 1);
    assert.equal((JSON.parse(joined.chunks[0].toString()) as unknown[]).length, 50);

    const writer = new JsonArrayWriter("[", "]", 64);
    const items = Array.from({ length: 50 }, (_, i) => JSON.stringify({ i, name: `é€😀-${i}` }));
    for (const item of items) writer.item(item);
    writer.item(JSON.stringify("x".repeat(200)));
    // Past the joining bound, so the chunks stay as written.
    writer.item(JSON.stringify("y".repeat(JSON_WHOLE_BYTES_MAX)));
    const encoded = writer.finish();
    assert.ok(encoded.chunks.length > 10);
    assert.equal(encoded.chunks.filter((c) => c.length > 64).length, 2, `only the two long items' chunks are longer: ${encoded.chunks.map((c) => c.length).join(",")}`);
    assert.equal(encoded.bytes, encoded.chunks.reduce((n, c) => n + c.length, 0));
    const parsed = JSON.parse(Buffer.concat(encoded.chunks).toString("utf8")) as unknown[];
    assert.equal(parsed.length, 52);
    assert.deepEqual(parsed[49], { i: 49, name: "é€😀-49" });

    const wrapped = await encodeArrayInSlices([1, 2, 3, 4], (n) => n % 2 === 0, (n) => String(n), { open: '{"index":7,"items":[', close: "]}" });
    assert.deepEqual(JSON.parse(Buffer.concat(wrapped.chunks).toString()), { index: 7, items: [2, 4] });
    assert.equal(Buffer.concat((await encodeArrayInSlices([], () => true, String)).chunks).toString(), "[]");
  });
});

void describe("Consul entries encoded straight to JSON", () => {
  void test("are exactly JSON.stringify of the shaped entries, for every kind of check, locality, meta and weights, with each node's part reused", () => {
    const ctx = { datacenter: "dc1" };
    const encoder = new ConsulEncoder(ctx);
    const check = (kind: Check["kind"], n: number): Check => ({
      checkId: `c-${n}`, name: `check ${n}`, kind, notes: "n\u00e9", ttlMs: kind === "ttl" ? 30_000 : 0, target: kind === "http" ? "http://x/" : kind === "ttl" ? "" : "h:1",
      intervalMs: kind === "ttl" ? 0 : 10_000, timeoutMs: kind === "ttl" ? 0 : 1000, deregisterCriticalAfterMs: n % 2 === 0 ? 60_000 : 0,
      status: n % 3 === 0 ? "critical" : "passing", output: `out "${n}"`, statusSinceMs: 1,
    });
    const kinds: Check["kind"][] = ["ttl", "http", "tcp", "grpc"];
    for (let i = 0; i < 40; i++) {
      const inst: Instance = {
        id: `svc-${i}`, service: "svc", address: i % 2 === 0 ? "" : `10.0.0.${i}`, port: i, tags: i % 3 === 0 ? [] : ["a", `t${i}`],
        meta: i % 4 === 0 ? {} : { k: `v${i}`, "__proto__x": "p" }, weights: { passing: 1 + (i % 2), warning: i % 3 }, zone: i % 5 === 0 ? "z1" : "",
        node: `n${i % 3}`, nodeAddress: i % 2 === 0 ? "127.0.0.1" : "::1",
        checks: Array.from({ length: i % 3 }, (_, n) => check(kinds[(i + n) % 4], n)), createIndex: i + 1, modifyIndex: i + 2,
      };
      assert.equal(encoder.healthEntry(inst), JSON.stringify(serviceEntry(inst, ctx)));
      assert.equal(encoder.catalogEntry(inst), JSON.stringify(catalogService(inst, ctx)));
    }
  });
});

// ---------------------------------------------------------------- through a real cluster

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

const PARKED = 2000;
/** A socket for every query in flight (health, native, and the probes beside them). */
const SOCKETS = 2 * PARKED + 64;
const agent = new Agent({ keepAlive: true, maxSockets: SOCKETS, maxFreeSockets: SOCKETS });

function call(node: ProcessNode, method: string, path: string, payload?: unknown, onRequest?: (destroy: () => void) => void): Promise<Answer> {
  const [host, port] = node.info.http.split(":");
  const sent = payload === undefined ? undefined : JSON.stringify(payload);
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), method, path, agent, headers: sent === undefined ? {} : { "content-type": "application/json" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    onRequest?.(() => req.destroy());
    req.end(sent);
  });
}

async function parked(node: ProcessNode): Promise<number> {
  return (JSON.parse((await call(node, "GET", "/v1/status/runtime")).body) as { blockingQueries: number }).blockingQueries;
}

void describe("blocking queries through a cluster", () => {
  let cluster: ProcessCluster | undefined;
  let leader: ProcessNode;
  let follower: ProcessNode;

  before(async () => {
    cluster = await ProcessCluster.start(3);
    leader = await cluster.agreedLeader();
    follower = cluster.nodes.find((n) => n !== leader) as ProcessNode;
  });

  after(async () => {
    agent.destroy();
    await cluster?.close();
  });

  void test(`${PARKED} parked health queries and ${PARKED / 4} native ones on a follower are all answered after one change, each kind with the same answer and index`, { timeout: 60_000 }, async () => {
    const reg = await call(leader, "PUT", "/v1/agent/service/register", { Name: "shared", ID: "shared-1", Port: 1, Check: { TTL: "30s", Status: "passing" } });
    assert.equal(reg.status, 200, reg.body);
    const first = await waitFor(async () => {
      const res = await call(follower, "GET", "/v1/health/service/shared?stale");
      return (JSON.parse(res.body) as unknown[]).length === 1 ? res : undefined;
    }, 10_000, () => "the follower never listed shared-1");
    const index = Number(first.headers["x-consul-index"]);
    const base = await parked(follower);
    const health = Array.from({ length: PARKED }, (_, i) => call(follower, "GET", `/v1/health/service/shared?index=${index}&wait=1m${i % 2 === 0 ? "&passing" : ""}`));
    const native = Array.from({ length: PARKED / 4 }, () => call(follower, "GET", `/v1/registry/services/shared/instances?index=${index}&wait=1m`));
    await waitFor(async () => ((await parked(follower)) >= base + PARKED * 1.25 ? true : undefined), 30_000, () => "the queries never all parked");

    const change = await call(leader, "PUT", "/v1/agent/service/register", { Name: "shared", ID: "shared-2", Port: 2 });
    assert.equal(change.status, 200);
    const answers = await Promise.all(health);
    const all = answers.filter((_, i) => i % 2 === 1);
    const passing = answers.filter((_, i) => i % 2 === 0);
    for (const group of [all, passing]) {
      assert.ok(group.every((a) => a.status === 200 && a.body === group[0].body), "one answer per query shape");
      assert.ok(group.every((a) => a.headers["x-consul-index"] === group[0].headers["x-consul-index"]));
    }
    assert.ok(Number(all[0].headers["x-consul-index"]) > index);
    assert.deepEqual((JSON.parse(all[0].body) as { Service: { ID: string } }[]).map((e) => e.Service.ID), ["shared-1", "shared-2"]);
    assert.equal(all[0].headers["x-consul-knownleader"], "true");
    assert.match(String(all[0].headers["content-type"]), /^application\/json/);
    const nativeAnswers = await Promise.all(native);
    assert.ok(nativeAnswers.every((a) => a.status === 200 && a.body === nativeAnswers[0].body));
    const listed = JSON.parse(nativeAnswers[0].body) as { index: number; instances: { id: string }[] };
    assert.deepEqual(listed.instances.map((i) => i.id), ["shared-1", "shared-2"]);
    assert.equal(String(listed.index), nativeAnswers[0].headers["x-cairn-index"]);
    await waitFor(async () => ((await parked(follower)) === base ? true : undefined), 10_000, () => "answered queries still counted as parked");
  });

  void test("a client that hangs up frees its parked query at once", async () => {
    const base = await parked(follower);
    const destroys: (() => void)[] = [];
    const queries = Array.from({ length: 20 }, () => call(follower, "GET", "/v1/health/service/nobody?index=1&wait=5m", undefined, (d) => destroys.push(d)).catch(() => undefined));
    await waitFor(async () => ((await parked(follower)) === base + 20 ? true : undefined), 10_000, () => "not parked");
    for (const d of destroys) d();
    await Promise.all(queries);
    await waitFor(async () => ((await parked(follower)) === base ? true : undefined), 10_000, () => "hung-up queries are still parked");
  });

  void test("GET /v1/status/runtime reports the event-loop delay since the previous call, memory and parked queries", async () => {
    await call(follower, "GET", "/v1/status/runtime");
    const res = await call(follower, "GET", "/v1/status/runtime");
    assert.equal(res.status, 200);
    const r = JSON.parse(res.body) as { eventLoopDelayMs: { p50: number; p99: number; max: number }; windowMs: number; rssBytes: number; heapUsedBytes: number; blockingQueries: number };
    assert.ok(r.eventLoopDelayMs.p50 <= r.eventLoopDelayMs.p99 && r.eventLoopDelayMs.p99 <= r.eventLoopDelayMs.max);
    assert.ok(r.windowMs >= 0 && r.windowMs < 10_000, "the window began at the previous call");
    assert.ok(r.rssBytes > r.heapUsedBytes && r.heapUsedBytes > 0);
    assert.equal(typeof r.blockingQueries, "number");
  });

  void test("a node shutting down answers its parked queries at once and exits", { timeout: 30_000 }, async () => {
    const base = await parked(follower);
    const queries = Array.from({ length: 50 }, () => call(follower, "GET", "/v1/health/service/shared?index=999999&wait=10m"));
    await waitFor(async () => ((await parked(follower)) === base + 50 ? true : undefined), 10_000, () => "not parked");
    const code = await follower.stop();
    assert.equal(code, 0);
    const answers = await Promise.all(queries);
    assert.ok(answers.every((a) => a.status === 200), answers.map((a) => a.status).join(","));
  });
});
