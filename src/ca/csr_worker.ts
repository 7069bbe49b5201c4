// A worker thread of the CSR pool (csr_pool.ts): checks each CSR's self-signature and, when it
// holds, signs the leaf with the intermediate the pool named. It keeps one LeafSigner per
// intermediate it was sent, until the pool retires it.

import { parentPort } from "node:worker_threads";
import { errorMessage } from "../common/errors.js";
import { CertificateError } from "./certificates.js";
import type { CsrBatch, CsrOutcome, CsrResult, CsrTask } from "./csr_pool.js";
import { CsrError, verifyCsrProof } from "./csr.js";
import { LeafSigner } from "./leaf.js";

if (parentPort === null) throw new Error("csr_worker.js runs as a worker thread of the CSR pool, not on its own");
const port = parentPort;
const signers = new Map<number, LeafSigner | Error>();

port.on("message", (batch: CsrBatch) => {
  for (const id of batch.retire) signers.delete(id);
  for (const { id, certificatePem, privateKey } of batch.install) {
    try {
      signers.set(id, new LeafSigner({ certificatePem, privateKey }));
    } catch (err) {
      // The main thread built a signer from the same intermediate, so this is a bug; its tasks fail alone.
      signers.set(id, err instanceof Error ? err : new Error(String(err)));
    }
  }
  const outcomes: CsrOutcome[] = batch.tasks.map((task) => ({ id: task.id, ...outcomeOf(task) }));
  port.postMessage(outcomes);
});

function outcomeOf({ proof, leaf, signerId }: CsrTask): CsrResult {
  try {
    verifyCsrProof(proof);
    const signer = signers.get(signerId);
    if (signer === undefined) return { ok: false, reason: "internal", message: `the CSR worker holds no signer ${signerId}` };
    if (signer instanceof Error) return { ok: false, reason: "internal", message: `the CSR worker cannot sign with intermediate ${signerId}: ${signer.message}` };
    return { ok: true, leaf: signer.sign(leaf) };
  } catch (err) {
    if (err instanceof CsrError) return { ok: false, reason: err.reason, message: err.message };
    if (err instanceof CertificateError) return { ok: false, reason: "certificate", message: err.message };
    // Anything else is a bug: the main thread fails the request with 500 and logs it.
    return { ok: false, reason: "internal", message: `the CSR worker failed: ${errorMessage(err)}` };
  }
}
