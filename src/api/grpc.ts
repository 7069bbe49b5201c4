// The public gRPC server. It serves the standard health check (grpc.health.v1), which load
// balancers and Kubernetes probes speak, and whatever services the caller registers on it before
// it binds (the CA's trust bundle watch today; xDS later). The SPIFFE Workload API has a server
// of its own, on a Unix socket.

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { AclService } from "../acl/acl.js";
import { GrpcAclGuard, type GuardedRegistrar } from "./acl/grpc.js";

/** grpc.health.v1.HealthCheckResponse is one enum field: 1 = SERVING, 2 = NOT_SERVING. */
const SERVING = Buffer.from([0x08, 0x01]);
const NOT_SERVING = Buffer.from([0x08, 0x02]);

const identity = (b: Buffer): Buffer => b;

const healthService: grpc.ServiceDefinition = {
  Check: {
    path: "/grpc.health.v1.Health/Check",
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

export interface PublicGrpcServer {
  readonly port: number;
  /** Every method served, by path, with its ACL rule as one line. */
  readonly methods: ReadonlyMap<string, string>;
  stop(): Promise<void>;
}

/**
 * Streams (watches) never end on their own, so stop() waits this long for calls to finish and
 * then cancels the rest: their clients reconnect to another node.
 */
const STOP_GRACE_MS = 1000;

/**
 * `serving` says whether the node can answer right now (it knows a leader). `register` adds
 * further services; it runs before the server binds, so no call can arrive for a service that
 * is not there yet.
 */
export async function startPublicGrpc(
  address: string,
  serving: () => boolean,
  logger: Logger,
  register?: (server: GuardedRegistrar) => void,
  acl?: AclService,
  /** TLS (api/tls.ts); plaintext when absent. */
  credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
  /** Run around every call, in order (the node's metrics). */
  interceptors: readonly grpc.ServerInterceptor[] = [],
): Promise<PublicGrpcServer> {
  const server = new grpc.Server({ interceptors: [...interceptors] });
  const guard = new GrpcAclGuard(acl);
  guard.attach(server);
  guard.addService(healthService, {
    Check: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      callback(null, serving() ? SERVING : NOT_SERVING);
    },
  }, { Check: { open: "load balancers and probes ask it without a token, as of Consul's /v1/status" } });
  register?.(guard);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, credentials, (err, bound) => (err === null ? resolve(bound) : reject(err)));
  });
  logger.info({ address, port, tls: credentials._isSecure() }, "public gRPC listening");
  return {
    port,
    methods: guard.methods,
    stop: () =>
      new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, STOP_GRACE_MS);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}
