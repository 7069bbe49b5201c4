// Certificate clients: fetch the trust bundle from a node, then have the same node sign a CSR
// for a workload's SPIFFE ID. One key per client, made once: key generation is the costly part,
// and the runner's two cores also run the cluster.

import { type KeyObject, generateKeyPairSync } from "node:crypto";
import { createCsr } from "../../src/client/certificates.js";
import type { CertOp } from "../history.js";
import { type ClientContext, opBase, pickNode } from "./client.js";
import { callNode, errorField, type NodeTarget } from "./http.js";
import { readOutcome } from "./outcome.js";

/** The namespace the workload's identities live in. */
const SPIFFE_NAMESPACE = "default";

export class CertClient {
  private readonly privateKey: KeyObject;
  private readonly publicKey: KeyObject;
  private trustDomain: string | undefined;

  constructor(private readonly ctx: ClientContext, private readonly services: readonly string[]) {
    ({ privateKey: this.privateKey, publicKey: this.publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" }));
  }

  async step(): Promise<void> {
    const node = pickNode(this.ctx);
    if (node === undefined) return;
    const trustDomain = this.trustDomain ?? await this.learnTrustDomain(node);
    if (trustDomain === undefined) return;
    this.trustDomain = trustDomain;
    const spiffeId = `spiffe://${trustDomain}/ns/${SPIFFE_NAMESPACE}/svc/${this.ctx.random.pick(this.services)}`;
    const invokedAtMs = this.ctx.recorder.now();
    const bundle = await callNode(node, "GET", "/v1/ca/bundle?format=pem", undefined, this.ctx.opTimeoutMs);
    const bundleSettled = readOutcome(bundle);
    if (bundleSettled.outcome !== "ok" || bundle.kind !== "answer") {
      this.ctx.recorder.record({ ...opBase(this.ctx, node, invokedAtMs, { ...bundleSettled, error: `trust bundle: ${bundleSettled.error ?? ""}` }), kind: "cert", spiffeId });
      return;
    }
    const bundlePem = bundle.text;
    const csr = createCsr(spiffeId, [], this.privateKey, this.publicKey);
    const signed = await callNode(node, "POST", "/v1/ca/sign", { csr }, this.ctx.opTimeoutMs);
    const completedWallMs = Date.now();
    let settled = readOutcome(signed);
    const chainPem = settled.outcome === "ok" && signed.kind === "answer" ? chainOf(signed.body) : undefined;
    if (settled.outcome === "ok" && chainPem === undefined) settled = { outcome: "fail", status: settled.status, error: "the answer had no certificate and chain" };
    const op: CertOp = {
      ...opBase(this.ctx, node, invokedAtMs, settled), kind: "cert", spiffeId, bundlePem,
      ...(chainPem === undefined ? {} : { chainPem, completedWallMs }),
    };
    this.ctx.recorder.record(op);
  }

  /** The trust domain the cluster's CA signs for (GET /v1/ca/roots); not an operation of the history. */
  private async learnTrustDomain(node: NodeTarget): Promise<string | undefined> {
    const roots = await callNode(node, "GET", "/v1/ca/roots", undefined, this.ctx.opTimeoutMs);
    if (roots.kind !== "answer" || roots.status !== 200 || errorField(roots.body) !== undefined) return undefined;
    const body = roots.body;
    const domain = typeof body === "object" && body !== null && "trustDomain" in body ? body.trustDomain : undefined;
    return typeof domain === "string" && domain !== "" ? domain : undefined;
  }
}

/** The leaf, then the intermediates, PEM, from POST /v1/ca/sign's {certificate, chain}. */
function chainOf(body: unknown): string | undefined {
  const b = body as { certificate?: unknown; chain?: unknown } | null;
  if (typeof b?.certificate !== "string" || !Array.isArray(b.chain) || !b.chain.every((c): c is string => typeof c === "string")) return undefined;
  const pems = [b.certificate, ...b.chain].map((p) => (p.endsWith("\n") ? p : `${p}\n`));
  return pems.join("");
}
