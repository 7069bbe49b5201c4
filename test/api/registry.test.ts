// The native registry API against a real three-node cluster.

import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

interface InstanceView { id: string; status: string; address: string; checks: { id: string; status: string; output: string }[] }

async function call(node: ProcessNode, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(node.url(path), {
    method,
    ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>), headers: res.headers };
}

async function instances(node: ProcessNode, service: string, query = ""): Promise<InstanceView[]> {
  const r = await call(node, "GET", `/v1/registry/services/${service}/instances${query}`);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json.instances as InstanceView[];
}

void describe("native registry API", () => {
  let cluster: ProcessCluster;
  let n1: ProcessNode;
  let n2: ProcessNode;
  let n3: ProcessNode;

  before(async () => {
    cluster = await ProcessCluster.start(3, ["--deregister-critical-min", "1s"]);
    await cluster.agreedLeader();
    [n1, n2, n3] = cluster.nodes as [ProcessNode, ProcessNode, ProcessNode];
  });

  after(async () => {
    await cluster.close();
  });

  void test("a registration acknowledged by node 2 is visible at once to a default read on node 3", async () => {
    for (let i = 0; i < 10; i++) {
      const r = await call(n2, "POST", "/v1/registry/instances", { name: "api", id: `api-${i}`, address: "10.1.0.1", port: 8000 + i });
      assert.equal(r.status, 200, JSON.stringify(r.json));
      const seen = await instances(n3, "api");
      assert.ok(seen.some((x) => x.id === `api-${i}`), `api-${i} not yet visible on node 3`);
    }
  });

  void test("instances are filtered by health: passing, not critical, all", async () => {
    const mk = (id: string, status: string) => call(n1, "POST", "/v1/registry/instances", {
      name: "pay", id, port: 1, checks: [{ ttl: "60s", status }],
    });
    await mk("pay-ok", "passing");
    await mk("pay-warn", "warning");
    await mk("pay-bad", "critical");
    const ids = async (q: string) => (await instances(n2, "pay", q)).map((i) => i.id).sort();
    assert.deepEqual(await ids("?health=passing"), ["pay-ok"]);
    assert.deepEqual(await ids("?health=notCritical"), ["pay-ok", "pay-warn"]);
    assert.deepEqual(await ids(""), ["pay-bad", "pay-ok", "pay-warn"]);
    assert.deepEqual(await instances(n2, "nothing-here"), [], "an unknown service is an empty list");
  });

  void test("a blocking read wakes for its own service, and not for another's writes", async () => {
    const first = await call(n3, "GET", "/v1/registry/services/blk/instances");
    const index = Number(first.headers.get("x-cairn-index"));
    assert.ok(index >= 1);
    const started = Date.now();
    const blocked = call(n3, "GET", `/v1/registry/services/blk/instances?index=${index}&wait=1500ms`);
    await call(n1, "POST", "/v1/registry/instances", { name: "other", id: "other-1", port: 1 });
    const unwoken = await blocked;
    assert.ok(Date.now() - started >= 1400, "a write to another service must not wake it");
    assert.equal(Number(unwoken.headers.get("x-cairn-index")), index);

    const woken = call(n3, "GET", `/v1/registry/services/blk/instances?index=${index}&wait=20s`);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    await call(n2, "POST", "/v1/registry/instances", { name: "blk", id: "blk-1", port: 1 });
    const r = await woken;
    assert.ok(Date.now() - t0 < 5000);
    assert.ok(Number(r.headers.get("x-cairn-index")) > index);
    assert.deepEqual((r.json.instances as InstanceView[]).map((i) => i.id), ["blk-1"]);
  });

  void test("a TTL check heartbeated through any node stays passing, then lapses to critical", async () => {
    await call(n1, "POST", "/v1/registry/instances", { name: "ttl", id: "ttl-1", port: 1, checks: [{ ttl: "1s", status: "passing" }] });
    for (let i = 0; i < 6; i++) {
      const hb = await call(cluster.nodes[i % 3], "PUT", "/v1/registry/checks/service:ttl-1", { status: "passing", output: "fine" });
      assert.equal(hb.status, 200, JSON.stringify(hb.json));
      await new Promise((r) => setTimeout(r, 300));
    }
    assert.equal((await instances(n2, "ttl"))[0]?.status, "passing");
    await waitFor(async () => ((await instances(n2, "ttl"))[0]?.status === "critical" ? true : undefined), 5000, () => "TTL did not lapse");
  });

  void test("an instance critical longer than its deregister-after is removed", async () => {
    await call(n1, "POST", "/v1/registry/instances", {
      name: "gone", id: "gone-1", port: 1, checks: [{ ttl: "300ms", status: "passing", deregisterCriticalAfter: "1s" }],
    });
    await waitFor(async () => ((await instances(n3, "gone")).length === 0 ? true : undefined), 10_000, () => "not deregistered");
  });

  void test("deregistering removes the instance and its checks; an unknown id is a 404", async () => {
    const r = await call(n3, "DELETE", "/v1/registry/instances/api-0");
    assert.equal(r.status, 200);
    assert.equal((await call(n1, "GET", "/v1/registry/instances/api-0")).status, 404);
    assert.equal((await call(n1, "DELETE", "/v1/registry/instances/api-0")).status, 404);
    assert.equal((await call(n1, "PUT", "/v1/registry/checks/service:api-0", { status: "passing" })).status, 404);
  });

  for (const [name, body, field] of [
    ["malformed JSON", '{"name":', /JSON/],
    ["a wrong type", { name: "x", port: "eighty" }, /port/],
    ["an unknown field", { name: "x", colour: "red" }, /colour/],
    ["an invalid name", { name: "no spaces allowed" }, /Name/],
    ["a missing name", { port: 1 }, /name/],
    ["a bad duration", { name: "x", checks: [{ ttl: "soon" }] }, /TTL/],
    ["two check kinds at once", { name: "x", checks: [{ ttl: "1s", tcp: "h:1" }] }, /exactly one/],
    ["too many tags", { name: "x", tags: Array.from({ length: 65 }, (_, i) => `t${i}`) }, /tags/],
  ] as const) {
    void test(`${name} is a 400 naming the problem, and nothing is applied`, async () => {
      const r = await call(n2, "POST", "/v1/registry/instances", body);
      assert.equal(r.status, 400, JSON.stringify(r.json));
      assert.match(String(r.json.error), field);
      assert.deepEqual(await instances(n2, "x"), []);
    });
  }

  void test("an oversized body is a 413", async () => {
    // The server answers before the upload ends, so read the answer even if the write breaks.
    const [host, port] = n1.info.http.split(":") as [string, string];
    const payload = JSON.stringify({ name: "big", meta: { a: "x".repeat(1024 * 1024 + 1024) } });
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host, port: Number(port), method: "POST", path: "/v1/registry/instances",
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", (err) => setTimeout(() => reject(err), 500));
      req.end(payload);
    });
    assert.equal(status, 413);
  });
});
