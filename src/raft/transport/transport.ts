// The peer transport: Raft messages between nodes over gRPC, on the dedicated peer port. It owns
// the server and one PeerLink per peer, and wires them to the node: outbound messages are routed
// to their peer's link (peer_link.ts), inbound calls are admitted here and served by inbound.ts,
// and the wire contract both ends share is service.ts.
//
// It is the node's PeerNetwork (src/raft/node/ports.ts). Delivery is best effort, which is all
// Raft assumes: a message can be lost to a broken stream or a full queue, and the core hears
// about it through onUnreachable / onSnapshotStatus so it can probe or retry. Every queue, buffer and in-flight count has a named bound (limits.ts);
// exceeding one drops and reports, it never grows.

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type Message, type NodeId, invariant, isLocalMessage } from "../core/types.js";
import { ForwardError, type PeerHandlers, type PeerNetwork } from "../node/ports.js";
import { type InboundCall, type InboundContext, type CallStatus, InboundForward, InboundSnapshot, InboundStream, senderOf, shuttingDown } from "./inbound.js";
import { type PeerTransportLimits, type ResolvedLimits, resolveLimits } from "./limits.js";
import { type LinkContext, type PeerLinkStats, PeerLink } from "./peer_link.js";
import {
  CLUSTER_ID_METADATA_KEY,
  NODE_ID_METADATA_KEY,
  type AuthenticatedCall,
  type PeerTlsCredentials,
  callMetadata,
  callerNodeIds,
  encodeFrameMessage,
  frameBytes,
  metadataString,
  peerServiceDefinition,
  serverCredentials,
  serverOptions,
  truncateDetails,
} from "./service.js";

export interface PeerTransportOptions {
  readonly selfId: NodeId;
  /** Every call carries it as metadata "cairn-cluster-id"; a server refuses a mismatch. */
  readonly clusterId: string;
  /** "host:port"; port 0 picks a free port (start() resolves with it). */
  readonly listen: string;
  readonly logger: Logger;
  readonly limits?: PeerTransportLimits;
  /** A float in [0, 1) for backoff jitter; inject a seeded one for reproducible runs. */
  readonly random?: () => number;
  /**
   * Peers to dial at another "host:port" than the address they advertise (a proxy or NAT between
   * nodes). Consulted whenever a peer's address is set; the advertised address stays what the
   * configuration replicates.
   */
  readonly peerVia?: ReadonlyMap<NodeId, string>;
  /**
   * Mutual TLS against the peer CA (service.ts says what each end checks). Absent, the transport
   * is plaintext and trusts any caller: `cairn server` runs so only when given --peer-insecure.
   */
  readonly tls?: PeerTlsCredentials;
}

type TransportState = "new" | "starting" | "running" | "stopped";

/** What the server reads from any inbound call before serving it. */
interface AdmittedCall extends AuthenticatedCall {
  readonly metadata: grpc.Metadata;
  getPeer(): string;
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

/** Unknown peers warned about at once; past it the set starts over, so a bug cannot grow it. */
const UNKNOWN_PEERS_WARNED_MAX = 1024;

export class PeerTransport implements PeerNetwork {
  private readonly opts: PeerTransportOptions;
  private readonly limits: ResolvedLimits;
  private readonly log: Logger;
  private readonly links = new Map<NodeId, PeerLink>();
  private readonly linkContext: LinkContext;
  private readonly inboundContext: InboundContext;
  private readonly dirty = new Set<PeerLink>();
  private flushImmediate: NodeJS.Immediate | undefined;
  private server: grpc.Server | undefined;
  private state: TransportState = "new";
  /** The node's callbacks, from start() until stop() begins: none runs outside that span. */
  private handlers: PeerHandlers | undefined;
  // The inbound calls open now, by kind: what stop() ends, and what the inbound bounds count.
  private readonly inboundStreams = new Set<InboundCall>();
  private readonly inboundSnapshots = new Set<InboundCall>();
  private readonly inboundForwards = new Set<InboundCall>();
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
      tls: opts.tls,
      callMetadata: () => callMetadata(opts.clusterId, opts.selfId),
      // Callbacks never run inside send() or a gRPC event: the node may be mid-Ready when it
      // sends, and stepping its core from inside that call would interleave two batches.
      reportUnreachable: (peer) => queueMicrotask(() => this.handlers?.onUnreachable(peer)),
      reportSnapshotStatus: (peer, ok) => queueMicrotask(() => this.handlers?.onSnapshotStatus(peer, ok)),
    };
    this.inboundContext = {
      selfId: opts.selfId,
      limits: this.limits,
      log: this.log,
      sendersAuthenticated: opts.tls !== undefined,
      deliver: (messages) => this.deliver(messages),
      onForward: (request) => {
        const handlers = this.handlers;
        // A forward is served only once admitted, which needs "running": start() has set them.
        invariant(handlers !== undefined, () => `node ${opts.selfId} served a forwarded request while not running`);
        return handlers.onForward(request);
      },
    };
  }

  /** Binds the peer port and serves, delivering to `handlers`. Resolves with the bound port. */
  async start(handlers: PeerHandlers): Promise<number> {
    if (this.state !== "new") throw new Error(`the peer transport of node ${this.opts.selfId} cannot start: it is ${this.state}`);
    this.state = "starting";
    // Before binding: a peer's call may arrive as soon as the port is bound.
    this.handlers = handlers;
    const server = new grpc.Server(serverOptions(this.limits));
    server.addService(peerServiceDefinition, {
      Stream: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => this.serveStream(call, callback),
      InstallSnapshot: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        this.serveInstallSnapshot(call, callback),
      Forward: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => this.serveForward(call, callback),
    });
    this.server = server;
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(this.opts.listen, serverCredentials(this.opts.tls), (err, bound) => {
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
    this.log.info({ listen: this.opts.listen, port, tls: this.opts.tls !== undefined }, "peer transport listening");
    return port;
  }

  /** Adds a peer, or moves it to a new address. Setting the same address again does nothing. */
  setPeer(id: NodeId, advertised: string): void {
    invariant(id !== this.opts.selfId, () => `node ${id} cannot be its own peer`);
    if (this.state === "stopped") return;
    const via = this.opts.peerVia?.get(id);
    const address = via ?? advertised;
    if (via !== undefined && via !== advertised) this.log.debug({ peer: id, advertised, via }, "dialing peer through its --peer-via address");
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
      const encoded = encodeFrameMessage(m);
      if (frameBytes(1, encoded.byteLength) > this.limits.frameBytesMax) {
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
        if (this.unknownPeersWarned.size >= UNKNOWN_PEERS_WARNED_MAX) this.unknownPeersWarned.clear();
        this.unknownPeersWarned.add(peer);
        this.log.warn({ peer }, "no address is known for this peer; dropping messages to it");
      }
      this.linkContext.reportUnreachable(peer);
    }
  }

  /**
   * Sends opaque bytes to a peer's onForward and resolves with its reply. Rejects with a
   * ForwardError; with notConnected, at once and having sent nothing, when the peer's link is
   * down (the rule is PeerLink.forward's).
   */
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
    this.handlers = undefined;
    if (this.flushImmediate !== undefined) clearImmediate(this.flushImmediate);
    this.flushImmediate = undefined;
    this.dirty.clear();
    for (const link of this.links.values()) link.close(`node ${this.opts.selfId} is shutting down`);
    this.links.clear();
    const inbound: InboundCall[] = [...this.inboundStreams, ...this.inboundSnapshots, ...this.inboundForwards];
    for (const call of inbound) call.shutdown();
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

  /** The status to refuse a call with, or undefined to serve it. */
  private refusal(call: AdmittedCall, method: string): CallStatus | undefined {
    if (this.state !== "running") return shuttingDown(this.opts.selfId);
    const impostor = this.identityRefusal(call, method);
    if (impostor !== undefined) return impostor;
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

  /**
   * With TLS the handshake has already proven the caller holds a certificate from the peer CA;
   * here the node id its metadata claims must be one that certificate names, so one node cannot
   * speak as another.
   */
  private identityRefusal(call: AdmittedCall, method: string): CallStatus | undefined {
    if (this.opts.tls === undefined) return undefined;
    const claimed = metadataString(call.metadata, NODE_ID_METADATA_KEY);
    const proven = callerNodeIds(call);
    if (claimed !== undefined && proven.includes(claimed)) return undefined;
    this.log.warn({ method, claimed: claimed ?? null, certificateNames: proven, remote: call.getPeer() }, "refused a peer call whose certificate does not name the node it claims to be");
    return {
      code: grpc.status.PERMISSION_DENIED,
      details: truncateDetails(
        `node ${this.opts.selfId} refused the ${method} call: it claims to come from ${claimed === undefined ? "no node" : `node ${claimed}`} ` +
          `but its certificate names ${proven.length === 0 ? "no node" : proven.join(", ")}; each node needs its own certificate (cairn tls cert create --node ID)`,
      ),
    };
  }

  /** Hands inbound messages to the node, unless we are stopping: then no callback fires. */
  private deliver(messages: Message[]): void {
    const handlers = this.handlers;
    if (messages.length === 0 || this.state !== "running" || handlers === undefined) return;
    try {
      handlers.onMessages(messages);
    } catch (err) {
      rethrowOutside(err);
    }
  }

  private serveStream(call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>): void {
    const refused = this.refusal(call, "Stream");
    if (refused !== undefined) {
      callback(refused);
      return;
    }
    new InboundStream(call, callback, this.inboundContext, this.inboundStreams);
  }

  private serveInstallSnapshot(call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>): void {
    const refused = this.refusal(call, "InstallSnapshot");
    if (refused !== undefined) {
      callback(refused);
      return;
    }
    const inFlight = this.inboundSnapshots.size;
    if (inFlight >= this.limits.inboundSnapshotsMax) {
      this.log.warn({ sender: senderOf(call), inboundSnapshotsMax: this.limits.inboundSnapshotsMax }, "refused a snapshot transfer: too many in flight");
      callback({
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `node ${this.opts.selfId} is already receiving ${inFlight} snapshots (inboundSnapshotsMax); retry later`,
      });
      return;
    }
    new InboundSnapshot(call, callback, this.inboundContext, this.inboundSnapshots);
  }

  private serveForward(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>): void {
    const refused = this.refusal(call, "Forward");
    if (refused !== undefined) {
      callback(refused);
      return;
    }
    const inFlight = this.inboundForwards.size;
    if (inFlight >= this.limits.forwardsInFlightMax) {
      callback({
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `node ${this.opts.selfId} already has ${inFlight} forwarded requests in flight (forwardsInFlightMax); retry later`,
      });
      return;
    }
    new InboundForward(call, callback, this.inboundContext, this.inboundForwards);
  }
}
