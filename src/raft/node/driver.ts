// The driver: the part of a Raft node that does I/O around the pure core, on injected ports (a
// clock, log storage, a peer network; see ports.ts). This file wires the concerns together and
// is the node's API; each concern has its own module:
//   ready_loop.ts   persisting, sending, applying: the one Ready loop
//   proposals.ts    writes, from the client's call to its answer; forwarding.ts, a follower's side
//   reads.ts        linearizable read barriers, and waiting for an index to apply
//   leader_watch.ts waiting out an election within the leader wait
//   compaction.ts   snapshots beside the loop
//   membership.ts   the address book, learner promotion, the snapshot envelope
//
// Timers become tick(); inbound messages become step(). As leader, appends go to followers while
// the leader's own fsync runs (thesis §10.2.1): the core counts the leader's copy toward a commit
// only after it is durable.

import type { Logger } from "pino";
import { asError } from "../../common/errors.js";
import { RaftNode, bootstrapSnapshot, defaultRaftConfig } from "../core/raft.js";
import { type ConfChange, type Entry, type Message, NONE, type NodeId, RaftRefusal, type Ready, type Role, type Snapshot } from "../core/types.js";
import type { StateMachine } from "../state_machine.js";
import type { LogStorage } from "../storage/log_storage.js";
import { NotAvailableError, toAvailabilityError } from "./errors.js";
import {
  ForwardQueue, decodeAcknowledgement, decodeAppReply, decodeForwardRequest, decodeStatusReply, encodeAcknowledgement, encodeAppReply, encodeIndexReply,
  encodeProposeBatchReply, encodeRefusal, encodeStatusReply,
} from "./forwarding.js";
import { LeaderWatch } from "./leader_watch.js";
import { AddressBook, decodeSnapshotEnvelope, encodeSnapshotEnvelope, promoteCaughtUpLearners } from "./membership.js";
import { Compactor } from "./compaction.js";
import { PeerContact } from "./peer_contact.js";
import type { PeerNetwork, Timer } from "./ports.js";
import { Proposals, retrySafe } from "./proposals.js";
import { AppliedWaiters, ReadBarriers } from "./reads.js";
import { ReadyLoop } from "./ready_loop.js";
import { type DriverSettings, type RaftDriverOptions, resolveDriverSettings } from "./settings.js";
import type { MemberStatus, NodeStatus } from "./status.js";

export type { MemberStatus, NodeStatus } from "./status.js";

/** Handles an application request forwarded to the leader; its answer goes back to the caller. */
export type LeaderRequestHandler = (request: Uint8Array) => Promise<Uint8Array>;

/** The parts of a node that exist once start() has read its log. */
interface Running {
  readonly core: RaftNode;
  readonly loop: ReadyLoop;
  readonly leaders: LeaderWatch;
  readonly applied: AppliedWaiters;
  readonly reads: ReadBarriers;
  readonly forwards: ForwardQueue;
  readonly proposals: Proposals;
  readonly compactor: Compactor;
}

export class RaftDriver {
  readonly id: NodeId;
  private readonly settings: DriverSettings;
  private readonly storage: LogStorage;
  private readonly stateMachine: StateMachine;
  private readonly network: PeerNetwork;
  private readonly log: Logger;
  private readonly addresses: AddressBook;
  private readonly initialCluster: ReadonlyMap<NodeId, string> | undefined;
  private readonly joinPeers: ReadonlyMap<NodeId, string> | undefined;
  private parts: Running | undefined;
  private appliedIndex = 0;
  /** The term of the entry at appliedIndex (of the snapshot, when that is what was applied last). */
  private appliedTermValue = 0;
  private ticker: Timer | undefined;
  private stopped = false;
  private fatalError: Error | undefined;
  private lastLeaderContactAtMs: number | undefined;
  /** The highest commit index a leader has told this node of: what "caught up" is measured against. */
  private leaderCommitSeen = 0;
  /** The leader last reported to the observer, so that only a change is reported. */
  private observedLeader: NodeId = NONE;
  /** When this node last heard from each peer: on the leader, which members are reachable. */
  private readonly contact: PeerContact;
  private leaderRequestHandler: LeaderRequestHandler | undefined;
  private readonly roleListeners: ((role: Role, leader: NodeId) => void)[] = [];
  private readonly fatalListeners: ((err: Error) => void)[] = [];

  constructor(opts: RaftDriverOptions) {
    this.id = opts.id;
    this.settings = resolveDriverSettings(opts);
    this.storage = opts.storage;
    this.stateMachine = opts.stateMachine;
    this.network = opts.network;
    this.log = opts.logger;
    this.initialCluster = opts.initialCluster;
    this.joinPeers = opts.joinPeers;
    this.addresses = new AddressBook(opts.id, opts.network, opts.logger);
    this.contact = new PeerContact(opts.id, this.settings.tickMs * this.settings.electionTimeoutTicks);
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    const stored = await this.storage.load();
    let snapshot = stored.snapshot;
    let hardState = stored.hardState;
    if (snapshot === undefined && hardState === undefined && stored.entries.length === 0 && this.initialCluster !== undefined) {
      // A founding member of a new cluster: every founder writes the identical bootstrap snapshot.
      const founders = [...this.initialCluster.keys()];
      const boot = bootstrapSnapshot(founders);
      snapshot = { metadata: boot.metadata, data: encodeSnapshotEnvelope(this.initialCluster, []) };
      hardState = { term: 1, vote: NONE, commit: 1 };
      await this.storage.saveReady({ hardState, entries: [], snapshot }, { sync: true });
      this.log.info({ founders }, "bootstrapped a new cluster");
    }
    const s = this.settings;
    const core = new RaftNode(
      { ...defaultRaftConfig, ...s.raft, id: this.id, random: s.random, electionTimeoutTicks: s.electionTimeoutTicks, heartbeatIntervalTicks: s.heartbeatIntervalTicks },
      {
        ...(hardState === undefined ? {} : { hardState }),
        ...(snapshot === undefined ? {} : { snapshot }),
        entries: stored.entries,
        applied: snapshot?.metadata.index ?? 0,
      },
    );
    const host = { running: () => this.running(), fail: (err: Error) => this.fail(err) };
    const loop = new ReadyLoop(s, core, this.storage, this.network, this.log, {
      beforeReady: () => this.parts?.proposals.drain(),
      apply: (entries) => this.applyEntries(entries),
      restore: (snap) => this.restoreSnapshot(snap),
      afterReady: (rd) => this.afterReady(rd),
      ...host,
    }, hardState);
    const leaders = new LeaderWatch(s.clock, () => core.leader, s.leaderWaitMs, () => s.random.nextInt(1 << 30) / (1 << 30));
    const applied = new AppliedWaiters(s);
    const forwards = new ForwardQueue(s, core, this.network);
    this.parts = {
      core,
      loop,
      leaders,
      applied,
      reads: new ReadBarriers(s, core, leaders, applied, () => loop.schedule()),
      forwards,
      proposals: new Proposals(s, core, { pump: () => loop.schedule(), sendLeaderMessagesNow: () => loop.sendLeaderMessagesNow(), ...host }, leaders, forwards, applied),
      compactor: new Compactor(s, core, this.stateMachine, this.storage, this.addresses, this.log, host),
    };
    if (snapshot !== undefined) {
      this.restoreSnapshot(snapshot);
      // The snapshot is on disk (loaded from it, or just bootstrapped into it): memory need not hold it too.
      core.log.releaseSnapshotData(snapshot.metadata.index);
    }
    for (const [id, address] of this.joinPeers ?? []) this.addresses.learnOf(id, address);
    const port = await this.network.start({
      onMessages: (messages) => this.onMessages(messages),
      onUnreachable: (peer) => this.stepLocal({ type: "unreachable", from: peer, to: this.id, term: 0 }),
      onSnapshotStatus: (peer, ok) => this.stepLocal({ type: "snapshotStatus", from: peer, to: this.id, term: 0, reject: !ok }),
      onForward: (request) => this.onForward(request),
    });
    this.addresses.networkUp();
    this.scheduleTick();
    this.log.info({ peerPort: port, applied: this.appliedIndex, term: core.term }, "raft node started");
    loop.schedule();
  }

  /** Graceful stop: hand leadership over first, so the cluster does not wait out an election. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    const parts = this.started();
    if (parts.core.role === "leader" && this.fatalError === undefined) await this.handOffLeadership(parts);
    this.stopped = true;
    this.ticker?.cancel();
    await parts.loop.whenIdle();
    await this.network.stop();
    this.failWaiters(new NotAvailableError("the node is shutting down; retry on another node"));
    await this.storage.close();
    this.log.info("raft node stopped");
  }

  private async handOffLeadership(parts: Running): Promise<void> {
    const target = parts.core.conf.voters
      .filter((id) => id !== this.id)
      .map((id) => ({ id, match: parts.core.progressOf(id)?.match ?? 0 }))
      .sort((a, b) => b.match - a.match)[0];
    if (target === undefined) return;
    try {
      parts.core.transferLeadership(target.id);
    } catch (err) {
      if (err instanceof RaftRefusal) return;
      throw err;
    }
    this.log.info({ to: target.id }, "transferring leadership before shutdown");
    parts.loop.schedule();
    const clock = this.settings.clock;
    const deadlineMs = clock.nowMs() + 2 * this.settings.tickMs * this.settings.electionTimeoutTicks;
    while (parts.core.role === "leader" && clock.nowMs() < deadlineMs) {
      await new Promise<void>((resolve) => clock.setTimer(resolve, 10));
    }
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

  // ---------------------------------------------------------------- client API

  /**
   * Replicates `data` and resolves once this node has applied it, with its index (the revision).
   * Any node accepts: a follower forwards to the leader, then waits to apply locally, so the
   * caller can read its own write here at once. During an election it waits for a leader.
   */
  async propose(data: Uint8Array): Promise<number> {
    const parts = this.assertRunning();
    let applied = false;
    try {
      const index = await parts.proposals.propose(data);
      applied = true;
      return index;
    } finally {
      this.settings.observer.proposalSettled(applied);
    }
  }

  /** Proposes a membership change, wherever the leader is. Resolves once applied here. */
  async changeMembership(change: ConfChange): Promise<number> {
    const parts = this.assertRunning();
    return await parts.proposals.changeMembership(change);
  }

  /** A linearizable read barrier: resolves once this node's state reflects every write acknowledged before the call. */
  async readBarrier(): Promise<void> {
    const parts = this.assertRunning();
    await parts.reads.barrier();
  }

  /** Sends an application request to the leader's handler (locally when this node leads). */
  async askLeader(request: Uint8Array): Promise<Uint8Array> {
    const parts = this.assertRunning();
    const handler = this.leaderRequestHandler;
    if (handler === undefined) throw new Error("no leader request handler is set");
    return await parts.leaders.withLeader(async (leader) => {
      if (leader === this.id) return handler(request);
      return decodeAppReply(await parts.forwards.call({ kind: "app", data: request }), leader);
    }, retrySafe);
  }

  /** Leader only: hands leadership to the voter `to`; a RaftRefusal says why not (notLeader, notVoter). */
  transferLeadership(to: NodeId): void {
    const parts = this.assertRunning();
    parts.core.transferLeadership(to);
    parts.loop.schedule();
  }

  /**
   * Asks whichever node leads to hand leadership to `to`: a follower forwards the request, so an
   * operator may ask any node. Resolves once the leader has begun the transfer (asking again is
   * harmless: the leader ignores a transfer already under way). During an election it waits for
   * a leader, as a write does.
   */
  async requestLeadershipTransfer(to: NodeId): Promise<void> {
    const parts = this.assertRunning();
    await parts.leaders.withLeader(async (leader) => {
      if (leader === this.id) {
        this.transferLeadership(to);
        return;
      }
      decodeAcknowledgement(await parts.forwards.call({ kind: "transferLeadership", to }), leader);
    }, retrySafe);
  }

  /** Resolves once this node has applied `index`; rejects past the request timeout. */
  waitApplied(index: number): Promise<void> {
    return this.started().applied.wait(index);
  }

  status(): NodeStatus {
    const r = this.started().core;
    const nowMs = this.settings.clock.nowMs();
    const ids = [...r.conf.voters, ...r.conf.learners];
    this.contact.retainOnly(ids);
    const members: MemberStatus[] = [];
    for (const id of ids) {
      const contact = this.contact.of(id, nowMs);
      members.push({
        id,
        peerAddress: this.addresses.addressOf(id) ?? "",
        role: r.conf.learners.includes(id) ? "learner" : id === r.leader ? "leader" : "follower",
        match: r.progressOf(id)?.match,
        lastContactMs: contact?.lastContactMs,
        reachable: contact?.reachable,
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

  /**
   * How many committed entries this node has yet to apply: measured against the highest commit
   * index any leader has told it of, so a follower still being caught up counts what it lacks.
   */
  get applyLagEntries(): number {
    const core = this.started().core;
    return Math.max(0, Math.max(core.log.committed, this.leaderCommitSeen) - this.appliedIndex);
  }

  /** On the leader: how many entries each other member's log trails its own last index. Empty on any other node. */
  followerLagEntries(): Map<NodeId, number> {
    const core = this.started().core;
    const lag = new Map<NodeId, number>();
    if (core.role !== "leader") return lag;
    const lastIndex = core.log.lastIndex();
    for (const id of [...core.conf.voters, ...core.conf.learners]) {
      if (id === this.id) continue;
      lag.set(id, Math.max(0, lastIndex - (core.progressOf(id)?.match ?? 0)));
    }
    return lag;
  }

  /**
   * The leader's status, wherever it is asked: a follower asks the leader over the peer network,
   * as Consul's autopilot health is answered by the leader. Only the leader knows each member's
   * match and contact. Fails at once, without waiting out an election, when no leader is known:
   * a status page polls, and "no leader" is what it should show.
   */
  async leaderStatus(): Promise<NodeStatus> {
    const parts = this.assertRunning();
    const leader = parts.core.leader;
    if (leader === this.id) return this.status();
    if (leader === NONE) throw new NotAvailableError("no leader is known; an election is under way, retry shortly", NONE, true);
    return decodeStatusReply(await parts.forwards.call({ kind: "leaderStatus" }), leader);
  }

  /** Milliseconds since this node last heard from the leader: 0 on the leader, undefined if never. */
  get lastContactMs(): number | undefined {
    if (this.started().core.role === "leader") return 0;
    return this.lastLeaderContactAtMs === undefined ? undefined : Math.round(this.settings.clock.nowMs() - this.lastLeaderContactAtMs);
  }

  peerAddressOf(id: NodeId): string | undefined {
    return this.addresses.addressOf(id);
  }

  memberAddresses(): ReadonlyMap<NodeId, string> {
    return this.addresses.all;
  }

  get leader(): NodeId {
    return this.started().core.leader;
  }

  get role(): Role {
    return this.started().core.role;
  }

  get applied(): number {
    return this.appliedIndex;
  }

  /** The term of the last entry applied here: with `applied`, names the point the state machine is at. */
  get appliedTerm(): number {
    return this.appliedTermValue;
  }

  /** Whether start() has finished, so that `core` may be read. */
  get isStarted(): boolean {
    return this.parts !== undefined;
  }

  /** The core, for status pages, tests and the simulator's checkers: look, do not touch. */
  get core(): RaftNode {
    return this.started().core;
  }

  // ---------------------------------------------------------------- inputs

  private scheduleTick(): void {
    this.ticker = this.settings.clock.setTimer(() => {
      if (!this.running()) return;
      this.tick();
      this.scheduleTick();
    }, this.settings.tickMs);
  }

  private tick(): void {
    const parts = this.started();
    this.guard(() => {
      parts.core.tick();
      if (parts.core.role === "leader") promoteCaughtUpLearners(parts.core, this.log);
    });
    const nowMs = this.settings.clock.nowMs();
    parts.proposals.expire(nowMs);
    parts.applied.expire(nowMs);
    parts.loop.schedule();
  }

  private onMessages(messages: Message[]): void {
    if (!this.running()) return;
    const parts = this.started();
    const nowMs = this.settings.clock.nowMs();
    for (const m of messages) {
      this.contact.heard(m.from, nowMs);
      if ((m.type === "append" || m.type === "heartbeat" || m.type === "snapshot") && m.term >= parts.core.term) {
        this.lastLeaderContactAtMs = nowMs;
        if (m.type !== "snapshot") this.leaderCommitSeen = Math.max(this.leaderCommitSeen, m.commit);
      }
      if (m.type === "appendResp") parts.loop.appends.received(m);
      this.guard(() => parts.core.step(m));
    }
    // An acknowledgement that moved the commit index produces appends carrying it: send them now.
    parts.loop.sendLeaderMessagesNow();
    parts.loop.schedule();
  }

  private stepLocal(m: Message): void {
    if (!this.running()) return;
    const parts = this.started();
    this.guard(() => parts.core.step(m));
    parts.loop.schedule();
  }

  /** The leader's side of a follower's forwarded request. */
  private async onForward(request: Uint8Array): Promise<Uint8Array> {
    const parts = this.started();
    try {
      const req = decodeForwardRequest(request);
      if (!this.running()) throw new NotAvailableError(`node ${this.id} is shutting down`, NONE, true);
      if (parts.core.role !== "leader") throw new NotAvailableError(`node ${this.id} is no longer the leader`, parts.core.leader, true);
      switch (req.kind) {
        case "app": {
          if (this.leaderRequestHandler === undefined) throw new Error("this node does not handle leader requests");
          return encodeAppReply(await this.leaderRequestHandler(req.data));
        }
        case "propose": {
          const settled = await Promise.allSettled(req.data.map((d) => parts.proposals.proposeHere(d)));
          return encodeProposeBatchReply(settled.map((r) => (r.status === "fulfilled" ? r.value : toAvailabilityError(r.reason))));
        }
        case "confChange":
          return encodeIndexReply(await parts.proposals.proposeConfChangeHere(req.change));
        case "transferLeadership":
          this.transferLeadership(req.to);
          return encodeAcknowledgement();
        case "leaderStatus":
          return encodeStatusReply(this.status());
      }
    } catch (err) {
      return encodeRefusal(toAvailabilityError(err));
    }
  }

  // ---------------------------------------------------------------- what each Ready does

  private applyEntries(entries: readonly Entry[]): void {
    const parts = this.started();
    let removedHere = false;
    for (const e of entries) {
      if (e.index <= this.appliedIndex) continue;
      if (e.type === "normal") {
        if (e.data.byteLength > 0) this.stateMachine.apply(e.index, e.data);
      } else {
        this.addresses.apply(e.change);
        if (e.change.type === "remove" && e.change.node === this.id) removedHere = true;
      }
      this.appliedIndex = e.index;
      this.appliedTermValue = e.term;
      parts.proposals.entryApplied(e);
    }
    parts.applied.release(this.appliedIndex);
    if (removedHere) {
      this.log.warn({ index: this.appliedIndex }, "this node was removed from the cluster");
      parts.proposals.abandon(`node ${this.id} was removed from the cluster`);
    }
  }

  private restoreSnapshot(snapshot: Snapshot): void {
    const { members, app } = decodeSnapshotEnvelope(snapshot.data);
    this.addresses.replace(members);
    this.stateMachine.restore(app);
    this.appliedIndex = snapshot.metadata.index;
    this.appliedTermValue = snapshot.metadata.term;
    this.started().proposals.snapshotInstalled(this.appliedIndex);
    this.started().applied.release(this.appliedIndex);
  }

  private afterReady(rd: Ready): void {
    const parts = this.started();
    parts.reads.confirmed(rd.readStates);
    parts.reads.lost(rd.failedReads);
    if (rd.softState !== undefined) {
      const { role, leader } = rd.softState;
      this.log.info({ role, leader, term: parts.core.term }, "raft role changed");
      parts.loop.appends.clear();
      if (leader !== NONE && leader !== this.observedLeader) this.settings.observer.leaderChanged(leader, parts.core.term);
      this.observedLeader = leader;
      this.contact.leading(role === "leader" ? this.settings.clock.nowMs() : undefined);
      if (role !== "leader") parts.proposals.lostLeadership();
      parts.leaders.changed();
      parts.reads.leaderChanged();
      for (const l of this.roleListeners) l(role, leader);
    }
    parts.compactor.maybeCompact(this.appliedIndex);
  }

  // ---------------------------------------------------------------- failure

  private started(): Running {
    if (this.parts === undefined) throw new Error("the Raft node is not started yet");
    return this.parts;
  }

  private running(): boolean {
    return !this.stopped && this.fatalError === undefined && this.parts !== undefined;
  }

  private assertRunning(): Running {
    if (this.fatalError !== undefined) throw new NotAvailableError(`the node stopped after a fatal error: ${this.fatalError.message}`);
    if (this.stopped) throw new NotAvailableError("the node is shutting down; retry on another node");
    return this.started();
  }

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.fail(asError(err));
    }
  }

  /** An invariant broke or the disk failed: stop at once rather than risk acknowledging a lie. */
  private fail(err: Error): void {
    if (this.fatalError !== undefined) return;
    this.fatalError = err;
    this.log.fatal({ err }, "raft node failed; stopping");
    this.ticker?.cancel();
    this.failWaiters(new NotAvailableError(`the node stopped after a fatal error: ${err.message}`));
    for (const l of this.fatalListeners) l(err);
  }

  private failWaiters(err: NotAvailableError): void {
    const parts = this.parts;
    if (parts === undefined) return;
    parts.proposals.failAll(err);
    parts.forwards.failAll(err);
    parts.reads.failAll(err);
    parts.applied.failAll(err);
    parts.leaders.failAll(err);
  }
}
