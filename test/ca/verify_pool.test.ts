// The CSR verify pool on real worker threads: good and bad signatures, and its in-flight bound.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { pino } from "pino";
import { CsrError, readCsrUnverified } from "../../src/ca/csr.js";
import { BATCH_TASKS_MAX, CaBusyError, CsrVerifyPool } from "../../src/ca/verify_pool.js";
import { csrKeys, csrPem } from "../support/fast_csr.js";

const WEB = "spiffe://cairn.local/ns/default/svc/web";

void describe("the CSR verify pool", () => {
  const pool = new CsrVerifyPool({ workers: 2, inflightMax: 3 }, pino({ level: "silent" }));
  after(() => pool.close());
  const [key] = csrKeys(1);

  test("a worker accepts a CSR signed by its own key and refuses one whose signature was altered", async () => {
    const { proof } = readCsrUnverified(csrPem(key, WEB, "good.web"));
    await pool.verify(proof);
    const signature = proof.signature.slice();
    signature[signature.length - 1] ^= 1;
    await assert.rejects(pool.verify({ ...proof, signature }), (err: unknown) => err instanceof CsrError && err.reason === "badSignature");
    assert.equal(pool.inflight, 0);
  });

  test("past its in-flight bound a CSR is refused at once with CaBusyError, and the pool frees as answers come", async () => {
    const proofs = Array.from({ length: 4 }, (_, i) => readCsrUnverified(csrPem(key, WEB, `n${i}.web`)).proof);
    const first = proofs.slice(0, 3).map((p) => pool.verify(p));
    await assert.rejects(pool.verify(proofs[3]), CaBusyError);
    await Promise.all(first);
    assert.equal(pool.inflight, 0);
    await pool.verify(proofs[3]);
  });
});

void describe("the CSR verify pool's pipelining", () => {
  const pool = new CsrVerifyPool({ workers: 1, inflightMax: 64 }, pino({ level: "silent" }));
  after(() => pool.close());
  const [key] = csrKeys(1);

  test("CSRs that arrive together are answered in small batches, so the first are signed while the worker checks the rest", async () => {
    const count = 16;
    assert.ok(BATCH_TASKS_MAX < count);
    const proofs = Array.from({ length: count }, (_, i) => readCsrUnverified(csrPem(key, WEB, `p${i}.web`)).proof);
    const answers = proofs.map((p) => pool.verify(p));
    await answers[0];
    // Had all of them gone to the worker as one batch, every one would be settled by now.
    assert.ok(pool.inflight > 0, `all ${count} CSRs were answered at once, in one batch`);
    await Promise.all(answers);
    assert.equal(pool.inflight, 0);
  });
});
