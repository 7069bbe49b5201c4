// The audit log of a real `cairn server`: writes of every kind and certificates signed through
// the sign route and Consul's leaf route are read back from the file, field by field, and no
// secret token or key material is in it.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

/** What a request presents as its token: it must never reach the audit file. */
const SECRET = "9f3c1e7a-secret-token-d2b4";

interface AuditLine {
  readonly time: string;
  readonly node: string;
  readonly kind: "request" | "certificate";
  readonly event: string;
  readonly operation?: string;
  readonly method?: string;
  readonly route?: string;
  readonly path?: string;
  readonly status?: number;
  readonly outcome: string;
  readonly accessor: string;
  readonly spiffeId?: string;
  readonly serial?: string;
  readonly origin?: string;
}

async function call(node: ProcessNode, method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(node.url(path), {
    method,
    headers: { "x-consul-token": SECRET, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, text: await res.text() };
}

void describe("the audit log", () => {
  let cluster: ProcessCluster;
  let node: ProcessNode;
  let scratch: string;
  let auditFile: string;

  const lines = (): AuditLine[] => readFileSync(auditFile, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as AuditLine);
  /** The line `match` picks, once it is in the file. */
  const lineWhere = (match: (l: AuditLine) => boolean, what: string): Promise<AuditLine> =>
    waitFor(() => Promise.resolve(lines().find(match)), 5_000, () => `no audit line for ${what}; the file holds:\n${readFileSync(auditFile, "utf8").slice(-2000)}`);

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), "cairn-audit-"));
    // A file in a directory that does not exist yet: the node makes it.
    auditFile = join(scratch, "logs", "audit.jsonl");
    cluster = await ProcessCluster.start(1, ["--audit-log", auditFile]);
    node = await cluster.agreedLeader();
  });
  after(async () => {
    await cluster.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  void test("each write is recorded with the time, node, operation, route, outcome and accessor; reads are not", async () => {
    const startMs = Date.now();
    assert.equal((await call(node, "PUT", "/v1/kv/audited?token=in-the-query", { value: "v" })).status, 200);
    assert.equal((await call(node, "POST", "/v1/registry/instances", { name: "web", id: "web-1", address: "10.0.0.1", port: 80 })).status, 200);
    assert.equal((await call(node, "DELETE", "/v1/registry/instances/web-1")).status, 200);
    assert.equal((await call(node, "PUT", "/v1/kv/refused", { nope: 1 })).status, 400);
    assert.equal((await call(node, "GET", "/v1/kv/audited")).status, 200);

    const put = await lineWhere((l) => l.operation === "kv.put" && l.path === "/v1/kv/audited", "the kv put");
    assert.equal(put.kind, "request");
    assert.equal(put.node, "n1");
    assert.equal(put.method, "PUT");
    assert.equal(put.route, "/v1/kv/:key");
    assert.equal(put.status, 200);
    assert.equal(put.outcome, "ok");
    assert.equal(put.accessor, "anonymous");
    const timeMs = Date.parse(put.time);
    assert.ok(timeMs >= startMs - 1000 && timeMs <= Date.now() + 1000, `time ${put.time}`);
    assert.ok(!JSON.stringify(put).includes("in-the-query"), "the query string (which may carry ?token=) is not recorded");

    assert.equal((await lineWhere((l) => l.operation === "service.register", "the registration")).status, 200);
    assert.equal((await lineWhere((l) => l.operation === "service.deregister", "the deregistration")).route, "/v1/registry/instances/:id");
    const refused = await lineWhere((l) => l.path === "/v1/kv/refused", "the refused write");
    assert.equal(refused.status, 400);
    assert.equal(refused.outcome, "refused");
    assert.ok(!lines().some((l) => l.method === "GET"), "reads are not audited");
  });

  void test("operator writes are recorded: CA rotation and leader transfer", async () => {
    assert.equal((await call(node, "POST", "/v1/ca/rotate", {})).status, 200);
    assert.equal((await lineWhere((l) => l.operation === "ca.rotate", "the rotation")).outcome, "ok");
    assert.equal((await call(node, "POST", "/v1/cluster/leader", { to: "nobody" })).status, 400);
    assert.equal((await lineWhere((l) => l.operation === "leader.transfer", "the transfer")).status, 400);
  });

  void test("each certificate issued, by the sign route or Consul's leaf route, is recorded with its serial and SPIFFE ID", async () => {
    const keyPath = join(scratch, "key.pem");
    const uri = "spiffe://cairn.local/ns/default/svc/api";
    const csr = spawnSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyPath, "-subj", "/", "-addext", `subjectAltName=URI:${uri}`], { encoding: "utf8" });
    assert.equal(csr.status, 0, csr.stderr);
    const signed = await call(node, "POST", "/v1/ca/sign", { csr: csr.stdout });
    assert.equal(signed.status, 200, signed.text);
    const { serial, spiffeId } = JSON.parse(signed.text) as { serial: string; spiffeId: string };
    const record = await lineWhere((l) => l.kind === "certificate" && l.serial === serial, `certificate ${serial}`);
    assert.equal(record.spiffeId, spiffeId);
    assert.equal(record.spiffeId, uri);
    assert.equal(record.node, "n1");
    assert.equal(record.accessor, "anonymous");
    assert.match(record.origin ?? "", /^http /);
    assert.ok(!Number.isNaN(Date.parse(record.time)));

    const leaf = await call(node, "GET", "/v1/agent/connect/ca/leaf/db");
    assert.equal(leaf.status, 200, leaf.text);
    const leafJson = JSON.parse(leaf.text) as { SerialNumber: string; PrivateKeyPEM: string };
    assert.match(leafJson.PrivateKeyPEM, /PRIVATE KEY/, "the leaf answer carries a key, which the audit must not");
    const leafRecord = await lineWhere((l) => l.kind === "certificate" && l.spiffeId?.endsWith("/svc/db") === true, "the Consul leaf");
    assert.ok(leafRecord.serial !== undefined && leafRecord.serial !== "");
  });

  void test("no secret token, key or certificate material is in the file", () => {
    const text = readFileSync(auditFile, "utf8");
    assert.ok(text.length > 0);
    assert.ok(!text.includes(SECRET), "the presented token's secret is in the audit log");
    assert.doesNotMatch(text, /PRIVATE KEY|BEGIN CERTIFICATE|BEGIN CERTIFICATE REQUEST/);
    for (const l of lines()) assert.ok(l.accessor !== "", "every record names who asked");
  });
});
