// The registry as the dashboard knows it: every instance the watch stream has shown, kept up to
// date from its events, and the services they make up, filtered by the search box.

import type { EventBatch, HealthStatus, Instance, ResetChunk } from "./decode.js";

export interface ServiceSummary {
  readonly name: string;
  readonly counts: Readonly<Record<HealthStatus, number>>;
  /** The instances the search matched (all of them when the service's name matched), by id. */
  readonly matched: readonly Instance[];
}

export class RegistryView {
  private readonly instances = new Map<string, Instance>();
  /** A reset being received: it replaces `instances` once its last chunk arrives. */
  private staging: Map<string, Instance> | undefined;
  revision = 0;

  get size(): number {
    return this.instances.size;
  }

  applyBatch(batch: EventBatch): void {
    for (const e of batch.events) {
      if (e.type === "delete") this.instances.delete(e.id);
      else this.instances.set(e.instance.id, e.instance);
    }
    this.revision = batch.revision;
  }

  applyReset(chunk: ResetChunk): void {
    if (chunk.first) this.staging = new Map();
    // A chunk without its first is the rest of a reset whose start was lost: wait for a whole one.
    if (this.staging === undefined) return;
    for (const inst of chunk.instances) this.staging.set(inst.id, inst);
    if (!chunk.last) return;
    this.instances.clear();
    for (const [id, inst] of this.staging) this.instances.set(id, inst);
    this.staging = undefined;
    this.revision = chunk.revision;
  }

  /** The stream broke: a partial reset is dropped (the server sends it again on reconnecting). */
  abandonReset(): void {
    this.staging = undefined;
  }

  /**
   * Services by name, each with its instances that match `query`: every word of it must appear
   * in the instance's service, id, address:port, node, zone, tags or status (case does not matter).
   */
  services(query: string): ServiceSummary[] {
    const words = query.toLowerCase().split(/\s+/).filter((w) => w !== "");
    const byService = new Map<string, Instance[]>();
    for (const inst of this.instances.values()) {
      let list = byService.get(inst.service);
      if (list === undefined) byService.set(inst.service, (list = []));
      list.push(inst);
    }
    const out: ServiceSummary[] = [];
    for (const [name, all] of byService) {
      const counts = { passing: 0, warning: 0, critical: 0 };
      for (const inst of all) counts[inst.status]++;
      const matched = words.length === 0 ? all : all.filter((inst) => words.every((w) => searchText(inst).includes(w)));
      if (matched.length === 0) continue;
      out.push({ name, counts, matched: matched.sort((a, b) => compare(a.id, b.id)) });
    }
    return out.sort((a, b) => compare(a.name, b.name));
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const searchTexts = new WeakMap<Instance, string>();

/** What the search looks in, made once per instance object (an event brings a new one). */
function searchText(inst: Instance): string {
  let text = searchTexts.get(inst);
  if (text === undefined) {
    text = [inst.service, inst.id, `${inst.address}:${inst.port}`, inst.node, inst.zone, inst.status, ...inst.tags].join(" ").toLowerCase();
    searchTexts.set(inst, text);
  }
  return text;
}
