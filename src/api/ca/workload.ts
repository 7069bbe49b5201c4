// The SPIFFE Workload API on a Unix socket (proto/spiffe/workloadapi.proto). Each caller is
// attested as SPIRE's unix workload attestor does: the kernel tells who connected (SO_PEERCRED:
// the caller's effective uid and gid at connect(), which it cannot forge), and the authorizer
// decides from them which identities it holds (src/ca/workload_rules.ts, --workload-attest).
//
// grpc-js never shows a handler its connection, so the socket is ours: a net.Server accepts,
// reads the peer's credentials, stamps them on the socket as its remoteAddress and hands the
// socket to the gRPC server (createConnectionInjector). A handler reads them back from
// call.getPeer(). Only this listener feeds that server, so the stamp cannot come from a client.
//
// The node holds one X.509-SVID per identity, shared by every stream (src/ca/svid_cache.ts); each
// stream is sent those its caller may hold. Each message is the full state (SPIFFE: anything
// missing counts as revoked), sent at once and again after every change.

import { chmodSync, lstatSync, statSync, unlinkSync } from "node:fs";
import { type Server as NetServer, type Socket, connect, createServer } from "node:net";
import { dirname, resolve as resolvePath } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { Authorizer, Caller } from "../../ca/authorizer.js";
import { parseSpiffeId, trustDomainSpiffeId } from "../../ca/spiffe.js";
import { SvidCache, type SvidCacheOptions } from "../../ca/svid_cache.js";
import { LatestStateStream } from "./bundle_grpc.js";
import { loadProtoService } from "../protos.js";
import { errorMessage } from "../../common/errors.js";
import { type PeerCredentials, ensurePeerCredentialsAvailable, peerCredentials } from "../../common/peer_credentials.js";

/** The cache's options, for the identities the socket hands out, and who may hold which. */
export interface WorkloadApiOptions extends SvidCacheOptions {
  readonly socketPath: string;
  /** The socket file's permission bits: who may connect at all (attestation decides what they get). */
  readonly socketMode: number;
  /**
   * Decides, for each caller, which of `identities` it holds. It must decide from the caller's
   * uid and gid alone (socket callers carry no token): its answers are reused per uid/gid.
   */
  readonly authorizer: Authorizer;
}

export interface WorkloadApi {
  close(): Promise<void>;
}

export const workloadLimits = {
  /** Open FetchX509SVID plus FetchX509Bundles streams per node; past it a call gets RESOURCE_EXHAUSTED. */
  streamsMax: 1024,
  /** Open connections to the socket; past it the kernel-accepted connection is closed at once. */
  connectionsMax: 1024,
  /** sockaddr_un holds 108 bytes with the terminating NUL. */
  socketPathBytesMax: 107,
  /** stop() waits this long for streams to end after telling them, then cancels them. */
  closeGraceMs: 1_000,
} as const;

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

function hasSecurityHeader(metadata: grpc.Metadata): boolean {
  const values = metadata.get(SECURITY_HEADER);
  return values.length === 1 && values[0] === "true";
}

const MISSING_HEADER = `the Workload API requires the gRPC metadata "${SECURITY_HEADER}: true" on every call; SPIFFE client libraries send it, add it when calling by hand`;
const JWT_UNIMPLEMENTED = "Cairn's Workload API serves X.509-SVIDs only; JWT-SVIDs are not implemented (use FetchX509SVID)";
const NO_IDENTITIES = "this Workload API socket hands out no identity: start the node with --workload-attest uid:<uid>=<SPIFFE ID>,... (or --workload-identities, for every caller) naming the SPIFFE IDs its workloads may hold";

/**
 * The connection's remoteAddress as this module stamps it, which grpc-js reports as the call's
 * peer: `unix-peer:uid=1000,gid=1000,pid=42`.
 */
const PEER_STAMP = /^unix-peer:uid=(\d+),gid=(\d+),pid=(-1|\d+)$/;

export function peerStamp(creds: PeerCredentials): string {
  return `unix-peer:uid=${creds.uid},gid=${creds.gid},pid=${creds.pid}`;
}

/** The caller of a call on this socket, from the stamp its connection carries; undefined if it has none. */
export function callerOfPeer(peer: string): Caller | undefined {
  const m = PEER_STAMP.exec(peer);
  if (m === null) return undefined;
  const [uid, gid, pid] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return { token: undefined, origin: `workload socket uid ${uid} gid ${gid} pid ${pid}`, uid, gid };
}

/** Binds the Workload API to `unix://<socketPath>`, replacing a stale socket from an earlier run. */
export async function startWorkloadApi(opts: WorkloadApiOptions): Promise<WorkloadApi> {
  // Fail at start, not at the first caller, if the addon that reads SO_PEERCRED is missing.
  ensurePeerCredentialsAvailable();
  const socketPath = await prepareSocketPath(opts.socketPath);
  const { logger, authorizer } = opts;
  const cache = new SvidCache(opts);

  /** The open streams, each with the caller it serves. */
  const svidStreams = new Map<LatestStateStream<X509SvidResponse>, Caller>();
  const bundleStreams = new Map<LatestStateStream<X509BundlesResponse>, Caller>();
  // Made once per change of the cache: the bundles, and for each uid/gid the SVIDs it may hold.
  let bundlesResponse: X509BundlesResponse | undefined;
  let svidResponses = new Map<string, X509SvidResponse | undefined>();

  /** The cache's identities `caller` may hold: the authorizer's decision, the one place it is made. */
  const grantedTo = (caller: Caller): string[] => cache.identities().filter((uri) => authorizer.mayHold(caller, parseSpiffeId(uri)));

  /** The SVIDs `caller` may hold, as one message; undefined until at least one is signed. */
  const svidResponseFor = (caller: Caller): X509SvidResponse | undefined => {
    const key = `${caller.uid}:${caller.gid}`;
    if (svidResponses.has(key)) return svidResponses.get(key);
    const granted = new Set(grantedTo(caller));
    const bundle = cache.bundleDer() ?? Buffer.alloc(0);
    const svids = cache.svids().filter((svid) => granted.has(svid.spiffeId)).map((svid) => ({
      spiffe_id: svid.spiffeId, x509_svid: svid.certificatesDer, x509_svid_key: svid.privateKeyDer, bundle, hint: "",
    }));
    const response = svids.length === 0 ? undefined : { svids };
    svidResponses.set(key, response);
    return response;
  };

  cache.onChange(() => {
    const bundle = cache.bundleDer();
    bundlesResponse = bundle === undefined ? undefined : { bundles: { [trustDomainSpiffeId(opts.authority.trustDomain)]: bundle } };
    svidResponses = new Map();
    for (const [stream, caller] of svidStreams) {
      // Withdrawn identities are revoked by leaving them out; with none left, the stream ends.
      if (grantedTo(caller).length === 0) {
        stream.fail(grpc.status.PERMISSION_DENIED, `this Workload API socket no longer hands out any identity to ${caller.origin}`);
        continue;
      }
      const response = svidResponseFor(caller);
      if (response !== undefined) stream.send(response);
    }
    if (bundlesResponse !== undefined) for (const stream of bundleStreams.keys()) stream.send(bundlesResponse);
  });

  /** Checks what every stream needs; answers the call itself and returns undefined when refused. */
  const admit = <T>(call: grpc.ServerWritableStream<unknown, T>, streams: Map<LatestStateStream<T>, Caller>, needsIdentity: boolean): { stream: LatestStateStream<T>; caller: Caller } | undefined => {
    const stream = new LatestStateStream(call, () => streams.delete(stream));
    if (!hasSecurityHeader(call.metadata)) {
      stream.fail(grpc.status.INVALID_ARGUMENT, MISSING_HEADER);
      return undefined;
    }
    const caller = callerOfPeer(call.getPeer());
    if (caller === undefined) {
      // Every connection is stamped before grpc-js sees it, and grpc-js 1.14 reports a port-less
      // remoteAddress as the peer verbatim: a missing stamp is a bug here (or a grpc-js change), so refuse.
      logger.error({ peer: call.getPeer() }, "a Workload API call arrived on a connection without peer credentials; refusing it");
      stream.fail(grpc.status.INTERNAL, "the node could not tell who is calling; this is a bug in Cairn, please report it");
      return undefined;
    }
    if (needsIdentity && !cache.hasIdentities) {
      stream.fail(grpc.status.PERMISSION_DENIED, NO_IDENTITIES);
      return undefined;
    }
    if (needsIdentity && grantedTo(caller).length === 0) {
      logger.info({ uid: caller.uid, gid: caller.gid, origin: caller.origin }, "Workload API caller matches no rule; refused");
      stream.fail(grpc.status.PERMISSION_DENIED,
        `no identity on this Workload API socket is granted to uid ${caller.uid} (gid ${caller.gid}): to grant one, add uid:${caller.uid}=<SPIFFE ID> or gid:${caller.gid}=<SPIFFE ID> to --workload-attest on this node`);
      return undefined;
    }
    if (svidStreams.size + bundleStreams.size >= workloadLimits.streamsMax) {
      stream.fail(grpc.status.RESOURCE_EXHAUSTED, `this node already serves ${workloadLimits.streamsMax} Workload API streams; close unused ones`);
      return undefined;
    }
    streams.set(stream, caller);
    return { stream, caller };
  };

  const jwtRefusal = (metadata: grpc.Metadata): { code: grpc.status; details: string } =>
    hasSecurityHeader(metadata) ? { code: grpc.status.UNIMPLEMENTED, details: JWT_UNIMPLEMENTED } : { code: grpc.status.INVALID_ARGUMENT, details: MISSING_HEADER };
  const unimplementedUnary = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>): void => callback(jwtRefusal(call.metadata));

  const server = new grpc.Server();
  server.addService(loadProtoService("spiffe/workloadapi.proto", "SpiffeWorkloadAPI"), {
    FetchX509SVID: (call: grpc.ServerWritableStream<unknown, X509SvidResponse>) => {
      const served = admit(call, svidStreams, true);
      if (served === undefined) return;
      // Until the CA can sign, the stream stays open and its first message goes when it can.
      const response = svidResponseFor(served.caller);
      if (response !== undefined) served.stream.send(response);
    },
    FetchX509Bundles: (call: grpc.ServerWritableStream<unknown, X509BundlesResponse>) => {
      const served = admit(call, bundleStreams, false);
      if (served !== undefined && bundlesResponse !== undefined) served.stream.send(bundlesResponse);
    },
    FetchJWTSVID: unimplementedUnary,
    ValidateJWTSVID: unimplementedUnary,
    FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) => {
      const { code, details } = jwtRefusal(call.metadata);
      new LatestStateStream(call, () => undefined).fail(code, details);
    },
  });
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  /** Stamps who connected on the socket and hands it to gRPC; a connection whose peer is unknown is closed. */
  const accept = (socket: Socket): void => {
    let creds: PeerCredentials;
    try {
      creds = peerCredentials(socket);
    } catch (err) {
      logger.warn({ err: errorMessage(err) }, "closed a Workload API connection whose peer credentials cannot be read");
      socket.destroy();
      return;
    }
    Object.defineProperty(socket, "remoteAddress", { value: peerStamp(creds), enumerable: true, writable: false, configurable: false });
    logger.debug({ uid: creds.uid, gid: creds.gid, pid: creds.pid }, "Workload API connection");
    injector.injectConnection(socket);
  };

  const listener = createServer(accept);
  listener.maxConnections = workloadLimits.connectionsMax;
  // After listen, errors are per connection (EMFILE on accept, say): log them; the socket stays up.
  listener.on("error", (err) => logger.error({ err: errorMessage(err) }, "Workload API socket error"));
  try {
    await listen(listener, socketPath);
    chmodSync(socketPath, opts.socketMode);
  } catch (err) {
    cache.stop();
    listener.close();
    server.forceShutdown();
    throw new Error(`--workload-socket ${opts.socketPath}: cannot listen: ${errorMessage(err)}`, { cause: err });
  }
  // server.ts announces the socket to operators; this records what it hands out.
  logger.debug({ socket: socketPath, identities: opts.identities, mode: opts.socketMode.toString(8) }, "Workload API bound");

  let closing: Promise<void> | undefined;
  return {
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        cache.stop();
        // No new connections; closing the listener also removes the socket file.
        listener.close();
        // Streams never end on their own: end them, so clients reconnect (to this node's successor).
        for (const stream of [...svidStreams.keys(), ...bundleStreams.keys()]) stream.fail(grpc.status.UNAVAILABLE, "the Cairn node is shutting down");
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

function listen(listener: NetServer, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(socketPath, () => {
      listener.off("error", reject);
      resolve();
    });
  });
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
