// Writers: register new instances with unique ids and addresses, and deregister only instances
// whose registration was acknowledged. An id is never registered twice, so every instance's
// history is one register and at most one effective deregister, which keeps the per-instance
// linearizability check small.

import type { DeregisterOp, RegisterOp } from "../history.js";
import { type ClientContext, opBase, pickNode } from "./client.js";
import { readService } from "./readers.js";
import { callNode } from "./http.js";
import { writeOutcome } from "./outcome.js";

/** Every writer instance listens here; the address alone makes address:port unique in the run. */
export const WRITER_INSTANCE_PORT = 8080;
/** 10.x.y.z gives 2^24 - 1 addresses: more than any run registers. */
const ADDRESS_SEQUENCE_MAX = 2 ** 24 - 1;
/** Acknowledged, not yet deregistered instances of one service, at most (about: writers decide one at a time). */
export const LIVE_PER_SERVICE_MAX = 40;
/** The share of operations that are deregistrations, while the live set is below its bound. */
const DEREGISTER_SHARE = 0.35;
/**
 * The share of acknowledged registrations a writer reads back at once, linearizably, from
 * another node: "register, then discover" is what services do, and it is where a write
 * acknowledged before it committed shows, even when no fault is in force.
 */
const READ_BACK_SHARE = 0.5;

/** Unique addresses for the run's instances, shared by all clients that register. */
export class AddressSequence {
  private last = 0;

  next(): string {
    if (this.last >= ADDRESS_SEQUENCE_MAX) throw new Error(`the run registered ${ADDRESS_SEQUENCE_MAX} instances; no unique address is left`);
    const n = ++this.last;
    return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
  }
}

/** How many acknowledged instances each service has live, across writers. */
export class LiveCounts {
  private readonly counts = new Map<string, number>();

  of(service: string): number {
    return this.counts.get(service) ?? 0;
  }

  add(service: string, delta: number): void {
    this.counts.set(service, this.of(service) + delta);
  }
}

interface Held {
  readonly id: string;
  readonly service: string;
}

export class Writer {
  /** Instances this writer registered with an ok answer and has not yet deregistered (or lost track of). */
  private readonly held: Held[] = [];
  private sequence = 0;

  constructor(private readonly ctx: ClientContext, private readonly services: readonly string[],
    private readonly addresses: AddressSequence, private readonly live: LiveCounts) {}

  async step(): Promise<void> {
    const service = this.ctx.random.pick(this.services);
    const full = this.live.of(service) >= LIVE_PER_SERVICE_MAX;
    const sameService = this.held.filter((h) => h.service === service);
    if (full && sameService.length > 0) return this.deregister(this.ctx.random.pick(sameService));
    if (this.held.length > 0 && (full || this.ctx.random.chance(DEREGISTER_SHARE))) return this.deregister(this.ctx.random.pick(this.held));
    return this.register(service);
  }

  private async register(service: string): Promise<void> {
    const node = pickNode(this.ctx);
    if (node === undefined) return;
    const instance = `${this.ctx.name}-${++this.sequence}`;
    const address = this.addresses.next();
    const invokedAtMs = this.ctx.recorder.now();
    const result = await callNode(node, "POST", "/v1/registry/instances",
      { id: instance, name: service, address, port: WRITER_INSTANCE_PORT }, this.ctx.opTimeoutMs);
    const settled = writeOutcome(result);
    const revision = settled.outcome === "ok" ? revisionOf(result.kind === "answer" ? result.body : undefined) : undefined;
    const op: RegisterOp = {
      ...opBase(this.ctx, node, invokedAtMs, settled), kind: "register", service, instance, address, port: WRITER_INSTANCE_PORT,
      ...(revision === undefined ? {} : { revision }),
    };
    this.ctx.recorder.record(op);
    if (settled.outcome === "ok") {
      this.held.push({ id: instance, service });
      this.live.add(service, 1);
      if (this.ctx.random.chance(READ_BACK_SHARE)) await this.readBack(service, node.id);
    }
  }

  private async readBack(service: string, writtenOn: string): Promise<void> {
    const others = this.ctx.targets().filter((t) => t.id !== writtenOn);
    if (others.length === 0) return;
    await readService(this.ctx, this.ctx.random.pick(others), service, "linearizable");
  }

  private async deregister(target: Held): Promise<void> {
    const node = pickNode(this.ctx);
    if (node === undefined) return;
    const invokedAtMs = this.ctx.recorder.now();
    const result = await callNode(node, "DELETE", `/v1/registry/instances/${encodeURIComponent(target.id)}`, undefined, this.ctx.opTimeoutMs);
    const settled = writeOutcome(result);
    const revision = settled.outcome === "ok" ? revisionOf(result.kind === "answer" ? result.body : undefined) : undefined;
    const op: DeregisterOp = {
      ...opBase(this.ctx, node, invokedAtMs, settled), kind: "deregister", service: target.service, instance: target.id,
      ...(revision === undefined ? {} : { revision }),
    };
    this.ctx.recorder.record(op);
    // A failed deregistration certainly left the instance live, so it may be tried again; after
    // an unknown one the instance's fate is the checker's question, not the writer's.
    if (settled.outcome !== "fail") {
      this.held.splice(this.held.indexOf(target), 1);
      this.live.add(target.service, -1);
    }
  }
}

/** The `index` of a write's answer ({index}). */
export function revisionOf(body: unknown): number | undefined {
  const index = typeof body === "object" && body !== null && "index" in body ? body.index : undefined;
  return typeof index === "number" && Number.isSafeInteger(index) ? index : undefined;
}
