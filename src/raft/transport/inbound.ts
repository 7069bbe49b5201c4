// What this node serves to its peers, one class per kind of call: one peer's message stream, one
// snapshot transfer, one forwarded request. The transport admits a call first (it is running, the
// caller is of this cluster, the call is within its bound) and then hands it to one of these, which
// owns the call until it ends.
//
// Each instance is a member of its transport's `open` set exactly while its call is open (for a
// forward: while the node's handler runs), so the set is both what stop() shuts down and what the
// in-flight bounds count.

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { decodeMessages } from "../codec.js";
import { CodecError } from "../../common/codec.js";
import { type Message, type NodeId, type SnapshotRequest, isLocalMessage } from "../core/types.js";
import type { ResolvedLimits } from "./limits.js";
import {
  EMPTY_BUFFER,
  FORWARD_ERROR_METADATA_KEY,
  NODE_ID_METADATA_KEY,
  type SnapshotHeader,
  decodeSnapshotHeader,
  metadataString,
  statusName,
  toBuffer,
  toBytes,
  truncateDetails,
} from "./service.js";

/** What an inbound call needs from its transport. */
export interface InboundContext {
  readonly selfId: NodeId;
  readonly limits: ResolvedLimits;
  readonly log: Logger;
  /**
   * The caller's node id was proven by its peer certificate (the transport admits a call only when
   * the certificate names the id the call's metadata claims). Then a message must come from that
   * node: a peer may speak only for itself.
   */
  readonly sendersAuthenticated: boolean;
  /** Hands messages to the node; does nothing once the transport is stopping. */
  deliver(messages: Message[]): void;
  /** The node's handler for a forwarded request. */
  onForward(request: Uint8Array): Promise<Uint8Array>;
}

/** An inbound call that is open. stop() shuts each down rather than wait on a peer to end it. */
export interface InboundCall {
  shutdown(): void;
}

/** The status a handler answers with; grpc-js does not export its own name for it. */
export type CallStatus = Partial<grpc.StatusObject>;

type ClientStreamCall = grpc.ServerReadableStream<Buffer, Buffer>;

/** How a call is refused or ended once this node has begun to stop. */
export function shuttingDown(selfId: NodeId): { readonly code: grpc.status; readonly details: string } {
  return { code: grpc.status.UNAVAILABLE, details: `node ${selfId} is shutting down` };
}

/** Who sent a call, for the logs: its node id if it gave one, else its address. */
export function senderOf(call: { readonly metadata: grpc.Metadata; getPeer(): string }): string {
  return metadataString(call.metadata, NODE_ID_METADATA_KEY) ?? call.getPeer();
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------- client-streaming calls

/**
 * An inbound client-streaming call (Stream, InstallSnapshot). Its events reach the subclass only
 * while it is open, so each handler can assume the call has not ended.
 */
abstract class InboundClientStream implements InboundCall {
  protected readonly sender: string;

  constructor(
    call: ClientStreamCall,
    protected readonly callback: grpc.sendUnaryData<Buffer>,
    protected readonly ctx: InboundContext,
    private readonly open: Set<InboundCall>,
    kind: string,
  ) {
    this.sender = senderOf(call);
    open.add(this);
    call.on("data", (chunk: Buffer) => {
      if (this.open.has(this)) this.onData(chunk);
    });
    call.on("end", () => {
      if (this.open.has(this)) this.onEnd();
    });
    call.on("cancelled", () => {
      if (this.leave()) this.onCancelled();
    });
    call.on("error", (err: Error) => ctx.log.debug({ sender: this.sender, err: err.message }, `inbound ${kind} error event`));
  }

  abstract shutdown(): void;
  protected abstract onData(chunk: Buffer): void;
  protected abstract onEnd(): void;
  /** The sender cancelled the call; it has already left the open set. */
  protected abstract onCancelled(): void;

  /** Leaves the open set; false if the call had already ended. */
  protected leave(): boolean {
    return this.open.delete(this);
  }
}

// ---------------------------------------------------------------- Stream

/** One peer's message stream to this node: each frame is decoded, checked and handed on as one batch. */
export class InboundStream extends InboundClientStream {
  constructor(call: ClientStreamCall, callback: grpc.sendUnaryData<Buffer>, ctx: InboundContext, open: Set<InboundCall>) {
    super(call, callback, ctx, open, "peer stream");
    // Headers now tell the sender its stream was accepted (cluster id checked): it starts writing.
    call.sendMetadata(new grpc.Metadata());
    ctx.log.debug({ sender: this.sender }, "accepted a peer stream");
  }

  /** Ends the stream with UNAVAILABLE: stop() does not wait on a peer's stream. */
  shutdown(): void {
    this.finish(shuttingDown(this.ctx.selfId));
  }

  protected onData(frame: Buffer): void {
    let messages: Message[];
    try {
      messages = decodeMessages(toBytes(frame));
    } catch (err) {
      const kind = err instanceof CodecError ? "malformed" : "undecodable";
      this.ctx.log.warn({ sender: this.sender, frameBytes: frame.byteLength, err: errorMessage(err) }, `${kind} frame from a peer; ending its stream`);
      this.finish({
        code: grpc.status.INVALID_ARGUMENT,
        details: truncateDetails(`node ${this.ctx.selfId} could not decode a frame of ${frame.byteLength} bytes: ${errorMessage(err)}`),
      });
      return;
    }
    this.ctx.deliver(this.admit(messages));
  }

  /** The sender ends its stream only when it stops sending to us: answer it. */
  protected onEnd(): void {
    this.finish(null);
  }

  protected onCancelled(): void {}

  /** When a message arrives: misrouted or local-only messages are a peer's error; drop and say so. */
  private admit(messages: Message[]): Message[] {
    const admitted: Message[] = [];
    for (const m of messages) {
      if (m.to !== this.ctx.selfId) {
        this.ctx.log.warn({ sender: this.sender, type: m.type, from: m.from, to: m.to }, "dropped a message addressed to another node; check the peer addresses");
      } else if (this.ctx.sendersAuthenticated && m.from !== this.sender) {
        this.ctx.log.warn({ sender: this.sender, type: m.type, from: m.from }, "dropped a message that claims to come from another node than the one whose certificate sent it");
      } else if (isLocalMessage(m)) {
        this.ctx.log.warn({ sender: this.sender, type: m.type, from: m.from }, "dropped a local-only message that arrived over the network");
      } else {
        admitted.push(m);
      }
    }
    return admitted;
  }

  private finish(status: CallStatus | null): void {
    if (!this.leave()) return;
    if (status === null) this.callback(null, EMPTY_BUFFER);
    else this.callback(status);
  }
}

// ---------------------------------------------------------------- InstallSnapshot

/**
 * One snapshot transfer to this node: a header, then data chunks up to the size it announced.
 * The snapshot is handed to the node whole, and only then answered: the sender's success is
 * Raft's "snapshot delivered".
 */
export class InboundSnapshot extends InboundClientStream {
  private header: SnapshotHeader | undefined;
  private chunks: Buffer[] = [];
  /** Data bytes received so far; never more than the header announced. */
  private receivedBytes = 0;

  constructor(call: ClientStreamCall, callback: grpc.sendUnaryData<Buffer>, ctx: InboundContext, open: Set<InboundCall>) {
    super(call, callback, ctx, open, "snapshot stream");
  }

  shutdown(): void {
    const { code, details } = shuttingDown(this.ctx.selfId);
    this.fail(code, details);
  }

  protected onData(chunk: Buffer): void {
    const header = this.header;
    if (header === undefined) {
      this.onHeader(chunk);
      return;
    }
    this.receivedBytes += chunk.byteLength;
    if (this.receivedBytes > header.dataBytes) {
      this.fail(grpc.status.INVALID_ARGUMENT, `snapshot data exceeds the ${header.dataBytes} bytes its header announced`);
      return;
    }
    this.chunks.push(chunk);
  }

  private onHeader(chunk: Buffer): void {
    const { selfId, limits } = this.ctx;
    let header: SnapshotHeader;
    try {
      header = decodeSnapshotHeader(toBytes(chunk));
    } catch (err) {
      this.fail(grpc.status.INVALID_ARGUMENT, `node ${selfId} could not decode a snapshot header: ${errorMessage(err)}`);
      return;
    }
    this.header = header;
    const to = header.message.to;
    if (to !== selfId) {
      this.fail(grpc.status.FAILED_PRECONDITION, `a snapshot addressed to node ${to} reached node ${selfId}; check the peer addresses`);
      return;
    }
    if (this.ctx.sendersAuthenticated && header.message.from !== this.sender) {
      this.fail(grpc.status.PERMISSION_DENIED, `a snapshot from node ${header.message.from} arrived over node ${this.sender}'s certificate; a peer may speak only for itself`);
      return;
    }
    if (header.dataBytes > limits.snapshotBytesMax) {
      this.fail(grpc.status.RESOURCE_EXHAUSTED, `a snapshot of ${header.dataBytes} bytes exceeds snapshotBytesMax (${limits.snapshotBytesMax}) on node ${selfId}`);
      return;
    }
    this.ctx.log.debug({ sender: this.sender, index: header.message.snapshot.metadata.index, dataBytes: header.dataBytes }, "receiving a snapshot");
  }

  protected onEnd(): void {
    const header = this.header;
    if (header === undefined) {
      this.fail(grpc.status.INVALID_ARGUMENT, "the snapshot transfer ended before its header");
      return;
    }
    if (this.receivedBytes !== header.dataBytes) {
      this.fail(grpc.status.INVALID_ARGUMENT, `the snapshot transfer ended after ${this.receivedBytes} of ${header.dataBytes} bytes`);
      return;
    }
    const data = new Uint8Array(this.receivedBytes);
    let at = 0;
    for (const chunk of this.chunks) {
      data.set(chunk, at);
      at += chunk.byteLength;
    }
    const m: SnapshotRequest = { ...header.message, snapshot: { metadata: header.message.snapshot.metadata, data } };
    this.release();
    this.ctx.deliver([m]);
    this.ctx.log.debug({ sender: this.sender, index: m.snapshot.metadata.index, dataBytes: this.receivedBytes }, "received a snapshot");
    this.callback(null, EMPTY_BUFFER);
  }

  protected onCancelled(): void {
    this.chunks = [];
    this.ctx.log.debug({ sender: this.sender }, "snapshot transfer cancelled by its sender");
  }

  /** Ends the transfer and lets go of its chunks; false if it had already ended. */
  private release(): boolean {
    if (!this.leave()) return false;
    this.chunks = [];
    return true;
  }

  private fail(code: grpc.status, details: string): void {
    if (!this.release()) return;
    this.ctx.log.warn({ sender: this.sender, code: statusName(code), details }, "refused a snapshot transfer");
    this.callback({ code, details: truncateDetails(details) });
  }
}

// ---------------------------------------------------------------- Forward

/**
 * One forwarded request, answered with the node's handler's reply. It stays open until the handler
 * settles, not until the answer: forwardsInFlightMax bounds the handlers running, and a caller
 * that gave up (or a stop() that answered for it) does not stop a handler already running.
 */
export class InboundForward implements InboundCall {
  private answered = false;

  constructor(
    call: grpc.ServerUnaryCall<Buffer, Buffer>,
    private readonly callback: grpc.sendUnaryData<Buffer>,
    private readonly ctx: InboundContext,
    private readonly open: Set<InboundCall>,
  ) {
    open.add(this);
    void this.serve(toBytes(call.request));
  }

  shutdown(): void {
    this.answer(shuttingDown(this.ctx.selfId));
  }

  private async serve(request: Uint8Array): Promise<void> {
    const { selfId, limits } = this.ctx;
    try {
      const reply = await this.ctx.onForward(request);
      if (reply.byteLength > limits.frameBytesMax) {
        this.answer({
          code: grpc.status.RESOURCE_EXHAUSTED,
          details: `node ${selfId} produced a forward reply of ${reply.byteLength} bytes, over frameBytesMax (${limits.frameBytesMax})`,
        });
      } else {
        this.answer(null, toBuffer(reply));
      }
    } catch (err) {
      const trailer = new grpc.Metadata();
      trailer.set(FORWARD_ERROR_METADATA_KEY, "1");
      this.ctx.log.debug({ err: errorMessage(err) }, "forwarded request failed in onForward");
      this.answer({ code: grpc.status.UNKNOWN, details: truncateDetails(errorMessage(err)), metadata: trailer });
    } finally {
      this.open.delete(this);
    }
  }

  private answer(status: CallStatus | null, reply?: Buffer): void {
    if (this.answered) return;
    this.answered = true;
    if (status === null) this.callback(null, reply);
    else this.callback(status);
  }
}
