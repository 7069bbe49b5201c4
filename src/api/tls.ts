// TLS on the public ports: what HTTPS (fastify) and the public gRPC server are given, from the
// same material, so both ports always present the same certificate and ask the same of clients.

import * as grpc from "@grpc/grpc-js";
import type { SecureContextOptions } from "node:tls";

export interface PublicTlsMaterial {
  readonly certPem: Buffer;
  readonly keyPem: Buffer;
  /** When set, every client must present a certificate that chains to it; the handshake refuses the rest. */
  readonly clientCaPem: Buffer | undefined;
}

/** node:https server options: with a client CA, requestCert and rejectUnauthorized, so no request is served unverified. */
export function httpsServerOptions(m: PublicTlsMaterial): SecureContextOptions & { requestCert: boolean; rejectUnauthorized: boolean } {
  return {
    cert: m.certPem,
    key: m.keyPem,
    ...(m.clientCaPem === undefined ? {} : { ca: m.clientCaPem }),
    requestCert: m.clientCaPem !== undefined,
    rejectUnauthorized: m.clientCaPem !== undefined,
  };
}

export function grpcServerCredentials(m: PublicTlsMaterial): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(m.clientCaPem ?? null, [{ private_key: m.keyPem, cert_chain: m.certPem }], m.clientCaPem !== undefined);
}
