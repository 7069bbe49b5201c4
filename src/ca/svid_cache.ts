// The X.509-SVIDs a node holds for a set of identities, shared by everything that hands them out
// (the SPIFFE Workload API today): the key pair is made here, the CA signs it locally (no Raft
// round trip), and it is renewed at about half its lifetime and at once when the roots change.
// Who may receive which of them is not decided here: the Workload API asks the authorizer for
// each caller, so one SVID per identity serves every caller entitled to it.

import { type KeyObject, X509Certificate, generateKeyPairSync } from "node:crypto";
import type { Logger } from "pino";
import { CaInputError, type CertificateAuthority } from "./authority.js";
import { backoffDelayMs } from "../common/backoff.js";
import { errorMessage } from "../common/errors.js";
import { renewalAtMs, renewalWindowAround } from "../common/renewal.js";

export const svidCacheLimits = {
  /** SPIRE's choice: renew at half the remaining lifetime, ±10% so a fleet does not renew in step. */
  renewFraction: 0.5,
  renewJitterFraction: 0.1,
  /** Backoff while the CA cannot sign (no CA yet, no leader contact): doubles from base to max. */
  retryBaseMs: 100,
  retryMaxMs: 5_000,
} as const;

const RENEW_WINDOW = renewalWindowAround(svidCacheLimits.renewFraction, svidCacheLimits.renewJitterFraction);

/** setTimeout fires at once for delays past 2^31-1 ms; longer waits are re-armed. */
const TIMER_DELAY_MAX_MS = 2 ** 31 - 1;

export interface HeldSvid {
  readonly spiffeId: string;
  /** The leaf, then its intermediates, DER. */
  readonly certificatesDer: Buffer;
  readonly privateKeyDer: Buffer;
  readonly serialHex: string;
  readonly notAfterMs: number;
  readonly renewAtMs: number;
  /** The roots' revision it was signed under: a rotation makes it stale. */
  readonly caRevision: number;
}

export interface SvidCacheOptions {
  readonly authority: CertificateAuthority;
  /** The SPIFFE IDs to hold: each that this CA signs for (its trust domain). */
  readonly identities: readonly string[];
  readonly logger: Logger;
  /** In [0, 1): the renewal jitter. Tests fix it. */
  readonly random?: () => number;
  readonly now?: () => number;
}

/**
 * The node's SVIDs for a set of identities. It decides when to sign (missing, due, roots
 * changed) and tells its listeners once per refresh that changed anything.
 */
export class SvidCache {
  private readonly held = new Map<string, HeldSvid>();
  private readonly listeners = new Set<() => void>();
  private readonly refused = new Set<string>();
  private readonly unsubscribe: () => void;
  private readonly now: () => number;
  private readonly random: () => number;
  private timer: NodeJS.Timeout | undefined;
  private refreshScheduled = false;
  private stopped = false;
  private failures = 0;
  /** The roots' revision the last published bundle came from. */
  private bundleRevision = -1;
  private entitledIds: readonly string[] = [];
  private publishedSvids: readonly HeldSvid[] = [];
  private publishedBundle: Buffer | undefined;

  constructor(private readonly opts: SvidCacheOptions) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.entitledIds = this.entitled();
    // Root changes are applied inside the Raft apply loop: sign after it, batched per turn.
    this.unsubscribe = opts.authority.subscribe(() => this.scheduleRefresh());
    this.scheduleRefresh();
  }

  /** Whether it holds any identity at all (the Workload API: otherwise PermissionDenied). */
  get hasIdentities(): boolean {
    return this.entitledIds.length > 0;
  }

  /** The configured identities it holds or will hold (this CA signs for them), in their order. */
  identities(): readonly string[] {
    return this.entitledIds;
  }

  /** The SVIDs held, in the order of `identities`; empty until the first is signed. */
  svids(): readonly HeldSvid[] {
    return this.publishedSvids;
  }

  /** The roots, DER, concatenated; undefined until the cluster has created its CA. */
  bundleDer(): Buffer | undefined {
    return this.publishedBundle;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.unsubscribe();
    this.listeners.clear();
  }

  private scheduleRefresh(): void {
    if (this.refreshScheduled || this.stopped) return;
    this.refreshScheduled = true;
    setImmediate(() => {
      this.refreshScheduled = false;
      this.refresh();
    });
  }

  private refresh(): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    const { authority, logger } = this.opts;
    const nowMs = this.now();
    const revision = authority.state.revision;
    let changed = false;
    this.entitledIds = this.entitled();
    for (const [id, svid] of this.held) {
      // An expired SVID is useless and a withdrawn one must go: the next message leaves it out.
      if (!this.entitledIds.includes(id) || svid.notAfterMs <= nowMs) {
        this.held.delete(id);
        changed = true;
      }
    }
    if (revision !== this.bundleRevision) {
      this.bundleRevision = revision;
      changed = true;
    }
    let failure: string | undefined;
    for (const id of this.entitledIds) {
      const svid = this.held.get(id);
      if (svid !== undefined && svid.caRevision === revision && nowMs < svid.renewAtMs) continue;
      try {
        this.held.set(id, this.sign(id, nowMs, revision));
        changed = true;
      } catch (err) {
        // The CA cannot sign (no CA yet, no leader contact); the other identities would fail alike.
        failure = errorMessage(err);
        break;
      }
    }
    if (failure !== undefined) {
      this.failures++;
      if (this.failures === 1) logger.warn({ err: failure }, "cannot sign X.509-SVIDs yet; retrying with backoff");
      else logger.debug({ err: failure, failures: this.failures }, "X.509-SVID signing still failing");
    } else if (this.failures > 0) {
      logger.info({ failures: this.failures }, "X.509-SVID signing works again");
      this.failures = 0;
    }
    if (changed) this.publish();
    this.arm(nowMs);
  }

  /** Configured identities this CA signs for; each refusal is logged once. */
  private entitled(): string[] {
    const ids: string[] = [];
    for (const uri of this.opts.identities) {
      let reason: string | undefined;
      try {
        this.opts.authority.workloadId(uri);
      } catch (err) {
        if (!(err instanceof CaInputError)) throw err;
        reason = err.message;
      }
      if (reason === undefined) {
        ids.push(uri);
        this.refused.delete(uri);
      } else if (!this.refused.has(uri)) {
        this.refused.add(uri);
        this.opts.logger.error({ spiffeId: uri, reason }, "this identity will not be handed out");
      }
    }
    return ids;
  }

  private sign(spiffeId: string, nowMs: number, caRevision: number): HeldSvid {
    const { authority, logger } = this.opts;
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const issued = authority.issue(spiffeId, publicKey.export({ format: "der", type: "spki" }), authority.settings.leafTtlDefaultMs);
    const svid: HeldSvid = {
      spiffeId,
      certificatesDer: Buffer.concat([issued.certificatePem, ...issued.chainPems].map(pemToDer)),
      privateKeyDer: pkcs8Der(privateKey),
      serialHex: issued.serialHex,
      notAfterMs: issued.notAfterMs,
      renewAtMs: renewalAtMs(nowMs, issued.notAfterMs, RENEW_WINDOW, this.random()),
      caRevision,
    };
    logger.info({ spiffeId, serial: issued.serialHex, rootId: issued.rootId, notAfter: new Date(issued.notAfterMs).toISOString() }, "X.509-SVID signed");
    return svid;
  }

  private publish(): void {
    const roots = this.opts.authority.state.roots;
    this.publishedBundle = roots.length === 0 ? undefined : Buffer.concat(roots.map((r) => pemToDer(r.rootCertificatePem)));
    this.publishedSvids = this.entitledIds.flatMap((id) => {
      const svid = this.held.get(id);
      return svid === undefined ? [] : [svid];
    });
    for (const listener of [...this.listeners]) listener();
  }

  /** The next refresh: a retry with backoff after a failure, else the earliest renewal. */
  private arm(nowMs: number): void {
    let atMs = Infinity;
    if (this.failures > 0) atMs = nowMs + backoffDelayMs(this.failures, svidCacheLimits.retryBaseMs, svidCacheLimits.retryMaxMs, this.random);
    for (const svid of this.held.values()) atMs = Math.min(atMs, svid.renewAtMs);
    if (atMs === Infinity) return;
    this.timer = setTimeout(() => this.refresh(), Math.min(TIMER_DELAY_MAX_MS, Math.max(0, atMs - nowMs)));
    this.timer.unref();
  }
}

function pemToDer(pem: string): Buffer {
  return new X509Certificate(pem).raw;
}

function pkcs8Der(key: KeyObject): Buffer {
  return key.export({ format: "der", type: "pkcs8" });
}
