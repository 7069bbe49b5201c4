// A workload's X.509-SVID, kept fresh through Cairn's HTTP API, and Node TLS material that
// follows it. The key never leaves the process: the client makes a P-256 key and a PKCS#10 CSR
// naming its SPIFFE ID, and the cluster signs it (POST /v1/ca/sign). The certificate is renewed
// at about half its lifetime, and again soon after the cluster's active root changes; the trust
// bundle is followed with blocking queries (GET /v1/ca/bundle?index=&wait=).
//
// Rotation without a restart: every TLS helper here reads the current material when it is called,
// and keepCurrent() pushes each change into a running server with setSecureContext. During a root
// rotation, peers holding leaves of the old and the new root still verify each other: the bundle
// holds both roots, and a new leaf's chain carries the new root cross-signed by the old one.

import { type KeyObject, X509Certificate, generateKeyPairSync, sign as signBytes } from "node:crypto";
import * as tls from "node:tls";
import type { Logger } from "pino";
import { Tag, contextTag, der, encodeBitString, encodeOid, encodeSmallInteger, pemEncode } from "../common/der.js";
import { CSR_ATTRIBUTE_OID, EXTENSION_OID, GENERAL_NAME_TAG, encodeExtension } from "../common/x509.js";
import { CairnAbortedError, CairnRequestError } from "./errors.js";
import { backoffDelayMs } from "../common/backoff.js";
import { asError, errorMessage } from "../common/errors.js";
import { type RenewalWindow, renewalAtMs, renewalWindowAround } from "../common/renewal.js";
import { type Transport, sleep } from "./transport.js";
import { WireDecodeError, array, bool, decodeAnswer, fields, stringArray, text, whole } from "./decode.js";
import { watchLimits } from "./watch.js";

export interface CertificateOptions {
  /** The identity to hold: spiffe://<trust-domain>/ns/<namespace>/svc/<service>. */
  readonly spiffeId: string;
  /** DNS SANs, for peers that check host names rather than SPIFFE IDs. */
  readonly dnsNames?: readonly string[];
  /** Go duration such as "1h"; default the cluster's (1h). At least 1m. */
  readonly ttl?: string;
  /** Renew when this fraction of the lifetime left at issue has passed, ± renewJitterFraction of it. Defaults 0.5 and 0.1, as SPIRE. */
  readonly renewFraction?: number;
  readonly renewJitterFraction?: number;
  /**
   * After the cluster's active root changes, renew within a random delay up to this, so a fleet
   * does not send its CSRs in one burst (SPIRE #4490). Default 10 s. The old leaf stays valid
   * and trusted meanwhile.
   */
  readonly rootChangeSpreadMs?: number;
  /** How long each blocking query on the bundle waits. Default 30 s. */
  readonly bundleWaitMs?: number;
  /** Give up start() after this long without a certificate. Default 30 s. */
  readonly startTimeoutMs?: number;
  /** Backoff between failed renewals: [d/2, d), d doubling from retryBaseMs to retryMaxMs. Defaults 500 and 30 000. */
  readonly retryBaseMs?: number;
  readonly retryMaxMs?: number;
  /** Failures the certificate survives (it retries): a renewal or a bundle query that did not work. */
  readonly onError?: (err: Error) => void;
  /** Wall clock; tests may inject one. Default Date.now. */
  readonly now?: () => number;
}

export const certificateDefaults = {
  renewFraction: 0.5,
  renewJitterFraction: 0.1,
  rootChangeSpreadMs: 10_000,
  bundleWaitMs: watchLimits.waitMsDefault,
  startTimeoutMs: 30_000,
  retryBaseMs: 500,
  retryMaxMs: 30_000,
} as const;

/** setTimeout fires at once for delays past 2^31-1 ms; longer waits are re-armed. */
const TIMER_DELAY_MAX_MS = 2 ** 31 - 1;

/** What a TLS endpoint needs, as PEM, in the shape node:tls takes. */
export interface TlsMaterial {
  readonly spiffeId: string;
  /** The private key, PKCS#8 PEM. */
  readonly key: string;
  /** The leaf, then its intermediates: what this side sends its peer. */
  readonly cert: string;
  /** Every root of the trust domain: what a peer's chain must lead to. */
  readonly ca: string;
  readonly serial: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  /** The id of the root that was active when the leaf was signed. */
  readonly rootId: string;
  /** The bundle's index (the CA's revision) that `ca` comes from. */
  readonly bundleIndex: number;
}

/** "renewed": a new leaf (renewal or after a root change). "bundle": the trusted roots changed. */
export type RotationReason = "renewed" | "bundle";

export interface CertificateDeps {
  readonly transport: Transport;
  readonly requestTimeoutMs: number;
  readonly random: () => number;
  readonly logger?: Logger | undefined;
}

/** GET /v1/ca/bundle: every root a peer's chain may lead to. */
export interface TrustBundle {
  readonly trustDomain: string;
  /** The CA's revision: it moves when the roots change. */
  readonly index: number;
  readonly roots: readonly { readonly id: string; readonly certificate: string; readonly active: boolean }[];
}

type Bundle = TrustBundle;

/** POST /v1/ca/sign's answer. */
export interface SignedCertificate {
  /** The leaf, PEM. */
  readonly certificate: string;
  /** Its intermediates, PEM, leaf side first. */
  readonly chain: readonly string[];
  readonly spiffeId: string;
  readonly serial: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

interface Leaf {
  readonly key: string;
  readonly cert: string;
  readonly serial: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly rootId: string;
}

export class WorkloadCertificate {
  private readonly abort = new AbortController();
  private readonly listeners = new Set<(material: TlsMaterial, reason: RotationReason) => void>();
  private readonly now: () => number;
  private readonly renewWindow: RenewalWindow;
  private readonly rootChangeSpreadMs: number;
  private readonly bundleWaitMs: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private leaf: Leaf | undefined;
  private bundle: Bundle | undefined;
  private material: TlsMaterial | undefined;
  private context: tls.SecureContext | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewAtMs = Infinity;
  private renewFailures = 0;
  private renewing = false;
  private bundleLoop: Promise<void> | undefined;

  /** Use CairnClient.certificates(), which resolves once the first certificate is held. */
  constructor(
    private readonly deps: CertificateDeps,
    private readonly opts: CertificateOptions,
  ) {
    this.now = opts.now ?? Date.now;
    const renewFraction = fraction("renewFraction", opts.renewFraction ?? certificateDefaults.renewFraction);
    const renewJitterFraction = opts.renewJitterFraction ?? certificateDefaults.renewJitterFraction;
    if (!(renewJitterFraction >= 0 && renewJitterFraction < 1)) throw new RangeError(`renewJitterFraction: ${renewJitterFraction} must be in [0, 1)`);
    this.renewWindow = renewalWindowAround(renewFraction, renewJitterFraction);
    this.rootChangeSpreadMs = Math.max(0, opts.rootChangeSpreadMs ?? certificateDefaults.rootChangeSpreadMs);
    this.bundleWaitMs = Math.round(Math.min(watchLimits.waitMsMax, Math.max(1, opts.bundleWaitMs ?? certificateDefaults.bundleWaitMs)));
    this.retryBaseMs = Math.max(1, opts.retryBaseMs ?? certificateDefaults.retryBaseMs);
    this.retryMaxMs = Math.max(this.retryBaseMs, opts.retryMaxMs ?? certificateDefaults.retryMaxMs);
  }

  /**
   * Fetches the bundle and the first certificate, retrying while the cluster cannot sign yet (no
   * CA, no leader) for up to startTimeoutMs; a refusal (a bad SPIFFE ID or TTL, a forbidden
   * identity) rejects at once. Then keeps both fresh until close().
   */
  async start(): Promise<void> {
    const deadlineMs = Date.now() + (this.opts.startTimeoutMs ?? certificateDefaults.startTimeoutMs);
    for (let failures = 0; ; failures++) {
      try {
        if (this.bundle === undefined || this.bundle.roots.length === 0) this.bundle = await this.fetchBundle(undefined);
        const leaf = await this.sign();
        this.setLeaf(leaf, false);
        break;
      } catch (err) {
        if (this.abort.signal.aborted) throw new CairnAbortedError("POST", "/v1/ca/sign");
        if (!retryable(err) || Date.now() >= deadlineMs) throw err;
        this.report(err);
        await sleep(this.retryDelayMs(failures + 1), this.abort.signal, "the first certificate");
      }
    }
    this.bundleLoop = this.followBundle();
  }

  /** The current key, certificate chain and roots. */
  current(): TlsMaterial {
    if (this.material === undefined) throw new Error("no certificate yet: await CairnClient.certificates() (or start()) before using it");
    return this.material;
  }

  /** A secure context of the current material; a new one after every rotation. */
  secureContext(): tls.SecureContext {
    this.context ??= tls.createSecureContext(contextOptions(this.current()));
    return this.context;
  }

  /** Options for tls.createServer or https.createServer: mutual TLS against the trust bundle. Pair with keepCurrent(server). */
  serverOptions(): tls.TlsOptions {
    return tlsServerOptions(this.current());
  }

  /**
   * Options for one tls.connect (or an https.Agent): this certificate as the client's, and the
   * server must present `expectedPeerId` (or, when omitted, any SPIFFE ID of this trust domain)
   * instead of matching a host name. Call it for each new connection to use the latest material.
   */
  clientOptions(expectedPeerId?: string): tls.ConnectionOptions {
    return tlsClientOptions(this.current(), expectedPeerId);
  }

  /** Installs every future rotation into `server` (new connections use it; open ones keep theirs). Returns the function that stops it. */
  keepCurrent(server: tls.Server): () => void {
    return this.onRotate((material) => server.setSecureContext(contextOptions(material)));
  }

  /** Calls `listener` after every rotation; returns the function that stops it. */
  onRotate(listener: (material: TlsMaterial, reason: RotationReason) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops renewals and the bundle watch. The material stays readable. Idempotent. */
  async close(): Promise<void> {
    this.abort.abort();
    clearTimeout(this.renewTimer);
    this.listeners.clear();
    await this.bundleLoop;
  }

  // ---------------------------------------------------------------- renewal

  private async sign(): Promise<Leaf> {
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const csr = createCsr(this.opts.spiffeId, this.opts.dnsNames ?? [], privateKey, publicKey);
    const rootId = this.activeRootId();
    const signed = await requestSignature(this.deps.transport, csr, this.opts.ttl, this.abort.signal);
    return {
      key: privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
      cert: certificateChainPem(signed),
      serial: signed.serial,
      notBeforeMs: signed.notBeforeMs,
      notAfterMs: signed.notAfterMs,
      rootId,
    };
  }

  private setLeaf(leaf: Leaf, notify: boolean): void {
    this.leaf = leaf;
    const nowMs = this.now();
    this.scheduleRenewal(renewalAtMs(nowMs, leaf.notAfterMs, this.renewWindow, this.deps.random()), true);
    // Signed while a rotation was under way: move to the new root too.
    if (leaf.rootId !== this.activeRootId()) this.scheduleRenewal(nowMs + this.deps.random() * this.rootChangeSpreadMs, false);
    this.deps.logger?.info({ spiffeId: this.opts.spiffeId, serial: leaf.serial, notAfter: new Date(leaf.notAfterMs).toISOString() }, "workload certificate issued");
    this.rebuild(notify ? "renewed" : undefined);
  }

  /** Renews at `atMs`, or keeps an earlier renewal already planned unless `replace`. */
  private scheduleRenewal(atMs: number, replace: boolean): void {
    if (this.abort.signal.aborted || (!replace && atMs >= this.renewAtMs)) return;
    clearTimeout(this.renewTimer);
    this.renewAtMs = atMs;
    const delayMs = Math.min(TIMER_DELAY_MAX_MS, Math.max(0, atMs - this.now()));
    this.renewTimer = setTimeout(() => void this.renew(), delayMs);
    // Like heartbeats, renewals never keep the process alive on their own.
    this.renewTimer.unref();
  }

  private async renew(): Promise<void> {
    if (this.renewing || this.abort.signal.aborted) return;
    this.renewing = true;
    this.renewAtMs = Infinity;
    try {
      const leaf = await this.sign();
      if (this.abort.signal.aborted) return;
      this.renewFailures = 0;
      this.setLeaf(leaf, true);
    } catch (err) {
      if (this.abort.signal.aborted) return;
      this.renewFailures++;
      this.report(err);
      const expired = this.leaf !== undefined && this.leaf.notAfterMs <= this.now();
      this.deps.logger?.[expired ? "error" : "warn"]({ spiffeId: this.opts.spiffeId, failures: this.renewFailures, expired, err: errorMessage(err) }, "workload certificate renewal failed; retrying");
      // A refusal (the identity was withdrawn, the TTL is no longer allowed) is retried too, but slowly.
      const delayMs = retryable(err) ? this.retryDelayMs(this.renewFailures) : this.retryMaxMs;
      this.scheduleRenewal(this.now() + delayMs, false);
    } finally {
      this.renewing = false;
    }
  }

  private retryDelayMs(failures: number): number {
    return backoffDelayMs(failures, this.retryBaseMs, this.retryMaxMs, this.deps.random);
  }

  // ---------------------------------------------------------------- trust bundle

  private async fetchBundle(blocking: { index: number; waitMs: number } | undefined): Promise<Bundle> {
    const q = blocking === undefined ? "" : `?index=${blocking.index}&wait=${blocking.waitMs}ms`;
    const path = `/v1/ca/bundle${q}`;
    // The server may hold a query for wait plus wait/16 of jitter.
    const timeoutMs = blocking === undefined ? this.deps.requestTimeoutMs : blocking.waitMs + blocking.waitMs / 16 + watchLimits.timeoutMarginMs;
    const answer = await this.deps.transport.request("GET", path, undefined, { timeoutMs, signal: this.abort.signal });
    return bundleAnswer(answer, path);
  }

  /** Blocking queries from the last index; an index that goes backwards restarts from 0, as a service watch does. */
  private async followBundle(): Promise<void> {
    let failures = 0;
    while (!this.abort.signal.aborted) {
      const known = this.bundle?.index ?? 0;
      try {
        const bundle = await this.fetchBundle(known === 0 ? undefined : { index: known, waitMs: this.bundleWaitMs });
        failures = 0;
        if (bundle.index < known) this.deps.logger?.info({ was: known, now: bundle.index }, "the trust bundle's index went backwards; following it from the new one");
        // An index of 0 (no CA yet) would make every query return at once: it is only stored with roots.
        if (bundle.roots.length === 0) {
          await sleep(this.retryDelayMs(1), this.abort.signal);
          continue;
        }
        this.setBundle(bundle);
      } catch (err) {
        if (err instanceof CairnAbortedError || this.abort.signal.aborted) return;
        failures++;
        this.report(err);
        this.deps.logger?.warn({ failures, err: errorMessage(err) }, "the trust bundle watch failed; retrying");
        await sleep(this.retryDelayMs(failures), this.abort.signal).catch(() => undefined);
      }
    }
  }

  private setBundle(bundle: Bundle): void {
    const previous = this.bundle;
    this.bundle = bundle;
    if (previous !== undefined && sameRoots(previous, bundle)) return;
    this.rebuild("bundle");
    // Leaves of the old root stay trusted until they expire; moving to the new root soon, within
    // a spread, keeps the fleet from signing in one burst.
    if (this.leaf !== undefined && this.leaf.rootId !== this.activeRootId()) {
      this.scheduleRenewal(this.now() + this.deps.random() * this.rootChangeSpreadMs, false);
    }
  }

  private activeRootId(): string {
    return this.bundle?.roots.find((r) => r.active)?.id ?? "";
  }

  // ---------------------------------------------------------------- material

  private rebuild(reason: RotationReason | undefined): void {
    const leaf = this.leaf;
    const bundle = this.bundle;
    if (leaf === undefined || bundle === undefined) return;
    this.material = {
      spiffeId: this.opts.spiffeId,
      key: leaf.key,
      cert: leaf.cert,
      ca: bundlePem(bundle),
      serial: leaf.serial,
      notBeforeMs: leaf.notBeforeMs,
      notAfterMs: leaf.notAfterMs,
      rootId: leaf.rootId,
      bundleIndex: bundle.index,
    };
    this.context = undefined;
    if (reason === undefined) return;
    for (const listener of [...this.listeners]) {
      try {
        listener(this.material, reason);
      } catch (err) {
        this.deps.logger?.warn({ err: errorMessage(err) }, "a certificate rotation listener threw");
        this.report(err);
      }
    }
  }

  private report(err: unknown): void {
    this.opts.onError?.(asError(err));
  }
}

// ---------------------------------------------------------------- TLS options from material

/** The secure-context part of the options (key, chain, roots). */
function contextOptions(material: TlsMaterial): tls.SecureContextOptions {
  return { key: material.key, cert: material.cert, ca: material.ca };
}

/** Server options for mutual TLS with `material`: clients must present a certificate chaining to the bundle. */
export function tlsServerOptions(material: TlsMaterial): tls.TlsOptions {
  return { ...contextOptions(material), requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.2" };
}

/**
 * Client options with `material`. The server's chain must lead to the bundle, and its certificate
 * must carry `expectedPeerId` as its URI SAN (or, when omitted, a SPIFFE ID of the same trust
 * domain): SPIFFE identities replace host-name matching.
 */
export function tlsClientOptions(material: TlsMaterial, expectedPeerId?: string): tls.ConnectionOptions {
  const trustDomain = trustDomainOf(material.spiffeId);
  return {
    ...contextOptions(material),
    rejectUnauthorized: true,
    minVersion: "TLSv1.2",
    checkServerIdentity: (_host, cert) => checkPeerSpiffeId(cert, expectedPeerId, trustDomain),
  };
}

/** The SPIFFE ID a verified peer presented (its one URI SAN), or undefined. */
export function peerSpiffeId(socket: tls.TLSSocket): string | undefined {
  // getPeerCertificate, which may be called again: on a Node 20 client socket,
  // getPeerX509Certificate() leaves every later call of either answering nothing.
  return spiffeIdsOf(socket.getPeerCertificate().subjectaltname)[0];
}

function checkPeerSpiffeId(cert: tls.PeerCertificate, expected: string | undefined, trustDomain: string): Error | undefined {
  const ids = spiffeIdsOf(cert.subjectaltname);
  if (ids.length !== 1) return new Error(`the peer's certificate must carry exactly one spiffe:// URI SAN, and it has ${ids.length}`);
  const id = ids[0];
  if (expected !== undefined) return id === expected ? undefined : new Error(`the peer is ${id}, not the expected ${expected}`);
  return trustDomainOf(id) === trustDomain ? undefined : new Error(`the peer is ${id}, outside trust domain ${trustDomain}`);
}

/** URI SANs that are SPIFFE IDs. Node lists SANs as `URI:..., DNS:...`; SPIFFE IDs hold no commas or spaces. */
function spiffeIdsOf(subjectAltName: string | undefined): string[] {
  return (subjectAltName ?? "")
    .split(", ")
    .filter((s) => s.startsWith("URI:spiffe://"))
    .map((s) => s.slice("URI:".length));
}

function trustDomainOf(spiffeId: string): string {
  const rest = spiffeId.slice("spiffe://".length);
  const slash = rest.indexOf("/");
  return slash < 0 ? rest : rest.slice(0, slash);
}

// ---------------------------------------------------------------- CSR

const OID_ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";
const textEncoder = new TextEncoder();

/**
 * A PKCS#10 CSR (RFC 2986) for an ECDSA key, with an empty subject and the SPIFFE ID as its one
 * URI SAN (critical, as SPIFFE requires of a leaf without a subject). Built directly: it is a
 * few fixed fields, made once per renewal.
 */
export function createCsr(spiffeId: string, dnsNames: readonly string[], privateKey: KeyObject, publicKey: KeyObject): string {
  const names = [der(GENERAL_NAME_TAG.uri, textEncoder.encode(spiffeId)), ...dnsNames.map((n) => der(GENERAL_NAME_TAG.dnsName, textEncoder.encode(n)))];
  const extensions = der(Tag.sequence, encodeExtension(EXTENSION_OID.subjectAltName, true, der(Tag.sequence, ...names)));
  const attributes = der(contextTag(0, true), der(Tag.sequence, encodeOid(CSR_ATTRIBUTE_OID.extensionRequest), der(Tag.set, extensions)));
  const spki = publicKey.export({ format: "der", type: "spki" });
  const info = der(Tag.sequence, encodeSmallInteger(0), der(Tag.sequence), spki, attributes);
  const signature = signBytes("sha256", info, { key: privateKey, dsaEncoding: "der" });
  return pemEncode("CERTIFICATE REQUEST", der(Tag.sequence, info, der(Tag.sequence, encodeOid(OID_ECDSA_WITH_SHA256)), encodeBitString(signature)));
}

// ---------------------------------------------------------------- requests and answers

/** Has the cluster sign a PKCS#10 CSR (PEM); `ttl` a Go duration, default the cluster's (1h). */
export async function requestSignature(transport: Transport, csr: string, ttl: string | undefined, signal?: AbortSignal): Promise<SignedCertificate> {
  const body = { csr, ...(ttl === undefined ? {} : { ttl }) };
  const answer = await transport.request("POST", "/v1/ca/sign", body, signal === undefined ? {} : { signal });
  return decodeAnswer(answer, "POST /v1/ca/sign", (b) => {
    const o = fields(b, "signed");
    const notBeforeMs = Date.parse(text(o, "notBefore", "signed"));
    const notAfterMs = Date.parse(text(o, "notAfter", "signed"));
    if (Number.isNaN(notBeforeMs) || Number.isNaN(notAfterMs)) throw new WireDecodeError("signed.notBefore/notAfter", "ISO 8601 times", { notBefore: o.notBefore, notAfter: o.notAfter });
    const certificate = text(o, "certificate", "signed");
    return {
      certificate,
      chain: stringArray(o.chain, "signed.chain"),
      spiffeId: text(o, "spiffeId", "signed"),
      serial: typeof o.serial === "string" ? o.serial : new X509Certificate(certificate).serialNumber,
      notBeforeMs,
      notAfterMs,
    };
  });
}

/** The trust bundle now (not blocking). */
export async function requestTrustBundle(transport: Transport): Promise<TrustBundle> {
  const path = "/v1/ca/bundle";
  return bundleAnswer(await transport.request("GET", path), path);
}

/** The leaf, then its intermediates: what a TLS endpoint sends its peer, and what an svid.pem file holds. */
export function certificateChainPem(signed: Pick<SignedCertificate, "certificate" | "chain">): string {
  return [signed.certificate, ...signed.chain].map(endWithNewline).join("");
}

/** Every root of the bundle, concatenated PEM: what a peer's chain must lead to, and what a bundle.pem file holds. */
export function bundlePem(bundle: Pick<TrustBundle, "roots">): string {
  return bundle.roots.map((r) => endWithNewline(r.certificate)).join("");
}

function bundleAnswer(answer: { readonly endpoint: string; readonly body: unknown }, path: string): Bundle {
  return decodeAnswer(answer, `GET ${path}`, (b) => {
    const o = fields(b, "bundle");
    return {
      trustDomain: text(o, "trustDomain", "bundle"),
      index: whole(o, "index", "bundle"),
      roots: array(o.roots, "bundle.roots").map((r, i) => {
        const at = `bundle.roots[${i}]`;
        const root = fields(r, at);
        return { id: text(root, "id", at), certificate: text(root, "certificate", at), active: bool(root, "active", at) };
      }),
    };
  });
}

function sameRoots(a: Bundle, b: Bundle): boolean {
  return a.roots.length === b.roots.length && a.roots.every((r, i) => r.id === b.roots[i].id && r.active === b.roots[i].active);
}

/** Network failures, timeouts, 503 (all already retried across nodes by the transport) and 429 are worth retrying; other refusals are not. */
function retryable(err: unknown): boolean {
  if (err instanceof CairnRequestError) return err.status === 429 || err.status >= 500;
  return !(err instanceof CairnAbortedError);
}

function fraction(name: string, value: number): number {
  if (!(value > 0 && value < 1)) throw new RangeError(`${name}: ${value} must be between 0 and 1`);
  return value;
}

function endWithNewline(pem: string): string {
  return pem.endsWith("\n") ? pem : `${pem}\n`;
}
