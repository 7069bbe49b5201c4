// Consul's agent leaf certificates: the node generates the key, signs a leaf for the service's
// Consul-style SPIFFE ID, and keeps it, so that every caller asking for the same service gets the
// same certificate until it nears expiry or the roots rotate. A blocking query on a leaf returns
// when either happens, as Consul's agent cache does.

import { generateKeyPairSync } from "node:crypto";
import { type RenewalWindow, renewalAtMs } from "../common/renewal.js";
import type { Caller } from "./authorizer.js";
import { CaForbiddenError, CaInputError, type CertificateAuthority, type IssuedCertificate } from "./authority.js";
import { consulServiceSpiffeId, isServiceLabel, parseSpiffeId } from "./spiffe.js";

export interface CachedLeaf {
  readonly service: string;
  readonly serviceUri: string;
  readonly issued: IssuedCertificate;
  readonly privateKeyPem: string;
  /** Rises with every new certificate for the service on this node; never 0. */
  readonly index: number;
  /** The roots' revision it was signed under: a rotation makes it stale. */
  readonly caRevision: number;
  /** When a blocking query returns it as due for renewal. */
  readonly renewAtMs: number;
}

/** Services with a cached leaf, at most; past it the least recently issued is dropped. */
export const LEAF_CACHE_SERVICES_MAX = 10_000;
/** Consul renews agent leaves between 60% and 90% of their lifetime; the spread avoids a herd. */
const RENEW_WINDOW: RenewalWindow = { fractionMin: 0.6, fractionMax: 0.9 };

export class LeafCache {
  private readonly leaves = new Map<string, CachedLeaf>();
  private readonly renewedListeners = new Set<(leaf: CachedLeaf) => void>();
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(
    private readonly authority: CertificateAuthority,
    private readonly datacenter: string,
    opts: { readonly now?: () => number; readonly random?: () => number } = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
  }

  /** The service's current leaf, issuing a new one when there is none, it is due, or the roots changed. */
  get(service: string, caller: Caller): CachedLeaf {
    if (!isServiceLabel(service)) throw new CaInputError("service", `"${service}" must be a DNS label: letters, digits and '-', at most 63`);
    const uri = consulServiceSpiffeId(this.authority.trustDomain, this.datacenter, service);
    if (!this.authority.authorizer.mayHold(caller, parseSpiffeId(uri))) throw new CaForbiddenError(`Permission denied: ${caller.origin} may not hold ${uri}`);
    const cached = this.leaves.get(service);
    if (cached !== undefined && !this.isStale(cached)) return cached;
    return this.renew(service, uri, cached, caller);
  }

  /**
   * Blocks while the leaf the caller holds (`sinceIndex`) is still current, up to `timeoutMs`;
   * then answers the current leaf, renewed if it fell due.
   */
  async wait(service: string, caller: Caller, sinceIndex: number, timeoutMs: number, signal?: AbortSignal): Promise<CachedLeaf> {
    const first = this.get(service, caller);
    if (sinceIndex < first.index) return first;
    const untilDueMs = Math.max(0, first.renewAtMs - this.now());
    await this.authority.waitForChange(first.caRevision, Math.min(timeoutMs, untilDueMs), signal);
    return this.get(service, caller);
  }

  /** Whether get() would answer the cached leaf of `service` as it is, without signing a new one. */
  isCurrent(service: string): boolean {
    const cached = this.leaves.get(service);
    return cached !== undefined && !this.isStale(cached);
  }

  /**
   * Calls `listener` with every new leaf this cache issues, whoever asked for it (Consul's leaf
   * route, an SDS stream), so that every other holder of the service's previous leaf hears of it.
   * Returns the function that stops it.
   */
  onRenewed(listener: (leaf: CachedLeaf) => void): () => void {
    const call = (leaf: CachedLeaf): void => listener(leaf);
    this.renewedListeners.add(call);
    return () => this.renewedListeners.delete(call);
  }

  private isStale(leaf: CachedLeaf): boolean {
    return leaf.caRevision !== this.authority.state.revision || this.now() >= leaf.renewAtMs;
  }

  private renew(service: string, uri: string, previous: CachedLeaf | undefined, caller: Caller): CachedLeaf {
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const caRevision = this.authority.state.revision;
    const issued = this.authority.issue(uri, publicKey.export({ format: "der", type: "spki" }), this.authority.settings.leafTtlDefaultMs, [], caller);
    const nowMs = this.now();
    const leaf: CachedLeaf = {
      service,
      serviceUri: uri,
      issued,
      privateKeyPem: privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
      index: Math.max(caRevision, (previous?.index ?? 0) + 1, 1),
      caRevision,
      renewAtMs: renewalAtMs(nowMs, issued.notAfterMs, RENEW_WINDOW, this.random()),
    };
    this.leaves.delete(service);
    if (this.leaves.size >= LEAF_CACHE_SERVICES_MAX) {
      const oldest = this.leaves.keys().next();
      if (oldest.done !== true) this.leaves.delete(oldest.value);
    }
    this.leaves.set(service, leaf);
    for (const listener of [...this.renewedListeners]) listener(leaf);
    return leaf;
  }
}
