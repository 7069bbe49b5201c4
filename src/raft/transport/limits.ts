// The peer transport's bounds: every queue, buffer, transfer and in-flight count it keeps has a
// name and a default here, and the options are resolved once, into one object, checked against
// each other, when the transport is created. Exceeding a bound drops and reports; nothing grows.

export interface PeerTransportLimits {
  /** The largest gRPC message in either direction: one frame, one snapshot chunk, one forward. */
  readonly frameBytesMax?: number;
  /** Per peer: messages waiting for the stream. Past it the oldest are dropped. */
  readonly queueMessagesMax?: number;
  /** Per peer: encoded bytes waiting for the stream, so a few huge appends cannot exhaust memory either. */
  readonly queueBytesMax?: number;
  readonly snapshotChunkBytes?: number;
  /** The largest snapshot this node accepts. */
  readonly snapshotBytesMax?: number;
  /** A snapshot transfer that has not finished by then is abandoned and reported failed. */
  readonly snapshotTimeoutMs?: number;
  /** Inbound snapshot transfers at once, across all senders. */
  readonly inboundSnapshotsMax?: number;
  readonly backoffMinMs?: number;
  readonly backoffMaxMs?: number;
  /** A stream the peer has not accepted by then is abandoned and retried. */
  readonly connectTimeoutMs?: number;
  /** Forwarded requests in flight: inbound across all callers, and outbound per peer. */
  readonly forwardsInFlightMax?: number;
  /** stop() waits this long for in-flight calls to finish before it cuts them off. */
  readonly shutdownGraceMs?: number;
}

export type ResolvedLimits = { readonly [K in keyof PeerTransportLimits]-?: number };

export const peerTransportDefaults: ResolvedLimits = {
  frameBytesMax: 4 * 1024 * 1024,
  queueMessagesMax: 4096,
  queueBytesMax: 64 * 1024 * 1024,
  snapshotChunkBytes: 256 * 1024,
  snapshotBytesMax: 1024 * 1024 * 1024,
  snapshotTimeoutMs: 5 * 60 * 1000,
  inboundSnapshotsMax: 4,
  backoffMinMs: 50,
  backoffMaxMs: 2000,
  connectTimeoutMs: 5000,
  forwardsInFlightMax: 1024,
  shutdownGraceMs: 1000,
};

export function resolveLimits(given: PeerTransportLimits | undefined): ResolvedLimits {
  const limits = { ...peerTransportDefaults };
  for (const key of Object.keys(peerTransportDefaults) as (keyof ResolvedLimits)[]) {
    const value = given?.[key];
    if (value === undefined) continue;
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new Error(`peer transport limit ${key} must be a positive integer, got ${value}`);
    }
    limits[key] = value;
  }
  if (limits.snapshotChunkBytes > limits.frameBytesMax) {
    throw new Error(`snapshotChunkBytes (${limits.snapshotChunkBytes}) must not exceed frameBytesMax (${limits.frameBytesMax}): each chunk is one gRPC message`);
  }
  if (limits.backoffMinMs > limits.backoffMaxMs) {
    throw new Error(`backoffMinMs (${limits.backoffMinMs}) must not exceed backoffMaxMs (${limits.backoffMaxMs})`);
  }
  return limits;
}
