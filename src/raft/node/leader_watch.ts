// Waiting out an election. A write or a linearizable read that finds no leader, or a leader that
// cannot be reached, waits here for one, up to the node's leader wait (Consul's rpc_hold_timeout),
// instead of failing at once: a failover becomes a pause that clients do not see.

import { backoffDelayMs } from "../../common/backoff.js";
import { NONE, type NodeId } from "../core/types.js";
import { NotAvailableError } from "./errors.js";
import type { Clock, Timer } from "./ports.js";

/** Pauses between attempts against a leader that could not take the request: from 20 ms up to 500 ms. */
const RETRY_BASE_MS = 20;
const RETRY_MAX_MS = 500;

interface Waiter {
  readonly done: () => boolean;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  timer: Timer | undefined;
}

export class LeaderWatch {
  private readonly waiters = new Set<Waiter>();
  private failure: Error | undefined;

  constructor(
    private readonly clock: Clock,
    /** The leader this node knows of now, NONE when none. */
    private readonly leaderNow: () => NodeId,
    /** How long a request waits for a leader, in all. */
    private readonly leaderWaitMs: number,
    /** A float in [0, 1) for retry jitter. */
    private readonly random: () => number,
  ) {}

  /**
   * Runs `attempt` against the leader, waiting for one first. An attempt that fails with an error
   * `retryable` accepts (one that certainly had no effect) is made again, against the next leader
   * or after a short pause, until the leader wait runs out; then the last error is the answer.
   */
  async withLeader<T>(attempt: (leader: NodeId) => Promise<T>, retryable: (err: unknown) => boolean): Promise<T> {
    const deadlineMs = this.clock.nowMs() + this.leaderWaitMs;
    for (let retry = 1; ; retry++) {
      const leader = await this.known(deadlineMs);
      try {
        return await attempt(leader);
      } catch (err) {
        const nowMs = this.clock.nowMs();
        if (!retryable(err) || nowMs >= deadlineMs) throw err;
        await this.changeFrom(leader, Math.min(deadlineMs, nowMs + backoffDelayMs(retry, RETRY_BASE_MS, RETRY_MAX_MS, this.random)));
      }
    }
  }

  /**
   * Resolves with the leader as soon as one is known; past `deadlineMs` rejects with a retryable
   * NotAvailableError (nothing was attempted, so nothing was applied).
   */
  async known(deadlineMs: number): Promise<NodeId> {
    if (this.leaderNow() === NONE) {
      await this.until(() => this.leaderNow() !== NONE, deadlineMs, () => new NotAvailableError(
        `no leader was elected within ${this.leaderWaitMs} ms (an election is under way, or a majority of the cluster is unreachable); retry`,
        NONE, true));
    }
    return this.leaderNow();
  }

  /** Resolves once the leader is another than `leader` (or none), or at `untilMs`, whichever is first. */
  async changeFrom(leader: NodeId, untilMs: number): Promise<void> {
    if (this.leaderNow() !== leader) return;
    await this.until(() => this.leaderNow() !== leader, untilMs, undefined);
  }

  /** The leader may have changed: wake whoever waits for that. */
  changed(): void {
    for (const w of this.waiters) if (w.done()) this.settle(w, undefined);
  }

  /** The node stopped: every waiter, now and later, fails with `err`. */
  failAll(err: Error): void {
    this.failure = err;
    for (const w of this.waiters) this.settle(w, err);
  }

  private until(done: () => boolean, untilMs: number, onTimeout: (() => Error) | undefined): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { done, resolve, reject, timer: undefined };
      this.waiters.add(w);
      w.timer = this.clock.setTimer(() => this.settle(w, onTimeout?.()), Math.max(0, untilMs - this.clock.nowMs()));
    });
  }

  private settle(w: Waiter, err: Error | undefined): void {
    if (!this.waiters.delete(w)) return;
    w.timer?.cancel();
    if (err === undefined) w.resolve();
    else w.reject(err);
  }
}
