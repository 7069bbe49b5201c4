// Certificates: every issued leaf verifies against the trust bundle of its time, and names the
// SPIFFE ID it was asked for.
//
// For each ok CertOp: the real `openssl verify` with -CAfile (the bundle fetched with it), the
// chain's intermediates as -untrusted, -attime at the runner's wall clock when the request
// completed (seconds) and -purpose sslclient (an SVID is presented by a workload to its peers;
// Cairn's leaves carry both serverAuth and clientAuth). The leaf's URI SANs, read by Node's
// X509Certificate (OpenSSL's own parser), must be exactly [spiffeId].
//
// Sampling: up to VERIFIED_MAX operations are all verified. Past that, every operation whose span
// overlaps a fault is verified (always, however many), plus every k-th of the others in id
// order, with k chosen so that the total stays near VERIFIED_MAX. stats.sampleRule says which.
// openssl runs at most OPENSSL_CONCURRENCY at a time, on files in a temporary directory that is
// removed afterwards, also on failure.

import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errorMessage } from "../../src/common/errors.js";
import { pemDecodeAll, pemEncode } from "../../src/common/der.js";
import type { CertOp, RunHistory, Verdict } from "../history.js";
import { faultSpanMs, opSpansMs, overlaps, runEndMs } from "./intervals.js";
import { AnomalyLog, describeOp } from "./verdicts.js";

export const VERIFIED_MAX = 300;
export const OPENSSL_CONCURRENCY = 4;
/** One openssl run, at most: a hung one is reported, not waited for. */
export const OPENSSL_TIMEOUT_MS = 30_000;

export interface CertificateCheckOptions {
  readonly opensslPath?: string;
  readonly verifiedMax?: number;
  readonly concurrency?: number;
}

interface ResolvedOptions {
  readonly opensslPath: string;
  readonly verifiedMax: number;
  readonly concurrency: number;
}

type CompleteCertOp = CertOp & { readonly chainPem: string; readonly bundlePem: string; readonly completedWallMs: number };

export async function checkCertificates(history: RunHistory, options: CertificateCheckOptions = {}): Promise<Verdict> {
  const resolved: ResolvedOptions = {
    opensslPath: options.opensslPath ?? "openssl",
    verifiedMax: options.verifiedMax ?? VERIFIED_MAX,
    concurrency: Math.max(1, options.concurrency ?? OPENSSL_CONCURRENCY),
  };
  const anomalies = new AnomalyLog();
  const issued: CompleteCertOp[] = [];
  for (const op of history.ops) {
    if (op.kind !== "cert" || op.outcome !== "ok") continue;
    if (op.chainPem === undefined || op.bundlePem === undefined || op.completedWallMs === undefined) {
      anomalies.add({ message: `certificate ${describeOp(op)} is ok but was recorded without its chain, trust bundle or wall-clock time`, opIds: [op.id] });
      continue;
    }
    issued.push(op as CompleteCertOp);
  }
  const { chosen, sampleRule, duringFaults } = choose(history, issued, resolved.verifiedMax);

  const dir = await mkdtemp(join(tmpdir(), "cairn-chaos-certs-"));
  let verified = 0;
  try {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < chosen.length) {
        const op = chosen[next++];
        const problem = await verifyOne(op, dir, resolved.opensslPath);
        verified++;
        if (problem !== undefined) anomalies.add({ message: `certificate ${describeOp(op)} for ${op.spiffeId} from ${op.node}: ${problem}`, opIds: [op.id], atMs: op.completedAtMs });
      }
    };
    await Promise.all(Array.from({ length: resolved.concurrency }, worker));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return anomalies.verdict("certificates", { issued: issued.length, verified, verifiedDuringFaults: duringFaults, sampleRule });
}

function choose(history: RunHistory, issued: readonly CompleteCertOp[], verifiedMax: number): { chosen: CompleteCertOp[]; sampleRule: string; duringFaults: number } {
  const endOfRunMs = runEndMs(history);
  const faults = history.faults.map((f) => faultSpanMs(f, endOfRunMs));
  const spans = opSpansMs(history);
  const inFault = (op: CertOp): boolean => {
    const span = spans.get(op.id) ?? { startMs: op.invokedAtMs, endMs: op.invokedAtMs };
    return faults.some((f) => overlaps(span, f));
  };
  const duringFaults = issued.filter(inFault);
  if (issued.length <= verifiedMax) return { chosen: [...issued], sampleRule: "all", duringFaults: duringFaults.length };
  const others = issued.filter((op) => !inFault(op)).sort((a, b) => a.id - b.id);
  const stride = Math.ceil(others.length / Math.max(1, verifiedMax - duringFaults.length));
  const sampled = others.filter((_, i) => i % stride === 0);
  return {
    chosen: [...duringFaults, ...sampled],
    sampleRule: `every one overlapping a fault (${duringFaults.length}) and every ${stride}th other by id (${sampled.length} of ${others.length})`,
    duringFaults: duringFaults.length,
  };
}

/** What is wrong with one certificate, or undefined when it verifies and names its SPIFFE ID. */
async function verifyOne(op: CompleteCertOp, dir: string, opensslPath: string): Promise<string | undefined> {
  let chain: Uint8Array[];
  let roots: Uint8Array[];
  try {
    chain = pemDecodeAll(op.chainPem, "CERTIFICATE");
    roots = pemDecodeAll(op.bundlePem, "CERTIFICATE");
  } catch (err) {
    return `its chain or trust bundle is not valid PEM: ${errorMessage(err)}`;
  }
  if (chain.length === 0) return "the chain holds no certificate";
  if (roots.length === 0) return "the trust bundle holds no certificate";

  let uris: string[];
  try {
    uris = uriSans(new X509Certificate(chain[0]).subjectAltName);
  } catch (err) {
    return `the leaf cannot be parsed: ${errorMessage(err)}`;
  }
  if (uris.length !== 1 || uris[0] !== op.spiffeId) return `the leaf's URI SANs are [${uris.join(", ")}], not [${op.spiffeId}]`;

  const path = (name: string): string => join(dir, `${op.id}-${name}.pem`);
  await writeFile(path("leaf"), pemEncode("CERTIFICATE", chain[0]));
  await writeFile(path("bundle"), roots.map((der) => pemEncode("CERTIFICATE", der)).join(""));
  const args = ["verify", "-attime", String(Math.floor(op.completedWallMs / 1000)), "-purpose", "sslclient", "-CAfile", path("bundle")];
  if (chain.length > 1) {
    await writeFile(path("untrusted"), chain.slice(1).map((der) => pemEncode("CERTIFICATE", der)).join(""));
    args.push("-untrusted", path("untrusted"));
  }
  args.push(path("leaf"));
  const run = await runOpenssl(opensslPath, args);
  if (run.ok) return undefined;
  const at = new Date(op.completedWallMs).toISOString();
  return `openssl verify at ${at} failed: ${run.output.trim().replaceAll(dir, "").replace(/\s+/g, " ")}`;
}

/** The URI entries of Node's subjectAltName text ("DNS:a, URI:spiffe://td/x"). */
function uriSans(subjectAltName: string | undefined): string[] {
  if (subjectAltName === undefined) return [];
  return subjectAltName.split(", ").filter((e) => e.startsWith("URI:")).map((e) => e.slice("URI:".length));
}

function runOpenssl(opensslPath: string, args: readonly string[]): Promise<{ ok: boolean; output: string }> {
  return new Promise((resolve) => {
    execFile(opensslPath, args, { timeout: OPENSSL_TIMEOUT_MS, encoding: "utf8" }, (err, stdout, stderr) => {
      const output = `${stdout}${stderr}`;
      if (err === null) resolve({ ok: true, output });
      else if ((err as NodeJS.ErrnoException).code === "ENOENT") resolve({ ok: false, output: `openssl was not found at "${opensslPath}": install it or pass opensslPath` });
      else resolve({ ok: false, output: output === "" ? err.message : output });
    });
  });
}
