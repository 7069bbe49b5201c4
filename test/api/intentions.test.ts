// Consul's intention API on a real three-node cluster with ACLs on (so the default is deny): the
// exact API written on one node and read on another, through the npm consul client's generic
// requests (consul 2.x has no intentions module, but its papi base has _get/_put/_delete/_post);
// match in precedence order; check and authorize, wildcards and the default; the ACL rules on
// intentions; clear 4xx for bad input; and a blocking match woken by its own destination only.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import Consul from "consul";
import { ProcessCluster, type ProcessNode } from "../support/cluster.js";

interface PapiRequest {
  readonly name: string;
  readonly path: string;
  readonly query?: Readonly<Record<string, string | readonly string[]>>;
  readonly body?: unknown;
  readonly type?: "json";
  readonly headers?: Readonly<Record<string, string>>;
}
interface PapiResponse { readonly statusCode: number; readonly body: unknown; readonly headers: Readonly<Record<string, string>> }
/** The consul client's generic requests: resolve with the response, reject with its text on an HTTP error. */
interface RawConsul {
  _get(req: PapiRequest): Promise<PapiResponse>;
  _put(req: PapiRequest): Promise<PapiResponse>;
  _delete(req: PapiRequest): Promise<PapiResponse>;
  _post(req: PapiRequest): Promise<PapiResponse>;
}

interface ConsulIntention {
  ID: string; SourceName: string; DestinationName: string; SourceType: string; Action: string; Precedence: number;
  Description: string; CreateIndex: number; ModifyIndex: number; SourceNS: string; DestinationNS: string;
}

interface Answer { status: number; text: string; headers: Headers; json: () => unknown }

async function call(node: ProcessNode, method: string, path: string, token?: string, body?: unknown): Promise<Answer> {
  const headers: Record<string, string> = { ...(token === undefined ? {} : { "x-consul-token": token }), ...(body === undefined ? {} : { "content-type": "application/json" }) };
  const res = await fetch(node.url(path), { method, headers, ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }) });
  const text = await res.text();
  return { status: res.status, text, headers: res.headers, json: () => JSON.parse(text) as unknown };
}

function consulOf(node: ProcessNode): RawConsul {
  const port = Number(node.info.http.slice(node.info.http.lastIndexOf(":") + 1));
  return new Consul({ host: "127.0.0.1", port }) as unknown as RawConsul;
}

const pairPath = (source: string, destination: string): string => `/v1/connect/intentions/exact?source=${encodeURIComponent(source)}&destination=${encodeURIComponent(destination)}`;
const spiffe = (service: string, trustDomain = "cairn.local"): string => `spiffe://${trustDomain}/ns/default/svc/${service}`;

void describe("Consul's intention API on a three-node cluster with ACLs on", { timeout: 120_000 }, () => {
  let cluster: ProcessCluster;
  let n1: ProcessNode;
  let n2: ProcessNode;
  let n3: ProcessNode;
  let management: string;
  const auth = (): Record<string, string> => ({ "x-consul-token": management });

  /** A token whose one policy has `rules`. */
  const tokenWith = async (name: string, rules: object): Promise<string> => {
    const policy = await call(n1, "PUT", "/v1/acl/policy", management, { Name: name, Rules: JSON.stringify(rules) });
    assert.equal(policy.status, 200, policy.text);
    const token = await call(n1, "PUT", "/v1/acl/token", management, { Policies: [{ Name: name }] });
    assert.equal(token.status, 200, token.text);
    return (token.json() as { SecretID: string }).SecretID;
  };

  const put = async (via: ProcessNode, source: string, destination: string, action: string, description = ""): Promise<void> => {
    const res = await consulOf(via)._put({ name: "intention.upsert", path: "/connect/intentions/exact", query: { source, destination }, body: { Action: action, Description: description }, type: "json", headers: auth() });
    assert.equal(res.body, true);
  };

  before(async () => {
    cluster = await ProcessCluster.start(3, [], { acl: true });
    [n1, n2, n3] = cluster.nodes;
    management = await cluster.bootstrapAcl(n1);
    await cluster.agreedLeader();
  });
  after(async () => {
    await cluster.close();
  });

  void test("an intention written on one node is read on another in Consul's shape, and a second write of the pair replaces it", async () => {
    await put(n1, "web", "db", "allow", "web reads db");
    const read = await consulOf(n2)._get({ name: "intention.get", path: "/connect/intentions/exact", query: { source: "web", destination: "db" }, headers: auth() });
    const first = read.body as ConsulIntention;
    assert.deepEqual({ ...first, ID: first.ID.length, CreateIndex: first.CreateIndex > 0, ModifyIndex: first.ModifyIndex === first.CreateIndex }, {
      ID: 36, Description: "web reads db", SourceNS: "default", SourceName: "web", DestinationNS: "default", DestinationName: "db",
      SourceType: "consul", Action: "allow", Precedence: 9, Meta: {}, CreateIndex: true, ModifyIndex: true,
    });
    assert.ok(Number(read.headers["x-consul-index"]) >= first.ModifyIndex);
    await put(n3, "web", "db", "deny", "changed");
    const replaced = (await call(n1, "GET", pairPath("web", "db"), management)).json() as ConsulIntention;
    assert.equal(replaced.ID, first.ID, "the replace keeps the intention's ID");
    assert.equal(replaced.CreateIndex, first.CreateIndex);
    assert.ok(replaced.ModifyIndex > first.ModifyIndex);
    assert.equal(replaced.Action, "deny");
    const del = await consulOf(n2)._delete({ name: "intention.delete", path: "/connect/intentions/exact", query: { source: "web", destination: "db" }, headers: auth() });
    assert.equal(del.body, true);
    const gone = await call(n3, "GET", pairPath("web", "db"), management);
    assert.equal(gone.status, 404);
    assert.match(gone.text, /^Intention not found/);
    assert.equal((await call(n3, "DELETE", pairPath("web", "db"), management)).text, "true", "deleting what is not there answers true, as Consul");
    // Every write is audited under its name.
    const audit = readFileSync(join(n2.info.dataDir, "audit.log"), "utf8");
    assert.match(audit, /"operation":"intention.delete"/);
  });

  void test("match and list answer in precedence order; check and authorize decide by the most specific, else deny by default", async () => {
    for (const [s, d, a] of [["*", "*", "allow"], ["api", "orders", "allow"], ["*", "orders", "deny"], ["api", "*", "deny"], ["batch", "ledger", "allow"]] as const) await put(n1, s, d, a);
    const match = await consulOf(n2)._get({ name: "intention.match", path: "/connect/intentions/match", query: { by: "destination", name: "orders" }, headers: auth() });
    const order = (list: readonly ConsulIntention[]): string[] => list.map((i) => `${i.SourceName}/${i.DestinationName}:${i.Precedence}`);
    assert.deepEqual(order((match.body as Record<string, ConsulIntention[]>).orders), ["api/orders:9", "*/orders:8", "api/*:6", "*/*:5"]);
    const bySource = (await call(n3, "GET", "/v1/connect/intentions/match?by=source&name=api&name=batch", management)).json() as Record<string, ConsulIntention[]>;
    assert.deepEqual(order(bySource.api), ["api/orders:9", "*/orders:8", "api/*:6", "*/*:5"]);
    assert.deepEqual(order(bySource.batch), ["batch/ledger:9", "*/orders:8", "*/*:5"]);
    const list = (await call(n2, "GET", "/v1/connect/intentions", management)).json() as ConsulIntention[];
    assert.deepEqual(order(list), ["batch/ledger:9", "api/orders:9", "*/orders:8", "api/*:6", "*/*:5"], "equal precedences by destination, then source");

    const check = async (source: string, destination: string): Promise<unknown> => (await call(n3, "GET", `/v1/connect/intentions/check?source=${source}&destination=${destination}`, management)).json();
    assert.deepEqual(await check("api", "orders"), { Allowed: true }, "exact allow beats */orders deny");
    assert.deepEqual(await check("web", "orders"), { Allowed: false }, "*/orders deny");
    assert.deepEqual(await check("api", "ledger"), { Allowed: false }, "api/* deny beats */*");
    assert.deepEqual(await check("web", "ledger"), { Allowed: true }, "*/* allow");

    const authorize = async (target: string, uri: string): Promise<{ Authorized: boolean; Reason: string }> => {
      const res = await consulOf(n2)._post({ name: "agent.connect.authorize", path: "/agent/connect/authorize", body: { Target: target, ClientCertURI: uri, ClientCertSerial: "01:02" }, type: "json", headers: auth() });
      return res.body as { Authorized: boolean; Reason: string };
    };
    const allowed = await authorize("orders", spiffe("api"));
    assert.equal(allowed.Authorized, true);
    assert.match(allowed.Reason, /^Matched intention: ALLOW api => orders \(ID: [0-9a-f-]{36}, Precedence: 9\)/);
    assert.equal((await authorize("orders", spiffe("web"))).Authorized, false);
    assert.equal((await authorize("ledger", spiffe("web"))).Authorized, true);
    const foreign = await authorize("ledger", spiffe("web", "other.example"));
    assert.equal(foreign.Authorized, false, "a certificate of another trust domain is never authorized");
    assert.match(foreign.Reason, /trust domain "other.example"/);

    // Without the */* allow, a pair nothing covers falls to the default: deny, with ACLs on.
    await call(n1, "DELETE", pairPath("*", "*"), management);
    assert.deepEqual(await check("web", "ledger"), { Allowed: false });
    const byDefault = await authorize("ledger", spiffe("web"));
    assert.equal(byDefault.Authorized, false);
    assert.match(byDefault.Reason, /^Default behavior configured by --intentions-default \(deny\)/);
  });

  void test("writing needs intentions:write on the destination (service:write grants it); reading needs intentions:read, and lists are filtered", async () => {
    const reader = await tokenWith("db-reader", { service: { db: { policy: "read" } } });
    const webWriter = await tokenWith("web-writer", { service: { web: { policy: "write" } } });
    const intentionWriter = await tokenWith("db-intentions", { service: { db: { policy: "read", intentions: "write" } } });
    const body = { Action: "allow" };
    const denied = await call(n2, "PUT", pairPath("web", "db"), reader, body);
    assert.equal(denied.status, 403);
    assert.match(denied.text, /^Permission denied: token with AccessorID '[0-9a-f-]{36}' lacks permission 'intention:write' on "db"/);
    assert.equal((await call(n2, "PUT", pairPath("web", "db"), webWriter, body)).status, 403, "service:write on the source is not enough");
    assert.equal((await call(n2, "DELETE", pairPath("web", "db"), webWriter)).status, 403);
    const written = await call(n2, "PUT", pairPath("web", "db"), intentionWriter, body);
    assert.equal(written.status, 200, written.text);
    assert.equal((await call(n3, "PUT", pairPath("*", "web"), webWriter, body)).status, 200, "service:write on the destination grants intentions:write");
    assert.equal((await call(n3, "GET", pairPath("web", "db"), reader)).status, 200, "service:read grants intentions:read");
    assert.equal((await call(n3, "GET", pairPath("web", "db"), webWriter)).status, 403);
    assert.equal((await call(n3, "GET", "/v1/connect/intentions/check?source=web&destination=db", webWriter)).status, 403);
    const filtered = await call(n1, "GET", "/v1/connect/intentions", reader);
    assert.equal(filtered.status, 200);
    assert.ok((filtered.json() as ConsulIntention[]).every((i) => i.DestinationName === "db"), filtered.text);
    assert.equal(filtered.headers.get("x-consul-results-filtered-by-acls"), "true");
    assert.equal((await call(n1, "GET", "/v1/connect/intentions")).status, 200, "anonymous lists, and sees nothing");
    assert.equal((await call(n1, "GET", "/v1/connect/intentions")).text, "[]");
    // authorize needs service:write on the target, as Consul's.
    assert.equal((await call(n1, "POST", "/v1/agent/connect/authorize", reader, { Target: "db", ClientCertURI: spiffe("web") })).status, 403);
  });

  void test("bad input is a clear 400: names, actions, missing parameters, unknown fields, match's by and name, a malformed SPIFFE ID", async () => {
    const cases: [string, string, unknown, RegExp][] = [
      ["PUT", pairPath("web_1", "db"), { Action: "allow" }, /^source: "web_1" is not a service name/],
      ["PUT", pairPath("web", "db-"), { Action: "allow" }, /^destination: "db-" is not a service name/],
      ["PUT", pairPath("web", "db"), { Action: "permit" }, /^Action: must be "allow" or "deny", not "permit"/],
      ["PUT", pairPath("web", "db"), { Description: "x" }, /^Action is required/],
      ["PUT", pairPath("web", "db"), { Action: "allow", Colour: "red" }, /unknown field "Colour"/],
      ["PUT", pairPath("web", "db"), { Action: "allow", SourceName: "api" }, /SourceName "api" differs from the query's source "web"/],
      ["PUT", pairPath("web", "db"), { Action: "allow", Permissions: [{ Action: "deny" }] }, /L7 intentions\) are not supported/],
      ["PUT", pairPath("web", "db"), "not json", /^Request decode failed/],
      ["PUT", "/v1/connect/intentions/exact?source=web", { Action: "allow" }, /required query parameter 'destination' not set/],
      ["GET", "/v1/connect/intentions/exact?destination=db", undefined, /required query parameter 'source' not set/],
      ["GET", "/v1/connect/intentions/check?source=web", undefined, /required query parameter 'destination' not set/],
      ["GET", "/v1/connect/intentions/match?name=db", undefined, /required query parameter 'by' not set/],
      ["GET", "/v1/connect/intentions/match?by=dest&name=db", undefined, /by must be "destination" or "source", not "dest"/],
      ["GET", "/v1/connect/intentions/match?by=source", undefined, /required query parameter 'name' not set/],
      ["GET", "/v1/connect/intentions/match?by=source&name=a.b", undefined, /^name: "a.b" is not a service name/],
      ["POST", "/v1/agent/connect/authorize", { Target: "db" }, /ClientCertURI must be specified/],
      ["POST", "/v1/agent/connect/authorize", { Target: "db", ClientCertURI: "https://x" }, /ClientCertURI: "https:\/\/x" is not a SPIFFE ID/],
    ];
    for (const [method, path, body, pattern] of cases) {
      const res = await call(n2, method, path, management, body);
      assert.equal(res.status, 400, `${method} ${path} ${JSON.stringify(body)}: ${res.status} ${res.text}`);
      assert.match(res.text, pattern, `${method} ${path}`);
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain/, "Consul's paths answer errors as text");
    }
  });

  void test("a blocking match wakes on a change to its destination, not on another's", async () => {
    await put(n1, "api", "stock", "allow");
    const first = await call(n2, "GET", "/v1/connect/intentions/match?by=destination&name=stock", management);
    const index = Number(first.headers.get("x-consul-index"));
    assert.ok(index > 0);
    // Another destination's change leaves the wait to its timeout, with the index unchanged.
    const waitMs = 1_500;
    const started = performance.now();
    const untouched = call(n2, "GET", `/v1/connect/intentions/match?by=destination&name=stock&index=${index}&wait=${waitMs}ms`, management);
    await put(n3, "api", "cart", "deny");
    const timedOut = await untouched;
    assert.ok(performance.now() - started >= waitMs - 50, "the wait ran to its timeout");
    assert.equal(Number(timedOut.headers.get("x-consul-index")), index);
    // Its own destination's change wakes it at once, with the new intention in the answer.
    const woken = call(n2, "GET", `/v1/connect/intentions/match?by=destination&name=stock&index=${index}&wait=30s`, management);
    const wokenStarted = performance.now();
    await put(n1, "batch", "stock", "deny");
    const answer = await woken;
    assert.ok(performance.now() - wokenStarted < 10_000);
    assert.ok(Number(answer.headers.get("x-consul-index")) > index);
    assert.deepEqual((answer.json() as Record<string, ConsulIntention[]>).stock.filter((i) => i.DestinationName === "stock").map((i) => i.SourceName), ["api", "batch"]);
    // And a change to the * destination, which every match holds, wakes it too.
    const next = Number(answer.headers.get("x-consul-index"));
    const wild = call(n3, "GET", `/v1/connect/intentions/match?by=destination&name=stock&index=${next}&wait=30s`, management);
    const wildStarted = performance.now();
    await put(n2, "web", "*", "allow");
    const wildAnswer = await wild;
    assert.ok(performance.now() - wildStarted < 10_000, "the * change woke the match on stock");
    assert.ok(Number(wildAnswer.headers.get("x-consul-index")) > next);
  });
});
