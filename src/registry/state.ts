// The registry as a replicated state machine. apply() is deterministic: it reads only the command
// and the state. Anything that depends on time (a TTL lapsing, a check failing, deregister-after)
// was decided by the leader and arrives here as an explicit command stamped with its time.
//
// Revisions: every applied command has the revision of its Raft index. Each instance carries the
// revisions that created and last modified it, and each service has its own index (the last
// revision that touched it), so a blocking query on one service is not woken by writes to
// another (Consul's #1244).

import { type Chunks, CodecError, Reader, Writer } from "../common/codec.js";
import type { StateMachine } from "../raft/state_machine.js";
import { EventWindow, eventWindowDefaults } from "./events.js";
import {
  aggregateStatus, type Check, type CheckDefinition, type CheckKind, HEALTH_STATUSES, type HealthStatus, type Instance, type InstanceDefinition, type Weights,
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
/** Expected bytes of one encoded instance: sizes the snapshot encoder's scratch buffer. */
const SNAPSHOT_INSTANCE_BYTES = 48;
/** Snapshot formats: 1 is JSON (it starts with "{"), 2 the binary encoding below. */
const SNAPSHOT_FORMAT_BINARY = 2;
/** Commands and snapshots in JSON, as earlier builds wrote them, start with "{". */
const JSON_OPEN_BRACE = 0x7b;
const COMMAND_FORMAT_BINARY = 1;
/** The command encoder's scratch buffer: kept at this size, grown for a larger command only while it is encoded. */
const COMMAND_SCRATCH_BYTES = 4096;
const OP_REGISTER = 0;
const OP_DEREGISTER = 1;
const OP_SET_CHECK_STATUS = 2;
/**
 * Distinct repeated strings (service, zone, node and tag names, meta keys) a binary snapshot
 * refers back to, at most: it bounds the table both sides build. Later ones are written in full.
 */
const SNAPSHOT_TABLE_STRINGS_MAX = 65_536;
const textDecoder = new TextDecoder();

/**
 * Commands are binary (format 1): a register is ~60 bytes where its JSON took ~245, and every
 * node keeps thousands of them in its in-memory log between compactions, writes them to disk and
 * sends them to each follower. Commands logged as JSON by earlier builds still decode.
 */
export function encodeRegistryCommand(cmd: RegistryCommand): Uint8Array {
  const w = commandWriter;
  w.u8(COMMAND_FORMAT_BINARY);
  switch (cmd.op) {
    case "register":
      w.u8(OP_REGISTER);
      writeDefinition(w, cmd.instance);
      w.uint(cmd.checks.length);
      for (const c of cmd.checks) {
        writeCheckDefinition(w, c);
        w.u8(statusNumber(c.status));
        w.string(c.output);
      }
      writeNumber(w, cmd.atMs);
      break;
    case "deregister":
      w.u8(OP_DEREGISTER);
      w.string(cmd.id);
      break;
    case "setCheckStatus":
      w.u8(OP_SET_CHECK_STATUS);
      w.string(cmd.checkId);
      w.u8(statusNumber(cmd.status));
      w.string(cmd.output);
      writeNumber(w, cmd.atMs);
      break;
  }
  return w.take();
}

export function decodeRegistryCommand(data: Uint8Array): RegistryCommand {
  if (data[0] === JSON_OPEN_BRACE) return JSON.parse(textDecoder.decode(data)) as RegistryCommand;
  const r = new Reader(data);
  const format = r.u8();
  if (format !== COMMAND_FORMAT_BINARY) throw new CodecError(`registry command format ${format} is not understood by this build`);
  let cmd: RegistryCommand;
  const op = r.u8();
  if (op === OP_REGISTER) {
    const instance = readDefinition(r);
    const checks: (CheckDefinition & { status: HealthStatus; output: string })[] = [];
    for (let n = r.uint(), i = 0; i < n; i++) checks.push({ ...readCheckDefinition(r), status: readStatus(r), output: r.string() });
    cmd = { op: "register", instance, checks, atMs: readNumber(r) };
  } else if (op === OP_DEREGISTER) {
    cmd = { op: "deregister", id: r.string() };
  } else if (op === OP_SET_CHECK_STATUS) {
    cmd = { op: "setCheckStatus", checkId: r.string(), status: readStatus(r), output: r.string(), atMs: readNumber(r) };
  } else {
    throw new CodecError(`unknown registry command ${op}`);
  }
  r.done();
  return cmd;
}

/**
 * What one applied command did to one instance. `health` is a check's status or output changing;
 * `upsert` is anything else that registered or changed an instance (its new state is given).
 */
export type InstanceChange =
  | { readonly kind: "upsert" | "health"; readonly instance: Instance }
  | { readonly kind: "delete"; readonly id: string; readonly service: string };

/**
 * The instance changes one revision made, in the order they were made; or `restored`: the state
 * was replaced by a snapshot, so there are no deltas from the previous state to it.
 */
export type RegistryDelta = { readonly kind: "changes"; readonly changes: readonly InstanceChange[] } | { readonly kind: "restored" };

/**
 * Which services a revision touched, whether the catalog (the set of services and their tags)
 * changed, and the instance changes themselves.
 */
export type ChangeListener = (revision: number, services: ReadonlySet<string>, catalogChanged: boolean, delta: RegistryDelta) => void;

const RESTORED: RegistryDelta = Object.freeze({ kind: "restored" });

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
  /** This node's record of recent changes, which watches resume from; not part of the snapshot. */
  readonly events: EventWindow;

  constructor(opts: { readonly eventsMax?: number } = {}) {
    this.events = new EventWindow(opts.eventsMax ?? eventWindowDefaults.eventsMax);
  }

  onChange(listener: ChangeListener): void {
    this.listeners.push(listener);
  }

  // ---------------------------------------------------------------- apply

  apply(index: number, data: Uint8Array): void {
    const cmd = decodeRegistryCommand(data);
    const touched = new Set<string>();
    const changes: InstanceChange[] = [];
    let catalogChanged = false;
    switch (cmd.op) {
      case "register":
        catalogChanged = this.register(index, cmd, touched, changes);
        break;
      case "deregister":
        catalogChanged = this.remove(cmd.id, touched, changes);
        break;
      case "setCheckStatus":
        this.setCheckStatus(index, cmd, touched, changes);
        break;
    }
    this.revisionValue = index;
    for (const service of touched) this.serviceIndexes.set(service, index);
    if (catalogChanged) this.catalogIndexValue = index;
    if (changes.length > 0) this.events.append(index, changes);
    if (touched.size > 0 || catalogChanged) {
      const delta: RegistryDelta = { kind: "changes", changes };
      for (const l of this.listeners) l(index, touched, catalogChanged, delta);
    }
  }

  private register(index: number, cmd: Extract<RegistryCommand, { op: "register" }>, touched: Set<string>, changes: InstanceChange[]): boolean {
    const def = cmd.instance;
    const previous = this.instances.get(def.id);
    let catalogChanged = previous === undefined || previous.service !== def.service || !sameTags(previous.tags, def.tags);
    if (previous !== undefined && previous.service !== def.service) {
      // Re-registering an id under another service name moves it.
      this.remove(def.id, touched, changes);
      catalogChanged = true;
    }
    const oldChecks = new Map((previous?.service === def.service ? previous.checks : []).map((c) => [c.checkId, c]));
    const checks: Check[] = cmd.checks.map((c) => {
      // A check another instance owned moves to this one: the later registration wins, on every node alike.
      const owner = this.checkOwner.get(c.checkId);
      if (owner !== undefined && owner !== def.id) this.dropCheck(owner, c.checkId, touched, changes);
      const old = oldChecks.get(c.checkId);
      // Re-registering keeps a check's current health unless the registration states one.
      const status = old !== undefined && c.status === "critical" && c.output === "" ? old.status : c.status;
      const output = old !== undefined && c.output === "" ? old.output : c.output;
      const statusSinceMs = old !== undefined && old.status === status ? old.statusSinceMs : cmd.atMs;
      return { ...c, status, output, statusSinceMs };
    });
    for (const old of oldChecks.keys()) if (!checks.some((c) => c.checkId === old)) this.checkOwner.delete(old);
    for (const c of checks) this.checkOwner.set(c.checkId, def.id);
    const instance = this.compact(def, checks, previous?.service === def.service ? previous.createIndex : index, index);
    this.instances.set(def.id, instance);
    changes.push({ kind: "upsert", instance });
    let ids = this.byService.get(def.service);
    if (ids === undefined) this.byService.set(def.service, (ids = new Set()));
    ids.add(def.id);
    touched.add(def.service);
    return catalogChanged;
  }

  /** Removes an instance and its checks. Returns whether the catalog changed. */
  private remove(id: string, touched: Set<string>, changes: InstanceChange[]): boolean {
    const inst = this.instances.get(id);
    if (inst === undefined) return false;
    this.instances.delete(id);
    changes.push({ kind: "delete", id, service: inst.service });
    for (const c of inst.checks) this.checkOwner.delete(c.checkId);
    const ids = this.byService.get(inst.service);
    ids?.delete(id);
    if (ids !== undefined && ids.size === 0) this.byService.delete(inst.service);
    touched.add(inst.service);
    return true;
  }

  private dropCheck(ownerId: string, checkId: string, touched: Set<string>, changes: InstanceChange[]): void {
    const inst = this.instances.get(ownerId);
    if (inst === undefined) return;
    const instance = this.compact(inst, inst.checks.filter((c) => c.checkId !== checkId), inst.createIndex, inst.modifyIndex);
    this.instances.set(ownerId, instance);
    changes.push({ kind: "upsert", instance });
    this.checkOwner.delete(checkId);
    touched.add(inst.service);
  }

  private setCheckStatus(index: number, cmd: Extract<RegistryCommand, { op: "setCheckStatus" }>, touched: Set<string>, changes: InstanceChange[]): void {
    const ownerId = this.checkOwner.get(cmd.checkId);
    const inst = ownerId === undefined ? undefined : this.instances.get(ownerId);
    // The instance may have been deregistered after the leader decided; then there is nothing to do.
    if (inst === undefined) return;
    const checks = inst.checks.map((c) => {
      if (c.checkId !== cmd.checkId) return c;
      return { ...c, status: cmd.status, output: cmd.output, statusSinceMs: c.status === cmd.status ? c.statusSinceMs : cmd.atMs };
    });
    const instance = this.compact(inst, checks, inst.createIndex, index);
    this.instances.set(inst.id, instance);
    changes.push({ kind: "health", instance });
    touched.add(inst.service);
  }

  /**
   * Shares what 100,000 instances of a few services repeat: their service, node, zone and tag
   * strings, their tag lists, and empty or default meta, weights and checks. Every instance is
   * built by this one literal, so all share one hidden class with their fields inside the object
   * (a spread copy keeps some in a separate property array). Memory per instance is what decides
   * how large a registry a node can hold.
   */
  private compact(inst: InstanceDefinition, checks: readonly Check[], createIndex: number, modifyIndex: number): Instance {
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
      checks: checks.length === 0 ? EMPTY_CHECKS : checks,
      createIndex,
      modifyIndex,
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
    // One tag is the usual case, and its key needs no encoding; longer lists' keys start with "[".
    const key = tags.length === 1 && !tags[0].startsWith("[") ? tags[0] : JSON.stringify(tags);
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
      const pieces: Uint8Array[] = [head.take()];
      const w = new Writer(SNAPSHOT_SLICE_INSTANCES * SNAPSHOT_INSTANCE_BYTES);
      for (let i = 0; i < instances.length; i += SNAPSHOT_SLICE_INSTANCES) {
        if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
        const end = Math.min(instances.length, i + SNAPSHOT_SLICE_INSTANCES);
        for (let j = i; j < end; j++) writeInstance(w, table, instances[j]);
        pieces.push(w.take());
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
    this.events.restart(this.revisionValue);
    // Indexes may have moved backwards: wake every watcher so it re-reads (Consul clients then reset).
    for (const l of this.listeners) l(this.revisionValue, new Set(this.serviceIndexes.keys()), true, RESTORED);
  }

  /**
   * Replaces the state with a backup's (snapshot() bytes, from this cluster or another), as if
   * every instance in it were written at `revision`: their create and modify indexes, every
   * service's index (those the backup lacks too, so their blocking queries see them empty) and
   * the catalog's all become `revision`. A backup's indexes count another log's entries, so kept
   * as they are they could run ahead of this log, or fall behind what watchers here have seen.
   * Strict: only the binary format, every byte accounted for; a backup that does not decode
   * throws CodecError and changes nothing.
   */
  restoreBackup(data: Uint8Array, revision: number): void {
    if (data[0] !== SNAPSHOT_FORMAT_BINARY) {
      throw new CodecError(`registry section starts with format ${data[0] ?? "(none: it is empty)"}, not ${SNAPSHOT_FORMAT_BINARY}, the format backups are written in`);
    }
    const previousServices = [...this.serviceIndexes.keys()];
    const loaded = this.decodeBinary(data, revision);
    this.instances = loaded.instances;
    this.byService = loaded.byService;
    this.checkOwner = loaded.checkOwner;
    this.serviceIndexes = new Map();
    for (const service of [...previousServices, ...loaded.serviceIndexes.keys()]) this.serviceIndexes.set(service, revision);
    this.catalogIndexValue = revision;
    this.revisionValue = revision;
    this.events.restart(revision);
    for (const l of this.listeners) l(revision, new Set(this.serviceIndexes.keys()), true, RESTORED);
  }

  private restoreBinary(data: Uint8Array): void {
    const loaded = this.decodeBinary(data, undefined);
    this.instances = loaded.instances;
    this.byService = loaded.byService;
    this.checkOwner = loaded.checkOwner;
    this.serviceIndexes = loaded.serviceIndexes;
    this.catalogIndexValue = loaded.catalogIndex;
    this.revisionValue = loaded.revision;
  }

  /** Decodes a binary snapshot into new maps; `rebaseTo`, when given, replaces every instance's indexes. */
  private decodeBinary(data: Uint8Array, rebaseTo: number | undefined): LoadedRegistry {
    const r = new Reader(data);
    const format = r.u8();
    if (format !== SNAPSHOT_FORMAT_BINARY) throw new CodecError(`registry snapshot format ${format} is not understood by this build`);
    const loaded: LoadedRegistry = { revision: r.uint(), catalogIndex: r.uint(), serviceIndexes: new Map(), instances: new Map(), byService: new Map(), checkOwner: new Map() };
    const services = r.uint();
    for (let i = 0; i < services; i++) loaded.serviceIndexes.set(r.string(), r.uint());
    const count = r.uint();
    const table = new SnapshotStringReader(r, (s) => this.intern(s));
    for (let i = 0; i < count; i++) {
      const def = readDefinition(r, table);
      const createIndex = r.uint();
      const modifyIndex = r.uint();
      if (loaded.instances.has(def.id)) throw new CodecError(`registry snapshot holds instance ${def.id} twice`);
      addInstance(loaded, this.compact(def, readChecks(r), rebaseTo ?? createIndex, rebaseTo ?? modifyIndex));
    }
    r.done();
    return loaded;
  }

  /** Snapshots written before format 2, which are still on disk and in flight. */
  private restoreJson(data: Uint8Array): void {
    const shape = JSON.parse(textDecoder.decode(data)) as SnapshotShape;
    if (shape.version !== 1) throw new Error(`registry snapshot version ${String(shape.version)} is not understood by this build`);
    this.revisionValue = shape.revision;
    this.catalogIndexValue = shape.catalogIndex;
    this.serviceIndexes = new Map(shape.serviceIndex);
    const into = { instances: this.instances, byService: this.byService, checkOwner: this.checkOwner };
    for (const decoded of shape.instances) addInstance(into, this.compact(decoded, decoded.checks, decoded.createIndex, decoded.modifyIndex));
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

  /** Services with at least one instance. */
  get serviceCount(): number {
    return this.byService.size;
  }

  /** Instances by their aggregate health (the worst of their checks). Walks every instance: for a scrape, not a hot path. */
  instanceCountsByHealth(): Record<HealthStatus, number> {
    const counts: Record<HealthStatus, number> = { passing: 0, warning: 0, critical: 0 };
    for (const inst of this.instances.values()) counts[aggregateStatus(inst.checks)]++;
    return counts;
  }
}

/** The maps a snapshot fills. */
interface LoadedRegistry {
  readonly revision: number;
  readonly catalogIndex: number;
  readonly serviceIndexes: Map<string, number>;
  readonly instances: Map<string, Instance>;
  readonly byService: Map<string, Set<string>>;
  readonly checkOwner: Map<string, string>;
}

function addInstance(into: Pick<LoadedRegistry, "instances" | "byService" | "checkOwner">, inst: Instance): void {
  into.instances.set(inst.id, inst);
  let ids = into.byService.get(inst.service);
  if (ids === undefined) into.byService.set(inst.service, (ids = new Set()));
  ids.add(inst.id);
  for (const c of inst.checks) into.checkOwner.set(c.checkId, inst.id);
}

function sameTags(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}

// ---------------------------------------------------------------- the binary encodings
//
// Commands and snapshots share the encoding of an instance definition: id, service, address,
// port, a flags byte, zone, node, node address, then its tags, meta and weights where the flags
// say they differ from the defaults. In a snapshot, strings that repeat across instances go
// through the string table, and the header (format, revision, catalog index, service indexes,
// instance count) comes first.

/** Commands are encoded one at a time, synchronously, so one scratch buffer serves them all. */
const commandWriter = new Writer(COMMAND_SCRATCH_BYTES);

const INSTANCE_HAS_TAGS = 1;
const INSTANCE_HAS_META = 2;
const INSTANCE_HAS_WEIGHTS = 4;
const INSTANCE_FLAGS_ALL = 7;
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

function writeDefinition(w: Writer, def: InstanceDefinition, table?: SnapshotStringWriter): void {
  const str = (s: string): void => {
    if (table === undefined) w.string(s);
    else table.write(w, s);
  };
  const hasWeights = def.weights.passing !== 1 || def.weights.warning !== 1;
  const metaKeys = Object.keys(def.meta);
  w.string(def.id);
  str(def.service);
  w.string(def.address);
  w.uint(def.port);
  w.u8((def.tags.length > 0 ? INSTANCE_HAS_TAGS : 0) | (metaKeys.length > 0 ? INSTANCE_HAS_META : 0) | (hasWeights ? INSTANCE_HAS_WEIGHTS : 0));
  str(def.zone);
  str(def.node);
  str(def.nodeAddress);
  if (def.tags.length > 0) {
    w.uint(def.tags.length);
    for (const t of def.tags) str(t);
  }
  if (metaKeys.length > 0) {
    w.uint(metaKeys.length);
    for (const k of metaKeys) {
      str(k);
      w.string(def.meta[k]);
    }
  }
  if (hasWeights) {
    writeNumber(w, def.weights.passing);
    writeNumber(w, def.weights.warning);
  }
}

function readDefinition(r: Reader, table?: SnapshotStringReader): InstanceDefinition {
  const str = (): string => (table === undefined ? r.string() : table.read());
  const id = r.string();
  const service = str();
  const address = r.string();
  const port = r.uint();
  const flags = r.u8();
  if ((flags & ~INSTANCE_FLAGS_ALL) !== 0) throw new CodecError(`instance ${id} has unknown flags ${flags}`);
  const zone = str();
  const node = str();
  const nodeAddress = str();
  const tags: string[] = [];
  if ((flags & INSTANCE_HAS_TAGS) !== 0) for (let n = r.uint(), i = 0; i < n; i++) tags.push(str());
  let meta: Readonly<Record<string, string>> = EMPTY_META;
  if ((flags & INSTANCE_HAS_META) !== 0) {
    const entries: [string, string][] = [];
    for (let n = r.uint(), i = 0; i < n; i++) entries.push([str(), r.string()]);
    // fromEntries defines own properties, so a key such as "__proto__" stays a key, as JSON.parse left it.
    meta = Object.fromEntries(entries);
  }
  const weights = (flags & INSTANCE_HAS_WEIGHTS) === 0 ? DEFAULT_WEIGHTS : { passing: readNumber(r), warning: readNumber(r) };
  return { id, service, address, port, tags, meta, weights, zone, node, nodeAddress };
}

/** In a snapshot an instance is its definition, its revisions, then its checks. */
function writeInstance(w: Writer, table: SnapshotStringWriter, inst: Instance): void {
  writeDefinition(w, inst, table);
  w.uint(inst.createIndex);
  w.uint(inst.modifyIndex);
  w.uint(inst.checks.length);
  for (const c of inst.checks) writeCheck(w, c);
}

/** The rest of an instance after its definition and revisions: RegistryState.compact builds it. */
function readChecks(r: Reader): Check[] {
  const checks: Check[] = [];
  for (let n = r.uint(), i = 0; i < n; i++) checks.push(readCheck(r));
  return checks;
}

function writeCheckDefinition(w: Writer, c: CheckDefinition): void {
  w.string(c.checkId);
  w.string(c.name);
  const kind = CHECK_KINDS.indexOf(c.kind);
  if (kind < 0) throw new CodecError(`check ${c.checkId} has an unknown kind`);
  w.u8(kind);
  w.string(c.notes);
  writeNumber(w, c.ttlMs);
  w.string(c.target);
  writeNumber(w, c.intervalMs);
  writeNumber(w, c.timeoutMs);
  writeNumber(w, c.deregisterCriticalAfterMs);
}

function readCheckDefinition(r: Reader): CheckDefinition {
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
  return { checkId, name, kind, notes, ttlMs, target, intervalMs, timeoutMs, deregisterCriticalAfterMs };
}

function statusNumber(status: HealthStatus): number {
  const n = HEALTH_STATUSES.indexOf(status);
  if (n < 0) throw new CodecError(`unknown health status ${String(status)}`);
  return n;
}

function readStatus(r: Reader): HealthStatus {
  const status = HEALTH_STATUSES[r.u8()];
  if (status === undefined) throw new CodecError("unknown health status");
  return status;
}

function writeCheck(w: Writer, c: Check): void {
  writeCheckDefinition(w, c);
  w.u8(statusNumber(c.status));
  w.string(c.output);
  writeNumber(w, c.statusSinceMs);
}

function readCheck(r: Reader): Check {
  return { ...readCheckDefinition(r), status: readStatus(r), output: r.string(), statusSinceMs: readNumber(r) };
}
