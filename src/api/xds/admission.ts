// New xDS streams are admitted at a bounded rate, by a token bucket: after a node or a whole
// fleet restarts, thousands of proxies reconnect at once, and answering them all in the same
// instant would starve the streams already running (Istio #35263, #12664). A stream past the
// rate waits, unread, for its turn; it is not failed. Only past the bound of waiting streams is a
// new one refused, with RESOURCE_EXHAUSTED, and its client retries with backoff.
//
//   0 <= tokens <= burst; waiting streams are admitted in arrival order as tokens accrue.

export interface AdmissionLimits {
  /** Streams admitted per second once the burst is spent. */
  readonly ratePerSecond: number;
  /** Streams admitted at once from idle. */
  readonly burst: number;
  /** Streams waiting for admission, at most; past it new ones are refused. */
  readonly waitingMax: number;
}

/** Time and timers, injected so tests can drive the bucket exactly. */
export interface AdmissionClock {
  nowMs(): number;
  /** Calls `callback` after about `delayMs`; returns a function that cancels it. */
  schedule(callback: () => void, delayMs: number): () => void;
}

export const realAdmissionClock: AdmissionClock = {
  nowMs: () => performance.now(),
  schedule: (callback, delayMs) => {
    const timer = setTimeout(callback, delayMs);
    return () => clearTimeout(timer);
  },
};

export interface AdmissionTicket {
  /** True when the stream had to wait (it was not admitted on arrival). */
  readonly waited: boolean;
  /** The stream went away before it was admitted: it leaves the queue. No effect once admitted. */
  cancel(): void;
}

interface Waiter {
  readonly admit: () => void;
}

export class AdmissionGate {
  private tokens: number;
  private refilledAtMs: number;
  /** Insertion-ordered, and a cancelled waiter leaves it in O(1). */
  private readonly waiting = new Set<Waiter>();
  private cancelTimer: (() => void) | undefined;
  private admittedCount = 0;

  constructor(private readonly limits: AdmissionLimits, private readonly clock: AdmissionClock = realAdmissionClock) {
    if (!(limits.ratePerSecond > 0)) throw new RangeError(`xDS admission rate ${limits.ratePerSecond}/s: give a rate above 0`);
    if (!Number.isInteger(limits.burst) || limits.burst < 1) throw new RangeError(`xDS admission burst ${limits.burst}: give a whole number of at least 1`);
    if (!Number.isInteger(limits.waitingMax) || limits.waitingMax < 0) throw new RangeError(`xDS admission queue bound ${limits.waitingMax}: give a whole number of at least 0`);
    this.tokens = limits.burst;
    this.refilledAtMs = clock.nowMs();
  }

  /** Streams waiting now. */
  get waitingCount(): number {
    return this.waiting.size;
  }

  /** Streams admitted since the gate was made. */
  get admitted(): number {
    return this.admittedCount;
  }

  /**
   * Admits a new stream: `admit` runs now (before this returns) when a token is free and nobody
   * is waiting, else later in arrival order. Returns undefined, without calling `admit`, when the
   * queue is full.
   */
  enter(admit: () => void): AdmissionTicket | undefined {
    this.refill();
    if (this.waiting.size === 0 && this.tokens >= 1) {
      this.tokens -= 1;
      this.admittedCount++;
      admit();
      return { waited: false, cancel: () => {} };
    }
    if (this.waiting.size >= this.limits.waitingMax) return undefined;
    const waiter: Waiter = { admit };
    this.waiting.add(waiter);
    this.arm();
    return {
      waited: true,
      cancel: () => {
        this.waiting.delete(waiter);
        if (this.waiting.size === 0) this.disarm();
      },
    };
  }

  /** Drops every waiting stream (the node is stopping) and stops the timer. Returns how many were waiting. */
  close(): number {
    const n = this.waiting.size;
    this.waiting.clear();
    this.disarm();
    return n;
  }

  private refill(): void {
    const now = this.clock.nowMs();
    this.tokens = Math.min(this.limits.burst, this.tokens + ((now - this.refilledAtMs) * this.limits.ratePerSecond) / 1000);
    this.refilledAtMs = now;
  }

  private arm(): void {
    if (this.cancelTimer !== undefined) return;
    const delayMs = Math.max(1, Math.ceil(((1 - this.tokens) * 1000) / this.limits.ratePerSecond));
    this.cancelTimer = this.clock.schedule(() => {
      this.cancelTimer = undefined;
      this.admitWaiting();
    }, delayMs);
  }

  private disarm(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  private admitWaiting(): void {
    this.refill();
    for (const waiter of this.waiting) {
      if (this.tokens < 1) break;
      this.waiting.delete(waiter);
      this.tokens -= 1;
      this.admittedCount++;
      waiter.admit();
    }
    if (this.waiting.size > 0) this.arm();
  }
}
