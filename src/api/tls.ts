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

/** Material that changes while the node runs (--tls auto): renewals and root rotations. */
export interface TlsMaterialSource {
  current(): PublicTlsMaterial | undefined;
  /** Calls `listener` with each new material; returns the function that stops it. */
  onChange(listener: (material: PublicTlsMaterial) => void): () => void;
}

/** What a running HTTPS server's setSecureContext() takes: the certificate, its key, and the client CA. */
export function httpsSecureContext(m: PublicTlsMaterial): SecureContextOptions {
  return { cert: m.certPem, key: m.keyPem, ...(m.clientCaPem === undefined ? {} : { ca: m.clientCaPem }) };
}

/** node:https server options: with a client CA, requestCert and rejectUnauthorized, so no request is served unverified. */
export function httpsServerOptions(m: PublicTlsMaterial): SecureContextOptions & { requestCert: boolean; rejectUnauthorized: boolean } {
  return {
    ...httpsSecureContext(m),
    requestCert: m.clientCaPem !== undefined,
    rejectUnauthorized: m.clientCaPem !== undefined,
  };
}

export function grpcServerCredentials(m: PublicTlsMaterial): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(m.clientCaPem ?? null, [{ private_key: m.keyPem, cert_chain: m.certPem }], m.clientCaPem !== undefined);
}

/**
 * gRPC credentials that follow `source`: ServerCredentials.createSsl is fixed once bound, but
 * grpc-js (1.14) lets a certificate provider push new material, which its server applies with
 * setSecureContext on the running listener, so existing connections keep going and new
 * handshakes see the new certificate. Whether clients must present a certificate is fixed here,
 * from the material current now: it must exist.
 */
export function rotatingGrpcServerCredentials(source: TlsMaterialSource): grpc.ServerCredentials {
  const initial = source.current();
  if (initial === undefined) throw new Error("rotating gRPC credentials need the first TLS material; wait for it before starting the gRPC server");
  const provider = new MaterialCertificateProvider(source);
  const verifyClient = initial.clientCaPem !== undefined;
  // grpc-js 1.14 names the parameters (caProvider, identityProvider, ...) but hands the first to
  // the credentials as the identity provider and the second as the CA provider. One provider
  // serves both, so only the null (no client CA) must go second, where both readings agree.
  return grpc.experimental.createCertificateProviderServerCredentials(provider, verifyClient ? provider : null, verifyClient);
}

/** A grpc-js certificate provider over a TlsMaterialSource: the identity (certificate and key) and the client CA. */
class MaterialCertificateProvider implements grpc.experimental.CertificateProvider {
  private readonly caListeners = new Set<grpc.experimental.CaCertificateUpdateListener>();
  private readonly identityListeners = new Set<grpc.experimental.IdentityCertificateUpdateListener>();

  constructor(private readonly source: TlsMaterialSource) {
    source.onChange((m) => {
      for (const listener of this.identityListeners) listener(identityOf(m));
      const ca = caOf(m);
      if (ca !== null) for (const listener of this.caListeners) listener(ca);
    });
  }

  // grpc-js adds its listener and then its watcher: the first update must come after both, so a
  // tick later, as grpc-js's own file watcher does; sooner, the server would drop every connection.
  addCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.caListeners.add(listener);
    const m = this.source.current();
    const ca = m === undefined ? null : caOf(m);
    if (ca !== null) process.nextTick(listener, ca);
  }

  removeCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.add(listener);
    const m = this.source.current();
    if (m !== undefined) process.nextTick(listener, identityOf(m));
  }

  removeIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.delete(listener);
  }
}

function identityOf(m: PublicTlsMaterial): grpc.experimental.IdentityCertificateUpdate {
  return { certificate: m.certPem, privateKey: m.keyPem };
}

function caOf(m: PublicTlsMaterial): grpc.experimental.CaCertificateUpdate | null {
  return m.clientCaPem === undefined ? null : { caCertificate: m.clientCaPem };
}
