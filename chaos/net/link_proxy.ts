// A TCP proxy in front of one node's peer port that can cut and degrade each direction between
// two nodes. Every accepted connection joins the node that dialed it (named from its remote
// address) to the node behind the target, so its two byte streams are the directions
// dialer -> target and target -> dialer, and each obeys that direction's rule.
//
// A cut stalls its direction: the proxy stops reading, holds what it has, and resumes on heal.
// That is what a silent drop does to a TCP stream (the kernel's blackhole in netns mode too): the
// sender's window fills, it retransmits, and what it sent arrives late when the link returns.
// Dropping bytes instead would corrupt the stream's framing; resetting connections would be a
// visible error that a real partition never gives. A connection opened while cut is accepted and
// its cut direction stalled from the start.
//
// A degraded direction delivers each chunk after delayMs +- jitterMs, never before the chunk
// ahead of it (TCP keeps byte order). TCP never loses bytes, it retransmits them, so "loss" is an
// extra stall of one retransmission timeout on a chunk, with probability lossPercent.

import { type Server, type Socket, createServer, connect } from "node:net";
import { Fifo } from "../../src/common/fifo.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import { type LinkFault, checkLinkFault } from "./network.js";

export interface LinkProxyOptions {
  readonly listenHost: string;
  /** 0 picks a free port; `port` says which. */
  readonly listenPort: number;
  readonly targetHost: string;
  readonly targetPort: number;
  /** The node behind the target: the far end of every connection. */
  readonly targetId: string;
  /** The node that dialed, from the connection's remote IP; undefined for a stranger, whose bytes no rule touches. */
  readonly dialerOf: (remoteAddress: string) => string | undefined;
  readonly seed: number;
}

/** Bytes a direction holds (delayed or stalled) before it stops reading from its source. */
export const LINK_QUEUE_BYTES_MAX = 4 * 1024 * 1024;
/** The extra stall of a "lost" chunk: a retransmission timeout, from TCP's 200 ms floor up. */
export const LOSS_STALL_MIN_MS = 200;
export const LOSS_STALL_MAX_MS = 600;

export interface LinkProxyStats {
  readonly connectionsAccepted: number;
  readonly connectionsOpen: number;
}

/** The cuts and faults by direction, as every connection of one proxy reads them. */
class LinkRules {
  private readonly cuts = new Set<string>();
  private readonly faults = new Map<string, LinkFault>();

  isCut(from: string, to: string): boolean {
    return this.cuts.has(directionKey(from, to));
  }

  faultOf(from: string, to: string): LinkFault | undefined {
    return this.faults.get(directionKey(from, to));
  }

  cut(from: string, to: string): void {
    this.cuts.add(directionKey(from, to));
  }

  degrade(from: string, to: string, fault: LinkFault): void {
    this.faults.set(directionKey(from, to), fault);
  }

  heal(): void {
    this.cuts.clear();
    this.faults.clear();
  }
}

function directionKey(from: string, to: string): string {
  return `${from}\u0000${to}`;
}

export class LinkProxy {
  private readonly rules = new LinkRules();
  private readonly random: SeededRandom;
  private readonly connections = new Set<ProxiedConnection>();
  private connectionsAccepted = 0;
  private closed = false;

  private constructor(
    private readonly opts: LinkProxyOptions,
    private readonly server: Server,
    /** The port it listens on. */
    readonly port: number,
  ) {
    this.random = new SeededRandom(opts.seed);
  }

  static async start(opts: LinkProxyOptions): Promise<LinkProxy> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
    const port = await new Promise<number>((resolve, reject) => {
      server.once("error", (err) => reject(new Error(`the link proxy for node ${opts.targetId} cannot listen on ${opts.listenHost}:${opts.listenPort}: ${err.message}`)));
      server.listen(opts.listenPort, opts.listenHost, () => {
        const address = server.address();
        resolve(typeof address === "object" && address !== null ? address.port : opts.listenPort);
      });
    });
    const proxy = new LinkProxy(opts, server, port);
    server.on("connection", (socket) => proxy.accept(socket));
    return proxy;
  }

  /** Stalls every byte from `from` to `to` until heal. Idempotent. */
  cut(from: string, to: string): void {
    this.rules.cut(from, to);
    this.refresh();
  }

  degrade(from: string, to: string, fault: LinkFault): void {
    checkLinkFault(fault);
    this.rules.degrade(from, to, fault);
    this.refresh();
  }

  /** Lifts every cut and fault; stalled bytes flow again, in order. */
  heal(): void {
    this.rules.heal();
    this.refresh();
  }

  stats(): LinkProxyStats {
    return { connectionsAccepted: this.connectionsAccepted, connectionsOpen: this.connections.size };
  }

  /** Stops listening and resets every connection. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const connection of this.connections) connection.reset();
    this.connections.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private refresh(): void {
    for (const connection of this.connections) connection.refresh();
  }

  private accept(client: Socket): void {
    if (this.closed) {
      client.resetAndDestroy();
      return;
    }
    this.connectionsAccepted++;
    const remote = (client.remoteAddress ?? "").replace(/^::ffff:/, "");
    const dialer = this.opts.dialerOf(remote) ?? `stranger ${remote}`;
    const target = connect({ host: this.opts.targetHost, port: this.opts.targetPort, allowHalfOpen: true });
    const connection = new ProxiedConnection(client, target, dialer, this.opts.targetId, this.rules, this.random, () => this.connections.delete(connection));
    this.connections.add(connection);
  }
}

/** One client connection and its connection to the target, and the two directions between them. */
class ProxiedConnection {
  private upstream: DirectedPipe | undefined;
  private downstream: DirectedPipe | undefined;
  private socketsClosed = 0;

  constructor(
    private readonly client: Socket,
    private readonly target: Socket,
    dialer: string,
    targetId: string,
    rules: LinkRules,
    random: SeededRandom,
    onClosed: () => void,
  ) {
    // The client waits, paused, until the target answers; a target that is down (a node being
    // restarted) resets the client, as the node's own closed port would.
    target.once("connect", () => {
      this.upstream = new DirectedPipe(dialer, targetId, client, target, rules, random);
      this.downstream = new DirectedPipe(targetId, dialer, target, client, rules, random);
    });
    for (const [socket, other] of [[client, target], [target, client]] as const) {
      socket.on("error", () => other.resetAndDestroy());
      socket.once("close", (hadError) => {
        if (hadError && !other.destroyed) other.resetAndDestroy();
        if (++this.socketsClosed < 2) return;
        this.upstream?.stop();
        this.downstream?.stop();
        onClosed();
      });
    }
  }

  refresh(): void {
    this.upstream?.refresh();
    this.downstream?.refresh();
  }

  reset(): void {
    this.upstream?.stop();
    this.downstream?.stop();
    this.client.resetAndDestroy();
    this.target.resetAndDestroy();
  }
}

interface HeldChunk {
  readonly chunk: Buffer;
  readonly dueAtMs: number;
}

/**
 * One direction of a connection: reads `source`, holds each chunk until it is due and the
 * direction is not cut, writes it to `sink`. Invariant: chunks leave in the order they came.
 */
class DirectedPipe {
  private readonly held = new Fifo<HeldChunk>();
  private heldBytes = 0;
  private lastDueAtMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private sinkBlocked = false;
  private sourceEnded = false;
  private sinkEnded = false;
  private stopped = false;

  constructor(
    private readonly from: string,
    private readonly to: string,
    private readonly source: Socket,
    private readonly sink: Socket,
    private readonly rules: LinkRules,
    private readonly random: SeededRandom,
  ) {
    source.on("data", (chunk: Buffer) => this.take(chunk));
    source.once("end", () => {
      this.sourceEnded = true;
      this.pump();
    });
    sink.on("drain", () => {
      this.sinkBlocked = false;
      this.pump();
    });
    this.pump();
  }

  /** The rules changed: a healed direction delivers what it held, a cut one stops. */
  refresh(): void {
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private take(chunk: Buffer): void {
    const nowMs = performance.now();
    const fault = this.rules.faultOf(this.from, this.to);
    const dueAtMs = Math.max(this.lastDueAtMs, nowMs + (fault === undefined ? 0 : this.sampleDelayMs(fault)));
    this.lastDueAtMs = dueAtMs;
    this.held.push({ chunk, dueAtMs });
    this.heldBytes += chunk.byteLength;
    this.pump();
  }

  private sampleDelayMs(fault: LinkFault): number {
    const jitterMs = fault.jitterMs === 0 ? 0 : (this.random.nextFloat() * 2 - 1) * fault.jitterMs;
    const lossStallMs = this.random.chance(fault.lossPercent / 100)
      ? LOSS_STALL_MIN_MS + this.random.nextFloat() * (LOSS_STALL_MAX_MS - LOSS_STALL_MIN_MS)
      : 0;
    return Math.max(0, fault.delayMs + jitterMs) + lossStallMs;
  }

  /** Delivers every due chunk it may, then decides whether to read on and when to look again. */
  private pump(): void {
    if (this.stopped) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const cut = this.rules.isCut(this.from, this.to);
    const nowMs = performance.now();
    for (let head = this.held.peek(); !cut && !this.sinkBlocked && head !== undefined && head.dueAtMs <= nowMs; head = this.held.peek()) {
      this.held.shift();
      this.heldBytes -= head.chunk.byteLength;
      if (this.sink.destroyed) continue;
      if (!this.sink.write(head.chunk)) this.sinkBlocked = true;
    }
    const head = this.held.peek();
    if (!cut && !this.sinkBlocked && head !== undefined) {
      this.timer = setTimeout(() => this.pump(), Math.max(0, head.dueAtMs - nowMs));
    }
    if (!cut && head === undefined && this.sourceEnded && !this.sinkEnded) {
      this.sinkEnded = true;
      if (!this.sink.destroyed) this.sink.end();
    }
    const readOn = !cut && !this.sinkBlocked && this.heldBytes < LINK_QUEUE_BYTES_MAX;
    if (readOn && this.source.isPaused()) this.source.resume();
    else if (!readOn && !this.source.isPaused()) this.source.pause();
  }
}
