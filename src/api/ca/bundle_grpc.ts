// cairn.ca.v1.TrustBundle on the public gRPC port: the CA's roots as a stream, for proxies and
// control planes that verify workloads but hold no identity themselves. Also what the Workload API
// shares with it: a server stream that carries only the latest full state.

import * as grpc from "@grpc/grpc-js";
import type { CertificateAuthority } from "../../ca/authority.js";
import type { CaRoot } from "../../ca/state.js";
import { loadProtoService } from "../protos.js";
import type { GuardedRegistrar } from "../acl/grpc.js";

/**
 * One server stream whose every message is the full current state, so a newer message makes an
 * unsent older one worthless. While the client reads slowly, only the newest unsent message is
 * kept: a slow reader costs one message of memory, never a growing queue (etcd #17529).
 */
export class LatestStateStream<T> {
  private pending: T | undefined;
  private blocked = false;
  private ended = false;

  constructor(
    private readonly call: grpc.ServerWritableStream<unknown, T>,
    private readonly onEnd: () => void,
  ) {
    call.on("drain", () => {
      this.blocked = false;
      const next = this.pending;
      this.pending = undefined;
      if (next !== undefined) this.send(next);
    });
    const end = (): void => this.finish();
    call.on("cancelled", end);
    call.on("finish", end);
    call.on("close", end);
    call.on("error", end);
  }

  send(message: T): void {
    if (this.ended) return;
    if (this.blocked) {
      this.pending = message;
      return;
    }
    this.blocked = !this.call.write(message);
  }

  /** Ends the stream with a status other than OK; `details` is what the client reads. */
  fail(code: grpc.status, details: string): void {
    if (this.ended) return;
    this.finish();
    this.call.emit("error", { code, details });
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.pending = undefined;
    this.onEnd();
  }
}

/** Open TrustBundle.Watch streams per node, at most; past it a new one is refused with RESOURCE_EXHAUSTED. */
export const BUNDLE_WATCHES_MAX = 4096;

export interface RootMessage {
  readonly id: string;
  readonly certificate_pem: string;
  readonly active: boolean;
  readonly not_before_unix_ms: number;
  readonly not_after_unix_ms: number;
}

/** cairn.ca.v1.Bundle as proto-loader reads and writes it. */
export interface BundleMessage {
  readonly trust_domain: string;
  readonly revision: number;
  readonly roots: readonly RootMessage[];
}

export function bundleMessage(trustDomain: string, revision: number, roots: readonly CaRoot[]): BundleMessage {
  return {
    trust_domain: trustDomain,
    revision,
    roots: roots.map((r) => ({
      id: r.id,
      certificate_pem: r.rootCertificatePem,
      active: r.active,
      not_before_unix_ms: r.notBeforeMs,
      not_after_unix_ms: r.notAfterMs,
    })),
  };
}

export function addTrustBundleService(server: GuardedRegistrar, authority: CertificateAuthority): void {
  const streams = new Set<LatestStateStream<BundleMessage>>();
  let unsubscribe: (() => void) | undefined;
  let flushScheduled = false;
  // Several changes applied in one event-loop turn become one message per stream.
  const flush = (): void => {
    flushScheduled = false;
    const roots = authority.state.roots;
    if (roots.length === 0) return;
    const message = bundleMessage(authority.trustDomain, authority.state.revision, roots);
    for (const s of streams) s.send(message);
  };
  const onChange = (): void => {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(flush);
  };

  server.addService(loadProtoService("cairn/ca/v1/bundle.proto", "cairn.ca.v1.TrustBundle"), {
    Watch: (call: grpc.ServerWritableStream<unknown, BundleMessage>) => {
      const stream = new LatestStateStream(call, () => {
        streams.delete(stream);
        if (streams.size === 0) {
          unsubscribe?.();
          unsubscribe = undefined;
        }
      });
      if (streams.size >= BUNDLE_WATCHES_MAX) {
        stream.fail(grpc.status.RESOURCE_EXHAUSTED, `this node already serves ${BUNDLE_WATCHES_MAX} trust bundle watches; watch through another node`);
        return;
      }
      streams.add(stream);
      unsubscribe ??= authority.subscribe(onChange);
      // Before the cluster has created its CA there is nothing to trust yet: the first message
      // waits for the first root rather than announcing an empty bundle.
      const roots = authority.state.roots;
      if (roots.length > 0) stream.send(bundleMessage(authority.trustDomain, authority.state.revision, roots));
    },
  }, { Watch: { open: "the trust bundle is public, as Consul's CA roots" } });
}
