// Deterministic simulation of a Cairn Raft cluster: the real RaftDriver (its one Ready loop,
// proposals, forwarding, reads, compaction, membership) on simulated ports, with one seeded PRNG
// and virtual time. Same seed, same run: a failing seed replays exactly (--seed S --trace).
//
// The fault model, and what it leaves out, is listed in FAULTS below and in docs/architecture.md.
// After every event the checkers look at what changed; at the end they judge the whole history.

import { pino } from "pino";
import { applyConfChange } from "../../src/raft/core/confchange.js";
import { PLANTED_BUGS, type PlantedBug } from "../../src/raft/core/raft.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import { type AppendResponse, type ConfChange, type ConfState, type Entry, type Message, NONE, type NodeId, RaftInvariantError } from "../../src/raft/core/types.js";
import { RaftDriver } from "../../src/raft/node/driver.js";
import { DRIVER_PLANTED_BUGS, type DriverPlantedBug } from "../../src/raft/node/settings.js";
import type { DiskImage } from "../../src/raft/storage/memory.js";
import type { ReadyWrite } from "../../src/raft/storage/log_storage.js";
import { FAST_DISK, SLOW_DISK, STALLING_DISK, SimDisk, SimulatedIoError } from "../../test/support/sim/disk.js";
import { CALM_LINKS, type LinkMode, type LinkProfile, SimNetwork } from "../../test/support/sim/network.js";
import { SimProcess, SimWorld } from "../../test/support/sim/world.js";
import { type Operation, type ReadOp, type WriteOp, checkLinearizable } from "../checkers/linearizability.js";
import { KvMachine, type KvSnapshotState } from "./kv_machine.js";

/** Every bug the mutation run plants: the core's and the driver's. */
export const MUTANTS = { ...PLANTED_BUGS, ...DRIVER_PLANTED_BUGS } as const;
export type Mutant = PlantedBug | DriverPlantedBug;

export function isMutant(name: string): name is Mutant {
  return Object.hasOwn(MUTANTS, name);
}

/**
 * The faults the simulator injects. Not modelled: Byzantine peers and corrupted messages (the
 * codec and checksums refuse them, tested apart); torn writes inside one batch (LevelDB checksums
 * each batch, so a batch survives whole or not at all); a disk that lies about fsync; clock jumps
 * (time is monotonic in the driver; leases do not depend on wall time); more than one fault
 * phase per run.
 */
export const FAULTS = [
  "partitions: isolate one node (often the leader), majority/minority, bridge, ring, one-way",
  "links that drop, and links that hold messages in order and deliver them late when they heal",
  "message loss, duplication, delay and reordering",
  "crashes (kill -9), often of a new leader or right after its first commit, and restarts from disk",
  "a crash keeps what was fsynced plus any prefix of later writes (commit-only writes, the write in flight)",
  "slow fsync (0 to 50 ms, tails of seconds) and fsync errors, which stop the node",
  "process pauses (SIGSTOP) of up to 3 s, and clocks that run fast or slow per node",
  "slow state machines (applies that block the loop), slow snapshot encoding and transfers",
  "membership changes (add learner, promote, remove; sometimes two at once) during faults",
  "membership churn while a follower's fsync stalls for seconds (so it lags in applying), then the leader fails",
  "a leader's link to one follower stalls for seconds across elections, then delivers its old-term messages",
  "leadership transfers",
] as const;

export interface SimOptions {
  readonly seed: number;
  readonly mutant?: Mutant;
  readonly trace?: boolean;
}

export interface SimStats {
  elections: number;
  partitions: number;
  crashes: number;
  pauses: number;
  diskErrors: number;
  snapshotInstalls: number;
  membershipChanges: number;
  leaderTransfers: number;
  writesAcknowledged: number;
  readsServed: number;
  messagesDelivered: number;
  messagesReleasedLate: number;
}

export function emptyStats(): SimStats {
  return {
    elections: 0, partitions: 0, crashes: 0, pauses: 0, diskErrors: 0, snapshotInstalls: 0, membershipChanges: 0,
    leaderTransfers: 0, writesAcknowledged: 0, readsServed: 0, messagesDelivered: 0, messagesReleasedLate: 0,
  };
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
const CONVERGENCE_MS = 2000;
const CLIENT_COUNT = 6;
const KEYS = ["a", "b", "c"] as const;
const VIOLATIONS_MAX = 5;
/** A run that schedules more events than this is running away (a livelock), which is a failure too. */
const EVENTS_MAX = 2_000_000;

const silentLogger = pino({ level: "silent" });

/** What a seed's fault schedule may draw from. */
const FAULT_KINDS = [
  "partition", "linkStall", "leaderStall", "crash", "pause", "network", "slowDisk", "diskErrors", "slowApply", "transfer", "membership", "lagChurn",
] as const;
type FaultKind = (typeof FAULT_KINDS)[number];

/**
 * Swarm testing (Groce et al.): each seed enables a random subset of the fault kinds, with random
 * weights, instead of every kind at a fixed rate. A seed that hammers one kind reaches the deep
 * schedules of that kind (late deliveries around an election, churn during lagging applies) that
 * an even mix dilutes away.
 */
interface FaultPlan {
  readonly kinds: readonly FaultKind[];
  readonly weights: readonly number[];
  /** Faults come every [gapMinMs, gapMinMs + gapSpanMs) ms. */
  readonly gapMinMs: number;
  readonly gapSpanMs: number;
}

function drawFaultPlan(rng: SeededRandom): FaultPlan {
  let kinds = FAULT_KINDS.filter(() => rng.chance(0.6));
  if (kinds.length === 0) kinds = [...FAULT_KINDS];
  const weights = kinds.map(() => 1 + rng.nextInt(4));
  const intense = rng.chance(0.3);
  return { kinds, weights, gapMinMs: intense ? 5 : 20, gapSpanMs: intense ? 60 : 180 };
}
const textEncoder = new TextEncoder();

type MutableWrite = { -readonly [K in keyof WriteOp]: WriteOp[K] };
type MutableRead = { -readonly [K in keyof ReadOp]: ReadOp[K] };

class SimNode {
  readonly process: SimProcess;
  readonly disk: SimDisk;
  driver: RaftDriver | undefined;
  machine: KvMachine | undefined;
  /** The driver's start() has returned: its core can be read. */
  ready = false;
  restarts = 0;
  checkedCommit = 0;
  leaderTermSeen = -1;
  candidateTermSeen = -1;
  firstCommitTermSeen = -1;

  constructor(readonly id: NodeId, world: SimWorld, rng: SeededRandom) {
    this.process = new SimProcess(world, id);
    this.disk = new SimDisk(rng);
  }

  get up(): boolean {
    return this.driver !== undefined && this.ready && this.process.running;
  }
}

export async function runSimulation(opts: SimOptions): Promise<SimResult> {
  return await new Simulation(opts).run();
}

class Simulation {
  private readonly rng: SeededRandom;
  private readonly world = new SimWorld();
  private readonly network: SimNetwork;
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly founders: NodeId[] = [];
  private readonly spareIds: NodeId[] = [];
  private readonly violations: string[] = [];
  private readonly trace: string[] = [];
  private readonly stats = emptyStats();
  private readonly coreBug: PlantedBug | undefined;
  private readonly driverBug: DriverPlantedBug | undefined;

  // What the cluster committed, as first observed: term and command per index.
  private readonly committedTerm: number[] = [];
  /**
   * The term in which each index was committed: the observer's term when it was first seen
   * committed. The checks run after every event, so the first observer is the leader that counted
   * the majority. Commits only move forward in time, so these never decrease with the index.
   */
  private readonly commitTermOf: number[] = [];
  private readonly appliedCommand = new Map<number, string>();
  private readonly digestAfter = new Map<number, number>();
  private maxCommitted = 1;
  private readonly leaderOfTerm = new Map<number, NodeId>();
  private readonly logIdentity = new Map<string, string>();
  /** Each term's leader's log as it was when it won: terms from `first` (its compaction point) on. */
  private readonly leaderLogs = new Map<number, { readonly first: number; readonly terms: readonly number[] }>();
  /** Acknowledgements sent in a term whose leader is not known yet: checked when it is. */
  private readonly pendingClaims = new Map<number, AckClaim[]>();

  private readonly history: Operation[] = [];
  /** Real-time order of client-visible events, for the linearizability checker. */
  private stamp = 0;
  private opCounter = 0;
  private partitionActive = false;
  private readonly plan: FaultPlan;

  private readonly faultPhaseEndMs: number;
  private readonly clientsStopMs: number;
  private readonly endMs: number;
  private firstAckAfterHealMs: number | undefined;
  /** The history stamp when every fault healed: writes invoked after it count toward liveness. */
  private stampAtHeal = Number.POSITIVE_INFINITY;
  private readonly compactEvery: number;
  private readonly raftSettings: { messageBytesMax: number; inflightMessagesMax: number; catchUpEntries: number; preVote: boolean; checkQuorum: boolean };

  constructor(private readonly opts: SimOptions) {
    this.rng = new SeededRandom(opts.seed);
    if (opts.mutant !== undefined && Object.hasOwn(DRIVER_PLANTED_BUGS, opts.mutant)) this.driverBug = opts.mutant as DriverPlantedBug;
    else this.coreBug = opts.mutant as PlantedBug | undefined;
    this.network = new SimNetwork(this.world, this.rng);
    this.network.onSend = (m) => this.checkAcknowledgement(m);
    this.network.aroundStep = (m, step) => this.stepCheckingAnswer(m, step);
    const voterCount = this.rng.chance(0.5) ? 3 : 5;
    for (let i = 1; i <= voterCount; i++) this.founders.push(`n${i}`);
    for (let i = voterCount + 1; i <= voterCount + 3; i++) this.spareIds.push(`n${i}`);
    this.faultPhaseEndMs = 2000 + this.rng.nextInt(3000);
    this.clientsStopMs = this.faultPhaseEndMs + LIVENESS_BOUND_MS;
    this.endMs = this.clientsStopMs + CONVERGENCE_MS;
    this.compactEvery = 5 + this.rng.nextInt(40);
    // Small messages and windows force partial appends, which is where commit-rule bugs hide.
    this.raftSettings = {
      messageBytesMax: this.rng.pick([1, 1, 24, 256, 4096]),
      inflightMessagesMax: this.rng.pick([1, 2, 8, 64]),
      catchUpEntries: this.rng.pick([0, 0, 2, 10]),
      // The core's protocol options are swarm-drawn too: cairn server runs with both on, but the
      // core must be safe under every combination, and without pre-vote a lagging node campaigns
      // at once, which is where the rules about membership changes are put to the test.
      // With neither, a removed node that missed its removal disrupts the cluster for good (thesis
      // §4.2.3), so at least one is on.
      ...this.rng.pick([{ preVote: true, checkQuorum: true }, { preVote: true, checkQuorum: true }, { preVote: false, checkQuorum: true }, { preVote: true, checkQuorum: false }]),
    };
    this.plan = drawFaultPlan(this.rng);
    this.committedTerm[1] = 1;
    this.log(`faults: ${this.plan.kinds.map((k, i) => `${k}x${this.plan.weights[i]}`).join(" ")}, every ${this.plan.gapMinMs}-${this.plan.gapMinMs + this.plan.gapSpanMs}ms`);
    this.log(`cluster of ${voterCount} voters; compact every ${this.compactEvery}; catch-up ${this.raftSettings.catchUpEntries}; ` +
      `append bytes max ${this.raftSettings.messageBytesMax}; inflight max ${this.raftSettings.inflightMessagesMax}; ` +
      `pre-vote ${this.raftSettings.preVote ? "on" : "off"}; check-quorum ${this.raftSettings.checkQuorum ? "on" : "off"}; faults until ${this.faultPhaseEndMs}ms`);
  }

  async run(): Promise<SimResult> {
    for (const id of this.founders) {
      const node = this.addNode(id);
      this.startNode(node, true);
    }
    for (let c = 0; c < CLIENT_COUNT; c++) void this.client(c);
    this.world.at(100 + this.rng.nextInt(300), () => this.faultLoop());
    this.world.at(this.faultPhaseEndMs, () => this.healAll());
    await this.world.runUntil(this.endMs, () => this.afterEvent());
    if (this.violations.length === 0) this.finalChecks();
    this.logFinalState();
    this.stats.messagesDelivered = this.network.stats.delivered;
    this.stats.messagesReleasedLate = this.network.stats.released;
    return { seed: this.opts.seed, violations: this.violations, stats: this.stats, trace: this.trace, virtualMs: this.world.nowMs };
  }

  // ------------------------------------------------------------ plumbing

  private log(line: string | (() => string)): void {
    if (this.opts.trace === true) this.trace.push(`${String(Math.round(this.world.nowMs)).padStart(6)}ms ${typeof line === "string" ? line : line()}`);
  }

  private violation(what: string): void {
    this.violations.push(`t=${Math.round(this.world.nowMs)}ms: ${what}`);
    this.log(`VIOLATION ${what}`);
  }

  private addNode(id: NodeId): SimNode {
    const node = new SimNode(id, this.world, this.rng);
    node.disk.onWrite = (part) => this.checkLogMatching(node, part);
    this.nodes.set(id, node);
    return node;
  }

  private startNode(node: SimNode, founder: boolean): void {
    // Most clocks keep time; some run fast or slow, as a loaded VM's do.
    const rate = this.rng.chance(0.8) ? 1 : 0.8 + this.rng.nextInt(41) / 100;
    node.process.start(rate);
    node.ready = false;
    node.checkedCommit = 0;
    const machine = new KvMachine(node.process, {
      applied: (index, command, digest) => this.onApplied(node, index, command, digest),
      restored: (state) => this.onRestored(node, state),
    });
    // Encoding a large state takes a while, so a compaction begun as a follower may land after
    // the node became leader, moving its log's start past a follower it is still catching up.
    machine.snapshotEncodeMs = this.rng.chance(0.5) ? 5 + this.rng.nextInt(300) : 0;
    const driver = new RaftDriver({
      id: node.id,
      ...(founder ? { initialCluster: new Map(this.founders.map((id) => [id, id])) } : {}),
      storage: node.disk.open(node.process),
      stateMachine: machine,
      network: this.network.endpoint(node.id, node.process),
      logger: silentLogger,
      clock: node.process.clock(),
      random: new SeededRandom((this.opts.seed * 7919 + node.restarts * 104729 + Number(node.id.slice(1))) >>> 0),
      tickMs: TICK_MS,
      electionTimeoutTicks: ELECTION_TIMEOUT_TICKS,
      heartbeatIntervalTicks: 1,
      snapshotEntries: this.compactEvery,
      requestTimeoutMs: 400,
      leaderWaitMs: this.rng.pick([1, 100, 400]),
      raft: { ...this.raftSettings, ...(this.coreBug === undefined ? {} : { plantedBug: this.coreBug }) },
      ...(this.driverBug === undefined ? {} : { plantedBug: this.driverBug }),
    });
    node.driver = driver;
    node.machine = machine;
    driver.onFatal((err) => this.onFatal(node, driver, err));
    driver.start().then(
      () => {
        if (node.driver === driver) node.ready = true;
      },
      (err: unknown) => this.onFatal(node, driver, err instanceof Error ? err : new Error(String(err))),
    );
  }

  /** A node stopped itself. A disk error is an operating error: the node dies and restarts. */
  private onFatal(node: SimNode, driver: RaftDriver, err: Error): void {
    if (node.driver !== driver) return;
    if (err instanceof SimulatedIoError) {
      this.stats.diskErrors++;
      this.log(`${node.id} stops on a disk error: ${err.message}`);
      this.crashAndRestart(node);
      return;
    }
    this.violation(`${node.id} stopped on a broken invariant: ${err instanceof RaftInvariantError ? "" : `${err.name}: `}${err.message}`);
  }

  private crash(node: SimNode): void {
    if (node.driver === undefined) return;
    const kept = node.disk.crash();
    this.log(`crash ${node.id} (the disk keeps what was fsynced and ${kept} later writes)`);
    this.stats.crashes++;
    node.process.kill();
    this.network.senderDied(node.id);
    node.driver = undefined;
    node.machine = undefined;
    node.ready = false;
    node.restarts++;
  }

  private crashAndRestart(node: SimNode): void {
    if (node.driver === undefined) return;
    this.crash(node);
    this.world.at(this.world.nowMs + 20 + this.rng.nextInt(this.rng.chance(0.5) ? 200 : 1200), () => this.restart(node));
  }

  private restart(node: SimNode): void {
    if (node.driver !== undefined) return;
    this.log(`restart ${node.id} from its disk`);
    this.startNode(node, false);
  }

  private upNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.up);
  }

  private currentLeader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.upNodes()) {
      const core = (n.driver as RaftDriver).core;
      if (core.role === "leader" && (best === undefined || core.term > (best.driver as RaftDriver).core.term)) best = n;
    }
    return best;
  }

  // ------------------------------------------------------------ faults

  private faultLoop(): void {
    if (this.world.nowMs >= this.faultPhaseEndMs) return;
    this.injectFault(this.drawFault());
    this.world.at(this.world.nowMs + this.plan.gapMinMs + this.rng.nextInt(this.plan.gapSpanMs), () => this.faultLoop());
  }

  private drawFault(): FaultKind {
    let roll = this.rng.nextInt(this.plan.weights.reduce((a, b) => a + b, 0));
    for (let i = 0; i < this.plan.kinds.length; i++) {
      roll -= this.plan.weights[i];
      if (roll < 0) return this.plan.kinds[i];
    }
    return this.plan.kinds[0];
  }

  private injectFault(kind: FaultKind): void {
    switch (kind) {
      case "partition":
        if (!this.partitionActive) this.partition();
        return;
      case "linkStall":
        this.stallRandomLink();
        return;
      case "crash": {
        // Leaders are the interesting victims: their uncommitted tails are what later terms overwrite.
        const leader = this.currentLeader();
        const victim = leader !== undefined && this.rng.chance(0.6) ? leader : this.rng.pick([...this.nodes.values()]);
        if (victim.driver !== undefined && this.upNodes().length > 1) this.crashAndRestart(victim);
        return;
      }
      case "pause":
        this.pause();
        return;
      case "network":
        this.changeNetworkProfile();
        return;
      case "slowDisk":
      case "diskErrors":
      case "slowApply":
        this.slowNode(kind);
        return;
      case "transfer":
        this.transferLeadership();
        return;
      case "membership":
        this.changeMembership();
        return;
      case "leaderStall": {
        const leader = this.currentLeader();
        if (leader === undefined) return;
        const follower = this.rng.pick([...this.nodes.keys()].filter((id) => id !== leader.id));
        this.stallLink(leader.id, follower, "hold", 300 + this.rng.nextInt(2700));
        return;
      }
      case "lagChurn":
        this.lagChurn();
        return;
    }
  }

  /**
   * Membership churn while a minority of followers lags in applying: their fsyncs stall for
   * seconds (storage they share is saturated), while the majority commits on, so they learn of
   * committed changes they have not applied; then the leader fails, and a laggard may campaign.
   */
  private lagChurn(): void {
    const leader = this.currentLeader();
    if (leader === undefined) return;
    const followers = shuffle([...this.nodes.values()].filter((n) => n !== leader && n.up), this.rng);
    const laggards = followers.slice(0, Math.max(1, Math.floor((followers.length - 1) / 2)));
    for (const n of laggards) n.disk.profile = STALLING_DISK;
    this.log(`${laggards.map((n) => n.id).join(",")}'s fsyncs stall; membership churns`);
    // Every later step checks the fault phase: once it ends, faults end.
    for (const atMs of [30, 250, 500]) {
      this.world.at(this.world.nowMs + atMs, () => {
        if (this.world.nowMs < this.faultPhaseEndMs) this.changeMembership();
      });
    }
    this.world.at(this.world.nowMs + 700 + this.rng.nextInt(600), () => {
      const now = this.currentLeader();
      if (now === undefined || this.upNodes().length <= 1 || this.world.nowMs >= this.faultPhaseEndMs) return;
      if (this.rng.chance(0.5)) this.crashAndRestart(now);
      else now.process.pauseUntilIn(300 + this.rng.nextInt(1500));
    });
    this.world.at(this.world.nowMs + 2500, () => {
      for (const n of laggards) if (n.disk.profile === STALLING_DISK) n.disk.profile = FAST_DISK;
    });
  }

  /**
   * One direction of one link stalls, as a TCP connection does while it reconnects: what is sent
   * waits (or, now and then, is lost) and arrives in order when the stall ends. Several may
   * overlap, in both directions: that is how an answer arrives after its asker changed term.
   */
  private stallRandomLink(): void {
    const ids = [...this.nodes.keys()];
    const from = this.rng.pick(ids);
    const to = this.rng.pick(ids.filter((id) => id !== from));
    // Some stalls outlast several elections: what they held then answers a sender that changed term since.
    this.stallLink(from, to, this.rng.chance(0.75) ? "hold" : "drop", 20 + this.rng.nextInt(this.rng.chance(0.3) ? 3000 : 500));
  }

  private stallLink(from: NodeId, to: NodeId, mode: LinkMode, ms: number): void {
    if (this.network.mode(from, to) !== "up") return;
    this.log(`link ${from}>${to} ${mode}s for ${ms}ms`);
    this.network.setMode(from, to, mode);
    this.world.at(this.world.nowMs + ms, () => {
      if (!this.partitionActive) this.network.setMode(from, to, "up");
    });
  }

  private changeNetworkProfile(): void {
    {
      this.network.profile = this.rng.pick<LinkProfile>([
        CALM_LINKS,
        { dropRate: 0.05, duplicateRate: 0.05, delayMinMs: 1, delayMaxMs: 20, reorder: false },
        { dropRate: 0.2, duplicateRate: 0.02, delayMinMs: 1, delayMaxMs: 10, reorder: false },
        { dropRate: 0.02, duplicateRate: 0.1, delayMinMs: 5, delayMaxMs: 80, reorder: true },
      ]);
      this.log(() => `network: drop ${this.network.profile.dropRate}, duplicate ${this.network.profile.duplicateRate}, ` +
        `delay ${this.network.profile.delayMinMs}-${this.network.profile.delayMaxMs}ms${this.network.profile.reorder ? ", reordering" : ""}`);
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
    const shape = this.rng.pick(["isolate", "split", "bridge", "ring", "oneWay"] as const);
    const canTalk = new Set<string>();
    const allow = (a: NodeId, b: NodeId): void => {
      canTalk.add(`${a}>${b}`);
      canTalk.add(`${b}>${a}`);
    };
    const half = Math.floor(ids.length / 2);
    const sideA = shuffled.slice(0, shape === "isolate" || shape === "oneWay" ? 1 : half);
    const sideB = shuffled.slice(sideA.length);
    switch (shape) {
      case "isolate":
      case "split":
        for (const side of [sideA, sideB]) for (const a of side) for (const b of side) allow(a, b);
        break;
      case "oneWay":
        // The one node hears everyone, but nothing it sends arrives (or the other way round).
        for (const a of ids) for (const b of ids) allow(a, b);
        for (const b of sideB) canTalk.delete(this.rng.chance(0.5) ? `${sideA[0]}>${b}` : `${b}>${sideA[0]}`);
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
    // Cut links either drop what is sent, or hold it to deliver late, in order, on heal.
    const cutMode: () => LinkMode = this.rng.pick([() => "drop" as const, () => "hold" as const, () => (this.rng.chance(0.5) ? "drop" : "hold")]);
    for (const a of ids) for (const b of ids) if (a !== b && !canTalk.has(`${a}>${b}`)) this.network.setMode(a, b, cutMode());
    this.partitionActive = true;
    this.stats.partitions++;
    this.log(`partition (${shape}): ${sideA.join(",")} | ${sideB.join(",")}`);
    this.world.at(this.world.nowMs + 100 + this.rng.nextInt(1500), () => this.healPartition());
  }

  private healPartition(): void {
    if (!this.partitionActive) return;
    this.network.healAll();
    this.partitionActive = false;
    this.log("partition healed; held messages delivered");
  }

  private pause(): void {
    const leader = this.currentLeader();
    const victim = leader !== undefined && this.rng.chance(0.5) ? leader : this.rng.pick([...this.nodes.values()]);
    if (!victim.up) return;
    const ms = 50 + this.rng.nextInt(this.rng.chance(0.3) ? 3000 : 400);
    this.stats.pauses++;
    this.log(`pause ${victim.id} for ${ms}ms`);
    victim.process.pauseUntilIn(ms);
  }

  /** A slow disk, a failing one, or a state machine whose applies block the loop. */
  private slowNode(kind: "slowDisk" | "diskErrors" | "slowApply"): void {
    const node = this.rng.pick([...this.nodes.values()]);
    if (kind === "slowDisk") {
      node.disk.profile = node.disk.profile === FAST_DISK ? SLOW_DISK : FAST_DISK;
      this.log(`${node.id}'s disk is now ${node.disk.profile === FAST_DISK ? "fast" : "slow"}`);
    } else if (kind === "diskErrors") {
      node.disk.profile = { ...node.disk.profile, errorRate: node.disk.profile.errorRate > 0 ? 0 : 0.02 };
      this.log(`${node.id}'s disk ${node.disk.profile.errorRate > 0 ? "starts failing writes" : "stops failing"}`);
    } else if (node.machine !== undefined) {
      node.machine.applyBusyMs = node.machine.applyBusyMs > 0 ? 0 : 1 + this.rng.nextInt(30);
      this.log(`${node.id}'s applies now block for ${node.machine.applyBusyMs}ms`);
    }
  }

  private healAll(): void {
    this.log("faults end: heal the network and disks, resume paused nodes, restart every crashed node");
    this.stampAtHeal = this.stamp;
    this.healPartition();
    this.network.healAll();
    this.network.profile = CALM_LINKS;
    for (const node of this.nodes.values()) {
      node.process.resume();
      node.disk.profile = FAST_DISK;
      if (node.machine !== undefined) node.machine.applyBusyMs = 0;
      if (node.driver === undefined) this.restart(node);
    }
  }

  private transferLeadership(): void {
    const leader = this.currentLeader();
    if (leader === undefined) return;
    const driver = leader.driver as RaftDriver;
    const to = this.rng.pick(driver.core.conf.voters);
    try {
      driver.transferLeadership(to);
      this.stats.leaderTransfers++;
      this.log(`transfer leadership ${leader.id} -> ${to}`);
    } catch (err) {
      if (!(err instanceof Error)) throw err;
    }
  }

  private changeMembership(): void {
    const leader = this.currentLeader();
    if (leader === undefined) return;
    const conf = (leader.driver as RaftDriver).core.conf;
    const changes: ConfChange[] = [];
    const pick = (): ConfChange | undefined => {
      if (conf.learners.length > 0 && this.rng.chance(0.5)) return { type: "promote", node: this.rng.pick(conf.learners) };
      if (this.spareIds.length > 0 && this.rng.chance(0.6)) return { type: "addLearner", node: this.spareIds[0], context: this.spareIds[0] };
      if (conf.voters.length > 2) return { type: "remove", node: this.rng.pick(conf.voters) };
      return undefined;
    };
    const first = pick();
    if (first === undefined) return;
    changes.push(first);
    // Sometimes two at once: the second must be refused while the first is unapplied.
    if (this.rng.chance(0.3)) {
      const second = pick();
      if (second !== undefined && second.node !== first.node) changes.push(second);
    }
    for (const change of changes) {
      this.log(`propose membership change: ${change.type} ${change.node}`);
      if (change.type === "addLearner" && this.spareIds[0] === change.node) {
        this.spareIds.shift();
        const node = this.addNode(change.node);
        this.startNode(node, false);
      }
      (leader.driver as RaftDriver).changeMembership(change).catch(() => undefined);
    }
  }

  // ------------------------------------------------------------ clients

  private async client(c: number): Promise<void> {
    const clientProcess = new SimProcess(this.world, `client${c}`);
    clientProcess.start();
    await clientProcess.sleep(this.rng.nextInt(50));
    let guess: NodeId = NONE;
    while (this.world.nowMs < this.clientsStopMs && this.violations.length < VIOLATIONS_MAX) {
      const up = this.upNodes();
      if (up.length === 0) {
        await clientProcess.sleep(10);
        continue;
      }
      const guessed = this.nodes.get(guess);
      const target = guessed?.up === true && this.rng.chance(0.8) ? guessed : this.rng.pick(up);
      const driver = target.driver as RaftDriver;
      const key = this.rng.pick(KEYS);
      const opNumber = ++this.opCounter;
      // An impatient client gives up and leaves a long uncommitted tail on a stale leader.
      const timeoutMs = 10 + this.rng.nextInt(this.rng.chance(0.7) ? 100 : 600);
      if (this.rng.chance(0.6)) {
        const value = `v${opNumber}`;
        const op: MutableWrite = { kind: "write", key, value, invokedAt: ++this.stamp, completedAt: undefined, acknowledged: false };
        this.history.push(op);
        const outcome = await withTimeout(driver.propose(textEncoder.encode(`${key}=${value}`)), clientProcess, timeoutMs);
        if (outcome.ok) {
          op.completedAt = ++this.stamp;
          op.acknowledged = true;
          this.stats.writesAcknowledged++;
          if (op.invokedAt > this.stampAtHeal && this.firstAckAfterHealMs === undefined) this.firstAckAfterHealMs = this.world.nowMs;
        }
        // A write that failed or timed out may still land at any later time: left open.
      } else {
        const op: MutableRead = { kind: "read", key, value: null, invokedAt: ++this.stamp, completedAt: 0 };
        const outcome = await withTimeout(driver.readBarrier(), clientProcess, timeoutMs);
        // Read the state at once: the barrier promised it is current at this moment.
        const machine = target.machine;
        if (outcome.ok && machine !== undefined && target.driver === driver) {
          op.value = machine.kv.get(key) ?? null;
          op.completedAt = ++this.stamp;
          this.history.push(op);
          this.stats.readsServed++;
        }
      }
      guess = target.up ? (target.driver as RaftDriver).core.leader : NONE;
      await clientProcess.sleep(this.rng.nextInt(25));
    }
  }

  // ------------------------------------------------------------ checks

  /** Runs after every event: whatever changed is checked now. Returns true to stop the run. */
  private afterEvent(): boolean {
    if (this.violations.length >= VIOLATIONS_MAX) return true;
    if (this.world.eventsRun > EVENTS_MAX) {
      this.violation(`the run scheduled more than ${EVENTS_MAX} events: a livelock`);
      return true;
    }
    for (const node of this.nodes.values()) {
      if (!node.up) continue;
      this.checkCommits(node);
      const core = (node.driver as RaftDriver).core;
      if (core.role === "leader" && node.leaderTermSeen !== core.term) this.checkLeader(node);
      else if (core.role === "candidate" && node.candidateTermSeen !== core.term) this.checkCandidate(node);
    }
    return this.violations.length >= VIOLATIONS_MAX;
  }

  /** A node's commit index moved: the entries it now calls committed must be the cluster's, and safe. */
  private checkCommits(node: SimNode): void {
    const core = (node.driver as RaftDriver).core;
    const committed = core.log.committed;
    if (committed <= node.checkedCommit) return;
    for (let i = Math.max(node.checkedCommit + 1, core.log.firstIndex()); i <= committed; i++) {
      const term = core.log.term(i) as number;
      const known = this.committedTerm[i];
      if (known === undefined) {
        this.committedTerm[i] = term;
        this.commitTermOf[i] = core.term;
        this.maxCommitted = Math.max(this.maxCommitted, i);
        const entry = core.log.entryAt(i);
        if (entry?.type === "confChange") {
          this.stats.membershipChanges++;
          this.log(`membership change committed at ${i}: ${entry.change.type} ${entry.change.node}`);
        }
        this.checkCommitSafety(node, i, term);
      } else if (known !== term) {
        this.violation(`state machine safety: ${node.id} holds entry ${i} of term ${term} as committed, but ${i} committed with term ${known}`);
        return;
      }
    }
    node.checkedCommit = committed;
    // A new leader's first commits are where it settles what earlier leaders left behind (Figure
    // 8); dying right after them is the schedule that exposes a wrong commit rule.
    if (core.role === "leader" && core.log.term(committed) === core.term && node.firstCommitTermSeen !== core.term) {
      node.firstCommitTermSeen = core.term;
      if (this.world.nowMs < this.faultPhaseEndMs && this.rng.chance(0.3)) this.crashSoon(node, 4);
    }
  }

  /** Crashes `node` within `windowMs`, unless it died or restarted meanwhile. */
  private crashSoon(node: SimNode, windowMs: number): void {
    const driver = node.driver;
    this.world.at(this.world.nowMs + this.rng.nextInt(windowMs), () => {
      if (node.driver === driver && this.world.nowMs < this.faultPhaseEndMs && this.upNodes().length > 1) this.crashAndRestart(node);
    });
  }

  /** The last index committed in a term before `term`: what a leader of `term` must hold. */
  private committedBefore(term: number): number {
    let index = this.maxCommitted;
    while (index > 1 && (this.commitTermOf[index] ?? 0) >= term) index--;
    return index;
  }

  /**
   * A candidate campaigns under its own configuration. If its log lacks a committed entry, no
   * majority of that configuration may hold logs that are no more up to date than its own, or it
   * could win and overwrite the entry. Commit safety judges elections under the committer's
   * configuration; this judges them under the candidate's, which differs when it lags behind a
   * membership change: the case that one change at a time, and no campaign with a change
   * unapplied, exist to prevent.
   */
  private checkCandidate(node: SimNode): void {
    const core = (node.driver as RaftDriver).core;
    node.candidateTermSeen = core.term;
    // It campaigns under the configuration it has applied; the one its own log has committed may be
    // newer. If majorities of the two need not meet, two leaders could be elected in one term.
    let committedConf: ConfState = core.conf;
    for (let i = Math.max(core.log.applied + 1, core.log.firstIndex()); i <= core.log.committed; i++) {
      const e = core.log.entryAt(i);
      if (e?.type === "confChange") committedConf = applyConfChange(committedConf, e.change);
    }
    if (!majoritiesIntersect(core.conf.voters, committedConf.voters)) {
      this.violation(`election safety: ${node.id} campaigns in term ${core.term} under voters ${core.conf.voters.join(",")}, ` +
        `while its log has committed voters ${committedConf.voters.join(",")}: a majority of each need not meet`);
      return;
    }
    const index = this.committedBefore(core.term);
    const term = this.committedTerm[index];
    if (index <= core.log.snapshotIndex() || core.log.term(index) === term) return;
    const candidateLast: [number, number] = [core.log.lastTerm(), core.log.lastIndex()];
    const voters = core.conf.voters;
    const electors = voters.filter((id) => {
      const voter = this.nodes.get(id);
      if (voter === undefined) return false;
      if (voter === node) return true;
      const [t, i] = imageLast(voter.disk.durable);
      return candidateLast[0] > t || (candidateLast[0] === t && candidateLast[1] >= i);
    });
    if (electors.length >= majorityOf(voters.length)) {
      this.violation(`election safety: ${node.id} campaigns in term ${core.term} under voters ${voters.join(",")} without committed entry ${index} ` +
        `(term ${term}), and could win with votes from ${electors.join(",")}`);
    }
  }

  /** Election safety and leader completeness, when a node reports it leads. */
  private checkLeader(node: SimNode): void {
    const core = (node.driver as RaftDriver).core;
    if (node.leaderTermSeen === core.term) return;
    node.leaderTermSeen = core.term;
    this.stats.elections++;
    this.log(`${node.id} leads term ${core.term}`);
    const other = this.leaderOfTerm.get(core.term);
    if (other !== undefined && other !== node.id) {
      this.violation(`election safety: ${other} and ${node.id} both lead term ${core.term}`);
      return;
    }
    this.leaderOfTerm.set(core.term, node.id);
    const first = core.log.firstIndex() - 1;
    const terms: number[] = [];
    for (let i = first; i <= core.log.lastIndex(); i++) terms.push(core.log.term(i) as number);
    this.leaderLogs.set(core.term, { first, terms });
    for (const claim of this.pendingClaims.get(core.term) ?? []) this.verifyClaim(claim);
    this.pendingClaims.delete(core.term);
    // A new leader is still reconciling the logs it inherited (Figure 8's window): crash some once
    // their first appends are out, before their own entry commits.
    if (this.world.nowMs < this.faultPhaseEndMs && this.rng.chance(0.25)) this.crashSoon(node, 40);
    // Leader completeness: every entry committed in an earlier term is in the new leader's log.
    for (let i = core.log.firstIndex(), through = this.committedBefore(core.term); i <= through; i++) {
      const term = core.log.term(i);
      if (term !== this.committedTerm[i]) {
        this.violation(`leader completeness: ${node.id}, leader of term ${core.term}, has ${term === undefined ? "no entry" : `term ${term}`} ` +
          `at committed index ${i} (term ${this.committedTerm[i]})`);
        return;
      }
    }
  }

  /**
   * A successful append response says: my log matches the log of this term's leader through this
   * index, on my disk. Log matching, and so every commit, rests on that being true, so it is checked
   * as each one leaves its sender, against what that leader held when it won (and the entries of
   * its own term it appended since). An answer about a term with no known leader yet is checked
   * when one is.
   */
  private checkAcknowledgement(m: Message): void {
    if (m.type !== "appendResp" || m.reject || m.index === 0) return;
    const node = this.nodes.get(m.from);
    if (node === undefined) return;
    const image = node.disk.durable;
    // At or below the snapshot: committed entries, which every leader of a later term holds.
    if (m.index <= (image.snapshot?.metadata.index ?? 0)) return;
    const term = imageTerm(image, m.index);
    if (term === undefined) {
      this.violation(`acknowledgement: ${m.from} tells ${m.to} it holds entry ${m.index} (term ${m.term}), ` +
        `but its durable log ends at ${imageLast(image)[1]}`);
      return;
    }
    const claim: AckClaim = { message: m, heldTerm: term };
    if (this.leaderLogs.has(m.term)) {
      this.verifyClaim(claim);
      return;
    }
    let pending = this.pendingClaims.get(m.term);
    if (pending === undefined) this.pendingClaims.set(m.term, (pending = []));
    pending.push(claim);
  }

  /**
   * Answer conformance, Raft's matchIndex rule: a success answer to an append or a snapshot claims
   * only what that request established (through its last entry, or the responder's commit index),
   * never the rest of the responder's log; an answer to an older term's request claims nothing.
   * The leader commits on these claims. A claim past what its request established is true only
   * by luck, so this flags it the first time it is made, where the outcome checkers see it only
   * once it covers another leader's entries.
   */
  private stepCheckingAnswer(m: Message, step: () => void): void {
    const driver = this.nodes.get(m.to)?.driver;
    if ((m.type !== "append" && m.type !== "snapshot") || driver === undefined || !driver.isStarted) {
      step();
      return;
    }
    const core = driver.core;
    const queuedBefore = new Set(core.outbox);
    step();
    const established = Math.max(core.log.committed, m.type === "append" ? m.prevLogIndex + m.entries.length : m.snapshot.metadata.index);
    for (const answer of core.outbox) {
      if (queuedBefore.has(answer) || answer.type !== "appendResp" || answer.to !== m.from || answer.reject) continue;
      const limit = answer.term > m.term ? 0 : established;
      if (answer.index <= limit) continue;
      this.violation(`answer conformance: ${m.to} answers ${m.from}'s ${m.type} of term ${m.term} ` +
        `(${m.type === "append" ? `entries ${m.prevLogIndex + 1}..${m.prevLogIndex + m.entries.length}` : `snapshot through ${m.snapshot.metadata.index}`}) ` +
        `claiming its log matches through ${answer.index} (in term ${answer.term}), but that request established only ${limit}`);
    }
  }

  private verifyClaim({ message: m, heldTerm }: AckClaim): void {
    const log = this.leaderLogs.get(m.term);
    if (log === undefined) return;
    const last = log.first + log.terms.length - 1;
    // Beyond what the leader held when it won, it has only entries of its own term.
    const expected = m.index > last ? m.term : m.index < log.first ? undefined : log.terms[m.index - log.first];
    if (expected !== undefined && expected !== heldTerm) {
      this.violation(`acknowledgement: ${m.from} tells ${m.to} its log matches term ${m.term}'s leader (${this.leaderOfTerm.get(m.term)}) ` +
        `through ${m.index}, but holds an entry of term ${heldTerm} there where that leader's is of term ${expected}`);
    }
  }

  /**
   * Commit safety, the invariant behind leader completeness: once an entry is committed, no voter
   * whose durable log lacks it can collect a majority of votes, because a majority holds it and
   * refuses any candidate whose log is less up to date. Checking every possible election, not only
   * the ones that happen, catches a wrong commit the moment it is made. Durable means fsynced:
   * a crash may take the rest.
   */
  private checkCommitSafety(observer: SimNode, index: number, term: number): void {
    const voters = (observer.driver as RaftDriver).core.conf.voters;
    const need = majorityOf(voters.length);
    for (const candidateId of voters) {
      const candidate = this.nodes.get(candidateId);
      if (candidate === undefined || imageHas(candidate.disk.durable, index, term)) continue;
      const [candTerm, candIndex] = imageLast(candidate.disk.durable);
      const electors = voters.filter((id) => {
        const voter = this.nodes.get(id);
        if (voter === undefined) return false;
        const [t, i] = imageLast(voter.disk.durable);
        return candTerm > t || (candTerm === t && candIndex >= i);
      });
      if (electors.length >= need) {
        this.violation(`commit safety: ${observer.id} holds entry ${index} (term ${term}) as committed, yet ${candidateId}, ` +
          `whose durable log lacks it, could win an election with votes from ${electors.join(",")}`);
        return;
      }
    }
  }

  /** Log matching, as entries are written: an (index, term) pair names one entry, with one predecessor term. */
  private checkLogMatching(node: SimNode, part: ReadyWrite): void {
    const first = part.entries[0];
    if (first === undefined) return;
    const image = part.snapshot === undefined ? node.disk.latest : { hardState: undefined, snapshot: part.snapshot, entries: [] };
    let prevTerm = imageTerm(image, first.index - 1);
    for (const e of part.entries) {
      const key = `${e.index}:${e.term}`;
      const identity = `${entryIdentity(e)}<${prevTerm}`;
      const seen = this.logIdentity.get(key);
      if (seen === undefined) this.logIdentity.set(key, identity);
      else if (seen !== identity) {
        this.violation(`log matching: ${node.id} writes ${identity} at ${key}, another node holds ${seen}`);
        return;
      }
      prevTerm = e.term;
    }
  }

  /** State machine safety as commands apply: one command per index, and one state after it. */
  private onApplied(node: SimNode, index: number, command: string, digest: number): void {
    const known = this.appliedCommand.get(index);
    if (known === undefined) {
      this.appliedCommand.set(index, command);
      this.digestAfter.set(index, digest);
    } else if (known !== command) {
      this.violation(`state machine safety: ${node.id} applied ${command} at index ${index}, where ${known} was applied before`);
    } else if (this.digestAfter.get(index) !== digest) {
      this.violation(`state machine safety: ${node.id}'s state after index ${index} differs from another node's`);
    }
  }

  private onRestored(node: SimNode, state: KvSnapshotState): void {
    if (node.ready) {
      this.stats.snapshotInstalls++;
      this.log(`${node.id} installs a snapshot through command index ${state.lastIndex}`);
    }
    const expected = state.lastIndex === 0 ? 0 : this.digestAfter.get(state.lastIndex);
    if (expected !== undefined && expected !== state.digest) {
      this.violation(`${node.id} restored a snapshot whose state differs from what was applied through index ${state.lastIndex}`);
    }
  }

  private logFinalState(): void {
    if (this.opts.trace !== true) return;
    for (const n of this.nodes.values()) {
      if (!n.up) {
        this.log(`final ${n.id}: down`);
        continue;
      }
      const r = (n.driver as RaftDriver).core;
      const members = [...r.conf.voters, ...r.conf.learners];
      const progress = r.role === "leader" ? members.map((id) => `${id}:${JSON.stringify(r.progressOf(id))}`).join(" ") : "";
      this.log(`final ${n.id}: ${r.role} term ${r.term} leader ${r.leader || "-"} commit ${r.log.committed} ` +
        `applied ${(n.driver as RaftDriver).applied} last ${r.log.lastIndex()} stable ${r.log.stableIndex} voters ${r.conf.voters.join(",")} ` +
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
    const leaderDriver = leader.driver as RaftDriver;
    const conf = leaderDriver.core.conf;
    const target = leaderDriver.core.log.committed;
    for (const id of [...conf.voters, ...conf.learners]) {
      const node = this.nodes.get(id);
      if (node?.up !== true) {
        this.violation(`liveness: member ${id} is not running at the end`);
        continue;
      }
      const driver = node.driver as RaftDriver;
      if (driver.applied < target) {
        this.violation(`liveness: member ${id} applied only through ${driver.applied} of ${target} within ${CONVERGENCE_MS}ms of quiet`);
      } else if (node.machine?.digest !== leader.machine?.digest) {
        this.violation(`state machine safety: member ${id} ends with a state different from ${leader.id}'s`);
      }
    }
    // Durability and linearizability over the whole history, against the committed order.
    const order = new Map<string, string[]>();
    for (const index of [...this.appliedCommand.keys()].sort((a, b) => a - b)) {
      const command = this.appliedCommand.get(index) as string;
      const eq = command.indexOf("=");
      const key = command.slice(0, eq);
      let values = order.get(key);
      if (values === undefined) order.set(key, (values = []));
      values.push(command.slice(eq + 1));
    }
    const result = checkLinearizable(this.history, order);
    for (const p of result.problems.slice(0, VIOLATIONS_MAX)) this.violation(`linearizability: ${p}`);
  }
}

interface AckClaim {
  readonly message: AppendResponse;
  /** The term of the entry the sender holds durably at the acknowledged index. */
  readonly heldTerm: number;
}

/** The checkers' own count of a majority, kept apart from the core's so that a bug there cannot hide here. */
function majorityOf(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

/** Whether every majority of `a` shares a member with every majority of `b`. */
function majoritiesIntersect(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  const shared = a.filter((id) => b.includes(id)).length;
  const onlyA = a.length - shared;
  const onlyB = b.length - shared;
  // Two disjoint majorities exist when each can be completed from the shared members the other left.
  return Math.max(0, majorityOf(a.length) - onlyA) + Math.max(0, majorityOf(b.length) - onlyB) > shared;
}

async function withTimeout<T>(promise: Promise<T>, process: SimProcess, timeoutMs: number): Promise<{ ok: true; value: T } | { ok: false }> {
  return await Promise.race([
    promise.then((value) => ({ ok: true as const, value }), () => ({ ok: false as const })),
    process.sleep(timeoutMs).then(() => ({ ok: false as const })),
  ]);
}

function entryIdentity(e: Entry): string {
  if (e.type === "confChange") return `conf:${e.change.type}:${e.change.node}`;
  if (e.data.byteLength === 0) return "noop";
  return new TextDecoder().decode(e.data);
}

/** Whether an image holds the entry (index, term), counting a snapshot past it as holding it. */
function imageHas(image: DiskImage, index: number, term: number): boolean {
  const snapIndex = image.snapshot?.metadata.index ?? 0;
  return index <= snapIndex || imageTerm(image, index) === term;
}

/** The (last term, last index) of an image: what a vote request would carry after a restart. */
function imageLast(image: DiskImage): [number, number] {
  const snapIndex = image.snapshot?.metadata.index ?? 0;
  const last = image.entries[image.entries.length - 1];
  return last === undefined ? [image.snapshot?.metadata.term ?? 0, snapIndex] : [last.term, last.index];
}

function imageTerm(image: DiskImage, index: number): number | undefined {
  const snapIndex = image.snapshot?.metadata.index ?? 0;
  if (index === snapIndex) return image.snapshot?.metadata.term ?? 0;
  if (index < snapIndex) return undefined;
  return image.entries[index - snapIndex - 1]?.term;
}

function shuffle<T>(items: readonly T[], rng: SeededRandom): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
