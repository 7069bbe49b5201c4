// One registered instance and its automatic heartbeats.
//
// Every TTL check of the instance is heartbeated together, every third of the shortest TTL
// (bounded, and jittered only downwards so that a heartbeat is never later than ttl/3): two
// heartbeats can be lost before the check goes critical. Heartbeats run one at a time; a slow one
// delays the next rather than piling up. A heartbeat answered 404 means the cluster has forgotten
// the check (deregister-after fired, or someone deregistered the instance), so the client
// registers the instance again, as a Consul agent's anti-entropy would.

import type { Logger } from "pino";
import type { CheckInput, HealthStatus, RegisterInput } from "./types.js";
import { CairnAbortedError, CairnRequestError } from "./errors.js";
import type { Transport } from "./transport.js";
import { errorMessage } from "../common/errors.js";

export const heartbeatLimits = {
  /** Protects the cluster from a tiny TTL: no check is heartbeated more often than this. */
  intervalMinMs: 100,
  /** A long TTL is still heartbeated at least this often, so a restarted cluster hears of us soon. */
  intervalMaxMs: 60_000,
  /** The interval is shortened by up to this fraction, at random, so instances spread out. */
  jitterFraction: 0.2,
  /** One heartbeat attempt may take at most this fraction of the interval, so failover fits in the TTL. */
  attemptTimeoutFraction: 0.5,
  attemptTimeoutMinMs: 100,
} as const;

/** The next heartbeat's delay for the shortest TTL among an instance's checks. */
export function heartbeatIntervalMs(ttlMs: number, random: () => number): number {
  const base = Math.min(heartbeatLimits.intervalMaxMs, Math.max(heartbeatLimits.intervalMinMs, ttlMs / 3));
  return Math.round(base * (1 - heartbeatLimits.jitterFraction * random()));
}

/** Check IDs as the registry assigns them: service:<instance id>, or service:<id>:<n> (1-based) for several. */
export function checkIdsOf(instanceId: string, checks: readonly CheckInput[]): string[] {
  return checks.map((c, i) => c.id !== undefined && c.id !== "" ? c.id : checks.length > 1 ? `service:${instanceId}:${i + 1}` : `service:${instanceId}`);
}

/** DELETE /v1/registry/instances/:id: the instance and its checks. A 404 (no such instance) rejects. */
export async function deregisterInstance(transport: Transport, instanceId: string): Promise<void> {
  await transport.request("DELETE", `/v1/registry/instances/${encodeURIComponent(instanceId)}`);
}

export interface RegistrationDeps {
  readonly transport: Transport;
  readonly input: RegisterInput;
  readonly instanceId: string;
  readonly checkIds: readonly string[];
  /** The TTL checks' ids and the shortest of their TTLs; empty when nothing is heartbeated. */
  readonly ttlCheckIds: readonly string[];
  readonly ttlMsMin: number;
  readonly requestTimeoutMs: number;
  readonly random: () => number;
  readonly logger?: Logger | undefined;
  /** Called once the instance is deregistered, so the client forgets it. */
  readonly onDeregistered: (r: Registration) => void;
}

export class Registration {
  readonly id: string;
  readonly checkIds: readonly string[];
  /** The checks whose TTL this registration heartbeats. */
  readonly ttlCheckIds: readonly string[];
  private status: HealthStatus = "passing";
  private output = "";
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Aborts an in-flight heartbeat when the registration ends. */
  private readonly abort = new AbortController();
  /** Heartbeats run one after another on this chain. */
  private chain: Promise<void> = Promise.resolve();
  private deregistering: Promise<void> | undefined;
  private heartbeatsSent = 0;

  constructor(private readonly deps: RegistrationDeps) {
    this.id = deps.instanceId;
    this.checkIds = deps.checkIds;
    this.ttlCheckIds = deps.ttlCheckIds;
  }

  /** Heartbeats that reached the cluster so far (for tests and metrics). */
  get heartbeats(): number {
    return this.heartbeatsSent;
  }

  get active(): boolean {
    return !this.stopped;
  }

  /**
   * Sends the first heartbeat at once (a new TTL check starts critical) and schedules the rest.
   * Never rejects: a failed heartbeat is logged and retried at the next interval.
   */
  async startHeartbeats(): Promise<void> {
    if (this.ttlCheckIds.length === 0) return;
    await this.enqueue().catch((err: unknown) => this.logFailure(err));
  }

  /**
   * Changes what heartbeats report, and reports it at once. Resolves when the cluster accepted
   * the new status for every TTL check; rejects with the first failure otherwise (later heartbeats
   * keep reporting the new status either way).
   */
  setStatus(status: HealthStatus, output = ""): Promise<void> {
    if (this.stopped) return Promise.reject(new Error(`instance ${this.id} is deregistered; register it again to report its status`));
    if (this.ttlCheckIds.length === 0) return Promise.reject(new Error(`instance ${this.id} has no TTL check whose status the client could report`));
    this.status = status;
    this.output = output;
    return this.enqueue();
  }

  /** Stops heartbeats and removes the instance (and its checks) from the cluster. Idempotent. */
  deregister(): Promise<void> {
    this.deregistering ??= this.doDeregister();
    return this.deregistering;
  }

  private async doDeregister(): Promise<void> {
    this.stopHeartbeats();
    await this.chain;
    try {
      await deregisterInstance(this.deps.transport, this.id);
    } catch (err) {
      // A retried DELETE whose first attempt landed finds nothing to delete: the goal is reached.
      if (!(err instanceof CairnRequestError && err.status === 404)) {
        this.deregistering = undefined;
        throw err;
      }
    }
    this.deps.onDeregistered(this);
  }

  /** Stops heartbeats without deregistering (the TTL will lapse). */
  stopHeartbeats(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
  }

  private enqueue(): Promise<void> {
    const run = this.chain.then(() => this.beat());
    this.chain = run.then(() => undefined, () => undefined);
    return run;
  }

  private schedule(): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.enqueue().catch((err: unknown) => this.logFailure(err));
    }, heartbeatIntervalMs(this.deps.ttlMsMin, this.deps.random));
    // Heartbeats alone never keep a process alive; the service embedding the client does.
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    clearTimeout(this.timer);
    if (this.stopped) return;
    try {
      try {
        await this.sendAll();
      } catch (err) {
        if (!(err instanceof CairnRequestError && err.status === 404) || this.stopped) throw err;
        this.deps.logger?.warn({ instance: this.id, err: err.message }, "the cluster forgot this instance's check; registering it again");
        await this.deps.transport.request("POST", "/v1/registry/instances", this.deps.input, { signal: this.abort.signal });
        await this.sendAll();
      }
    } finally {
      this.schedule();
    }
  }

  private async sendAll(): Promise<void> {
    const body = { status: this.status, output: this.output };
    const timeoutMs = Math.min(this.deps.requestTimeoutMs, Math.max(heartbeatLimits.attemptTimeoutMinMs,
      heartbeatIntervalMs(this.deps.ttlMsMin, () => 0) * heartbeatLimits.attemptTimeoutFraction));
    const results = await Promise.allSettled(this.ttlCheckIds.map((checkId) =>
      this.deps.transport.request("PUT", `/v1/registry/checks/${encodeURIComponent(checkId)}`, body, { timeoutMs, signal: this.abort.signal })));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    this.heartbeatsSent += results.length - (results.filter((r) => r.status === "rejected").length);
    if (failed !== undefined) throw failed.reason;
  }

  private logFailure(err: unknown): void {
    if (err instanceof CairnAbortedError || this.stopped) return;
    this.deps.logger?.warn({ instance: this.id, err: errorMessage(err) }, "heartbeat failed; retrying at the next interval");
  }
}
