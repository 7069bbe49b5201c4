// The SPIFFE Workload API on a Unix socket (proto/spiffe/workloadapi.proto). Whoever can reach
// the socket receives the identities the node is configured to hand out there, so the socket's
// directory and mode are the access control.
//
// The node holds one X.509-SVID per identity, shared by every stream: the key pair is made here,
// the CA signs it locally (no Raft round trip), and it is renewed at about half its lifetime and
// at once when the roots change. Each stream message is the full state (SPIFFE: anything missing
// counts as revoked), sent at once and again after every change.

import { type KeyObject, X509Certificate, generateKeyPairSync } from "node:crypto";
import { chmodSync, lstatSync, statSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { dirname, resolve as resolvePath } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { CaInputError, type CertificateAuthority } from "../../ca/authority.js";
import type { Authorizer, Caller } from "../../ca/authorizer.js";
import { trustDomainSpiffeId } from "../../ca/spiffe.js";
import { LatestStateStream } from "./bundle_grpc.js";
import { loadProtoService } from "../protos.js";
import { backoffDelayMs } from "../../common/backoff.js";
import { errorMessage } from "../../common/errors.js";
import { renewalAtMs, renewalWindowAround } from "../../common/renewal.js";

export interface WorkloadApiOptions {
  readonly socketPath: string;
  readonly authority: CertificateAuthority;
  readonly authorizer: Authorizer;
  /** The SPIFFE IDs the socket hands out (each still subject to `authorizer`). */
  readonly identities: readonly string[];
  readonly logger: Logger;
  /** In [0, 1): the renewal jitter. Tests fix it. */
  readonly random?: () => number;
  readonly now?: () => number;
}

export interface WorkloadApi {
  close(): Promise<void>;
}

export const workloadLimits = {
  /** Open FetchX509SVID plus FetchX509Bundles streams per node; past it a call gets RESOURCE_EXHAUSTED. */
  streamsMax: 1024,
  /** SPIRE's choice: renew at half the remaining lifetime, ±10% so a fleet does not renew in step. */
  renewFraction: 0.5,
  renewJitterFraction: 0.1,
  /** Backoff while the CA cannot sign (no CA yet, no leader contact): doubles from base to max. */
  retryBaseMs: 100,
  retryMaxMs: 5_000,
  /** Owner and group may connect; others may not. */
  socketMode: 0o770,
  /** sockaddr_un holds 108 bytes with the terminating NUL. */
  socketPathBytesMax: 107,
  /** stop() waits this long for streams to end after telling them, then cancels them. */
  closeGraceMs: 1_000,
} as const;

const RENEW_WINDOW = renewalWindowAround(workloadLimits.renewFraction, workloadLimits.renewJitterFraction);

/** setTimeout fires at once for delays past 2^31-1 ms; longer waits are re-armed. */
const TIMER_DELAY_MAX_MS = 2 ** 31 - 1;

const SOCKET_CALLER: Caller = { token: undefined, origin: "workload socket" };

/** The security header every Workload API call carries, so a browser or SSRF cannot call it by accident. */
const SECURITY_HEADER = "workload.spiffe.io";

interface X509SvidMessage {
  readonly spiffe_id: string;
  readonly x509_svid: Buffer;
  readonly x509_svid_key: Buffer;
  readonly bundle: Buffer;
  readonly hint: string;
}

interface X509SvidResponse {
  readonly svids: readonly X509SvidMessage[];
}

interface X509BundlesResponse {
  readonly bundles: Readonly<Record<string, Buffer>>;
}

interface HeldSvid {
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

/**
 * The node's SVIDs for the socket's identities. It decides when to sign (missing, due, roots
 * changed) and tells its listeners once per refresh that changed anything.
 */
class SvidCache {
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
  /** The roots' revision the last message's bundle came from. */
  private bundleRevision = -1;
  private entitledIds: readonly string[] = [];
  private svidResponse: X509SvidResponse | undefined;
  private bundlesResponse: X509BundlesResponse | undefined;

  constructor(private readonly opts: WorkloadApiOptions) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.entitledIds = this.entitled();
    // Root changes are applied inside the Raft apply loop: sign after it, batched per turn.
    this.unsubscribe = opts.authority.subscribe(() => this.scheduleRefresh());
    this.scheduleRefresh();
  }

  /** Whether the socket hands out any identity at all (SPIFFE: otherwise PermissionDenied). */
  get hasIdentities(): boolean {
    return this.entitledIds.length > 0;
  }

  /** The full X.509-SVID state, or undefined until the first SVID is signed. */
  svids(): X509SvidResponse | undefined {
    return this.svidResponse;
  }

  /** The trust bundle, or undefined until the cluster has created its CA. */
  bundles(): X509BundlesResponse | undefined {
    return this.bundlesResponse;
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
      if (this.failures === 1) logger.warn({ err: failure }, "cannot sign X.509-SVIDs for the Workload API yet; retrying with backoff");
      else logger.debug({ err: failure, failures: this.failures }, "X.509-SVID signing still failing");
    } else if (this.failures > 0) {
      logger.info({ failures: this.failures }, "X.509-SVID signing works again");
      this.failures = 0;
    }
    if (changed) this.publish();
    this.arm(nowMs);
  }

  /** Configured identities this CA signs for and the authorizer allows; each refusal is logged once. */
  private entitled(): string[] {
    const ids: string[] = [];
    for (const uri of this.opts.identities) {
      let reason: string | undefined;
      try {
        const id = this.opts.authority.workloadId(uri);
        if (!this.opts.authorizer.mayHold(SOCKET_CALLER, id)) reason = `the authorizer (${this.opts.authorizer.description}) does not let the workload socket hold it`;
      } catch (err) {
        if (!(err instanceof CaInputError)) throw err;
        reason = err.message;
      }
      if (reason === undefined) {
        ids.push(uri);
        this.refused.delete(uri);
      } else if (!this.refused.has(uri)) {
        this.refused.add(uri);
        this.opts.logger.error({ spiffeId: uri, reason }, "the Workload API will not hand out this identity");
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
    logger.info({ spiffeId, serial: issued.serialHex, rootId: issued.rootId, notAfter: new Date(issued.notAfterMs).toISOString() }, "X.509-SVID signed for the Workload API");
    return svid;
  }

  private publish(): void {
    const roots = this.opts.authority.state.roots;
    const bundle = Buffer.concat(roots.map((r) => pemToDer(r.rootCertificatePem)));
    this.bundlesResponse = roots.length === 0 ? undefined : { bundles: { [trustDomainSpiffeId(this.opts.authority.trustDomain)]: bundle } };
    const svids = this.entitledIds.flatMap((id) => {
      const svid = this.held.get(id);
      return svid === undefined ? [] : [{ spiffe_id: id, x509_svid: svid.certificatesDer, x509_svid_key: svid.privateKeyDer, bundle, hint: "" }];
    });
    this.svidResponse = svids.length === 0 ? undefined : { svids };
    for (const listener of [...this.listeners]) listener();
  }

  /** The next refresh: a retry with backoff after a failure, else the earliest renewal. */
  private arm(nowMs: number): void {
    let atMs = Infinity;
    if (this.failures > 0) atMs = nowMs + backoffDelayMs(this.failures, workloadLimits.retryBaseMs, workloadLimits.retryMaxMs, this.random);
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

function hasSecurityHeader(metadata: grpc.Metadata): boolean {
  const values = metadata.get(SECURITY_HEADER);
  return values.length === 1 && values[0] === "true";
}

const MISSING_HEADER = `the Workload API requires the gRPC metadata "${SECURITY_HEADER}: true" on every call; SPIFFE client libraries send it, add it when calling by hand`;
const JWT_UNIMPLEMENTED = "Cairn's Workload API serves X.509-SVIDs only; JWT-SVIDs are not implemented (use FetchX509SVID)";

/** Binds the Workload API to `unix://<socketPath>`, replacing a stale socket from an earlier run. */
export async function startWorkloadApi(opts: WorkloadApiOptions): Promise<WorkloadApi> {
  const socketPath = await prepareSocketPath(opts.socketPath);
  const { logger } = opts;
  const cache = new SvidCache(opts);
  const svidStreams = new Set<LatestStateStream<X509SvidResponse>>();
  const bundleStreams = new Set<LatestStateStream<X509BundlesResponse>>();
  cache.onChange(() => {
    const svids = cache.svids();
    if (!cache.hasIdentities) {
      for (const s of svidStreams) s.fail(grpc.status.PERMISSION_DENIED, "this Workload API socket no longer hands out any identity");
    } else if (svids !== undefined) {
      for (const s of svidStreams) s.send(svids);
    }
    const bundles = cache.bundles();
    if (bundles !== undefined) for (const s of bundleStreams) s.send(bundles);
  });

  /** Checks what every stream needs; answers the call itself and returns undefined when refused. */
  const admit = <T>(call: grpc.ServerWritableStream<unknown, T>, streams: Set<LatestStateStream<T>>, needsIdentity: boolean): LatestStateStream<T> | undefined => {
    const stream = new LatestStateStream(call, () => streams.delete(stream));
    if (!hasSecurityHeader(call.metadata)) {
      stream.fail(grpc.status.INVALID_ARGUMENT, MISSING_HEADER);
      return undefined;
    }
    if (needsIdentity && !cache.hasIdentities) {
      stream.fail(grpc.status.PERMISSION_DENIED, "this Workload API socket hands out no identity: start the node with --workload-identities naming the SPIFFE IDs its workloads may hold");
      return undefined;
    }
    if (svidStreams.size + bundleStreams.size >= workloadLimits.streamsMax) {
      stream.fail(grpc.status.RESOURCE_EXHAUSTED, `this node already serves ${workloadLimits.streamsMax} Workload API streams; close unused ones`);
      return undefined;
    }
    streams.add(stream);
    return stream;
  };

  const jwtRefusal = (metadata: grpc.Metadata): { code: grpc.status; details: string } =>
    hasSecurityHeader(metadata) ? { code: grpc.status.UNIMPLEMENTED, details: JWT_UNIMPLEMENTED } : { code: grpc.status.INVALID_ARGUMENT, details: MISSING_HEADER };
  const unimplementedUnary = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>): void => callback(jwtRefusal(call.metadata));

  const server = new grpc.Server();
  server.addService(loadProtoService("spiffe/workloadapi.proto", "SpiffeWorkloadAPI"), {
    FetchX509SVID: (call: grpc.ServerWritableStream<unknown, X509SvidResponse>) => {
      const stream = admit(call, svidStreams, true);
      // Until the CA can sign, the stream stays open and its first message goes when it can.
      const svids = cache.svids();
      if (stream !== undefined && svids !== undefined) stream.send(svids);
    },
    FetchX509Bundles: (call: grpc.ServerWritableStream<unknown, X509BundlesResponse>) => {
      const stream = admit(call, bundleStreams, false);
      const bundles = cache.bundles();
      if (stream !== undefined && bundles !== undefined) stream.send(bundles);
    },
    FetchJWTSVID: unimplementedUnary,
    ValidateJWTSVID: unimplementedUnary,
    FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      const { code, details } = jwtRefusal(call.metadata);
      new LatestStateStream(call, () => undefined).fail(code, details);
    },
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err === null ? resolve() : reject(err)));
    });
    chmodSync(socketPath, workloadLimits.socketMode);
  } catch (err) {
    cache.stop();
    server.forceShutdown();
    throw new Error(`--workload-socket ${opts.socketPath}: cannot listen: ${errorMessage(err)}`, { cause: err });
  }
  // server.ts announces the socket to operators; this records what it hands out.
  logger.debug({ socket: socketPath, identities: opts.identities }, "Workload API bound");

  let closing: Promise<void> | undefined;
  return {
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        cache.stop();
        // Streams never end on their own: end them, so clients reconnect (to this node's successor).
        for (const s of [...svidStreams, ...bundleStreams]) s.fail(grpc.status.UNAVAILABLE, "the Cairn node is shutting down");
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, workloadLimits.closeGraceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      return closing;
    },
  };
}

/**
 * An absolute socket path that is free to bind: its directory must exist (its permissions are
 * part of the access control, so Cairn does not create it), and a socket left by a node that did
 * not shut down cleanly is removed, but never a live one or a file that is not a socket.
 */
async function prepareSocketPath(given: string): Promise<string> {
  const path = resolvePath(given);
  const problem = (what: string): Error => new Error(`--workload-socket ${given}: ${what}`);
  if (Buffer.byteLength(path) > workloadLimits.socketPathBytesMax) {
    throw problem(`the path is ${Buffer.byteLength(path)} bytes long; Unix sockets allow at most ${workloadLimits.socketPathBytesMax}: choose a shorter one`);
  }
  const dir = dirname(path);
  let dirIsDirectory = false;
  try {
    dirIsDirectory = statSync(dir).isDirectory();
  } catch {
    // Reported just below, with what to do.
  }
  if (!dirIsDirectory) throw problem(`the directory ${dir} does not exist; create it first, with permissions that admit only the workloads that may fetch identities`);
  let existing;
  try {
    existing = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return path;
    throw problem(`cannot inspect it: ${errorMessage(err)}`);
  }
  if (!existing.isSocket()) throw problem("something that is not a socket is in the way; remove it or choose another path");
  if (await socketAnswers(path)) throw problem("another process is serving on this socket; stop it or choose another path");
  unlinkSync(path);
  return path;
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    const done = (answers: boolean): void => {
      socket.destroy();
      resolve(answers);
    };
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
    socket.setTimeout(1_000, () => done(false));
  });
}
