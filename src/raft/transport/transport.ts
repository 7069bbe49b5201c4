// The peer transport: Raft messages between nodes over gRPC, on the dedicated peer port.
//
// One service, three methods, all carrying our own binary codec (codec.ts) as the wire format:
// - Stream: one long-lived client-streaming call per peer. Each gRPC message is one frame, and a
//   frame is one encodeMessages(batch) buffer holding everything send() was given in one tick.
// - InstallSnapshot: a separate client-streaming call per snapshot, sent in chunks, so a large
//   snapshot neither breaks the frame bound nor holds up the heartbeats queued behind it.
// - Forward: a unary call that carries a follower's client request to the leader, opaque bytes.
//
// Delivery is best effort, which is all Raft assumes: a message can be lost to a broken stream or
// a full queue, and the core hears about it through onUnreachable / onSnapshotStatus so it can
// probe or retry. Every queue, buffer and in-flight count here has a named bound; exceeding one
// drops and reports, it never grows.

import * as grpc from "@grpc/grpc-js";
import { backoffDelayMs } from "../../common/backoff.js";
import type { Logger } from "pino";
import { decodeMessages, readMessage, writeMessage } from "../codec.js";
import { CodecError, Reader, Writer } from "../../common/codec.js";
import { type Message, type NodeId, type SnapshotRequest, invariant, isLocalMessage } from "../core/types.js";

// ---------------------------------------------------------------- contract

/** Every call carries the sender's cluster id; a server refuses any other with FAILED_PRECONDITION. */
export const CLUSTER_ID_METADATA_KEY = "cairn-cluster-id";
/** The sender's node id, for the receiver's logs. Never used for routing: `Message.to` is. */
export const NODE_ID_METADATA_KEY = "cairn-node-id";
/** Marks a Forward error raised by the remote onForward, as opposed to one from the transport. */
const FORWARD_ERROR_METADATA_KEY = "cairn-forward-error";

/** Bumped when the snapshot header layout changes, so an old receiver refuses rather than misreads. */
const SNAPSHOT_HEADER_VERSION = 1;

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

type ResolvedLimits = { readonly [K in keyof PeerTransportLimits]-?: number };

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

export interface PeerTransportOptions {
  readonly selfId: NodeId;
  /** Every call carries it as metadata "cairn-cluster-id"; a server refuses a mismatch. */
  readonly clusterId: string;
  /** "host:port"; port 0 picks a free port (start() resolves with it). */
  readonly listen: string;
  /** Inbound Raft messages, decoded and addressed to selfId, in arrival order, one call per frame. */
  readonly onMessages: (messages: Message[]) => void;
  /** A send to this peer failed or its stream broke: once per failure, never once per message. */
  readonly onUnreachable: (peer: NodeId) => void;
  /** The outcome of a snapshot transfer this node sent. */
  readonly onSnapshotStatus: (peer: NodeId, ok: boolean) => void;
  /** Unary request forwarding (a follower forwards a client's proposal/read to the leader). Opaque bytes in and out. */
  readonly onForward: (request: Uint8Array) => Promise<Uint8Array>;
  readonly logger: Logger;
  readonly limits?: PeerTransportLimits;
  /** A float in [0, 1) for backoff jitter; inject a seeded one for reproducible runs. */
  readonly random?: () => number;
}

/** What one peer's link looks like right now, for status pages and tests. */
export interface PeerLinkStats {
  readonly address: string;
  /** The peer accepted our stream and it has not failed since. */
  readonly connected: boolean;
  readonly queuedMessages: number;
  readonly queuedBytes: number;
  /** Messages dropped since the peer was added because its queue was full. */
  readonly droppedMessages: number;
  readonly snapshotInFlight: boolean;
}

export type ForwardFailure = "unknownPeer" | "timeout" | "remote" | "transport" | "overloaded" | "stopped";

/** Why forward() failed. `remote` means the peer's onForward rejected; its message is included. */
export class ForwardError extends Error {
  constructor(
    readonly peer: NodeId,
    readonly failure: ForwardFailure,
    message: string,
  ) {
    super(message);
    this.name = "ForwardError";
  }
}

// ---------------------------------------------------------------- the gRPC service

const identity = (b: Buffer): Buffer => b;

function peerMethod(name: string, requestStream: boolean): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path: `/cairn.raft.v1.Peer/${name}`,
    requestStream,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
    originalName: name,
  };
}

/** No protobuf: every request and response is a Buffer in our own codec, passed through as is. */
export const peerServiceDefinition = {
  Stream: peerMethod("Stream", true),
  InstallSnapshot: peerMethod("InstallSnapshot", true),
  Forward: peerMethod("Forward", false),
} as const satisfies grpc.ServiceDefinition;

// TLS comes later: every credential the transport uses is created here and only here.
function channelCredentials(): grpc.ChannelCredentials {
  return grpc.credentials.createInsecure();
}

function serverCredentials(): grpc.ServerCredentials {
  return grpc.ServerCredentials.createInsecure();
}

// Loopback and LAN round trips are well under a millisecond, so a peer that does not answer a
// ping within 5 s is gone. Pings every 10 s find a half-open connection (a peer that lost power,
// a partition) even on a stream we are only writing to, where TCP alone could take minutes.
const KEEPALIVE_TIME_MS = 10_000;
const KEEPALIVE_TIMEOUT_MS = 5_000;

function channelOptions(limits: ResolvedLimits): grpc.ChannelOptions {
  return {
    "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.max_send_message_length": limits.frameBytesMax,
    "grpc.max_receive_message_length": limits.frameBytesMax,
    // The channel reconnects on its own schedule too; keep it within ours, or a peer that comes
    // back waits out gRPC's default backoff (up to two minutes) however eagerly we retry.
    "grpc.initial_reconnect_backoff_ms": limits.backoffMinMs,
    "grpc.max_reconnect_backoff_ms": limits.backoffMaxMs,
    // One connection per peer link, never shared with another transport in the same process
    // (the simulator and tests run several), so closing one link cannot disturb another.
    "grpc.use_local_subchannel_pool": 1,
    // Raft retries at its own level; a transparent gRPC retry would only duplicate a forward.
    "grpc.enable_retries": 0,
  };
}

function serverOptions(limits: ResolvedLimits): grpc.ServerOptions {
  return {
    "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    "grpc.max_send_message_length": limits.frameBytesMax,
    "grpc.max_receive_message_length": limits.frameBytesMax,
  };
}

// ---------------------------------------------------------------- pure helpers

const EMPTY_BUFFER = Buffer.alloc(0);
const EMPTY_BYTES = new Uint8Array(0);

/** A Buffer over the same memory: gRPC wants Buffers, the codec works on Uint8Arrays. */
function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A plain Uint8Array over the same memory, so decoded fields are not Buffers (subarray keeps the class). */
function toBytes(buf: Buffer): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

function uvarintBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    bytes++;
  }
  return bytes;
}

function encodeUvarint(n: number): Uint8Array {
  const w = new Writer(8);
  w.uint(n);
  return w.finish();
}

function encodeMessage(m: Message): Uint8Array {
  const w = new Writer(64);
  writeMessage(w, m);
  return w.finish();
}

/** The first InstallSnapshot chunk: the message without its data, then the data's length. */
function encodeSnapshotHeader(m: SnapshotRequest): Uint8Array {
  const w = new Writer(128);
  w.u8(SNAPSHOT_HEADER_VERSION);
  writeMessage(w, { ...m, snapshot: { metadata: m.snapshot.metadata, data: EMPTY_BYTES } });
  w.uint(m.snapshot.data.byteLength);
  return w.finish();
}

interface SnapshotHeader {
  readonly message: SnapshotRequest;
  readonly dataBytes: number;
}

function decodeSnapshotHeader(buf: Uint8Array): SnapshotHeader {
  const r = new Reader(buf);
  const version = r.u8();
  if (version !== SNAPSHOT_HEADER_VERSION) throw new CodecError(`snapshot header version ${version} is not ${SNAPSHOT_HEADER_VERSION}`);
  const message = readMessage(r);
  if (message.type !== "snapshot") throw new CodecError(`snapshot header carries a ${message.type} message`);
  if (message.snapshot.data.byteLength !== 0) throw new CodecError("snapshot header carries data; data belongs in the chunks after it");
  const dataBytes = r.uint();
  r.done();
  return { message, dataBytes };
}

function* snapshotDataChunks(data: Uint8Array, chunkBytes: number): Generator<Buffer> {
  for (let at = 0; at < data.byteLength; at += chunkBytes) {
    yield toBuffer(data.subarray(at, Math.min(at + chunkBytes, data.byteLength)));
  }
}

function metadataString(md: grpc.Metadata, key: string): string | undefined {
  const values = md.get(key);
  return values.length === 1 && typeof values[0] === "string" ? values[0] : undefined;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const STATUS_DETAILS_CHARS_MAX = 1024;

function truncateDetails(s: string): string {
  return s.length <= STATUS_DETAILS_CHARS_MAX ? s : `${s.slice(0, STATUS_DETAILS_CHARS_MAX)}…`;
}

function statusName(code: grpc.status): string {
  return grpc.status[code] ?? `status ${code}`;
}

const ADDRESS_PATTERN = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/;

function validAddress(address: string): boolean {
  const match = ADDRESS_PATTERN.exec(address);
  return match !== null && Number(match[2]) <= 65535;
}

/**
 * A callback of the node threw. That is the node's bug, not the network's: crash, but outside
 * gRPC's call stack, where the exception could otherwise be swallowed or wedge a stream.
 */
function rethrowOutside(err: unknown): void {
  queueMicrotask(() => {
    throw err;
  });
}

function resolveLimits(given: PeerTransportLimits | undefined): ResolvedLimits {
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

// ---------------------------------------------------------------- the outbound queue

/** A FIFO of encoded messages. Shifting is O(1); the array is compacted as the head advances. */
class EncodedQueue {
  private items: Uint8Array[] = [];
  private head = 0;
  bytes = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(encoded: Uint8Array): void {
    this.items.push(encoded);
    this.bytes += encoded.byteLength;
  }

  shift(): Uint8Array {
    invariant(this.length > 0, "shift from an empty peer queue");
    const encoded = this.items[this.head];
    this.items[this.head] = EMPTY_BYTES;
    this.head++;
    this.bytes -= encoded.byteLength;
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return encoded;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
    this.bytes = 0;
  }

  /**
   * Removes the longest prefix that fits in one frame, and at least one message (send() refuses
   * any message that could not fit alone), and returns it laid out exactly as encodeMessages()
   * would: a count, then the messages.
   */
  takeFrame(frameBytesMax: number): Buffer {
    let count = 0;
    let bodyBytes = 0;
    while (count < this.length) {
      const nextBytes = this.items[this.head + count].byteLength;
      if (count > 0 && uvarintBytes(count + 1) + bodyBytes + nextBytes > frameBytesMax) break;
      count++;
      bodyBytes += nextBytes;
    }
    const prefix = encodeUvarint(count);
    const frame = Buffer.allocUnsafe(prefix.byteLength + bodyBytes);
    frame.set(prefix, 0);
    let at = prefix.byteLength;
    for (let i = 0; i < count; i++) {
      const encoded = this.shift();
      frame.set(encoded, at);
      at += encoded.byteLength;
    }
    invariant(at === frame.byteLength && frame.byteLength <= frameBytesMax, () => `built a frame of ${frame.byteLength} bytes, bound ${frameBytesMax}`);
    return frame;
  }
}

// ---------------------------------------------------------------- one peer, outbound

interface LinkContext {
  readonly limits: ResolvedLimits;
  readonly log: Logger;
  readonly random: () => number;
  callMetadata(): grpc.Metadata;
  reportUnreachable(peer: NodeId): void;
  reportSnapshotStatus(peer: NodeId, ok: boolean): void;
}

/**
 * Everything this node sends to one peer: the message stream with its queue and reconnect loop,
 * at most one snapshot transfer, and forwarded requests.
 *
 * Stream states: connecting (a call exists, the peer has not accepted it), accepted (frames are
 * written), backing off (a timer will connect again). Messages wait in the bounded queue in every
 * state except accepted-and-writable, so a peer that comes back gets the newest of them.
 */
class PeerLink {
  private client: grpc.Client;
  private readonly queue = new EncodedQueue();
  private stream: grpc.ClientWritableStream<Buffer> | undefined;
  /** Identifies the current stream, so events of a replaced one are ignored. */
  private streamGeneration = 0;
  private accepted = false;
  private drainPending = false;
  /** Why we cancelled the current stream ourselves, for the log line its end produces. */
  private cancelReason: string | undefined;
  private backoffAttempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private acceptTimer: NodeJS.Timeout | undefined;
  /** onUnreachable was called and the peer has not been reachable since: one report per outage. */
  private unreachableReported = false;
  /** The outage was logged at warn; its retries log at debug. */
  private outageLogged = false;
  private snapshotCall: grpc.ClientWritableStream<Buffer> | undefined;
  private readonly forwards = new Set<grpc.ClientUnaryCall>();
  private closeReason: string | undefined;
  private droppedMessages = 0;

  constructor(
    readonly id: NodeId,
    private address: string,
    private readonly ctx: LinkContext,
  ) {
    this.client = new grpc.Client(address, channelCredentials(), channelOptions(ctx.limits));
  }

  get closed(): boolean {
    return this.closeReason !== undefined;
  }

  stats(): PeerLinkStats {
    return {
      address: this.address,
      connected: this.accepted,
      queuedMessages: this.queue.length,
      queuedBytes: this.queue.bytes,
      droppedMessages: this.droppedMessages,
      snapshotInFlight: this.snapshotCall !== undefined,
    };
  }

  // ------------------------------------------------ the message stream

  connect(): void {
    this.reconnectTimer = undefined;
    if (this.closed) return;
    const generation = ++this.streamGeneration;
    this.accepted = false;
    this.drainPending = false;
    this.cancelReason = undefined;
    const call = this.client.makeClientStreamRequest<Buffer, Buffer>(
      peerServiceDefinition.Stream.path,
      identity,
      identity,
      this.ctx.callMetadata(),
      {},
      (err) => this.onStreamEnd(generation, err),
    );
    this.stream = call;
    // The server sends headers only once it has checked the cluster id: that is our "accepted".
    call.on("metadata", () => this.onStreamAccepted(generation));
    call.on("drain", () => this.onDrain(generation));
    call.on("error", (err: Error) => this.ctx.log.debug({ peer: this.id, err: err.message }, "peer stream error event"));
    const timeoutMs = this.ctx.limits.connectTimeoutMs;
    this.acceptTimer = setTimeout(() => {
      this.acceptTimer = undefined;
      if (generation !== this.streamGeneration || this.accepted) return;
      this.cancelReason = `the peer did not accept the stream within ${timeoutMs} ms`;
      call.cancel();
    }, timeoutMs);
    this.ctx.log.debug({ peer: this.id, address: this.address, attempt: this.backoffAttempt }, "opening peer stream");
  }

  private onStreamAccepted(generation: number): void {
    if (generation !== this.streamGeneration || this.closed) return;
    this.clearAcceptTimer();
    this.accepted = true;
    this.backoffAttempt = 0;
    this.unreachableReported = false;
    if (this.outageLogged) this.ctx.log.info({ peer: this.id, address: this.address }, "peer stream reconnected");
    else this.ctx.log.debug({ peer: this.id, address: this.address }, "peer stream accepted");
    this.outageLogged = false;
    this.flush();
  }

  private onDrain(generation: number): void {
    if (generation !== this.streamGeneration || this.closed) return;
    this.drainPending = false;
    this.flush();
  }

  private onStreamEnd(generation: number, err: grpc.ServiceError | null): void {
    if (generation !== this.streamGeneration || this.closed) return;
    this.clearAcceptTimer();
    const wasAccepted = this.accepted;
    this.stream = undefined;
    this.accepted = false;
    this.drainPending = false;
    // The server answers a stream only when the client ends it, which we never do: any end is a failure.
    const reason = this.cancelReason ?? (err === null ? "the peer ended the stream" : `${statusName(err.code)}: ${err.details}`);
    const delayMs = backoffDelayMs(this.backoffAttempt + 1, this.ctx.limits.backoffMinMs, this.ctx.limits.backoffMaxMs, this.ctx.random);
    this.backoffAttempt++;
    const fields = { peer: this.id, address: this.address, reason, wasAccepted, retryInMs: delayMs, queuedMessages: this.queue.length };
    if (this.outageLogged) this.ctx.log.debug(fields, "peer stream still failing");
    else this.ctx.log.warn(fields, "peer stream failed; reconnecting with backoff");
    this.outageLogged = true;
    this.reportUnreachable();
    this.reconnectTimer = setTimeout(() => this.connect(), delayMs);
  }

  private clearAcceptTimer(): void {
    if (this.acceptTimer !== undefined) clearTimeout(this.acceptTimer);
    this.acceptTimer = undefined;
  }

  private reportUnreachable(): void {
    if (this.unreachableReported) return;
    this.unreachableReported = true;
    this.ctx.reportUnreachable(this.id);
  }

  /** Queues one encoded message; a full queue drops its oldest: Raft resends what matters. */
  enqueue(encoded: Uint8Array): void {
    this.queue.push(encoded);
    const { queueMessagesMax, queueBytesMax } = this.ctx.limits;
    let dropped = 0;
    while (this.queue.length > queueMessagesMax || this.queue.bytes > queueBytesMax) {
      this.queue.shift();
      dropped++;
    }
    if (dropped === 0) return;
    this.droppedMessages += dropped;
    const fields = { peer: this.id, dropped, queueMessagesMax, queueBytesMax, connected: this.accepted };
    if (this.unreachableReported) this.ctx.log.debug(fields, "peer queue full; dropped the oldest messages");
    else this.ctx.log.warn(fields, "peer queue full; dropping the oldest messages until it drains");
    this.reportUnreachable();
  }

  /** Writes queued messages as frames while the stream is accepted and gRPC takes more. */
  flush(): void {
    const stream = this.stream;
    if (stream === undefined || !this.accepted || this.drainPending || this.closed) return;
    while (this.queue.length > 0) {
      const frame = this.queue.takeFrame(this.ctx.limits.frameBytesMax);
      if (!stream.write(frame)) {
        // gRPC buffered it, but wants no more until 'drain'; the rest stays in our bounded queue.
        this.drainPending = true;
        this.ctx.log.debug({ peer: this.id, queuedMessages: this.queue.length }, "peer stream is full; waiting for it to drain");
        return;
      }
    }
    // Everything queued went out on an accepted stream: as far as we know the peer is reachable.
    this.unreachableReported = false;
  }

  // ------------------------------------------------ snapshots

  /** Starts a transfer, unless one is in flight: that one will report, and Raft waits for it. */
  sendSnapshot(m: SnapshotRequest): void {
    const fields = { peer: this.id, index: m.snapshot.metadata.index, term: m.snapshot.metadata.term, dataBytes: m.snapshot.data.byteLength };
    if (this.snapshotCall !== undefined) {
      this.ctx.log.warn(fields, "a snapshot transfer to this peer is already in flight; dropped the newer snapshot");
      return;
    }
    const header = encodeSnapshotHeader(m);
    if (header.byteLength > this.ctx.limits.frameBytesMax) {
      this.ctx.log.warn({ ...fields, headerBytes: header.byteLength, frameBytesMax: this.ctx.limits.frameBytesMax }, "snapshot header exceeds frameBytesMax; not sent");
      this.ctx.reportSnapshotStatus(this.id, false);
      return;
    }
    let finished = false;
    let resolveDone!: (err: grpc.ServiceError | null) => void;
    const done = new Promise<grpc.ServiceError | null>((resolve) => (resolveDone = resolve));
    const call = this.client.makeClientStreamRequest<Buffer, Buffer>(
      peerServiceDefinition.InstallSnapshot.path,
      identity,
      identity,
      this.ctx.callMetadata(),
      { deadline: Date.now() + this.ctx.limits.snapshotTimeoutMs },
      (err) => {
        finished = true;
        resolveDone(err);
      },
    );
    call.on("error", (err: Error) => this.ctx.log.debug({ peer: this.id, err: err.message }, "snapshot call error event"));
    this.snapshotCall = call;
    this.ctx.log.debug(fields, "sending snapshot");
    const startedAt = Date.now();
    void (async () => {
      const chunks = [toBuffer(header), ...snapshotDataChunks(m.snapshot.data, this.ctx.limits.snapshotChunkBytes)];
      for (const chunk of chunks) {
        if (finished) break;
        if (!call.write(chunk)) {
          await Promise.race([new Promise<void>((resolve) => call.once("drain", () => resolve())), done]);
        }
      }
      if (!finished) call.end();
      const err = await done;
      if (this.snapshotCall === call) this.snapshotCall = undefined;
      if (this.closed) return;
      if (err === null) {
        this.ctx.log.debug({ ...fields, elapsedMs: Date.now() - startedAt }, "snapshot delivered");
        this.ctx.reportSnapshotStatus(this.id, true);
      } else {
        this.ctx.log.warn({ ...fields, reason: `${statusName(err.code)}: ${err.details}` }, "snapshot transfer failed");
        this.ctx.reportSnapshotStatus(this.id, false);
      }
    })();
  }

  // ------------------------------------------------ forwarding

  forward(request: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.forwards.size >= this.ctx.limits.forwardsInFlightMax) {
      return Promise.reject(
        new ForwardError(this.id, "overloaded", `cannot forward to peer ${this.id}: ${this.forwards.size} forwarded requests are already in flight (forwardsInFlightMax); retry later`),
      );
    }
    return new Promise<Uint8Array>((resolve, reject) => {
      let call: grpc.ClientUnaryCall | undefined = undefined;
      call = this.client.makeUnaryRequest<Buffer, Buffer>(
        peerServiceDefinition.Forward.path,
        identity,
        identity,
        toBuffer(request),
        this.ctx.callMetadata(),
        { deadline: Date.now() + timeoutMs },
        (err, reply) => {
          if (call !== undefined) this.forwards.delete(call);
          if (err === null) resolve(toBytes(reply ?? EMPTY_BUFFER));
          else reject(this.forwardError(err, timeoutMs));
        },
      );
      this.forwards.add(call);
    });
  }

  private forwardError(err: grpc.ServiceError, timeoutMs: number): ForwardError {
    if (err.code === grpc.status.DEADLINE_EXCEEDED) {
      return new ForwardError(this.id, "timeout", `forwarding to peer ${this.id} (${this.address}) timed out after ${timeoutMs} ms`);
    }
    if (metadataString(err.metadata, FORWARD_ERROR_METADATA_KEY) !== undefined) {
      return new ForwardError(this.id, "remote", `peer ${this.id} failed the forwarded request: ${err.details}`);
    }
    if (err.code === grpc.status.CANCELLED && this.closeReason !== undefined) {
      return new ForwardError(this.id, "stopped", `forwarding to peer ${this.id} was cancelled: ${this.closeReason}`);
    }
    return new ForwardError(this.id, "transport", `forwarding to peer ${this.id} (${this.address}) failed: ${statusName(err.code)}: ${err.details}`);
  }

  // ------------------------------------------------ lifecycle

  /** Points the link at a new address: the stream starts over there now, the queue is kept. */
  setAddress(address: string): void {
    if (address === this.address) return;
    this.ctx.log.info({ peer: this.id, from: this.address, to: address }, "peer address changed");
    this.dropConnection();
    this.client.close();
    this.address = address;
    this.client = new grpc.Client(address, channelCredentials(), channelOptions(this.ctx.limits));
    this.backoffAttempt = 0;
    this.connect();
  }

  /** The in-flight snapshot (if any) reports failure; its call died with the old connection. */
  private dropConnection(): void {
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.clearAcceptTimer();
    this.streamGeneration++;
    this.stream?.cancel();
    this.stream = undefined;
    this.accepted = false;
    this.drainPending = false;
    this.snapshotCall?.cancel();
  }

  /** After close, no callback fires for this peer again: the node has already forgotten it. */
  close(reason: string): void {
    if (this.closed) return;
    this.closeReason = reason;
    this.dropConnection();
    for (const call of this.forwards) call.cancel();
    this.queue.clear();
    this.client.close();
  }
}

// ---------------------------------------------------------------- the transport

type TransportState = "new" | "starting" | "running" | "stopped";

/** The status a handler answers with; grpc-js does not export its own name for it. */
type CallStatus = Partial<grpc.StatusObject>;

/** What the server reads from any inbound call before serving it. */
interface InboundCall {
  readonly metadata: grpc.Metadata;
  getPeer(): string;
}

export class PeerTransport {
  private readonly opts: PeerTransportOptions;
  private readonly limits: ResolvedLimits;
  private readonly log: Logger;
  private readonly links = new Map<NodeId, PeerLink>();
  private readonly linkContext: LinkContext;
  private readonly dirty = new Set<PeerLink>();
  private flushImmediate: NodeJS.Immediate | undefined;
  private server: grpc.Server | undefined;
  private state: TransportState = "new";
  /** Ends each inbound call still open, with UNAVAILABLE: stop() does not wait on a peer's stream. */
  private readonly inboundClosers = new Set<() => void>();
  private forwardsInFlight = 0;
  private inboundSnapshots = 0;
  /** Unknown peers already warned about, so a chatty leader does not flood the log. */
  private readonly unknownPeersWarned = new Set<NodeId>();

  constructor(opts: PeerTransportOptions) {
    this.opts = opts;
    this.limits = resolveLimits(opts.limits);
    this.log = opts.logger;
    const random = opts.random ?? Math.random;
    this.linkContext = {
      limits: this.limits,
      log: this.log,
      random,
      callMetadata: () => this.callMetadata(),
      // Callbacks never run inside send() or a gRPC event: the node may be mid-Ready when it
      // sends, and stepping its core from inside that call would interleave two batches.
      reportUnreachable: (peer) =>
        queueMicrotask(() => {
          if (this.state !== "stopped") this.opts.onUnreachable(peer);
        }),
      reportSnapshotStatus: (peer, ok) =>
        queueMicrotask(() => {
          if (this.state !== "stopped") this.opts.onSnapshotStatus(peer, ok);
        }),
    };
  }

  /** Binds the peer port and serves. Resolves with the bound port. */
  async start(): Promise<number> {
    if (this.state !== "new") throw new Error(`the peer transport of node ${this.opts.selfId} cannot start: it is ${this.state}`);
    this.state = "starting";
    const server = new grpc.Server(serverOptions(this.limits));
    server.addService(peerServiceDefinition, {
      Stream: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => this.serveStream(call, callback),
      InstallSnapshot: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        this.serveInstallSnapshot(call, callback),
      Forward: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => this.serveForward(call, callback),
    });
    this.server = server;
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(this.opts.listen, serverCredentials(), (err, bound) => {
        if (err !== null) {
          reject(new Error(`node ${this.opts.selfId} cannot listen for peers on ${this.opts.listen}: ${err.message}`));
          return;
        }
        // Set here, not after the await: a call may arrive before the continuation runs.
        if (this.state === "starting") this.state = "running";
        resolve(bound);
      });
    }).catch((err: unknown) => {
      server.forceShutdown();
      throw err;
    });
    // Widened on purpose: stop() may have run while we awaited, which the narrowing cannot see.
    if ((this.state as TransportState) !== "running") {
      server.forceShutdown();
      throw new Error(`the peer transport of node ${this.opts.selfId} was stopped while starting`);
    }
    this.log.info({ listen: this.opts.listen, port }, "peer transport listening");
    return port;
  }

  /** Adds a peer, or moves it to a new address. Setting the same address again does nothing. */
  setPeer(id: NodeId, address: string): void {
    invariant(id !== this.opts.selfId, () => `node ${id} cannot be its own peer`);
    if (this.state === "stopped") return;
    if (!validAddress(address)) {
      // The address may come from the replicated log; crashing every node on it would be worse.
      this.log.error({ peer: id, address }, "peer address is not host:port; messages to this peer will be dropped");
      this.removePeer(id);
      return;
    }
    this.unknownPeersWarned.delete(id);
    const existing = this.links.get(id);
    if (existing !== undefined) {
      existing.setAddress(address);
      return;
    }
    const link = new PeerLink(id, address, this.linkContext);
    this.links.set(id, link);
    this.log.debug({ peer: id, address }, "peer added");
    link.connect();
  }

  /** Forgets a peer: its queue, stream, snapshot transfer and forwards end, with no further callbacks. */
  removePeer(id: NodeId): void {
    const link = this.links.get(id);
    if (link === undefined) return;
    this.links.delete(id);
    this.dirty.delete(link);
    link.close(`peer ${id} was removed`);
    this.log.debug({ peer: id }, "peer removed");
  }

  /**
   * Queues messages for their peers (by `to`) and returns at once; everything sent in one tick
   * leaves in one frame per peer. Never throws for network reasons: a message that cannot go is
   * dropped and reported. Snapshots go by InstallSnapshot instead of the stream.
   */
  send(messages: readonly Message[]): void {
    if (this.state === "stopped") return;
    let unknown: Set<NodeId> | undefined;
    for (const m of messages) {
      // Before a message leaves: these would be bugs in the node, not conditions of the network.
      invariant(!isLocalMessage(m), () => `a ${m.type} message is local to the node and must never be sent`);
      invariant(m.from === this.opts.selfId, () => `node ${this.opts.selfId} was asked to send a ${m.type} message from ${m.from}`);
      invariant(m.to !== this.opts.selfId, () => `node ${this.opts.selfId} was asked to send a ${m.type} message to itself`);
      const link = this.links.get(m.to);
      if (link === undefined) {
        (unknown ??= new Set()).add(m.to);
        if (m.type === "snapshot") this.linkContext.reportSnapshotStatus(m.to, false);
        continue;
      }
      if (m.type === "snapshot") {
        link.sendSnapshot(m);
        continue;
      }
      const encoded = encodeMessage(m);
      if (uvarintBytes(1) + encoded.byteLength > this.limits.frameBytesMax) {
        this.log.warn({ peer: m.to, type: m.type, messageBytes: encoded.byteLength, frameBytesMax: this.limits.frameBytesMax }, "message exceeds frameBytesMax; dropped");
        this.linkContext.reportUnreachable(m.to);
        continue;
      }
      link.enqueue(encoded);
      this.dirty.add(link);
    }
    if (unknown !== undefined) this.dropForUnknownPeers(unknown);
    if (this.dirty.size > 0) this.flushImmediate ??= setImmediate(() => this.flushDirty());
  }

  private flushDirty(): void {
    this.flushImmediate = undefined;
    for (const link of this.dirty) link.flush();
    this.dirty.clear();
  }

  private dropForUnknownPeers(peers: Set<NodeId>): void {
    for (const peer of peers) {
      if (!this.unknownPeersWarned.has(peer)) {
        // Bounded: a node talks to its configuration's members, but a bug should not grow this.
        if (this.unknownPeersWarned.size >= 1024) this.unknownPeersWarned.clear();
        this.unknownPeersWarned.add(peer);
        this.log.warn({ peer }, "no address is known for this peer; dropping messages to it");
      }
      this.linkContext.reportUnreachable(peer);
    }
  }

  /** Sends opaque bytes to a peer's onForward and resolves with its reply. Rejects with a ForwardError. */
  forward(to: NodeId, request: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.state === "stopped") {
      return Promise.reject(new ForwardError(to, "stopped", `cannot forward to peer ${to}: the peer transport of node ${this.opts.selfId} is stopped`));
    }
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      return Promise.reject(new Error(`forward timeoutMs must be a positive number of milliseconds, got ${timeoutMs}`));
    }
    const link = this.links.get(to);
    if (link === undefined) {
      return Promise.reject(new ForwardError(to, "unknownPeer", `cannot forward to node ${to}: it is not a known peer of node ${this.opts.selfId}`));
    }
    if (request.byteLength > this.limits.frameBytesMax) {
      return Promise.reject(
        new ForwardError(to, "transport", `cannot forward a request of ${request.byteLength} bytes to peer ${to}: it exceeds frameBytesMax (${this.limits.frameBytesMax})`),
      );
    }
    return link.forward(request, timeoutMs);
  }

  /** The state of one peer's link, or undefined for an unknown peer. */
  peerStats(id: NodeId): PeerLinkStats | undefined {
    return this.links.get(id)?.stats();
  }

  /** Closes every stream and the server. No callback fires after stop() begins. */
  async stop(): Promise<void> {
    if (this.state === "stopped") return;
    this.state = "stopped";
    if (this.flushImmediate !== undefined) clearImmediate(this.flushImmediate);
    this.flushImmediate = undefined;
    this.dirty.clear();
    for (const link of this.links.values()) link.close(`node ${this.opts.selfId} is shutting down`);
    this.links.clear();
    for (const close of [...this.inboundClosers]) close();
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) await this.shutdownServer(server);
    this.log.info("peer transport stopped");
  }

  private shutdownServer(server: grpc.Server): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.log.warn({ graceMs: this.limits.shutdownGraceMs }, "peer calls still open after the shutdown grace; cutting them off");
        server.forceShutdown();
        resolve();
      }, this.limits.shutdownGraceMs);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // ---------------------------------------------------------------- serving

  private callMetadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set(CLUSTER_ID_METADATA_KEY, this.opts.clusterId);
    md.set(NODE_ID_METADATA_KEY, this.opts.selfId);
    return md;
  }

  /** The status to refuse a call with, or undefined to serve it. */
  private refusal(call: InboundCall, method: string): CallStatus | undefined {
    if (this.state !== "running") {
      return { code: grpc.status.UNAVAILABLE, details: `node ${this.opts.selfId} is shutting down` };
    }
    const theirs = metadataString(call.metadata, CLUSTER_ID_METADATA_KEY);
    if (theirs === this.opts.clusterId) return undefined;
    const sender = metadataString(call.metadata, NODE_ID_METADATA_KEY) ?? "an unnamed node";
    const theirsText = theirs === undefined ? "no cluster id" : `cluster id "${theirs}"`;
    this.log.warn(
      { method, sender, remote: call.getPeer(), clusterId: this.opts.clusterId, senderClusterId: theirs ?? null },
      "refused a peer call from another cluster",
    );
    return {
      code: grpc.status.FAILED_PRECONDITION,
      details: truncateDetails(
        `cluster id mismatch: node ${this.opts.selfId} belongs to cluster "${this.opts.clusterId}" but the ${method} call from ${sender} carries ${theirsText}; ` +
          "nodes only talk within one cluster, so check the cluster id both nodes were started with",
      ),
    };
  }

  /** Hands inbound messages to the node, unless we are stopping: then no callback fires. */
  private deliver(messages: Message[]): void {
    if (messages.length === 0 || this.state !== "running") return;
    try {
      this.opts.onMessages(messages);
    } catch (err) {
      rethrowOutside(err);
    }
  }

  /** When a message arrives: misrouted or local-only messages are a peer's error; drop and say so. */
  private admit(messages: Message[], sender: string): Message[] {
    const admitted: Message[] = [];
    for (const m of messages) {
      if (m.to !== this.opts.selfId) {
        this.log.warn({ sender, type: m.type, from: m.from, to: m.to }, "dropped a message addressed to another node; check the peer addresses");
      } else if (isLocalMessage(m)) {
        this.log.warn({ sender, type: m.type, from: m.from }, "dropped a local-only message that arrived over the network");
      } else {
        admitted.push(m);
      }
    }
    return admitted;
  }

  private serveStream(call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>): void {
    const refused = this.refusal(call, "Stream");
    if (refused !== undefined) {
      callback(refused);
      return;
    }
    const sender = metadataString(call.metadata, NODE_ID_METADATA_KEY) ?? call.getPeer();
    let open = true;
    const finish = (status: CallStatus | null): void => {
      if (!open) return;
      open = false;
      this.inboundClosers.delete(closeForShutdown);
      if (status === null) callback(null, EMPTY_BUFFER);
      else callback(status);
    };
    const closeForShutdown = (): void => finish({ code: grpc.status.UNAVAILABLE, details: `node ${this.opts.selfId} is shutting down` });
    this.inboundClosers.add(closeForShutdown);
    call.on("data", (frame: Buffer) => {
      if (!open) return;
      let messages: Message[];
      try {
        messages = decodeMessages(toBytes(frame));
      } catch (err) {
        const kind = err instanceof CodecError ? "malformed" : "undecodable";
        this.log.warn({ sender, frameBytes: frame.byteLength, err: errorMessage(err) }, `${kind} frame from a peer; ending its stream`);
        finish({ code: grpc.status.INVALID_ARGUMENT, details: truncateDetails(`node ${this.opts.selfId} could not decode a frame of ${frame.byteLength} bytes: ${errorMessage(err)}`) });
        return;
      }
      this.deliver(this.admit(messages, sender));
    });
    call.on("end", () => finish(null));
    call.on("cancelled", () => {
      open = false;
      this.inboundClosers.delete(closeForShutdown);
    });
    call.on("error", (err: Error) => this.log.debug({ sender, err: err.message }, "inbound peer stream error event"));
    // Headers now tell the sender its stream was accepted (cluster id checked): it starts writing.
    call.sendMetadata(new grpc.Metadata());
    this.log.debug({ sender }, "accepted a peer stream");
  }

  private serveInstallSnapshot(call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>): void {
    const refused = this.refusal(call, "InstallSnapshot");
    if (refused !== undefined) {
      callback(refused);
      return;
    }
    const sender = metadataString(call.metadata, NODE_ID_METADATA_KEY) ?? call.getPeer();
    if (this.inboundSnapshots >= this.limits.inboundSnapshotsMax) {
      this.log.warn({ sender, inboundSnapshotsMax: this.limits.inboundSnapshotsMax }, "refused a snapshot transfer: too many in flight");
      callback({
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `node ${this.opts.selfId} is already receiving ${this.inboundSnapshots} snapshots (inboundSnapshotsMax); retry later`,
      });
      return;
    }
    this.inboundSnapshots++;
    let header: SnapshotHeader | undefined;
    let chunks: Buffer[] = [];
    let receivedBytes = 0;
    let open = true;
    const release = (): boolean => {
      if (!open) return false;
      open = false;
      chunks = [];
      this.inboundSnapshots--;
      this.inboundClosers.delete(closeForShutdown);
      return true;
    };
    const fail = (code: grpc.status, details: string): void => {
      if (!release()) return;
      this.log.warn({ sender, code: statusName(code), details }, "refused a snapshot transfer");
      callback({ code, details: truncateDetails(details) });
    };
    const closeForShutdown = (): void => fail(grpc.status.UNAVAILABLE, `node ${this.opts.selfId} is shutting down`);
    this.inboundClosers.add(closeForShutdown);

    call.on("data", (chunk: Buffer) => {
      if (!open) return;
      if (header === undefined) {
        try {
          header = decodeSnapshotHeader(toBytes(chunk));
        } catch (err) {
          fail(grpc.status.INVALID_ARGUMENT, `node ${this.opts.selfId} could not decode a snapshot header: ${errorMessage(err)}`);
          return;
        }
        const to = header.message.to;
        if (to !== this.opts.selfId) {
          fail(grpc.status.FAILED_PRECONDITION, `a snapshot addressed to node ${to} reached node ${this.opts.selfId}; check the peer addresses`);
          return;
        }
        if (header.dataBytes > this.limits.snapshotBytesMax) {
          fail(
            grpc.status.RESOURCE_EXHAUSTED,
            `a snapshot of ${header.dataBytes} bytes exceeds snapshotBytesMax (${this.limits.snapshotBytesMax}) on node ${this.opts.selfId}`,
          );
          return;
        }
        this.log.debug({ sender, index: header.message.snapshot.metadata.index, dataBytes: header.dataBytes }, "receiving a snapshot");
        return;
      }
      receivedBytes += chunk.byteLength;
      if (receivedBytes > header.dataBytes) {
        fail(grpc.status.INVALID_ARGUMENT, `snapshot data exceeds the ${header.dataBytes} bytes its header announced`);
        return;
      }
      chunks.push(chunk);
    });
    call.on("end", () => {
      if (!open) return;
      if (header === undefined) {
        fail(grpc.status.INVALID_ARGUMENT, "the snapshot transfer ended before its header");
        return;
      }
      if (receivedBytes !== header.dataBytes) {
        fail(grpc.status.INVALID_ARGUMENT, `the snapshot transfer ended after ${receivedBytes} of ${header.dataBytes} bytes`);
        return;
      }
      const data = new Uint8Array(receivedBytes);
      let at = 0;
      for (const chunk of chunks) {
        data.set(chunk, at);
        at += chunk.byteLength;
      }
      const m: SnapshotRequest = { ...header.message, snapshot: { metadata: header.message.snapshot.metadata, data } };
      release();
      // Reply only once the node holds it: the sender's success is Raft's "snapshot delivered".
      this.deliver([m]);
      this.log.debug({ sender, index: m.snapshot.metadata.index, dataBytes: receivedBytes }, "received a snapshot");
      callback(null, EMPTY_BUFFER);
    });
    call.on("cancelled", () => {
      if (release()) this.log.debug({ sender }, "snapshot transfer cancelled by its sender");
    });
    call.on("error", (err: Error) => this.log.debug({ sender, err: err.message }, "inbound snapshot stream error event"));
  }

  private serveForward(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>): void {
    const refused = this.refusal(call, "Forward");
    if (refused !== undefined) {
      callback(refused);
      return;
    }
    if (this.forwardsInFlight >= this.limits.forwardsInFlightMax) {
      callback({
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `node ${this.opts.selfId} already has ${this.forwardsInFlight} forwarded requests in flight (forwardsInFlightMax); retry later`,
      });
      return;
    }
    this.forwardsInFlight++;
    let answered = false;
    const answer = (status: CallStatus | null, reply?: Buffer): void => {
      if (answered) return;
      answered = true;
      this.inboundClosers.delete(closeForShutdown);
      if (status === null) callback(null, reply);
      else callback(status);
    };
    const closeForShutdown = (): void => answer({ code: grpc.status.UNAVAILABLE, details: `node ${this.opts.selfId} is shutting down` });
    this.inboundClosers.add(closeForShutdown);
    const request = toBytes(call.request);
    void (async () => {
      try {
        const reply = await this.opts.onForward(request);
        if (reply.byteLength > this.limits.frameBytesMax) {
          answer({
            code: grpc.status.RESOURCE_EXHAUSTED,
            details: `node ${this.opts.selfId} produced a forward reply of ${reply.byteLength} bytes, over frameBytesMax (${this.limits.frameBytesMax})`,
          });
        } else {
          answer(null, toBuffer(reply));
        }
      } catch (err) {
        const trailer = new grpc.Metadata();
        trailer.set(FORWARD_ERROR_METADATA_KEY, "1");
        this.log.debug({ err: errorMessage(err) }, "forwarded request failed in onForward");
        answer({ code: grpc.status.UNKNOWN, details: truncateDetails(errorMessage(err)), metadata: trailer });
      } finally {
        this.forwardsInFlight--;
      }
    })();
  }
}
