// A worker thread of the CSR verify pool (verify_pool.ts): checks batches of CSR self-signatures.
// It holds no key of the CA's: it only ever sees a CSR's signed bytes, public key and signature.

import { parentPort } from "node:worker_threads";
import { CsrError, type CsrProof, verifyCsrProof } from "./csr.js";
import type { VerifyBatch, VerifyOutcome, VerifyResult } from "./verify_pool.js";
import { errorMessage } from "../common/errors.js";

if (parentPort === null) throw new Error("verify_worker.js runs as a worker thread of the CSR verify pool, not on its own");
const port = parentPort;

port.on("message", (batch: VerifyBatch) => {
  const outcomes: VerifyOutcome[] = batch.tasks.map(({ id, proof }) => ({ id, ...outcomeOf(proof) }));
  port.postMessage(outcomes);
});

function outcomeOf(proof: CsrProof): VerifyResult {
  try {
    verifyCsrProof(proof);
    return { ok: true };
  } catch (err) {
    if (err instanceof CsrError) return { ok: false, reason: err.reason, message: err.message };
    // Anything else is a bug: the main thread fails the request with 500 and logs it.
    return { ok: false, reason: "internal", message: `the CSR verify worker failed: ${errorMessage(err)}` };
  }
}
