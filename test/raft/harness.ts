// An in-memory network of Raft nodes for scenario tests (in the spirit of etcd raft's
// `newNetwork`). Each peer is a RaftNode core driven by the driver's own ReadyLoop, the one Ready
// loop there is, over a MemoryLogStorage (its disk), a harness clock and a harness network
// endpoint; its state machine is the list of entries it applied. Tests still step messages into
// the cores, call propose(), readIndex() and tick() on them directly, and look at core state and
// at every message sent.
//
// Nothing runs until the test awaits stabilize() (or a method that calls it). That runs what the
// loops queued on their clocks, lets their promises settle, and delivers queued messages through
// one FIFO queue, until nothing is left to do. So a run is a pure function of the seeds and of
// what the test does; faults are dropped messages and restarts.

import assert from "node:assert/strict";
import { pino } from "pino";
import {
  type Proposed,
  type RaftConfig,
  type RaftInitialState,
  RaftNode,
  bootstrapSnapshot,
  defaultRaftConfig,
} from "../../src/raft/core/raft.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import {
  type ConfState,
  type Entry,
  type Message,
  NONE,
  type NodeId,
  type ReadState,
  type Snapshot,
  entryPayloadBytes,
  isLocalMessage,
} from "../../src/raft/core/types.js";
import { type Clock, ForwardError, type PeerNetwork, type Timer } from "../../src/raft/node/ports.js";
import { ReadyLoop } from "../../src/raft/node/ready_loop.js";
import { type DriverPlantedBug, type DriverSettings, driverDefaults } from "../../src/raft/node/settings.js";
import { silentRaftObserver } from "../../src/raft/node/observer.js";
import type { PersistedState } from "../../src/raft/storage/log_storage.js";
import { type DiskImage, MemoryLogStorage } from "../../src/raft/storage/memory.js";
import { settlePromises } from "../support/sim/world.js";

export type ConfigOverrides = Partial<Omit<RaftConfig, "id" | "random">>;

/** A bound on stabilize(): a run that has not settled by then is livelocked, which is a failure. */
const STABILIZE_ROUNDS_MAX = 10_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

/** A seed per node, derived from the cluster seed and the id, so nodes do not share a sequence. */
export function seedFor(seed: number, id: NodeId): number {
  let h = seed >>> 0;
  for (let i = 0; i < id.length; i++) h = (Math.imul(h, 31) + id.charCodeAt(i)) >>> 0;
  return h;
}

export function nodeConfig(id: NodeId, seed: number, overrides: ConfigOverrides = {}): RaftConfig {
  return { ...defaultRaftConfig, ...overrides, id, random: new SeededRandom(seedFor(seed, id)) };
}

/** One record per applied entry, so tests can compare what each state machine saw. */
export interface AppliedEntry {
  readonly index: number;
  readonly term: number;
  /** The entry's payload as text; "" for a leader's empty entry; "conf:<type>:<node>" for a change. */
  readonly text: string;
}

function describeEntry(e: Entry): AppliedEntry {
  const text = e.type === "normal" ? decoder.decode(e.data) : `conf:${e.change.type}:${e.change.node}`;
  return { index: e.index, term: e.term, text };
}

function encodeState(applied: readonly AppliedEntry[]): Uint8Array {
  return bytes(JSON.stringify(applied));
}

function decodeState(data: Uint8Array): AppliedEntry[] {
  return data.byteLength === 0 ? [] : (JSON.parse(decoder.decode(data)) as AppliedEntry[]);
}

/** Entries 1..n whose terms are `terms`, as the paper's figures draw logs. */
export function logWithTerms(terms: readonly number[], firstIndex = 1): Entry[] {
  return terms.map((term, i) => {
    const index = firstIndex + i;
    return { index, term, type: "normal", data: bytes(`${index}@${term}`) };
  });
}

/**
 * The recovered state of a node whose log is `terms` (from index 1) in a cluster of `voters`, as
 * if it had crashed at `term` after voting for `vote`. Nothing is committed, as in the paper.
 */
export function paperState(voters: readonly NodeId[], terms: readonly number[], term: number, vote: NodeId = NONE): RaftInitialState {
  const conf: ConfState = { voters: [...voters].sort(), learners: [] };
  return {
    snapshot: { metadata: { index: 0, term: 0, conf }, data: new Uint8Array(0) },
    hardState: { term, vote, commit: 0 },
    entries: logWithTerms(terms),
  };
}

// ---------------------------------------------------------------- one peer's ports

/** What a peer needs from the network it belongs to. */
interface PeerHost {
  /** Queues a callback of the peer's loop (Clock.soon) for stabilize() to run, in order. */
  soon(fn: () => void): void;
  /** Takes the messages the peer's loop sends: recorded in `sent` and queued for delivery. */
  carry(messages: readonly Message[]): void;
  /** The peer's loop failed (a harness assertion, a broken invariant): stabilize() throws it. */
  fail(err: Error): void;
}

const silentLogger = pino({ level: "silent" });

interface PendingTimer {
  readonly dueMs: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/**
 * A peer's clock. Its time is a counter that moves only when the test ticks the peer, so a timer
 * fires then and never by itself; `soon` queues onto the network's run queue. The loop does not
 * tick the core: the test does, through tick().
 */
class PeerClock implements Clock {
  private elapsedMs = 0;
  private timers: PendingTimer[] = [];

  constructor(private readonly host: PeerHost) {}

  nowMs(): number {
    return this.elapsedMs;
  }

  setTimer(fn: () => void, delayMs: number): Timer {
    const timer: PendingTimer = { dueMs: this.elapsedMs + delayMs, fn, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => { timer.cancelled = true; } };
  }

  soon(fn: () => void): void {
    this.host.soon(fn);
  }

  /** Moves time on by `ms`; the timers now due run next in stabilize(), earliest first. */
  advance(ms: number): void {
    this.elapsedMs += ms;
    const due = this.timers.filter((t) => t.dueMs <= this.elapsedMs).sort((x, y) => x.dueMs - y.dueMs);
    this.timers = this.timers.filter((t) => t.dueMs > this.elapsedMs);
    for (const t of due) if (!t.cancelled) this.soon(t.fn);
  }
}

/** What a power loss right now would leave of `storage`: the writes whose sync has completed. */
function durableImage(storage: MemoryLogStorage): DiskImage {
  return storage.crash(0).image;
}

/**
 * What a message promises must already be durable when it leaves: an acknowledged append is on
 * disk up to its index, and a granted vote is recorded. A Ready may also carry a move to a later
 * term, which legitimately supersedes both promises (a newer leader may overwrite the entries; an
 * older term can no longer be voted in), so only promises in the durable term are checked.
 */
function assertBackedByStorage(m: Message, durable: DiskImage): void {
  // With no hard state written yet, a restarted core would be in its snapshot's term.
  const term = durable.hardState?.term ?? durable.snapshot?.metadata.term ?? 0;
  if (term !== m.term) return;
  if (m.type === "appendResp" && !m.reject) {
    const last = (durable.snapshot?.metadata.index ?? 0) + durable.entries.length;
    assert.ok(m.index <= last, `${m.from} acknowledged index ${m.index} but only ${last} is durable`);
  }
  if (m.type === "voteResp" && !m.reject) {
    assert.equal(durable.hardState?.vote ?? NONE, m.to, `${m.from} granted ${m.to} a vote in term ${m.term} before the vote was durable`);
  }
}

/** One peer's side of the network: what its loop sends is checked against its disk, then carried. */
class PeerEndpoint implements PeerNetwork {
  constructor(
    private readonly storage: MemoryLogStorage,
    private readonly host: PeerHost,
  ) {}

  start(): Promise<number | undefined> {
    return Promise.resolve(undefined);
  }

  send(messages: readonly Message[]): void {
    const durable = durableImage(this.storage);
    for (const m of messages) assertBackedByStorage(m, durable);
    this.host.carry(messages);
  }

  forward(to: NodeId): Promise<Uint8Array> {
    return Promise.reject(new ForwardError(to, "unknownPeer", "the scenario harness carries Raft messages only; forwarding is tested with the driver"));
  }

  // Routing is by node id: addresses mean nothing here.
  setPeer(): void {}

  removePeer(): void {}

  stop(): Promise<void> {
    return Promise.resolve();
  }
}

// ---------------------------------------------------------------- a peer

export class Peer {
  readonly raft: RaftNode;
  readonly loop: ReadyLoop;
  private readonly clock: PeerClock;
  /** The state machine: every applied entry, in order. */
  applied: AppliedEntry[] = [];
  appliedIndex = 0;
  readonly readStates: ReadState[] = [];
  readonly failedReads: string[] = [];
  /** Entry count and payload bytes of each non-empty batch of committed entries a Ready handed out. */
  readonly appliedBatches: { entries: number; bytes: number }[] = [];
  /** Set once the peer crashed (restart() replaced it) or its loop failed: the loop does nothing more. */
  private stopped = false;

  private constructor(
    readonly config: RaftConfig,
    /** The peer's disk: restart() starts the next peer on what a crash leaves of it. */
    readonly storage: MemoryLogStorage,
    stored: PersistedState,
    host: PeerHost,
    plantedBug: DriverPlantedBug | undefined,
  ) {
    const { hardState, snapshot, entries } = stored;
    this.raft = new RaftNode(config, {
      ...(hardState === undefined ? {} : { hardState }),
      ...(snapshot === undefined ? {} : { snapshot }),
      entries,
      applied: snapshot?.metadata.index ?? 0,
    });
    this.clock = new PeerClock(host);
    const settings: DriverSettings = {
      ...driverDefaults,
      id: config.id,
      clock: this.clock,
      random: config.random,
      electionTimeoutTicks: config.electionTimeoutTicks,
      heartbeatIntervalTicks: config.heartbeatIntervalTicks,
      raft: {},
      plantedBug,
      observer: silentRaftObserver,
    };
    this.loop = new ReadyLoop(settings, this.raft, storage, new PeerEndpoint(storage, host), silentLogger, {
      // Tests hand proposals to the core directly.
      beforeReady: () => {},
      apply: (committed) => this.apply(committed),
      restore: (s) => this.restore(s),
      afterReady: (rd) => {
        this.readStates.push(...rd.readStates);
        this.failedReads.push(...rd.failedReads);
      },
      running: () => !this.stopped,
      fail: (err) => {
        this.stopped = true;
        host.fail(err);
      },
    }, hardState);
    if (snapshot !== undefined) this.restore(snapshot);
  }

  /** Starts a peer on `storage` as the driver starts a node: it loads the disk and builds the core from it. */
  static async start(config: RaftConfig, storage: MemoryLogStorage, host: PeerHost, plantedBug: DriverPlantedBug | undefined): Promise<Peer> {
    return new Peer(config, storage, await storage.load(), host, plantedBug);
  }

  /** What a power loss right now would leave on this peer's disk: the writes whose sync completed. */
  get durable(): DiskImage {
    return durableImage(this.storage);
  }

  /** Texts of the applied normal entries that carry data, in order (the "user" writes). */
  appliedTexts(): string[] {
    return this.applied.filter((a) => a.text !== "" && !a.text.startsWith("conf:")).map((a) => a.text);
  }

  /** One tick of the core, and of the clock its loop sees. */
  tick(): void {
    this.raft.tick();
    this.clock.advance(driverDefaults.tickMs);
  }

  /**
   * The process dies: its loop does nothing more. Returns its disk as a restart finds it: a killed
   * process loses no write the store took (the OS holds the unsynced ones), only what was in memory.
   */
  crash(): MemoryLogStorage {
    this.stopped = true;
    return this.storage.crash(this.storage.unsyncedWrites);
  }

  private apply(committed: readonly Entry[]): void {
    if (committed.length === 0) return;
    let batchBytes = 0;
    for (const e of committed) batchBytes += entryPayloadBytes(e);
    this.appliedBatches.push({ entries: committed.length, bytes: batchBytes });
    for (const e of committed) {
      assert.equal(e.index, this.appliedIndex + 1, `${this.config.id} applied ${e.index} after ${this.appliedIndex}`);
      this.applied.push(describeEntry(e));
      this.appliedIndex = e.index;
    }
  }

  private restore(snapshot: Snapshot): void {
    this.applied = decodeState(snapshot.data);
    this.appliedIndex = snapshot.metadata.index;
  }
}

// ---------------------------------------------------------------- the network

type DropRule = (m: Message) => boolean;

export class Network {
  readonly peers = new Map<NodeId, Peer>();
  /** Every message any node handed out, in order, whether or not it was delivered. */
  readonly sent: Message[] = [];
  readonly delivered: Message[] = [];
  private queue: Message[] = [];
  /** What the peers' loops queued on their clocks (Clock.soon), in order. */
  private runQueue: (() => void)[] = [];
  private failure: Error | undefined;
  private readonly isolated = new Set<NodeId>();
  private readonly cutLinks = new Set<string>();
  private dropRules: DropRule[] = [];
  private readonly host: PeerHost = {
    soon: (fn) => {
      this.runQueue.push(fn);
    },
    carry: (messages) => {
      for (const m of messages) {
        this.sent.push(m);
        this.queue.push(m);
      }
    },
    fail: (err) => {
      this.failure ??= err;
    },
  };

  constructor(
    readonly seed = 1,
    readonly defaults: ConfigOverrides = {},
    /** A bug to plant in every peer's Ready loop, to show that the harness's checks catch it. */
    readonly driverBug?: DriverPlantedBug,
  ) {}

  /** A new cluster whose founding voters all start from bootstrapSnapshot(ids). */
  static async bootstrap(ids: readonly NodeId[], seed = 1, defaults: ConfigOverrides = {}, driverBug?: DriverPlantedBug): Promise<Network> {
    const net = new Network(seed, defaults, driverBug);
    const snapshot = bootstrapSnapshot(ids);
    for (const id of ids) await net.add(id, { snapshot });
    return net;
  }

  /** Starts `id` on a disk that holds `initial`, as a driver starts from what it loads. */
  async add(id: NodeId, initial: Omit<RaftInitialState, "applied"> = {}, overrides: ConfigOverrides = {}): Promise<Peer> {
    assert.ok(!this.peers.has(id), `node ${id} already exists`);
    const snapshotIndex = initial.snapshot?.metadata.index ?? 0;
    const storage = new MemoryLogStorage({
      hardState: initial.hardState,
      snapshot: initial.snapshot,
      entries: (initial.entries ?? []).filter((e) => e.index > snapshotIndex),
    });
    const peer = await Peer.start(nodeConfig(id, this.seed, { ...this.defaults, ...overrides }), storage, this.host, this.driverBug);
    this.peers.set(id, peer);
    return peer;
  }

  node(id: NodeId): RaftNode {
    return this.peer(id).raft;
  }

  peer(id: NodeId): Peer {
    const p = this.peers.get(id);
    assert.ok(p !== undefined, `no node ${id}`);
    return p;
  }

  ids(): NodeId[] {
    return [...this.peers.keys()];
  }

  // ------------------------------------------------------------ faults

  isolate(id: NodeId): void {
    this.isolated.add(id);
  }

  cut(a: NodeId, b: NodeId): void {
    this.cutLinks.add(`${a}|${b}`);
    this.cutLinks.add(`${b}|${a}`);
  }

  /** Drops every message for which `rule` is true, until heal(). */
  drop(rule: DropRule): void {
    this.dropRules.push(rule);
  }

  heal(): void {
    this.isolated.clear();
    this.cutLinks.clear();
    this.dropRules = [];
  }

  private dropped(m: Message): boolean {
    if (this.isolated.has(m.from) || this.isolated.has(m.to)) return true;
    if (this.cutLinks.has(`${m.from}|${m.to}`)) return true;
    return this.dropRules.some((rule) => rule(m));
  }

  // ------------------------------------------------------------ running the loops

  /** Steps `m` into its recipient as if it had arrived (faults apply); `reached` gathers who must act. */
  private deliver(m: Message, reached: Set<Peer>): void {
    const target = this.peers.get(m.to);
    if (target === undefined) return;
    if (isLocalMessage(m)) {
      target.raft.step(m);
      reached.add(target);
      return;
    }
    if (this.dropped(m)) {
      // The transport hears that a snapshot transfer failed and tells the leader, as a real one does.
      if (m.type === "snapshot") this.reportSnapshot(m.from, m.to, true, reached);
      return;
    }
    this.delivered.push(m);
    target.raft.step(m);
    reached.add(target);
    if (m.type === "snapshot") this.reportSnapshot(m.from, m.to, false, reached);
  }

  private reportSnapshot(leader: NodeId, follower: NodeId, reject: boolean, reached: Set<Peer>): void {
    const p = this.peers.get(leader);
    if (p === undefined) return;
    p.raft.step({ type: "snapshotStatus", from: follower, to: leader, term: 0, reject });
    reached.add(p);
  }

  /** Delivers every queued message; then each peer that received some acts on them, as the driver does. */
  private deliverQueued(): void {
    const batch = this.queue;
    this.queue = [];
    const reached = new Set<Peer>();
    for (const m of batch) this.deliver(m, reached);
    for (const peer of reached) {
      // As the driver's onMessages: appends that the batch produced (a moved commit index) go out at once.
      peer.loop.sendLeaderMessagesNow();
      peer.loop.schedule();
    }
  }

  /** Lets promises settle; true when no peer's loop is in the middle of a Ready. */
  private async loopsIdle(): Promise<boolean> {
    let pumping = 0;
    for (const peer of this.peers.values()) {
      pumping++;
      void peer.loop.whenIdle().then(() => {
        pumping--;
      });
    }
    await settlePromises();
    return pumping === 0;
  }

  /** Steps `m` into its recipient as if it had arrived (faults still apply), then settles. */
  async send(m: Message): Promise<void> {
    this.queue.push(m);
    await this.stabilize();
  }

  /**
   * Runs the loops and delivers messages until no callback is queued, no loop is in the middle of
   * a Ready and no message is in flight. First every core with work gets its loop scheduled: the
   * test may have handed any core an input directly (a proposal, a read, a step, a tick).
   */
  async stabilize(): Promise<void> {
    for (const peer of this.peers.values()) if (peer.raft.hasReady()) peer.loop.schedule();
    for (let round = 0; round < STABILIZE_ROUNDS_MAX; round++) {
      const callbacks = this.runQueue;
      this.runQueue = [];
      for (const fn of callbacks) fn();
      // Asking whether a loop is still in the middle of a Ready costs a promise per peer, so it
      // is asked only once everything else is quiet.
      let idle = false;
      if (callbacks.length > 0) await settlePromises();
      else if (this.queue.length === 0) idle = await this.loopsIdle();
      if (this.failure !== undefined) throw this.failure;
      if (this.queue.length > 0) this.deliverQueued();
      else if (idle && this.runQueue.length === 0) return;
    }
    assert.fail(`the network did not settle within ${STABILIZE_ROUNDS_MAX} rounds`);
  }

  /** `times` rounds of: tick each of `ids` (default: every node) once, then settle. */
  async tick(times = 1, ids: readonly NodeId[] = this.ids()): Promise<void> {
    for (let t = 0; t < times; t++) {
      for (const id of ids) this.peer(id).tick();
      await this.stabilize();
    }
  }

  /** Ticks until `done()` holds; returns how many rounds that took. Fails past `roundsMax`. */
  async tickUntil(done: () => boolean, roundsMax: number, ids: readonly NodeId[] = this.ids()): Promise<number> {
    for (let t = 0; t < roundsMax; t++) {
      if (done()) return t;
      await this.tick(1, ids);
    }
    assert.ok(done(), `condition not reached within ${roundsMax} ticks`);
    return roundsMax;
  }

  // ------------------------------------------------------------ elections

  /**
   * Ticks only `id` until its election timeout fires and it campaigns, then settles. The others
   * are not ticked, so nobody else campaigns. Needs peers that are not in a leader's lease.
   */
  async campaign(id: NodeId): Promise<void> {
    const peer = this.peer(id);
    const ticksMax = 2 * peer.config.electionTimeoutTicks;
    for (let i = 0; i < ticksMax && peer.raft.role === "follower"; i++) peer.tick();
    assert.notEqual(peer.raft.role, "follower", `${id} did not campaign within ${ticksMax} ticks`);
    await this.stabilize();
  }

  /**
   * Makes `id` campaign at once, as a leadership transfer does: a TimeoutNow skips pre-vote and
   * may break leases. For scenarios that need a particular node to win right now.
   */
  async forceCampaign(id: NodeId): Promise<void> {
    const r = this.node(id);
    assert.equal(r.role, "follower", `${id} must be a follower to be told to campaign`);
    r.step({ type: "timeoutNow", from: id, to: id, term: r.term });
    await this.stabilize();
  }

  /** Elects `id` by letting its election timeout fire; asserts that it won. */
  async elect(id: NodeId): Promise<void> {
    await this.campaign(id);
    assert.equal(this.node(id).role, "leader", `${id} campaigned but did not win`);
  }

  leaders(): NodeId[] {
    return this.ids().filter((id) => this.node(id).role === "leader");
  }

  /** The one leader of the highest term among the nodes. */
  leader(): NodeId {
    let best: NodeId = NONE;
    for (const id of this.leaders()) if (best === NONE || this.node(id).term > this.node(best).term) best = id;
    assert.notEqual(best, NONE, "there is no leader");
    return best;
  }

  // ------------------------------------------------------------ client actions

  /** Proposes one entry per text on `id` and settles. */
  async propose(id: NodeId, ...texts: string[]): Promise<Proposed> {
    const proposed = this.node(id).propose(texts.map(bytes));
    await this.stabilize();
    return proposed;
  }

  /**
   * Snapshots `id`'s state machine at `index` (default: everything applied) and compacts, writing
   * the snapshot to the peer's disk as the driver's Compactor does: the loop reads a snapshot's
   * bytes back from there once the core has released them.
   */
  async compact(id: NodeId, index = this.peer(id).appliedIndex): Promise<Snapshot> {
    const peer = this.peer(id);
    const snapshot = peer.raft.compact(index, encodeState(peer.applied.filter((a) => a.index <= index)));
    await peer.storage.saveSnapshot(snapshot);
    return snapshot;
  }

  /** Crashes `id` and starts it again from its disk. Whatever it held only in memory is lost. */
  async restart(id: NodeId): Promise<void> {
    const old = this.peer(id);
    this.peers.set(id, await Peer.start(old.config, old.crash(), this.host, this.driverBug));
  }

  /** The first place two state machines applied different entries at one index, if any. */
  appliedDisagreement(): string | undefined {
    const seen = new Map<number, { id: NodeId; entry: AppliedEntry }>();
    for (const [id, peer] of this.peers) {
      for (const a of peer.applied) {
        const other = seen.get(a.index);
        if (other === undefined) seen.set(a.index, { id, entry: a });
        else if (other.entry.term !== a.term || other.entry.text !== a.text) {
          return `index ${a.index}: ${other.id} applied ${JSON.stringify(other.entry)}, ${id} applied ${JSON.stringify(a)}`;
        }
      }
    }
    return undefined;
  }
}

/** (index, term) of every entry in `r`'s log from its first index, for comparing logs. */
export function logTerms(r: RaftNode): number[] {
  const out: number[] = [];
  for (let i = r.log.firstIndex(); i <= r.log.lastIndex(); i++) out.push(r.log.term(i) as number);
  return out;
}

type MessageWithType<M, T> = M extends { type: infer U } ? (T extends U ? M : never) : never;
/** The message interface whose `type` may be T (VoteRequest for "preVote", say). */
export type MessageOf<T extends Message["type"]> = MessageWithType<Message, T>;

/** Messages of `type` from `from` to `to` in `messages`. */
export function messagesOf<T extends Message["type"]>(
  messages: readonly Message[], type: T, from?: NodeId, to?: NodeId,
): MessageOf<T>[] {
  return messages.filter(
    (m): m is MessageOf<T> =>
      m.type === type && (from === undefined || m.from === from) && (to === undefined || m.to === to),
  );
}

/** Texts of the entries an append carries. */
export function appendTexts(m: Message): string[] {
  if (m.type !== "append") return [];
  return m.entries.map((e) => describeEntry(e).text);
}
