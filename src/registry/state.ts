// The registry as a replicated state machine. apply() is deterministic: it reads only the command
// and the state. Anything that depends on time (a TTL lapsing, a check failing, deregister-after)
// was decided by the leader and arrives here as an explicit command stamped with its time.
//
// Revisions: every applied command has the revision of its Raft index. Each instance carries the
// revisions that created and last modified it, and each service has its own index (the last
// revision that touched it), so a blocking query on one service is not woken by writes to
// another (Consul's #1244).

import type { Chunks } from "../raft/codec.js";
import type { StateMachine } from "../raft/driver.js";
import { type Check, type CheckDefinition, type HealthStatus, type Instance, type InstanceDefinition } from "./model.js";

export type RegistryCommand =
  | {
      readonly op: "register";
      readonly instance: InstanceDefinition;
      readonly checks: readonly (CheckDefinition & { readonly status: HealthStatus; readonly output: string })[];
      readonly atMs: number;
    }
  | { readonly op: "deregister"; readonly id: string }
  | { readonly op: "setCheckStatus"; readonly checkId: string; readonly status: HealthStatus; readonly output: string; readonly atMs: number };

const textEncoder = new TextEncoder();
/** Strings shared between instances, at most: beyond it new ones are simply not shared. */
const INTERNED_STRINGS_MAX = 100_000;
const EMPTY_META: Readonly<Record<string, string>> = Object.freeze({});
const DEFAULT_WEIGHTS = Object.freeze({ passing: 1, warning: 1 });
const EMPTY_LIST: readonly string[] = Object.freeze([]);
const EMPTY_CHECKS: readonly Check[] = Object.freeze([]);
/** Instances encoded between two yields to the event loop while a snapshot is written. */
const SNAPSHOT_SLICE_INSTANCES = 2000;
const textDecoder = new TextDecoder();

export function encodeRegistryCommand(cmd: RegistryCommand): Uint8Array {
  return textEncoder.encode(JSON.stringify(cmd));
}

export function decodeRegistryCommand(data: Uint8Array): RegistryCommand {
  return JSON.parse(textDecoder.decode(data)) as RegistryCommand;
}

/** Which services a revision touched; "" stands for the catalog (the set of services and tags). */
export type ChangeListener = (revision: number, services: ReadonlySet<string>, catalogChanged: boolean) => void;

interface SnapshotShape {
  readonly version: 1;
  readonly revision: number;
  readonly catalogIndex: number;
  readonly serviceIndex: [string, number][];
  readonly instances: Instance[];
}

export class RegistryState implements StateMachine {
  private instances = new Map<string, Instance>();
  private byService = new Map<string, Set<string>>();
  private checkOwner = new Map<string, string>();
  private serviceIndexes = new Map<string, number>();
  private catalogIndexValue = 0;
  private revisionValue = 0;
  private readonly listeners: ChangeListener[] = [];
  private readonly strings = new Map<string, string>();

  onChange(listener: ChangeListener): void {
    this.listeners.push(listener);
  }

  // ---------------------------------------------------------------- apply

  apply(index: number, data: Uint8Array): void {
    const cmd = decodeRegistryCommand(data);
    const touched = new Set<string>();
    let catalogChanged = false;
    switch (cmd.op) {
      case "register":
        catalogChanged = this.register(index, cmd, touched);
        break;
      case "deregister":
        catalogChanged = this.remove(cmd.id, touched);
        break;
      case "setCheckStatus":
        this.setCheckStatus(index, cmd, touched);
        break;
    }
    this.revisionValue = index;
    for (const service of touched) this.serviceIndexes.set(service, index);
    if (catalogChanged) this.catalogIndexValue = index;
    if (touched.size > 0 || catalogChanged) for (const l of this.listeners) l(index, touched, catalogChanged);
  }

  private register(index: number, cmd: Extract<RegistryCommand, { op: "register" }>, touched: Set<string>): boolean {
    const def = cmd.instance;
    const previous = this.instances.get(def.id);
    let catalogChanged = previous === undefined || previous.service !== def.service || !sameTags(previous.tags, def.tags);
    if (previous !== undefined && previous.service !== def.service) {
      // Re-registering an id under another service name moves it.
      this.remove(def.id, touched);
      catalogChanged = true;
    }
    const oldChecks = new Map((previous?.service === def.service ? previous.checks : []).map((c) => [c.checkId, c]));
    const checks: Check[] = cmd.checks.map((c) => {
      // A check another instance owned moves to this one: the later registration wins, on every node alike.
      const owner = this.checkOwner.get(c.checkId);
      if (owner !== undefined && owner !== def.id) this.dropCheck(owner, c.checkId, touched);
      const old = oldChecks.get(c.checkId);
      // Re-registering keeps a check's current health unless the registration states one.
      const status = old !== undefined && c.status === "critical" && c.output === "" ? old.status : c.status;
      const output = old !== undefined && c.output === "" ? old.output : c.output;
      const statusSinceMs = old !== undefined && old.status === status ? old.statusSinceMs : cmd.atMs;
      return { ...c, status, output, statusSinceMs };
    });
    for (const old of oldChecks.keys()) if (!checks.some((c) => c.checkId === old)) this.checkOwner.delete(old);
    for (const c of checks) this.checkOwner.set(c.checkId, def.id);
    this.instances.set(def.id, this.compact({ ...def, checks, createIndex: previous?.service === def.service ? previous.createIndex : index, modifyIndex: index }));
    let ids = this.byService.get(def.service);
    if (ids === undefined) this.byService.set(def.service, (ids = new Set()));
    ids.add(def.id);
    touched.add(def.service);
    return catalogChanged;
  }

  /** Removes an instance and its checks. Returns whether the catalog changed. */
  private remove(id: string, touched: Set<string>): boolean {
    const inst = this.instances.get(id);
    if (inst === undefined) return false;
    this.instances.delete(id);
    for (const c of inst.checks) this.checkOwner.delete(c.checkId);
    const ids = this.byService.get(inst.service);
    ids?.delete(id);
    if (ids !== undefined && ids.size === 0) this.byService.delete(inst.service);
    touched.add(inst.service);
    return true;
  }

  private dropCheck(ownerId: string, checkId: string, touched: Set<string>): void {
    const inst = this.instances.get(ownerId);
    if (inst === undefined) return;
    this.instances.set(ownerId, { ...inst, checks: inst.checks.filter((c) => c.checkId !== checkId) });
    this.checkOwner.delete(checkId);
    touched.add(inst.service);
  }

  private setCheckStatus(index: number, cmd: Extract<RegistryCommand, { op: "setCheckStatus" }>, touched: Set<string>): void {
    const ownerId = this.checkOwner.get(cmd.checkId);
    const inst = ownerId === undefined ? undefined : this.instances.get(ownerId);
    // The instance may have been deregistered after the leader decided; then there is nothing to do.
    if (inst === undefined) return;
    const checks = inst.checks.map((c) => {
      if (c.checkId !== cmd.checkId) return c;
      return { ...c, status: cmd.status, output: cmd.output, statusSinceMs: c.status === cmd.status ? c.statusSinceMs : cmd.atMs };
    });
    this.instances.set(inst.id, { ...inst, checks, modifyIndex: index });
    touched.add(inst.service);
  }

  /**
   * Shares what 100,000 instances of a few services repeat: their service, node, zone and tag
   * strings, and empty or default meta, weights, tags and checks. Memory per instance is what
   * decides how large a registry a node can hold.
   */
  private compact(inst: Instance): Instance {
    const meta = Object.keys(inst.meta).length === 0 ? EMPTY_META : inst.meta;
    const weights = inst.weights.passing === 1 && inst.weights.warning === 1 ? DEFAULT_WEIGHTS : inst.weights;
    return {
      ...inst,
      service: this.intern(inst.service),
      node: this.intern(inst.node),
      nodeAddress: this.intern(inst.nodeAddress),
      zone: this.intern(inst.zone),
      tags: inst.tags.length === 0 ? EMPTY_LIST : inst.tags.map((t) => this.intern(t)),
      meta,
      weights,
      checks: inst.checks.length === 0 ? EMPTY_CHECKS : inst.checks,
    };
  }

  private intern(s: string): string {
    const known = this.strings.get(s);
    if (known !== undefined) return known;
    if (this.strings.size < INTERNED_STRINGS_MAX) this.strings.set(s, s);
    return s;
  }

  // ---------------------------------------------------------------- snapshots

  /**
   * Captures the state now and encodes it in slices, yielding to the event loop between them, so
   * a registry of 100,000 instances does not stall requests while it is written out. Instances
   * are never mutated in place (every change makes a new object), so the captured array stays
   * exactly the state at this revision.
   */
  snapshot(): Promise<Chunks> {
    const instances = [...this.instances.values()];
    const head = { version: 1, revision: this.revisionValue, catalogIndex: this.catalogIndexValue, serviceIndex: [...this.serviceIndexes] };
    return (async () => {
      // Each slice is encoded to bytes at once, so the whole snapshot never exists as one string,
      // and the slices stay apart until the driver's one final copy.
      const pieces: Uint8Array[] = [textEncoder.encode(`${JSON.stringify(head).slice(0, -1)},"instances":[`)];
      for (let i = 0; i < instances.length; i += SNAPSHOT_SLICE_INSTANCES) {
        if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
        const slice = instances.slice(i, i + SNAPSHOT_SLICE_INSTANCES).map((x) => JSON.stringify(x)).join(",");
        pieces.push(textEncoder.encode(i === 0 ? slice : `,${slice}`));
      }
      pieces.push(textEncoder.encode("]}"));
      return pieces;
    })();
  }

  restore(data: Uint8Array): void {
    this.instances = new Map();
    this.byService = new Map();
    this.checkOwner = new Map();
    this.serviceIndexes = new Map();
    this.catalogIndexValue = 0;
    this.revisionValue = 0;
    if (data.byteLength > 0) {
      const shape = JSON.parse(textDecoder.decode(data)) as SnapshotShape;
      if (shape.version !== 1) throw new Error(`registry snapshot version ${String(shape.version)} is not understood by this build`);
      this.revisionValue = shape.revision;
      this.catalogIndexValue = shape.catalogIndex;
      this.serviceIndexes = new Map(shape.serviceIndex);
      for (const decoded of shape.instances) {
        const inst = this.compact(decoded);
        this.instances.set(inst.id, inst);
        let ids = this.byService.get(inst.service);
        if (ids === undefined) this.byService.set(inst.service, (ids = new Set()));
        ids.add(inst.id);
        for (const c of inst.checks) this.checkOwner.set(c.checkId, inst.id);
      }
    }
    // Indexes may have moved backwards: wake every watcher so it re-reads (Consul clients then reset).
    for (const l of this.listeners) l(this.revisionValue, new Set(this.serviceIndexes.keys()), true);
  }

  // ---------------------------------------------------------------- queries

  get revision(): number {
    return this.revisionValue;
  }

  /** The last revision that changed the set of services or their tags. */
  get catalogIndex(): number {
    return this.catalogIndexValue;
  }

  /** The last revision that touched `service` (0 if none ever did). */
  serviceIndex(service: string): number {
    return this.serviceIndexes.get(service) ?? 0;
  }

  /** Service names with the union of their instances' tags, sorted by name. */
  services(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const name of [...this.byService.keys()].sort()) {
      const tags = new Set<string>();
      for (const id of this.byService.get(name) ?? []) for (const t of this.instances.get(id)?.tags ?? []) tags.add(t);
      out.set(name, [...tags]);
    }
    return out;
  }

  instancesOf(service: string): Instance[] {
    const out: Instance[] = [];
    for (const id of this.byService.get(service) ?? []) {
      const inst = this.instances.get(id);
      if (inst !== undefined) out.push(inst);
    }
    return out;
  }

  instance(id: string): Instance | undefined {
    return this.instances.get(id);
  }

  allInstances(): IterableIterator<Instance> {
    return this.instances.values();
  }

  /** Every instance that has checks, once: what the health scan walks (instances without checks cost nothing). */
  *instancesWithChecks(): Generator<Instance> {
    const seen = new Set<string>();
    for (const ownerId of this.checkOwner.values()) {
      if (seen.has(ownerId)) continue;
      seen.add(ownerId);
      const inst = this.instances.get(ownerId);
      if (inst !== undefined) yield inst;
    }
  }

  checkById(checkId: string): { instance: Instance; check: Check } | undefined {
    const ownerId = this.checkOwner.get(checkId);
    const instance = ownerId === undefined ? undefined : this.instances.get(ownerId);
    const check = instance?.checks.find((c) => c.checkId === checkId);
    return instance === undefined || check === undefined ? undefined : { instance, check };
  }

  get instanceCount(): number {
    return this.instances.size;
  }
}

function sameTags(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}
