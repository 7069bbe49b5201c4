// npm run bench:ca: X.509-SVID issuance per second on one core, against the crypto it cannot avoid.
//   - cairn: the full pipeline per certificate: parseCsr of a PEM CSR (strict DER read, key checks,
//     ECDSA P-256 verify of its self-signature, natively), LeafSigner.sign with an ECDSA P-256
//     intermediate, PEM encoding. CSRs come from a pool of distinct P-256 CSRs (URI SAN
//     spiffe://cairn.local/ns/default/svc/web) made by @peculiar/x509 before any timing.
//   - limit: raw node:crypto, one ECDSA P-256 sign of a 300-byte message with the CA key plus one
//     verify of a CSR's signature with its key already loaded. The goal is cairn >= 0.5 of it.
//   - fresh: the limit, but with each CSR's key imported into node:crypto (as a JWK, the cheapest
//     way it offers), as an issuance through node:crypto must for a key it has not seen. Cairn
//     checks EC CSRs natively instead (src/ca/ec_verify.ts), which avoids most of that import.
//   - naive: the same job through @peculiar/x509 (parse and verify the CSR, then
//     X509CertificateGenerator.create and PEM), one certificate at a time.
// One process, one core, no workers. Each round gives every path BENCH_SECONDS, the paths taking
// turns in 100 ms slices so that load from elsewhere on the machine hits them alike, each slice
// ending with a collection of its own garbage charged to it; medians of BENCH_ROUNDS rounds are
// reported because the machine is noisy. Then a breakdown of cairn's
// per-certificate cost by stage, and a final one-line JSON summary.
// Never part of npm test.
//
// Env (each bounded; out of range is an error):
//   BENCH_SECONDS        seconds per timed round             (default 3, 1-60)
//   BENCH_ROUNDS         rounds per path, medians reported    (default 5, 1-15)
//   BENCH_WARMUP_SECONDS warm-up per path before round 1      (default 1, 0-30)
//   BENCH_CSRS           distinct CSRs in the pool            (default 1000, 10-20000)
//   BENCH_NAIVE          1 runs the @peculiar/x509 path       (default 1, 0-1)
//   BENCH_HTTP           1 runs the HTTP path with wrk          (default 1, 0-1)
//   BENCH_HTTP_WARMUP_SECONDS  wrk's warm-up of each fresh server (default 3, 0-30)
//
// The HTTP path: a one-node `cairn server` (its rate limits set far above the load by flag) and
// wrk (1 thread, 16 connections) posting the pool's CSRs to POST /v1/ca/sign, once with CSRs
// checked and signed on the event loop (--csr-verify-workers 0: one core) and once with one CSR
// worker doing both (the default on two cores). Each round alternates a limit slice of
// BENCH_SECONDS in this process with a wrk run of BENCH_SECONDS, so both meet the same machine;
// the ratio is the median of per-round ratios. The server's own CPU seconds are read from /proc,
// so certificates per CPU-second show what the worker buys and what it costs. Needs
// `apt-get install -y wrk`.

import { type JsonWebKey, type KeyObject, createPublicKey, randomBytes, sign, verify, webcrypto } from "node:crypto";
import { cpus, loadavg } from "node:os";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { createIntermediateCertificate, createRootCertificate, decodeCertificate, inspectCertificate } from "../src/ca/certificates.js";
import { parseCsr, readCsrUnverified } from "../src/ca/csr.js";
import { verifyEcdsa } from "../src/ca/ec_verify.js";
import { pemDecodeBlocks } from "../src/common/der.js";
import { generateCaKey } from "../src/ca/keys.js";
import { type LeafRequest, LeafSigner } from "../src/ca/leaf.js";
import { x509 } from "../test/ca/x509_support.js";
import { envInt, median } from "./support/settings.js";
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { cleanup, startCairnCluster, tempDir } from "./support/processes.js";

// ---------------------------------------------------------------- settings, each bounded

const ROUND_SECONDS = envInt("BENCH_SECONDS", 3, 1, 60);
const ROUNDS = envInt("BENCH_ROUNDS", 5, 1, 15);
const WARMUP_SECONDS = envInt("BENCH_WARMUP_SECONDS", 1, 0, 30);
const POOL_CSRS = envInt("BENCH_CSRS", 1000, 10, 20_000);
const RUN_NAIVE = envInt("BENCH_NAIVE", 1, 0, 1) === 1;
const RUN_HTTP = envInt("BENCH_HTTP", 1, 0, 1) === 1;
/** A fresh server process warms up (JIT, caches) for longer than the in-process paths need. */
const HTTP_WARMUP_SECONDS = envInt("BENCH_HTTP_WARMUP_SECONDS", 3, 0, 30);
/** wrk's load, as the issue measured it. */
const WRK_THREADS = 1;
const WRK_CONNECTIONS = 16;
/** Far above anything one node signs: the limits must not shape the benchmark. */
const BENCH_RATE_LIMIT = "100000000,100000000";
const HTTP_READY_TIMEOUT_MS = 30_000;
/** Linux's clock ticks per second for /proc/<pid>/stat's utime and stime. */
const CLOCK_TICKS_PER_SECOND = 100;
/** The issue's goal: issuance at half the crypto limit or better. */
const RATIO_GOAL = 0.5;
/** Latency samples kept per round; past this a round stops recording (its rate still counts). */
const LATENCY_SAMPLES_MAX = 2_000_000;
const SPIFFE_ID = "spiffe://cairn.local/ns/default/svc/web";
const LEAF_TTL_MS = 3_600_000;
const LIMIT_MESSAGE_BYTES = 300;
/** The paths take turns in slices this long, so noise from elsewhere on the machine hits them alike. */
const SLICE_MS = 100;
/** Stage costs: the fastest of this many batches of this many calls. */
const BREAKDOWN_BATCHES = 20;
const BREAKDOWN_BATCH_CALLS = 250;

/** V8's gc(), exposed at run time so `npm run bench:ca` needs no node flags; see collectOwnGarbage. */
setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as (options: { type: "minor" | "major" }) => void;

// ---------------------------------------------------------------- fixtures, made before any timing

interface Fixtures {
  readonly signer: LeafSigner;
  readonly intermediatePem: string;
  readonly intermediateKey: KeyObject;
  readonly csrPems: readonly string[];
  /** The same CSRs' signed bytes, signatures and keys (loaded, and as JWKs), for the limit's and the fresh path's verify. */
  readonly csrSignatures: readonly { readonly data: Uint8Array; readonly signature: Uint8Array; readonly key: KeyObject; readonly jwk: JsonWebKey; readonly point: Uint8Array }[];
}

async function makeFixtures(): Promise<Fixtures> {
  const nowMs = Date.now();
  const validity = { trustDomain: "cairn.local", notBeforeMs: nowMs - 60_000, notAfterMs: nowMs + 365 * 86_400_000 };
  const root = generateCaKey("ec-p256");
  const rootPem = createRootCertificate(root, { ...validity, commonName: "Cairn Root CA bench" });
  const intermediate = generateCaKey("ec-p256");
  const intermediatePem = createIntermediateCertificate(intermediate.publicKey, { certificatePem: rootPem, privateKey: root.privateKey }, { ...validity, commonName: "Cairn Intermediate CA bench" });
  const csrPems: string[] = [];
  const csrSignatures: { data: Uint8Array; signature: Uint8Array; key: KeyObject; jwk: JsonWebKey; point: Uint8Array }[] = [];
  const san = new x509.SubjectAlternativeNameExtension([{ type: "url", value: SPIFFE_ID }]);
  for (let i = 0; i < POOL_CSRS; i++) {
    const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
    const request = await x509.Pkcs10CertificateRequestGenerator.create({ keys, signingAlgorithm: { name: "ECDSA", hash: "SHA-256" }, extensions: [san] });
    const pem = request.toString("pem");
    csrPems.push(pem);
    // The parts parseCsr checks: what was signed, the signature and the key, read by its own reader.
    const { parsed, proof } = readCsrUnverified(pem);
    if (!("point" in proof.key)) throw new Error("a pool CSR's key is not an EC point");
    const key = createPublicKey({ key: Buffer.from(parsed.subjectPublicKeyInfoDer), format: "der", type: "spki" });
    csrSignatures.push({ data: proof.signed, signature: proof.signature, key, jwk: key.export({ format: "jwk" }), point: proof.key.point });
  }
  const signer = new LeafSigner({ certificatePem: intermediatePem, privateKey: intermediate.privateKey });
  return { signer, intermediatePem, intermediateKey: intermediate.privateKey, csrPems, csrSignatures };
}

// ---------------------------------------------------------------- the paths

/** One certificate from one CSR PEM: what Cairn's API does per request. */
function issueCairn(f: Fixtures, csrPem: string, nowMs: number): string {
  const csr = parseCsr(csrPem);
  return f.signer.sign({ subjectPublicKeyInfoDer: csr.subjectPublicKeyInfoDer, spiffeId: csr.uris[0], dnsNames: csr.dnsNames, notBeforeMs: nowMs - 10_000, notAfterMs: nowMs + LEAF_TTL_MS }).pem;
}

interface NaiveSigner {
  readonly key: webcrypto.CryptoKey;
  readonly issuerName: string;
  readonly authorityKeyIdHex: string;
}

async function makeNaiveSigner(f: Fixtures): Promise<NaiveSigner> {
  const pkcs8 = f.intermediateKey.export({ type: "pkcs8", format: "der" });
  const key = await webcrypto.subtle.importKey("pkcs8", pkcs8, { name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  const intermediate = new x509.X509Certificate(f.intermediatePem);
  return { key, issuerName: intermediate.subject, authorityKeyIdHex: inspectCertificate(f.intermediatePem).subjectKeyIdHex };
}

/** The same job the obvious way: @peculiar/x509 parses, verifies and builds the certificate. */
async function issueNaive(n: NaiveSigner, csrPem: string, nowMs: number): Promise<string> {
  const request = new x509.Pkcs10CertificateRequest(csrPem);
  if (!(await request.verify())) throw new Error("a pool CSR failed to verify on the naive path");
  // The CSR's extensions come back generic; re-reading the SAN's bytes gives the typed extension.
  const sanExtension = request.getExtension("2.5.29.17");
  const names = sanExtension === null ? [] : new x509.SubjectAlternativeNameExtension(sanExtension.rawData).names.toJSON();
  const serial = randomBytes(16);
  serial[0] &= 0x7f;
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: serial.toString("hex"),
    issuer: n.issuerName,
    notBefore: new Date(nowMs - 10_000),
    notAfter: new Date(nowMs + LEAF_TTL_MS),
    publicKey: request.publicKey,
    signingKey: n.key,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.AuthorityKeyIdentifierExtension(n.authorityKeyIdHex),
      await x509.SubjectKeyIdentifierExtension.create(request.publicKey),
      new x509.SubjectAlternativeNameExtension(names, true),
    ],
  });
  return certificate.toString("pem");
}

// ---------------------------------------------------------------- timing

interface Round {
  readonly perSecond: number;
  readonly p50Us: number;
  readonly p99Us: number;
}

/** One path's operations and per-operation latencies across the slices of a round. */
class Meter {
  private count = 0;
  private elapsedMs = 0;
  private readonly samples = new Float64Array(LATENCY_SAMPLES_MAX);
  private kept = 0;

  /** Time the path cost without being one operation: the collection of its own garbage. */
  charge(ms: number): void {
    this.elapsedMs += ms;
  }

  record(latencyMs: number): void {
    this.count++;
    this.elapsedMs += latencyMs;
    if (this.kept < LATENCY_SAMPLES_MAX) this.samples[this.kept++] = latencyMs;
  }

  result(): Round {
    const sorted = this.samples.subarray(0, this.kept).sort();
    return { perSecond: this.count / (this.elapsedMs / 1000), p50Us: percentile(sorted, 0.5) * 1000, p99Us: percentile(sorted, 0.99) * 1000 };
  }
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** Runs `op` back to back for `ms`, timing each call; `next` numbers the calls across slices. */
function sliceSync(meter: Meter, ms: number, next: { i: number }, op: (i: number) => void): void {
  let now = performance.now();
  const deadline = now + ms;
  while (now < deadline) {
    op(next.i++);
    const after = performance.now();
    meter.record(after - now);
    now = after;
  }
  collectOwnGarbage(meter);
}

/**
 * Ends a slice with a young-generation collection charged to the path that made the garbage.
 * Without it, a path that allocates little (the limit) leaves its garbage, including the
 * OpenSSL keys behind each verify, to be collected during the next path's slice, which then
 * pays for it: interleaving would flatter the limit and penalize whichever path follows.
 */
function collectOwnGarbage(meter: Meter): void {
  const start = performance.now();
  gc({ type: "minor" });
  meter.charge(performance.now() - start);
}

async function sliceAsync(meter: Meter, ms: number, next: { i: number }, op: (i: number) => Promise<void>): Promise<void> {
  let now = performance.now();
  const deadline = now + ms;
  while (now < deadline) {
    await op(next.i++);
    const after = performance.now();
    meter.record(after - now);
    now = after;
  }
  collectOwnGarbage(meter);
}

function medianRound(rounds: readonly Round[]): Round {
  return { perSecond: median(rounds.map((r) => r.perSecond)), p50Us: median(rounds.map((r) => r.p50Us)), p99Us: median(rounds.map((r) => r.p99Us)) };
}

/**
 * Microseconds per call of each stage: the stages run in turn in small batches, and each keeps
 * its fastest batch, so a moment when the machine was busy elsewhere does not count against it.
 */
function stageCostsUs(stages: ReadonlyArray<readonly [string, (i: number) => void]>): number[] {
  const best = stages.map(() => Number.POSITIVE_INFINITY);
  let i = 0;
  for (let batch = 0; batch < BREAKDOWN_BATCHES; batch++) {
    stages.forEach(([, op], s) => {
      const start = performance.now();
      for (let n = 0; n < BREAKDOWN_BATCH_CALLS; n++) op(i++);
      best[s] = Math.min(best[s], ((performance.now() - start) * 1000) / BREAKDOWN_BATCH_CALLS);
    });
  }
  return best;
}

// ---------------------------------------------------------------- main

const fmtRate = (n: number): string => Math.round(n).toLocaleString("en-US").padStart(10);
const fmtUs = (n: number): string => (Number.isNaN(n) ? "-" : n.toFixed(1)).padStart(12);
const load = (): string => loadavg()[0].toFixed(1);

async function main(): Promise<void> {
  process.stdout.write(
    `bench:ca on ${cpus()[0]?.model ?? "an unknown CPU"}, node ${process.version}, OpenSSL ${process.versions.openssl}, one core, no workers:\n` +
      `  ${ROUNDS} rounds of ${ROUND_SECONDS} s per path, the paths alternating every ${SLICE_MS} ms; ${WARMUP_SECONDS} s warm-up; ${POOL_CSRS} distinct P-256 CSRs; load average ${load()}\n`,
  );
  const madeAt = performance.now();
  const f = await makeFixtures();
  process.stdout.write(`  fixtures made in ${((performance.now() - madeAt) / 1000).toFixed(1)} s (not timed)\n`);
  const limitMessage = randomBytes(LIMIT_MESSAGE_BYTES);
  const limitOptions = { key: f.intermediateKey, dsaEncoding: "der" } as const;
  const pool = f.csrPems;
  const nowMs = Date.now();

  // Outside the timing: the fast path's output is a certificate the intermediate signed.
  const sample = decodeCertificate(issueCairn(f, pool[0], nowMs));
  if (!verify("sha256", sample.tbs, createPublicKey(f.intermediatePem), sample.signature)) throw new Error("cairn's leaf does not verify with the intermediate");

  const limitOp = (i: number): void => {
    sign("sha256", limitMessage, limitOptions);
    const s = f.csrSignatures[i % f.csrSignatures.length];
    if (!verify("sha256", s.data, s.key, s.signature)) throw new Error("a pool CSR signature failed to verify");
  };
  // The same crypto, but the CSR's key is imported for each verify, as it must be for a new CSR.
  const freshOp = (i: number): void => {
    sign("sha256", limitMessage, limitOptions);
    const s = f.csrSignatures[i % f.csrSignatures.length];
    if (!verify("sha256", s.data, { key: s.jwk, format: "jwk" }, s.signature)) throw new Error("a pool CSR signature failed to verify");
  };
  const cairnOp = (i: number): void => {
    issueCairn(f, pool[i % pool.length], nowMs);
  };
  const naive = await makeNaiveSigner(f);
  const naiveOp = async (i: number): Promise<void> => {
    await issueNaive(naive, pool[i % pool.length], nowMs);
  };

  const counters = { limit: { i: 0 }, fresh: { i: 0 }, cairn: { i: 0 }, naive: { i: 0 } };
  const runRound = async (seconds: number): Promise<{ limit: Round; fresh: Round; cairn: Round; naive: Round | undefined }> => {
    const meters = { limit: new Meter(), fresh: new Meter(), cairn: new Meter(), naive: new Meter() };
    // Alternating slices: a burst of load from elsewhere on the machine hits every path alike.
    for (let slice = 0; slice < (seconds * 1000) / SLICE_MS; slice++) {
      sliceSync(meters.limit, SLICE_MS, counters.limit, limitOp);
      sliceSync(meters.cairn, SLICE_MS, counters.cairn, cairnOp);
      sliceSync(meters.fresh, SLICE_MS, counters.fresh, freshOp);
      if (RUN_NAIVE) await sliceAsync(meters.naive, SLICE_MS, counters.naive, naiveOp);
    }
    return { limit: meters.limit.result(), fresh: meters.fresh.result(), cairn: meters.cairn.result(), naive: RUN_NAIVE ? meters.naive.result() : undefined };
  };

  if (WARMUP_SECONDS > 0) await runRound(WARMUP_SECONDS);
  const limitRounds: Round[] = [];
  const freshRounds: Round[] = [];
  const cairnRounds: Round[] = [];
  const naiveRounds: Round[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const r = await runRound(ROUND_SECONDS);
    limitRounds.push(r.limit);
    freshRounds.push(r.fresh);
    cairnRounds.push(r.cairn);
    if (r.naive !== undefined) naiveRounds.push(r.naive);
    process.stdout.write(
      `  round ${round}: limit ${Math.round(r.limit.perSecond)}/s, cairn ${Math.round(r.cairn.perSecond)}/s (ratio ${(r.cairn.perSecond / r.limit.perSecond).toFixed(3)})` +
        `${r.naive === undefined ? "" : `, naive ${Math.round(r.naive.perSecond)}/s`}  (load average ${load()})\n`,
    );
  }
  const limit = medianRound(limitRounds);
  const fresh = medianRound(freshRounds);
  const cairn = medianRound(cairnRounds);
  const naiveResult = RUN_NAIVE ? medianRound(naiveRounds) : undefined;
  // The median of per-round ratios: each round's pair ran interleaved under the same noise.
  const ratio = median(cairnRounds.map((c, i) => c.perSecond / limitRounds[i].perSecond));
  const ratioToFresh = median(cairnRounds.map((c, i) => c.perSecond / freshRounds[i].perSecond));

  // Where cairn's time goes, stage by stage, against the crypto the limit counts.
  const ders = pool.map((pem) => pemDecodeBlocks(pem)[0].der);
  const parsed = ders.map((der) => parseCsr(der));
  const sig = (i: number): (typeof f.csrSignatures)[number] => f.csrSignatures[i % f.csrSignatures.length];
  const leafRequest = (i: number): LeafRequest => ({ subjectPublicKeyInfoDer: parsed[i % parsed.length].subjectPublicKeyInfoDer, spiffeId: SPIFFE_ID, notBeforeMs: nowMs, notAfterMs: nowMs + LEAF_TTL_MS });
  const stages: Array<readonly [string, (i: number) => void]> = [
    ["issuance, whole pipeline", cairnOp],
    ["  PEM decode of the CSR", (i) => pemDecodeBlocks(pool[i % pool.length])],
    ["  parseCsr of the DER", (i) => parseCsr(ders[i % ders.length])],
    ["    native ECDSA check, fresh key (as parseCsr)", (i) => verifyEcdsa("P-256", "sha256", sig(i).point, sig(i).data, sig(i).signature)],
    ["    node:crypto, importing the fresh key (JWK)", (i) => verify("sha256", sig(i).data, { key: sig(i).jwk, format: "jwk" }, sig(i).signature)],
    ["    verify alone, key ready (as the limit)", (i) => verify("sha256", sig(i).data, sig(i).key, sig(i).signature)],
    ["  LeafSigner.sign, PEM included", (i) => f.signer.sign(leafRequest(i))],
    ["    ECDSA sign alone (as the limit)", () => sign("sha256", limitMessage, limitOptions)],
  ];
  const costs = stageCostsUs(stages);

  const line = "-".repeat(86);
  const row = (name: string, r: Round): string => `${name.padEnd(50)}${fmtRate(r.perSecond)}${fmtUs(r.p50Us)}${fmtUs(r.p99Us)}\n`;
  process.stdout.write(
    `\n${line}\n${"path (median of rounds)".padEnd(50)}${"per second".padStart(10)}${"p50 µs".padStart(12)}${"p99 µs".padStart(12)}\n${line}\n` +
      row("limit: node:crypto P-256 sign + verify", limit) +
      row("cairn: parseCsr + LeafSigner.sign + PEM", cairn) +
      row("fresh: limit, importing each CSR's key (JWK)", fresh) +
      (naiveResult === undefined ? "" : row("naive: @peculiar/x509 end to end", naiveResult)) +
      `${line}\n` +
      `ratio cairn/limit: ${ratio.toFixed(3)}  (goal >= ${RATIO_GOAL}: ${ratio >= RATIO_GOAL ? "met" : "NOT met"})` +
      (naiveResult === undefined ? "" : `   speedup over naive: ${(cairn.perSecond / naiveResult.perSecond).toFixed(1)}x`) +
      `\nratio cairn/fresh: ${ratioToFresh.toFixed(3)}  (fresh adds the cost the limit leaves out: node:crypto importing a key it has not seen)` +
      `\n\nwhere cairn's time goes (µs per certificate, fastest of ${BREAKDOWN_BATCHES} batches of ${BREAKDOWN_BATCH_CALLS}):\n` +
      stages.map(([name], s) => `  ${name.padEnd(48)}${costs[s].toFixed(1).padStart(8)}\n`).join(""),
  );
  const http = RUN_HTTP ? await httpPaths(f, limitOp) : [];
  for (const h of http) {
    process.stdout.write(
      `http (${h.label}): ${Math.round(h.perSecond)}/s, ratio to the limit ${h.ratio.toFixed(3)} (goal >= ${RATIO_GOAL}: ${h.ratio >= RATIO_GOAL ? "met" : "NOT met"}), ` +
        `server CPU ${h.serverCores.toFixed(2)} cores, ${Math.round(h.perCpuSecond)} certificates per server CPU-second; limit in the same rounds ${Math.round(h.limitPerSecond)}/s\n`,
    );
  }
  const summary = {
    bench: "ca",
    node: process.version,
    openssl: process.versions.openssl,
    rounds: ROUNDS,
    roundSeconds: ROUND_SECONDS,
    csrPool: POOL_CSRS,
    issuancePerSecond: Math.round(cairn.perSecond),
    issuanceP50Us: Number(cairn.p50Us.toFixed(1)),
    issuanceP99Us: Number(cairn.p99Us.toFixed(1)),
    limitPerSecond: Math.round(limit.perSecond),
    ratio: Number(ratio.toFixed(3)),
    ratioGoal: RATIO_GOAL,
    freshKeyPerSecond: Math.round(fresh.perSecond),
    ratioToFreshKey: Number(ratioToFresh.toFixed(3)),
    naivePerSecond: naiveResult === undefined ? null : Math.round(naiveResult.perSecond),
    speedupOverNaive: naiveResult === undefined ? null : Number((cairn.perSecond / naiveResult.perSecond).toFixed(1)),
    http: http.map((h) => ({ path: h.label, perSecond: Math.round(h.perSecond), ratio: Number(h.ratio.toFixed(3)), limitPerSecond: Math.round(h.limitPerSecond), serverCores: Number(h.serverCores.toFixed(2)), perServerCpuSecond: Math.round(h.perCpuSecond) })),
  };
  process.stdout.write(`\n${JSON.stringify(summary)}\n`);
}

// ---------------------------------------------------------------- the HTTP path, driven by wrk

interface HttpResult {
  readonly label: string;
  readonly perSecond: number;
  readonly ratio: number;
  readonly limitPerSecond: number;
  readonly serverCores: number;
  readonly perCpuSecond: number;
}

const run = promisify(execFile);

/**
 * A Lua script for wrk that posts the pool's CSRs in turn, one JSON body per line of `bodiesPath`.
 * Each request is formatted once, on first use (wrk's Host header is set only by then), so the
 * load generator spends its share of the two cores sending rather than formatting.
 */
function wrkScript(bodiesPath: string): string {
  return `local bodies = {}
for line in io.lines("${bodiesPath}") do bodies[#bodies + 1] = line end
local requests = nil
local i = 0
request = function()
  if requests == nil then
    requests = {}
    for j, body in ipairs(bodies) do requests[j] = wrk.format("POST", "/v1/ca/sign", { ["Content-Type"] = "application/json" }, body) end
  end
  i = i % #requests + 1
  return requests[i]
end
`;
}

function cpuSecondsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

async function wrkRound(url: string, script: string, seconds: number): Promise<{ perSecond: number; failures: number }> {
  const { stdout } = await run("wrk", [`-t${WRK_THREADS}`, `-c${WRK_CONNECTIONS}`, `-d${seconds}s`, "-s", script, url]);
  const rate = /Requests\/sec:\s+([0-9.]+)/.exec(stdout);
  if (rate === null) throw new Error(`wrk printed no Requests/sec:\n${stdout}`);
  const failures = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  return { perSecond: Number(rate[1]), failures };
}

async function httpPaths(f: Fixtures, limitOp: (i: number) => void): Promise<HttpResult[]> {
  const dir = tempDir("cairn-bench-ca-");
  const bodiesPath = join(dir, "bodies.txt");
  writeFileSync(bodiesPath, `${f.csrPems.map((csr) => JSON.stringify({ csr })).join("\n")}\n`);
  const script = join(dir, "sign.lua");
  writeFileSync(script, wrkScript(bodiesPath));
  const results: HttpResult[] = [];
  for (const [label, workers] of [["event loop only, one core", 0], ["one CSR worker", 1]] as const) {
    const { cluster, close } = await startCairnCluster(1, [
      "--log-level", "warn", "--csr-verify-workers", String(workers),
      "--rate-limit-sign-token", BENCH_RATE_LIMIT, "--rate-limit-sign-address", BENCH_RATE_LIMIT,
    ], HTTP_READY_TIMEOUT_MS);
    try {
      const node = cluster.nodes[0];
      const pid = node.process?.pid;
      if (pid === undefined) throw new Error("the bench's cairn server has no pid");
      const url = `http://${node.info.http}`;
      // The CA is created once a leader is elected: wait for a certificate, then warm up.
      const deadline = Date.now() + HTTP_READY_TIMEOUT_MS;
      while ((await fetch(`${url}/v1/ca/sign`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ csr: f.csrPems[0] }) })).status !== 200) {
        if (Date.now() > deadline) throw new Error("the bench's cairn server signed nothing within 30 s");
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      if (HTTP_WARMUP_SECONDS > 0) await wrkRound(url, script, HTTP_WARMUP_SECONDS);
      const rounds: { http: number; limit: number; cores: number }[] = [];
      const counter = { i: 0 };
      for (let round = 1; round <= ROUNDS; round++) {
        const meter = new Meter();
        for (let slice = 0; slice < (ROUND_SECONDS * 1000) / SLICE_MS; slice++) sliceSync(meter, SLICE_MS, counter, limitOp);
        const cpuBefore = cpuSecondsOf(pid);
        const wallBefore = performance.now();
        const w = await wrkRound(url, script, ROUND_SECONDS);
        const cores = (cpuSecondsOf(pid) - cpuBefore) / ((performance.now() - wallBefore) / 1000);
        if (w.failures > 0) throw new Error(`wrk saw ${w.failures} answers other than 200 on the HTTP path (${label}); the bench's limits must not refuse`);
        rounds.push({ http: w.perSecond, limit: meter.result().perSecond, cores });
        process.stdout.write(`  http round ${round} (${label}): ${Math.round(w.perSecond)}/s, limit ${Math.round(meter.result().perSecond)}/s, server ${cores.toFixed(2)} cores  (load average ${load()})\n`);
      }
      const perSecond = median(rounds.map((r) => r.http));
      const serverCores = median(rounds.map((r) => r.cores));
      results.push({
        label,
        perSecond,
        ratio: median(rounds.map((r) => r.http / r.limit)),
        limitPerSecond: median(rounds.map((r) => r.limit)),
        serverCores,
        perCpuSecond: median(rounds.map((r) => r.http / r.cores)),
      });
    } finally {
      await close();
    }
  }
  return results;
}

try {
  await main();
} finally {
  await cleanup();
}
