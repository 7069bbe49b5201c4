// The contract between two peers' transports, which both ends of every call import from here:
// the gRPC service and its three methods, the metadata every call carries, the channel and server
// options, the credentials (mutual TLS against the peer CA), and the byte layouts of a Stream frame and of an InstallSnapshot
// transfer. All three methods carry our own binary codec (codec.ts), not protobuf:
// - Stream: one long-lived client-streaming call per peer. Each gRPC message is one frame, and a
//   frame is one encodeMessages(batch) buffer holding everything send() was given in one tick.
// - InstallSnapshot: a separate client-streaming call per snapshot: a header chunk, then the data
//   in chunks, so a large snapshot neither breaks the frame bound nor holds up the heartbeats
//   queued behind it.
// - Forward: a unary call that carries a follower's client request to the leader, opaque bytes.

import * as grpc from "@grpc/grpc-js";
import { readMessage, writeMessage } from "../codec.js";
import { CodecError, Reader, Writer } from "../../common/codec.js";
import { nodeIdsInSubjectAltName } from "../../common/peer_identity.js";
import type { Message, NodeId, SnapshotRequest } from "../core/types.js";
import type { ResolvedLimits } from "./limits.js";

// ---------------------------------------------------------------- metadata

/** Every call carries the sender's cluster id; a server refuses any other with FAILED_PRECONDITION. */
export const CLUSTER_ID_METADATA_KEY = "cairn-cluster-id";
/** The sender's node id, for the receiver's logs. Never used for routing: `Message.to` is. */
export const NODE_ID_METADATA_KEY = "cairn-node-id";
/** Marks a Forward error raised by the remote onForward, as opposed to one from the transport. */
export const FORWARD_ERROR_METADATA_KEY = "cairn-forward-error";

/** The metadata every outbound call carries; a fresh object per call, since gRPC may modify it. */
export function callMetadata(clusterId: string, selfId: NodeId): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(CLUSTER_ID_METADATA_KEY, clusterId);
  md.set(NODE_ID_METADATA_KEY, selfId);
  return md;
}

export function metadataString(md: grpc.Metadata, key: string): string | undefined {
  const values = md.get(key);
  return values.length === 1 && typeof values[0] === "string" ? values[0] : undefined;
}

// ---------------------------------------------------------------- the gRPC service

export const identity = (b: Buffer): Buffer => b;

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

// ---------------------------------------------------------------- credentials

/**
 * The node's peer credentials, PEM as read from its files. Both ends of every call present a
 * certificate issued by `caPem` and check the other's against it, and only against it: the
 * system's roots play no part, so a certificate from any other CA is refused in the handshake.
 */
export interface PeerTlsCredentials {
  /** The peer CA: the only issuer this node accepts a peer's certificate from. */
  readonly caPem: Buffer;
  /** This node's certificate (and any intermediates), carrying its node id (peerNodeUri). */
  readonly certPem: Buffer;
  readonly keyPem: Buffer;
}

/**
 * What a channel to `peerId` trusts. Without TLS (only as --peer-insecure asked), anything goes.
 * With it, the server must chain to the peer CA (the TLS handshake checks that) and name
 * `peerId` in its certificate. Its address is not checked: a peer is dialled at whatever it
 * advertises or --peer-via says, so the node id is the identity.
 */
export function channelCredentials(tls: PeerTlsCredentials | undefined, peerId: NodeId): grpc.ChannelCredentials {
  if (tls === undefined) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(tls.caPem, tls.keyPem, tls.certPem, {
    checkServerIdentity: (_host, cert) => {
      const named = nodeIdsInSubjectAltName(cert.subjectaltname);
      if (named.includes(peerId)) return undefined;
      return new Error(
        `peer ${peerId}'s certificate names ${named.length === 0 ? "no node" : `node ${named.join(", ")}`}, not ${peerId}; ` +
          `give each node a certificate made with: cairn tls cert create --node ${peerId}`,
      );
    },
  });
}

/** The server half: with TLS, every caller must present a certificate from the peer CA. */
export function serverCredentials(tls: PeerTlsCredentials | undefined): grpc.ServerCredentials {
  if (tls === undefined) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.caPem, [{ private_key: tls.keyPem, cert_chain: tls.certPem }], true);
}

/** The part of a server call that tells who called (grpc-js does not export its AuthContext type). */
export interface AuthenticatedCall {
  getAuthContext(): { readonly sslPeerCertificate?: { readonly subjectaltname?: string } };
}

/**
 * The node ids a caller's verified certificate names; empty for a caller without one. gRPC
 * reports a certificate only once the handshake verified it against the peer CA.
 */
export function callerNodeIds(call: AuthenticatedCall): string[] {
  return nodeIdsInSubjectAltName(call.getAuthContext().sslPeerCertificate?.subjectaltname);
}

// Loopback and LAN round trips are well under a millisecond, so a peer that does not answer a
// ping within 5 s is gone. Pings every 10 s find a half-open connection (a peer that lost power,
// a partition) even on a stream we are only writing to, where TCP alone could take minutes.
const KEEPALIVE_TIME_MS = 10_000;
const KEEPALIVE_TIMEOUT_MS = 5_000;

/**
 * The TLS server name a channel sends. Peers are dialled by IP, which SNI may not carry (RFC 6066;
 * Node warns about it), and the identity checked is the node id, not a host name: so a fixed name.
 */
const PEER_TLS_SERVER_NAME = "cairn-peer";

export function channelOptions(limits: ResolvedLimits, secure: boolean): grpc.ChannelOptions {
  return {
    ...(secure ? { "grpc.ssl_target_name_override": PEER_TLS_SERVER_NAME } : {}),
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

export function serverOptions(limits: ResolvedLimits): grpc.ServerOptions {
  return {
    "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    "grpc.max_send_message_length": limits.frameBytesMax,
    "grpc.max_receive_message_length": limits.frameBytesMax,
  };
}

// ---------------------------------------------------------------- call status

const STATUS_DETAILS_CHARS_MAX = 1024;

/** Status details travel to the peer and into its logs: a bounded size, whatever produced them. */
export function truncateDetails(s: string): string {
  return s.length <= STATUS_DETAILS_CHARS_MAX ? s : `${s.slice(0, STATUS_DETAILS_CHARS_MAX)}…`;
}

export function statusName(code: grpc.status): string {
  return grpc.status[code] ?? `status ${code}`;
}

// ---------------------------------------------------------------- bytes

export const EMPTY_BUFFER = Buffer.alloc(0);
export const EMPTY_BYTES = new Uint8Array(0);

/** A Buffer over the same memory: gRPC wants Buffers, the codec works on Uint8Arrays. */
export function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A plain Uint8Array over the same memory, so decoded fields are not Buffers (subarray keeps the class). */
export function toBytes(buf: Buffer): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

// ---------------------------------------------------------------- the Stream frame

// A frame is laid out exactly as encodeMessages() lays out a batch: a uvarint count, then the
// messages, each as writeMessage() encodes it. The sender builds frames from messages it encoded
// one by one (so a full queue can drop single messages), and the receiver decodes with
// decodeMessages().

function uvarintBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    bytes++;
  }
  return bytes;
}

/** The size of a frame holding `count` encoded messages of `bodyBytes` in all. */
export function frameBytes(count: number, bodyBytes: number): number {
  return uvarintBytes(count) + bodyBytes;
}

/** A frame's first bytes: how many messages follow. */
export function encodeFrameCount(count: number): Uint8Array {
  const w = new Writer(8);
  w.uint(count);
  return w.finish();
}

/** One message, encoded as it stands in a frame. */
export function encodeFrameMessage(m: Message): Uint8Array {
  const w = new Writer(64);
  writeMessage(w, m);
  return w.finish();
}

// ---------------------------------------------------------------- the InstallSnapshot transfer

/** Bumped when the snapshot header layout changes, so an old receiver refuses rather than misreads. */
const SNAPSHOT_HEADER_VERSION = 1;

/** The first InstallSnapshot chunk: the message without its data, then the data's length. */
export function encodeSnapshotHeader(m: SnapshotRequest): Uint8Array {
  const w = new Writer(128);
  w.u8(SNAPSHOT_HEADER_VERSION);
  writeMessage(w, { ...m, snapshot: { metadata: m.snapshot.metadata, data: EMPTY_BYTES } });
  w.uint(m.snapshot.data.byteLength);
  return w.finish();
}

export interface SnapshotHeader {
  readonly message: SnapshotRequest;
  readonly dataBytes: number;
}

export function decodeSnapshotHeader(buf: Uint8Array): SnapshotHeader {
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

/** The chunks after the header: the data in order, each at most `chunkBytes`. */
export function* snapshotDataChunks(data: Uint8Array, chunkBytes: number): Generator<Buffer> {
  for (let at = 0; at < data.byteLength; at += chunkBytes) {
    yield toBuffer(data.subarray(at, Math.min(at + chunkBytes, data.byteLength)));
  }
}
