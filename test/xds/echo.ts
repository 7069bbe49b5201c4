// A tiny gRPC service for the xDS tests: one unary method that answers the serving instance's
// name, so a client can tell which instance each call reached. Messages are raw bytes (UTF-8).

import * as grpc from "@grpc/grpc-js";

const bytes = (b: Buffer): Buffer => b;

export const echoService = {
  Name: {
    path: "/cairn.test.Echo/Name",
    requestStream: false,
    responseStream: false,
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
  },
} satisfies grpc.ServiceDefinition;

export interface EchoServer {
  readonly name: string;
  readonly port: number;
  close(): void;
}

/** Serves Echo/Name on a loopback port the kernel picks. */
export async function startEcho(name: string): Promise<EchoServer> {
  const server = new grpc.Server();
  server.addService(echoService, {
    Name: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, Buffer.from(name)),
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, bound) => (err === null ? resolve(bound) : reject(err)));
  });
  return { name, port, close: () => server.forceShutdown() };
}
