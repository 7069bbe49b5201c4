// What the driver needs from the world, as interfaces: a clock and scheduler, log storage, and a
// peer network. Production passes the real ones (timers, LevelDB, gRPC); the deterministic
// simulator passes virtual time, a simulated disk and a simulated network, and so runs this same
// driver, with its one Ready loop, under faults no real machine would schedule on demand.

import type { Message, NodeId } from "../core/types.js";

// ---------------------------------------------------------------- time

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds on a clock that only moves forward (wall-clock jumps do not move it back). */
  nowMs(): number;
  /** Runs `fn` once, after `delayMs`. */
  setTimer(fn: () => void, delayMs: number): Timer;
  /** Runs `fn` after the current turn of the event loop, before timers that fall due later. */
  soon(fn: () => void): void;
}

/** The process's own clock: performance.now(), setTimeout and setImmediate. */
export const systemClock: Clock = {
  nowMs: () => performance.now(),
  setTimer(fn, delayMs) {
    const handle = setTimeout(fn, delayMs);
    return { cancel: () => clearTimeout(handle) };
  },
  soon(fn) {
    setImmediate(fn);
  },
};

// ---------------------------------------------------------------- the peer network

/** What the network hands to the node. Called only between start() and stop(). */
export interface PeerHandlers {
  /** Inbound Raft messages addressed to this node, in arrival order. */
  onMessages(messages: Message[]): void;
  /** A send to this peer failed or its link broke: once per failure, never once per message. */
  onUnreachable(peer: NodeId): void;
  /** The outcome of a snapshot transfer this node sent. */
  onSnapshotStatus(peer: NodeId, ok: boolean): void;
  /** A peer forwarded a request (a follower's client proposal, say): opaque bytes in and out. */
  onForward(request: Uint8Array): Promise<Uint8Array>;
}

export interface PeerNetwork {
  /** Starts listening and delivering to `handlers`; resolves with the bound port, if it has one. */
  start(handlers: PeerHandlers): Promise<number | undefined>;
  /** Best effort, as Raft assumes: a message may be lost, and the core then resends. */
  send(messages: readonly Message[]): void;
  /** Sends opaque bytes to a peer's onForward and resolves with its reply; rejects with a ForwardError. */
  forward(to: NodeId, request: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  setPeer(id: NodeId, address: string): void;
  removePeer(id: NodeId): void;
  /** Closes every link; no handler is called once stop() has begun. */
  stop(): Promise<void>;
}

/**
 * Why a forward failed. The first group guarantees the request never reached the peer's
 * handler, so it is safe to send again (to the next leader, say); the second leaves that unknown.
 * - unknownPeer: no address is known for the peer.
 * - notConnected: the link to the peer is down, so nothing was sent.
 * - overloaded: too many forwards are already in flight to the peer; nothing was sent.
 * - stopped: this node's network is stopped.
 * - timeout: no reply in time; the peer may have acted on it.
 * - remote: the peer's handler failed; it may have acted on part of it.
 * - transport: the call broke; it may or may not have reached the peer.
 */
export type ForwardFailure = "unknownPeer" | "notConnected" | "overloaded" | "stopped" | "timeout" | "remote" | "transport";

const NEVER_DELIVERED: ReadonlySet<ForwardFailure> = new Set(["unknownPeer", "notConnected", "overloaded", "stopped"]);

export class ForwardError extends Error {
  constructor(
    readonly peer: NodeId,
    readonly failure: ForwardFailure,
    message: string,
  ) {
    super(message);
    this.name = "ForwardError";
  }

  /** True when the peer certainly never saw the request, so sending it again cannot apply it twice. */
  get neverDelivered(): boolean {
    return NEVER_DELIVERED.has(this.failure);
  }
}
