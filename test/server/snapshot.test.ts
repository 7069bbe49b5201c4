// Backup and restore on a real three-node cluster with ACLs on: `cairn snapshot save` from a
// follower, `inspect` offline, refusals of damaged files that change nothing, then the cluster
// wiped and started afresh, and `cairn snapshot restore` bringing back every instance, the CA's
// roots (a leaf issued before the save still verifies, and new leaves chain to the same root),
// the ACL tokens and the key/value store, on every node and on a follower restarted afterwards.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

const SCRATCH = mkdtempSync(join(tmpdir(), "cairn-snapshot-test-"));
/** The real command, as a user runs it: `bin/cairn snapshot ...`. */
const CAIRN_BIN = fileURLToPath(new URL("../../../bin/cairn", import.meta.url));
/** Key/value entries of this size make the snapshot's body larger than one restore chunk (512 KiB). */
const KV_KEYS = 12;
const KV_VALUE_CHARS = 60_000;
const SERVICES = { web: ["web-1", "web-2", "web-3"], db: ["db-1", "db-2"], cache: ["cache-1"] } as const;
const INSTANCES = Object.values(SERVICES).flat().length;
const WIPED_CLUSTER_ID = "wiped-cluster";
const NODE_READY_MS_MAX = 15_000;

interface Answer { readonly status: number; readonly text: string; readonly headers: Headers }
interface Signed { readonly certificate: string; readonly chain: string[] }
interface Run { readonly code: number | null; readonly stdout: string; readonly stderr: string }

async function call(node: ProcessNode, method: string, path: string, token: string | undefined, body?: unknown): Promise<Answer> {
  const headers: Record<string, string> = { ...(token === undefined ? {} : { "x-consul-token": token }) };
  let payload: string | Buffer | undefined;
  if (body instanceof Buffer) {
    headers["content-type"] = "application/octet-stream";
    payload = body;
  } else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const res = await fetch(node.url(path), { method, headers, ...(payload === undefined ? {} : { body: payload }) });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

/** `cairn snapshot ARGS` in its own process, with CAIRN_TOKEN set to `token` when given. */
function cli(args: readonly string[], token?: string): Promise<Run> {
  const env: NodeJS.ProcessEnv = { ...process.env, CAIRN_TOKEN: token ?? "" };
  delete env.CAIRN_HTTP_ADDR;
  const child = spawn(process.execPath, [CAIRN_BIN, "snapshot", ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c: Buffer) => { stdout += c.toString(); });
  child.stderr.on("data", (c: Buffer) => { stderr += c.toString(); });
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}

function csr(service: string): string {
  const keyPath = join(SCRATCH, `key-${randomBytes(4).toString("hex")}.pem`);
  const r = spawnSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyPath, "-subj", "/",
    "-addext", `subjectAltName=URI:spiffe://cairn.local/ns/default/svc/${service}`], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** Signs on `node` once it will (a node just started has not heard from a leader yet). */
async function sign(node: ProcessNode, token: string): Promise<Signed> {
  let last = "";
  return waitFor(async () => {
    const r = await call(node, "POST", "/v1/ca/sign", token, { csr: csr("web") }).catch((err: Error) => ({ status: 0, text: err.message }));
    last = `${r.status} ${r.text}`;
    return r.status === 200 ? (JSON.parse(r.text) as Signed) : undefined;
  }, NODE_READY_MS_MAX, () => `${node.info.id} did not sign: ${last}${node.lastWords()}`);
}

/** `openssl verify` of a leaf and its chain against exactly the roots given. */
function verify(signed: Signed, rootsPem: string): string {
  const tag = randomBytes(4).toString("hex");
  const file = (name: string, text: string): string => {
    const path = join(SCRATCH, `${name}-${tag}.pem`);
    writeFileSync(path, text);
    return path;
  };
  const r = spawnSync("openssl", ["verify", "-CAfile", file("roots", rootsPem), "-untrusted", file("chain", signed.chain.join("")), file("leaf", signed.certificate)], { encoding: "utf8" });
  return `${r.status} ${r.stdout}${r.stderr}`.trim();
}

async function bundlePem(node: ProcessNode): Promise<string> {
  const r = await call(node, "GET", "/v1/ca/bundle?format=pem", undefined);
  assert.equal(r.status, 200, r.text);
  return r.text;
}

async function register(node: ProcessNode, token: string, service: string, id: string): Promise<Answer> {
  return call(node, "PUT", "/v1/agent/service/register", token, { Name: service, ID: id, Port: 8080 });
}

/** The services and instance ids `node` answers with a consistent read. */
async function catalog(node: ProcessNode, token: string): Promise<Record<string, string[]>> {
  const services = await call(node, "GET", "/v1/catalog/services", token);
  assert.equal(services.status, 200, `${node.info.id}: ${services.text}`);
  const out: Record<string, string[]> = {};
  for (const name of Object.keys(JSON.parse(services.text) as Record<string, string[]>).sort()) {
    const entries = await call(node, "GET", `/v1/catalog/service/${name}`, token);
    out[name] = (JSON.parse(entries.text) as { ServiceID: string }[]).map((e) => e.ServiceID).sort();
  }
  return out;
}

const expectedCatalog: Record<string, string[]> = Object.fromEntries((Object.keys(SERVICES) as (keyof typeof SERVICES)[]).sort().map((name) => [name, [...SERVICES[name]].sort()]));

void describe("cairn snapshot on a real cluster", { timeout: 180_000 }, () => {
  let cluster: ProcessCluster;
  let management: string;
  let webToken: string;
  /** The original cluster's id, as its snapshot names it. */
  let clusterId = "";
  let leafBeforeSave: Signed;
  let bundleBeforeSave: string;
  let lastWriteIndex: number;
  let restoreIndex: number;
  const kvValues = new Map<string, string>();
  const snapshotFile = join(SCRATCH, "backup.snap");

  const followers = async (): Promise<ProcessNode[]> => {
    const leader = await cluster.agreedLeader();
    return cluster.nodes.filter((n) => n !== leader);
  };

  before(async () => {
    // Compacting every 16 entries: the restore's entries end up inside compaction snapshots too.
    cluster = await ProcessCluster.start(3, ["--snapshot-entries", "16"], { acl: true });
    management = await cluster.bootstrapAcl();
    await cluster.agreedLeader();
    const node = cluster.nodes[0];
    const policy = await call(node, "PUT", "/v1/acl/policy", management, { Name: "web-write", Rules: JSON.stringify({ service: { web: { policy: "write" } } }) });
    assert.equal(policy.status, 200, policy.text);
    const token = await call(node, "PUT", "/v1/acl/token", management, { Description: "web", Policies: [{ Name: "web-write" }] });
    assert.equal(token.status, 200, token.text);
    webToken = (JSON.parse(token.text) as { SecretID: string }).SecretID;
    for (const [service, ids] of Object.entries(SERVICES)) {
      for (const id of ids) assert.equal((await register(node, management, service, id)).status, 200);
    }
    for (let i = 0; i < KV_KEYS; i++) {
      const value = randomBytes(KV_VALUE_CHARS * 3 / 4).toString("base64");
      kvValues.set(`blob-${i}`, value);
      const put = await call(node, "PUT", `/v1/kv/blob-${i}`, management, { value });
      assert.equal(put.status, 200, put.text);
      lastWriteIndex = (JSON.parse(put.text) as { index: number }).index;
    }
    leafBeforeSave = await sign(node, management);
    bundleBeforeSave = await bundlePem(node);
    assert.match(verify(leafBeforeSave, bundleBeforeSave), /^0 .*OK/);
  });
  after(async () => {
    await cluster.close();
    rmSync(SCRATCH, { recursive: true, force: true });
  });

  void test("save on a follower writes a snapshot at an index past every acknowledged write, readable only by its owner", async () => {
    const [follower] = await followers();
    assert.equal((await call(follower, "GET", "/v1/snapshot", undefined)).status, 403, "saving needs operator:write");
    const run = await cli(["save", snapshotFile, "--addr", follower.info.http, "--json"], management);
    assert.equal(run.code, 0, run.stderr);
    const saved = JSON.parse(run.stdout) as { snapshot: { nodeId: string; index: number; clusterId: string }; sections: { name: string; summary: Record<string, unknown> }[] };
    assert.equal(saved.snapshot.nodeId, follower.info.id, "the follower served it");
    assert.ok(saved.snapshot.index >= lastWriteIndex, `taken at ${saved.snapshot.index}, before the last acknowledged write at ${lastWriteIndex}`);
    assert.equal(saved.sections.find((s) => s.name === "registry")?.summary.instances, INSTANCES);
    assert.equal(statSync(snapshotFile).mode & 0o777, 0o600);
    assert.match(run.stderr, /saving snapshot: 100%/, "progress lines on a stderr that is not a terminal");
    clusterId = saved.snapshot.clusterId;
  });

  void test("inspect prints the header and what each section holds, as text and as JSON, with no cluster at all", async () => {
    const text = await cli(["inspect", snapshotFile, "--addr", "127.0.0.1:1"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`^Cluster +${clusterId}$`, "m"));
    assert.match(text.stdout, /^Index +\d+ \(term \d+\)$/m);
    assert.match(text.stdout, /^Body +.*SHA-256 [0-9a-f]{64} \(verified\)$/m);
    assert.match(text.stdout, new RegExp(`^registry +\\S+ \\S+ +3 services, ${INSTANCES} instances, 0 checks$`, "m"));
    assert.match(text.stdout, /^acl +\S+ \S+ +3 tokens, 2 policies, bootstrapped yes$/m);
    assert.match(text.stdout, new RegExp(`^kv +\\S+ \\S+ +${KV_KEYS} keys$`, "m"));
    assert.match(text.stdout, /^ca +\S+ \S+ +1 root, trust domain cairn\.local, active root [0-9a-f:]+$/m);
    const json = await cli(["inspect", snapshotFile, "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const inspected = JSON.parse(json.stdout) as { fileBytes: number; snapshot: { clusterId: string; bodyBytes: number }; sections: { name: string; summary: Record<string, unknown> }[] };
    assert.equal(inspected.fileBytes, statSync(snapshotFile).size);
    assert.ok(inspected.snapshot.bodyBytes > 512 * 1024, "the body needs more than one restore chunk");
    assert.deepEqual(Object.fromEntries(inspected.sections.map((s) => [s.name, s.summary])).registry, { services: 3, instances: INSTANCES, checks: 0 });
  });

  void test("a truncated file and one with a flipped byte are refused with errors saying so, and nothing changes", async () => {
    const leader = await cluster.agreedLeader();
    assert.equal((await register(leader, management, "web", "after-save")).status, 200);
    const file = readFileSync(snapshotFile);
    const truncatedFile = join(SCRATCH, "truncated.snap");
    writeFileSync(truncatedFile, file.subarray(0, file.byteLength - 1000));
    const flipped = Buffer.from(file);
    flipped[flipped.byteLength - 5000] ^= 0x01;
    const flippedFile = join(SCRATCH, "flipped.snap");
    writeFileSync(flippedFile, flipped);
    const cut = await cli(["restore", truncatedFile, "--addr", leader.info.http], management);
    assert.equal(cut.code, 1);
    assert.match(cut.stderr, /cairn snapshot restore: the snapshot is truncated: its header says the body has \d+ bytes, but only \d+ follow/);
    const bad = await cli(["restore", flippedFile, "--addr", leader.info.http], management);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /the snapshot is corrupt: its body's SHA-256 is [0-9a-f]+, but its header says [0-9a-f]+/);
    // The server checks too, whoever sends the file.
    for (const [body, problem] of [[file.subarray(0, file.byteLength - 1000), "truncated"], [flipped, "corrupt"], [Buffer.from("not a snapshot"), "notSnapshot"]] as const) {
      const res = await call(leader, "PUT", "/v1/snapshot", management, Buffer.from(body));
      assert.equal(res.status, 400, res.text);
      assert.equal((JSON.parse(res.text) as { problem: string }).problem, problem);
    }
    assert.equal((await call(leader, "PUT", "/v1/snapshot", undefined, file)).status, 403, "restoring needs operator:write");
    const now = await catalog(leader, management);
    assert.deepEqual(now.web, ["after-save", "web-1", "web-2", "web-3"], "a refused restore changes nothing");
  });

  void test("a wiped cluster takes the snapshot with --force: every instance, the CA's roots, the ACLs and the keys come back on every node", async () => {
    // Wipe: every node stopped and its data deleted; a new cluster, with its own id, its own CA and its own ACLs.
    await Promise.all(cluster.nodes.map((n) => n.kill9()));
    for (const n of cluster.nodes) rmSync(n.info.dataDir, { recursive: true, force: true });
    for (const n of cluster.nodes) n.start(["--cluster-id", WIPED_CLUSTER_ID]);
    const newManagement = await cluster.bootstrapAcl();
    await cluster.agreedLeader();
    const [follower, other] = await followers();
    await sign(follower, newManagement);
    assert.notEqual(await bundlePem(follower), bundleBeforeSave, "the new cluster made its own CA");
    assert.deepEqual(await catalog(follower, newManagement), {});

    // A blocking query parked before the restore must be woken by it.
    const services = await call(follower, "GET", "/v1/catalog/services", newManagement);
    const parked = call(follower, "GET", `/v1/catalog/services?index=${services.headers.get("x-consul-index")}&wait=30s`, newManagement);

    const refused = await cli(["restore", snapshotFile, "--addr", follower.info.http], newManagement);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`answered 409: the snapshot was taken from cluster ${clusterId}, not this one \\(${WIPED_CLUSTER_ID}\\).*--force`));
    const startMs = performance.now();
    const run = await cli(["restore", snapshotFile, "--addr", follower.info.http, "--force", "--json"], newManagement);
    const restoreMs = performance.now() - startMs;
    assert.equal(run.code, 0, run.stderr);
    const restored = JSON.parse(run.stdout) as { index: number; forced: boolean; chunks: number; snapshot: { clusterId: string } };
    assert.equal(restored.forced, true);
    assert.equal(restored.snapshot.clusterId, clusterId);
    assert.ok(restored.chunks >= 2, `sent in ${restored.chunks} chunk(s)`);
    restoreIndex = restored.index;
    // The harness's own calls (cluster(), agreedLeader()) present the restored cluster's token from here on.
    for (const n of cluster.nodes) n.token = management;
    assert.match(run.stderr, /sending snapshot: 100%/);
    process.stdout.write(`# restored ${statSync(snapshotFile).size} bytes in ${restored.chunks} chunks in ${Math.round(restoreMs)} ms (CLI process included)\n`);

    const woken = await parked;
    assert.equal(woken.status, 200);
    assert.ok(Number(woken.headers.get("x-consul-index")) >= restoreIndex, "the blocking query answers at the restore's index");
    assert.deepEqual(Object.keys(JSON.parse(woken.text) as object).sort(), Object.keys(expectedCatalog));

    for (const n of cluster.nodes) assert.deepEqual(await catalog(n, management), expectedCatalog, `${n.info.id} after the restore`);
    const gone = await call(other, "GET", "/v1/catalog/services", newManagement);
    assert.equal(gone.status, 403, "the wiped cluster's own token went with its state");
    assert.equal(gone.text, "ACL not found");
    assert.equal((await register(other, webToken, "web", "web-4")).status, 200, "a token from before the save is accepted");
    assert.equal((await register(other, webToken, "db", "db-9")).status, 403, "with its old policy");
    for (const [key, value] of kvValues) {
      const res = await call(other, "GET", `/v1/kv/${key}`, management);
      assert.equal((JSON.parse(res.text) as { value: string }).value, value);
    }

    const bundle = await bundlePem(follower);
    assert.equal(bundle, bundleBeforeSave, "the same roots");
    assert.match(verify(leafBeforeSave, bundle), /^0 .*OK/, "a leaf issued before the save verifies against the restored bundle");
    for (const n of [follower, other]) {
      const fresh = await sign(n, management);
      assert.match(verify(fresh, bundleBeforeSave), /^0 .*OK/, `${n.info.id} signs with the restored CA`);
      assert.equal(fresh.chain[0], leafBeforeSave.chain[0], `${n.info.id} signs with the restored intermediate`);
    }
  });

  void test("a follower restarted after the restore comes back with the restored state", async () => {
    const [follower] = await followers();
    assert.equal(await follower.stop(), 0, `${follower.info.id} did not stop cleanly${follower.lastWords()}`);
    follower.start();
    await waitFor(async () => {
      const view = await follower.cluster().catch(() => undefined);
      return view !== undefined && view.appliedIndex >= restoreIndex ? true : undefined;
    }, NODE_READY_MS_MAX, () => `${follower.info.id} did not come back${follower.lastWords()}`);
    const stale = await call(follower, "GET", "/v1/catalog/services?stale", management);
    assert.equal(stale.status, 200, stale.text);
    assert.deepEqual(Object.keys(JSON.parse(stale.text) as object).sort(), Object.keys(expectedCatalog));
    const web = await call(follower, "GET", "/v1/catalog/service/web?stale", management);
    assert.deepEqual((JSON.parse(web.text) as { ServiceID: string }[]).map((e) => e.ServiceID).sort(), ["web-1", "web-2", "web-3", "web-4"]);
  });
});
