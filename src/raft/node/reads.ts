// Reads: waiting until this node has applied an index, and linearizable read barriers by ReadIndex.
//
// A barrier asks the leader (through the core) for its commit index once it has confirmed it
// still leads, then waits until this node has applied that index. Reads change nothing, so a
// barrier whose leader went away is simply asked again of the next leader, within the leader wait.

import type { RaftNode } from "../core/raft.js";
import { type NodeId, RaftRefusal } from "../core/types.js";
import { NotAvailableError, refusalError } from "./errors.js";
import { DeadlineQueue } from "./deadlines.js";
import type { LeaderWatch } from "./leader_watch.js";
import type { Timer } from "./ports.js";
import type { DriverSettings } from "./settings.js";

interface IndexWaiter {
  readonly index: number;
  readonly deadlineMs: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  settled: boolean;
}

/** Callers waiting for this node's state machine to reach an index; each wait is bounded. */
export class AppliedWaiters {
  private readonly byIndex = new Map<number, IndexWaiter[]>();
  private readonly byDeadline = new DeadlineQueue<IndexWaiter>();
  private appliedIndex = 0;
  private failure: Error | undefined;

  constructor(private readonly settings: DriverSettings) {}

  /** Resolves once `index` is applied here; rejects if that takes longer than the request timeout. */
  wait(index: number): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (index <= this.appliedIndex) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w: IndexWaiter = { index, deadlineMs: this.settings.clock.nowMs() + this.settings.requestTimeoutMs, resolve, reject, settled: false };
      const at = this.byIndex.get(index);
      if (at === undefined) this.byIndex.set(index, [w]);
      else at.push(w);
      this.byDeadline.push(w);
    });
  }

  /** The state machine has applied everything through `index`. */
  release(index: number): void {
    if (index <= this.appliedIndex) return;
    const from = this.appliedIndex;
    this.appliedIndex = index;
    if (this.byIndex.size === 0) return;
    // A snapshot can move the index far at once: walk whichever is shorter, the gap or the waiters.
    const due = index - from <= this.byIndex.size
      ? Array.from({ length: index - from }, (_, i) => from + 1 + i)
      : [...this.byIndex.keys()].filter((i) => i <= index);
    for (const i of due) {
      for (const w of this.byIndex.get(i) ?? []) this.settle(w, undefined);
      this.byIndex.delete(i);
    }
  }

  /** Fails the waits that passed their deadline. */
  expire(nowMs: number): void {
    for (const w of this.byDeadline.takeExpired(nowMs)) {
      this.settle(w, new NotAvailableError(
        `entry ${w.index} is committed, but this node has not applied it within ${this.settings.requestTimeoutMs} ms (applied: ${this.appliedIndex}); ` +
        "it may be cut off from the leader: read from another node"));
    }
  }

  failAll(err: Error): void {
    this.failure = err;
    for (const list of this.byIndex.values()) for (const w of list) this.settle(w, err);
    this.byIndex.clear();
    this.byDeadline.clear();
  }

  private settle(w: IndexWaiter, err: Error | undefined): void {
    if (w.settled) return;
    w.settled = true;
    if (err === undefined) w.resolve();
    else w.reject(err);
  }
}

interface PendingBarrier {
  /** The leader the ReadIndex went to (this node when it leads): if it changes, ask again. */
  readonly leaderAsked: NodeId;
  readonly resolve: (index: number) => void;
  readonly reject: (err: Error) => void;
  readonly timer: Timer;
}

/** Read contexts have this many random characters before their counter. */
const READ_NONCE_CHARS = 12;
const READ_NONCE_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz";

export class ReadBarriers {
  /**
   * Contexts are unique across restarts as well as within a run: a ReadIndex answer still in
   * flight from before a restart must not answer a new read with its older index.
   */
  private readonly nonce: string;
  private counter = 0;
  private readonly pending = new Map<string, PendingBarrier>();
  private failure: Error | undefined;

  constructor(
    private readonly settings: DriverSettings,
    private readonly core: RaftNode,
    private readonly leaders: LeaderWatch,
    private readonly applied: AppliedWaiters,
    /** Runs the Ready loop, which carries the request to the leader. */
    private readonly pump: () => void,
  ) {
    let nonce = "";
    for (let i = 0; i < READ_NONCE_CHARS; i++) nonce += READ_NONCE_ALPHABET[settings.random.nextInt(READ_NONCE_ALPHABET.length)];
    this.nonce = nonce;
  }

  /** Resolves once this node's state reflects every write acknowledged before the call. */
  async barrier(): Promise<void> {
    if (this.settings.plantedBug === "readWithoutReadIndex") return;
    // A read changes nothing, so any failure to confirm it may be retried.
    const index = await this.leaders.withLeader((leader) => this.askReadIndex(leader), (err) => err instanceof NotAvailableError);
    await this.applied.wait(index);
  }

  /** The Ready loop's answers: these reads are confirmed at `index`. */
  confirmed(reads: readonly { readonly index: number; readonly context: string }[]): void {
    for (const r of reads) this.settle(r.context, r.index);
  }

  /** Leadership was lost before these reads were confirmed. */
  lost(contexts: readonly string[]): void {
    for (const context of contexts) {
      this.settle(context, new NotAvailableError("leadership changed before the read was confirmed; retry", this.core.leader, true));
    }
  }

  /** The leader changed: reads sent to the old one will not be answered, so ask them again. */
  leaderChanged(): void {
    const leader = this.core.leader;
    for (const [context, p] of this.pending) {
      if (p.leaderAsked !== leader) this.settle(context, new NotAvailableError(`leader ${p.leaderAsked || "(none)"} went away before confirming the read`, leader, true));
    }
  }

  failAll(err: Error): void {
    this.failure = err;
    for (const context of [...this.pending.keys()]) this.settle(context, err);
  }

  private askReadIndex(leader: NodeId): Promise<number> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    const context = `${this.settings.id}:${this.nonce}:${++this.counter}`;
    return new Promise<number>((resolve, reject) => {
      const timer = this.settings.clock.setTimer(() => this.settle(context, new NotAvailableError(
        `leader ${leader} did not confirm the read within ${this.settings.requestTimeoutMs} ms; retry`, leader, true)), this.settings.requestTimeoutMs);
      this.pending.set(context, { leaderAsked: leader, resolve, reject, timer });
      try {
        this.core.readIndex(context);
      } catch (err) {
        this.settle(context, err instanceof RaftRefusal ? refusalError(err) : err instanceof Error ? err : new Error(String(err)));
        return;
      }
      this.pump();
    });
  }

  private settle(context: string, outcome: number | Error): void {
    const p = this.pending.get(context);
    if (p === undefined) return;
    this.pending.delete(context);
    p.timer.cancel();
    if (typeof outcome === "number") p.resolve(outcome);
    else p.reject(outcome);
  }
}
