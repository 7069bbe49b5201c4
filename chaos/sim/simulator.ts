// Deterministic simulation of a Raft cluster: N real cores in one process, one seeded PRNG,
// virtual time. It injects message delay, loss, duplication and reordering, partitions of
// several shapes, crashes that lose whatever was not yet durable, client writes and ReadIndex
// reads, membership changes, leadership transfers and compaction, and after every step checks
// the properties that make Raft Raft. Same seed, same run: a failing seed replays exactly.

import { SeededRandom } from "../../src/raft/core/random.js";
import { type PlantedBug, RaftNode, bootstrapSnapshot, defaultRaftConfig } from "../../src/raft/core/raft.js";
import {
  type Entry,
  type HardState,
  type Message,
  NONE,
  type NodeId,
  RaftRefusal,
  type Ready,
  type Snapshot,
} from "../../src/raft/core/types.js";
import { type Operation, type ReadOp, type WriteOp, checkLinearizable } from "../checkers/linearizability.js";
import { EventHeap } from "./heap.js";

export interface SimOptions {
  readonly seed: number;
  readonly plantedBug?: PlantedBug;
  readonly trace?: boolean;
}

export interface SimStats {
  elections: number;
  partitions: number;
  crashes: number;
  snapshotInstalls: number;
  membershipChanges: number;
  leaderTransfers: number;
  writesAcknowledged: number;
  readsServed: number;
  messagesDelivered: number;
}

export interface SimResult {
  readonly seed: number;
  readonly violations: string[];
  readonly stats: SimStats;
  readonly trace: string[];
  readonly virtualMs: number;
}

const TICK_MS = 10;
const ELECTION_TIMEOUT_TICKS = 10;
/** Once faults heal, a write must commit within this long, or liveness is violated. */
const LIVENESS_BOUND_MS = 3000;
/** After clients stop, every member must converge within this long. */
const CONVERGENCE_MS = 1500;
const CLIENT_COUNT = 6;
/** Clients give up after a random time up to this; impatient ones leave long uncommitted tails on stale leaders. */
const CLIENT_OP_TIMEOUT_MAX_MS = 600;
const KEYS = ["a", "b", "c"] as const;
const VIOLATIONS_MAX = 5;

interface NetworkProfile {
  dropRate: number;
  duplicateRate: number;
  delayMinMs: number;
  delayMaxMs: number;
}

const CALM: NetworkProfile = { dropRate: 0, duplicateRate: 0, delayMinMs: 1, delayMaxMs: 4 };

interface Disk {
  hardState: HardState | undefined;
  snapshot: Snapshot | undefined;
  entries: Entry[];
}

interface PendingWrite {
  readonly op: MutableWrite;
  readonly term: number;
  readonly client: number;
}

interface PendingRead {
  readonly op: MutableRead;
  readonly node: SimNode;
  readonly client: number;
}

type MutableWrite = { -readonly [K in keyof WriteOp]: WriteOp[K] };
type MutableRead = { -readonly [K in keyof ReadOp]: ReadOp[K] };

class SimNode {
  raft: RaftNode | undefined;
  /** Bumped on every crash, so events of a dead incarnation are ignored. */
  incarnation = 0;
  restarts = 0;
  disk: Disk = { hardState: undefined, snapshot: undefined, entries: [] };
  inflightReady: Ready | undefined;
  kv = new Map<string, string>();
  appliedIndex = 0;
  digest = 0;
  pendingWrites = new Map<number, PendingWrite>();
  readsAwaitingApply: { index: number; context: string }[] = [];
  checkedLeaderTerm = -1;
  firstApplyTerm = -1;

  constructor(readonly id: NodeId) {}
}

type SimEvent =
  | { at: number; seq: number; kind: "tick"; node: SimNode; incarnation: number }
  | { at: number; seq: number; kind: "deliver"; message: Message }
  | { at: number; seq: number; kind: "readyDone"; node: SimNode; incarnation: number }
  | { at: number; seq: number; kind: "client"; client: number }
  | { at: number; seq: number; kind: "timeout"; op: MutableWrite | MutableRead; client: number; context: string }
  | { at: number; seq: number; kind: "fault" }
  | { at: number; seq: number; kind: "healPartition" }
  | { at: number; seq: number; kind: "restart"; node: SimNode }
  | { at: number; seq: number; kind: "crashLeader"; node: SimNode; incarnation: number }
  | { at: number; seq: number; kind: "healAll" };

type EventBody = SimEvent extends infer E ? (E extends SimEvent ? Omit<E, "at" | "seq"> : never) : never;

const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

export function runSimulation(opts: SimOptions): SimResult {
  return new Simulation(opts).run();
}

class Simulation {
  private readonly rng: SeededRandom;
  private readonly events = new EventHeap<SimEvent>();
  private seq = 0;
  private now = 0;
  /** Real-time order of client-visible events, for the linearizability checker. */
  private stamp = 0;
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly spareIds: NodeId[] = [];
  private blockedLinks = new Set<string>();
  private partitionActive = false;
  private network: NetworkProfile = CALM;
  private readonly violations: string[] = [];
  private readonly trace: string[] = [];
  private readonly stats: SimStats = {
    elections: 0, partitions: 0, crashes: 0, snapshotInstalls: 0, membershipChanges: 0,
    leaderTransfers: 0, writesAcknowledged: 0, readsServed: 0, messagesDelivered: 0,
  };

  // What the cluster has committed, as first observed by any node applying it.
  private readonly appliedTerm: number[] = [];
  private readonly appliedId: string[] = [];
  private readonly digestAt: number[] = [];
  private maxAppliedIndex = 0;
  private readonly leaderOfTerm = new Map<number, NodeId>();
  private readonly logIdentity = new Map<string, string>();
  private readonly appliedOrder = new Map<string, string[]>();

  private readonly history: Operation[] = [];
  private readonly pendingReads = new Map<string, PendingRead>();
  private readonly clientLeaderGuess: NodeId[] = [];
  private opCounter = 0;

  private readonly faultPhaseEndMs: number;
  private readonly clientsStopMs: number;
  private readonly endMs: number;
  private firstAckAfterHealMs: number | undefined;
  /** The history stamp when clients first acted after the heal: later writes count toward liveness. */
  private stampAtHeal = Number.POSITIVE_INFINITY;
  private readonly compactEvery: number;
  private readonly messageBytesMax: number;
  private readonly inflightMessagesMax: number;

  constructor(private readonly opts: SimOptions) {
    this.rng = new SeededRandom(opts.seed);
    const voterCount = this.rng.chance(0.5) ? 3 : 5;
    const founders: NodeId[] = [];
    for (let i = 1; i <= voterCount; i++) founders.push(`n${i}`);
    for (let i = voterCount + 1; i <= voterCount + 3; i++) this.spareIds.push(`n${i}`);
    this.faultPhaseEndMs = 2000 + this.rng.nextInt(3000);
    this.clientsStopMs = this.faultPhaseEndMs + LIVENESS_BOUND_MS;
    this.endMs = this.clientsStopMs + CONVERGENCE_MS;
    this.compactEvery = 5 + this.rng.nextInt(40);
    // Small messages and windows force partial appends, which is where commit-rule bugs hide.
    this.messageBytesMax = this.rng.pick([1, 1, 24, 256, 4096]);
    this.inflightMessagesMax = this.rng.pick([1, 2, 8, 64]);
    const snapshot = bootstrapSnapshot(founders);
    for (const id of founders) {
      const node = new SimNode(id);
      node.disk = { hardState: { term: 1, vote: NONE, commit: 1 }, snapshot, entries: [] };
      this.nodes.set(id, node);
      this.start(node);
    }
    this.appliedTerm[1] = 1;
    this.appliedId[1] = "bootstrap";
    this.digestAt[1] = 0;
    this.maxAppliedIndex = 1;
    this.log(`cluster of ${voterCount} voters; compact every ${this.compactEvery}; ` +
      `append bytes max ${this.messageBytesMax}; inflight max ${this.inflightMessagesMax}; faults until ${this.faultPhaseEndMs}ms`);
  }

  run(): SimResult {
    for (let c = 0; c < CLIENT_COUNT; c++) {
      this.clientLeaderGuess.push(NONE);
      this.schedule(this.rng.nextInt(50), { kind: "client", client: c });
    }
    this.schedule(100 + this.rng.nextInt(300), { kind: "fault" });
    this.schedule(this.faultPhaseEndMs, { kind: "healAll" });
    while (this.violations.length < VIOLATIONS_MAX) {
      const ev = this.events.pop();
      if (ev === undefined || ev.at > this.endMs) break;
      this.now = ev.at;
      this.handle(ev);
    }
    if (this.violations.length === 0) this.finalChecks();
    this.logFinalState();
    return { seed: this.opts.seed, violations: this.violations, stats: this.stats, trace: this.trace, virtualMs: this.now };
  }

  // ------------------------------------------------------------ plumbing

  private schedule(delayMs: number, body: EventBody): void {
    // Stamping the body in place is markedly cheaper than spreading it into a new object.
    const ev = body as EventBody & { at: number; seq: number };
    ev.at = this.now + delayMs;
    ev.seq = this.seq++;
    this.events.push(ev);
  }

  private log(line: string | (() => string)): void {
    if (this.opts.trace === true) this.trace.push(`${String(this.now).padStart(6)}ms ${typeof line === "string" ? line : line()}`);
  }

  private violation(what: string): void {
    this.violations.push(`t=${this.now}ms: ${what}`);
    this.log(`VIOLATION ${what}`);
  }

  private handle(ev: SimEvent): void {
    switch (ev.kind) {
      case "tick": {
        const node = ev.node;
        if (node.raft === undefined || node.incarnation !== ev.incarnation) return;
        node.raft.tick();
        this.afterInput(node);
        this.schedule(TICK_MS, { kind: "tick", node, incarnation: ev.incarnation });
        return;
      }
      case "deliver":
        this.deliver(ev.message);
        return;
      case "readyDone":
        if (ev.node.incarnation === ev.incarnation) this.finishReady(ev.node);
        return;
      case "client":
        this.clientStep(ev.client);
        return;
      case "timeout":
        this.timeout(ev.op, ev.client, ev.context);
        return;
      case "fault":
        if (this.now < this.faultPhaseEndMs) {
          this.injectFault();
          this.schedule(20 + this.rng.nextInt(180), { kind: "fault" });
        }
        return;
      case "healPartition":
        this.healPartition();
        return;
      case "restart":
        this.restart(ev.node);
        return;
      case "crashLeader":
        if (ev.node.incarnation === ev.incarnation && this.now < this.faultPhaseEndMs && this.runningCount() > 1) {
          this.crashAndRestart(ev.node);
        }
        return;
      case "healAll":
        this.log("faults end: heal the network, restart every crashed node");
        this.healPartition();
        this.network = CALM;
        for (const node of this.nodes.values()) if (node.raft === undefined) this.restart(node);
        return;
    }
  }

  private start(node: SimNode): void {
    const random = new SeededRandom((this.opts.seed * 7919 + node.restarts * 104729 + Number(node.id.slice(1))) >>> 0);
    const d = node.disk;
    node.raft = new RaftNode(
      {
        ...defaultRaftConfig,
        id: node.id,
        electionTimeoutTicks: ELECTION_TIMEOUT_TICKS,
        heartbeatIntervalTicks: 1,
        random,
        messageBytesMax: this.messageBytesMax,
        inflightMessagesMax: this.inflightMessagesMax,
        ...(this.opts.plantedBug === undefined ? {} : { plantedBug: this.opts.plantedBug }),
      },
      {
        ...(d.hardState === undefined ? {} : { hardState: d.hardState }),
        ...(d.snapshot === undefined ? {} : { snapshot: d.snapshot }),
        entries: d.entries,
        applied: d.snapshot?.metadata.index ?? 0,
      },
    );
    this.restoreState(node, d.snapshot);
    node.checkedLeaderTerm = -1;
    this.schedule(1 + this.rng.nextInt(TICK_MS), { kind: "tick", node, incarnation: node.incarnation });
  }

  private crash(node: SimNode): void {
    if (node.raft === undefined) return;
    this.log(`crash ${node.id} (loses everything not yet durable)`);
    this.stats.crashes++;
    node.raft = undefined;
    node.incarnation++;
    node.restarts++;
    node.inflightReady = undefined;
    node.readsAwaitingApply = [];
    for (const pw of node.pendingWrites.values()) this.finishClientOp(pw.client);
    node.pendingWrites.clear();
    for (const [ctx, pr] of this.pendingReads) {
      if (pr.node === node) {
        this.pendingReads.delete(ctx);
        this.finishClientOp(pr.client);
      }
    }
  }

  private runningCount(): number {
    let count = 0;
    for (const n of this.nodes.values()) if (n.raft !== undefined) count++;
    return count;
  }

  private crashAndRestart(node: SimNode): void {
    if (node.raft === undefined) return;
    this.crash(node);
    this.schedule(20 + this.rng.nextInt(this.rng.chance(0.5) ? 200 : 1200), { kind: "restart", node });
  }

  private restart(node: SimNode): void {
    if (node.raft !== undefined) return;
    this.log(`restart ${node.id} from its disk`);
    this.start(node);
  }

  // ------------------------------------------------------------ the node loop

  /** After any input: check the election invariants, then let the node emit its next Ready. */
  private afterInput(node: SimNode): void {
    const raft = node.raft;
    if (raft === undefined) return;
    if (raft.role === "leader" && node.checkedLeaderTerm !== raft.term) {
      node.checkedLeaderTerm = raft.term;
      this.checkNewLeader(node, raft);
    }
    // Half the time, a leader sends what it may send at once, as the real driver does, so that
    // replication overlapping the leader's own write is proven too.
    if (raft.role === "leader" && this.rng.chance(0.5)) for (const m of raft.takeLeaderMessages()) this.send(m);
    if (node.inflightReady !== undefined || !raft.hasReady()) return;
    node.inflightReady = raft.ready();
    // The write to disk takes time; a crash before it finishes loses the whole batch.
    this.schedule(this.rng.nextInt(3), { kind: "readyDone", node, incarnation: node.incarnation });
  }

  private finishReady(node: SimNode): void {
    const raft = node.raft as RaftNode;
    const rd = node.inflightReady as Ready;
    node.inflightReady = undefined;
    this.persist(node, rd);
    for (const m of rd.messages) this.send(m);
    if (rd.snapshot !== undefined) {
      this.stats.snapshotInstalls++;
      this.log(`${node.id} installs snapshot at ${rd.snapshot.metadata.index}`);
      this.restoreState(node, rd.snapshot);
    }
    for (const e of rd.committedEntries) this.apply(node, e);
    raft.advance();
    if (raft.role === "leader" && rd.committedEntries.length > 0 && node.firstApplyTerm !== raft.term) {
      node.firstApplyTerm = raft.term;
      // A new leader's first commits are where it settles what earlier leaders left behind
      // (Figure 8); dying right after them is the schedule that exposes a wrong commit rule.
      if (this.now < this.faultPhaseEndMs && this.rng.chance(0.3)) {
        this.schedule(this.rng.nextInt(4), { kind: "crashLeader", node, incarnation: node.incarnation });
      }
    }
    for (const rs of rd.readStates) node.readsAwaitingApply.push(rs);
    for (const ctx of rd.failedReads) {
      const pr = this.pendingReads.get(ctx);
      if (pr !== undefined) {
        this.pendingReads.delete(ctx);
        this.finishClientOp(pr.client);
      }
    }
    this.serveReads(node);
    this.maybeCompact(node, raft);
    this.afterInput(node);
  }

  private persist(node: SimNode, rd: Ready): void {
    const d = node.disk;
    if (rd.snapshot !== undefined) {
      d.snapshot = rd.snapshot;
      d.entries = [];
    }
    if (rd.entries.length > 0) {
      const first = (rd.entries[0]).index;
      const diskFirst = (d.snapshot?.metadata.index ?? 0) + 1;
      if (first < diskFirst || first > diskFirst + d.entries.length) {
        this.violation(`${node.id} persisted entries from ${first}, leaving a gap after ${diskFirst + d.entries.length - 1}`);
        return;
      }
      d.entries.length = first - diskFirst;
      for (const e of rd.entries) d.entries.push(e);
      this.checkLogMatching(node, rd.entries);
    }
    if (rd.hardState !== undefined) d.hardState = rd.hardState;
  }

  private apply(node: SimNode, e: Entry): void {
    if (e.index !== node.appliedIndex + 1) {
      this.violation(`${node.id} applied entry ${e.index} after ${node.appliedIndex}: applies must be consecutive`);
      return;
    }
    const id = entryIdentity(e);
    node.appliedIndex = e.index;
    node.digest = mixDigest(node.digest, id);
    const knownTerm = this.appliedTerm[e.index];
    if (knownTerm === undefined) {
      this.appliedTerm[e.index] = e.term;
      this.appliedId[e.index] = id;
      this.digestAt[e.index] = node.digest;
      this.maxAppliedIndex = Math.max(this.maxAppliedIndex, e.index);
      this.checkCommitSafety(node, e);
      if (e.type === "confChange") {
        this.stats.membershipChanges++;
        this.log(`membership change committed at ${e.index}: ${e.change.type} ${e.change.node}`);
      }
      if (e.type === "normal" && e.data.byteLength > 0) {
        const [key, value] = id.split("=") as [string, string];
        let order = this.appliedOrder.get(key);
        if (order === undefined) this.appliedOrder.set(key, (order = []));
        order.push(value);
      }
    } else if (knownTerm !== e.term || this.appliedId[e.index] !== id) {
      this.violation(`state machine safety: ${node.id} applied ${id}@term${e.term} at index ${e.index}, ` +
        `but ${this.appliedId[e.index]}@term${knownTerm} was applied there before`);
      return;
    } else if (this.digestAt[e.index] !== node.digest) {
      this.violation(`state machine safety: ${node.id}'s state after index ${e.index} differs from another node's`);
    }
    if (e.type === "normal" && e.data.byteLength > 0) {
      const [key, value] = id.split("=") as [string, string];
      node.kv.set(key, value);
    }
    const pw = node.pendingWrites.get(e.index);
    if (pw !== undefined) {
      node.pendingWrites.delete(e.index);
      if (pw.term === e.term) {
        pw.op.completedAt = ++this.stamp;
        pw.op.acknowledged = true;
        this.stats.writesAcknowledged++;
        if (this.now >= this.faultPhaseEndMs && pw.op.invokedAt > this.stampAtHeal && this.firstAckAfterHealMs === undefined) {
          this.firstAckAfterHealMs = this.now;
        }
      }
      this.finishClientOp(pw.client);
    }
  }

  private restoreState(node: SimNode, snapshot: Snapshot | undefined): void {
    node.kv = new Map();
    node.digest = 0;
    node.appliedIndex = snapshot?.metadata.index ?? 0;
    if (snapshot === undefined || snapshot.data.byteLength === 0) return;
    const state = JSON.parse(textDecoder.decode(snapshot.data)) as { kv: [string, string][]; digest: number };
    node.kv = new Map(state.kv);
    node.digest = state.digest;
    const expected = this.digestAt[snapshot.metadata.index];
    if (expected !== undefined && expected !== state.digest) {
      this.violation(`${node.id} restored a snapshot at ${snapshot.metadata.index} whose state differs from what was applied there`);
    }
  }

  private maybeCompact(node: SimNode, raft: RaftNode): void {
    if (node.appliedIndex - raft.log.snapshotIndex() < this.compactEvery) return;
    const data = textEncoder.encode(JSON.stringify({ kv: [...node.kv], digest: node.digest }));
    const snapshot = raft.compact(node.appliedIndex, data);
    const d = node.disk;
    d.snapshot = snapshot;
    d.entries = d.entries.filter((e) => e.index > snapshot.metadata.index);
  }

  private serveReads(node: SimNode): void {
    if (node.readsAwaitingApply.length === 0) return;
    const still: { index: number; context: string }[] = [];
    for (const rs of node.readsAwaitingApply) {
      if (rs.index > node.appliedIndex) {
        still.push(rs);
        continue;
      }
      const pr = this.pendingReads.get(rs.context);
      if (pr === undefined) continue;
      this.pendingReads.delete(rs.context);
      pr.op.value = node.kv.get(pr.op.key) ?? null;
      pr.op.completedAt = ++this.stamp;
      this.history.push(pr.op);
      this.stats.readsServed++;
      this.finishClientOp(pr.client);
    }
    node.readsAwaitingApply = still;
  }

  // ------------------------------------------------------------ network

  private send(m: Message): void {
    if (this.blockedLinks.has(`${m.from}>${m.to}`) || this.rng.chance(this.network.dropRate)) {
      this.dropped(m);
      return;
    }
    const copies = this.rng.chance(this.network.duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const span = this.network.delayMaxMs - this.network.delayMinMs + 1;
      this.schedule(this.network.delayMinMs + this.rng.nextInt(span), { kind: "deliver", message: m });
    }
  }

  private deliver(m: Message): void {
    const to = this.nodes.get(m.to);
    if (to?.raft === undefined || this.blockedLinks.has(`${m.from}>${m.to}`)) {
      this.dropped(m);
      return;
    }
    this.stats.messagesDelivered++;
    to.raft.step(m);
    this.afterInput(to);
    if (m.type === "snapshot") this.reportToLeader(m.from, { type: "snapshotStatus", from: m.to, to: m.from, term: 0, reject: false });
  }

  /** What a real transport tells the leader when a message could not be delivered. */
  private dropped(m: Message): void {
    if (m.type === "snapshot") this.reportToLeader(m.from, { type: "snapshotStatus", from: m.to, to: m.from, term: 0, reject: true });
    else if (m.type === "append" && this.rng.chance(0.2)) this.reportToLeader(m.from, { type: "unreachable", from: m.to, to: m.from, term: 0 });
  }

  private reportToLeader(leader: NodeId, m: Message): void {
    const node = this.nodes.get(leader);
    if (node?.raft === undefined) return;
    node.raft.step(m);
    this.afterInput(node);
  }

  // ------------------------------------------------------------ faults

  private injectFault(): void {
    const roll = this.rng.nextInt(100);
    if (roll < 22) {
      if (!this.partitionActive) this.partition();
    } else if (roll < 40) {
      // Leaders are the interesting victims: their uncommitted tails are what later terms overwrite.
      const leader = this.currentLeader();
      const victim = leader !== undefined && this.rng.chance(0.6) ? leader : this.rng.pick([...this.nodes.values()]);
      if (victim.raft !== undefined && this.runningCount() > 1) this.crashAndRestart(victim);
    } else if (roll < 52) {
      this.network = this.rng.pick<NetworkProfile>([
        CALM,
        { dropRate: 0.05, duplicateRate: 0.05, delayMinMs: 1, delayMaxMs: 20 },
        { dropRate: 0.2, duplicateRate: 0.02, delayMinMs: 1, delayMaxMs: 10 },
        { dropRate: 0.02, duplicateRate: 0.1, delayMinMs: 5, delayMaxMs: 80 },
      ]);
      this.log(() => `network: drop ${this.network.dropRate}, duplicate ${this.network.duplicateRate}, delay ${this.network.delayMinMs}-${this.network.delayMaxMs}ms`);
    } else if (roll < 64) {
      this.transferLeadership();
    } else if (roll < 76) {
      this.changeMembership();
    }
  }

  private partition(): void {
    const ids = [...this.nodes.keys()];
    const shuffled = shuffle(ids, this.rng);
    // Cutting the leader off is the partition that matters most: it keeps taking writes it
    // cannot commit, while the majority elects someone else and writes over the same indexes.
    const leader = this.currentLeader();
    if (leader !== undefined && this.rng.chance(0.5)) {
      shuffled.splice(shuffled.indexOf(leader.id), 1);
      shuffled.unshift(leader.id);
    }
    const shape = this.rng.pick(["isolate", "split", "bridge", "ring"] as const);
    const canTalk = new Set<string>();
    const allow = (a: NodeId, b: NodeId): void => {
      canTalk.add(`${a}>${b}`);
      canTalk.add(`${b}>${a}`);
    };
    const half = Math.floor(ids.length / 2);
    const sideA = shuffled.slice(0, shape === "isolate" ? 1 : half);
    const sideB = shuffled.slice(sideA.length);
    switch (shape) {
      case "isolate":
      case "split":
        for (const side of [sideA, sideB]) for (const a of side) for (const b of side) allow(a, b);
        break;
      case "bridge": {
        // One node hears both halves; the halves cannot hear each other.
        const bridge = sideB[0];
        for (const side of [sideA, sideB]) for (const a of side) for (const b of side) allow(a, b);
        for (const a of sideA) allow(a, bridge);
        break;
      }
      case "ring":
        shuffled.forEach((a, i) => allow(a, shuffled[(i + 1) % shuffled.length]));
        break;
    }
    this.blockedLinks = new Set();
    for (const a of ids) for (const b of ids) if (a !== b && !canTalk.has(`${a}>${b}`)) this.blockedLinks.add(`${a}>${b}`);
    this.partitionActive = true;
    this.stats.partitions++;
    this.log(`partition (${shape}): ${sideA.join(",")} | ${sideB.join(",")}`);
    this.schedule(100 + this.rng.nextInt(1500), { kind: "healPartition" });
  }

  private healPartition(): void {
    if (!this.partitionActive) return;
    this.blockedLinks = new Set();
    this.partitionActive = false;
    this.log("partition healed");
  }

  private currentLeader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes.values()) {
      if (n.raft?.role === "leader" && (best === undefined || n.raft.term > (best.raft as RaftNode).term)) best = n;
    }
    return best;
  }

  private transferLeadership(): void {
    const leader = this.currentLeader();
    if (leader === undefined) return;
    const raft = leader.raft as RaftNode;
    const to = this.rng.pick(raft.conf.voters);
    try {
      raft.transferLeadership(to);
      this.stats.leaderTransfers++;
      this.log(`transfer leadership ${leader.id} -> ${to}`);
    } catch (err) {
      if (!(err instanceof RaftRefusal)) throw err;
    }
    this.afterInput(leader);
  }

  private changeMembership(): void {
    const leader = this.currentLeader();
    if (leader === undefined) return;
    const raft = leader.raft as RaftNode;
    const { voters, learners } = raft.conf;
    let change;
    if (learners.length > 0 && this.rng.chance(0.7)) change = { type: "promote", node: this.rng.pick(learners) } as const;
    else if (this.spareIds.length > 0 && this.rng.chance(0.6)) change = { type: "addLearner", node: this.spareIds[0] } as const;
    else if (voters.length > 2) change = { type: "remove", node: this.rng.pick(voters) } as const;
    else return;
    try {
      raft.proposeConfChange(change);
    } catch (err) {
      if (!(err instanceof RaftRefusal)) throw err;
      return;
    } finally {
      this.afterInput(leader);
    }
    this.log(`propose membership change: ${change.type} ${change.node}`);
    if (change.type === "addLearner") {
      this.spareIds.shift();
      const node = new SimNode(change.node);
      this.nodes.set(node.id, node);
      this.start(node);
    }
  }

  // ------------------------------------------------------------ clients

  private clientStep(client: number): void {
    if (this.now >= this.clientsStopMs) return;
    if (this.now >= this.faultPhaseEndMs && this.stampAtHeal === Number.POSITIVE_INFINITY) this.stampAtHeal = this.stamp;
    const running = [...this.nodes.values()].filter((n) => n.raft !== undefined);
    const guess = this.nodes.get(this.clientLeaderGuess[client]);
    const target = guess?.raft !== undefined && this.rng.chance(0.8) ? guess : this.rng.pick(running);
    const raft = target.raft as RaftNode;
    const key = this.rng.pick(KEYS);
    const opNumber = ++this.opCounter;
    try {
      if (this.rng.chance(0.6)) {
        const value = `v${opNumber}`;
        const op: MutableWrite = { kind: "write", key, value, invokedAt: this.stamp + 1, completedAt: undefined, acknowledged: false };
        const proposed = raft.propose([textEncoder.encode(`${key}=${value}`)]);
        this.stamp++;
        this.history.push(op);
        // An earlier proposal at this index was overwritten, so it can no longer be acknowledged.
        const overwritten = target.pendingWrites.get(proposed.index);
        if (overwritten !== undefined) this.finishClientOp(overwritten.client);
        target.pendingWrites.set(proposed.index, { op, term: proposed.term, client });
        this.schedule(this.clientTimeoutMs(), { kind: "timeout", op, client, context: "" });
      } else {
        const context = `r${opNumber}`;
        const op: MutableRead = { kind: "read", key, value: null, invokedAt: this.stamp + 1, completedAt: 0 };
        raft.readIndex(context);
        this.stamp++;
        this.pendingReads.set(context, { op, node: target, client });
        this.schedule(this.clientTimeoutMs(), { kind: "timeout", op, client, context });
      }
    } catch (err) {
      if (!(err instanceof RaftRefusal)) throw err;
      this.clientLeaderGuess[client] = err.leaderHint;
      this.schedule(1 + this.rng.nextInt(20), { kind: "client", client });
      return;
    } finally {
      this.afterInput(target);
    }
    this.clientLeaderGuess[client] = target.id;
  }

  private timeout(op: MutableWrite | MutableRead, client: number, context: string): void {
    if (op.kind === "write") {
      if (op.acknowledged) return;
      for (const node of this.nodes.values()) {
        for (const [index, pw] of node.pendingWrites) {
          if (pw.op === op) {
            node.pendingWrites.delete(index);
            this.finishClientOp(client);
          }
        }
      }
      return;
    }
    if (this.pendingReads.delete(context)) this.finishClientOp(client);
  }

  private clientTimeoutMs(): number {
    return 10 + this.rng.nextInt(this.rng.chance(0.7) ? 100 : CLIENT_OP_TIMEOUT_MAX_MS);
  }

  private finishClientOp(client: number): void {
    this.schedule(this.rng.nextInt(25), { kind: "client", client });
  }

  // ------------------------------------------------------------ checks

  private checkNewLeader(node: SimNode, raft: RaftNode): void {
    this.stats.elections++;
    this.log(`${node.id} leads term ${raft.term}`);
    const other = this.leaderOfTerm.get(raft.term);
    if (other !== undefined && other !== node.id) {
      this.violation(`election safety: ${other} and ${node.id} both lead term ${raft.term}`);
      return;
    }
    this.leaderOfTerm.set(raft.term, node.id);
    // A new leader is still reconciling the logs it inherited (Figure 8's window); crashing
    // some leaders inside it is how the simulator reaches the schedules that break commit rules.
    if (this.now < this.faultPhaseEndMs && this.rng.chance(0.25)) {
      this.schedule(1 + this.rng.nextInt(40), { kind: "crashLeader", node, incarnation: node.incarnation });
    }
    // Leader completeness: every entry any node has applied must be in the new leader's log.
    for (let i = raft.log.firstIndex(); i <= this.maxAppliedIndex; i++) {
      const term = raft.log.term(i);
      if (term !== this.appliedTerm[i]) {
        this.violation(`leader completeness: ${node.id}, leader of term ${raft.term}, has ${term === undefined ? "no entry" : `term ${term}`} ` +
          `at committed index ${i} (term ${this.appliedTerm[i]})`);
        return;
      }
    }
  }

  /**
   * Commit safety, the invariant behind leader completeness: once an entry is committed, no
   * voter whose durable log lacks it can collect a majority of votes, because a majority holds
   * it and refuses any candidate whose log is less up to date. Checking every possible future
   * election, not just the ones that happen, catches a wrong commit the moment it is applied.
   */
  private checkCommitSafety(applier: SimNode, e: Entry): void {
    const voters = (applier.raft as RaftNode).conf.voters;
    const need = Math.floor(voters.length / 2) + 1;
    for (const candidateId of voters) {
      const candidate = this.nodes.get(candidateId);
      if (candidate === undefined || diskHas(candidate.disk, e.index, e.term)) continue;
      const [candTerm, candIndex] = diskLast(candidate.disk);
      const electors = voters.filter((id) => {
        const voter = this.nodes.get(id);
        if (voter === undefined) return false;
        const [term, index] = diskLast(voter.disk);
        return candTerm > term || (candTerm === term && candIndex >= index);
      });
      if (electors.length >= need) {
        this.violation(`commit safety: ${applier.id} applied entry ${e.index} (term ${e.term}) as committed, yet ` +
          `${candidateId}, whose log lacks it, could win an election with votes from ${electors.join(",")}`);
        return;
      }
    }
  }

  /** Log matching: an (index, term) pair names one entry, with one predecessor term. */
  private checkLogMatching(node: SimNode, entries: readonly Entry[]): void {
    const raft = node.raft as RaftNode;
    let prevTerm = diskTerm(node.disk, (entries[0]).index - 1) ?? raft.log.term((entries[0]).index - 1);
    for (const e of entries) {
      const key = `${e.index}:${e.term}`;
      const identity = `${entryIdentity(e)}<${prevTerm}`;
      const seen = this.logIdentity.get(key);
      if (seen === undefined) this.logIdentity.set(key, identity);
      else if (seen !== identity) {
        this.violation(`log matching: ${node.id} holds ${identity} at ${key}, another node holds ${seen}`);
        return;
      }
      prevTerm = e.term;
    }
  }

  private logFinalState(): void {
    for (const n of this.nodes.values()) {
      const r = n.raft;
      if (r === undefined) {
        this.log(`final ${n.id}: down`);
        continue;
      }
      const members = [...r.conf.voters, ...r.conf.learners];
      const progress = r.role === "leader"
        ? members.map((id) => `${id}:${JSON.stringify(r.progressOf(id))}`).join(" ")
        : "";
      this.log(`final ${n.id}: ${r.role} term ${r.term} leader ${r.leader || "-"} commit ${r.log.committed} ` +
        `applied ${n.appliedIndex} last ${r.log.lastIndex()} stable ${r.log.stableIndex} voters ${r.conf.voters.join(",")} ` +
        `learners ${r.conf.learners.join(",")} ${progress}`);
    }
  }

  private finalChecks(): void {
    if (this.firstAckAfterHealMs === undefined || this.firstAckAfterHealMs - this.faultPhaseEndMs > LIVENESS_BOUND_MS) {
      this.violation(`liveness: no write committed within ${LIVENESS_BOUND_MS}ms after every fault healed`);
      return;
    }
    const leader = this.currentLeader();
    if (leader === undefined) {
      this.violation("liveness: no leader at the end of the run, with every fault healed");
      return;
    }
    const conf = (leader.raft as RaftNode).conf;
    const target = this.maxAppliedIndex;
    const reference = [...this.nodes.values()].find((n) => n.appliedIndex === target);
    for (const id of [...conf.voters, ...conf.learners]) {
      const node = this.nodes.get(id);
      if (node?.raft === undefined) {
        this.violation(`liveness: member ${id} is not running at the end`);
        continue;
      }
      if (node.appliedIndex !== target) {
        this.violation(`liveness: member ${id} applied only through ${node.appliedIndex} of ${target} within ${CONVERGENCE_MS}ms of quiet`);
      } else if (reference !== undefined && node.digest !== reference.digest) {
        this.violation(`state machine safety: member ${id} ends with a state different from ${reference.id}'s`);
      }
    }
    // Durability and linearizability over the whole history.
    const result = checkLinearizable(this.history, this.appliedOrder);
    for (const p of result.problems.slice(0, VIOLATIONS_MAX)) this.violation(`linearizability: ${p}`);
  }
}

function entryIdentity(e: Entry): string {
  if (e.type === "confChange") return `conf:${e.change.type}:${e.change.node}`;
  if (e.data.byteLength === 0) return "noop";
  return textDecoder.decode(e.data);
}

function mixDigest(h: number, s: string): number {
  let x = h ^ 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    x ^= s.charCodeAt(i);
    x = Math.imul(x, 0x01000193);
  }
  return x >>> 0;
}

/** Whether a durable log holds the entry (index, term), counting a snapshot past it as holding it. */
function diskHas(d: Disk, index: number, term: number): boolean {
  const snapIndex = d.snapshot?.metadata.index ?? 0;
  return index <= snapIndex || diskTerm(d, index) === term;
}

/** The (last term, last index) of a durable log: what a vote request would carry after a restart. */
function diskLast(d: Disk): [number, number] {
  const snapIndex = d.snapshot?.metadata.index ?? 0;
  const last = d.entries[d.entries.length - 1];
  return last === undefined ? [d.snapshot?.metadata.term ?? 0, snapIndex] : [last.term, last.index];
}

function diskTerm(d: Disk, index: number): number | undefined {
  const snapIndex = d.snapshot?.metadata.index ?? 0;
  if (index === snapIndex) return d.snapshot?.metadata.term ?? 0;
  return d.entries[index - snapIndex - 1]?.term;
}

function shuffle<T>(items: readonly T[], rng: SeededRandom): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
