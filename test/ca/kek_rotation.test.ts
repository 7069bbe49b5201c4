// Rotating the CA's key-encryption key on a real three-node cluster, as docs/security.md ("Rotating the key-encryption key") tells
// an operator to: every node gets the new KEK as current and the old one as previous, a CA rotation
// re-seals the active root under the new KEK, and then the old KEK is dropped. Leaves are checked
// with openssl against the trust bundle, and a node missed along the way fails with the fix.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

const WEB_ID = "spiffe://cairn.local/ns/default/svc/web";
/** How long a restarted node may take to rejoin and be ready to sign. */
const NODE_READY_MS_MAX = 15_000;
const REWARN = "run POST /v1/ca/rotate to re-seal the CA under the current KEK";

interface Signed { certificate: string; chain: string[] }
interface Bundle { roots: { id: string; certificate: string; active: boolean }[] }

let dir: string;

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
}

function csr(): string {
  const r = spawnSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "/dev/null", "-subj", "/", "-addext", `subjectAltName=URI:${WEB_ID}`], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
  return r.stdout;
}

async function post(node: ProcessNode, path: string, body: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(node.url(path), { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, text: await res.text() };
}

async function bundle(node: ProcessNode): Promise<Bundle> {
  const res = await fetch(node.url("/v1/ca/bundle"));
  assert.equal(res.status, 200);
  return (await res.json()) as Bundle;
}

/** Signs on `node`, waiting out its restart (no leader heard yet, a closed port): only a steady answer counts. */
async function signWhenReady(node: ProcessNode): Promise<Signed> {
  let last = "";
  return waitFor(async () => {
    const r = await post(node, "/v1/ca/sign", { csr: csr() }).catch((err: Error) => ({ status: 0, text: err.message }));
    last = `${r.status} ${r.text}`;
    return r.status === 200 ? (JSON.parse(r.text) as Signed) : undefined;
  }, NODE_READY_MS_MAX, () => `${node.info.id} did not sign: ${last}${node.lastWords()}`);
}

/** `openssl verify` of a leaf and its chain against exactly the roots given. */
function verify(signed: Signed, rootsPem: string): { ok: boolean; output: string } {
  const tag = randomBytes(4).toString("hex");
  const r = spawnSync("openssl", ["verify", "-CAfile", file(`roots-${tag}.pem`, rootsPem), "-untrusted", file(`chain-${tag}.pem`, signed.chain.join("")), file(`leaf-${tag}.pem`, signed.certificate)], { encoding: "utf8" });
  return { ok: r.status === 0, output: r.stdout + r.stderr };
}

/** Every encoding of every KEK the test gives a node: none may appear in its output. */
const secretsGiven: string[] = [];

function assertNoKekLogged(node: ProcessNode): void {
  for (const secret of secretsGiven) assert.ok(!(node.stdout + node.stderr).includes(secret), `a KEK appeared in ${node.info.id}'s log`);
}

async function restart(node: ProcessNode, kekArgs: string[]): Promise<void> {
  assertNoKekLogged(node);
  assert.equal(await node.stop(), 0, `${node.info.id} did not stop cleanly${node.lastWords()}`);
  node.start(kekArgs);
}

void describe("rotating the CA's key-encryption key", () => {
  let cluster: ProcessCluster;
  let nodes: ProcessNode[];
  const kekA = randomBytes(32).toString("base64");
  const kekB = randomBytes(32).toString("hex");
  let fileA: string;
  let fileB: string;

  before(async () => {
    secretsGiven.push(kekA, kekB, Buffer.from(kekA, "base64").toString("hex"), Buffer.from(kekB, "hex").toString("base64"));
    dir = mkdtempSync(join(tmpdir(), "cairn-kek-test-"));
    fileA = file("kek-a", `${kekA}\n`);
    fileB = file("kek-b", `${kekB}\n`);
    cluster = await ProcessCluster.start(3, ["--ca-kek-file", fileA]);
    nodes = cluster.nodes;
    await cluster.agreedLeader();
  });

  after(async () => {
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  void test("new KEK as current and old as previous, then a CA rotation, then the old KEK dropped: signing never stops, and a missed node says what to do", async () => {
    // 1. The cluster runs on KEK A.
    const signedUnderA = await signWhenReady(nodes[0]);
    const rootsA = (await bundle(nodes[0])).roots;
    assert.equal(rootsA.length, 1);
    assert.ok(verify(signedUnderA, rootsA[0].certificate).ok);

    // 2. A rolling restart gives every node B as current and A as previous: each still signs, with the
    // same root, and warns that the CA wants re-sealing.
    const previousFile = file("kek-previous", `# KEK A, being rotated out\n${kekA}\n`);
    for (const node of nodes) {
      await restart(node, ["--ca-kek-file", fileB, "--ca-kek-previous-file", previousFile]);
      const signed = await signWhenReady(node);
      const check = verify(signed, rootsA[0].certificate);
      assert.ok(check.ok, `${node.info.id} signed under the old root, which still verifies: ${check.output}`);
      await waitFor(() => Promise.resolve(node.stdout.includes(REWARN) ? true : undefined), 5_000, () => `${node.info.id} did not warn that the CA is under a previous KEK${node.lastWords()}`);
      assert.equal(node.stdout.split(REWARN).length - 1, 1, `${node.info.id} warned more than once`);
    }

    // 3. A node restarted with B alone before the rotation cannot unseal the CA, and says why and what to do.
    const missed = nodes[2];
    await restart(missed, ["--ca-kek-file", fileB]);
    let refusal = { status: 0, text: "" };
    await waitFor(async () => {
      refusal = await post(missed, "/v1/ca/sign", { csr: csr() }).catch(() => ({ status: 0, text: "" }));
      return refusal.status === 503 && refusal.text.includes("previous KEK") ? true : undefined;
    }, NODE_READY_MS_MAX, () => `the missed node did not refuse with the fix: ${refusal.status} ${refusal.text}${missed.lastWords()}`);
    const message = (JSON.parse(refusal.text) as { error: string }).error;
    assert.match(message, /^this node cannot sign: the CA key is sealed with KEK [0-9a-f]{16}, which is neither this node's current KEK [0-9a-f]{16} nor one of its previous KEKs/);
    assert.match(message, /--ca-kek-previous-file or CAIRN_CA_KEK_PREVIOUS/);
    // Nor can it rotate: cross-signing needs the old root's key, sealed under A.
    const rotateOnMissed = await post(missed, "/v1/ca/rotate", {});
    assert.equal(rotateOnMissed.status, 503, rotateOnMissed.text);
    assert.match(rotateOnMissed.text, /this node cannot rotate the CA: .*previous KEK/);

    // 4. POST /v1/ca/rotate on a node holding both KEKs re-seals the CA under B; the missed node signs again.
    const rotated = await post(nodes[0], "/v1/ca/rotate", {});
    assert.equal(rotated.status, 200, rotated.text);
    await signWhenReady(missed);

    // 5. Every node drops A. Its file is deleted, so no node can be reading it.
    rmSync(fileA);
    rmSync(previousFile);
    for (const node of nodes) {
      await restart(node, ["--ca-kek-file", fileB]);
      const roots = await waitFor(async () => {
        const b = await bundle(node).catch(() => undefined);
        return b !== undefined && b.roots.length === 2 ? b.roots : undefined;
      }, NODE_READY_MS_MAX, () => `${node.info.id} has not both roots${node.lastWords()}`);
      const signed = await signWhenReady(node);
      const bundlePem = roots.map((r) => r.certificate).join("");
      const check = verify(signed, bundlePem);
      assert.ok(check.ok, `${node.info.id}'s leaf verifies against the trust bundle: ${check.output}`);
      const active = roots.find((r) => r.active);
      assert.ok(active !== undefined && active.id !== rootsA[0].id, "the rotation made a new root active");
      assert.ok(verify(signed, active.certificate).ok, "the new leaf chains to the new root alone");
      // A leaf of the old root stays valid for its workload while the old root is in the bundle.
      assert.ok(verify(signedUnderA, bundlePem).ok);
      assert.ok(!node.stdout.includes(REWARN), `${node.info.id} still warns after the rotation${node.lastWords()}`);
    }

    // No KEK reaches a log (each run before this one was checked as its node restarted).
    for (const node of nodes) assertNoKekLogged(node);
  });
});
