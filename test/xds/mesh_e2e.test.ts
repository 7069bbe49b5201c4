// The mesh, end to end, with only real gRPC libraries on the data path: a three-node cluster with
// ACLs on; services frontend, backend and intruder, each with its own token and its own SVID kept
// fresh on disk by `cairn cert watch`; backend is two XdsServer processes (GRPC_XDS_EXPERIMENTAL_RBAC),
// frontend and intruder are processes calling xds:///backend with XdsChannelCredentials. Nothing
// but Cairn configures them: listeners, clusters, endpoints, TLS and RBAC all come over xDS.

import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ANONYMOUS_ACCESSOR_ID } from "../../src/acl/state.js";
import { SERVER_LISTENER_NAME_PREFIX } from "../../src/api/xds/mesh.js";
import { MTLS_META_KEY } from "../../src/registry/model.js";
import { freePort, ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";
import { JsonLinesProcess } from "../support/json_lines.js";
import { echoService } from "./echo.js";

const cairnBin = fileURLToPath(new URL("../../../bin/cairn", import.meta.url));
const serverFixture = fileURLToPath(new URL("./fixtures/mesh_server.js", import.meta.url));
const clientFixture = fileURLToPath(new URL("./fixtures/mesh_client.js", import.meta.url));
const TRUST_DOMAIN = "cairn.local";
/** How long a change may take to reach the workloads' calls. */
const CONVERGE_MS = 20_000;
/** Calls go on this long after the SVIDs are renewed, past the certificate providers' 1 s refresh. */
const RELOAD_MARGIN_MS = 2500;

type CallResult = { ok: true; instance: string; peer: string } | { ok: false; code: grpc.status; details: string };

const spiffeOf = (service: string): string => `spiffe://${TRUST_DOMAIN}/ns/default/svc/${service}`;

async function call(node: ProcessNode, method: string, path: string, token: string, body?: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(node.url(path), {
    method, headers: { "x-consul-token": token, ...(body === undefined ? {} : { "content-type": "application/json" }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, text: await res.text() };
}

async function ok(node: ProcessNode, method: string, path: string, token: string, body?: unknown): Promise<string> {
  const res = await call(node, method, path, token, body);
  assert.ok(res.status >= 200 && res.status < 300, `${method} ${path}: ${res.status} ${res.text}`);
  return res.text;
}

void describe("the mesh end to end: proxyless gRPC over mTLS, with intentions enforced as RBAC", { timeout: 300_000 }, () => {
  let cluster: ProcessCluster;
  let n1: ProcessNode;
  let n2: ProcessNode;
  let management: string;
  const tokens = new Map<string, string>();
  let scratch: string;
  const certWatches = new Map<string, { child: ChildProcess; stdout: string }>();
  const servers: { name: string; port: number; process: JsonLinesProcess }[] = [];
  let frontend: JsonLinesProcess;
  let intruder: JsonLinesProcess;

  const calls = (client: JsonLinesProcess, n: number, intervalMs = 0): Promise<CallResult[]> =>
    client.request<{ results: CallResult[] }>({ calls: n, intervalMs }, 60_000).then((r) => r.results);

  /** Probes with batches of calls until `accept` holds for one. */
  const until = async (client: JsonLinesProcess, accept: (results: CallResult[]) => boolean, what: string): Promise<CallResult[]> => {
    let last: CallResult[] = [];
    return waitFor(async () => {
      last = await calls(client, 6);
      return accept(last) ? last : undefined;
    }, CONVERGE_MS, () => `${what}; the last calls: ${JSON.stringify(last)}`);
  };

  const intention = (action: "allow" | "deny"): Promise<string> =>
    ok(n2, "PUT", `/v1/connect/intentions/exact?source=frontend&destination=backend`, tokens.get("backend") ?? "", { Action: action });

  /** `service`'s bootstrap; its certificate provider reads `certificates`' files (its own unless told). */
  const bootstrapFor = (id: string, service: string, certificates = service): string => JSON.stringify({
    xds_servers: [{ server_uri: `ipv4:${cluster.nodes.map((n) => n.info.grpc).join(",")}`, channel_creds: [{ type: "insecure" }], server_features: ["xds_v3"] }],
    node: { id, cluster: service, locality: {} },
    certificate_providers: {
      default: {
        plugin_name: "file_watcher",
        config: { certificate_file: join(scratch, certificates, "svid.pem"), private_key_file: join(scratch, certificates, "svid-key.pem"), ca_certificate_file: join(scratch, certificates, "bundle.pem"), refresh_interval: "1s" },
      },
    },
    server_listener_resource_name_template: `${SERVER_LISTENER_NAME_PREFIX}%s`,
  });

  /** Certificates `cairn cert watch` has written for `service`: the first, then each renewal. */
  /** A metric's value summed over the three nodes (each serves the streams attached to it). */
  const metricSum = async (metric: string): Promise<number> => {
    let sum = 0;
    for (const node of cluster.nodes) {
      const match = new RegExp(`^${metric} (\\S+)$`, "m").exec(await ok(node, "GET", "/metrics", management));
      sum += match === null ? 0 : Number(match[1]);
    }
    return sum;
  };

  const issuedCount = (service: string): number => (certWatches.get(service)?.stdout.match(/"event":"(issued|renewed)"/g) ?? []).length;

  before(async () => {
    cluster = await ProcessCluster.start(3, [], { acl: true });
    management = await cluster.bootstrapAcl();
    await cluster.agreedLeader();
    [n1, n2] = cluster.nodes;
    // grpc-js-xds cannot attach a token to its xDS channel, so its workloads read xDS as the
    // anonymous token: it may read services, and nothing else. Who may call whom is the intentions'.
    await ok(n1, "PUT", "/v1/acl/policy", management, { Name: "xds-read", Rules: JSON.stringify({ service_prefix: { "": { policy: "read" } } }) });
    await ok(n1, "PUT", `/v1/acl/token/${ANONYMOUS_ACCESSOR_ID}`, management, { Policies: [{ Name: "xds-read" }] });
    for (const service of ["backend", "frontend", "intruder"]) {
      await ok(n1, "PUT", "/v1/acl/policy", management, { Name: service, Rules: JSON.stringify({ service: { [service]: { policy: "write" } } }) });
      tokens.set(service, (JSON.parse(await ok(n1, "PUT", "/v1/acl/token", management, { Policies: [{ Name: service }] })) as { SecretID: string }).SecretID);
    }
    scratch = mkdtempSync(join(tmpdir(), "cairn-mesh-"));
    for (const service of ["backend", "frontend", "intruder"]) {
      const child = spawn(process.execPath, [cairnBin, "cert", "watch", "--service", service, "--out", join(scratch, service), "--json", "--addr", `http://${n1.info.http}`, "--token", tokens.get(service) ?? ""],
        { stdio: ["ignore", "pipe", "pipe"] });
      const watch = { child, stdout: "" };
      child.stdout?.on("data", (c: Buffer) => (watch.stdout += c.toString()));
      certWatches.set(service, watch);
    }
    await waitFor(() => Promise.resolve([...certWatches.keys()].every((s) => issuedCount(s) > 0) ? true : undefined), CONVERGE_MS,
      () => `every workload's SVID is on disk: ${[...certWatches].map(([s, w]) => `${s}: ${w.stdout}`).join("\n")}`);

    for (const name of ["backend-1", "backend-2"]) {
      const port = await freePort();
      await ok(n2, "POST", "/v1/registry/instances", tokens.get("backend") ?? "", {
        name: "backend", id: name, address: "127.0.0.1", port, meta: { [MTLS_META_KEY]: "true" }, checks: [{ ttl: "10m", status: "passing" }],
      });
      const process = JsonLinesProcess.start(serverFixture, [name, `127.0.0.1:${port}`], { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapFor(name, "backend"), GRPC_XDS_EXPERIMENTAL_RBAC: "true" });
      servers.push({ name, port, process });
    }
    for (const s of servers) assert.deepEqual(await s.process.next<{ serving: boolean }>(CONVERGE_MS), { serving: true }, `${s.name} serves once Cairn sent its listener`);
    await intention("allow");
    frontend = JsonLinesProcess.start(clientFixture, ["xds:///backend"], { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapFor("frontend-1", "frontend") });
    intruder = JsonLinesProcess.start(clientFixture, ["xds:///backend"], { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapFor("intruder-1", "intruder") });
  });

  after(async () => {
    frontend?.kill();
    intruder?.kill();
    for (const s of servers) s.process.kill();
    for (const w of certWatches.values()) w.child.kill("SIGKILL");
    await cluster?.close();
    if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  });

  void test("frontend's calls succeed over mTLS, reach both instances, and each server sees frontend's SPIFFE ID", async () => {
    const results = await until(frontend, (r) => r.every((c) => c.ok), "frontend's calls succeed");
    const more = [...results, ...(await calls(frontend, 12))];
    assert.ok(more.every((c) => c.ok), JSON.stringify(more));
    assert.deepEqual(new Set(more.map((c) => (c.ok ? c.instance : ""))), new Set(["backend-1", "backend-2"]), "round robin over both instances");
    for (const c of more) if (c.ok) assert.equal(c.peer, spiffeOf("frontend"), "the server saw the client's certificate");
  });

  void test("a plaintext call to a backend instance fails", async () => {
    const plain = new grpc.Client(`127.0.0.1:${servers[0].port}`, grpc.credentials.createInsecure());
    try {
      const err = await new Promise<grpc.ServiceError | null>((resolve) => {
        plain.makeUnaryRequest(echoService.Name.path, echoService.Name.requestSerialize, echoService.Name.responseDeserialize, Buffer.alloc(0),
          { deadline: Date.now() + 3000 }, (e) => resolve(e));
      });
      assert.ok(err !== null, "a call without TLS gets no answer");
      assert.equal(err.code, grpc.status.UNAVAILABLE, err.details);
    } finally {
      plain.close();
    }
  });

  void test("intruder, with a valid certificate from the same CA, is refused with PERMISSION_DENIED", async () => {
    const dir = join(scratch, "intruder");
    execFileSync("openssl", ["verify", "-CAfile", join(dir, "bundle.pem"), "-untrusted", join(dir, "svid.pem"), join(dir, "svid.pem")]);
    const results = await until(intruder, (r) => r.every((c) => !c.ok && c.code !== grpc.status.UNAVAILABLE), "intruder's calls reach the servers' RBAC");
    for (const c of results) assert.ok(!c.ok && c.code === grpc.status.PERMISSION_DENIED, JSON.stringify(c));
  });

  void test("flipping the intention to deny refuses frontend within seconds, and flipping it back lets it in again, with no restart", async () => {
    const updatesBefore = await metricSum("cairn_xds_server_listener_updates_total");
    assert.equal(await metricSum("cairn_xds_server_listeners"), 2, "the nodes keep the two servers' listeners");
    const startedMs = Date.now();
    await intention("deny");
    const denied = await until(frontend, (r) => r.every((c) => !c.ok && c.code === grpc.status.PERMISSION_DENIED), "frontend is refused after the deny");
    const deniedAfterMs = Date.now() - startedMs;
    assert.ok(denied.length > 0);
    const restartedMs = Date.now();
    await intention("allow");
    await until(frontend, (r) => r.every((c) => c.ok), "frontend is let in again after the allow");
    const allowedAfterMs = Date.now() - restartedMs;
    process.stdout.write(`# intention flip: deny effective after ${deniedAfterMs} ms, allow after ${allowedAfterMs} ms\n`);
    assert.ok(await metricSum("cairn_xds_server_listener_updates_total") >= updatesBefore + 4, "each flip pushed both servers' listeners, and the metric counts it");
    assert.ok(deniedAfterMs < 10_000 && allowedAfterMs < 10_000, `within a few seconds: ${deniedAfterMs} ms, ${allowedAfterMs} ms`);
  });

  void test("rotating the CA root in the middle of a stream of calls fails no call", async () => {
    const issuedBefore = { backend: issuedCount("backend"), frontend: issuedCount("frontend") };
    const renewed = (): boolean => issuedCount("backend") > issuedBefore.backend && issuedCount("frontend") > issuedBefore.frontend;
    const results: CallResult[] = await calls(frontend, 20, 25);
    await ok(n1, "POST", "/v1/ca/rotate", management, {});
    const rotatedMs = Date.now();
    // Calls go on until both sides hold certificates from the new root and their providers have
    // reread the files (refresh_interval 1s), and a little past that.
    let renewedMs: number | undefined;
    while (renewedMs === undefined || Date.now() - renewedMs < RELOAD_MARGIN_MS) {
      assert.ok(Date.now() - rotatedMs < CONVERGE_MS + 10_000, "both workloads get certificates from the new root");
      results.push(...(await calls(frontend, 20, 25)));
      if (renewedMs === undefined && renewed()) renewedMs = Date.now();
    }
    const failed = results.filter((c) => !c.ok);
    assert.deepEqual(failed, [], `${failed.length} of ${results.length} calls failed during the rotation`);
    process.stdout.write(`# rotation: ${results.length} calls over ${Date.now() - rotatedMs} ms, both SVIDs renewed ${(renewedMs ?? 0) - rotatedMs} ms after it, none failed\n`);
  });

  void test("deregistering a backend instance moves calls to the remaining one", async () => {
    await ok(n2, "DELETE", "/v1/registry/instances/backend-1", tokens.get("backend") ?? "");
    const results = await until(frontend, (r) => r.every((c) => c.ok && c.instance === "backend-2"), "every call reaches backend-2");
    assert.equal(results.length, 6);
  });

  void test("a backend instance whose certificate is not backend's is refused by the client, though its RBAC would let frontend in", async () => {
    // An impostor registers as backend with a token that may, but holds intruder's certificate:
    // only the cluster's check of the server's SPIFFE ID stands in the way.
    const port = await freePort();
    await ok(n2, "POST", "/v1/registry/instances", tokens.get("backend") ?? "", {
      name: "backend", id: "impostor", address: "127.0.0.1", port, meta: { [MTLS_META_KEY]: "true" }, checks: [{ ttl: "10m", status: "passing" }],
    });
    const impostor = JsonLinesProcess.start(serverFixture, ["impostor", `127.0.0.1:${port}`], { GRPC_XDS_BOOTSTRAP_CONFIG: bootstrapFor("impostor", "backend", "intruder"), GRPC_XDS_EXPERIMENTAL_RBAC: "true" });
    servers.push({ name: "impostor", port, process: impostor });
    assert.deepEqual(await impostor.next<{ serving: boolean }>(CONVERGE_MS), { serving: true });
    await ok(n2, "DELETE", "/v1/registry/instances/backend-2", tokens.get("backend") ?? "");
    const refused = await until(frontend, (r) => r.every((c) => !c.ok), "with only the impostor left, every call fails");
    for (const c of refused) assert.ok(!c.ok && c.code === grpc.status.UNAVAILABLE, JSON.stringify(c));
  });
});
