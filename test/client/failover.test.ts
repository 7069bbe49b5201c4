// The client's failover across a cluster's nodes, against fake nodes on loopback: what is
// retried elsewhere (refused connections, timeouts, 503), what is final (4xx), and the bounds.

import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { freePort } from "../support/cluster.js";
import { CairnClient, CairnRequestError, CairnUnavailableError } from "../../src/client/client.js";
import { normalizeEndpoints } from "../../src/client/transport.js";
import { FakeNode, registryHandler } from "./fake_node.js";

const fixedRandom = (): number => 0.5;

void describe("client failover", () => {
  const nodes: FakeNode[] = [];
  const clients: CairnClient[] = [];

  async function node(handler = registryHandler()): Promise<FakeNode> {
    const n = await FakeNode.start(handler);
    nodes.push(n);
    return n;
  }

  function client(endpoints: string[], extra: Partial<ConstructorParameters<typeof CairnClient>[0]> = {}): CairnClient {
    const c = new CairnClient({ endpoints, random: fixedRandom, backoffBaseMs: 5, backoffMaxMs: 20, ...extra });
    clients.push(c);
    return c;
  }

  afterEach(async () => {
    await Promise.allSettled(clients.splice(0).map((c) => c.close()));
    await Promise.all(nodes.splice(0).map((n) => n.close()));
  });

  void test("a request whose connection is refused is retried on the next node, and the client stays there", async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const live = await node();
    const c = client([dead, live.url]);
    assert.deepEqual(await c.instances("web"), []);
    assert.equal(c.currentEndpoint, live.url);
    await c.instances("web");
    assert.equal(live.count("GET", "/v1/registry/services/web/instances"), 2);
  });

  void test("a 503 is retried on the next node", async () => {
    const busy = await node(() => ({ status: 503, body: { error: "no leader is known; retry after the election" } }));
    const live = await node();
    const c = client([busy.url, live.url]);
    const reg = await c.register({ name: "web", id: "web-1" });
    assert.equal(reg.id, "web-1");
    assert.equal(busy.count("POST", "/v1/registry/instances"), 1);
    assert.equal(live.count("POST", "/v1/registry/instances"), 1);
  });

  void test("a node that does not answer within requestTimeoutMs is abandoned for the next", async () => {
    const stuck = await node(() => "hang");
    const live = await node();
    const c = client([stuck.url, live.url], { requestTimeoutMs: 200 });
    const started = performance.now();
    await c.instances("web");
    const elapsedMs = performance.now() - started;
    assert.ok(elapsedMs >= 190 && elapsedMs < 2000, `took ${elapsedMs.toFixed(0)} ms`);
    assert.equal(live.seen.length, 1);
  });

  void test("a 4xx is not retried: it surfaces as CairnRequestError with the server's status and message", async () => {
    const refusing = await node(() => ({ status: 400, body: { error: "Name: is required", field: "Name" } }));
    const other = await node();
    const c = client([refusing.url, other.url]);
    await assert.rejects(c.register({ name: "" }), (err: unknown) => {
      assert.ok(err instanceof CairnRequestError);
      assert.equal(err.status, 400);
      assert.equal(err.body.error, "Name: is required");
      assert.equal(err.body.field, "Name");
      return true;
    });
    assert.equal(refusing.seen.length, 1);
    assert.equal(other.seen.length, 0);
  });

  void test("attempts are bounded: a cluster that only answers 503 fails after attemptsMax attempts, naming each failure", async () => {
    const a = await node(() => ({ status: 503, body: { error: "no leader" } }));
    const b = await node(() => ({ status: 503, body: { error: "no leader" } }));
    const c = client([a.url, b.url], { attemptsMax: 5 });
    await assert.rejects(c.instances("web"), (err: unknown) => {
      assert.ok(err instanceof CairnUnavailableError);
      assert.equal(err.failures.length, 5);
      assert.match(err.failures[0] ?? "", /503 no leader/);
      return true;
    });
    assert.equal(a.seen.length + b.seen.length, 5);
    // Round robin: 3 on the first node, 2 on the second.
    assert.equal(a.seen.length, 3);
  });


  void test("endpoints must be http(s) base URLs; a bad one is refused with what to give instead", () => {
    assert.deepEqual(normalizeEndpoints(["http://127.0.0.1:8501/", "https://a.example:1"]), ["http://127.0.0.1:8501", "https://a.example:1"]);
    assert.throws(() => new CairnClient({ endpoints: [] }), /at least one node/);
    assert.throws(() => new CairnClient({ endpoints: ["127.0.0.1:8501"] }), /must be an http|not a URL/);
    assert.throws(() => new CairnClient({ endpoints: ["http://127.0.0.1:8501/v1"] }), /without a path/);
    assert.throws(() => new CairnClient({ endpoints: ["http://127.0.0.1:1"], requestTimeoutMs: 0 }), /requestTimeoutMs/);
  });
});
