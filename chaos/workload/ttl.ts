// TTL clients: instances with a TTL check that are heartbeated (and their health read before
// each heartbeat), and instances registered with the same check and never heartbeated, which must end
// critical.

import type { HealthReadOp, HeartbeatOp, RegisterOp } from "../history.js";
import { type ClientContext, type StopSignal, opBase, pickNode } from "./client.js";
import { callNode, type NodeTarget } from "./http.js";
import { readOutcome, writeOutcome } from "./outcome.js";
import { type AddressSequence, WRITER_INSTANCE_PORT, revisionOf } from "./writers.js";

export const TTL_SERVICE = "ttl";
/** Abandoned instances in one run, at most: each stays critical in the registry until the end. */
export const ABANDONED_MAX = 200;
/** Attempts to register a heartbeated instance before its client gives up on it. */
const REGISTER_ATTEMPTS_MAX = 20;

/** The check id the server gives an instance's one check: see Registry.checkDefinition. */
export function ttlCheckId(instance: string): string {
  return `service:${instance}`;
}

type Health = NonNullable<HealthReadOp["health"]>;
const HEALTH_STATES: readonly string[] = ["passing", "warning", "critical"];

/** Registers `instance` with one TTL check; resolves with how it settled. */
export async function registerTtlInstance(ctx: ClientContext, node: NodeTarget, instance: string, ttlMs: number,
  addresses: AddressSequence): Promise<RegisterOp["outcome"]> {
  const address = addresses.next();
  const invokedAtMs = ctx.recorder.now();
  const result = await callNode(node, "POST", "/v1/registry/instances", {
    id: instance, name: TTL_SERVICE, address, port: WRITER_INSTANCE_PORT, checks: [{ ttl: `${ttlMs}ms` }],
  }, ctx.opTimeoutMs);
  const settled = writeOutcome(result);
  const revision = settled.outcome === "ok" && result.kind === "answer" ? revisionOf(result.body) : undefined;
  const op: RegisterOp = {
    ...opBase(ctx, node, invokedAtMs, settled), kind: "register", service: TTL_SERVICE, instance, address, port: WRITER_INSTANCE_PORT,
    ...(revision === undefined ? {} : { revision }),
  };
  ctx.recorder.record(op);
  return settled.outcome;
}

/** A linearizable read of one instance's aggregate health ("absent" on 404), recorded. */
export async function readHealth(ctx: ClientContext, node: NodeTarget, instance: string): Promise<Health | undefined> {
  const invokedAtMs = ctx.recorder.now();
  const result = await callNode(node, "GET", `/v1/registry/instances/${encodeURIComponent(instance)}`, undefined, ctx.opTimeoutMs);
  let settled = readOutcome(result);
  let health: Health | undefined;
  if (result.kind === "answer" && result.status === 404) {
    settled = { outcome: "ok", status: 404 };
    health = "absent";
  } else if (settled.outcome === "ok" && result.kind === "answer") {
    const status = typeof result.body === "object" && result.body !== null && "status" in result.body ? result.body.status : undefined;
    if (typeof status === "string" && HEALTH_STATES.includes(status)) health = status as Health;
    else settled = { outcome: "fail", status: result.status, error: `no status in ${result.text.slice(0, 200)}` };
  }
  const op: HealthReadOp = { ...opBase(ctx, node, invokedAtMs, settled), kind: "health", instance, ...(health === undefined ? {} : { health }) };
  ctx.recorder.record(op);
  return health;
}

/**
 * One long-lived instance, registered at the start and heartbeated every ttlMs/4 on a random
 * node. An id is registered once: after a definite failure the same id is tried again (it never
 * happened); after an unknown outcome a fresh id is used.
 */
export class HeartbeatClient {
  private instance: string | undefined;

  constructor(private readonly ctx: ClientContext, private readonly baseId: string, private readonly ttlMs: number,
    private readonly addresses: AddressSequence) {}

  get heartbeatIntervalMs(): number {
    return this.ttlMs / 4;
  }

  /** Registers the instance, retrying with a pause between attempts; false when it never was. */
  async registerOnce(stop: StopSignal, retryPauseMs: number): Promise<boolean> {
    let candidate = this.baseId;
    for (let attempt = 1; attempt <= REGISTER_ATTEMPTS_MAX && !stop.stopped; attempt++) {
      const node = pickNode(this.ctx);
      if (node !== undefined) {
        const outcome = await registerTtlInstance(this.ctx, node, candidate, this.ttlMs, this.addresses);
        if (outcome === "ok") {
          this.instance = candidate;
          return true;
        }
        if (outcome === "unknown") candidate = `${this.baseId}-r${attempt}`;
      }
      await stop.pause(retryPauseMs);
    }
    return false;
  }

  async step(): Promise<void> {
    const instance = this.instance;
    const node = pickNode(this.ctx);
    if (instance === undefined || node === undefined) return;
    // The health is read just before each heartbeat, when an early expiry since the last one would show.
    const reader = pickNode(this.ctx);
    if (reader !== undefined) await readHealth(this.ctx, reader, instance);
    const checkId = ttlCheckId(instance);
    const invokedAtMs = this.ctx.recorder.now();
    const result = await callNode(node, "PUT", `/v1/registry/checks/${encodeURIComponent(checkId)}`, { status: "passing" }, this.ctx.opTimeoutMs);
    const op: HeartbeatOp = { ...opBase(this.ctx, node, invokedAtMs, writeOutcome(result)), kind: "heartbeat", instance, checkId };
    this.ctx.recorder.record(op);
  }
}

/** Registers `abandoned-<n>` every so often with a TTL check nobody heartbeats. */
export class AbandonedRegistrar {
  /** Instances whose registration was acknowledged: these must be critical by the end. */
  readonly registered: string[] = [];
  private sequence = 0;

  constructor(private readonly ctx: ClientContext, private readonly ttlMs: number, private readonly addresses: AddressSequence) {}

  async step(): Promise<void> {
    const node = pickNode(this.ctx);
    if (node === undefined || this.sequence >= ABANDONED_MAX) return;
    const instance = `abandoned-${++this.sequence}`;
    if (await registerTtlInstance(this.ctx, node, instance, this.ttlMs, this.addresses) === "ok") this.registered.push(instance);
  }
}
