// An in-memory, synchronous network of RaftNode instances for scenario tests (in the spirit of
// etcd raft's `newNetwork`). For every node it plays the driver exactly as types.ts orders it:
// take the Ready, persist it to a MemoryStorage, send its messages, apply committed entries to a
// trivial state machine (a list), then advance(). Messages travel through one FIFO queue, so a run
// is a pure function of the seeds and of what the test does; faults are dropped messages only.

import assert from "node:assert/strict";
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
  type HardState,
  type Message,
  NONE,
  type NodeId,
  type ReadState,
  type Snapshot,
  entryPayloadBytes,
  isLocalMessage,
} from "../../src/raft/core/types.js";

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

/** What a node keeps on disk: enough to restart it. */
export interface MemoryStorage {
  hardState: HardState;
  snapshot: Snapshot;
  entries: Entry[];
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

export class Peer {
  raft: RaftNode;
  readonly storage: MemoryStorage;
  /** The state machine: every applied entry, in order. */
  applied: AppliedEntry[];
  appliedIndex: number;
  readonly readStates: ReadState[] = [];
  readonly failedReads: string[] = [];
  /** Entry count and payload bytes of each non-empty batch of committed entries a Ready handed out. */
  readonly appliedBatches: { entries: number; bytes: number }[] = [];

  constructor(
    readonly config: RaftConfig,
    initial: RaftInitialState,
  ) {
    this.raft = new RaftNode(config, initial);
    const snapshot = this.raft.log.snapshot;
    this.storage = { hardState: this.raft.hardState(), snapshot, entries: [...(initial.entries ?? [])] };
    this.applied = decodeState(snapshot.data);
    this.appliedIndex = snapshot.metadata.index;
  }

  /** Texts of the applied normal entries that carry data, in order (the "user" writes). */
  appliedTexts(): string[] {
    return this.applied.filter((a) => a.text !== "" && !a.text.startsWith("conf:")).map((a) => a.text);
  }
}

/**
 * What a message promises must already be on disk when it leaves: an acknowledged append is
 * persisted up to its index, and a granted vote is recorded. A Ready may also carry a move to a
 * later term, which legitimately supersedes both promises (a newer leader may overwrite the
 * entries; an older term can no longer be voted in), so only same-term promises are checked.
 */
function assertBackedByStorage(m: Message, storage: MemoryStorage): void {
  if (storage.hardState.term !== m.term) return;
  if (m.type === "appendResp" && !m.reject) {
    const last = storage.entries.at(-1)?.index ?? storage.snapshot.metadata.index;
    assert.ok(m.index <= Math.max(last, storage.snapshot.metadata.index),
      `${m.from} acknowledged index ${m.index} but has persisted only through ${last}`);
  }
  if (m.type === "voteResp" && !m.reject) {
    assert.equal(storage.hardState.vote, m.to, `${m.from} granted ${m.to} a vote in term ${m.term} but did not persist it`);
  }
}

type DropRule = (m: Message) => boolean;

export class Network {
  readonly peers = new Map<NodeId, Peer>();
  /** Every message any node handed out, in order, whether or not it was delivered. */
  readonly sent: Message[] = [];
  readonly delivered: Message[] = [];
  private queue: Message[] = [];
  private readonly isolated = new Set<NodeId>();
  private readonly cutLinks = new Set<string>();
  private dropRules: DropRule[] = [];

  constructor(
    readonly seed = 1,
    readonly defaults: ConfigOverrides = {},
  ) {}

  /** A new cluster whose founding voters all start from bootstrapSnapshot(ids). */
  static bootstrap(ids: readonly NodeId[], seed = 1, defaults: ConfigOverrides = {}): Network {
    const net = new Network(seed, defaults);
    const snapshot = bootstrapSnapshot(ids);
    for (const id of ids) net.add(id, { snapshot });
    return net;
  }

  add(id: NodeId, initial: RaftInitialState = {}, overrides: ConfigOverrides = {}): Peer {
    assert.ok(!this.peers.has(id), `node ${id} already exists`);
    const peer = new Peer(nodeConfig(id, this.seed, { ...this.defaults, ...overrides }), initial);
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

  // ------------------------------------------------------------ the driver loop

  /** Plays the driver for one Ready of `peer`, in the order types.ts prescribes. */
  private handleReady(peer: Peer): void {
    const rd = peer.raft.ready();
    const storage = peer.storage;
    // 1. persist
    if (rd.hardState !== undefined) storage.hardState = rd.hardState;
    if (rd.snapshot !== undefined) {
      // A received snapshot replaces the whole log.
      storage.snapshot = rd.snapshot;
      storage.entries = [];
    }
    if (rd.entries.length > 0) {
      const from = rd.entries[0].index;
      storage.entries = storage.entries.filter((e) => e.index < from).concat(rd.entries);
    }
    // 2. send
    for (const m of rd.messages) {
      assertBackedByStorage(m, storage);
      this.sent.push(m);
      this.queue.push(m);
    }
    // 3. restore, then apply
    if (rd.snapshot !== undefined) {
      peer.applied = decodeState(rd.snapshot.data);
      peer.appliedIndex = rd.snapshot.metadata.index;
    }
    if (rd.committedEntries.length > 0) {
      let batchBytes = 0;
      for (const e of rd.committedEntries) batchBytes += entryPayloadBytes(e);
      peer.appliedBatches.push({ entries: rd.committedEntries.length, bytes: batchBytes });
    }
    for (const e of rd.committedEntries) {
      assert.equal(e.index, peer.appliedIndex + 1, `${peer.config.id} applied ${e.index} after ${peer.appliedIndex}`);
      peer.applied.push(describeEntry(e));
      peer.appliedIndex = e.index;
    }
    peer.readStates.push(...rd.readStates);
    peer.failedReads.push(...rd.failedReads);
    // 4. acknowledge
    peer.raft.advance();
  }

  private deliver(m: Message): void {
    const target = this.peers.get(m.to);
    if (target === undefined) return;
    if (isLocalMessage(m)) {
      target.raft.step(m);
      return;
    }
    if (this.dropped(m)) {
      // The driver hears that a snapshot transfer failed and tells the leader, as a real one would.
      if (m.type === "snapshot") this.reportSnapshot(m.from, m.to, true);
      return;
    }
    this.delivered.push(m);
    target.raft.step(m);
    if (m.type === "snapshot") this.reportSnapshot(m.from, m.to, false);
  }

  private reportSnapshot(leader: NodeId, follower: NodeId, reject: boolean): void {
    const p = this.peers.get(leader);
    if (p !== undefined) p.raft.step({ type: "snapshotStatus", from: follower, to: leader, term: 0, reject });
  }

  /** Steps `m` into its recipient as if it had arrived (faults still apply). */
  send(m: Message): void {
    this.queue.push(m);
    this.stabilize();
  }

  /** Runs Ready/deliver rounds until no node has work and no message is in flight. */
  stabilize(): void {
    for (let round = 0; round < STABILIZE_ROUNDS_MAX; round++) {
      let busy = false;
      for (const peer of this.peers.values()) {
        if (peer.raft.hasReady()) {
          this.handleReady(peer);
          busy = true;
        }
      }
      if (this.queue.length > 0) {
        busy = true;
        const batch = this.queue;
        this.queue = [];
        for (const m of batch) this.deliver(m);
      }
      if (!busy) return;
    }
    assert.fail(`the network did not settle within ${STABILIZE_ROUNDS_MAX} rounds`);
  }

  /** `times` rounds of: tick each of `ids` (default: every node) once, then settle. */
  tick(times = 1, ids: readonly NodeId[] = this.ids()): void {
    for (let t = 0; t < times; t++) {
      for (const id of ids) this.node(id).tick();
      this.stabilize();
    }
  }

  /** Ticks until `done()` holds; returns how many rounds that took. Fails past `roundsMax`. */
  tickUntil(done: () => boolean, roundsMax: number, ids: readonly NodeId[] = this.ids()): number {
    for (let t = 0; t < roundsMax; t++) {
      if (done()) return t;
      this.tick(1, ids);
    }
    assert.ok(done(), `condition not reached within ${roundsMax} ticks`);
    return roundsMax;
  }

  // ------------------------------------------------------------ elections

  /**
   * Ticks only `id` until its election timeout fires and it campaigns, then settles. The others
   * are not ticked, so nobody else campaigns. Needs peers that are not in a leader's lease.
   */
  campaign(id: NodeId): void {
    const r = this.node(id);
    const ticksMax = 2 * this.peer(id).config.electionTimeoutTicks;
    for (let i = 0; i < ticksMax && r.role === "follower"; i++) r.tick();
    assert.notEqual(r.role, "follower", `${id} did not campaign within ${ticksMax} ticks`);
    this.stabilize();
  }

  /**
   * Makes `id` campaign at once, as a leadership transfer does: a TimeoutNow skips pre-vote and
   * may break leases. For scenarios that need a particular node to win right now.
   */
  forceCampaign(id: NodeId): void {
    const r = this.node(id);
    assert.equal(r.role, "follower", `${id} must be a follower to be told to campaign`);
    r.step({ type: "timeoutNow", from: id, to: id, term: r.term });
    this.stabilize();
  }

  /** Elects `id` by letting its election timeout fire; asserts that it won. */
  elect(id: NodeId): void {
    this.campaign(id);
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
  propose(id: NodeId, ...texts: string[]): Proposed {
    const proposed = this.node(id).propose(texts.map(bytes));
    this.stabilize();
    return proposed;
  }

  /** Snapshots `id`'s state machine at `index` (default: everything applied) and compacts. */
  compact(id: NodeId, index = this.peer(id).appliedIndex): Snapshot {
    const peer = this.peer(id);
    const snapshot = peer.raft.compact(index, encodeState(peer.applied.filter((a) => a.index <= index)));
    peer.storage.snapshot = snapshot;
    peer.storage.entries = peer.storage.entries.filter((e) => e.index > index);
    return snapshot;
  }

  /** Crashes `id` and starts it again from what it persisted. Unpersisted work is lost. */
  restart(id: NodeId): void {
    const peer = this.peer(id);
    const fresh = new Peer(peer.config, {
      hardState: peer.storage.hardState,
      snapshot: peer.storage.snapshot,
      entries: peer.storage.entries,
      applied: peer.storage.snapshot.metadata.index,
    });
    this.peers.set(id, fresh);
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
