// The outbound half of the transport for one peer: the message stream with its bounded queue and
// reconnect loop, snapshot transfers, and forwarded requests. Delivery is best effort, which is
// all Raft assumes: a message can be lost to a broken stream or a full queue, and the node hears
// about it through the context's reports so it can probe or retry.

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { backoffDelayMs } from "../../common/backoff.js";
import { Fifo } from "../../common/fifo.js";
import { type NodeId, type SnapshotRequest, invariant } from "../core/types.js";
import { ForwardError } from "../node/ports.js";
import type { ResolvedLimits } from "./limits.js";
import {
  EMPTY_BUFFER,
  FORWARD_ERROR_METADATA_KEY,
  channelCredentials,
  type PeerTlsCredentials,
  channelOptions,
  encodeFrameCount,
  encodeSnapshotHeader,
  frameBytes,
  identity,
  metadataString,
  peerServiceDefinition,
  snapshotDataChunks,
  statusName,
  toBuffer,
  toBytes,
} from "./service.js";

// ---------------------------------------------------------------- the outbound queue

/** A FIFO of encoded messages, with their total size. */
class EncodedQueue {
  private readonly items = new Fifo<Uint8Array>();
  bytes = 0;

  get length(): number {
    return this.items.length;
  }

  push(encoded: Uint8Array): void {
    this.items.push(encoded);
    this.bytes += encoded.byteLength;
  }

  shift(): Uint8Array {
    const encoded = this.items.shift();
    invariant(encoded !== undefined, "shift from an empty peer queue");
    this.bytes -= encoded.byteLength;
    return encoded;
  }

  clear(): void {
    this.items.clear();
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
      const nextBytes = (this.items.peek(count) as Uint8Array).byteLength;
      if (count > 0 && frameBytes(count + 1, bodyBytes + nextBytes) > frameBytesMax) break;
      count++;
      bodyBytes += nextBytes;
    }
    const prefix = encodeFrameCount(count);
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

/** What a link needs from its transport: the bounds, and where to report. */
export interface LinkContext {
  readonly limits: ResolvedLimits;
  readonly log: Logger;
  readonly random: () => number;
  /** Mutual TLS with the peer CA; undefined only when the node was told to run insecure. */
  readonly tls: PeerTlsCredentials | undefined;
  callMetadata(): grpc.Metadata;
  reportUnreachable(peer: NodeId): void;
  reportSnapshotStatus(peer: NodeId, ok: boolean): void;
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

/**
 * Where the message stream to a peer stands, as forward() needs to know it:
 * - connecting: no stream to this address has been accepted or has failed yet. The link is new
 *   (or was just moved to a new address), and its first stream is still on its way.
 * - up: the peer accepted the current stream, and it has not failed since.
 * - down: a stream failed since the peer last accepted one: the peer ended or refused it, the
 *   connection broke, or the peer did not accept it within connectTimeoutMs. `reason` is the
 *   latest failure. Reconnect attempts do not end an outage; only an acceptance does.
 */
type StreamPhase = { readonly name: "connecting" } | { readonly name: "up" } | { readonly name: "down"; readonly reason: string };

const CONNECTING: StreamPhase = { name: "connecting" };
const UP: StreamPhase = { name: "up" };

/**
 * Everything this node sends to one peer: the message stream with its queue and reconnect loop,
 * at most one snapshot transfer, and forwarded requests.
 *
 * Stream states: connecting (a call exists, the peer has not accepted it), accepted (frames are
 * written), backing off (a timer will connect again). Messages wait in the bounded queue in every
 * state except accepted-and-writable, so a peer that comes back gets the newest of them.
 */
export class PeerLink {
  private client: grpc.Client;
  private readonly queue = new EncodedQueue();
  private stream: grpc.ClientWritableStream<Buffer> | undefined;
  /** Identifies the current stream, so events of a replaced one are ignored. */
  private streamGeneration = 0;
  private phase: StreamPhase = CONNECTING;
  private drainPending = false;
  /** Why we cancelled the current stream ourselves, for the log line its end produces. */
  private cancelReason: string | undefined;
  private backoffAttempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private acceptTimer: NodeJS.Timeout | undefined;
  /** onUnreachable was called and the peer has not been reachable since: one report per outage. */
  private unreachableReported = false;
  private snapshotCall: grpc.ClientWritableStream<Buffer> | undefined;
  /** Forward calls sent and not yet answered. */
  private readonly forwards = new Set<grpc.ClientUnaryCall>();
  /** Forwards not yet sent, waiting for a connecting link's first stream to be accepted or to fail. */
  private readonly forwardsWaiting = new Set<() => void>();
  private closeReason: string | undefined;
  private droppedMessages = 0;

  constructor(
    readonly id: NodeId,
    private address: string,
    private readonly ctx: LinkContext,
  ) {
    this.client = new grpc.Client(address, channelCredentials(ctx.tls, id), channelOptions(ctx.limits, ctx.tls !== undefined));
  }

  get closed(): boolean {
    return this.closeReason !== undefined;
  }

  stats(): PeerLinkStats {
    return {
      address: this.address,
      connected: this.phase.name === "up",
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
      if (generation !== this.streamGeneration || this.phase.name === "up") return;
      this.cancelReason = `the peer did not accept the stream within ${timeoutMs} ms`;
      call.cancel();
    }, timeoutMs);
    this.ctx.log.debug({ peer: this.id, address: this.address, attempt: this.backoffAttempt }, "opening peer stream");
  }

  private onStreamAccepted(generation: number): void {
    if (generation !== this.streamGeneration || this.closed) return;
    this.clearAcceptTimer();
    const wasDown = this.phase.name === "down";
    this.phase = UP;
    this.backoffAttempt = 0;
    this.unreachableReported = false;
    if (wasDown) this.ctx.log.info({ peer: this.id, address: this.address }, "peer stream reconnected");
    else this.ctx.log.debug({ peer: this.id, address: this.address }, "peer stream accepted");
    this.flush();
    this.wakeForwardsWaiting();
  }

  private onDrain(generation: number): void {
    if (generation !== this.streamGeneration || this.closed) return;
    this.drainPending = false;
    this.flush();
  }

  private onStreamEnd(generation: number, err: grpc.ServiceError | null): void {
    if (generation !== this.streamGeneration || this.closed) return;
    this.clearAcceptTimer();
    const wasAccepted = this.phase.name === "up";
    const wasDown = this.phase.name === "down";
    this.stream = undefined;
    this.drainPending = false;
    // The server answers a stream only when the client ends it, which we never do: any end is a failure.
    const reason = this.cancelReason ?? (err === null ? "the peer ended the stream" : `${statusName(err.code)}: ${err.details}`);
    this.phase = { name: "down", reason };
    const delayMs = backoffDelayMs(this.backoffAttempt + 1, this.ctx.limits.backoffMinMs, this.ctx.limits.backoffMaxMs, this.ctx.random);
    this.backoffAttempt++;
    const fields = { peer: this.id, address: this.address, reason, wasAccepted, retryInMs: delayMs, queuedMessages: this.queue.length };
    // One warning per outage; its retries log at debug.
    if (wasDown) this.ctx.log.debug(fields, "peer stream still failing");
    else this.ctx.log.warn(fields, "peer stream failed; reconnecting with backoff");
    this.reportUnreachable();
    this.reconnectTimer = setTimeout(() => this.connect(), delayMs);
    this.wakeForwardsWaiting();
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
    const fields = { peer: this.id, dropped, queueMessagesMax, queueBytesMax, connected: this.phase.name === "up" };
    if (this.unreachableReported) this.ctx.log.debug(fields, "peer queue full; dropped the oldest messages");
    else this.ctx.log.warn(fields, "peer queue full; dropping the oldest messages until it drains");
    this.reportUnreachable();
  }

  /** Writes queued messages as frames while the stream is accepted and gRPC takes more. */
  flush(): void {
    const stream = this.stream;
    if (stream === undefined || this.phase.name !== "up" || this.drainPending || this.closed) return;
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

  /**
   * Sends a request to the peer's onForward, unless the link is not connected: then it rejects
   * at once with notConnected, having sent nothing, so the caller may safely send it elsewhere.
   *
   * Not connected means the stream phase is down: a stream to the peer failed (it ended, was
   * refused, broke, or was not accepted within connectTimeoutMs) and the peer has not accepted one
   * since. A link that is still connecting, never having failed, is not down: the forward waits
   * for its first stream to be accepted (and is then sent) or to fail (and is then notConnected),
   * up to the forward's own timeout. Without that wait the first forward after start, or after
   * setPeer, would fail. Forwards waiting count towards forwardsInFlightMax like those sent.
   */
  forward(request: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    // One deadline for the wait and the call together, so a forward never outlives its timeout.
    const deadlineMs = Date.now() + timeoutMs;
    if (this.phase.name === "down") return Promise.reject(this.notConnected(this.phase.reason));
    const inFlight = this.forwards.size + this.forwardsWaiting.size;
    if (inFlight >= this.ctx.limits.forwardsInFlightMax) {
      return Promise.reject(
        new ForwardError(this.id, "overloaded", `cannot forward to peer ${this.id}: ${inFlight} forwarded requests are already in flight (forwardsInFlightMax); retry later`),
      );
    }
    if (this.phase.name === "up") return this.sendForward(request, timeoutMs, deadlineMs);
    return this.connectingEnded(deadlineMs).then(() => this.forwardOnceConnected(request, timeoutMs, deadlineMs));
  }

  /** After waiting on a connecting link: sent only if the peer accepted the stream meanwhile. */
  private forwardOnceConnected(request: Uint8Array, timeoutMs: number, deadlineMs: number): Promise<Uint8Array> {
    if (this.closeReason !== undefined) {
      return Promise.reject(new ForwardError(this.id, "stopped", `forwarding to peer ${this.id} was cancelled before it was sent: ${this.closeReason}`));
    }
    switch (this.phase.name) {
      case "up":
        return this.sendForward(request, timeoutMs, deadlineMs);
      case "down":
        return Promise.reject(this.notConnected(this.phase.reason));
      case "connecting":
        return Promise.reject(
          new ForwardError(
            this.id,
            "notConnected",
            `cannot forward to peer ${this.id} (${this.address}): its link did not connect within the forward's ${timeoutMs} ms, so nothing was sent`,
          ),
        );
    }
  }

  private notConnected(reason: string): ForwardError {
    return new ForwardError(
      this.id,
      "notConnected",
      `cannot forward to peer ${this.id} (${this.address}): the link to it is down (${reason}), so nothing was sent; retry once it is back, or on another node`,
    );
  }

  /** Resolves once the link stops connecting (its stream is accepted or fails, or it closes), or at deadlineMs. */
  private connectingEnded(deadlineMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.forwardsWaiting.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, Math.max(0, deadlineMs - Date.now()));
      this.forwardsWaiting.add(wake);
    });
  }

  private wakeForwardsWaiting(): void {
    for (const wake of [...this.forwardsWaiting]) wake();
  }

  private sendForward(request: Uint8Array, timeoutMs: number, deadlineMs: number): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      let call: grpc.ClientUnaryCall | undefined = undefined;
      call = this.client.makeUnaryRequest<Buffer, Buffer>(
        peerServiceDefinition.Forward.path,
        identity,
        identity,
        toBuffer(request),
        this.ctx.callMetadata(),
        { deadline: deadlineMs },
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
      // Not "stopped": that promises the peer never saw it, and a call cut off in flight may
      // already be running in the peer's handler. Only a forward never sent is "stopped".
      return new ForwardError(this.id, "transport", `forwarding to peer ${this.id} was cut off in flight (${this.closeReason}); the peer may have acted on it`);
    }
    return new ForwardError(this.id, "transport", `forwarding to peer ${this.id} (${this.address}) failed: ${statusName(err.code)}: ${err.details}`);
  }

  // ------------------------------------------------ lifecycle

  /**
   * Points the link at a new address: the stream starts over there now, the queue is kept. The
   * link is connecting again, not down: the new address has not failed yet.
   */
  setAddress(address: string): void {
    if (address === this.address) return;
    this.ctx.log.info({ peer: this.id, from: this.address, to: address }, "peer address changed");
    this.dropConnection();
    this.client.close();
    this.address = address;
    this.client = new grpc.Client(address, channelCredentials(this.ctx.tls, this.id), channelOptions(this.ctx.limits, this.ctx.tls !== undefined));
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
    this.phase = CONNECTING;
    this.drainPending = false;
    this.snapshotCall?.cancel();
  }

  /** After close, no callback fires for this peer again: the node has already forgotten it. */
  close(reason: string): void {
    if (this.closed) return;
    this.closeReason = reason;
    this.dropConnection();
    this.wakeForwardsWaiting();
    for (const call of this.forwards) call.cancel();
    this.queue.clear();
    this.client.close();
  }
}
