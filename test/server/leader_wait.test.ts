// A node that cannot find a leader holds each write and linearizable read for --leader-wait, then
// answers 503 with Retry-After and says what happened: on every route that writes or reads
// through Raft, in Cairn's JSON shape on its own routes and in Consul's plain text on Consul's.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

const LEADER_WAIT_MS = 1500;
/** Each answer comes after the wait, and not much after it: a slow machine gets this much slack. */
const ANSWER_SLACK_MS = 1500;
const NO_LEADER = new RegExp(`no leader was elected within ${LEADER_WAIT_MS} ms`);

interface Route {
  readonly method: "GET" | "PUT" | "POST" | "DELETE";
  readonly path: string;
  readonly body?: unknown;
  /** Consul's routes answer errors in text, as Consul does; Cairn's own in JSON. */
  readonly consul?: true;
}

/** Every route that proposes, forwards to the leader, or reads linearizably. */
const ROUTES: readonly Route[] = [
  { method: "PUT", path: "/v1/kv/k", body: { value: "v2" } },
  { method: "DELETE", path: "/v1/kv/k" },
  { method: "GET", path: "/v1/kv/k" },
  { method: "POST", path: "/v1/registry/instances", body: { name: "api", id: "api-2", port: 2 } },
  { method: "DELETE", path: "/v1/registry/instances/api-1" },
  { method: "PUT", path: "/v1/registry/checks/service:api-1", body: { status: "passing" } },
  { method: "GET", path: "/v1/registry/services" },
  { method: "GET", path: "/v1/registry/services/api/instances" },
  { method: "GET", path: "/v1/registry/instances/api-1" },
  { method: "POST", path: "/v1/cluster/members", body: { id: "n9", peerAddress: "127.0.0.1:1" } },
  { method: "DELETE", path: "/v1/cluster/members/n2" },
  { method: "POST", path: "/v1/ca/rotate", body: {} },
  { method: "PUT", path: "/v1/agent/service/register", body: { ID: "web-2", Name: "web", Port: 2 }, consul: true },
  { method: "PUT", path: "/v1/agent/service/deregister/web-1", consul: true },
  { method: "PUT", path: "/v1/agent/check/pass/service:web-1", consul: true },
  { method: "PUT", path: "/v1/agent/check/update/service:web-1", body: { Status: "warning" }, consul: true },
  { method: "GET", path: "/v1/catalog/services", consul: true },
  { method: "GET", path: "/v1/catalog/service/web", consul: true },
  { method: "GET", path: "/v1/health/service/web", consul: true },
];

async function send(node: ProcessNode, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(node.url(path), {
    method,
    ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
  });
}

void describe("the leader wait, end to end", () => {
  let cluster: ProcessCluster;

  before(async () => {
    cluster = await ProcessCluster.start(3, ["--leader-wait", `${LEADER_WAIT_MS}ms`]);
  });

  after(async () => {
    await cluster.close();
  });

  void test("with no leader to be had, every write and linearizable read waits --leader-wait, then gets 503, Retry-After and what happened", async () => {
    const leader = await cluster.agreedLeader();
    const setup: [string, string, unknown][] = [
      ["PUT", "/v1/kv/k", { value: "v1" }],
      ["POST", "/v1/registry/instances", { name: "api", id: "api-1", port: 1, checks: [{ ttl: "60s" }] }],
      ["PUT", "/v1/agent/service/register", { ID: "web-1", Name: "web", Port: 1, Check: { TTL: "60s" } }],
    ];
    for (const [method, path, body] of setup) {
      const res = await send(leader, method, path, body);
      assert.equal(res.status, 200, `${method} ${path}: ${await res.text()}`);
    }
    // The one node left holds the setup and the CA (the leader creates it within a second), then
    // its view of the leader lapses.
    const survivor = cluster.nodes.find((n) => n.info.id === "n1") as ProcessNode;
    const caught = async (): Promise<true | undefined> => {
      const roots = ((await (await fetch(survivor.url("/v1/ca/roots"))).json()) as { roots: unknown[] }).roots;
      const applied = (await survivor.cluster()).appliedIndex >= (await leader.cluster()).commitIndex;
      return roots.length > 0 && applied ? true : undefined;
    };
    await waitFor(caught, 5_000, () => "n1 did not apply the setup and the CA");
    await Promise.all(cluster.nodes.filter((n) => n !== survivor).map((n) => n.kill9()));
    await waitFor(async () => ((await survivor.cluster()).leader === "" ? true : undefined), 10_000, () => `n1 still names a leader${survivor.lastWords()}`);

    const answers = await Promise.all(ROUTES.map(async (route) => {
      const startedAtMs = performance.now();
      const res = await send(survivor, route.method, route.path, route.body);
      return { route, res, text: await res.text(), elapsedMs: performance.now() - startedAtMs };
    }));
    for (const { route, res, text, elapsedMs } of answers) {
      const what = `${route.method} ${route.path} (${Math.round(elapsedMs)} ms): ${res.status} ${text}`;
      assert.equal(res.status, 503, what);
      assert.equal(res.headers.get("retry-after"), "1", what);
      assert.ok(elapsedMs >= LEADER_WAIT_MS - 50 && elapsedMs < LEADER_WAIT_MS + ANSWER_SLACK_MS, `held for the leader wait: ${what}`);
      if (route.consul === true) {
        assert.match(res.headers.get("content-type") ?? "", /^text\/plain/, what);
        assert.match(text, NO_LEADER, what);
      } else {
        assert.match(res.headers.get("content-type") ?? "", /^application\/json/, what);
        assert.match((JSON.parse(text) as { error: string }).error, NO_LEADER, what);
      }
    }
    // ?stale reads answer at once from the node's own state.
    const stale = await send(survivor, "GET", "/v1/kv/k?stale");
    assert.equal(stale.status, 200);
  });
});
