// SDS: the secrets an Envoy asks for by name (envoy.extensions.transport_sockets.tls.v3.Secret),
// served over ADS and over SecretDiscoveryService beside the registry's resources. See docs/xds.md.
//
//   ROOTCA  validation_context.trusted_ca: the trust bundle, every trusted root as PEM (the old
//           and the new one during a rotation). Public, as every other path to the bundle is.
//   S       tls_certificate: the node's agent leaf for service S (the leaf then its intermediates)
//           and its private key, from the same LeafCache that Consul's leaf route serves. Only a
//           stream whose token has service:write on S gets it (the CA's rule for holding S's
//           SPIFFE ID); to any other stream it is absent, as an unreadable service is to the
//           registry's sources.
//
// Pushes. A leaf is pushed again when it is renewed (the LeafCache renews between 60% and 90% of
// its life, or when the roots change) and the bundle when the roots change. The leaf is renewed
// lazily, as every reader of the LeafCache renews it: one timer per service some stream was given
// a leaf of, at the leaf's renewal time, tells that service's subscribers it changed, and the
// first of them to be flushed asks the cache, which renews it; the others get the same new leaf.
// A service nobody subscribes to any more costs one more timer, then nothing. A root rotation
// tells the subscribers of the bundle and of every watched leaf. At most SIGNS_PER_TURN_MAX new
// leaves are signed per turn of the event loop; the rest are pending until the next turns. Each
// leaf and bundle is encoded once and shared by every stream that sends it. Private keys are
// never logged.

import type { Logger } from "pino";
import type { RateLimiter, RateLimitKind } from "../rate_limit.js";
import { CaForbiddenError, CaInputError, CaUnavailableError, type CertificateAuthority, chainPemOf } from "../../ca/authority.js";
import type { Caller } from "../../ca/authorizer.js";
import type { CachedLeaf, LeafCache } from "../../ca/leaves.js";
import { isServiceLabel } from "../../ca/spiffe.js";
import { errorMessage } from "../../common/errors.js";
import { type EncodedResource, encodeResource, type ResourceKey } from "./cache.js";
import { encodeMessage, type XdsProtos } from "./protos.js";
import { SECRET_TYPE, type ResourceType } from "./resources.js";
import type { ResourceModule } from "./service.js";
import type { StreamIdentity } from "./session.js";
import type { ResourceSource } from "./subscription.js";

/** The trust bundle's secret name: Istio's, so bootstraps written for istio-agent's SDS work unchanged. */
export const TRUST_BUNDLE_SECRET_NAME = "ROOTCA";

/** How long after the CA could not sign a leaf (no leader heard from yet, no CA yet) it is tried again. */
export const SIGN_RETRY_MS = 1000;

/** Node's timers take a 32-bit delay; a leaf due later than this is looked at again then (and not yet renewed). */
const TIMER_DELAY_MAX_MS = 2 ** 31 - 1;

/**
 * New leaves signed per turn of the event loop, at most (a key pair and a signature, about a
 * millisecond each here): a stream that names thousands of services, or a rotation that renews
 * every watched leaf, never holds the loop (and with it Raft's ticks) for long. The names past it
 * are pending and signed on the next turns.
 */
export const SIGNS_PER_TURN_MAX = 32;

/** Wall-clock time (the LeafCache's renewal times are wall-clock) and timers; tests inject their own. */
export interface SecretsClock {
  nowMs(): number;
  /** Calls `callback` after about `delayMs`; returns a function that cancels it. */
  schedule(callback: () => void, delayMs: number): () => void;
}

export const wallClock: SecretsClock = {
  nowMs: () => Date.now(),
  schedule: (callback, delayMs) => {
    // A renewal timer must never keep a stopping node alive.
    const timer = setTimeout(callback, delayMs).unref();
    return () => clearTimeout(timer);
  },
};

export interface SecretsModuleOptions {
  readonly authority: CertificateAuthority;
  /** The node's agent leaves, shared with Consul's leaf route. */
  readonly leaves: LeafCache;
  /**
   * The node's rate limits: a leaf this node must sign for a stream is charged to the stream's
   * token and address in the `sign` class, as POST /v1/ca/sign is. Absent: not limited.
   */
  readonly rateLimiter?: RateLimiter;
  readonly logger: Logger;
  readonly clock?: SecretsClock;
}

/** Who a leaf is signed for: the stream's caller (its token) and the address it comes from. */
interface StreamSigner {
  readonly caller: Caller;
  readonly address: string;
}

/** A signature this node would make for a stream is past the sign rate limit of its token or address. */
class SignRateLimitedError extends Error {
  constructor(limit: RateLimitKind) {
    super(`the sign rate limit per ${limit} is reached; the leaf is signed once it allows`);
    this.name = "SignRateLimitedError";
  }
}

/** A watched leaf: when it falls due, and the timer that says so. */
interface LeafWatch {
  readonly renewAtMs: number;
  readonly cancel: () => void;
}

export class SecretsModule implements ResourceModule {
  private protos: XdsProtos | undefined;
  private readonly clock: SecretsClock;
  private readonly listeners: ((changes: readonly ResourceKey[]) => void)[] = [];
  /** The bundle's secret, encoded for the roots' revision it was built at. */
  private bundle: { readonly caRevision: number; readonly resource: EncodedResource } | undefined;
  /** Each leaf's secret, encoded once; it goes with the leaf when the cache replaces it. */
  private readonly encodedLeaves = new WeakMap<CachedLeaf, EncodedResource>();
  /**
   * Services some stream was given a leaf of. Each stays until its leaf's renewal time, and again
   * only if a stream reads it then, so there are at most as many as the names streams subscribe
   * to (each bounded by subscribedNamesMax).
   */
  private readonly watches = new Map<string, LeafWatch>();
  /** Leaves signed in this turn of the event loop, and the names put off to the next. */
  private signedThisTurn = 0;
  private readonly deferred = new Set<string>();
  private turnEndScheduled = false;
  /** Services whose leaf the CA could not sign on the last try, with the retry's cancel. */
  private readonly retries = new Map<string, () => void>();
  private readonly stops: (() => void)[] = [];
  private closed = false;

  constructor(private readonly opts: SecretsModuleOptions) {
    this.clock = opts.clock ?? wallClock;
  }

  start(protos: XdsProtos): void {
    this.protos = protos;
    // Called inside Raft's apply: it only marks; the streams ask for the new secrets on a later turn.
    this.stops.push(this.opts.authority.subscribe(() => this.rootsChanged()));
    this.stops.push(this.opts.leaves.onRenewed((leaf) => {
      if (this.watches.has(leaf.service)) this.emit([{ kind: "secret", name: leaf.service }]);
    }));
  }

  onChange(listener: (changes: readonly ResourceKey[]) => void): void {
    this.listeners.push(listener);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const stop of this.stops.splice(0)) stop();
    for (const watch of this.watches.values()) watch.cancel();
    this.watches.clear();
    for (const cancel of this.retries.values()) cancel();
    this.retries.clear();
    this.deferred.clear();
  }

  /** Services whose leaf renewal is being watched: those some stream was given a leaf of. */
  get watchedCount(): number {
    return this.watches.size;
  }

  sourceFor(type: ResourceType, stream: StreamIdentity, inner: ResourceSource<EncodedResource> | undefined): ResourceSource<EncodedResource> | undefined {
    if (type.kind !== SECRET_TYPE.kind) return inner;
    const { permissions } = stream;
    // The rule the CA's authorizer applies to S's SPIFFE ID, checked here first so that a name
    // the token may not hold is absent, never an error; the cache asks the authorizer again.
    const mayHold = (service: string): boolean => permissions === undefined || permissions.allows("service", "write", service);
    const caller: Caller = { token: stream.presentedToken, origin: `xDS client ${stream.client?.id ?? "(no node id)"}` };
    const signer: StreamSigner = { caller, address: stream.peerAddress };
    return {
      get: (name) => {
        if (name === TRUST_BUNDLE_SECRET_NAME) return this.bundleSecret();
        if (!isServiceLabel(name)) return inner?.get(name);
        return mayHold(name) ? this.leafSecret(name, signer) : undefined;
      },
      // Secrets have no wildcard: a stream names each one.
      names: () => inner?.names() ?? [],
      pending: (name) => {
        if (name === TRUST_BUNDLE_SECRET_NAME) return this.opts.authority.state.roots.length === 0;
        if (!isServiceLabel(name)) return inner?.pending(name) ?? false;
        return mayHold(name) && (this.retries.has(name) || this.deferred.has(name));
      },
    };
  }

  private bundleSecret(): EncodedResource | undefined {
    const protos = this.protos;
    const state = this.opts.authority.state;
    // No CA yet: pending (see sourceFor), sent once the leader has created it.
    if (protos === undefined || state.roots.length === 0) return undefined;
    if (this.bundle?.caRevision !== state.revision) {
      const secret = encodeMessage(protos.Secret, { name: TRUST_BUNDLE_SECRET_NAME, validation_context: { trusted_ca: { inline_bytes: Buffer.from(state.bundlePem) } } });
      this.bundle = { caRevision: state.revision, resource: encodeResource(protos, SECRET_TYPE, TRUST_BUNDLE_SECRET_NAME, secret) };
    }
    return this.bundle.resource;
  }

  private leafSecret(service: string, signer: StreamSigner): EncodedResource | undefined {
    const protos = this.protos;
    if (protos === undefined || this.closed) return undefined;
    const { caller } = signer;
    const signs = !this.opts.leaves.isCurrent(service);
    if (signs && (this.retries.has(service) || !this.admitSign(service, signer) || !this.maySignThisTurn(service))) return undefined;
    let leaf: CachedLeaf;
    try {
      leaf = this.opts.leaves.get(service, caller);
    } catch (err) {
      // The authorizer and the label check agree with sourceFor's; should they not, the name is absent.
      if (err instanceof CaForbiddenError || err instanceof CaInputError) return undefined;
      this.retryLater(service, err);
      return undefined;
    }
    this.retries.get(service)?.();
    this.retries.delete(service);
    this.watch(leaf);
    let resource = this.encodedLeaves.get(leaf);
    if (resource === undefined) {
      const secret = encodeMessage(protos.Secret, {
        name: service,
        tls_certificate: { certificate_chain: { inline_bytes: Buffer.from(chainPemOf(leaf.issued)) }, private_key: { inline_bytes: Buffer.from(leaf.privateKeyPem) } },
      });
      resource = encodeResource(protos, SECRET_TYPE, service, secret);
      this.encodedLeaves.set(leaf, resource);
    }
    return resource;
  }

  /**
   * Charges a signature to the stream's token and address, as the sign route does. Refused, the
   * secret is pending and asked for again when the limit says a token will be free; the stream is
   * not failed, since Envoy would only reconnect and ask again.
   */
  private admitSign(service: string, signer: StreamSigner): boolean {
    const limiter = this.opts.rateLimiter;
    if (limiter === undefined) return true;
    const admission = limiter.admit("sign", signer.caller.token, signer.address);
    if (admission.admitted) return true;
    this.retryLater(service, new SignRateLimitedError(admission.limit), admission.retryAfterSeconds * 1000);
    return false;
  }

  /** Counts a signature against this turn's budget; past it, puts `service` off to the next turn (pending meanwhile). */
  private maySignThisTurn(service: string): boolean {
    if (!this.turnEndScheduled) {
      this.turnEndScheduled = true;
      setImmediate(() => {
        this.turnEndScheduled = false;
        this.signedThisTurn = 0;
        const names = [...this.deferred];
        this.deferred.clear();
        if (names.length > 0) this.emit(names.map((name): ResourceKey => ({ kind: "secret", name })));
      });
    }
    if (this.signedThisTurn >= SIGNS_PER_TURN_MAX) {
      this.deferred.add(service);
      return false;
    }
    this.signedThisTurn++;
    return true;
  }

  /** The leaf cannot be signed now: the secret is pending, and asked for again in `retryMs`. Logged once per service until it can. */
  private retryLater(service: string, err: unknown, retryMs = SIGN_RETRY_MS): void {
    if (this.retries.has(service) || this.closed) return;
    const expected = err instanceof CaUnavailableError || err instanceof SignRateLimitedError;
    const fields = { service, retryMs, err: errorMessage(err) };
    if (expected) this.opts.logger.warn(fields, "SDS: this node cannot sign the service's leaf now; its secret is sent once it can");
    else this.opts.logger.error(fields, "SDS: signing the service's leaf failed; retrying");
    this.retries.set(service, this.clock.schedule(() => {
      this.retries.delete(service);
      this.emit([{ kind: "secret", name: service }]);
    }, retryMs));
  }

  /** Arms the timer that tells the service's subscribers when `leaf` falls due. */
  private watch(leaf: CachedLeaf): void {
    const { service, renewAtMs } = leaf;
    const current = this.watches.get(service);
    if (current?.renewAtMs === renewAtMs) return;
    current?.cancel();
    const delayMs = Math.min(TIMER_DELAY_MAX_MS, Math.max(0, renewAtMs - this.clock.nowMs()));
    const cancel = this.clock.schedule(() => {
      this.watches.delete(service);
      this.emit([{ kind: "secret", name: service }]);
    }, delayMs);
    this.watches.set(service, { renewAtMs, cancel });
  }

  /** Every watched leaf is stale under new roots, and the bundle may have changed. */
  private rootsChanged(): void {
    if (this.closed) return;
    this.emit([{ kind: "secret", name: TRUST_BUNDLE_SECRET_NAME }, ...[...this.watches.keys()].map((name): ResourceKey => ({ kind: "secret", name }))]);
  }

  private emit(changes: readonly ResourceKey[]): void {
    if (this.closed) return;
    for (const listener of this.listeners) listener(changes);
  }
}
