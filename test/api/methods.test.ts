// Every route of a real `cairn server`, enumerated from its OpenAPI document (which every route
// registers into): a known path asked with a method it does not accept answers 405 with Allow,
// an unknown path 404, and HEAD on any GET route, streams and blocking queries included, answers
// its headers at once and frees the connection for the next request.

import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode } from "../support/cluster.js";
import { exchange, openSocket, readUntilClosed } from "../support/raw_http.js";

interface OpenApiOperation {
  readonly parameters: readonly { readonly name: string; readonly in: string }[];
}
type OpenApiPaths = Record<string, Record<string, OpenApiOperation>>;

const METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH"] as const;
/** A HEAD must be answered well inside this; a blocking query asked to wait would take a minute. */
const HEAD_ANSWER_MS_MAX = 2_000;
/** An index no route has reached: a GET with it blocks for its whole wait. */
const FUTURE_INDEX = 999_999_999;

/** A concrete request path for an OpenAPI path: each {param} filled in. */
function concrete(path: string): string {
  return path.replace("{wildcard}", "some/key").replace(/\{[^}]+\}/g, "x");
}

/** Whether a concrete path is one `template` serves: a parametric route may also serve a fixed one's path (/v1/acl/token/self). */
function serves(template: string, concretePath: string): boolean {
  const pattern = template.split(/(\{[^}]+\})/).map((part) => (part === "{wildcard}" ? ".+" : part.startsWith("{") ? "[^/]+" : part.replace(/[.*+?^$()|[\]\\]/g, "\\$&"))).join("");
  return new RegExp(`^${pattern}$`).test(concretePath);
}

void describe("methods and HEAD on every route", () => {
  let cluster: ProcessCluster;
  let node: ProcessNode;
  let paths: OpenApiPaths;
  const sockets: Socket[] = [];

  before(async () => {
    cluster = await ProcessCluster.start(1);
    node = await cluster.agreedLeader();
    paths = ((await (await fetch(node.url("/v1/openapi.json"))).json()) as { paths: OpenApiPaths }).paths;
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await cluster.close();
  });

  void test("the OpenAPI document lists the routes this test enumerates, streams included", () => {
    for (const p of ["/v1/ca/bundle/stream", "/v1/watch", "/v1/cluster/leader", "/v1/kv/{key}", "/v1/health/service/{service}"]) {
      assert.ok(p in paths, `${p} is missing from /v1/openapi.json`);
    }
    assert.ok(Object.keys(paths).length >= 30, `only ${Object.keys(paths).length} paths`);
  });

  void test("a known path asked with a method it does not accept answers 405 with Allow listing the methods it does", async () => {
    let asked = 0;
    for (const path of Object.keys(paths)) {
      // Every method any route serving this concrete path accepts.
      const accepted = new Set(Object.entries(paths).filter(([template]) => template === path || serves(template, concrete(path)))
        .flatMap(([, ops]) => Object.keys(ops).map((m) => m.toUpperCase())));
      if (accepted.has("GET")) accepted.add("HEAD");
      const expectedAllow = [...accepted].sort().join(", ");
      for (const method of METHODS.filter((m) => !accepted.has(m))) {
        const res = await fetch(node.url(concrete(path)), { method, ...(method === "GET" ? {} : { headers: { "content-type": "application/json" }, body: "{}" }) });
        const body = (await res.json()) as { error?: string };
        assert.equal(res.status, 405, `${method} ${concrete(path)}: ${JSON.stringify(body)}`);
        assert.equal(res.headers.get("allow"), expectedAllow, `Allow of ${concrete(path)}`);
        assert.match(body.error ?? "", new RegExp(`${method} is not allowed`));
        asked++;
      }
    }
    assert.ok(asked >= 60, `only ${asked} wrong-method requests were made`);
  });

  void test("an unknown path answers 404, whatever the method", async () => {
    for (const path of ["/v1/nope", "/v2/cluster", "/v1/cluster/members/x/y", "/nope", "/ui/x/y", "/v1/registry/instances/x/extra"]) {
      for (const method of ["GET", "DELETE"]) {
        const res = await fetch(node.url(path), { method });
        assert.equal(res.status, 404, `${method} ${path}`);
        assert.equal(res.headers.get("allow"), null);
        assert.match(((await res.json()) as { error: string }).error, /no route/);
      }
    }
  });

  void test("HEAD on every GET route, streams and blocking queries included, answers its headers at once and frees the connection", async () => {
    const socket = await openSocket(node.info.http);
    sockets.push(socket);
    let asked = 0;
    for (const [path, operations] of Object.entries(paths)) {
      const get = operations.get;
      if (get === undefined) continue;
      const blocks = get.parameters.some((p) => p.in === "query" && p.name === "index");
      const target = `${concrete(path)}${blocks ? `?index=${FUTURE_INDEX}&wait=1m` : ""}`;
      const startMs = performance.now();
      const res = await exchange(socket, `HEAD ${target} HTTP/1.1\r\nHost: x\r\n\r\n`, HEAD_ANSWER_MS_MAX, true);
      assert.ok(performance.now() - startMs < HEAD_ANSWER_MS_MAX, `HEAD ${target} took ${Math.round(performance.now() - startMs)} ms`);
      assert.ok(res.status < 500, `HEAD ${target} answered ${res.status}`);
      assert.notEqual(res.headers.get("connection"), "close", `HEAD ${target} closed its connection instead of freeing it`);
      asked++;
    }
    assert.ok(asked >= 15, `only ${asked} GET routes`);
    // The same connection still serves a request: no HEAD held it.
    assert.equal((await exchange(socket, "GET /v1/cluster HTTP/1.1\r\nHost: x\r\n\r\n", 5_000)).status, 200);
  });

  for (const path of ["/v1/ca/bundle/stream", "/v1/watch"]) {
    void test(`HEAD ${path} answers the stream's headers and ends, where GET holds the stream open`, async () => {
      const headSocket = await openSocket(node.info.http);
      sockets.push(headSocket);
      const head = await exchange(headSocket, `HEAD ${path} HTTP/1.1\r\nHost: x\r\n\r\n`, HEAD_ANSWER_MS_MAX, true);
      assert.equal(head.status, 200);
      assert.match(head.headers.get("content-type") ?? "", /^text\/event-stream/);
      assert.equal((await exchange(headSocket, "GET /v1/cluster HTTP/1.1\r\nHost: x\r\n\r\n", 5_000)).status, 200, "the connection was not freed after HEAD");
      // GET on the same route streams: it is still open when HEAD would long have ended.
      const getSocket = await openSocket(node.info.http);
      sockets.push(getSocket);
      const open = readUntilClosed(getSocket, HEAD_ANSWER_MS_MAX);
      getSocket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
      const streamed = await open;
      assert.equal(streamed.closed, false, "GET ended its stream");
      assert.match(streamed.text, /^HTTP\/1\.1 200 [^]*text\/event-stream/);
    });
  }
});
