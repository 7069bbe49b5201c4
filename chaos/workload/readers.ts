// Readers: list a service's instances from a random node, linearizable or ?stale, and record
// the ids and the index the answer carried.

import type { ReadOp } from "../history.js";
import { type ClientContext, opBase, pickNode } from "./client.js";
import { callNode, type NodeTarget } from "./http.js";
import { readOutcome } from "./outcome.js";

export interface ServiceListing {
  readonly revision: number;
  readonly instances: readonly { readonly id: string; readonly address: string; readonly port: number; readonly status: string }[];
}

/** The answer of GET /v1/registry/services/:name/instances, checked field by field. */
export function decodeListing(body: unknown): ServiceListing | undefined {
  if (typeof body !== "object" || body === null || !("index" in body) || !("instances" in body)) return undefined;
  const { index, instances } = body;
  if (typeof index !== "number" || !Array.isArray(instances)) return undefined;
  const listed: ServiceListing["instances"][number][] = [];
  for (const i of instances as unknown[]) {
    const inst = i as { id?: unknown; address?: unknown; port?: unknown; status?: unknown } | null;
    if (typeof inst?.id !== "string" || typeof inst.address !== "string" || typeof inst.port !== "number" || typeof inst.status !== "string") return undefined;
    listed.push({ id: inst.id, address: inst.address, port: inst.port, status: inst.status });
  }
  return { revision: index, instances: listed };
}

export type Consistency = ReadOp["consistency"];

/** One read of one service on one node, recorded; resolves with the record and, when it was ok, the listing. */
export async function readService(ctx: ClientContext, node: NodeTarget, service: string, consistency: Consistency): Promise<{ op: ReadOp; listing: ServiceListing | undefined }> {
  const invokedAtMs = ctx.recorder.now();
  const result = await callNode(node, "GET", `/v1/registry/services/${encodeURIComponent(service)}/instances${consistency === "stale" ? "?stale" : ""}`,
    undefined, ctx.opTimeoutMs);
  let settled = readOutcome(result);
  const listing = settled.outcome === "ok" && result.kind === "answer" ? decodeListing(result.body) : undefined;
  if (settled.outcome === "ok" && listing === undefined) {
    settled = { outcome: "fail", status: settled.status, error: `unexpected answer: ${result.kind === "answer" ? result.text.slice(0, 200) : ""}` };
  }
  const op: ReadOp = {
    ...opBase(ctx, node, invokedAtMs, settled), kind: "read", service, consistency,
    ...(listing === undefined ? {} : { instances: listing.instances.map((i) => i.id), revision: listing.revision }),
  };
  ctx.recorder.record(op);
  return { op, listing };
}

export class Reader {
  /** A stale reader keeps to one node (until it leaves the cluster): ?stale promises monotonic reads per node, not across nodes. */
  private pinned: string | undefined;

  constructor(private readonly ctx: ClientContext, private readonly services: readonly string[], private readonly consistency: Consistency) {}

  async step(): Promise<void> {
    const node = this.consistency === "stale" ? this.pinnedNode() : pickNode(this.ctx);
    if (node === undefined) return;
    await readService(this.ctx, node, this.ctx.random.pick(this.services), this.consistency);
  }

  private pinnedNode(): NodeTarget | undefined {
    const current = this.ctx.targets().find((t) => t.id === this.pinned);
    if (current !== undefined) return current;
    const picked = pickNode(this.ctx);
    this.pinned = picked?.id;
    return picked;
  }
}
