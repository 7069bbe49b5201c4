// The driver: the part of a Raft node that does I/O around the pure core.
//
// Timers become tick(); inbound messages become step(); each Ready is persisted in one LevelDB
// batch (fsynced when it holds entries, a snapshot, a term or a vote), its messages sent, its
// committed entries (already durable here) applied while the write runs, and then the core is
// advanced. Everything that arrives while a write is in flight waits for the next Ready, so one
// fsync carries as many proposals as arrived meanwhile: that batching is where the throughput
// comes from. As leader, appends go to followers while the leader's own fsync runs
// (thesis §10.2.1): the core counts the leader's copy toward a commit only after it is durable.

import { randomInt } from "node:crypto";
import type { Logger } from "pino";
import { type Chunks, Reader, Writer, chunksLength, writeChunks } from "../../common/codec.js";
import { type Proposed, RaftNode, SENDABLE_BEFORE_PERSIST, bootstrapSnapshot, defaultRaftConfig } from "../core/raft.js";
import { SNAPSHOT_DATA_ON_DISK } from "../core/log.js";
import type { RandomSource } from "../core/random.js";
import type { StateMachine } from "../state_machine.js";
import type { LevelLogStorage } from "../storage/leveldb.js";
import { PeerTransport } from "../transport/transport.js";
import {
  type ConfChange,
  type Entry,
  type Message,
  NONE,
  type NodeId,
  RaftRefusal,
  type Ready,
  type Role,
  type Snapshot,
  type SnapshotRequest,
} from "../core/types.js";

export interface RaftDriverOptions {
  readonly id: NodeId;
  readonly clusterId: string;
  readonly peerListen: string;
  /** The address other nodes reach this node's peer port at (defaults to peerListen). */
  readonly peerAdvertise?: string;
  /** Founding members (id -> peer address) when forming a new cluster; omit when joining. */
  readonly initialCluster?: ReadonlyMap<NodeId, string>;
  /** Known members to contact when joining an existing cluster. */
  readonly joinPeers?: ReadonlyMap<NodeId, string>;
  readonly storage: LevelLogStorage;
  readonly stateMachine: StateMachine;
  readonly logger: Logger;
  readonly tickMs?: number;
  readonly electionTimeoutTicks?: number;
  readonly heartbeatIntervalTicks?: number;
  /** Compact the log once this many entries have been applied since the last snapshot. */
  readonly snapshotEntries?: number;
  readonly proposalQueueMax?: number;
  readonly requestTimeoutMs?: number;
}

/** Proposals in one forwarded call, at most: bounds the message and the leader's burst. */
const FORWARD_BATCH_MAX = 1024;

export const driverDefaults = {
  // 50 ms ticks: heartbeats every 50 ms and an election timeout of 600 ms, randomized to
  // [600, 1200) ms. Failover then takes at most ~1.2 s plus an election round trip (p99 <= 1.5 s),
  // while pre-vote and check-quorum keep a node stalled for a few hundred ms from forcing elections.
  tickMs: 50,
  electionTimeoutTicks: 12,
  heartbeatIntervalTicks: 1,
  snapshotEntries: 50_000,
  proposalQueueMax: 65_536,
  requestTimeoutMs: 5_000,
} as const;

/** An error a client should see as "try again", with where to try. */
export class NotAvailableError extends Error {
  constructor(message: string, readonly leaderHint: NodeId = NONE) {
    super(message);
    this.name = "NotAvailableError";
  }
}

export interface MemberStatus {
  readonly id: NodeId;
  readonly peerAddress: string;
  readonly role: "leader" | "follower" | "learner";
  /** Known on the leader only: the highest log index the member is known to hold. */
  readonly match: number | undefined;
}

export interface NodeStatus {
  readonly id: NodeId;
  readonly role: Role;
  readonly leader: NodeId;
  readonly term: number;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  /** Milliseconds since this node last heard from the leader (0 on the leader itself). */
  readonly lastContactMs: number | undefined;
  readonly members: MemberStatus[];
}

interface PendingProposal {
  readonly data: Uint8Array;
  readonly resolve: (index: number) => void;
  readonly reject: (err: Error) => void;
}

interface AwaitingApply {
  readonly term: number;
  readonly resolve: (index: number) => void;
  readonly reject: (err: Error) => void;
}

interface IndexWaiter {
  readonly index: number;
  readonly resolve: () => void;
}

type ForwardRequest =
  /** Proposals a follower's clients made in one turn of its event loop, forwarded as one call. */
  | { kind: "propose"; data: Uint8Array[] }
  | { kind: "confChange"; change: ConfChange }
  /** Application requests only the leader can answer, such as a TTL heartbeat: opaque here. */
  | { kind: "app"; data: Uint8Array };

/** Handles an application request forwarded to the leader; its answer goes back to the caller. */
export type LeaderRequestHandler = (request: Uint8Array) => Promise<Uint8Array>;


const MEMBERS_SNAPSHOT_VERSION = 1;

export class RaftDriver {
  readonly id: NodeId;
  private readonly opts: RaftDriverOptions;
  private readonly log: Logger;
  private raft!: RaftNode;
  private readonly transport: PeerTransport;
  private members = new Map<NodeId, string>();
  private ticker: NodeJS.Timeout | undefined;
  private pumping = false;
  private pumpAgain = false;
  private pumpIdle: (() => void)[] = [];
  private stopped = false;
  private readonly proposals: PendingProposal[] = [];
  private readonly awaitingApply = new Map<number, AwaitingApply>();
  private appliedIndex = 0;
  private indexWaiters: IndexWaiter[] = [];
  private readonly readWaiters = new Map<string, { resolve: (index: number) => void; reject: (err: Error) => void }>();
  private readCounter = 0;
  private lastLeaderContactAt: number | undefined;
  private readonly roleListeners: ((role: Role, leader: NodeId) => void)[] = [];
  private fatalError: Error | undefined;
  private readonly fatalListeners: ((err: Error) => void)[] = [];
  private leaderRequestHandler: LeaderRequestHandler | undefined;
  private proposalFlushScheduled = false;
  private compacting = false;
  private readonly forwardQueue: PendingProposal[] = [];
  private forwardFlushScheduled = false;
  private persistedTerm = -1;
  private persistedVote: NodeId = NONE;

  constructor(opts: RaftDriverOptions) {
    this.id = opts.id;
    this.opts = opts;
    this.log = opts.logger;
    this.transport = new PeerTransport({
      selfId: opts.id,
      clusterId: opts.clusterId,
      listen: opts.peerListen,
      logger: opts.logger.child({ component: "transport" }),
      // Links between followers are idle until an election needs them; a link still backing off
      // from an earlier outage would drop the vote requests that end this one. So retry often.
      limits: { backoffMaxMs: Math.max(100, 4 * (opts.tickMs ?? driverDefaults.tickMs)) },
    });
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    const stored = await this.opts.storage.load();
    let snapshot = stored.snapshot;
    let hardState = stored.hardState;
    if (snapshot === undefined && hardState === undefined && stored.entries.length === 0 && this.opts.initialCluster !== undefined) {
      // A founding member of a new cluster: every founder writes the identical bootstrap snapshot.
      const founders = [...this.opts.initialCluster.keys()];
      const boot = bootstrapSnapshot(founders);
      snapshot = { metadata: boot.metadata, data: encodeSnapshotEnvelope(this.opts.initialCluster, []) };
      hardState = { term: 1, vote: NONE, commit: 1 };
      await this.opts.storage.saveReady({ hardState, entries: [], snapshot });
      this.log.info({ founders }, "bootstrapped a new cluster");
    }
    const random: RandomSource = { nextInt: (bound) => randomInt(bound) };
    this.raft = new RaftNode(
      {
        ...defaultRaftConfig,
        id: this.id,
        random,
        electionTimeoutTicks: this.opts.electionTimeoutTicks ?? driverDefaults.electionTimeoutTicks,
        heartbeatIntervalTicks: this.opts.heartbeatIntervalTicks ?? driverDefaults.heartbeatIntervalTicks,
      },
      {
        ...(hardState === undefined ? {} : { hardState }),
        ...(snapshot === undefined ? {} : { snapshot }),
        entries: stored.entries,
        applied: snapshot?.metadata.index ?? 0,
      },
    );
    this.persistedTerm = hardState?.term ?? 0;
    this.persistedVote = hardState?.vote ?? NONE;
    this.restoreSnapshot(snapshot);
    // The snapshot is on disk (loaded from it, or just bootstrapped into it): memory need not hold it too.
    if (snapshot !== undefined) this.raft.log.releaseSnapshotData(snapshot.metadata.index);
    for (const [id, address] of this.opts.joinPeers ?? []) if (!this.members.has(id)) this.members.set(id, address);
    const port = await this.transport.start({
      onMessages: (messages) => this.onMessages(messages),
      onUnreachable: (peer) => this.stepLocal({ type: "unreachable", from: peer, to: this.id, term: 0 }),
      onSnapshotStatus: (peer, ok) => this.stepLocal({ type: "snapshotStatus", from: peer, to: this.id, term: 0, reject: !ok }),
      onForward: (request) => this.onForward(request),
    });
    for (const [id, address] of this.members) if (id !== this.id) this.transport.setPeer(id, address);
    this.ticker = setInterval(() => this.tick(), this.opts.tickMs ?? driverDefaults.tickMs);
    this.log.info({ peerPort: port, applied: this.appliedIndex, term: this.raft.term }, "raft node started");
    this.schedulePump();
  }

  /** Graceful stop: hand leadership over first, so the cluster does not wait out an election. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    if (this.raft.role === "leader") await this.handOffLeadership();
    this.stopped = true;
    if (this.ticker !== undefined) clearInterval(this.ticker);
    await this.whenPumpIdle();
    await this.transport.stop();
    const stoppedErr = new NotAvailableError("the node is shutting down; retry on another node");
    for (const p of this.proposals.splice(0)) p.reject(stoppedErr);
    for (const w of this.awaitingApply.values()) w.reject(stoppedErr);
    this.awaitingApply.clear();
    for (const w of this.readWaiters.values()) w.reject(stoppedErr);
    this.readWaiters.clear();
    await this.opts.storage.close();
    this.log.info("raft node stopped");
  }

  private async handOffLeadership(): Promise<void> {
    const target = this.raft.conf.voters
      .filter((id) => id !== this.id)
      .map((id) => ({ id, match: this.raft.progressOf(id)?.match ?? 0 }))
      .sort((a, b) => b.match - a.match)[0];
    if (target === undefined) return;
    try {
      this.raft.transferLeadership(target.id);
    } catch (err) {
      if (err instanceof RaftRefusal) return;
      throw err;
    }
    this.log.info({ to: target.id }, "transferring leadership before shutdown");
    this.schedulePump();
    const deadline = Date.now() + 2 * (this.opts.tickMs ?? driverDefaults.tickMs) * (this.opts.electionTimeoutTicks ?? driverDefaults.electionTimeoutTicks);
    while (this.raft.role === "leader" && Date.now() < deadline) await sleep(10);
  }

  onFatal(listener: (err: Error) => void): void {
    this.fatalListeners.push(listener);
  }

  onRoleChange(listener: (role: Role, leader: NodeId) => void): void {
    this.roleListeners.push(listener);
  }

  /** Sets who answers application requests sent to the leader with askLeader(). */
  handleLeaderRequests(handler: LeaderRequestHandler): void {
    this.leaderRequestHandler = handler;
  }

  /** Sends an application request to the leader's handler (locally when this node leads). */
  async askLeader(request: Uint8Array): Promise<Uint8Array> {
    this.assertRunning();
    const handler = this.leaderRequestHandler;
    if (handler === undefined) throw new Error("no leader request handler is set");
    if (this.raft.role === "leader") return handler(request);
    const leader = this.raft.leader;
    if (leader === NONE) throw new NotAvailableError("no leader is known; retry after the election");
    const reply = await this.transport.forward(leader, encodeForwardRequest({ kind: "app", data: request }), this.requestTimeoutMs())
      .catch((err: unknown) => {
        throw new NotAvailableError(`forwarding to leader ${leader} failed: ${err instanceof Error ? err.message : String(err)}`, leader);
      });
    const r = new Reader(reply);
    if (r.u8() === 1) return r.bytes();
    const message = r.string();
    throw new NotAvailableError(`leader ${leader} refused: ${message}`, r.string());
  }

  // ---------------------------------------------------------------- client API

  /**
   * Replicates `data` and resolves once this node has applied it, with its index (the revision).
   * Any node accepts: a follower forwards to the leader, then waits to apply locally, so the
   * caller can read its own write here at once.
   */
  async propose(data: Uint8Array): Promise<number> {
    this.assertRunning();
    if (this.raft.role === "leader") return this.proposeLocally(data);
    const index = await new Promise<number>((resolve, reject) => {
      if (this.forwardQueue.length >= (this.opts.proposalQueueMax ?? driverDefaults.proposalQueueMax)) {
        reject(new NotAvailableError("too many proposals are waiting to be forwarded to the leader; retry shortly", this.raft.leader));
        return;
      }
      this.forwardQueue.push({ data, resolve, reject });
      this.scheduleForwardFlush();
    });
    await this.waitApplied(index);
    return index;
  }

  private scheduleForwardFlush(): void {
    if (this.forwardFlushScheduled) return;
    this.forwardFlushScheduled = true;
    setImmediate(() => {
      this.forwardFlushScheduled = false;
      void this.flushForwards();
    });
  }

  /** Sends every proposal queued on this follower to the leader in one call. */
  private async flushForwards(): Promise<void> {
    const batch = this.forwardQueue.splice(0, FORWARD_BATCH_MAX);
    if (this.forwardQueue.length > 0) this.scheduleForwardFlush();
    if (batch.length === 0) return;
    const leader = this.raft.leader;
    try {
      if (leader === NONE) throw new NotAvailableError("no leader is known; retry after the election");
      const reply = await this.transport.forward(leader, encodeForwardRequest({ kind: "propose", data: batch.map((p) => p.data) }), this.requestTimeoutMs())
        .catch((err: unknown) => {
          throw new NotAvailableError(`forwarding to leader ${leader} failed: ${err instanceof Error ? err.message : String(err)}`, leader);
        });
      const results = decodeProposeBatchReply(reply, leader, batch.length);
      results.forEach((r, i) => {
        const p = batch[i];
        if (typeof r === "number") p.resolve(r);
        else p.reject(r);
      });
    } catch (err) {
      const e = toAvailabilityError(err);
      for (const p of batch) p.reject(e);
    }
  }

  /** Proposes a membership change, wherever the leader is. Resolves once applied here. */
  async changeMembership(change: ConfChange): Promise<number> {
    this.assertRunning();
    let index: number;
    if (this.raft.role === "leader") {
      const proposed = this.raft.proposeConfChange(change);
      this.schedulePump();
      index = await this.awaitCommit(proposed);
    } else {
      index = await this.forwardToLeader({ kind: "confChange", change });
    }
    await this.waitApplied(index);
    return index;
  }

  /** A linearizable read barrier: resolves once this node's state reflects every write acknowledged before the call. */
  async readBarrier(): Promise<void> {
    this.assertRunning();
    const context = `${this.id}:${++this.readCounter}`;
    const index = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readWaiters.delete(context);
        reject(new NotAvailableError("the leader did not confirm the read in time; retry", this.raft.leader));
      }, this.requestTimeoutMs());
      this.readWaiters.set(context, {
        resolve: (i) => { clearTimeout(timer); resolve(i); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      try {
        this.raft.readIndex(context);
      } catch (err) {
        this.readWaiters.delete(context);
        clearTimeout(timer);
        reject(toAvailabilityError(err));
        return;
      }
      this.schedulePump();
    });
    await this.waitApplied(index);
  }

  transferLeadership(to: NodeId): void {
    this.assertRunning();
    this.raft.transferLeadership(to);
    this.schedulePump();
  }

  status(): NodeStatus {
    const r = this.raft;
    const members: MemberStatus[] = [];
    for (const id of [...r.conf.voters, ...r.conf.learners]) {
      members.push({
        id,
        peerAddress: this.members.get(id) ?? "",
        role: r.conf.learners.includes(id) ? "learner" : id === r.leader ? "leader" : "follower",
        match: r.progressOf(id)?.match,
      });
    }
    return {
      id: this.id,
      role: r.role,
      leader: r.leader,
      term: r.term,
      commitIndex: r.log.committed,
      appliedIndex: this.appliedIndex,
      lastContactMs: this.lastContactMs,
      members,
    };
  }

  /** Milliseconds since this node last heard from the leader: 0 on the leader, undefined if never. */
  get lastContactMs(): number | undefined {
    if (this.raft.role === "leader") return 0;
    return this.lastLeaderContactAt === undefined ? undefined : Date.now() - this.lastLeaderContactAt;
  }

  peerAddressOf(id: NodeId): string | undefined {
    return this.members.get(id);
  }

  memberAddresses(): ReadonlyMap<NodeId, string> {
    return this.members;
  }

  get leader(): NodeId {
    return this.raft.leader;
  }

  get role(): Role {
    return this.raft.role;
  }

  get applied(): number {
    return this.appliedIndex;
  }

  /** Resolves once this node has applied `index`. */
  waitApplied(index: number): Promise<void> {
    if (this.appliedIndex >= index) return Promise.resolve();
    return new Promise((resolve) => {
      this.indexWaiters.push({ index, resolve });
    });
  }

  private proposeLocally(data: Uint8Array): Promise<number> {
    const queueMax = this.opts.proposalQueueMax ?? driverDefaults.proposalQueueMax;
    if (this.proposals.length >= queueMax) {
      return Promise.reject(new NotAvailableError(`${queueMax} proposals are already queued on the leader; retry shortly`, this.id));
    }
    return new Promise<number>((resolve, reject) => {
      this.proposals.push({ data, resolve, reject });
      this.scheduleProposalFlush();
    });
  }

  /**
   * Proposals that arrive in one turn of the event loop enter the log as one batch, at once:
   * their appends leave for the followers while the leader's previous fsync may still be running.
   */
  private scheduleProposalFlush(): void {
    if (this.proposalFlushScheduled) return;
    this.proposalFlushScheduled = true;
    setImmediate(() => {
      this.proposalFlushScheduled = false;
      if (this.stopped || this.fatalError !== undefined) return;
      this.drainProposals();
      this.sendLeaderMessagesNow();
      this.schedulePump();
    });
  }

  private sendLeaderMessagesNow(): void {
    const now = this.raft.takeLeaderMessages();
    if (now.length > 0) this.send(now);
  }

  /**
   * Hands messages to the transport. The core keeps only the metadata of a snapshot that is on
   * disk, so a snapshot message for it is sent once its bytes are read back, off the Ready loop.
   */
  private send(messages: Message[]): void {
    const fromDisk = (m: Message): m is SnapshotRequest => m.type === "snapshot" && m.snapshot.data === SNAPSHOT_DATA_ON_DISK;
    if (!messages.some(fromDisk)) {
      this.transport.send(messages);
      return;
    }
    const now: Message[] = [];
    for (const m of messages) {
      if (fromDisk(m)) void this.sendSnapshotFromDisk(m);
      else now.push(m);
    }
    if (now.length > 0) this.transport.send(now);
  }

  private async sendSnapshotFromDisk(m: SnapshotRequest): Promise<void> {
    try {
      const stored = await this.opts.storage.loadSnapshot();
      if (this.stopped || this.fatalError !== undefined) return;
      const want = m.snapshot.metadata;
      if (stored === undefined || stored.metadata.index !== want.index || stored.metadata.term !== want.term) {
        // A newer snapshot replaced it on disk meanwhile. Reported as failed, the core sends its
        // current snapshot instead, which is the one on disk.
        this.stepLocal({ type: "snapshotStatus", from: m.to, to: this.id, term: 0, reject: true });
        return;
      }
      this.transport.send([{ ...m, snapshot: stored }]);
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private awaitCommit(proposed: Proposed): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.awaitingApply.set(proposed.index, { term: proposed.term, resolve, reject });
    });
  }

  private async forwardToLeader(request: ForwardRequest): Promise<number> {
    const leader = this.raft.leader;
    if (leader === NONE) throw new NotAvailableError("no leader is known; retry after the election");
    const reply = await this.transport.forward(leader, encodeForwardRequest(request), this.requestTimeoutMs())
      .catch((err: unknown) => {
        throw new NotAvailableError(`forwarding to leader ${leader} failed: ${err instanceof Error ? err.message : String(err)}`, leader);
      });
    return decodeForwardReply(reply, leader);
  }

  private async onForward(request: Uint8Array): Promise<Uint8Array> {
    try {
      const req = decodeForwardRequest(request);
      if (this.raft.role !== "leader") throw new NotAvailableError(`node ${this.id} is no longer the leader`, this.raft.leader);
      if (req.kind === "app") {
        if (this.leaderRequestHandler === undefined) throw new Error("this node does not handle leader requests");
        const w = new Writer(64);
        w.u8(1);
        w.bytes(await this.leaderRequestHandler(req.data));
        return w.finish();
      }
      if (req.kind === "propose") {
        const settled = await Promise.allSettled(req.data.map((d) => this.proposeLocally(d)));
        return encodeProposeBatchReply(settled.map((r) => (r.status === "fulfilled" ? r.value : toAvailabilityError(r.reason).message)));
      }
      const proposed = this.raft.proposeConfChange(req.change);
      this.schedulePump();
      return encodeForwardReply({ ok: true, index: await this.awaitCommit(proposed) });
    } catch (err) {
      const e = toAvailabilityError(err);
      return encodeForwardReply({ ok: false, message: e.message, leaderHint: e instanceof NotAvailableError ? e.leaderHint : NONE });
    }
  }

  private requestTimeoutMs(): number {
    return this.opts.requestTimeoutMs ?? driverDefaults.requestTimeoutMs;
  }

  private assertRunning(): void {
    if (this.fatalError !== undefined) throw new NotAvailableError(`the node stopped after a fatal error: ${this.fatalError.message}`);
    if (this.stopped) throw new NotAvailableError("the node is shutting down; retry on another node");
  }

  // ---------------------------------------------------------------- inputs

  private tick(): void {
    if (this.stopped) return;
    this.raft.tick();
    if (this.raft.role === "leader") this.promoteCaughtUpLearners();
    this.schedulePump();
  }

  private onMessages(messages: Message[]): void {
    if (this.stopped || this.fatalError !== undefined) return;
    for (const m of messages) {
      if (m.type === "append" || m.type === "heartbeat" || m.type === "snapshot") {
        if (m.term >= this.raft.term) this.lastLeaderContactAt = Date.now();
      }
      this.guard(() => this.raft.step(m));
    }
    // An acknowledgement that moved the commit index produces appends carrying it: send them now.
    this.sendLeaderMessagesNow();
    this.schedulePump();
  }

  private stepLocal(m: Message): void {
    if (this.stopped || this.fatalError !== undefined) return;
    this.guard(() => this.raft.step(m));
    this.schedulePump();
  }

  /** Learners are promoted once they hold everything the leader has committed. */
  private promoteCaughtUpLearners(): void {
    for (const id of this.raft.conf.learners) {
      const pr = this.raft.progressOf(id);
      if (pr === undefined || pr.match < this.raft.log.committed) continue;
      try {
        this.raft.proposeConfChange({ type: "promote", node: id });
        this.log.info({ node: id, match: pr.match }, "promoting caught-up learner to voter");
      } catch (err) {
        if (!(err instanceof RaftRefusal)) throw err;
      }
      return;
    }
  }

  // ---------------------------------------------------------------- the Ready loop

  private schedulePump(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    setImmediate(() => void this.pump());
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        this.pumpAgain = false;
        if (this.fatalError !== undefined) break;
        this.drainProposals();
        if (!this.raft.hasReady()) {
          if (!this.pumpAgain) break;
          continue;
        }
        await this.handleReady(this.raft.ready());
      }
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.pumping = false;
      for (const idle of this.pumpIdle.splice(0)) idle();
    }
  }

  private whenPumpIdle(): Promise<void> {
    if (!this.pumping) return Promise.resolve();
    return new Promise((resolve) => this.pumpIdle.push(resolve));
  }

  /** Everything proposed since the last Ready goes into the core as one batch. */
  private drainProposals(): void {
    if (this.proposals.length === 0) return;
    const batch = this.proposals.splice(0);
    let proposed: Proposed;
    try {
      proposed = this.raft.propose(batch.map((p) => p.data));
    } catch (err) {
      const e = toAvailabilityError(err);
      for (const p of batch) p.reject(e);
      return;
    }
    batch.forEach((p, i) => this.awaitingApply.set(proposed.index + i, { term: proposed.term, resolve: p.resolve, reject: p.reject }));
  }

  private async handleReady(rd: Ready): Promise<void> {
    const isLeader = this.raft.role === "leader";
    const early: Message[] = [];
    const late: Message[] = [];
    for (const m of rd.messages) (isLeader && SENDABLE_BEFORE_PERSIST.has(m.type) ? early : late).push(m);
    if (early.length > 0) this.send(early);
    // Committed entries are already durable here (the core hands out no others), so apply them
    // now and answer their clients while this batch's fsync runs, not after it.
    const applyFirst = rd.snapshot === undefined;
    if (applyFirst) {
      for (const e of rd.committedEntries) this.applyEntry(e);
      this.releaseIndexWaiters();
    }
    if (rd.hardState !== undefined || rd.entries.length > 0 || rd.snapshot !== undefined) {
      // Like etcd's MustSync: only entries, a snapshot, a term or a vote need fsync before the
      // messages go out. A commit index alone is rewritten without waiting for the disk.
      const sync = rd.entries.length > 0 || rd.snapshot !== undefined ||
        (rd.hardState !== undefined && (rd.hardState.term !== this.persistedTerm || rd.hardState.vote !== this.persistedVote));
      await this.opts.storage.saveReady({ hardState: rd.hardState, entries: rd.entries, snapshot: rd.snapshot }, { sync });
      if (rd.hardState !== undefined) {
        this.persistedTerm = rd.hardState.term;
        this.persistedVote = rd.hardState.vote;
      }
    }
    if (late.length > 0) this.send(late);
    if (rd.snapshot !== undefined) {
      this.restoreSnapshot(rd.snapshot);
      this.log.info({ index: rd.snapshot.metadata.index }, "installed snapshot from the leader");
    }
    if (!applyFirst) for (const e of rd.committedEntries) this.applyEntry(e);
    this.raft.advance();
    // Now persisted and restored: the core may forget the received snapshot's bytes.
    if (rd.snapshot !== undefined) this.raft.log.releaseSnapshotData(rd.snapshot.metadata.index);
    if (rd.softState !== undefined) this.onSoftState(rd.softState.role, rd.softState.leader);
    for (const rs of rd.readStates) {
      const waiter = this.readWaiters.get(rs.context);
      if (waiter === undefined) continue;
      this.readWaiters.delete(rs.context);
      waiter.resolve(rs.index);
    }
    for (const context of rd.failedReads) {
      const waiter = this.readWaiters.get(context);
      if (waiter === undefined) continue;
      this.readWaiters.delete(context);
      waiter.reject(new NotAvailableError("leadership changed before the read was confirmed; retry", this.raft.leader));
    }
    this.releaseIndexWaiters();
    this.maybeCompact();
  }

  private applyEntry(e: Entry): void {
    if (e.index <= this.appliedIndex) return;
    if (e.type === "normal") {
      if (e.data.byteLength > 0) this.opts.stateMachine.apply(e.index, e.data);
    } else {
      this.applyMembership(e.change);
    }
    this.appliedIndex = e.index;
    const waiting = this.awaitingApply.get(e.index);
    if (waiting !== undefined) {
      this.awaitingApply.delete(e.index);
      if (waiting.term === e.term) waiting.resolve(e.index);
      else waiting.reject(new NotAvailableError("the proposal was lost to a leader change before it committed; retry", this.raft.leader));
    }
  }

  private applyMembership(change: ConfChange): void {
    if (change.type === "addLearner" && change.context !== undefined && change.context !== "") {
      this.members.set(change.node, change.context);
      if (change.node !== this.id) this.transport.setPeer(change.node, change.context);
    } else if (change.type === "remove") {
      this.members.delete(change.node);
      if (change.node !== this.id) this.transport.removePeer(change.node);
    }
    this.log.info({ change }, "membership change applied");
  }

  private onSoftState(role: Role, leader: NodeId): void {
    this.log.info({ role, leader, term: this.raft.term }, "raft role changed");
    if (role !== "leader") {
      // Queued proposals never reached the log; tell their callers now rather than at a timeout.
      const err = new NotAvailableError(`node ${this.id} is no longer the leader`, leader);
      for (const p of this.proposals.splice(0)) p.reject(err);
    }
    for (const l of this.roleListeners) l(role, leader);
  }

  private releaseIndexWaiters(): void {
    if (this.indexWaiters.length === 0) return;
    const still: IndexWaiter[] = [];
    for (const w of this.indexWaiters) {
      if (w.index <= this.appliedIndex) w.resolve();
      else still.push(w);
    }
    this.indexWaiters = still;
  }

  private restoreSnapshot(snapshot: Snapshot | undefined): void {
    if (snapshot === undefined) return;
    const { members, app } = decodeSnapshotEnvelope(snapshot.data);
    this.members = new Map(members);
    for (const [id, address] of this.members) if (id !== this.id) this.transport.setPeer(id, address);
    this.opts.stateMachine.restore(app);
    this.appliedIndex = snapshot.metadata.index;
  }

  /**
   * Starts a compaction once enough entries have been applied. It runs beside the Ready loop: the
   * state is captured at once, encoded without blocking, then handed to the core and the disk.
   */
  private maybeCompact(): void {
    const every = this.opts.snapshotEntries ?? driverDefaults.snapshotEntries;
    if (this.compacting || this.appliedIndex - this.raft.log.snapshotIndex() < every) return;
    this.compacting = true;
    const index = this.appliedIndex;
    const members = new Map(this.members);
    const appData = this.opts.stateMachine.snapshot();
    void (async () => {
      try {
        const data = encodeSnapshotEnvelope(members, await appData);
        // A snapshot from the leader may have replaced the log past this point meanwhile.
        if (this.stopped || this.fatalError !== undefined || index <= this.raft.log.snapshotIndex()) return;
        const snapshot = this.raft.compact(index, data);
        await this.opts.storage.saveSnapshot(snapshot);
        this.raft.log.releaseSnapshotData(index);
        this.log.info({ index, bytes: data.byteLength }, "compacted the log into a snapshot");
      } catch (err) {
        this.fail(err instanceof Error ? err : new Error(String(err)));
      } finally {
        this.compacting = false;
      }
    })();
  }

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** An invariant broke or the disk failed: stop at once rather than risk acknowledging a lie. */
  private fail(err: Error): void {
    if (this.fatalError !== undefined) return;
    this.fatalError = err;
    this.log.fatal({ err }, "raft node failed; stopping");
    if (this.ticker !== undefined) clearInterval(this.ticker);
    for (const l of this.fatalListeners) l(err);
  }
}

function toAvailabilityError(err: unknown): Error {
  if (err instanceof RaftRefusal) return new NotAvailableError(err.message, err.leaderHint);
  return err instanceof Error ? err : new Error(String(err));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------- encodings private to the driver

/** The snapshot the core carries: the member address book, then the state machine's own bytes. */
export function encodeSnapshotEnvelope(members: ReadonlyMap<NodeId, string>, app: Chunks): Uint8Array {
  let membersBytes = 0;
  for (const [id, address] of members) membersBytes += 16 + 3 * (id.length + address.length);
  // The one copy of the whole state: sized exactly once.
  const w = new Writer(32 + membersBytes + chunksLength(app));
  w.u8(MEMBERS_SNAPSHOT_VERSION);
  const ids = [...members.keys()].sort();
  w.uint(ids.length);
  for (const id of ids) {
    w.string(id);
    w.string(members.get(id) as string);
  }
  writeChunks(w, app);
  return w.finish();
}

export function decodeSnapshotEnvelope(data: Uint8Array): { members: [NodeId, string][]; app: Uint8Array } {
  if (data.byteLength === 0) return { members: [], app: data };
  const r = new Reader(data);
  const version = r.u8();
  if (version !== MEMBERS_SNAPSHOT_VERSION) throw new Error(`unknown snapshot envelope version ${version}`);
  const count = r.uint();
  const members: [NodeId, string][] = [];
  for (let i = 0; i < count; i++) members.push([r.string(), r.string()]);
  const app = r.bytes();
  r.done();
  return { members, app };
}

function encodeForwardRequest(req: ForwardRequest): Uint8Array {
  const w = new Writer(32);
  if (req.kind === "propose") {
    w.u8(0);
    w.uint(req.data.length);
    for (const d of req.data) w.bytes(d);
  } else if (req.kind === "app") {
    w.u8(2);
    w.bytes(req.data);
  } else {
    w.u8(1);
    w.string(req.change.type);
    w.string(req.change.node);
    w.string(req.change.type === "addLearner" ? (req.change.context ?? "") : "");
  }
  return w.finish();
}

function decodeForwardRequest(buf: Uint8Array): ForwardRequest {
  const r = new Reader(buf);
  const kind = r.u8();
  if (kind === 0) {
    const count = r.uint();
    if (count > FORWARD_BATCH_MAX) throw new Error(`a forwarded batch of ${count} proposals exceeds ${FORWARD_BATCH_MAX}`);
    const data: Uint8Array[] = [];
    for (let i = 0; i < count; i++) data.push(r.bytes());
    return { kind: "propose", data };
  }
  if (kind === 2) return { kind: "app", data: r.bytes() };
  const type = r.string();
  const node = r.string();
  const context = r.string();
  if (type === "addLearner") return { kind: "confChange", change: { type, node, context } };
  if (type === "promote" || type === "remove") return { kind: "confChange", change: { type, node } };
  throw new Error(`unknown membership change ${type}`);
}

type ForwardReply = { ok: true; index: number } | { ok: false; message: string; leaderHint: NodeId };

/** Per proposal: its index, or why the leader refused it. Tagged 3 to tell it from a whole-call refusal. */
function encodeProposeBatchReply(results: readonly (number | string)[]): Uint8Array {
  const w = new Writer(16 + 8 * results.length);
  w.u8(3);
  w.uint(results.length);
  for (const r of results) {
    if (typeof r === "number") {
      w.u8(1);
      w.uint(r);
    } else {
      w.u8(0);
      w.string(r);
    }
  }
  return w.finish();
}

function decodeProposeBatchReply(buf: Uint8Array, leader: NodeId, expected: number): (number | Error)[] {
  const r = new Reader(buf);
  const tag = r.u8();
  if (tag === 0) {
    const message = r.string();
    throw new NotAvailableError(`leader ${leader} refused: ${message}`, r.string());
  }
  if (tag !== 3) throw new Error(`unexpected reply to forwarded proposals (tag ${tag})`);
  const count = r.uint();
  if (count !== expected) throw new Error(`leader ${leader} answered ${count} of ${expected} forwarded proposals`);
  const out: (number | Error)[] = [];
  for (let i = 0; i < count; i++) out.push(r.u8() === 1 ? r.uint() : new NotAvailableError(`leader ${leader} refused: ${r.string()}`, leader));
  return out;
}

function encodeForwardReply(reply: ForwardReply): Uint8Array {
  const w = new Writer(32);
  if (reply.ok) {
    w.u8(1);
    w.uint(reply.index);
  } else {
    w.u8(0);
    w.string(reply.message);
    w.string(reply.leaderHint);
  }
  return w.finish();
}

function decodeForwardReply(buf: Uint8Array, leader: NodeId): number {
  const r = new Reader(buf);
  if (r.u8() === 1) return r.uint();
  const message = r.string();
  const hint = r.string();
  throw new NotAvailableError(`leader ${leader} refused: ${message}`, hint);
}
