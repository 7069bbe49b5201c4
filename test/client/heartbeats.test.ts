// Registration and automatic TTL heartbeats, against fake nodes on loopback: what is sent, how
// often, what setStatus and deregister change, and what happens when a node dies.

import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { CairnClient, heartbeatIntervalMs, heartbeatLimits } from "../../src/client/client.js";
import { FakeNode, type SeenRequest, registryHandler, until } from "./fake_node.js";

const fixedRandom = (): number => 0.5;

function heartbeats(node: FakeNode): SeenRequest[] {
  return node.seen.filter((r) => r.method === "PUT" && r.pathname.startsWith("/v1/registry/checks/"));
}

void describe("registration and heartbeats", () => {
  const nodes: FakeNode[] = [];
  const clients: CairnClient[] = [];

  async function node(handler = registryHandler()): Promise<FakeNode> {
    const n = await FakeNode.start(handler);
    nodes.push(n);
    return n;
  }

  function client(endpoints: string[]): CairnClient {
    const c = new CairnClient({ endpoints, random: fixedRandom, backoffBaseMs: 5, backoffMaxMs: 20 });
    clients.push(c);
    return c;
  }

  afterEach(async () => {
    await Promise.allSettled(clients.splice(0).map((c) => c.close()));
    await Promise.all(nodes.splice(0).map((n) => n.close()));
  });

  void test("the heartbeat interval is a third of the TTL, shortened by jitter only, and bounded", () => {
    assert.equal(heartbeatIntervalMs(30_000, () => 0), 10_000);
    assert.equal(heartbeatIntervalMs(30_000, () => 0.999_999), Math.round(10_000 * (1 - heartbeatLimits.jitterFraction * 0.999_999)));
    assert.equal(heartbeatIntervalMs(90, () => 0), heartbeatLimits.intervalMinMs);
    assert.equal(heartbeatIntervalMs(24 * 3_600_000, () => 0), heartbeatLimits.intervalMaxMs);
  });

  void test("ttl shorthand registers a TTL check, heartbeats it before register resolves, then every ttl/3", async () => {
    const n = await node();
    const c = client([n.url]);
    const reg = await c.register({ name: "web", id: "web-1", port: 8080, tags: ["v1"], ttl: "600ms" });
    assert.deepEqual(reg.checkIds, ["service:web-1"]);
    const posted = n.seen.find((r) => r.method === "POST");
    assert.deepEqual(posted?.body, { name: "web", id: "web-1", port: 8080, tags: ["v1"], checks: [{ ttl: "600ms" }] });
    const first = heartbeats(n);
    assert.equal(first.length, 1, "the first heartbeat goes out before register resolves");
    assert.equal(first[0]?.url, "/v1/registry/checks/service%3Aweb-1");
    assert.deepEqual(first[0]?.body, { status: "passing", output: "" });

    await until(() => heartbeats(n).length >= 5, 5_000, "five heartbeats");
    const times = heartbeats(n).map((r) => r.atMs);
    // ttl/3 = 200 ms, jittered by 0.5 * 20% down: 180 ms; allow for a loaded scheduler, far inside the 600 ms TTL.
    for (let i = 1; i < times.length; i++) {
      const gapMs = (times[i]) - (times[i - 1]);
      assert.ok(gapMs >= 150 && gapMs < 400, `heartbeat gap ${gapMs.toFixed(0)} ms`);
    }
  });

  void test("each TTL check of an instance gets its generated id and its own heartbeat", async () => {
    const n = await node();
    const c = client([n.url]);
    const reg = await c.register({ name: "web", id: "web-2", checks: [{ ttl: "10s" }, { http: "http://127.0.0.1:1/health", interval: "10s" }, { ttl: "20s", id: "mine" }] });
    assert.deepEqual(reg.checkIds, ["service:web-2:1", "service:web-2:2", "mine"]);
    assert.deepEqual(reg.ttlCheckIds, ["service:web-2:1", "mine"]);
    assert.deepEqual(heartbeats(n).map((r) => r.url).sort(), ["/v1/registry/checks/mine", "/v1/registry/checks/service%3Aweb-2%3A1"]);
  });

  void test("setStatus is reported at once and by every later heartbeat", async () => {
    const n = await node();
    const c = client([n.url]);
    const reg = await c.register({ name: "web", id: "web-3", ttl: "450ms" });
    await reg.setStatus("warning", "disk 91% full");
    assert.deepEqual(heartbeats(n).at(-1)?.body, { status: "warning", output: "disk 91% full" });
    const before = heartbeats(n).length;
    await until(() => heartbeats(n).length >= before + 2, 3_000, "two more heartbeats");
    for (const h of heartbeats(n).slice(before)) assert.deepEqual(h.body, { status: "warning", output: "disk 91% full" });
  });

  void test("deregister sends DELETE and no heartbeat follows it", async () => {
    const n = await node();
    const c = client([n.url]);
    const reg = await c.register({ name: "web", id: "web-4", ttl: "300ms" });
    await reg.deregister();
    const deleted = n.seen.find((r) => r.method === "DELETE");
    assert.equal(deleted?.url, "/v1/registry/instances/web-4");
    const count = heartbeats(n).length;
    await new Promise((r) => setTimeout(r, 400)); // longer than the interval: a stray heartbeat would show
    assert.equal(heartbeats(n).length, count);
    assert.equal(c.registered.length, 0);
    await reg.deregister(); // idempotent
    assert.equal(n.count("DELETE", "/v1/registry/instances/"), 1);
  });

  void test("heartbeats fail over when the node they use dies, without missing the TTL", async () => {
    const a = await node();
    const b = await node();
    const c = client([a.url, b.url]);
    await c.register({ name: "web", id: "web-5", ttl: "600ms" });
    await until(() => heartbeats(a).length >= 2, 3_000, "heartbeats on the first node");
    const killedAt = performance.now();
    await a.close();
    await until(() => heartbeats(b).length >= 3, 3_000, "heartbeats on the second node");
    const firstOnB = heartbeats(b)[0]?.atMs;
    assert.ok(firstOnB - killedAt < 600, `first heartbeat on the surviving node ${(firstOnB - killedAt).toFixed(0)} ms after the kill`);
  });

  void test("a heartbeat answered 404 (the cluster forgot the check) registers the instance again", async () => {
    const base = registryHandler();
    let forget = false;
    const n = await node((req) => {
      if (forget && req.method === "PUT") {
        forget = false;
        return { status: 404, body: { error: "check service:web-6 is not registered" } };
      }
      return base(req);
    });
    const c = client([n.url]);
    await c.register({ name: "web", id: "web-6", ttl: "300ms" });
    forget = true;
    await until(() => n.count("POST", "/v1/registry/instances") === 2, 3_000, "a second registration");
    await until(() => heartbeats(n).length >= 4, 3_000, "heartbeats after registering again");
    assert.deepEqual(n.seen.filter((r) => r.method === "POST").map((r) => r.body), [
      { name: "web", id: "web-6", checks: [{ ttl: "300ms" }] },
      { name: "web", id: "web-6", checks: [{ ttl: "300ms" }] },
    ]);
  });

  void test("close() deregisters every instance the client registered and stops their heartbeats", async () => {
    const n = await node();
    const c = client([n.url]);
    await c.register({ name: "web", id: "web-7", ttl: "300ms" });
    await c.register({ name: "api", ttl: "300ms" });
    await c.close();
    assert.deepEqual(n.seen.filter((r) => r.method === "DELETE").map((r) => r.url).sort(), ["/v1/registry/instances/api", "/v1/registry/instances/web-7"]);
    const count = heartbeats(n).length;
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(heartbeats(n).length, count);
    await assert.rejects(c.register({ name: "late" }), /closed/);
  });
});
