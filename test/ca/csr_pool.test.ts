// The CSR pool on real worker threads: it checks a CSR's signature and signs its leaf with the
// intermediate it is named, keeps a bounded set of intermediates per worker, and bounds what is
// in flight.

import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { after, describe, test } from "node:test";
import { pino } from "pino";
import { createIntermediateCertificate, createRootCertificate } from "../../src/ca/certificates.js";
import { BATCH_TASKS_MAX, CaBusyError, CsrIssuePool, type PoolSigner, WORKER_SIGNERS_MAX, inlineIssuer } from "../../src/ca/csr_pool.js";
import { CsrError, readCsrUnverified } from "../../src/ca/csr.js";
import { generateCaKey } from "../../src/ca/keys.js";
import { type LeafRequest, LeafSigner } from "../../src/ca/leaf.js";
import { csrKeys, csrPem } from "../support/fast_csr.js";

const WEB = "spiffe://cairn.local/ns/default/svc/web";
const HOUR_MS = 3_600_000;
let signerIds = 1000;

/** A fresh root and intermediate, as the authority would hand the pool. */
function poolSigner(name: string): PoolSigner & { readonly intermediatePem: string } {
  const nowMs = Date.now();
  const validity = { trustDomain: "cairn.local", notBeforeMs: nowMs - 60_000, notAfterMs: nowMs + 24 * HOUR_MS };
  const root = generateCaKey("ec-p256");
  const rootPem = createRootCertificate(root, { ...validity, commonName: `root ${name}` });
  const key = generateCaKey("ec-p256");
  const certificatePem = createIntermediateCertificate(key.publicKey, { certificatePem: rootPem, privateKey: root.privateKey }, { ...validity, commonName: `intermediate ${name}` });
  const intermediate = { certificatePem, privateKey: key.privateKey };
  return { id: signerIds++, signer: new LeafSigner(intermediate), intermediate, intermediatePem: certificatePem };
}

/** A CSR's proof and the leaf it asks for. */
function request(pem: string): { proof: ReturnType<typeof readCsrUnverified>["proof"]; leaf: LeafRequest } {
  const { parsed, proof } = readCsrUnverified(pem);
  const nowMs = Date.now();
  return { proof, leaf: { subjectPublicKeyInfoDer: parsed.subjectPublicKeyInfoDer, spiffeId: parsed.uris[0], dnsNames: parsed.dnsNames, notBeforeMs: nowMs, notAfterMs: nowMs + HOUR_MS } };
}

/** The leaf was signed by `signer`'s intermediate, for the CSR's key and SPIFFE ID. */
function assertSignedBy(leafPem: string, signer: { readonly intermediatePem: string }, spkiDer: Uint8Array): void {
  const leaf = new X509Certificate(leafPem);
  assert.ok(leaf.verify(new X509Certificate(signer.intermediatePem).publicKey), "the leaf does not verify with the intermediate it was to be signed by");
  assert.equal(leaf.subjectAltName?.split(", ")[0], `URI:${WEB}`);
  assert.deepEqual(new Uint8Array(leaf.publicKey.export({ format: "der", type: "spki" })), new Uint8Array(spkiDer));
}

void describe("the CSR pool", () => {
  const pool = new CsrIssuePool({ workers: 2, inflightMax: 3 }, pino({ level: "silent" }));
  after(() => pool.close());
  const [key] = csrKeys(1);
  const signer = poolSigner("a");

  test("a worker signs the leaf for a CSR signed by its own key, and refuses one whose signature was altered", async () => {
    const { proof, leaf } = request(csrPem(key, WEB, "good.web"));
    const signed = await pool.issue(proof, leaf, signer);
    assertSignedBy(signed.pem, signer, key.spkiDer);
    const signature = proof.signature.slice();
    signature[signature.length - 1] ^= 1;
    await assert.rejects(pool.issue({ ...proof, signature }, leaf, signer), (err: unknown) => err instanceof CsrError && err.reason === "badSignature");
    assert.equal(pool.inflight, 0);
  });

  test("the worker and the event loop make the same certificate but for its serial", async () => {
    const { proof, leaf } = request(csrPem(key, WEB, "same.web"));
    const [fromWorker, inline] = await Promise.all([pool.issue(proof, leaf, signer), inlineIssuer.issue(proof, leaf, signer)]);
    const a = new X509Certificate(fromWorker.pem);
    const b = new X509Certificate(inline.pem);
    assert.notEqual(a.serialNumber, b.serialNumber);
    for (const field of ["subject", "issuer", "subjectAltName", "validFrom", "validTo", "keyUsage", "infoAccess"] as const) assert.deepEqual(a[field], b[field], field);
    assert.deepEqual({ notBeforeMs: fromWorker.notBeforeMs, notAfterMs: fromWorker.notAfterMs }, { notBeforeMs: inline.notBeforeMs, notAfterMs: inline.notAfterMs });
  });

  test("past its in-flight bound a CSR is refused at once with CaBusyError, and the pool frees as answers come", async () => {
    const requests = Array.from({ length: 4 }, (_, i) => request(csrPem(key, WEB, `n${i}.web`)));
    const first = requests.slice(0, 3).map((r) => pool.issue(r.proof, r.leaf, signer));
    await assert.rejects(pool.issue(requests[3].proof, requests[3].leaf, signer), CaBusyError);
    await Promise.all(first);
    assert.equal(pool.inflight, 0);
    await pool.issue(requests[3].proof, requests[3].leaf, signer);
  });
});

void describe("the CSR pool's intermediates", () => {
  const pool = new CsrIssuePool({ workers: 1, inflightMax: 256 }, pino({ level: "silent" }));
  after(() => pool.close());
  const [key] = csrKeys(1);

  test("each leaf is signed by the intermediate it was asked for, through more rotations than a worker keeps, with old and new in one batch", async () => {
    const signers = Array.from({ length: WORKER_SIGNERS_MAX * 2 + 1 }, (_, i) => poolSigner(`r${i}`));
    for (let at = 0; at < signers.length; at++) {
      // The previous intermediate and the new one, interleaved, as requests admitted either side of a rotation arrive.
      const pair = [signers[Math.max(0, at - 1)], signers[at]];
      const asked = Array.from({ length: BATCH_TASKS_MAX * 2 }, (_, i) => ({ signer: pair[i % 2], ...request(csrPem(key, WEB, `r${at}-${i}.web`)) }));
      const leaves = await Promise.all(asked.map((a) => pool.issue(a.proof, a.leaf, a.signer)));
      leaves.forEach((leaf, i) => assertSignedBy(leaf.pem, asked[i].signer, key.spkiDer));
    }
    // Long retired from the worker, the first intermediate is installed again when asked for.
    const again = request(csrPem(key, WEB, "again.web"));
    assertSignedBy((await pool.issue(again.proof, again.leaf, signers[0])).pem, signers[0], key.spkiDer);
  });

  test("a batch that needs the oldest intermediate a full worker holds, beside a new one, keeps the old one and retires another", async () => {
    const signers = Array.from({ length: WORKER_SIGNERS_MAX + 1 }, (_, i) => poolSigner(`full${i}`));
    // One at a time, so the worker holds the first WORKER_SIGNERS_MAX, oldest first.
    for (const [i, signer] of signers.slice(0, WORKER_SIGNERS_MAX).entries()) {
      const r = request(csrPem(key, WEB, `fill${i}.web`));
      assertSignedBy((await pool.issue(r.proof, r.leaf, signer)).pem, signer, key.spkiDer);
    }
    // Together, so in one batch: the oldest it holds, and one it must install.
    const asked = [signers[0], signers[WORKER_SIGNERS_MAX]].map((signer, i) => ({ signer, ...request(csrPem(key, WEB, `both${i}.web`)) }));
    const leaves = await Promise.all(asked.map((a) => pool.issue(a.proof, a.leaf, a.signer)));
    leaves.forEach((leaf, i) => assertSignedBy(leaf.pem, asked[i].signer, key.spkiDer));
  });

  test("CSRs that arrive together are answered in small batches, so the event loop has answers while the worker works on the rest", async () => {
    const signer = poolSigner("batches");
    const count = 16;
    assert.ok(BATCH_TASKS_MAX < count);
    const asked = Array.from({ length: count }, (_, i) => request(csrPem(key, WEB, `p${i}.web`)));
    const answers = asked.map((a) => pool.issue(a.proof, a.leaf, signer));
    await answers[0];
    // Had all of them gone to the worker as one batch, every one would be settled by now.
    assert.ok(pool.inflight > 0, `all ${count} CSRs were answered at once, in one batch`);
    await Promise.all(answers);
    assert.equal(pool.inflight, 0);
  });
});
