// The public gRPC server. Today it serves the standard health check (grpc.health.v1), which
// load balancers and Kubernetes probes speak; the Workload API and xDS will join it here.

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";

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
  stop(): Promise<void>;
}

/** `serving` says whether the node can answer right now (it knows a leader). */
export async function startPublicGrpc(address: string, serving: () => boolean, logger: Logger): Promise<PublicGrpcServer> {
  const server = new grpc.Server();
  server.addService(healthService, {
    Check: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      callback(null, serving() ? SERVING : NOT_SERVING);
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, bound) => (err === null ? resolve(bound) : reject(err)));
  });
  logger.info({ address, port }, "public gRPC listening");
  return {
    port,
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}
