// `--tls auto`: the public ports serve with a certificate for this node from the cluster's own
// CA. The node makes its key, the CA signs it in process (no HTTP, no authorizer: the caller is
// the node itself), and the certificate is renewed at about half its life and at once when the
// roots change, so HTTPS and gRPC follow a rotation without a restart. With --tls-verify-client
// and no client CA file, clients must present a certificate that chains to the trust bundle (an
// SVID of this cluster), and the bundle served to the handshake follows the roots too.
//
// The CA signs only once the cluster has a leader and a root, and the public ports cannot serve
// TLS before there is a certificate: so the node opens them only after its first certificate
// (see first()). Nothing needs them earlier: elections, replication and the CA's creation run
// over the peer port, and a node that joins asks a member that already serves.

import { generateKeyPairSync } from "node:crypto";
import { isIP } from "node:net";
import type { Logger } from "pino";
import { type CertificateAuthority, chainPemOf } from "../ca/authority.js";
import { LEAF_DNS_NAMES_MAX, LEAF_IP_ADDRESSES_MAX } from "../ca/leaf.js";
import { nodeSpiffeId } from "../ca/spiffe.js";
import { backoffDelayMs } from "../common/backoff.js";
import { errorMessage } from "../common/errors.js";
import { renewalAtMs, renewalWindowAround } from "../common/renewal.js";
import { ipAddressBytes } from "../tls/peer_certificates.js";
import type { PublicTlsMaterial, TlsMaterialSource } from "./tls.js";

export const autoTlsLimits = {
  /**
   * Renew at half the lifetime left, ±10% (SPIRE's choice, as the Workload API's SVIDs): half
   * the TTL (30 minutes by default) is left to ride out a spell without a leader.
   */
  renewFraction: 0.5,
  renewJitterFraction: 0.1,
  /** Backoff while the CA cannot sign (no leader yet, no root yet): doubles from base to max. */
  retryBaseMs: 100,
  retryMaxMs: 5_000,
  /** While the public ports wait for the first certificate, say so this often, with why. */
  waitLogIntervalMs: 10_000,
} as const;

const RENEW_WINDOW = renewalWindowAround(autoTlsLimits.renewFraction, autoTlsLimits.renewJitterFraction);

/** setTimeout fires at once for delays past 2^31-1 ms; longer waits are re-armed. */
const TIMER_DELAY_MAX_MS = 2 ** 31 - 1;

/** Loopback is always named: local clients and probes reach every node there. */
const LOOPBACK_NAMES = { dnsNames: ["localhost"], ips: ["127.0.0.1", "::1"] } as const;
/** Hosts that bind every interface: no client dials them, so they name nothing. */
const WILDCARD_HOSTS = new Set(["0.0.0.0", "::", "0:0:0:0:0:0:0:0"]);

/** The names a node's public certificate carries, as text: DNS names and IP addresses. */
export interface PublicNames {
  readonly dnsNames: readonly string[];
  readonly ips: readonly string[];
}

/**
 * What the certificate must name: loopback, every host the public ports listen on, and the host
 * the node is reached at (its advertised peer host, which Consul clients see as its Address).
 * A wildcard listen host names nothing itself; then the host's own interface addresses and
 * hostname are named, since clients may dial any of them. Pure: the caller reads the interfaces.
 * Bounded by the leaf's limits; the first names (loopback, then the configured hosts) win.
 */
export function publicNamesOf(hosts: readonly string[], local: { readonly hostname: string; readonly interfaceAddresses: readonly string[] }): PublicNames {
  const dnsNames = new Set<string>(LOOPBACK_NAMES.dnsNames);
  const ips = new Set<string>(LOOPBACK_NAMES.ips);
  const add = (host: string): void => {
    const bare = host.replace(/%.*$/, "");
    if (isIP(bare) !== 0) ips.add(bare.toLowerCase());
    else if (bare !== "") dnsNames.add(bare.toLowerCase());
  };
  let wildcard = false;
  for (const host of hosts) {
    if (WILDCARD_HOSTS.has(host)) wildcard = true;
    else add(host);
  }
  if (wildcard) {
    add(local.hostname);
    for (const a of local.interfaceAddresses) add(a);
  }
  return { dnsNames: [...dnsNames].slice(0, LEAF_DNS_NAMES_MAX), ips: [...ips].slice(0, LEAF_IP_ADDRESSES_MAX) };
}

export interface AutoTlsOptions {
  readonly authority: CertificateAuthority;
  readonly nodeId: string;
  readonly names: PublicNames;
  /**
   * Who clients must prove they are: "bundle" for the cluster's trust bundle (it follows the
   * roots), a fixed CA (--tls-client-ca-file), or undefined to ask clients for nothing.
   */
  readonly clientCa: "bundle" | Buffer | undefined;
  readonly logger: Logger;
  /** In [0, 1): the renewal jitter and retry backoff. Tests fix it. */
  readonly random?: () => number;
  readonly now?: () => number;
}

interface HeldCertificate {
  /** The leaf, then its intermediates, PEM: what the handshake presents. */
  readonly chainPem: Buffer;
  readonly keyPem: Buffer;
  readonly serialHex: string;
  readonly notAfterMs: number;
  readonly renewAtMs: number;
  /** The roots' revision it was signed under: any change of the roots (a rotation, a retirement, which shortens the chain) re-signs. */
  readonly caRevision: number;
}

/**
 * This node's certificate for its public ports, and the client CA that goes with it. It decides
 * when to sign (none yet, due, roots changed) and tells its listeners whenever what the
 * handshake should use has changed.
 */
export class AutoTlsCertificate implements TlsMaterialSource {
  private readonly listeners = new Set<(material: PublicTlsMaterial) => void>();
  private readonly unsubscribe: () => void;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly spiffeIdText: string;
  private readonly ipAddresses: readonly Uint8Array[];
  private held: HeldCertificate | undefined;
  private published: PublicTlsMaterial | undefined;
  private timer: NodeJS.Timeout | undefined;
  private refreshScheduled = false;
  private stopped = false;
  private failures = 0;
  private lastFailure: string | undefined;
  /** Ends first()'s wait log. */
  private stopWaiting: () => void = () => undefined;

  constructor(private readonly opts: AutoTlsOptions) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.spiffeIdText = nodeSpiffeId(opts.authority.trustDomain, opts.nodeId);
    this.ipAddresses = opts.names.ips.map(ipAddressBytes);
    // Root changes are applied inside the Raft apply loop: sign after it, batched per turn.
    this.unsubscribe = opts.authority.subscribe(() => this.scheduleRefresh());
    this.scheduleRefresh();
  }

  /** The SPIFFE ID the certificate carries. */
  get spiffeId(): string {
    return this.spiffeIdText;
  }

  current(): PublicTlsMaterial | undefined {
    return this.published;
  }

  onChange(listener: (material: PublicTlsMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * The first certificate. There is no deadline: a node whose cluster has lost its quorum must
   * keep its peer port up so that quorum can return, and exiting would only delay that. The wait
   * costs one retry timer (backoff up to retryMaxMs) and one log line per waitLogIntervalMs,
   * saying why. After stop() it never settles: the node is exiting.
   */
  first(): Promise<PublicTlsMaterial> {
    const ready = this.published;
    if (ready !== undefined) return Promise.resolve(ready);
    const startedMs = this.now();
    return new Promise((resolve) => {
      const log = setInterval(() => {
        this.opts.logger.warn(
          { waitedMs: this.now() - startedMs, reason: this.lastFailure ?? "no answer from the CA yet" },
          "--tls auto: public HTTPS and gRPC are not listening yet; they open once the cluster's CA signs this node's certificate (the cluster needs a leader and its CA)",
        );
      }, autoTlsLimits.waitLogIntervalMs);
      this.stopWaiting = () => clearInterval(log);
      const unsubscribe = this.onChange((material) => {
        clearInterval(log);
        unsubscribe();
        resolve(material);
      });
    });
  }

  stop(): void {
    this.stopped = true;
    this.stopWaiting();
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
    const nowMs = this.now();
    const revision = this.opts.authority.state.revision;
    const held = this.held;
    if (held === undefined || held.caRevision !== revision || nowMs >= held.renewAtMs) {
      try {
        this.held = this.sign(nowMs, revision);
        if (this.failures > 0 && held !== undefined) this.opts.logger.info({ failures: this.failures }, "--tls auto: signing this node's certificate works again");
        this.failures = 0;
        this.lastFailure = undefined;
      } catch (err) {
        // The CA cannot sign (no leader contact, no root yet); the held certificate, if any, goes on serving.
        this.failures++;
        this.lastFailure = errorMessage(err);
        // Before the first certificate this is the normal start (first() logs the wait); a renewal that fails is news.
        if (this.failures === 1 && held === undefined) this.opts.logger.info({ err: this.lastFailure }, "--tls auto: the CA cannot sign this node's first certificate yet; retrying with backoff");
        if (this.failures === 1 && held !== undefined) this.opts.logger.warn({ err: this.lastFailure, serial: held.serialHex, notAfter: new Date(held.notAfterMs).toISOString() }, "--tls auto: cannot renew this node's certificate; it goes on serving the one it holds, retrying with backoff");
        if (held !== undefined && held.notAfterMs <= nowMs) {
          this.opts.logger.error({ serial: held.serialHex, notAfter: new Date(held.notAfterMs).toISOString(), err: this.lastFailure }, "--tls auto: this node's certificate has EXPIRED and cannot be renewed; clients will refuse it until the CA signs again");
        }
      }
    }
    this.publish();
    this.arm(nowMs);
  }

  private sign(nowMs: number, caRevision: number): HeldCertificate {
    const { authority, logger, names } = this.opts;
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const issued = authority.issueNodeCertificate(this.opts.nodeId, publicKey.export({ format: "der", type: "spki" }), { dnsNames: names.dnsNames, ipAddresses: this.ipAddresses });
    const renewAtMs = renewalAtMs(nowMs, issued.notAfterMs, RENEW_WINDOW, this.random());
    logger.info({
      spiffeId: issued.spiffeId, serial: issued.serialHex, rootId: issued.rootId, dnsNames: names.dnsNames, ips: names.ips,
      notAfter: new Date(issued.notAfterMs).toISOString(), renewAt: new Date(renewAtMs).toISOString(),
    }, "--tls auto: this node's public certificate signed by the cluster's CA");
    return {
      chainPem: Buffer.from(chainPemOf(issued)),
      keyPem: Buffer.from(privateKey.export({ format: "pem", type: "pkcs8" })),
      serialHex: issued.serialHex,
      notAfterMs: issued.notAfterMs,
      renewAtMs,
      caRevision,
    };
  }

  /** Tells the listeners when the certificate or the client CA differs from what they were last told. */
  private publish(): void {
    const held = this.held;
    if (held === undefined) return;
    const clientCaPem = this.clientCaPem();
    const last = this.published;
    if (last !== undefined && last.certPem === held.chainPem && sameBytes(last.clientCaPem, clientCaPem)) return;
    const material: PublicTlsMaterial = { certPem: held.chainPem, keyPem: held.keyPem, clientCaPem };
    this.published = material;
    for (const listener of [...this.listeners]) listener(material);
  }

  private clientCaPem(): Buffer | undefined {
    const ca = this.opts.clientCa;
    if (ca !== "bundle") return ca;
    // Every trusted root, old and new alike during a rotation, so SVIDs of either are accepted.
    return Buffer.from(this.opts.authority.state.bundlePem);
  }

  /** The next refresh: a retry with backoff after a failure, else the renewal. */
  private arm(nowMs: number): void {
    let atMs = this.held?.renewAtMs ?? Infinity;
    if (this.failures > 0) atMs = nowMs + backoffDelayMs(this.failures, autoTlsLimits.retryBaseMs, autoTlsLimits.retryMaxMs, this.random);
    if (atMs === Infinity) return;
    this.timer = setTimeout(() => this.refresh(), Math.min(TIMER_DELAY_MAX_MS, Math.max(0, atMs - nowMs)));
    this.timer.unref();
  }
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}
