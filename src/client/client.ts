// CairnClient: the library a service embeds to register itself, keep its TTL checks passing,
// and discover other services. It speaks Cairn's native API to any node of the cluster and
// fails over between them; see transport.ts for what is retried, registration.ts for how
// heartbeats are paced, watch.ts for watch() (blocking queries) and view.ts for serviceView() (a
// local view kept by a streaming watch, watch_stream.ts).
//
// Shutdown: close() deregisters every instance this client registered and stops its heartbeats,
// watches and views. deregisterAllOnShutdown() wires close() to SIGTERM and SIGINT for services that
// have no shutdown path of their own.

import type { Logger } from "pino";
import type { CheckInput, Instance, RegisterInput } from "./types.js";
import { parseGoDuration } from "../common/duration.js";
import { errorMessage } from "../common/errors.js";
import { type CertificateOptions, type SignedCertificate, type TrustBundle, WorkloadCertificate, requestSignature, requestTrustBundle } from "./certificates.js";
import { array, decodeAnswer, fields, stringArray, text, whole } from "./decode.js";
import { ClientHttp, type ClientTlsOptions } from "./http.js";
import { CairnOperator } from "./operator.js";
import { Registration, checkIdsOf, deregisterInstance } from "./registration.js";
import { Transport } from "./transport.js";
import { ServiceView, type ServiceViewOptions } from "./view.js";
import { type HealthFilter, ServiceWatch, type WatchOptions, instancesAnswer, instancesPath } from "./watch.js";

export {
  type CertificateOptions,
  type RotationReason,
  type SignedCertificate,
  type TlsMaterial,
  type TrustBundle,
  WorkloadCertificate,
  bundlePem,
  certificateChainPem,
  certificateDefaults,
  createCsr,
  peerSpiffeId,
  tlsClientOptions,
  tlsServerOptions,
} from "./certificates.js";
export { CairnAbortedError, type CairnErrorBody, CairnRequestError, CairnUnavailableError } from "./errors.js";
export { Registration, heartbeatIntervalMs, heartbeatLimits } from "./registration.js";
export { CairnLimitError, CairnProtocolError } from "./errors.js";
export type { ClientTlsOptions } from "./http.js";
export {
  type AclPolicyInfo, type AclPolicyInput, type AclTokenInfo, type AclTokenInput, type CaRootInfo, type CaRoots, CairnOperator, type ClusterMember,
  type ClusterStatus, type MemberRole,
} from "./operator.js";
export { ServiceView, type ServiceViewOptions, type ViewChange, viewDefaults, viewLimits } from "./view.js";
export { CairnWatchStalledError, type WatchStreamStats } from "./watch_stream.js";
export { type HealthFilter, type WatchOptions, watchLimits } from "./watch.js";
export type { CheckInput, CheckKind, HealthStatus, Instance, InstanceCheck, RegisterInput, ResetReason, WatchEvent, Weights } from "./types.js";

export interface CairnClientOptions {
  /** HTTP base URLs of the cluster's nodes, such as http://127.0.0.1:8501. */
  readonly endpoints: readonly string[];
  /** The ACL token's SecretID, sent as X-Consul-Token on every request and watch. None: the anonymous token. */
  readonly token?: string;
  /** For https:// endpoints: the CA that signed the nodes' certificates (default the system's roots). */
  readonly tls?: ClientTlsOptions;
  /**
   * Per attempt; a request is retried on the next node when it runs out. Default 10000: longer than
   * a server's default leader wait (7 s), so a request the server holds through an election is
   * answered there rather than abandoned and sent again elsewhere.
   */
  readonly requestTimeoutMs?: number;
  readonly logger?: Logger;
  /** Attempts per request across all nodes, the first included. Default 7 (about 1.5 s of backoff: longer than an election). */
  readonly attemptsMax?: number;
  /** Backoff before retry n is in [d/2, d) with d = min(backoffMaxMs, backoffBaseMs * 2^(n-1)). Defaults 50 and 1000. */
  readonly backoffBaseMs?: number;
  readonly backoffMaxMs?: number;
  /** Larger answers are refused. Default 64 MiB. */
  readonly responseBytesMax?: number;
  /** Jitter source in [0, 1); tests fix it. Default Math.random. */
  readonly random?: () => number;
}

export type RegisterOptions = RegisterInput & {
  /** Shorthand for one more check, { ttl }, heartbeated automatically. A Go duration: "10s". */
  readonly ttl?: string;
};

export interface InstancesOptions {
  /** passing (the default): every check passing. notCritical: passing or warning. all: everything. */
  readonly health?: HealthFilter;
}

/** A service in GET /v1/registry/services. */
export interface ServiceSummary {
  readonly name: string;
  /** Every tag any of its instances carries. */
  readonly tags: readonly string[];
  /** How many instances it has, whatever their health. */
  readonly instances: number;
}

export interface SignOptions {
  /** Go duration such as "1h"; default the cluster's (1h). */
  readonly ttl?: string;
}

export interface ShutdownOptions {
  /** Give up deregistering after this long, so a stuck cluster cannot hold the process. Default 5000. */
  readonly timeoutMs?: number;
}

export const clientDefaults = {
  requestTimeoutMs: 10_000,
  attemptsMax: 7,
  backoffBaseMs: 50,
  backoffMaxMs: 1_000,
  responseBytesMax: 64 * 1024 * 1024,
  shutdownTimeoutMs: 5_000,
} as const;

const SHUTDOWN_SIGNALS: readonly NodeJS.Signals[] = ["SIGTERM", "SIGINT"];

export class CairnClient {
  /** Membership, the CA's roots and rotation, and ACLs: the operator's calls, on the same nodes and token. */
  readonly operator: CairnOperator;
  private readonly http: ClientHttp;
  private readonly transport: Transport;
  private readonly requestTimeoutMs: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private readonly random: () => number;
  private readonly logger: Logger | undefined;
  private readonly responseBytesMax: number;
  private readonly registrations = new Map<string, Registration>();
  private readonly watches = new Set<ServiceWatch>();
  private readonly views = new Set<ServiceView>();
  private readonly certificateSet = new Set<WorkloadCertificate>();
  private closed = false;
  private closing: Promise<void> | undefined;
  private signalHandlers: ((signal: NodeJS.Signals) => void) | undefined;

  constructor(opts: CairnClientOptions) {
    this.requestTimeoutMs = positive("requestTimeoutMs", opts.requestTimeoutMs ?? clientDefaults.requestTimeoutMs);
    this.backoffBaseMs = positive("backoffBaseMs", opts.backoffBaseMs ?? clientDefaults.backoffBaseMs);
    this.backoffMaxMs = positive("backoffMaxMs", opts.backoffMaxMs ?? clientDefaults.backoffMaxMs);
    this.random = opts.random ?? Math.random;
    this.logger = opts.logger;
    this.responseBytesMax = positive("responseBytesMax", opts.responseBytesMax ?? clientDefaults.responseBytesMax);
    this.http = new ClientHttp({ ...(opts.token === undefined ? {} : { token: opts.token }), ...(opts.tls === undefined ? {} : { tls: opts.tls }) });
    this.transport = new Transport({
      endpoints: opts.endpoints,
      http: this.http,
      requestTimeoutMs: this.requestTimeoutMs,
      attemptsMax: positive("attemptsMax", opts.attemptsMax ?? clientDefaults.attemptsMax),
      backoffBaseMs: this.backoffBaseMs,
      backoffMaxMs: this.backoffMaxMs,
      responseBytesMax: this.responseBytesMax,
      random: this.random,
      logger: this.logger,
    });
    this.operator = new CairnOperator(this.transport);
  }

  /** The node requests currently go to first (it changes on failover). */
  get currentEndpoint(): string {
    return this.transport.currentEndpoint;
  }

  /** Instances this client registered and has not deregistered. */
  get registered(): readonly Registration[] {
    return [...this.registrations.values()];
  }

  /**
   * Registers (or replaces) an instance. With a TTL check (or `ttl`), the client heartbeats it:
   * the first heartbeat is sent before this resolves, so the instance is passing once it does
   * (unless that heartbeat failed; it is then logged and retried).
   */
  async register(input: RegisterOptions): Promise<Registration> {
    if (this.closed) throw new Error("the client is closed; create a new CairnClient to register");
    const { ttl, ...rest } = input;
    const checks: CheckInput[] = [...(rest.checks ?? []), ...(ttl === undefined ? [] : [{ ttl }])];
    const body: RegisterInput = { ...rest, checks };
    const answer = await this.transport.request("POST", "/v1/registry/instances", body);
    const answered = answer.body as { id?: unknown } | undefined;
    const instanceId = typeof answered?.id === "string" && answered.id !== "" ? answered.id : rest.id !== undefined && rest.id !== "" ? rest.id : rest.name;
    const checkIds = checkIdsOf(instanceId, checks);
    const ttlChecks = checks.map((c, i) => ({ id: checkIds[i], ttl: c.ttl })).filter((c) => c.ttl !== undefined && c.ttl !== "");
    const ttlMs = ttlChecks.map((c) => {
      const ms = parseGoDuration(c.ttl as string);
      // The cluster accepted the registration, so it parsed this TTL; the client uses the same parser.
      if (ms === undefined || ms <= 0) throw new Error(`check ${c.id}: the cluster accepted TTL "${c.ttl}" that the client cannot parse`);
      return ms;
    });
    const registration = new Registration({
      transport: this.transport,
      input: body,
      instanceId,
      checkIds,
      ttlCheckIds: ttlChecks.map((c) => c.id),
      ttlMsMin: Math.min(...ttlMs),
      requestTimeoutMs: this.requestTimeoutMs,
      random: this.random,
      logger: this.logger,
      onDeregistered: (r) => {
        if (this.registrations.get(r.id) === r) this.registrations.delete(r.id);
      },
    });
    // Registering an id again replaces the instance: the old heartbeats would use stale check ids.
    this.registrations.get(instanceId)?.stopHeartbeats();
    this.registrations.set(instanceId, registration);
    await registration.startHeartbeats();
    return registration;
  }

  /** A linearizable read of a service's instances. */
  async instances(service: string, opts: InstancesOptions = {}): Promise<Instance[]> {
    const path = instancesPath(service, opts.health ?? "passing");
    return instancesAnswer((await this.transport.request("GET", path)).body, path).instances;
  }

  /** A linearizable read of every service: its name, tags and instance count. */
  async services(): Promise<ServiceSummary[]> {
    const path = "/v1/registry/services";
    return decodeAnswer(await this.transport.request("GET", path), `GET ${path}`, (body) => array(fields(body, "answer").services, "services").map((v, i) => {
      const at = `services[${i}]`;
      const o = fields(v, at);
      return { name: text(o, "name", at), tags: stringArray(o.tags, `${at}.tags`), instances: whole(o, "instances", at) };
    }));
  }

  /**
   * Removes an instance and its checks, whoever registered it. Rejects with CairnRequestError 404
   * when the cluster holds no such instance. For an instance this client registered, prefer
   * its Registration's deregister(), which also stops its heartbeats.
   */
  async deregister(instanceId: string): Promise<void> {
    await deregisterInstance(this.transport, instanceId);
  }

  /** Has the cluster sign a PKCS#10 CSR (PEM) whose one URI SAN is the SPIFFE ID asked for; nothing is renewed. */
  signCsr(csr: string, opts: SignOptions = {}): Promise<SignedCertificate> {
    return requestSignature(this.transport, csr, opts.ttl);
  }

  /** The trust bundle now: every root a peer's certificate may chain to, and the trust domain. */
  trustBundle(): Promise<TrustBundle> {
    return requestTrustBundle(this.transport);
  }

  /**
   * Calls onChange with the service's instances now, then whenever they change, until the
   * returned function is called (or close()). Failures are retried with backoff and reported to
   * opts.onError; a refused query (4xx other than 429) ends the watch.
   */
  watch(service: string, onChange: (instances: Instance[], index: number) => void | Promise<void>, opts: WatchOptions = {}): () => void {
    if (this.closed) throw new Error("the client is closed; create a new CairnClient to watch");
    const w = new ServiceWatch({
      transport: this.transport,
      requestTimeoutMs: this.requestTimeoutMs,
      backoffBaseMs: this.backoffBaseMs,
      backoffMaxMs: this.backoffMaxMs,
      random: this.random,
      logger: this.logger,
    }, service, onChange, opts);
    this.watches.add(w);
    void w.done.finally(() => this.watches.delete(w));
    return () => w.stop();
  }

  /**
   * A local view of `service`'s instances (or several services'), kept current by one streaming
   * watch that resumes on another node when its node dies or stalls, missing nothing and applying
   * nothing twice. It is ready once it holds the first complete state; close() (its own, or the
   * client's) stops it. A name the cluster refuses ends it: `ready` rejects and onError is told.
   */
  serviceView(service: string | readonly string[], opts: ServiceViewOptions = {}): ServiceView {
    const services = typeof service === "string" ? [service] : [...service];
    if (services.length === 0) throw new RangeError("serviceView: name at least one service, or use catalogView() to watch every service");
    return this.openView(services, opts);
  }

  /** A view of every service's instances, as serviceView(). */
  catalogView(opts: ServiceViewOptions = {}): ServiceView {
    return this.openView([], opts);
  }

  private openView(services: readonly string[], opts: ServiceViewOptions): ServiceView {
    if (this.closed) throw new Error("the client is closed; create a new CairnClient to watch");
    const view = new ServiceView({
      endpoints: this.transport.endpoints,
      http: this.http,
      // Where requests go now: the node that last answered.
      firstEndpoint: Math.max(0, this.transport.endpoints.indexOf(this.transport.currentEndpoint)),
      eventCharsMax: this.responseBytesMax,
      backoffBaseMs: this.backoffBaseMs,
      backoffMaxMs: this.backoffMaxMs,
      random: this.random,
      logger: this.logger,
    }, services, opts);
    this.views.add(view);
    void view.done.finally(() => this.views.delete(view));
    return view;
  }

  /**
   * A certificate for `opts.spiffeId`, signed by the cluster's CA for a key made here, renewed
   * before it expires and after root rotations, with TLS options that follow it. Resolves once
   * the first certificate is held. close() (its own, or the client's) stops it.
   */
  async certificates(opts: CertificateOptions): Promise<WorkloadCertificate> {
    if (this.closed) throw new Error("the client is closed; create a new CairnClient for certificates");
    const certificate = new WorkloadCertificate({ transport: this.transport, requestTimeoutMs: this.requestTimeoutMs, random: this.random, logger: this.logger }, opts);
    this.certificateSet.add(certificate);
    try {
      await certificate.start();
    } catch (err) {
      this.certificateSet.delete(certificate);
      await certificate.close();
      throw err;
    }
    return certificate;
  }

  /**
   * Stops every watch, view and heartbeat and deregisters every instance this client registered.
   * Idempotent. Rejects, after trying them all, if some deregistration failed.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    for (const w of this.watches) w.stop();
    for (const v of this.views) v.close();
    await Promise.all([...this.certificateSet].map((c) => c.close()));
    const regs = [...this.registrations.values()];
    const results = await Promise.allSettled(regs.map((r) => r.deregister()));
    await Promise.all([...this.watches].map((w) => w.done));
    await Promise.all([...this.views].map((v) => v.done));
    this.uninstallSignalHandlers();
    const failed = results.flatMap((r, i) => r.status === "rejected" ? [`${regs[i]?.id}: ${errorMessage(r.reason)}`] : []);
    if (failed.length > 0) throw new Error(`close: ${failed.length} of ${regs.length} instance(s) could not be deregistered: ${failed.join("; ")}`);
  }

  /**
   * On the first SIGTERM or SIGINT, close() (bounded by timeoutMs), then raise the signal again
   * so the process ends as it would have. If the process has other handlers for that signal,
   * they own the exit and the signal is not raised again. Installing twice does nothing.
   */
  deregisterAllOnShutdown(opts: ShutdownOptions = {}): void {
    if (this.signalHandlers !== undefined) return;
    const timeoutMs = opts.timeoutMs ?? clientDefaults.shutdownTimeoutMs;
    const handler = (signal: NodeJS.Signals): void => {
      this.uninstallSignalHandlers();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          this.logger?.warn({ signal, timeoutMs }, "deregistration on shutdown timed out");
          resolve();
        }, timeoutMs);
      });
      void Promise.race([this.close(), deadline])
        .catch((err: unknown) => this.logger?.error({ signal, err: errorMessage(err) }, "deregistration on shutdown failed"))
        .finally(() => {
          clearTimeout(timer);
          if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
        });
    };
    this.signalHandlers = handler;
    for (const s of SHUTDOWN_SIGNALS) process.once(s, handler);
  }

  private uninstallSignalHandlers(): void {
    if (this.signalHandlers === undefined) return;
    for (const s of SHUTDOWN_SIGNALS) process.removeListener(s, this.signalHandlers);
  }
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name}: ${value} must be a positive number`);
  return value;
}
