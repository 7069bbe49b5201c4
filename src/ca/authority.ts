// The certificate authority as the API layer calls it: bootstrap, sign, rotate, import, and the
// trust bundle. Signing is local to each node (no Raft round trip): every node holds the
// replicated, sealed CA keys and unseals the active intermediate's key once per rotation.

import { type KeyObject, X509Certificate, createPrivateKey, randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { RaftDriver } from "../raft/node/driver.js";
import { parseGoDuration } from "../common/duration.js";
import { TooManyWatchersError, errorMessage } from "../common/errors.js";
import { STATE_TAG_CA, withTag } from "../state/tags.js";
import type { Authorizer, Caller } from "./authorizer.js";
import {
  CertificateError,
  certificateMatchesKey,
  colonHex,
  createIntermediateCertificate,
  createRootCertificate,
  crossSignCertificate,
  inspectCertificate,
} from "./certificates.js";
import { CsrError, type CsrProof, type ParsedCsr, readCsrUnverified } from "./csr.js";
import type { CsrIssuer, PoolSigner } from "./csr_pool.js";
import { type CaKeyType, describeKey, generateCaKey } from "./keys.js";
import { type LeafRequest, LeafSigner, type SignedLeaf } from "./leaf.js";
import { type IssuanceSource, type IssuedEvent, RecentIssuances } from "./recent_issuances.js";
import { KeySealer, SealError } from "./seal.js";
import { type CaCommand, type CaRoot, type CaState, type NewCaRoot, encodeCaCommand, intermediatesOf } from "./state.js";
import { SpiffeIdError, type SpiffeId, nodeSpiffeId, parseSpiffeId, workloadOf } from "./spiffe.js";

/** A request the caller must fix: names the field and what is wrong with it (HTTP 400). */
export class CaInputError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "CaInputError";
  }
}

/** The caller may not hold the identity it asked for (HTTP 403). */
export class CaForbiddenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CaForbiddenError";
  }
}

/** This node cannot sign right now; another node, or a later retry, may (HTTP 503). */
export class CaUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CaUnavailableError";
  }
}

export interface CaSettings {
  /** Used when the cluster's CA is first created; afterwards the replicated one is authoritative. */
  readonly trustDomain: string;
  readonly keyType: CaKeyType;
  readonly leafTtlDefaultMs: number;
  readonly leafTtlMaxMs: number;
}

export const caDefaults = {
  trustDomain: "cairn.local",
  keyType: "ec-p256" as CaKeyType,
  leafTtlDefaultMs: 60 * 60_000,
  leafTtlMaxMs: 24 * 60 * 60_000,
} as const;

/** Leaves are valid from a minute before issue, for clocks that run behind (as Consul does). */
export const LEAF_BACKDATE_MS = 60_000;
/** The shortest leaf anyone may ask for: shorter ones would be renewed faster than they can be used. */
export const LEAF_TTL_MIN_MS = 60_000;
/** Roots (and their intermediates) live this long; rotation replaces them long before. */
const ROOT_VALIDITY_MS = 10 * 365 * 24 * 60 * 60_000;
/**
 * A follower signs only while it has heard from a leader this recently, so a node cut off from
 * the cluster cannot go on signing with a root that has since been replaced and retired.
 */
export const SIGNING_LEADER_CONTACT_MAX_MS = 60_000;
/** How long past its last possible leaf a replaced root stays: covers backdating and lagging nodes. */
const RETIRE_MARGIN_MS = LEAF_BACKDATE_MS + 2 * SIGNING_LEADER_CONTACT_MAX_MS;
/**
 * The most roots the trust bundle may hold: the active one and those replaced but not yet retired.
 * Each replaced root stays for the longest leaf TTL, so rotating in a loop would grow the bundle
 * every client downloads without bound (the fuzzer piled up 41).
 */
export const TRUSTED_ROOTS_MAX = 16;
/** Blocking reads of the roots or leaves waiting on one node, at most; past it they get 429, as the registry's do. */
export const CA_BLOCKED_WAITS_MAX = 100_000;
/** How often the leader checks for a missing CA or a root due to retire. */
const MAINTENANCE_INTERVAL_MS = 1000;

export { ISSUANCE_SOURCES, type IssuanceSource, type IssuedEvent, issuedOrigin } from "./recent_issuances.js";

export interface IssuedCertificate {
  readonly certificatePem: string;
  /** Intermediates from the leaf's issuer up, excluding the trusted root itself. */
  readonly chainPems: readonly string[];
  readonly spiffeId: string;
  readonly serialHex: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly rootId: string;
}

/** The leaf then its intermediates, PEM: what a TLS server or client presents as its chain. */
export function chainPemOf(issued: IssuedCertificate): string {
  return [issued.certificatePem, ...issued.chainPems].join("");
}

export interface ImportInput {
  /** A root (self-signed) or an intermediate CA certificate, PEM. */
  readonly certificate: string;
  readonly privateKey: string;
  /** For an intermediate: its issuing root, PEM. */
  readonly root?: string;
}

/** The active root's signing material, unsealed once per rotation. */
interface ActiveSigner {
  readonly revision: number;
  readonly rootId: string;
  /** Its LeafSigner, and its key for the CSR pool's workers. */
  readonly pooled: PoolSigner;
  readonly chainPems: readonly string[];
}

/** What a leaf is signed for; issueLeaf and signWith turn it into a LeafRequest with the times. */
interface LeafSubject {
  readonly spiffeId: string;
  readonly subjectPublicKeyInfoDer: Uint8Array;
  readonly ttlMs: number;
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly Uint8Array[];
}

/** Names each unsealed intermediate to the CSR pool's workers, across every authority in the process. */
let nextPoolSignerId = 1;

export interface CertificateAuthorityOptions {
  readonly driver: RaftDriver;
  readonly state: CaState;
  readonly sealer: KeySealer;
  readonly authorizer: Authorizer;
  readonly settings: CaSettings;
  readonly logger: Logger;
  readonly now?: () => number;
  /** Default CA_BLOCKED_WAITS_MAX; tests lower it. */
  readonly blockedWaitsMax?: number;
}

export class CertificateAuthority {
  readonly state: CaState;
  private readonly driver: RaftDriver;
  private readonly log: Logger;
  private readonly now: () => number;
  private active: ActiveSigner | undefined;
  /** Why the active root could not be unsealed, until the next change; logged once. */
  private activeProblem: { revision: number; message: string } | undefined;
  /** subscribe()'s listeners: called on every change of the roots. */
  private readonly listeners = new Set<() => void>();
  /** onIssued()'s listeners: called for every certificate signed, before it is handed out. */
  private readonly issuedListeners: ((event: IssuedEvent) => void)[] = [];
  /** The last certificates this node signed, for operators (GET /v1/ca/issued). */
  readonly recentIssuances = new RecentIssuances();
  /** waitForChange()'s wakers: each checks its own condition, and ends when stopped. */
  private readonly blockedWaits = new Set<() => void>();
  private stopped = false;
  private maintenanceTimer: NodeJS.Timeout | undefined;
  private maintaining = false;
  /** The active root last warned about for keys not under the current KEK: the warning is given once per root. */
  private kekWarnedRootId: string | undefined;

  constructor(private readonly opts: CertificateAuthorityOptions) {
    this.state = opts.state;
    this.driver = opts.driver;
    this.log = opts.logger;
    this.now = opts.now ?? Date.now;
    this.onIssued((event) => this.recentIssuances.record(event));
    this.state.onChange(() => {
      for (const listener of [...this.listeners]) listener();
      for (const wake of [...this.blockedWaits]) wake();
    });
  }

  /** Who may hold which identity, for every path that issues certificates through this CA. */
  get authorizer(): Authorizer {
    return this.opts.authorizer;
  }

  get settings(): CaSettings {
    return this.opts.settings;
  }

  /** The trust domain in force: the replicated one once the CA exists. */
  get trustDomain(): string {
    return this.state.trustDomain ?? this.opts.settings.trustDomain;
  }

  start(): void {
    if (!this.opts.sealer.sealing) {
      this.log.warn("NO KEY-ENCRYPTION KEY: CA private keys are stored UNSEALED in the Raft log, snapshots and LevelDB; set CAIRN_CA_KEK or --ca-kek-file on every node");
    } else {
      // Fingerprints only: they let the operator check every node has the same KEKs, and reveal nothing of them.
      this.log.info({ kekId: this.opts.sealer.kekId, previousKekIds: this.opts.sealer.previousKekIds }, "CA key-encryption keys");
    }
    this.log.info({ authorizer: this.opts.authorizer.description }, "certificate authority authorizer");
    if (this.state.trustDomain !== null && this.state.trustDomain !== this.opts.settings.trustDomain) {
      this.log.warn({ replicated: this.state.trustDomain, configured: this.opts.settings.trustDomain }, "the cluster's CA already uses another trust domain; the configured one is ignored");
    }
    this.maintenanceTimer = setInterval(() => {
      this.checkActiveRootKek();
      void this.maintain();
    }, MAINTENANCE_INTERVAL_MS);
    this.maintenanceTimer.unref();
    this.driver.onRoleChange((role) => {
      if (role === "leader") void this.maintain();
    });
  }

  stop(): void {
    clearInterval(this.maintenanceTimer);
    this.stopped = true;
    for (const wake of [...this.blockedWaits]) wake();
  }

  // ---------------------------------------------------------------- issuance

  /**
   * Signs a workload's CSR for the SPIFFE ID in it, if the caller may hold that ID. `issuer`
   * checks the CSR's signature and signs the leaf (csr_pool.ts: on worker threads, or inline),
   * with the intermediate active when the request was admitted. Throws CaBusyError when the
   * issuer is full.
   */
  async signWith(issuer: CsrIssuer, input: { readonly csr: string; readonly ttl?: string }, caller: Caller): Promise<IssuedCertificate> {
    const startedAtMs = performance.now();
    const request = this.admitCsr(input, caller);
    const active = this.signerNow();
    const nowMs = this.now();
    let leaf: SignedLeaf;
    try {
      leaf = await issuer.issue(request.proof, leafRequestOf(subjectOfCsr(request), nowMs), active.pooled);
    } catch (err) {
      throw csrInputError(err);
    }
    return this.recordIssued(leaf, active, { spiffeId: request.spiffeId, caller, source: "csr", startedAtMs, nowMs });
  }

  /**
   * Everything about a CSR but its signature: its structure, TTL, SPIFFE ID and whether the
   * caller may hold it; the cheap checks come first so a refused request costs little.
   */
  private admitCsr(input: { readonly csr: string; readonly ttl?: string }, caller: Caller): { readonly csr: ParsedCsr; readonly proof: CsrProof; readonly spiffeId: string; readonly ttlMs: number } {
    const ttlMs = this.leafTtlMs(input.ttl);
    let read;
    try {
      read = readCsrUnverified(input.csr);
    } catch (err) {
      throw csrInputError(err);
    }
    const csr = read.parsed;
    if (csr.uris.length !== 1) {
      throw new CaInputError("csr", `the CSR must carry exactly one URI SAN, the SPIFFE ID it asks for; it has ${csr.uris.length}`);
    }
    const id = this.workloadId(csr.uris[0]);
    if (!this.opts.authorizer.mayHold(caller, id)) throw new CaForbiddenError(`Permission denied: ${caller.origin} may not hold ${id.uri}`);
    return { csr, proof: read.proof, spiffeId: id.uri, ttlMs };
  }

  /**
   * Calls `listener` for every certificate this node signs, whichever path asked (the sign
   * route, Consul's leaf route, the Workload API): all issuance passes through issue().
   */
  onIssued(listener: (event: IssuedEvent) => void): void {
    this.issuedListeners.push(listener);
  }

  /**
   * Signs a certificate for a key the caller holds (Consul's leaf route and the Workload API
   * generate keys server side). Authorization is the caller's: it has already checked the ID.
   */
  issue(spiffeId: string, subjectPublicKeyInfoDer: Uint8Array, ttlMs: number, dnsNames: readonly string[] = [], caller?: Caller): IssuedCertificate {
    return this.issueLeaf({ spiffeId, subjectPublicKeyInfoDer, ttlMs, dnsNames, ipAddresses: [] }, caller, "generated_key", performance.now());
  }

  /**
   * Signs this node's own certificate for its public HTTP and gRPC ports (--tls auto), for a key
   * the node holds: the node's SPIFFE ID (nodeSpiffeId) with its DNS names and IP addresses.
   * No authorizer is asked: the caller is the node itself, and the ID is not one any API caller
   * can ask for (workloadId() refuses it). Throws CaUnavailableError while the CA cannot sign.
   */
  issueNodeCertificate(nodeId: string, subjectPublicKeyInfoDer: Uint8Array, names: { readonly dnsNames: readonly string[]; readonly ipAddresses: readonly Uint8Array[] }): IssuedCertificate {
    return this.issueLeaf(
      { spiffeId: nodeSpiffeId(this.trustDomain, nodeId), subjectPublicKeyInfoDer, ttlMs: this.opts.settings.leafTtlDefaultMs, ...names },
      { token: undefined, origin: "this node, for its public TLS (--tls auto)" },
      "node_tls",
      performance.now(),
    );
  }

  private issueLeaf(
    subject: LeafSubject,
    caller: Caller | undefined,
    source: IssuanceSource,
    /** performance.now() when the request reached the CA. */
    startedAtMs: number,
  ): IssuedCertificate {
    const active = this.signerNow();
    const nowMs = this.now();
    const leaf = active.pooled.signer.sign(leafRequestOf(subject, nowMs));
    return this.recordIssued(leaf, active, { spiffeId: subject.spiffeId, caller, source, startedAtMs, nowMs });
  }

  /** Tells onIssued()'s listeners of a signed leaf, and gives it with its chain. */
  private recordIssued(
    leaf: SignedLeaf,
    active: ActiveSigner,
    how: { readonly spiffeId: string; readonly caller: Caller | undefined; readonly source: IssuanceSource; readonly startedAtMs: number; readonly nowMs: number },
  ): IssuedCertificate {
    const { spiffeId, caller, source, startedAtMs, nowMs } = how;
    const durationSeconds = Math.max(0, performance.now() - startedAtMs) / 1000;
    const event: IssuedEvent = {
      source, durationSeconds, spiffeId, serialHex: leaf.serialHex, notBeforeMs: leaf.notBeforeMs, notAfterMs: leaf.notAfterMs, issuedAtMs: nowMs, rootId: active.rootId, caller,
    };
    for (const listener of this.issuedListeners) listener(event);
    return {
      certificatePem: leaf.pem,
      chainPems: active.chainPems,
      spiffeId,
      serialHex: leaf.serialHex,
      notBeforeMs: leaf.notBeforeMs,
      notAfterMs: leaf.notAfterMs,
      rootId: active.rootId,
    };
  }

  /** Parses and bounds a requested TTL: the default when absent, refused (not shortened) above the maximum. */
  leafTtlMs(ttl: string | undefined): number {
    const { leafTtlDefaultMs, leafTtlMaxMs } = this.opts.settings;
    if (ttl === undefined || ttl === "") return leafTtlDefaultMs;
    const ms = parseGoDuration(ttl);
    if (ms === undefined) throw new CaInputError("ttl", `"${ttl}" is not a duration like "1h" or "30m"`);
    if (ms > leafTtlMaxMs) throw new CaInputError("ttl", `${ttl} is over the maximum of ${leafTtlMaxMs / 3_600_000}h; ask for less`);
    if (ms < LEAF_TTL_MIN_MS) throw new CaInputError("ttl", `${ttl} is under the minimum of 1m`);
    return ms;
  }

  /** A workload SPIFFE ID in this CA's trust domain, or a CaInputError saying what is wrong. */
  workloadId(uri: string): SpiffeId {
    let id: SpiffeId;
    try {
      id = parseSpiffeId(uri);
    } catch (err) {
      if (err instanceof SpiffeIdError) throw new CaInputError("csr", err.message);
      throw err;
    }
    if (id.trustDomain !== this.trustDomain) {
      // Nobody may hold an identity of another trust domain from this CA: a refusal, not a typo.
      throw new CaForbiddenError(`${uri} is in trust domain ${id.trustDomain}, but this CA signs for ${this.trustDomain} only`);
    }
    if (workloadOf(id) === undefined) {
      throw new CaInputError("csr", `${uri} must have the form spiffe://${this.trustDomain}/ns/<namespace>/svc/<service>`);
    }
    return id;
  }

  private signerNow(): ActiveSigner {
    const contactMs = this.driver.lastContactMs;
    if (contactMs === undefined) throw new CaUnavailableError("this node has not heard from a leader yet and will not sign before it has; retry shortly or ask another node");
    if (contactMs > SIGNING_LEADER_CONTACT_MAX_MS) {
      throw new CaUnavailableError(`this node has not heard from a leader for over ${SIGNING_LEADER_CONTACT_MAX_MS / 1000}s and will not sign with possibly stale roots; ask another node`);
    }
    const revision = this.state.revision;
    if (this.active?.revision === revision) return this.active;
    if (this.activeProblem?.revision === revision) throw new CaUnavailableError(this.activeProblem.message);
    const root = this.state.activeRoot;
    if (root === undefined) throw new CaUnavailableError("the cluster's CA is not created yet; retry once a leader is elected");
    try {
      const intermediate = { certificatePem: root.intermediateCertificatePem, privateKey: this.opts.sealer.unseal(root.intermediateKeySealed) };
      const pooled: PoolSigner = { id: nextPoolSignerId++, signer: new LeafSigner(intermediate), intermediate };
      this.active = { revision, rootId: root.id, pooled, chainPems: this.chainOf(root) };
      this.activeProblem = undefined;
      this.warnIfNotUnderCurrentKek(root);
      return this.active;
    } catch (err) {
      if (!(err instanceof SealError)) throw err;
      this.activeProblem = { revision, message: `this node cannot sign: ${err.message}` };
      this.log.error({ rootId: root.id }, this.activeProblem.message);
      throw new CaUnavailableError(this.activeProblem.message);
    }
  }

  /**
   * On every node, once it has heard from a leader (so its roots are the cluster's, not a replay
   * half way through the log): warns if the active root's keys want re-sealing.
   */
  private checkActiveRootKek(): void {
    const contactMs = this.driver.lastContactMs;
    if (contactMs === undefined || contactMs > SIGNING_LEADER_CONTACT_MAX_MS) return;
    const root = this.state.activeRoot;
    if (root !== undefined) this.warnIfNotUnderCurrentKek(root);
  }

  /**
   * The active root's keys are the only ones ever unsealed, so once they are under the current
   * KEK a previous KEK is no longer needed; until then, the operator must rotate. Warns once per root.
   */
  private warnIfNotUnderCurrentKek(root: CaRoot): void {
    if (this.kekWarnedRootId === root.id || !this.opts.sealer.sealing) return;
    const sealer = this.opts.sealer;
    const keys = [root.intermediateKeySealed, ...(root.rootKeySealed === null ? [] : [root.rootKeySealed])].map((k) => sealer.sealedUnder(k));
    // A key under a KEK this node lacks is not this warning's business: signing fails and says so.
    const previousKekIds = [...new Set(keys.flatMap((u) => (u.kind === "previous" ? [u.kekId] : [])))];
    const unsealed = keys.some((u) => u.kind === "unsealed");
    if (previousKekIds.length === 0 && !unsealed) return;
    this.kekWarnedRootId = root.id;
    const what = previousKekIds.length > 0 ? `sealed under a previous KEK (${previousKekIds.join(", ")})` : "stored unsealed, from before this cluster had a KEK";
    this.log.warn(
      { rootId: root.id, kekId: sealer.kekId, previousKekIds },
      `the active CA root's keys are ${what}: run POST /v1/ca/rotate to re-seal the CA under the current KEK ${sealer.kekId}; then the previous KEK can be dropped`,
    );
  }

  /**
   * Why this node could not sign if its roots became `roots` (a backup's, before it is restored):
   * the active intermediate's key is sealed under a KEK this node does not hold. Undefined when
   * it could sign with them.
   */
  restoreProblem(roots: readonly CaRoot[]): string | undefined {
    const active = roots.find((r) => r.active);
    if (active === undefined) return undefined;
    const sealer = this.opts.sealer;
    const under = sealer.sealedUnder(active.intermediateKeySealed);
    if (under.kind !== "unknown") return undefined;
    const held = sealer.kekId === undefined ? "it has no KEK" : `it holds ${[sealer.kekId, ...sealer.previousKekIds].join(", ")}`;
    return `the snapshot's CA keys are sealed under KEK ${under.kekId ?? "(in a format this build does not know)"}, which this node does not hold (${held}), ` +
      "so after a restore no node could sign: give every node that KEK (--ca-kek-file, or --ca-kek-previous-file beside a new current one), then restore again";
  }

  /** The intermediates a leaf of `root` presents: its intermediate, then the cross-signed root while the old root is trusted. */
  private chainOf(root: CaRoot): string[] {
    return this.state.roots.length > 1 ? intermediatesOf(root) : [root.intermediateCertificatePem];
  }

  // ---------------------------------------------------------------- trust bundle

  /** Resolves when the roots change past `sinceRevision`, after `timeoutMs`, on abort, or on stop(). */
  waitForChange(sinceRevision: number, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.stopped || this.state.revision > sinceRevision || timeoutMs <= 0 || signal?.aborted === true) return Promise.resolve();
    const waitsMax = this.opts.blockedWaitsMax ?? CA_BLOCKED_WAITS_MAX;
    if (this.blockedWaits.size >= waitsMax) return Promise.reject(new TooManyWatchersError(waitsMax));
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        this.blockedWaits.delete(wake);
        resolve();
      };
      const wake = (): void => {
        if (this.stopped || this.state.revision > sinceRevision) done();
      };
      const timer = setTimeout(done, timeoutMs);
      signal?.addEventListener("abort", done, { once: true });
      this.blockedWaits.add(wake);
    });
  }

  /** Calls `listener` on every change to the roots; returns the function that stops it. */
  subscribe(listener: (revision: number) => void): () => void {
    const call = (): void => listener(this.state.revision);
    this.listeners.add(call);
    return () => this.listeners.delete(call);
  }

  // ---------------------------------------------------------------- rotation and import

  /**
   * Creates a new root and intermediate, cross-signs the new root with the current one, and makes
   * it active. Any node may rotate: the command names the root it replaces, so concurrent
   * rotations cannot both win.
   */
  async rotate(keyType: CaKeyType = this.opts.settings.keyType): Promise<CaRoot> {
    const current = this.state.activeRoot;
    if (current === undefined) throw new CaUnavailableError("the cluster's CA is not created yet; retry once a leader is elected");
    this.refuseIfBundleFull();
    const root = this.createRoot(keyType);
    return this.activate(current, { ...root, crossSignedCertificatePem: this.crossSign(current, root.rootCertificatePem) });
  }

  /**
   * Replaces the active root with the operator's own CA: a root (Cairn then creates the
   * intermediate) or an intermediate with its root (Cairn then signs with the intermediate).
   */
  async importCa(input: ImportInput): Promise<CaRoot> {
    const current = this.state.activeRoot;
    let material: NewCaRoot;
    try {
      material = this.importedMaterial(input);
      // Proves now, not at the first CSR, that Cairn can sign leaves with what was imported.
      new LeafSigner({ certificatePem: material.intermediateCertificatePem, privateKey: this.opts.sealer.unseal(material.intermediateKeySealed) });
    } catch (err) {
      if (err instanceof CertificateError) throw new CaInputError("certificate", err.message);
      throw err;
    }
    if (current !== undefined && material.id === current.id) throw new CaInputError("certificate", "this root is already the active root");
    this.refuseIfBundleFull();
    const crossSigned = current === undefined ? null : this.crossSign(current, material.rootCertificatePem);
    return this.activate(current, { ...material, crossSignedCertificatePem: crossSigned });
  }

  private importedMaterial(input: ImportInput): NewCaRoot {
    const key = parsePrivateKey(input.privateKey);
    const cert = parseCaCertificate("certificate", input.certificate);
    if (!certificateMatchesKey(input.certificate, key)) throw new CaInputError("privateKey", "does not match the certificate's public key");
    const info = inspectCertificate(input.certificate);
    // Keys Cairn would not generate (P-384, RSA-4096) still sign; their name is for display.
    const keyType = info.keyType === "other" ? describeKey(key) : info.keyType;
    const nowMs = this.now();
    if (info.notAfterMs <= nowMs + this.opts.settings.leafTtlMaxMs) {
      throw new CaInputError("certificate", `expires ${cert.validTo}, before a leaf signed now could expire; import a CA valid for longer`);
    }
    if (cert.checkIssued(cert) && cert.verify(cert.publicKey)) {
      if (input.root !== undefined) throw new CaInputError("root", "give a root only with an intermediate; this certificate is itself a root");
      const intermediate = generateCaKey(info.keyType === "other" ? this.opts.settings.keyType : info.keyType);
      const intermediatePem = createIntermediateCertificate(intermediate.publicKey, { certificatePem: input.certificate, privateKey: key }, {
        trustDomain: this.trustDomain,
        commonName: `Cairn Intermediate CA ${randomBytes(4).toString("hex")}`,
        notBeforeMs: nowMs - LEAF_BACKDATE_MS,
        notAfterMs: info.notAfterMs,
      });
      return {
        ...this.rootFields(input.certificate, keyType),
        rootKeySealed: this.opts.sealer.seal(exportPkcs8(key)),
        intermediateCertificatePem: intermediatePem,
        intermediateKeySealed: this.opts.sealer.seal(intermediate.privateKeyPem),
        crossSignedCertificatePem: null,
      };
    }
    if (input.root === undefined) throw new CaInputError("root", "an intermediate needs the root that issued it");
    const root = parseCaCertificate("root", input.root);
    if (!root.checkIssued(root) || !root.verify(root.publicKey)) throw new CaInputError("root", "is not a self-signed root");
    if (!cert.checkIssued(root) || !cert.verify(root.publicKey)) throw new CaInputError("certificate", "was not issued by the given root");
    return {
      ...this.rootFields(input.root, keyType),
      rootKeySealed: null,
      intermediateCertificatePem: normalizePem(input.certificate),
      intermediateKeySealed: this.opts.sealer.seal(exportPkcs8(key)),
      crossSignedCertificatePem: null,
    };
  }

  private refuseIfBundleFull(): void {
    const roots = this.state.roots;
    if (roots.length < TRUSTED_ROOTS_MAX) return;
    const retiring = roots.map((r) => r.retireAfterMs).filter((t): t is number => t !== null);
    const earliest = retiring.length === 0 ? "" : `; the earliest replaced root retires at ${new Date(Math.min(...retiring)).toISOString()}`;
    throw new CaInputError("rotation", `the trust bundle already holds ${roots.length} roots, the most it may (${TRUSTED_ROOTS_MAX}): rotate again once replaced roots have retired${earliest}`);
  }

  private async activate(current: CaRoot | undefined, root: NewCaRoot): Promise<CaRoot> {
    const cmd: CaCommand = {
      op: "activateRoot",
      replaces: current?.id ?? null,
      trustDomain: this.trustDomain,
      root,
      atMs: this.now(),
      oldLeavesValidForMs: this.opts.settings.leafTtlMaxMs + RETIRE_MARGIN_MS,
    };
    await this.driver.propose(withTag(STATE_TAG_CA, encodeCaCommand(cmd)));
    const active = this.state.activeRoot;
    if (active?.id !== root.id) throw new CaUnavailableError("another rotation of the CA committed first; look at the roots and retry if still needed");
    this.log.info({ rootId: root.id, replaces: current?.id ?? null, keyType: root.keyType }, current === undefined ? "CA created" : "CA root rotated");
    return active;
  }

  /** The old root's key certifies the new root, when Cairn holds it (not for an imported intermediate's external root). */
  private crossSign(current: CaRoot, newRootPem: string): string | null {
    if (current.rootKeySealed === null) return null;
    let privateKey: KeyObject;
    try {
      privateKey = this.opts.sealer.unseal(current.rootKeySealed);
    } catch (err) {
      // Another node, one given the KEK the root is sealed under, can rotate.
      if (err instanceof SealError) throw new CaUnavailableError(`this node cannot rotate the CA: ${err.message}`);
      throw err;
    }
    return crossSignCertificate(newRootPem, { certificatePem: current.rootCertificatePem, privateKey });
  }

  private createRoot(keyType: CaKeyType): Omit<NewCaRoot, "crossSignedCertificatePem"> {
    const nowMs = this.now();
    const tag = randomBytes(4).toString("hex");
    const validity = { trustDomain: this.trustDomain, notBeforeMs: nowMs - LEAF_BACKDATE_MS, notAfterMs: nowMs + ROOT_VALIDITY_MS };
    const rootKey = generateCaKey(keyType);
    const rootPem = createRootCertificate(rootKey, { ...validity, commonName: `Cairn Root CA ${tag}` });
    const intermediateKey = generateCaKey(keyType);
    const intermediatePem = createIntermediateCertificate(intermediateKey.publicKey, { certificatePem: rootPem, privateKey: rootKey.privateKey }, {
      ...validity,
      commonName: `Cairn Intermediate CA ${tag}`,
    });
    return {
      ...this.rootFields(rootPem, keyType),
      rootKeySealed: this.opts.sealer.seal(rootKey.privateKeyPem),
      intermediateCertificatePem: intermediatePem,
      intermediateKeySealed: this.opts.sealer.seal(intermediateKey.privateKeyPem),
    };
  }

  private rootFields(rootPem: string, keyType: string): Pick<NewCaRoot, "id" | "name" | "keyType" | "rootCertificatePem" | "notBeforeMs" | "notAfterMs"> {
    const info = inspectCertificate(rootPem);
    return {
      id: colonHex(info.subjectKeyIdHex),
      name: info.subject,
      keyType,
      rootCertificatePem: normalizePem(rootPem),
      notBeforeMs: info.notBeforeMs,
      notAfterMs: info.notAfterMs,
    };
  }

  // ---------------------------------------------------------------- leader maintenance

  /** On the leader: creates the CA when the cluster has none, and retires replaced roots when due. */
  private async maintain(): Promise<void> {
    if (this.maintaining || this.driver.role !== "leader") return;
    this.maintaining = true;
    try {
      if (this.state.activeRoot === undefined) {
        const root = this.createRoot(this.opts.settings.keyType);
        await this.activate(undefined, { ...root, crossSignedCertificatePem: null });
        return;
      }
      const nowMs = this.now();
      for (const r of this.state.roots) {
        if (r.active || r.retireAfterMs === null || r.retireAfterMs > nowMs) continue;
        await this.driver.propose(withTag(STATE_TAG_CA, encodeCaCommand({ op: "retireRoot", id: r.id })));
        this.log.info({ rootId: r.id }, "replaced CA root retired: its last leaf has expired");
      }
    } catch (err) {
      // Lost leadership or a race: the next round (or the next leader) tries again.
      this.log.warn({ err: errorMessage(err) }, "CA maintenance did not finish; retrying");
    } finally {
      this.maintaining = false;
    }
  }
}

function parsePrivateKey(pem: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch {
    // The key's text never goes into the message: it is a secret even when malformed.
    throw new CaInputError("privateKey", "is not a PEM private key (PKCS#8, SEC1 or PKCS#1)");
  }
}

function parseCaCertificate(field: string, pem: string): X509Certificate {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch {
    throw new CaInputError(field, "is not a PEM certificate");
  }
  if (!cert.ca) throw new CaInputError(field, "is not a CA certificate (basicConstraints cA=true)");
  return cert;
}

function exportPkcs8(key: KeyObject): string {
  return key.export({ format: "pem", type: "pkcs8" }).toString();
}

function normalizePem(pem: string): string {
  return new X509Certificate(pem).toString();
}

/**
 * A CSR the caller must fix is a 400 naming the csr field: a bad signature or key, or SANs no
 * leaf may carry (too many DNS names, one that is no DNS name). Anything else goes on as it is.
 */
function csrInputError(err: unknown): unknown {
  return err instanceof CsrError || err instanceof CertificateError ? new CaInputError("csr", err.message) : err;
}

function subjectOfCsr(request: { readonly csr: ParsedCsr; readonly spiffeId: string; readonly ttlMs: number }): LeafSubject {
  return { spiffeId: request.spiffeId, subjectPublicKeyInfoDer: request.csr.subjectPublicKeyInfoDer, ttlMs: request.ttlMs, dnsNames: request.csr.dnsNames, ipAddresses: [] };
}

function leafRequestOf(subject: LeafSubject, nowMs: number): LeafRequest {
  const { spiffeId, subjectPublicKeyInfoDer, ttlMs, dnsNames, ipAddresses } = subject;
  return { subjectPublicKeyInfoDer, spiffeId, dnsNames, ipAddresses, notBeforeMs: nowMs - LEAF_BACKDATE_MS, notAfterMs: nowMs + ttlMs };
}
