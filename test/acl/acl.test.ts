// ACLs against a real `cairn server` with ACLs on and default deny: bootstrap, token and policy
// management, the secret kept only as a hash, enforcement and filtering on HTTP (with Consul's
// own npm client) and gRPC, the CA authorizer, and a rule declared on every route and method.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import Consul from "consul";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";
import { RegistryClient, type WireResponse } from "../support/watch_client.js";
import { CLUSTER_TYPE, LISTENER_TYPE } from "../../src/api/xds/resources.js";
import { RawAdsStream, type SotwResponse, adsClient } from "../xds/raw_client.js";
import { hashSecret } from "../../src/acl/state.js";

const SCRATCH = mkdtempSync(join(tmpdir(), "cairn-acl-test-"));

interface Answer { status: number; text: string; headers: Headers; json: () => unknown }

async function call(node: ProcessNode, method: string, path: string, token?: string, body?: unknown): Promise<Answer> {
  const headers: Record<string, string> = { ...(token === undefined ? {} : { "x-consul-token": token }), ...(body === undefined ? {} : { "content-type": "application/json" }) };
  const res = await fetch(node.url(path), { method, headers, ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }) });
  const text = await res.text();
  return { status: res.status, text, headers: res.headers, json: () => JSON.parse(text) as unknown };
}

interface TokenJson { AccessorID: string; SecretID?: string; Policies: { ID: string; Name: string }[]; Description: string }

function csrFor(uri: string): string {
  const keyPath = join(SCRATCH, `key-${randomBytes(4).toString("hex")}.pem`);
  const r = spawnSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyPath, "-subj", "/", "-addext", `subjectAltName=URI:${uri}`], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return r.stdout;
}

function portOf(node: ProcessNode): number {
  return Number(node.info.http.slice(node.info.http.lastIndexOf(":") + 1));
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).map((p) => join(dir, p)).filter((p) => statSync(p).isFile());
}

describe("ACLs on a real server, default deny", { timeout: 180_000 }, () => {
  let cluster: ProcessCluster;
  let node: ProcessNode;
  let management: string;
  let webToken: TokenJson;

  before(async () => {
    cluster = await ProcessCluster.start(1, [], { acl: true });
    node = cluster.nodes[0];
    management = await cluster.bootstrapAcl(node);
    await cluster.agreedLeader();
  });
  after(async () => {
    await cluster.close();
    rmSync(SCRATCH, { recursive: true, force: true });
  });

  test("bootstrap makes one management token, and a second bootstrap is refused with 403", async () => {
    const self = await call(node, "GET", "/v1/acl/token/self", management);
    assert.equal(self.status, 200, self.text);
    const token = self.json() as TokenJson;
    assert.deepEqual(token.Policies, [{ ID: "00000000-0000-0000-0000-000000000001", Name: "global-management" }]);
    assert.equal(token.SecretID, undefined, "a read never shows the secret");
    const again = await call(node, "PUT", "/v1/acl/bootstrap");
    assert.equal(again.status, 403);
    assert.match(again.text, /ACL bootstrap no longer allowed/);
  });

  test("the anonymous token may do nothing by default: writes are 403 Permission denied, lists come back empty and marked filtered", async () => {
    const reg = await call(node, "PUT", "/v1/agent/service/register", undefined, { Name: "anon" });
    assert.equal(reg.status, 403);
    assert.match(reg.text, /^Permission denied: token with AccessorID '00000000-0000-0000-0000-000000000002' lacks permission 'service:write' on "anon"/);
    const native = await call(node, "POST", "/v1/registry/instances", undefined, { name: "anon" });
    assert.equal(native.status, 403);
    assert.match((native.json() as { error: string }).error, /^Permission denied/);
    for (const path of ["/v1/cluster", "/v1/acl/tokens", "/v1/kv/x"]) assert.equal((await call(node, "GET", path)).status, 403, path);
    assert.equal((await call(node, "POST", "/v1/ca/rotate", undefined, {})).status, 403);
    // An unknown secret is refused everywhere but the open routes, as Consul's "ACL not found".
    const unknown = await call(node, "GET", "/v1/catalog/services", "00000000-1111-2222-3333-444444444444");
    assert.equal(unknown.status, 403);
    assert.equal(unknown.text, "ACL not found");
    assert.equal((await call(node, "GET", "/v1/status/leader")).status, 200, "status stays open, as Consul's");
  });

  test("policies and tokens: create, read, update, list, delete; HCL and bad fields are a 400 naming the field", async () => {
    const hcl = await call(node, "PUT", "/v1/acl/policy", management, { Name: "hcl", Rules: 'service "web" { policy = "write" }' });
    assert.equal(hcl.status, 400);
    assert.match(hcl.text, /Rules: .*not JSON.*HCL/);
    const badLevel = await call(node, "PUT", "/v1/acl/policy", management, { Name: "bad", Rules: JSON.stringify({ service: { web: { policy: "own" } } }) });
    assert.equal(badLevel.status, 400);
    assert.match(badLevel.text, /service\."web"\.policy/);
    const unknownField = await call(node, "PUT", "/v1/acl/token", management, { Descriptoin: "typo" });
    assert.equal(unknownField.status, 400);
    assert.match(unknownField.text, /^Descriptoin: /);

    const web = await call(node, "PUT", "/v1/acl/policy", management, {
      Name: "web-write", Description: "web's own", Rules: JSON.stringify({ service: { web: { policy: "write" } }, service_prefix: { "web-": { policy: "read" } } }),
    });
    assert.equal(web.status, 200, web.text);
    const policy = web.json() as { ID: string; Name: string; Rules: string };
    assert.equal((await call(node, "GET", `/v1/acl/policy/${policy.ID}`, management)).status, 200);
    assert.equal(((await call(node, "GET", "/v1/acl/policy/name/web-write", management)).json() as { ID: string }).ID, policy.ID);
    const dup = await call(node, "PUT", "/v1/acl/policy", management, { Name: "web-write", Rules: "" });
    assert.equal(dup.status, 400);

    const made = await call(node, "PUT", "/v1/acl/token", management, { Description: "web service", Policies: [{ Name: "web-write" }] });
    assert.equal(made.status, 200, made.text);
    webToken = made.json() as TokenJson;
    assert.match(webToken.SecretID ?? "", /^[0-9a-f-]{36}$/);
    assert.deepEqual(webToken.Policies, [{ ID: policy.ID, Name: "web-write" }]);

    const read = await call(node, "GET", `/v1/acl/token/${webToken.AccessorID}`, management);
    assert.equal(read.status, 200);
    assert.ok(!read.text.includes(webToken.SecretID ?? "?"), "the secret is shown once, at creation, never again");
    const list = await call(node, "GET", "/v1/acl/tokens", management);
    assert.ok(!list.text.includes(webToken.SecretID ?? "?"));
    assert.ok((list.json() as TokenJson[]).some((t) => t.AccessorID === webToken.AccessorID));

    const updated = await call(node, "PUT", `/v1/acl/token/${webToken.AccessorID}`, management, { Description: "web, renamed", Policies: [{ ID: policy.ID }] });
    assert.equal(updated.status, 200, updated.text);
    assert.equal((updated.json() as TokenJson).Description, "web, renamed");
    const self = await call(node, "GET", "/v1/acl/token/self", webToken.SecretID);
    assert.equal((self.json() as TokenJson).AccessorID, webToken.AccessorID, "the secret still works after the update");
    assert.equal((await call(node, "GET", "/v1/acl/tokens", webToken.SecretID)).status, 403, "acl:read is not in web-write");

    const doomed = (await call(node, "PUT", "/v1/acl/token", management, { Description: "short-lived" })).json() as TokenJson;
    assert.equal((await call(node, "GET", "/v1/acl/token/self", doomed.SecretID)).status, 200);
    assert.equal((await call(node, "DELETE", `/v1/acl/token/${doomed.AccessorID}`, management)).text, "true");
    assert.equal((await call(node, "GET", "/v1/acl/token/self", doomed.SecretID)).status, 403, "a deleted token's secret stops working");
    assert.equal((await call(node, "GET", `/v1/acl/token/${doomed.AccessorID}`, management)).status, 404);
    const spare = (await call(node, "PUT", "/v1/acl/policy", management, { Name: "spare", Rules: "{}" })).json() as { ID: string };
    assert.equal((await call(node, "DELETE", `/v1/acl/policy/${spare.ID}`, management)).status, 200);
    assert.equal((await call(node, "GET", `/v1/acl/policy/${spare.ID}`, management)).status, 404);
    assert.equal((await call(node, "DELETE", "/v1/acl/policy/00000000-0000-0000-0000-000000000001", management)).status, 403);
  });

  test("the npm consul client's token option: register and list succeed with a token, fail with 403 without", async () => {
    const withToken = new Consul({ host: "127.0.0.1", port: portOf(node), defaults: { token: webToken.SecretID ?? "" } });
    const without = new Consul({ host: "127.0.0.1", port: portOf(node) });
    await withToken.agent.service.register({ name: "web", id: "web-1", port: 8080 } as never);
    await withToken.agent.service.register({ name: "web-admin", id: "web-admin-1", port: 8081 } as never).then(
      () => assert.fail("web-admin is only readable by this token"), (err: { statusCode?: number }) => assert.equal(err.statusCode, 403));
    const refused = await without.agent.service.register({ name: "web", id: "web-2", port: 8080 } as never).then(() => undefined, (err: { statusCode?: number }) => err);
    assert.equal(refused?.statusCode, 403);
    // The management token registers a service the web token may not see.
    await new Consul({ host: "127.0.0.1", port: portOf(node), defaults: { token: management } }).agent.service.register({ name: "db", id: "db-1", port: 5432 } as never);
    const services = (await withToken.catalog.service.list()) as Record<string, string[]>;
    assert.deepEqual(Object.keys(services).sort(), ["web"]);
    const anonymous = (await without.catalog.service.list()) as Record<string, string[]>;
    assert.deepEqual(anonymous, {});
  });

  test("filtered lists carry X-Consul-Results-Filtered-By-ACLs; a hidden service reads as an unknown one", async () => {
    const mine = await call(node, "GET", "/v1/catalog/services", webToken.SecretID);
    assert.equal(mine.headers.get("x-consul-results-filtered-by-acls"), "true");
    assert.deepEqual(Object.keys(mine.json() as object), ["web"]);
    const all = await call(node, "GET", "/v1/catalog/services", management);
    assert.equal(all.headers.get("x-consul-results-filtered-by-acls"), null, "nothing was left out for the management token");
    assert.deepEqual(Object.keys(all.json() as object).sort(), ["db", "web"]);
    const db = await call(node, "GET", "/v1/health/service/db", webToken.SecretID);
    assert.equal(db.status, 200);
    assert.deepEqual(db.json(), []);
    assert.equal(db.headers.get("x-consul-results-filtered-by-acls"), "true");
    assert.equal(((await call(node, "GET", "/v1/health/service/db", management)).json() as unknown[]).length, 1);
    const native = await call(node, "GET", "/v1/registry/services", webToken.SecretID);
    assert.deepEqual((native.json() as { services: { name: string }[] }).services.map((s) => s.name), ["web"]);
    assert.equal(native.headers.get("x-consul-results-filtered-by-acls"), "true");
    assert.equal((await call(node, "GET", "/v1/registry/instances/db-1", webToken.SecretID)).status, 404);
    assert.equal((await call(node, "PUT", "/v1/agent/service/deregister/db-1", webToken.SecretID)).status, 403);
  });

  test("the CA authorizer signs only the SPIFFE IDs of the token's own service", async () => {
    const sign = (uri: string, token: string | undefined): Promise<Answer> => call(node, "POST", "/v1/ca/sign", token, { csr: csrFor(uri) });
    await waitFor(async () => ((await call(node, "GET", "/v1/ca/roots")).json() as { roots: unknown[] }).roots.length > 0 || undefined, 15_000, () => "no CA root");
    const own = await sign("spiffe://cairn.local/ns/default/svc/web", webToken.SecretID);
    assert.equal(own.status, 200, own.text);
    assert.equal((own.json() as { spiffeId: string }).spiffeId, "spiffe://cairn.local/ns/default/svc/web");
    assert.equal((await sign("spiffe://cairn.local/ns/default/dc/dc1/svc/web", webToken.SecretID)).status, 200, "Consul's form of the same service");
    for (const other of ["spiffe://cairn.local/ns/default/svc/db", "spiffe://cairn.local/ns/default/svc/web-admin", "spiffe://cairn.local/ns/default/dc/dc1/svc/db"]) {
      const refused = await sign(other, webToken.SecretID);
      assert.equal(refused.status, 403, `${other}: ${refused.text}`);
      assert.match(refused.text, /Permission denied|may not hold/);
    }
    // Any other shape of ID is refused before the authorizer is asked.
    assert.equal((await sign("spiffe://cairn.local/web", webToken.SecretID)).status, 400);
    assert.equal((await sign("spiffe://cairn.local/ns/default/svc/web", undefined)).status, 403, "the anonymous token holds nothing");
    const leaf = await call(node, "GET", "/v1/agent/connect/ca/leaf/web", webToken.SecretID);
    assert.equal(leaf.status, 200, leaf.text);
    assert.equal((await call(node, "GET", "/v1/agent/connect/ca/leaf/db", webToken.SecretID)).status, 403);
    assert.equal((await call(node, "POST", "/v1/ca/rotate", webToken.SecretID, {})).status, 403, "rotation needs ca:write");
  });

  test("gRPC watch: a token in metadata watches its services; without one, or for another service, the watch is cancelled", async () => {
    const client = new RegistryClient(node.info.grpc, grpc.credentials.createInsecure());
    type Duplex = grpc.ClientDuplexStream<unknown, WireResponse>;
    const watch = (token: string | undefined, services: string[]): Promise<WireResponse> => new Promise((resolve, reject) => {
      const md = new grpc.Metadata();
      if (token !== undefined) md.set("x-consul-token", token);
      const stream = (client as unknown as { Watch(md: grpc.Metadata): Duplex }).Watch(md);
      stream.on("data", (m: WireResponse) => {
        if (m.kind === "KIND_CREATED" || m.kind === "KIND_CANCELED") {
          stream.cancel();
          resolve(m);
        }
      });
      stream.on("error", (err: grpc.ServiceError) => {
        if (err.code !== grpc.status.CANCELLED) reject(err);
      });
      stream.write({ create_request: { watch_id: 1, services } });
    });
    try {
      assert.equal((await watch(webToken.SecretID, ["web"])).kind, "KIND_CREATED");
      const other = await watch(webToken.SecretID, ["db"]);
      assert.equal(other.kind, "KIND_CANCELED");
      assert.match(other.cancel_reason, /Permission denied.*service:read.*"db"/);
      assert.equal((await watch(webToken.SecretID, [])).kind, "KIND_CANCELED", "every service is more than web-write reads");
      assert.equal((await watch(undefined, ["web"])).kind, "KIND_CANCELED");
      assert.equal((await watch(management, [])).kind, "KIND_CREATED");
      const unknown = await watch("00000000-1111-2222-3333-444444444444", ["web"]).then(() => undefined, (err: grpc.ServiceError) => err);
      assert.equal(unknown?.code, grpc.status.PERMISSION_DENIED);
    } finally {
      client.close();
    }
  });

  test("streams already open hear ACL changes: a narrowed token loses what it may no longer watch, a deleted one ends them, an unrelated change touches none", async () => {
    type Duplex = grpc.ClientDuplexStream<unknown, WireResponse>;
    const readWeb = async (name: string): Promise<{ ID: string }> => (await call(node, "PUT", "/v1/acl/policy", management, { Name: name, Rules: JSON.stringify({ service: { web: { policy: "read" } } }) })).json() as { ID: string };
    const policy = await readWeb("stream-reader");
    const open = async (policyId: string): Promise<{ secret: string; accessor: string; sseBody: Promise<string>; grpcMessages: WireResponse[]; grpcEnd: Promise<grpc.ServiceError>; watch: Duplex; ads: RawAdsStream<SotwResponse>; close: () => void }> => {
      const token = (await call(node, "PUT", "/v1/acl/token", management, { Policies: [{ ID: policyId }] })).json() as TokenJson;
      const secret = token.SecretID ?? "";
      const sse = await fetch(node.url("/v1/watch?service=web"), { headers: { "x-consul-token": secret } });
      assert.equal(sse.status, 200);
      const md = new grpc.Metadata();
      md.set("x-consul-token", secret);
      const client = new RegistryClient(node.info.grpc, grpc.credentials.createInsecure());
      const watch = (client as unknown as { Watch(md: grpc.Metadata): Duplex }).Watch(md);
      const grpcMessages: WireResponse[] = [];
      watch.on("data", (m: WireResponse) => grpcMessages.push(m));
      const grpcEnd = new Promise<grpc.ServiceError>((resolve) => watch.on("error", resolve));
      watch.write({ create_request: { watch_id: 1, services: ["web"] } });
      const xds = adsClient(node.info.grpc);
      const ads = await RawAdsStream.sotw(xds, md);
      ads.send({ type_url: LISTENER_TYPE.typeUrl, resource_names: ["web"], node: { id: "stream-acl-test" } });
      await ads.next();
      await waitFor(() => Promise.resolve(grpcMessages.some((m) => m.kind === "KIND_CREATED") ? true : undefined), 5000, () => "the gRPC watch was not created");
      return { secret, accessor: token.AccessorID, sseBody: sse.text(), grpcMessages, grpcEnd, watch, ads, close: () => { client.close(); xds.close(); } };
    };
    const narrowed = await open(policy.ID);
    const deleted = await open((await readWeb("stream-reader-2")).ID);
    try {
      // An ACL change that touches neither token: every stream stays open (each answers a round trip after it).
      assert.equal((await call(node, "PUT", "/v1/acl/policy", management, { Name: "unrelated", Rules: "{}" })).status, 200);
      assert.equal((await call(node, "POST", "/v1/registry/instances", management, { name: "web", id: "web-stream-1", address: "10.0.0.9", port: 80 })).status, 200);
      for (const s of [narrowed, deleted]) {
        s.watch.write({ create_request: { watch_id: 2, services: ["web"] } });
        s.ads.send({ type_url: CLUSTER_TYPE.typeUrl, resource_names: ["web"] });
        while ((await s.ads.next()).type_url !== CLUSTER_TYPE.typeUrl);
        await waitFor(() => Promise.resolve(s.grpcMessages.some((m) => m.kind === "KIND_CREATED" && String(m.watch_id) === "2") ? true : undefined), 5000, () => "the second gRPC watch was not created");
      }

      // Narrowed: the policy now reads db only.
      assert.equal((await call(node, "PUT", `/v1/acl/policy/${policy.ID}`, management, { Name: "stream-reader", Rules: JSON.stringify({ service: { db: { policy: "read" } } }) })).status, 200);
      const cancels = await waitFor(() => {
        const c = narrowed.grpcMessages.filter((m) => m.kind === "KIND_CANCELED");
        return Promise.resolve(c.length === 2 ? c : undefined);
      }, 5000, () => "the narrowed token's gRPC watches were not both cancelled");
      for (const c of cancels) assert.match(c.cancel_reason, /Permission denied.*service:read.*"web"/);
      const narrowedSse = await narrowed.sseBody;
      assert.ok(narrowedSse.indexOf("web-stream-1") >= 0 && narrowedSse.indexOf("web-stream-1") < narrowedSse.indexOf("event: denied"), "the SSE stream carried the registration before its denial");
      assert.match(narrowedSse, /event: denied\ndata: \{"error":"Permission denied[^\n]*service:read[^\n]*web/);
      assert.equal((await narrowed.ads.status()).code, grpc.status.UNAVAILABLE, "an xDS stream whose token changed is sent to reconnect for its new view");

      // Deleted: every stream of the token ends, with why.
      assert.equal((await call(node, "DELETE", `/v1/acl/token/${deleted.accessor}`, management)).status, 200);
      assert.match(await deleted.sseBody, /event: denied\ndata: \{"error":"ACL not found: the token this stream was opened with has been deleted/);
      const grpcEnd = await deleted.grpcEnd;
      assert.equal(grpcEnd.code, grpc.status.PERMISSION_DENIED);
      assert.match(grpcEnd.details, /ACL not found/);
      const adsEnd = await deleted.ads.status();
      assert.equal(adsEnd.code, grpc.status.PERMISSION_DENIED);
      assert.match(adsEnd.details, /ACL not found/);
    } finally {
      narrowed.close();
      deleted.close();
    }
  });

  test("every HTTP route and public gRPC method declares its rule, and none that needs one answers a tokenless request", async () => {
    const doc = (await call(node, "GET", "/v1/openapi.json")).json() as { paths: Record<string, Record<string, { "x-cairn-acl"?: string }>> };
    const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method, rule: op["x-cairn-acl"] })));
    assert.ok(operations.length >= 50, `only ${operations.length} operations documented`);
    for (const op of operations) assert.ok(op.rule !== undefined && op.rule !== "", `${op.method.toUpperCase()} ${op.path} declares no ACL rule`);
    for (const op of operations.filter((o) => /^(service|node|key|intention|operator|acl|ca):(read|write)/.test(o.rule ?? ""))) {
      const path = op.path.replace(/\{[^}]+\}/g, "web-1");
      const body = op.method === "get" || op.method === "delete" ? undefined : { Name: "web", name: "web", id: "x", peerAddress: "127.0.0.1:1", to: "n1", value: "v", status: "passing" };
      const answer = await call(node, op.method.toUpperCase(), path, undefined, body);
      assert.ok(answer.status === 403 || answer.status === 404 || answer.status === 400, `${op.method.toUpperCase()} ${path} (${op.rule}) answered ${answer.status} without a token: ${answer.text.slice(0, 200)}`);
    }
    // The server lists its gRPC methods with their rules at start-up.
    const line = node.stdout.split("\n").find((l) => l.includes("public gRPC methods and the ACL rule each needs"));
    assert.ok(line !== undefined, "the server logs its gRPC methods");
    const methods = (JSON.parse(line) as { methods: Record<string, string> }).methods;
    for (const path of ["/grpc.health.v1.Health/Check", "/cairn.ca.v1.TrustBundle/Watch", "/cairn.registry.v1.Registry/Watch",
      "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources", "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
      "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets", "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets"]) {
      assert.ok((methods[path] ?? "") !== "", `${path} declares no rule`);
    }
    // SDS streams are ADS streams serving secrets only: the same rule, and each secret decides who may have it.
    assert.equal(methods["/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"], methods["/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"]);
    assert.ok(!node.stdout.includes(management), "the management secret never reaches the log");
  });

  test("only the secret's hash is stored: its bytes are nowhere in the node's data", async () => {
    const secret = webToken.SecretID ?? "";
    await node.stop();
    const files = filesUnder(node.info.dataDir);
    const everything = Buffer.concat(files.map((f) => readFileSync(f)));
    // The scan sees the ACL state: the accessor and the hash are there.
    assert.ok(everything.includes(Buffer.from(webToken.AccessorID)), "the token's accessor is in the data (so the scan reads it)");
    assert.ok(everything.includes(Buffer.from(hashSecret(secret))), "the secret's hash is in the data");
    assert.ok(!everything.includes(Buffer.from(secret)), "the secret itself is not");
    assert.ok(!everything.includes(Buffer.from(management)), "nor the management token's");
  });
});
