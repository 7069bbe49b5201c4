// The registry as a replicated state machine. apply() is deterministic: it reads only the command
// and the state. Anything that depends on time (a TTL lapsing, a check failing, deregister-after)
// was decided by the leader and arrives here as an explicit command stamped with its time.
//
// Revisions: every applied command has the revision of its Raft index. Each instance carries the
// revisions that created and last modified it, and each service has its own index (the last
// revision that touched it), so a blocking query on one service is not woken by writes to
// another (Consul's #1244).

import { type Chunks, CodecError, Reader, Writer } from "../raft/codec.js";
import type { StateMachine } from "../raft/driver.js";
import {
  type Check, type CheckDefinition, type CheckKind, HEALTH_STATUSES, type HealthStatus, type Instance, type InstanceDefinition, type Weights,
} from "./model.js";

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
/** Distinct tag lists shared between instances, at most; beyond it a list is kept per instance. */
const INTERNED_TAG_LISTS_MAX = 10_000;
const EMPTY_META: Readonly<Record<string, string>> = Object.freeze({});
const DEFAULT_WEIGHTS: Weights = Object.freeze({ passing: 1, warning: 1 });
const EMPTY_LIST: readonly string[] = Object.freeze([]);
const EMPTY_CHECKS: readonly Check[] = Object.freeze([]);
/** Instances encoded between two yields to the event loop while a snapshot is written. */
const SNAPSHOT_SLICE_INSTANCES = 2000;
/** Expected bytes of one encoded instance: sizes each slice's first buffer. */
const SNAPSHOT_INSTANCE_BYTES = 48;
/** Snapshot formats: 1 is JSON (it starts with "{"), 2 the binary encoding below. */
const SNAPSHOT_FORMAT_BINARY = 2;
const JSON_OPEN_BRACE = 0x7b;
/**
 * Distinct repeated strings (service, zone, node and tag names, meta keys) a binary snapshot
 * refers back to, at most: it bounds the table both sides build. Later ones are written in full.
 */
const SNAPSHOT_TABLE_STRINGS_MAX = 65_536;
const textDecoder = new TextDecoder();

export function encodeRegistryCommand(cmd: RegistryCommand): Uint8Array {
  return textEncoder.encode(JSON.stringify(cmd));
}

export function decodeRegistryCommand(data: Uint8Array): RegistryCommand {
  return JSON.parse(textDecoder.decode(data)) as RegistryCommand;
}

/** Which services a revision touched; "" stands for the catalog (the set of services and tags). */
export type ChangeListener = (revision: number, services: ReadonlySet<string>, catalogChanged: boolean) => void;

/** Format 1: the JSON snapshots written before the binary format, still restored. */
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
  private readonly tagLists = new Map<string, readonly string[]>();

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
    this.instances.set(ownerId, this.compact({ ...inst, checks: inst.checks.filter((c) => c.checkId !== checkId) }));
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
    this.instances.set(inst.id, this.compact({ ...inst, checks, modifyIndex: index }));
    touched.add(inst.service);
  }

  /**
   * Shares what 100,000 instances of a few services repeat: their service, node, zone and tag
   * strings, their tag lists, and empty or default meta, weights and checks. Every instance is
   * built by this one literal, so all share one hidden class with their fields inside the object
   * (a spread copy keeps some in a separate property array). Memory per instance is what decides
   * how large a registry a node can hold.
   */
  private compact(inst: Instance): Instance {
    const meta = Object.keys(inst.meta).length === 0 ? EMPTY_META : inst.meta;
    const weights = inst.weights.passing === 1 && inst.weights.warning === 1 ? DEFAULT_WEIGHTS : inst.weights;
    return {
      id: inst.id,
      service: this.intern(inst.service),
      address: inst.address,
      port: inst.port,
      tags: this.internTags(inst.tags),
      meta,
      weights,
      zone: this.intern(inst.zone),
      node: this.intern(inst.node),
      nodeAddress: this.intern(inst.nodeAddress),
      checks: inst.checks.length === 0 ? EMPTY_CHECKS : inst.checks,
      createIndex: inst.createIndex,
      modifyIndex: inst.modifyIndex,
    };
  }

  private intern(s: string): string {
    const known = this.strings.get(s);
    if (known !== undefined) return known;
    if (this.strings.size < INTERNED_STRINGS_MAX) this.strings.set(s, s);
    return s;
  }

  /** One frozen array per distinct tag list: instances never change their lists in place. */
  private internTags(tags: readonly string[]): readonly string[] {
    if (tags.length === 0) return EMPTY_LIST;
    const key = JSON.stringify(tags);
    const known = this.tagLists.get(key);
    if (known !== undefined) return known;
    const shared = Object.freeze(tags.map((t) => this.intern(t)));
    if (this.tagLists.size < INTERNED_TAG_LISTS_MAX) this.tagLists.set(key, shared);
    return shared;
  }

  // ---------------------------------------------------------------- snapshots

  /**
   * Captures the state now and encodes it in slices, yielding to the event loop between them, so
   * a registry of 100,000 instances does not stall requests while it is written out. Instances
   * are never mutated in place (every change makes a new object), so the captured array stays
   * exactly the state at this revision.
   *
   * The encoding is binary (format 2): about a sixth of the JSON it replaces, so compaction
   * allocates, writes and sends that much less. Strings that instances repeat are written once
   * and referred to by number after that.
   */
  snapshot(): Promise<Chunks> {
    const instances = [...this.instances.values()];
    const head = new Writer(64 + 16 * this.serviceIndexes.size);
    head.u8(SNAPSHOT_FORMAT_BINARY);
    head.uint(this.revisionValue);
    head.uint(this.catalogIndexValue);
    head.uint(this.serviceIndexes.size);
    for (const [service, index] of this.serviceIndexes) {
      head.string(service);
      head.uint(index);
    }
    head.uint(instances.length);
    return (async () => {
      const table = new SnapshotStringWriter();
      const pieces: Uint8Array[] = [head.finish()];
      for (let i = 0; i < instances.length; i += SNAPSHOT_SLICE_INSTANCES) {
        if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
        const end = Math.min(instances.length, i + SNAPSHOT_SLICE_INSTANCES);
        const w = new Writer((end - i) * SNAPSHOT_INSTANCE_BYTES);
        for (let j = i; j < end; j++) writeInstance(w, table, instances[j]);
        pieces.push(w.finish());
      }
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
    if (data.byteLength > 0 && data[0] === JSON_OPEN_BRACE) this.restoreJson(data);
    else if (data.byteLength > 0) this.restoreBinary(data);
    // Indexes may have moved backwards: wake every watcher so it re-reads (Consul clients then reset).
    for (const l of this.listeners) l(this.revisionValue, new Set(this.serviceIndexes.keys()), true);
  }

  private restoreBinary(data: Uint8Array): void {
    const r = new Reader(data);
    const format = r.u8();
    if (format !== SNAPSHOT_FORMAT_BINARY) throw new Error(`registry snapshot format ${format} is not understood by this build`);
    this.revisionValue = r.uint();
    this.catalogIndexValue = r.uint();
    const services = r.uint();
    for (let i = 0; i < services; i++) this.serviceIndexes.set(r.string(), r.uint());
    const count = r.uint();
    const table = new SnapshotStringReader(r, (s) => this.intern(s));
    for (let i = 0; i < count; i++) this.restoreInstance(this.compact(readInstance(r, table)));
    r.done();
  }

  /** Snapshots written before format 2, which are still on disk and in flight. */
  private restoreJson(data: Uint8Array): void {
    const shape = JSON.parse(textDecoder.decode(data)) as SnapshotShape;
    if (shape.version !== 1) throw new Error(`registry snapshot version ${String(shape.version)} is not understood by this build`);
    this.revisionValue = shape.revision;
    this.catalogIndexValue = shape.catalogIndex;
    this.serviceIndexes = new Map(shape.serviceIndex);
    for (const decoded of shape.instances) this.restoreInstance(this.compact(decoded));
  }

  private restoreInstance(inst: Instance): void {
    this.instances.set(inst.id, inst);
    let ids = this.byService.get(inst.service);
    if (ids === undefined) this.byService.set(inst.service, (ids = new Set()));
    ids.add(inst.id);
    for (const c of inst.checks) this.checkOwner.set(c.checkId, inst.id);
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

// ---------------------------------------------------------------- the binary snapshot format
//
// After the header (format, revision, catalog index, service indexes, instance count), each
// instance is: id, service, address, port, create and modify revisions, a flags byte, zone, node,
// node address, then its tags, meta, weights and checks where the flags say they differ from the
// defaults. Strings that repeat across instances go through the string table.

const INSTANCE_HAS_TAGS = 1;
const INSTANCE_HAS_META = 2;
const INSTANCE_HAS_WEIGHTS = 4;
const INSTANCE_HAS_CHECKS = 8;
const INSTANCE_FLAGS_ALL = 15;
const CHECK_KINDS: readonly CheckKind[] = ["ttl", "http", "tcp", "grpc"];

/** The writing side of the string table: a repeated string after its first time is its number. */
class SnapshotStringWriter {
  private readonly numbers = new Map<string, number>();

  write(w: Writer, s: string): void {
    const known = this.numbers.get(s);
    if (known !== undefined) {
      w.uint(known + 1);
      return;
    }
    w.uint(0);
    w.string(s);
    if (this.numbers.size < SNAPSHOT_TABLE_STRINGS_MAX) this.numbers.set(s, this.numbers.size);
  }
}

/** The reading side: builds the same table in the same order, so each string is decoded once. */
class SnapshotStringReader {
  private readonly strings: string[] = [];

  constructor(private readonly r: Reader, private readonly share: (s: string) => string) {}

  read(): string {
    const n = this.r.uint();
    if (n === 0) {
      const s = this.share(this.r.string());
      if (this.strings.length < SNAPSHOT_TABLE_STRINGS_MAX) this.strings.push(s);
      return s;
    }
    const s = this.strings[n - 1];
    if (s === undefined) throw new CodecError(`string ${n} is referred to before it was written (the table holds ${this.strings.length})`);
    return s;
  }
}

/** Durations and clock times are usually whole milliseconds; anything else is kept exactly as text. */
function writeNumber(w: Writer, v: number): void {
  if (Number.isSafeInteger(v) && v >= 0) {
    w.u8(0);
    w.uint(v);
  } else {
    w.u8(1);
    w.string(String(v));
  }
}

function readNumber(r: Reader): number {
  const kind = r.u8();
  if (kind === 0) return r.uint();
  if (kind !== 1) throw new CodecError(`unknown number kind ${kind}`);
  const text = r.string();
  const v = Number(text);
  if (text === "" || Number.isNaN(v)) throw new CodecError(`"${text.slice(0, 32)}" is not a number`);
  return v;
}

function writeInstance(w: Writer, table: SnapshotStringWriter, inst: Instance): void {
  const hasWeights = inst.weights.passing !== 1 || inst.weights.warning !== 1;
  const metaKeys = Object.keys(inst.meta);
  w.string(inst.id);
  table.write(w, inst.service);
  w.string(inst.address);
  w.uint(inst.port);
  w.uint(inst.createIndex);
  w.uint(inst.modifyIndex);
  w.u8((inst.tags.length > 0 ? INSTANCE_HAS_TAGS : 0) | (metaKeys.length > 0 ? INSTANCE_HAS_META : 0) |
    (hasWeights ? INSTANCE_HAS_WEIGHTS : 0) | (inst.checks.length > 0 ? INSTANCE_HAS_CHECKS : 0));
  table.write(w, inst.zone);
  table.write(w, inst.node);
  table.write(w, inst.nodeAddress);
  if (inst.tags.length > 0) {
    w.uint(inst.tags.length);
    for (const t of inst.tags) table.write(w, t);
  }
  if (metaKeys.length > 0) {
    w.uint(metaKeys.length);
    for (const k of metaKeys) {
      table.write(w, k);
      w.string(inst.meta[k]);
    }
  }
  if (hasWeights) {
    writeNumber(w, inst.weights.passing);
    writeNumber(w, inst.weights.warning);
  }
  if (inst.checks.length > 0) {
    w.uint(inst.checks.length);
    for (const c of inst.checks) writeCheck(w, c);
  }
}

function readInstance(r: Reader, table: SnapshotStringReader): Instance {
  const id = r.string();
  const service = table.read();
  const address = r.string();
  const port = r.uint();
  const createIndex = r.uint();
  const modifyIndex = r.uint();
  const flags = r.u8();
  if ((flags & ~INSTANCE_FLAGS_ALL) !== 0) throw new CodecError(`instance ${id} has unknown flags ${flags}`);
  const zone = table.read();
  const node = table.read();
  const nodeAddress = table.read();
  const tags: string[] = [];
  if ((flags & INSTANCE_HAS_TAGS) !== 0) for (let n = r.uint(), i = 0; i < n; i++) tags.push(table.read());
  let meta: Readonly<Record<string, string>> = EMPTY_META;
  if ((flags & INSTANCE_HAS_META) !== 0) {
    const entries: [string, string][] = [];
    for (let n = r.uint(), i = 0; i < n; i++) entries.push([table.read(), r.string()]);
    // fromEntries defines own properties, so a key such as "__proto__" stays a key, as JSON.parse left it.
    meta = Object.fromEntries(entries);
  }
  const weights = (flags & INSTANCE_HAS_WEIGHTS) === 0 ? DEFAULT_WEIGHTS : { passing: readNumber(r), warning: readNumber(r) };
  const checks: Check[] = [];
  if ((flags & INSTANCE_HAS_CHECKS) !== 0) for (let n = r.uint(), i = 0; i < n; i++) checks.push(readCheck(r));
  return { id, service, address, port, tags, meta, weights, zone, node, nodeAddress, checks, createIndex, modifyIndex };
}

function writeCheck(w: Writer, c: Check): void {
  w.string(c.checkId);
  w.string(c.name);
  w.u8(CHECK_KINDS.indexOf(c.kind));
  w.string(c.notes);
  writeNumber(w, c.ttlMs);
  w.string(c.target);
  writeNumber(w, c.intervalMs);
  writeNumber(w, c.timeoutMs);
  writeNumber(w, c.deregisterCriticalAfterMs);
  w.u8(HEALTH_STATUSES.indexOf(c.status));
  w.string(c.output);
  writeNumber(w, c.statusSinceMs);
}

function readCheck(r: Reader): Check {
  const checkId = r.string();
  const name = r.string();
  const kind = CHECK_KINDS[r.u8()];
  if (kind === undefined) throw new CodecError(`check ${checkId} has an unknown kind`);
  const notes = r.string();
  const ttlMs = readNumber(r);
  const target = r.string();
  const intervalMs = readNumber(r);
  const timeoutMs = readNumber(r);
  const deregisterCriticalAfterMs = readNumber(r);
  const status = HEALTH_STATUSES[r.u8()];
  if (status === undefined) throw new CodecError(`check ${checkId} has an unknown status`);
  const output = r.string();
  const statusSinceMs = readNumber(r);
  return { checkId, name, kind, notes, ttlMs, target, intervalMs, timeoutMs, deregisterCriticalAfterMs, status, output, statusSinceMs };
}
