// Proposals, from a client's call to its answer.
//
// On the leader, proposals made in one turn of the event loop enter the log as one batch, at
// once, so their appends leave while the previous fsync may still run. Each then waits until this
// node applies its index: the entry there is ours if its term is the one we proposed in; if
// another entry was committed there, ours was lost to a leader change and certainly never
// applied. Several proposals may wait on one index (a leader that lost its tail and won again
// proposes there a second time): each gets its own answer when the index applies. And once an
// entry of a newer term applies, every proposal of an older term waiting past its index was lost
// too: terms never decrease along a log, so the committed log holds none of them.
// Every wait is bounded: past the request timeout, the answer is that the outcome is unknown.
//
// On a follower, proposals go to the leader (see forwarding.ts). Either way, a proposal that meets
// an election, or a leader that refuses it or cannot be reached, is tried again with the next
// leader, but only when it certainly had no effect, and only within the leader wait.

import { asError } from "../../common/errors.js";
import type { Proposed, RaftNode } from "../core/raft.js";
import { type ConfChange, type Entry, RaftRefusal } from "../core/types.js";
import { NotAvailableError, toAvailabilityError } from "./errors.js";
import { type ForwardQueue, decodeIndexReply } from "./forwarding.js";
import { DeadlineQueue } from "./deadlines.js";
import type { LeaderWatch } from "./leader_watch.js";
import type { AppliedWaiters } from "./reads.js";
import type { DriverSettings } from "./settings.js";

interface QueuedProposal {
  readonly data: Uint8Array;
  readonly resolve: (index: number) => void;
  readonly reject: (err: Error) => void;
}

interface AwaitingApply {
  readonly index: number;
  readonly term: number;
  readonly deadlineMs: number;
  readonly resolve: (index: number) => void;
  readonly reject: (err: Error) => void;
  settled: boolean;
}

/** What the proposals need of the rest of the node. */
export interface ProposalHost {
  /** Runs the Ready loop. */
  pump(): void;
  /** Sends what the leader may send before its own write is durable (appends, heartbeats). */
  sendLeaderMessagesNow(): void;
  running(): boolean;
  /** A broken invariant: stop the node. */
  fail(err: Error): void;
}

/** Certainly had no effect: safe to send again. */
export function retrySafe(err: unknown): boolean {
  return err instanceof NotAvailableError && err.neverApplied;
}

export class Proposals {
  private queue: QueuedProposal[] = [];
  private flushScheduled = false;
  private readonly awaiting = new Map<number, AwaitingApply[]>();
  private readonly byDeadline = new DeadlineQueue<AwaitingApply>();
  /** The term of the newest entry applied here: older-term waiters past it were lost. */
  private appliedTerm = 0;
  private failure: Error | undefined;

  constructor(
    private readonly settings: DriverSettings,
    private readonly core: RaftNode,
    private readonly host: ProposalHost,
    private readonly leaders: LeaderWatch,
    private readonly forwards: ForwardQueue,
    private readonly applied: AppliedWaiters,
  ) {}

  /**
   * Replicates `data` and resolves with its index (the revision) once this node has applied it,
   * so the caller reads its own write here. Any node accepts; a follower forwards to the leader.
   */
  async propose(data: Uint8Array): Promise<number> {
    const index = await this.leaders.withLeader(
      (leader) => (leader === this.settings.id ? this.proposeHere(data) : this.forwards.propose(data)),
      retrySafe,
    );
    if (this.settings.plantedBug !== "ackBeforeCommit") await this.applied.wait(index);
    return index;
  }

  /** A membership change, wherever the leader is; resolves with its index once applied here. */
  async changeMembership(change: ConfChange): Promise<number> {
    const index = await this.leaders.withLeader(async (leader) => {
      if (leader === this.settings.id) return this.proposeConfChangeHere(change);
      return decodeIndexReply(await this.forwards.call({ kind: "confChange", change }), leader);
    }, retrySafe);
    await this.applied.wait(index);
    return index;
  }

  /** Leader only: queues `data` for the next batch; resolves with its index once applied here. */
  proposeHere(data: Uint8Array): Promise<number> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.queue.length >= this.settings.proposalQueueMax) {
      return Promise.reject(new NotAvailableError(`${this.settings.proposalQueueMax} proposals are already queued on the leader; retry shortly`, this.settings.id, true));
    }
    return new Promise<number>((resolve, reject) => {
      this.queue.push({ data, resolve, reject });
      if (this.flushScheduled) return;
      this.flushScheduled = true;
      this.settings.clock.soon(() => {
        this.flushScheduled = false;
        if (!this.host.running()) return;
        try {
          this.drain();
        } catch (err) {
          this.host.fail(asError(err));
          return;
        }
        this.host.sendLeaderMessagesNow();
        this.host.pump();
      });
    });
  }

  /** Leader only: proposes a membership change; resolves with its index once applied here. */
  proposeConfChangeHere(change: ConfChange): Promise<number> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    let proposed: Proposed;
    try {
      proposed = this.core.proposeConfChange(change);
    } catch (err) {
      return Promise.reject(toAvailabilityError(err));
    }
    this.host.pump();
    return this.await(proposed.index, proposed.term);
  }

  /** Everything queued since the last Ready enters the core as one batch. */
  drain(): void {
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    let proposed: Proposed;
    try {
      proposed = this.core.propose(batch.map((p) => p.data));
    } catch (err) {
      // Refused by the core: nothing entered the log. Anything else is a broken invariant.
      const e = err instanceof RaftRefusal ? toAvailabilityError(err) : asError(err);
      for (const p of batch) p.reject(e);
      if (err instanceof RaftRefusal) return;
      throw err;
    }
    batch.forEach((p, i) => {
      if (this.settings.plantedBug === "ackBeforeCommit") p.resolve(proposed.index + i);
      else this.await(proposed.index + i, proposed.term).then(p.resolve, p.reject);
    });
  }

  /** This node applied `entry`: answer whoever waits on its index. */
  entryApplied(entry: Entry): void {
    if (entry.term > this.appliedTerm) {
      this.appliedTerm = entry.term;
      // Rare (once per leader change), so a sweep of every waiter costs nothing in steady state.
      for (const [index, list] of this.awaiting) {
        if (index <= entry.index) continue;
        for (const w of list) if (w.term < entry.term) this.settle(w, this.lost());
        if (list.every((w) => w.settled)) this.awaiting.delete(index);
      }
    }
    const waiting = this.awaiting.get(entry.index);
    if (waiting === undefined) return;
    this.awaiting.delete(entry.index);
    for (const w of waiting) this.settle(w, w.term === entry.term ? entry.index : this.lost());
  }

  /**
   * A snapshot from the leader replaced the log through `index`: the entries there were committed,
   * but whose they were is not known here, so a proposal waiting at or below it has an unknown outcome.
   */
  snapshotInstalled(index: number): void {
    for (const [at, list] of this.awaiting) {
      if (at > index) continue;
      for (const w of list) this.settle(w, new NotAvailableError(`the log through ${index} was replaced by the leader's snapshot; whether the proposal at index ${at} committed is unknown`, this.core.leader, false));
      this.awaiting.delete(at);
    }
  }

  /** This node stopped leading: queued proposals never reached the log. */
  lostLeadership(): void {
    const err = new NotAvailableError(`node ${this.settings.id} is no longer the leader`, this.core.leader, true);
    for (const p of this.queue.splice(0)) p.reject(err);
  }

  /**
   * This node will apply no more entries of this cluster (it was removed): whether proposals still
   * waiting commit without it is unknown.
   */
  abandon(reason: string): void {
    for (const list of this.awaiting.values()) {
      for (const w of list) this.settle(w, new NotAvailableError(`${reason}; whether the proposal at index ${w.index} committed is unknown`, this.core.leader, false));
    }
    this.awaiting.clear();
    this.byDeadline.clear();
  }

  /** Fails the waits that passed their deadline. */
  expire(nowMs: number): void {
    for (const w of this.byDeadline.takeExpired(nowMs)) {
      this.settle(w, new NotAvailableError(
        `the proposal at index ${w.index} was not applied within ${this.settings.requestTimeoutMs} ms; whether it will commit is unknown`,
        this.core.leader, false));
    }
  }

  failAll(err: Error): void {
    this.failure = err;
    for (const p of this.queue.splice(0)) p.reject(err);
    for (const list of this.awaiting.values()) for (const w of list) this.settle(w, err);
    this.awaiting.clear();
    this.byDeadline.clear();
  }

  private lost(): NotAvailableError {
    return new NotAvailableError("the proposal was lost to a leader change before it committed; retry", this.core.leader, true);
  }

  private await(index: number, term: number): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const w: AwaitingApply = { index, term, deadlineMs: this.settings.clock.nowMs() + this.settings.requestTimeoutMs, resolve, reject, settled: false };
      const at = this.awaiting.get(index);
      if (at === undefined) this.awaiting.set(index, [w]);
      else at.push(w);
      this.byDeadline.push(w);
    });
  }

  private settle(w: AwaitingApply, outcome: number | Error): void {
    if (w.settled) return;
    w.settled = true;
    if (typeof outcome === "number") w.resolve(outcome);
    else w.reject(outcome);
  }
}
