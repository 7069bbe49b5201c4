// The Raft core: a pure, deterministic state machine.
//
// Inputs:  tick(), step(message), propose(data), proposeConfChange(change), readIndex(context),
//          transferLeadership(to), compact(index, data).
// Output:  one Ready at a time (see types.ts for the order in which the driver must handle it),
//          acknowledged by advance().
// There are no timers, sockets, disk, clocks or Math.random() here: time is tick() and
// randomness is the injected RandomSource. That is what lets the simulator replay any run.

import { applyConfChange, confChangeProblem, emptyConf, isMember, isVoter } from "./confchange.js";
import { RaftLog } from "./log.js";
import { Progress } from "./progress.js";
import { hasQuorum, quorumMatchIndex, voteResult } from "./quorum.js";
import type { RandomSource } from "./random.js";
import { ReadIndexTracker } from "./readindex.js";
import {
  type AppendRequest,
  type AppendResponse,
  type ConfChange,
  type ConfState,
  type Entry,
  type EntryData,
  type HardState,
  type HeartbeatRequest,
  type HeartbeatResponse,
  type Message,
  NONE,
  type NodeId,
  RaftRefusal,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  type SnapshotRequest,
  type SoftState,
  type VoteRequest,
  type VoteResponse,
  entryPayloadBytes,
  invariant,
  isLocalMessage,
} from "./types.js";

/**
 * Deliberate bugs, switched on only by the tests and the mutation run (`npm run sim -- --mutants`)
 * that prove the simulator's checkers catch them. Each names a rule that Raft's safety rests on.
 */
export const PLANTED_BUGS = {
  commitOldTermByCounting: "commit an entry of an earlier term by counting its replicas (what Figure 8 forbids)",
  grantTwoVotesPerTerm: "grant a vote after already voting for another candidate in the same term",
  readWithoutQuorumCheck: "answer a ReadIndex at once from the local commit index, confirming nothing",
  ackStaleAppend: "answer an append from an older term as a success with the last index, and count such an answer past the leader's own log (the code before issue 9)",
  ackSnapshotWithLastIndex: "acknowledge a snapshot whose last entry is already held with the last index, not the commit index",
  voteWithoutLogCheck: "grant a vote without checking that the candidate's log is at least as up to date",
  leaderCountsUnsyncedEntries: "count the leader's own entries toward a commit before they are durable",
  campaignWithUnappliedConfChange: "campaign while a committed membership change is not yet applied",
  concurrentConfChanges: "accept a membership change while an earlier one is not yet applied",
  readIndexBeforeOwnTermCommit: "serve a ReadIndex before the leader has committed an entry of its own term",
} as const;

export type PlantedBug = keyof typeof PLANTED_BUGS;

export interface RaftConfig {
  readonly id: NodeId;
  /** A follower that hears nothing for this long (randomized up to twice it) campaigns. */
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  /**
   * Pre-vote and check-quorum each keep a node that cannot win (a removed one that missed its
   * removal, one back from a partition) from deposing a healthy leader. Turn off at most one:
   * with neither, such a node forces elections for good (Raft thesis §4.2.3).
   */
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  readonly random: RandomSource;
  /** Flow control per follower, in appends and in payload bytes. */
  readonly inflightMessagesMax: number;
  readonly inflightBytesMax: number;
  /** Payload bytes in one append message (a single larger entry still goes alone). */
  readonly messageBytesMax: number;
  /** Payload bytes the leader holds uncommitted before it refuses proposals. */
  readonly uncommittedBytesMax: number;
  /** Payload bytes of committed entries handed out in one Ready. */
  readonly committedBytesPerReadyMax: number;
  readonly pendingReadsMax: number;
  /**
   * Entries kept below a new snapshot so a follower a little behind catches up by append, not by
   * a whole snapshot (etcd keeps 5,000); at most this many, and at most this many payload bytes.
   */
  readonly catchUpEntries: number;
  readonly catchUpBytesMax: number;
  readonly plantedBug?: PlantedBug;
}

export const defaultRaftConfig = {
  electionTimeoutTicks: 10,
  heartbeatIntervalTicks: 1,
  preVote: true,
  checkQuorum: true,
  inflightMessagesMax: 256,
  inflightBytesMax: 32 * 1024 * 1024,
  messageBytesMax: 1024 * 1024,
  uncommittedBytesMax: 64 * 1024 * 1024,
  committedBytesPerReadyMax: 16 * 1024 * 1024,
  pendingReadsMax: 16 * 1024,
  catchUpEntries: 5_000,
  catchUpBytesMax: 16 * 1024 * 1024,
} as const;

/** What a node recovered from disk. A brand-new member of an existing cluster passes nothing. */
export interface RaftInitialState {
  readonly hardState?: HardState;
  readonly snapshot?: Snapshot;
  readonly entries?: readonly Entry[];
  /** The index the state machine has already applied (it was restored from the snapshot). */
  readonly applied?: number;
}

/** The snapshot every founding member of a new cluster starts from: index 1, the founding voters. */
export function bootstrapSnapshot(voters: readonly NodeId[]): Snapshot {
  invariant(voters.length > 0, "a cluster needs at least one voter");
  invariant(new Set(voters).size === voters.length, "founding voters must be distinct");
  return { metadata: { index: 1, term: 1, conf: { voters: [...voters].sort(), learners: [] } }, data: new Uint8Array(0) };
}

export interface Proposed {
  /** Index of the first proposed entry; the others follow consecutively. */
  readonly index: number;
  readonly term: number;
}

const EMPTY_SNAPSHOT: Snapshot = { metadata: { index: 0, term: 0, conf: emptyConf() }, data: new Uint8Array(0) };

interface OutstandingReady {
  readonly lastEntry: { index: number; term: number } | undefined;
  readonly snapshotIndex: number | undefined;
  readonly committedEntries: readonly Entry[];
}

export class RaftNode {
  readonly id: NodeId;
  private readonly cfg: RaftConfig;
  readonly log: RaftLog;

  term: number;
  vote: NodeId;
  leader: NodeId = NONE;
  role: Role = "follower";
  conf: ConfState;

  private progress = new Map<NodeId, Progress>();
  private votes = new Map<NodeId, boolean>();
  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  /** The follower leadership is being handed to, or NONE. */
  leadTransferee: NodeId = NONE;
  /** Index of the last membership change proposed by this leader; a new one waits until it applies. */
  private pendingConfIndex = 0;
  private uncommittedBytes = 0;
  private readonly reads: ReadIndexTracker;
  /** Reads that arrived before this leader committed an entry of its own term. */
  private readsAwaitingCommit: { context: string; requester: NodeId }[] = [];

  private msgs: Message[] = [];
  private readStates: ReadState[] = [];
  private failedReads: string[] = [];
  private prevSoft: SoftState;
  private prevHard: HardState;
  private outstanding: OutstandingReady | undefined;

  constructor(cfg: RaftConfig, initial: RaftInitialState = {}) {
    invariant(cfg.id !== NONE, "a node id must not be empty");
    invariant(cfg.heartbeatIntervalTicks > 0 && cfg.electionTimeoutTicks > cfg.heartbeatIntervalTicks,
      "the election timeout must exceed the heartbeat interval");
    this.id = cfg.id;
    this.cfg = cfg;
    const snapshot = initial.snapshot ?? EMPTY_SNAPSHOT;
    const hard = initial.hardState ?? { term: snapshot.metadata.term, vote: NONE, commit: snapshot.metadata.index };
    const entries = initial.entries ?? [];
    // Entries at or below the snapshot may linger on disk after a crash mid-compaction.
    const live = entries.filter((e) => e.index > snapshot.metadata.index);
    const lastIndex = snapshot.metadata.index + live.length;
    this.log = new RaftLog(snapshot, live, Math.min(Math.max(hard.commit, snapshot.metadata.index), lastIndex), initial.applied ?? 0);
    invariant(hard.commit <= lastIndex, () => `hard state commit ${hard.commit} beyond the last index ${lastIndex}`);
    this.term = hard.term;
    this.vote = hard.vote;
    this.conf = this.confAt(this.log.applied);
    this.reads = new ReadIndexTracker(cfg.pendingReadsMax);
    this.resetRandomizedElectionTimeout();
    this.prevSoft = { leader: NONE, role: "follower" };
    this.prevHard = this.hardState();
  }

  // ---------------------------------------------------------------- inputs

  tick(): void {
    if (this.role === "leader") this.tickLeader();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    // A node that may not campaign keeps counting, so that its lease on a silent leader lapses
    // and it can vote for a newcomer (a learner that missed its own promotion, say).
    if (this.electionElapsed >= this.randomizedElectionTimeout && this.mayCampaign()) {
      this.electionElapsed = 0;
      this.campaign(this.cfg.preVote ? "preVote" : "vote", false);
    }
  }

  private tickLeader(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum) {
        // A leader that cannot hear a majority steps down, so clients look elsewhere rather
        // than wait on a leader that can no longer commit.
        if (!hasQuorum(this.conf.voters, (id) => id === this.id || this.progress.get(id)?.recentActive === true)) {
          this.becomeFollower(this.term, NONE);
          return;
        }
        for (const [id, pr] of this.progress) pr.recentActive = id === this.id;
      }
      // A transfer that has not finished within an election timeout is abandoned; a removed
      // leader starts another, to whoever now holds most of its log.
      this.leadTransferee = NONE;
      if (!isVoter(this.conf, this.id)) this.handOverAfterRemoval();
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatIntervalTicks) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat(this.reads.lastContext());
    }
  }

  /** Proposes entries. Throws RaftRefusal (never drops silently) when this node cannot take them. */
  propose(data: readonly EntryData[]): Proposed {
    this.assertLeaderAccepting();
    invariant(data.length > 0, "propose needs at least one entry");
    let bytes = 0;
    for (const d of data) bytes += d.byteLength;
    if (this.uncommittedBytes > 0 && this.uncommittedBytes + bytes > this.cfg.uncommittedBytesMax) {
      throw new RaftRefusal("tooMuchUncommitted",
        `the leader already holds ${this.uncommittedBytes} uncommitted bytes (limit ${this.cfg.uncommittedBytesMax}); retry after commits catch up`, this.id);
    }
    const first = this.log.lastIndex() + 1;
    const entries: Entry[] = data.map((d, i) => ({ index: first + i, term: this.term, type: "normal", data: d }));
    this.appendEntries(entries);
    this.uncommittedBytes += bytes;
    this.broadcastAppend();
    return { index: first, term: this.term };
  }

  proposeConfChange(change: ConfChange): Proposed {
    this.assertLeaderAccepting();
    if (this.pendingConfIndex > this.log.applied && this.cfg.plantedBug !== "concurrentConfChanges") {
      throw new RaftRefusal("confChangePending",
        `membership change at index ${this.pendingConfIndex} is not yet applied; propose the next one after it`, this.id);
    }
    const problem = confChangeProblem(this.conf, change);
    if (problem !== undefined) throw new RaftRefusal("invalidConfChange", problem, this.id);
    const index = this.log.lastIndex() + 1;
    this.appendEntries([{ index, term: this.term, type: "confChange", change }]);
    this.pendingConfIndex = index;
    this.broadcastAppend();
    return { index, term: this.term };
  }

  private assertLeaderAccepting(): void {
    if (this.role !== "leader") {
      throw new RaftRefusal("notLeader",
        this.leader === NONE ? "no leader is known; retry after an election" : `node ${this.id} is not the leader; ${this.leader} is`,
        this.leader);
    }
    if (!isVoter(this.conf, this.id)) {
      throw new RaftRefusal("notLeader", `node ${this.id} was removed from the cluster and is handing leadership over; retry shortly`, this.leadTransferee);
    }
    if (this.leadTransferee !== NONE) {
      throw new RaftRefusal("transferInProgress",
        `leadership is moving to ${this.leadTransferee}; retry there shortly`, this.leadTransferee);
    }
  }

  /**
   * Asks for a linearizable read. The answer arrives as a ReadState carrying `context` (which
   * must be unique cluster-wide); the read is safe once the state machine has applied its index.
   */
  readIndex(context: string): void {
    if (this.role === "leader") {
      this.handleReadIndex(context, this.id);
      return;
    }
    if (this.role === "follower" && this.leader !== NONE) {
      this.send({ type: "readIndex", from: this.id, to: this.leader, term: this.term, context });
      return;
    }
    throw new RaftRefusal("noLeader", "no leader is known to confirm a linearizable read; retry after an election", this.leader);
  }

  /** Hands leadership to `to` once its log has caught up; refuses proposals in the meantime. */
  transferLeadership(to: NodeId): void {
    if (this.role !== "leader") {
      throw new RaftRefusal("notLeader", `node ${this.id} is not the leader; ask ${this.leader || "the leader"}`, this.leader);
    }
    if (to === this.id) return;
    if (!isVoter(this.conf, to)) {
      throw new RaftRefusal("notVoter", `node ${to} is not a voter, so it cannot lead`, this.id);
    }
    if (this.leadTransferee === to) return;
    this.startTransfer(to);
  }

  /** A leader no longer among the voters hands over to the voter that holds most of its log. */
  private handOverAfterRemoval(): void {
    let best: NodeId = NONE;
    let bestMatch = -1;
    for (const id of this.conf.voters) {
      const match = this.progress.get(id)?.match ?? -1;
      if (match > bestMatch) [best, bestMatch] = [id, match];
    }
    if (best !== NONE) this.startTransfer(best);
  }

  private startTransfer(to: NodeId): void {
    this.leadTransferee = to;
    // The transfer must finish within one election timeout or it is abandoned.
    this.electionElapsed = 0;
    const pr = this.progress.get(to) as Progress;
    if (pr.match === this.log.lastIndex()) this.send({ type: "timeoutNow", from: this.id, to, term: this.term });
    else this.sendAppend(to, true);
  }

  /**
   * The state machine hands in its state as of `index` (which it has applied). The log before it
   * is dropped; a follower that needs it is sent this snapshot instead.
   */
  compact(index: number, data: Uint8Array): Snapshot {
    invariant(index <= this.log.applied, () => `snapshot at ${index} is beyond applied ${this.log.applied}`);
    // A snapshot from the leader may already have moved the log past this one.
    if (index <= this.log.snapshotIndex()) return this.log.snapshot;
    const term = this.log.term(index);
    invariant(term !== undefined, () => `snapshot at ${index} is already compacted`);
    const snapshot: Snapshot = { metadata: { index, term, conf: this.confAt(index) }, data };
    this.log.compact(snapshot, this.catchUpStart(index));
    return snapshot;
  }

  /** Where compaction at `index` may cut the log: keeping the catch-up margin below it. */
  private catchUpStart(index: number): number {
    let through = index;
    let bytes = 0;
    for (let kept = 0; kept < this.cfg.catchUpEntries && through >= this.log.firstIndex(); kept++) {
      bytes += entryPayloadBytes(this.log.entryAt(through) as Entry);
      if (bytes > this.cfg.catchUpBytesMax) break;
      through--;
    }
    return through;
  }

  step(m: Message): void {
    invariant(m.to === this.id, () => `message for ${m.to} delivered to ${this.id}`);
    if (isLocalMessage(m)) {
      if (this.role === "leader") this.stepLeader(m);
      return;
    }
    if (m.term > this.term) {
      if (m.type === "vote" || m.type === "preVote") {
        // Check-quorum's lease: a node that heard from a live leader within the election timeout
        // ignores campaigns, so a flapping or partitioned node cannot depose a healthy leader.
        const inLease = this.cfg.checkQuorum && this.leader !== NONE && this.electionElapsed < this.cfg.electionTimeoutTicks;
        if (inLease && !m.transfer) return;
      }
      if (m.type === "preVote" || (m.type === "preVoteResp" && !m.reject)) {
        // A pre-vote names a future term; it must not move ours.
      } else if (m.type === "append" || m.type === "heartbeat" || m.type === "snapshot") {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NONE);
      }
    } else if (m.term < this.term) {
      if (this.cfg.checkQuorum || this.cfg.preVote) {
        if (m.type === "append" || m.type === "heartbeat") {
          // Tell a deposed leader about the newer term, or it would keep a partitioned node's
          // pre-votes failing forever (etcd's "stuck with pre-vote" case). The answer carries our
          // newer term, so it must acknowledge nothing (index 0): should its sender lead that very
          // term later, a delayed copy would otherwise count as a match over our divergent tail.
          const index = this.cfg.plantedBug === "ackStaleAppend" ? this.log.lastIndex() : 0;
          this.send(this.appendResponse(m.from, false, index));
        } else if (m.type === "preVote") {
          this.send(this.voteRejection("preVoteResp", m.from));
        }
      }
      if (m.type === "vote") {
        // Raft's RequestVote answer carries the voter's term, so a candidate behind in term learns
        // it. Silence (etcd's choice) can leave a candidate whose only voter campaigns in a
        // configuration without it behind that voter's term for good (the simulator found it).
        this.send(this.voteRejection("voteResp", m.from));
      }
      return;
    }

    if (m.type === "vote" || m.type === "preVote") {
      this.handleVoteRequest(m);
      return;
    }
    if ((m.type === "voteResp" || m.type === "preVoteResp") && m.reject) this.learnCommitFrom(m);
    switch (this.role) {
      case "leader":
        this.stepLeader(m);
        return;
      case "candidate":
      case "preCandidate":
        this.stepCandidate(m);
        return;
      case "follower":
        this.stepFollower(m);
        return;
    }
  }

  // ---------------------------------------------------------------- Ready / advance

  hasReady(): boolean {
    if (this.outstanding !== undefined) return false;
    if (this.msgs.length > 0 || this.readStates.length > 0 || this.failedReads.length > 0) return true;
    if (this.log.pendingSnapshot !== undefined) return true;
    if (this.log.stableIndex < this.log.lastIndex()) return true;
    if (this.log.appliableIndex() > this.log.applying) return true;
    const soft = this.softState();
    if (soft.leader !== this.prevSoft.leader || soft.role !== this.prevSoft.role) return true;
    return !sameHardState(this.hardState(), this.prevHard);
  }

  ready(): Ready {
    invariant(this.outstanding === undefined, "ready() called again before advance()");
    const soft = this.softState();
    const hard = this.hardState();
    const snapshot = this.log.pendingSnapshot;
    const entries = this.log.unstableEntries();
    const committedEntries = this.log.nextCommitted(this.cfg.committedBytesPerReadyMax);
    const rd: Ready = {
      softState: soft.leader !== this.prevSoft.leader || soft.role !== this.prevSoft.role ? soft : undefined,
      hardState: sameHardState(hard, this.prevHard) ? undefined : hard,
      entries,
      snapshot,
      committedEntries,
      messages: this.msgs,
      readStates: this.readStates,
      failedReads: this.failedReads,
    };
    const last = entries[entries.length - 1];
    this.outstanding = {
      lastEntry: last === undefined ? undefined : { index: last.index, term: last.term },
      snapshotIndex: snapshot?.metadata.index,
      committedEntries,
    };
    const lastCommitted = committedEntries[committedEntries.length - 1];
    if (lastCommitted !== undefined) this.log.applying = Math.max(this.log.applying, lastCommitted.index);
    this.prevSoft = soft;
    this.prevHard = hard;
    this.msgs = [];
    this.readStates = [];
    this.failedReads = [];
    return rd;
  }

  /** The driver finished the last Ready: it is durable, sent, and applied. */
  advance(): void {
    const done = this.outstanding;
    invariant(done !== undefined, "advance() without an outstanding ready()");
    this.outstanding = undefined;
    if (done.snapshotIndex !== undefined) {
      this.log.snapshotPersisted(done.snapshotIndex);
      this.log.appliedTo(Math.min(done.snapshotIndex, this.log.committed));
    }
    if (done.lastEntry !== undefined) this.log.stableTo(done.lastEntry.index, done.lastEntry.term);
    for (const e of done.committedEntries) {
      // A snapshot restored while this Ready was out may already cover these entries.
      if (e.index <= this.log.applied) continue;
      this.log.appliedTo(e.index);
      // A change at or below a restored snapshot is already part of the snapshot's configuration.
      if (e.type === "confChange" && e.index > this.log.snapshotIndex()) this.applyConfChange(e.change);
    }
    if (this.role === "leader") {
      // The leader counts itself toward a commit only once its own copy is durable.
      const self = this.progress.get(this.id);
      if (self !== undefined && self.maybeUpdate(this.ownDurableIndex()) && this.maybeCommit()) this.broadcastAppend();
    }
  }

  /**
   * Leader only: takes the queued messages that promise nothing about this node's own durable
   * state (appends, heartbeats, snapshots, timeoutNow), so the driver can send them now instead
   * of at the next Ready. Replication then overlaps the leader's own fsync (thesis §10.2.1):
   * the leader counts its own copy toward a commit only after advance() says it is durable.
   */
  takeLeaderMessages(): Message[] {
    if (this.role !== "leader" || this.msgs.length === 0) return [];
    const now: Message[] = [];
    const later: Message[] = [];
    for (const m of this.msgs) (SENDABLE_BEFORE_PERSIST.has(m.type) ? now : later).push(m);
    this.msgs = later;
    return now;
  }

  softState(): SoftState {
    return { leader: this.leader, role: this.role };
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  /** Messages stepped but not yet handed out by ready(), oldest first: a checker can match each answer to its request. */
  get outbox(): readonly Message[] {
    return this.msgs;
  }

  /** Reads this leader holds until a heartbeat round (or its first commit in the term) confirms them. */
  get pendingReadCount(): number {
    return this.reads.size + this.readsAwaitingCommit.length;
  }

  /** Leader only: the replication progress of each member, for status pages and auto-promotion. */
  progressOf(id: NodeId): { match: number; next: number; state: string; recentActive: boolean } | undefined {
    const pr = this.progress.get(id);
    return pr === undefined ? undefined : { match: pr.match, next: pr.next, state: pr.state, recentActive: pr.recentActive };
  }

  // ---------------------------------------------------------------- roles

  private becomeFollower(term: number, leader: NodeId): void {
    this.reset(term);
    this.leader = leader;
    this.role = "follower";
  }

  private becomePreCandidate(): void {
    invariant(this.role !== "leader", "a leader cannot become a pre-candidate");
    // A pre-candidate keeps its term and vote: the pre-vote round promises nothing.
    this.votes.clear();
    this.leader = NONE;
    this.role = "preCandidate";
  }

  private becomeCandidate(): void {
    invariant(this.role !== "leader", "a leader cannot become a candidate");
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = "candidate";
  }

  private becomeLeader(): void {
    invariant(this.role === "candidate", "only a candidate can become the leader");
    this.reset(this.term);
    this.leader = this.id;
    this.role = "leader";
    const self = this.progress.get(this.id) as Progress;
    self.maybeUpdate(this.ownDurableIndex());
    self.becomeReplicate();
    // An unapplied membership change may sit in the log; no new one until it applies.
    this.pendingConfIndex = this.log.lastIndex();
    // Committing an entry of its own term is how a new leader learns what is committed
    // (Figure 8), and it is needed before ReadIndex can answer.
    this.appendEntries([{ index: this.log.lastIndex() + 1, term: this.term, type: "normal", data: new Uint8Array(0) }]);
    this.broadcastAppend();
  }

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = NONE;
      // What we queued in an older term is no answer any more: an acknowledgement made then may
      // name entries a newer leader has since overwritten in this very batch, which the Ready
      // will not persist. Raft tolerates the loss of any message; a false promise it does not.
      this.msgs = this.msgs.filter((m) => m.term >= term);
    }
    this.leader = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.leadTransferee = NONE;
    this.votes.clear();
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    for (const r of this.reads.clear()) if (r.requester === this.id) this.failedReads.push(r.context);
    for (const r of this.readsAwaitingCommit) if (r.requester === this.id) this.failedReads.push(r.context);
    this.readsAwaitingCommit = [];
    this.progress = new Map();
    for (const id of [...this.conf.voters, ...this.conf.learners]) this.addProgress(id);
  }

  private addProgress(id: NodeId): void {
    const pr = new Progress(this.log.lastIndex() + 1, this.conf.learners.includes(id),
      this.cfg.inflightMessagesMax, this.cfg.inflightBytesMax);
    // A new leader presumes everyone active, so check-quorum gives them one full round.
    pr.recentActive = true;
    this.progress.set(id, pr);
  }

  private resetRandomizedElectionTimeout(): void {
    this.randomizedElectionTimeout = this.cfg.electionTimeoutTicks + this.cfg.random.nextInt(this.cfg.electionTimeoutTicks);
  }

  private mayCampaign(): boolean {
    // A removed node or a learner never campaigns; nor does a node that has yet to apply a
    // committed membership change, since it cannot know which voters to ask.
    const confSettled = this.cfg.plantedBug === "campaignWithUnappliedConfChange" || !this.log.hasUnappliedConfChange();
    return isVoter(this.conf, this.id) && confSettled && this.log.pendingSnapshot === undefined;
  }

  private campaign(kind: "preVote" | "vote", transfer: boolean): void {
    if (kind === "preVote") this.becomePreCandidate();
    else this.becomeCandidate();
    const term = kind === "preVote" ? this.term + 1 : this.term;
    this.votes.set(this.id, true);
    if (this.tallyVotes(kind)) return;
    for (const id of this.conf.voters) {
      if (id === this.id) continue;
      this.send({ type: kind, from: this.id, to: id, term, lastLogIndex: this.log.lastIndex(), lastLogTerm: this.log.lastTerm(), transfer });
    }
  }

  /** Returns true when the campaign is decided. */
  private tallyVotes(kind: "preVote" | "vote"): boolean {
    const result = voteResult(this.conf.voters, this.votes);
    if (result === "won") {
      if (kind === "preVote") this.campaign("vote", false);
      else this.becomeLeader();
      return true;
    }
    if (result === "lost") {
      this.becomeFollower(this.term, NONE);
      return true;
    }
    return false;
  }

  private handleVoteRequest(m: VoteRequest): void {
    const respType = m.type === "vote" ? "voteResp" : "preVoteResp";
    const alreadyVoted = this.vote !== NONE && this.vote !== m.from;
    const canVote =
      this.vote === m.from ||
      (this.vote === NONE && this.leader === NONE) ||
      (m.type === "preVote" && m.term > this.term) ||
      (this.cfg.plantedBug === "grantTwoVotesPerTerm" && m.type === "vote" && alreadyVoted);
    const upToDate = this.cfg.plantedBug === "voteWithoutLogCheck" || this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm);
    if (canVote && upToDate) {
      // A grant answers in the requested term: for a pre-vote that is the future term.
      this.send({ type: respType, from: this.id, to: m.from, term: m.term, reject: false });
      if (m.type === "vote") {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send(this.voteRejection(respType, m.from));
    }
  }

  /** A refusal tells the candidate what we know is committed, with its term, so it can learn it too. */
  private voteRejection(type: "voteResp" | "preVoteResp", to: NodeId): VoteResponse {
    const commitIndex = this.log.committed;
    return { type, from: this.id, to, term: this.term, reject: true, commitIndex, commitTerm: this.log.term(commitIndex) ?? 0 };
  }

  /**
   * A voter that refused us knows entries through `commitIndex` are committed. If we hold that
   * entry with the same term, our log matches the voter's through it (log matching), so it is
   * committed here too. Without this, a voter that missed the commit of a membership change can
   * wait for a vote that never comes: after a leader of two voters commits its own removal and
   * crashes, the other still counts it, and it, removed, refuses them for its longer log.
   */
  private learnCommitFrom(m: VoteResponse): void {
    const index = m.commitIndex ?? 0;
    if (index <= this.log.committed || index > this.log.lastIndex() || !this.log.matchTerm(index, m.commitTerm ?? 0)) return;
    this.log.commitTo(index);
    // A campaign under a configuration that a committed change replaces must not go on.
    if ((this.role === "candidate" || this.role === "preCandidate") && !this.mayCampaign()) {
      this.becomeFollower(this.term, NONE);
    }
  }

  // ---------------------------------------------------------------- per role

  private stepLeader(m: Message): void {
    switch (m.type) {
      case "appendResp":
        this.handleAppendResponse(m);
        return;
      case "heartbeatResp":
        this.handleHeartbeatResponse(m);
        return;
      case "snapshotStatus": {
        const pr = this.progress.get(m.from);
        if (pr === undefined || pr.state !== "snapshot") return;
        if (m.reject) pr.pendingSnapshot = 0;
        pr.becomeProbe();
        // Wait for the next heartbeat response before probing, rather than flooding a node
        // that just failed or finished a large transfer.
        pr.probeSent = true;
        return;
      }
      case "unreachable": {
        const pr = this.progress.get(m.from);
        if (pr !== undefined && pr.state === "replicate") pr.becomeProbe();
        return;
      }
      case "readIndex":
        this.handleReadIndex(m.context, m.from);
        return;
      default:
        return;
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case "append":
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        return;
      case "heartbeat":
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case "snapshot":
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      case "voteResp":
      case "preVoteResp": {
        const kind = m.type === "voteResp" ? "vote" : "preVote";
        if ((kind === "vote") !== (this.role === "candidate")) return;
        this.votes.set(m.from, !m.reject);
        this.tallyVotes(kind);
        return;
      }
      default:
        return;
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case "append":
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleAppend(m);
        return;
      case "heartbeat":
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleHeartbeat(m);
        return;
      case "snapshot":
        this.electionElapsed = 0;
        this.leader = m.from;
        this.handleSnapshot(m);
        return;
      case "timeoutNow":
        // The leader chose us: campaign at once, skipping pre-vote, with the right to break leases.
        if (this.mayCampaign()) this.campaign("vote", true);
        return;
      case "readIndexResp":
        this.readStates.push({ index: m.index, context: m.context });
        return;
      default:
        return;
    }
  }

  // ---------------------------------------------------------------- follower handlers

  private handleAppend(m: AppendRequest): void {
    if (m.prevLogIndex < this.log.committed) {
      // Everything up to our commit already matches; say so, and the leader moves on.
      this.send(this.appendResponse(m.from, false, this.log.committed));
      return;
    }
    const lastNew = this.log.maybeAppend(m.prevLogIndex, m.prevLogTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      this.send(this.appendResponse(m.from, false, lastNew));
      return;
    }
    // Tell the leader where our log might match, skipping whole terms that cannot (fast backtracking).
    const hintIndex = this.log.findConflictByTerm(Math.min(m.prevLogIndex, this.log.lastIndex()), m.prevLogTerm);
    this.send({
      type: "appendResp", from: this.id, to: m.from, term: this.term, reject: true,
      index: m.prevLogIndex, rejectHintIndex: hintIndex, rejectHintTerm: this.log.term(hintIndex) ?? 0,
    });
  }

  private appendResponse(to: NodeId, reject: boolean, index: number): AppendResponse {
    return { type: "appendResp", from: this.id, to, term: this.term, reject, index, rejectHintIndex: 0, rejectHintTerm: 0 };
  }

  private handleHeartbeat(m: HeartbeatRequest): void {
    this.log.commitTo(m.commit);
    this.send({ type: "heartbeatResp", from: this.id, to: m.from, term: this.term, readContext: m.readContext });
  }

  private handleSnapshot(m: SnapshotRequest): void {
    const s = m.snapshot.metadata;
    if (s.index <= this.log.committed) {
      this.send(this.appendResponse(m.from, false, this.log.committed));
      return;
    }
    if (this.log.matchTerm(s.index, s.term)) {
      // We already hold the snapshot's last entry: just commit through it. Acknowledge only what
      // is committed (as etcd does): the entries after it may be another leader's, not this one's.
      this.log.commitTo(s.index);
      const index = this.cfg.plantedBug === "ackSnapshotWithLastIndex" ? this.log.lastIndex() : this.log.committed;
      this.send(this.appendResponse(m.from, false, index));
      return;
    }
    this.log.restore(m.snapshot);
    this.conf = s.conf;
    this.send(this.appendResponse(m.from, false, this.log.lastIndex()));
  }

  // ---------------------------------------------------------------- leader handlers

  private handleAppendResponse(m: AppendResponse): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    if (m.reject) {
      // The follower told us where its log could match; jump there, skipping conflicting terms.
      const matchHint = m.rejectHintTerm > 0
        ? this.log.findConflictByTerm(m.rejectHintIndex, m.rejectHintTerm)
        : m.rejectHintIndex;
      if (pr.maybeDecrTo(m.index, matchHint)) {
        if (pr.state === "replicate") pr.becomeProbe();
        this.sendAppend(m.from, true);
      }
      return;
    }
    // No follower can hold more than the leader wrote: such an acknowledgement answers some
    // other leader's append, and counting it would commit on a minority.
    if (m.index > this.log.lastIndex() && this.cfg.plantedBug !== "ackStaleAppend") return;
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index)) {
      if (wasPaused && !pr.isPaused()) this.sendAppend(m.from, false);
      return;
    }
    if (pr.state === "probe") pr.becomeReplicate();
    else if (pr.state === "snapshot" && pr.match + 1 >= this.log.firstIndex()) {
      // The follower now holds enough that the log can continue from its match.
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === "replicate") pr.inflights.freeLE(m.index);

    if (this.maybeCommit()) this.broadcastAppend();
    else if (wasPaused) this.sendAppend(m.from, false);
    // Keep the pipe full: stream until the window closes or the follower has everything.
    while (this.sendAppend(m.from, false)) { /* next batch */ }

    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.send({ type: "timeoutNow", from: this.id, to: m.from, term: this.term });
    }
  }

  private handleHeartbeatResponse(m: HeartbeatResponse): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    pr.probeSent = false;
    if (pr.state === "replicate" && pr.inflights.full()) pr.inflights.freeFirstOne();
    if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, true);
    if (m.readContext === "" || pr.isLearner) return;
    const read = this.reads.ack(m.from, m.readContext);
    if (read === undefined) return;
    if (!hasQuorum(this.conf.voters, (id) => read.acks.has(id))) return;
    for (const r of this.reads.releaseThrough(m.readContext)) this.answerRead(r.context, r.index, r.requester);
  }

  private handleReadIndex(context: string, requester: NodeId): void {
    if (this.reads.has(context) || this.readsAwaitingCommit.some((r) => r.context === context)) {
      // Two reads under one context would be answered by one round, possibly the older one's.
      // From a follower this is a duplicated message, and its first copy is already being served.
      if (requester === this.id) throw new RaftRefusal("duplicateRead", `a read with context ${context} is already pending; contexts must be unique`, this.id);
      return;
    }
    if (this.reads.size + this.readsAwaitingCommit.length >= this.cfg.pendingReadsMax) {
      if (requester === this.id) {
        throw new RaftRefusal("tooMuchUncommitted", `${this.cfg.pendingReadsMax} reads are already waiting for confirmation; retry shortly`, this.id);
      }
      return;
    }
    if (this.cfg.plantedBug === "readWithoutQuorumCheck") {
      this.answerRead(context, this.log.committed, requester);
      return;
    }
    if (this.log.term(this.log.committed) !== this.term && this.cfg.plantedBug !== "readIndexBeforeOwnTermCommit") {
      // Until it commits an entry of its own term, a new leader does not know the commit index.
      this.readsAwaitingCommit.push({ context, requester });
      return;
    }
    this.startReadRound(context, requester);
  }

  private startReadRound(context: string, requester: NodeId): void {
    if (this.conf.voters.length === 1 && this.conf.voters[0] === this.id) {
      this.answerRead(context, this.log.committed, requester);
      return;
    }
    this.reads.add({ context, index: this.log.committed, requester, acks: new Set([this.id]) });
    this.broadcastHeartbeat(context);
  }

  private answerRead(context: string, index: number, requester: NodeId): void {
    if (requester === this.id) this.readStates.push({ index, context });
    else this.send({ type: "readIndexResp", from: this.id, to: requester, term: this.term, context, index });
  }

  // ---------------------------------------------------------------- replication

  private appendEntries(entries: Entry[]): void {
    this.log.append(entries);
    if (this.cfg.plantedBug === "leaderCountsUnsyncedEntries" && this.role === "leader") {
      (this.progress.get(this.id) as Progress).maybeUpdate(this.log.lastIndex());
    }
  }

  /** What the leader may count itself as holding toward a commit: only what is on its disk. */
  private ownDurableIndex(): number {
    return this.cfg.plantedBug === "leaderCountsUnsyncedEntries" ? this.log.lastIndex() : this.log.stableIndex;
  }

  /** Advances the commit index to what a majority holds; true if it moved. */
  private maybeCommit(): boolean {
    const quorumIndex = quorumMatchIndex(this.conf.voters, (id) => this.progress.get(id)?.match ?? 0);
    const before = this.log.committed;
    if (quorumIndex <= before) return false;
    // Figure 8: only an entry of the current term is committed by counting replicas; earlier
    // entries commit along with it.
    if (this.cfg.plantedBug === "commitOldTermByCounting" || this.log.term(quorumIndex) === this.term) {
      this.log.commitTo(quorumIndex);
    } else {
      return false;
    }
    this.releaseCommittedBytes(before, this.log.committed);
    if (this.log.term(this.log.committed) === this.term && this.readsAwaitingCommit.length > 0) {
      const waiting = this.readsAwaitingCommit;
      this.readsAwaitingCommit = [];
      for (const r of waiting) this.startReadRound(r.context, r.requester);
    }
    return true;
  }

  private releaseCommittedBytes(from: number, to: number): void {
    for (let i = Math.max(from + 1, this.log.firstIndex()); i <= to; i++) {
      this.uncommittedBytes -= entryPayloadBytes(this.log.entryAt(i) as Entry);
    }
    if (this.uncommittedBytes < 0) this.uncommittedBytes = 0;
  }

  private broadcastAppend(): void {
    for (const id of this.progress.keys()) if (id !== this.id) this.sendAppend(id, true);
  }

  private broadcastHeartbeat(readContext: string): void {
    for (const [id, pr] of this.progress) {
      if (id === this.id) continue;
      // Never tell a follower to commit past what it is known to hold.
      const commit = Math.min(pr.match, this.log.committed);
      this.send({ type: "heartbeat", from: this.id, to: id, term: this.term, commit, readContext });
    }
  }

  /** Sends `to` what it needs next. Returns false when nothing was sent. */
  private sendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.progress.get(to);
    if (pr === undefined || pr.isPaused()) return false;
    const prevLogIndex = pr.next - 1;
    const prevLogTerm = this.log.term(prevLogIndex);
    const entries = this.log.slice(pr.next, this.log.lastIndex() + 1, this.cfg.messageBytesMax);
    if (prevLogTerm === undefined || entries === undefined) {
      // What the follower needs is compacted away: send the snapshot instead. Not to a node that
      // has been silent, which is likely down and would only waste the transfer.
      if (!pr.recentActive) return false;
      const snapshot = this.log.snapshot;
      pr.becomeSnapshot(snapshot.metadata.index);
      this.send({ type: "snapshot", from: this.id, to, term: this.term, snapshot });
      return true;
    }
    if (entries.length === 0 && !sendIfEmpty) return false;
    let bytes = 0;
    for (const e of entries) bytes += entryPayloadBytes(e);
    const last = entries.length > 0 ? (entries[entries.length - 1]).index : prevLogIndex;
    pr.sentEntries(last, entries.length, bytes);
    this.send({ type: "append", from: this.id, to, term: this.term, prevLogIndex, prevLogTerm, entries, commit: this.log.committed });
    return true;
  }

  // ---------------------------------------------------------------- membership

  private applyConfChange(change: ConfChange): void {
    const before = this.conf;
    this.conf = applyConfChange(this.conf, change);
    if (this.conf === before) return;
    if (this.role !== "leader") return;
    for (const id of [...this.conf.voters, ...this.conf.learners]) {
      const pr = this.progress.get(id);
      if (pr === undefined) this.addProgress(id);
      else pr.isLearner = this.conf.learners.includes(id);
    }
    for (const id of [...this.progress.keys()]) if (!isMember(this.conf, id)) this.progress.delete(id);
    if (!isVoter(this.conf, this.id)) {
      // A leader removed from the voters keeps leading until it has handed over. Stepping down at
      // once would leave the remaining voters unaware that the change committed (they learn that
      // from the leader), so still counting the departed leader as a voter, which refuses them its
      // vote if its log is longer: no leader, for good (the simulator found it). It takes no new
      // proposals, and hands leadership to the remaining voter that holds most of its log (etcd
      // keeps a removed leader leading too).
      this.handOverAfterRemoval();
    }
    if (this.leadTransferee !== NONE && !isVoter(this.conf, this.leadTransferee)) this.leadTransferee = NONE;
    // A smaller quorum may now agree on a higher commit index.
    if (this.maybeCommit()) this.broadcastAppend();
  }

  /** The configuration in force once entries through `index` (at or past the snapshot) are applied. */
  private confAt(index: number): ConfState {
    let conf = this.log.snapshot.metadata.conf;
    // The snapshot's configuration already holds the changes at or below it, even those still in the log.
    for (let i = this.log.snapshotIndex() + 1; i <= index; i++) {
      const e = this.log.entryAt(i);
      if (e !== undefined && e.type === "confChange") conf = applyConfChange(conf, e.change);
    }
    return conf;
  }

  private send(m: Message): void {
    this.msgs.push(m);
  }
}

/** Messages a leader may send before its own pending writes are durable. */
export const SENDABLE_BEFORE_PERSIST: ReadonlySet<Message["type"]> = new Set(["append", "heartbeat", "snapshot", "timeoutNow"]);

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}
