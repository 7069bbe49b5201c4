// A simulated peer network: each node gets an endpoint implementing the driver's PeerNetwork
// port. Every directed link has a mode:
//   up    messages arrive after a delay, in order (as on the real transport's one stream per peer),
//         unless the profile reorders them; the profile may also drop and duplicate;
//   drop  messages are lost (a broken connection whose queue overflowed, a firewall);
//   hold  messages wait, in order and bounded as the real transport's queue, and arrive when the
//         link heals: the late delivery that a reconnect produces.
// Links are directed, so one-way partitions are a pair of modes. Snapshots travel on their own
// and take time in proportion to their size; forwards are calls that fail as gRPC's do.

import { ForwardError, type PeerHandlers, type PeerNetwork } from "../../../src/raft/node/ports.js";
import type { SeededRandom } from "../../../src/raft/core/random.js";
import type { Message, NodeId, SnapshotRequest } from "../../../src/raft/core/types.js";
import type { SimProcess, SimWorld } from "./world.js";

export interface LinkProfile {
  readonly dropRate: number;
  readonly duplicateRate: number;
  readonly delayMinMs: number;
  readonly delayMaxMs: number;
  /** Deliver each message after its own delay, so later ones may overtake earlier ones. */
  readonly reorder: boolean;
}

export const CALM_LINKS: LinkProfile = { dropRate: 0, duplicateRate: 0, delayMinMs: 1, delayMaxMs: 4, reorder: false };

export type LinkMode = "up" | "drop" | "hold";

export interface NetworkStats {
  delivered: number;
  dropped: number;
  held: number;
  released: number;
  snapshotsSent: number;
  forwards: number;
}

/** Messages a held link keeps, at most; past it the oldest go, as the real transport's queue drops them. */
const HELD_MESSAGES_MAX = 512;

interface Endpoint {
  readonly process: SimProcess;
  /** The incarnation that listens here: once it dies, so does the endpoint. */
  readonly incarnation: number;
  readonly handlers: PeerHandlers;
  /** Forwards this endpoint is serving: they fail when it dies. */
  readonly serving: Set<() => void>;
}

export class SimNetwork {
  profile: LinkProfile = CALM_LINKS;
  readonly stats: NetworkStats = { delivered: 0, dropped: 0, held: 0, released: 0, snapshotsSent: 0, forwards: 0 };
  private readonly modes = new Map<string, LinkMode>();
  private readonly held = new Map<string, Message[]>();
  /** When the last message on a link arrives: later ones may not overtake it. */
  private readonly lastArrivalMs = new Map<string, number>();
  private readonly endpoints = new Map<NodeId, Endpoint>();

  /** Optional: every message as its sender hands it over, before any fault touches it (checkers watch here). */
  onSend: ((m: Message) => void) | undefined;
  /** Optional: wraps each delivery, so a checker can look at the receiver just before and just after it steps the message. */
  aroundStep: ((m: Message, step: () => void) => void) | undefined;

  constructor(
    private readonly world: SimWorld,
    private readonly rng: SeededRandom,
    /** Optional: messages as they are delivered, for traces and stats. */
    private readonly onDeliver?: (m: Message) => void,
  ) {}

  /** The PeerNetwork a node's driver uses, for the process it runs in. */
  endpoint(id: NodeId, process: SimProcess): PeerNetwork {
    return new SimEndpoint(this, id, process);
  }

  mode(from: NodeId, to: NodeId): LinkMode {
    return this.modes.get(linkKey(from, to)) ?? "up";
  }

  /** Sets one direction of a link; a held link that comes up delivers what it held, in order. */
  setMode(from: NodeId, to: NodeId, mode: LinkMode): void {
    const key = linkKey(from, to);
    const before = this.mode(from, to);
    if (mode === before) return;
    if (mode === "up") this.modes.delete(key);
    else this.modes.set(key, mode);
    if (before === "up") this.reportUnreachable(from, to);
    if (before === "hold") {
      const held = this.held.get(key) ?? [];
      this.held.delete(key);
      if (mode === "up") {
        for (const m of held) this.travel(m, key);
        this.stats.released += held.length;
      }
    }
  }

  /**
   * A node's process died: what its transport still held for other nodes dies with it (the real
   * queue lives in the sender's memory). What is already on the wire still arrives.
   */
  senderDied(id: NodeId): void {
    for (const [key, queue] of this.held) {
      if (!key.startsWith(`${id}>`)) continue;
      this.stats.dropped += queue.length;
      this.held.delete(key);
    }
  }

  /** Every link up; held messages are delivered. */
  healAll(): void {
    for (const key of [...this.modes.keys()]) {
      const [from, to] = key.split(">") as [NodeId, NodeId];
      this.setMode(from, to, "up");
    }
  }

  // ------------------------------------------------ used by endpoints

  register(id: NodeId, endpoint: Endpoint): void {
    // A restarted process replaces its dead incarnation: calls that one was serving have broken.
    const before = this.endpoints.get(id);
    if (before !== undefined) for (const fail of before.serving) fail();
    this.endpoints.set(id, endpoint);
  }

  unregister(id: NodeId, incarnation: number): void {
    const e = this.endpoints.get(id);
    if (e === undefined || e.incarnation !== incarnation) return;
    this.endpoints.delete(id);
    for (const fail of e.serving) fail();
  }

  /** The node's endpoint, if the incarnation listening there is alive. */
  live(id: NodeId): Endpoint | undefined {
    const e = this.endpoints.get(id);
    return e !== undefined && e.process.isAlive(e.incarnation) ? e : undefined;
  }

  transmit(m: Message): void {
    this.onSend?.(m);
    if (m.type === "snapshot") {
      this.transferSnapshot(m);
      return;
    }
    const key = linkKey(m.from, m.to);
    const mode = this.mode(m.from, m.to);
    if (mode === "drop" || this.rng.chance(this.profile.dropRate)) {
      this.stats.dropped++;
      // The real transport reports a broken stream, not each message; a few reports are realistic.
      if (m.type === "append" && this.rng.chance(0.2)) this.reportUnreachable(m.from, m.to);
      return;
    }
    if (mode === "hold") {
      let queue = this.held.get(key);
      if (queue === undefined) this.held.set(key, (queue = []));
      queue.push(m);
      this.stats.held++;
      if (queue.length > HELD_MESSAGES_MAX) {
        queue.shift();
        this.stats.dropped++;
      }
      return;
    }
    const copies = this.rng.chance(this.profile.duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) this.travel(m, key);
  }

  /** Forwards `request` from one node to another's onForward, as a gRPC unary call would. */
  forward(from: NodeId, fromProcess: SimProcess, to: NodeId, request: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    this.stats.forwards++;
    return new Promise<Uint8Array>((resolve, reject) => {
      let settled = false;
      const settle = (outcome: Uint8Array | Error): void => {
        if (settled) return;
        settled = true;
        timer.cancel();
        if (outcome instanceof Uint8Array) resolve(outcome);
        else reject(outcome);
      };
      // The caller's side runs in the caller's incarnation: paused, it hears nothing; dead, never.
      const callerIncarnation = fromProcess.incarnationId;
      const answer = (outcome: Uint8Array | Error, delayMs: number): void => {
        fromProcess.schedule(this.world.nowMs + delayMs, () => settle(outcome), callerIncarnation);
      };
      const timer = fromProcess.schedule(this.world.nowMs + timeoutMs,
        () => settle(new ForwardError(to, "timeout", `forwarding to peer ${to} timed out after ${timeoutMs} ms`)), callerIncarnation);
      const target = this.live(to);
      if (this.mode(from, to) !== "up" || target === undefined) {
        answer(new ForwardError(to, "notConnected", `the link to peer ${to} is down; nothing was sent`), 0);
        return;
      }
      this.world.at(this.world.nowMs + this.delayMs(), () => {
        const now = this.live(to);
        if (now !== target || this.mode(from, to) !== "up") {
          answer(new ForwardError(to, "transport", `the connection to peer ${to} broke during the call`), 1);
          return;
        }
        const failServing = (): void => answer(new ForwardError(to, "transport", `peer ${to} went away during the call`), 1);
        target.serving.add(failServing);
        target.process.schedule(this.world.nowMs, () => {
          target.handlers.onForward(request).then(
            (reply) => {
              target.serving.delete(failServing);
              // The reply is lost on a link that went down in the other direction: the caller times out.
              if (this.mode(to, from) === "up") answer(reply, this.delayMs());
            },
            (err: unknown) => {
              target.serving.delete(failServing);
              answer(new ForwardError(to, "remote", `peer ${to} failed the forwarded request: ${err instanceof Error ? err.message : String(err)}`), this.delayMs());
            },
          );
        }, target.incarnation);
      });
    });
  }

  // ------------------------------------------------ internals

  private delayMs(): number {
    const p = this.profile;
    return p.delayMinMs + this.rng.nextInt(p.delayMaxMs - p.delayMinMs + 1);
  }

  private travel(m: Message, key: string): void {
    let arriveMs = this.world.nowMs + this.delayMs();
    if (!this.profile.reorder) arriveMs = Math.max(arriveMs, this.lastArrivalMs.get(key) ?? 0);
    this.lastArrivalMs.set(key, arriveMs);
    // The connection is to the process listening now; a restart breaks it, and what was on the wire is lost.
    const target = this.live(m.to);
    this.world.at(arriveMs, () => {
      if (target === undefined || this.live(m.to) !== target || this.mode(m.from, m.to) === "drop") {
        this.stats.dropped++;
        return;
      }
      target.process.schedule(this.world.nowMs, () => {
        this.stats.delivered++;
        this.onDeliver?.(m);
        this.step(target, m);
      }, target.incarnation);
    });
  }

  private transferSnapshot(m: SnapshotRequest): void {
    this.stats.snapshotsSent++;
    // Transfers take time: a base, the bytes, and now and then a long stall.
    const durationMs = 5 + Math.ceil(m.snapshot.data.byteLength / 10_000) + this.rng.nextInt(this.rng.chance(0.1) ? 1000 : 50);
    const target = this.live(m.to);
    const ok = (): boolean => target !== undefined && this.live(m.to) === target && this.mode(m.from, m.to) === "up";
    if (!ok()) {
      this.world.at(this.world.nowMs + 1, () => this.reportSnapshot(m, false));
      return;
    }
    this.world.at(this.world.nowMs + durationMs, () => {
      if (!ok() || target === undefined) {
        this.reportSnapshot(m, false);
        return;
      }
      target.process.schedule(this.world.nowMs, () => {
        this.stats.delivered++;
        this.onDeliver?.(m);
        this.step(target, m);
        // The transfer's call returns once the receiver holds the snapshot.
        this.reportSnapshot(m, true);
      }, target.incarnation);
    });
  }

  private step(target: Endpoint, m: Message): void {
    const deliver = (): void => target.handlers.onMessages([m]);
    if (this.aroundStep === undefined) deliver();
    else this.aroundStep(m, deliver);
  }

  private reportSnapshot(m: SnapshotRequest, delivered: boolean): void {
    const sender = this.live(m.from);
    if (sender === undefined) return;
    sender.process.schedule(this.world.nowMs + this.delayMs(), () => sender.handlers.onSnapshotStatus(m.to, delivered), sender.incarnation);
  }

  private reportUnreachable(from: NodeId, to: NodeId): void {
    const sender = this.live(from);
    if (sender === undefined) return;
    sender.process.schedule(this.world.nowMs + 1, () => sender.handlers.onUnreachable(to), sender.incarnation);
  }
}

class SimEndpoint implements PeerNetwork {
  private started = false;
  /** An endpoint belongs to the incarnation it was made for: a dead process sends nothing. */
  private readonly incarnation: number;

  constructor(
    private readonly network: SimNetwork,
    private readonly id: NodeId,
    private readonly process: SimProcess,
  ) {
    this.incarnation = process.incarnationId;
  }

  start(handlers: PeerHandlers): Promise<number | undefined> {
    this.started = true;
    this.network.register(this.id, { process: this.process, incarnation: this.incarnation, handlers, serving: new Set() });
    return Promise.resolve(undefined);
  }

  send(messages: readonly Message[]): void {
    if (!this.started || !this.process.isAlive(this.incarnation)) return;
    for (const m of messages) this.network.transmit(m);
  }

  forward(to: NodeId, request: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (!this.started || !this.process.isAlive(this.incarnation)) {
      return Promise.reject(new ForwardError(to, "stopped", `node ${this.id} has no network`));
    }
    return this.network.forward(this.id, this.process, to, request, timeoutMs);
  }

  // Routing is by node id: addresses mean nothing here.
  setPeer(): void {}

  removePeer(): void {}

  stop(): Promise<void> {
    this.started = false;
    this.network.unregister(this.id, this.incarnation);
    return Promise.resolve();
  }
}

function linkKey(from: NodeId, to: NodeId): string {
  return `${from}>${to}`;
}
