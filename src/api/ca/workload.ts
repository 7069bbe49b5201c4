// The SPIFFE Workload API on a Unix socket (proto/spiffe/workloadapi.proto). Whoever can reach
// the socket receives the identities the node is configured to hand out there, so the socket's
// directory and mode are the access control.
//
// The node holds one X.509-SVID per identity, shared by every stream (src/ca/svid_cache.ts). Each
// stream message is the full state (SPIFFE: anything missing counts as revoked), sent at once and
// again after every change.

import { chmodSync, lstatSync, statSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import { dirname, resolve as resolvePath } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { trustDomainSpiffeId } from "../../ca/spiffe.js";
import { SvidCache, type SvidCacheOptions } from "../../ca/svid_cache.js";
import { LatestStateStream } from "./bundle_grpc.js";
import { loadProtoService } from "../protos.js";
import { errorMessage } from "../../common/errors.js";

/** The cache's options, for the identities the socket hands out; the socket is their caller. */
export interface WorkloadApiOptions extends Omit<SvidCacheOptions, "caller"> {
  readonly socketPath: string;
}

export interface WorkloadApi {
  close(): Promise<void>;
}

export const workloadLimits = {
  /** Open FetchX509SVID plus FetchX509Bundles streams per node; past it a call gets RESOURCE_EXHAUSTED. */
  streamsMax: 1024,
  /** Owner and group may connect; others may not. */
  socketMode: 0o770,
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

/** Binds the Workload API to `unix://<socketPath>`, replacing a stale socket from an earlier run. */
export async function startWorkloadApi(opts: WorkloadApiOptions): Promise<WorkloadApi> {
  const socketPath = await prepareSocketPath(opts.socketPath);
  const { logger } = opts;
  const cache = new SvidCache({ ...opts, caller: { token: undefined, origin: "workload socket" } });
  const svidStreams = new Set<LatestStateStream<X509SvidResponse>>();
  const bundleStreams = new Set<LatestStateStream<X509BundlesResponse>>();
  // The messages every stream is sent, made once per change of the cache.
  let svidResponse: X509SvidResponse | undefined;
  let bundlesResponse: X509BundlesResponse | undefined;
  cache.onChange(() => {
    const bundle = cache.bundleDer();
    bundlesResponse = bundle === undefined ? undefined : { bundles: { [trustDomainSpiffeId(opts.authority.trustDomain)]: bundle } };
    const svids = cache.svids().map((svid) => ({
      spiffe_id: svid.spiffeId, x509_svid: svid.certificatesDer, x509_svid_key: svid.privateKeyDer, bundle: bundle ?? Buffer.alloc(0), hint: "",
    }));
    svidResponse = svids.length === 0 ? undefined : { svids };
    if (!cache.hasIdentities) {
      for (const s of svidStreams) s.fail(grpc.status.PERMISSION_DENIED, "this Workload API socket no longer hands out any identity");
    } else if (svidResponse !== undefined) {
      for (const s of svidStreams) s.send(svidResponse);
    }
    if (bundlesResponse !== undefined) for (const s of bundleStreams) s.send(bundlesResponse);
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
      if (stream !== undefined && svidResponse !== undefined) stream.send(svidResponse);
    },
    FetchX509Bundles: (call: grpc.ServerWritableStream<unknown, X509BundlesResponse>) => {
      const stream = admit(call, bundleStreams, false);
      if (stream !== undefined && bundlesResponse !== undefined) stream.send(bundlesResponse);
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
