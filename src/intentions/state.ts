// Intentions as a replicated state machine: which source service may call which destination.
//
// One intention per (source, destination) pair; an upsert of a pair that exists replaces its
// action and description and keeps its ID and CreateIndex, as Consul's exact API does. Commands
// are decided by the proposer (the ID is made there), so apply() is deterministic.
//
// Every change has a revision (the Raft index of its entry) and names the destinations and
// sources it touched, so a watcher of one destination is not woken by another's changes. Each
// name's index, for blocking queries, is the revision of the last change that touched it:
//   0 <= nameIndex(name) <= revision, and it never goes back (see NameIndexes).

import { type Chunks, CodecError, Reader, Writer } from "../common/codec.js";
import { isServiceName } from "../common/service_name.js";
import type { StateMachine } from "../raft/state_machine.js";
import { type IntentionAction, type IntentionRule, WILDCARD, compareIntentions } from "./precedence.js";

export const OP_UPSERT = 1;
export const OP_DELETE = 2;
const SNAPSHOT_VERSION = 1;
const ACTION_ALLOW = 1;
const ACTION_DENY = 2;

/** A description longer than this is refused by the proposer, and by the decoder. */
export const DESCRIPTION_CHARS_MAX = 1024;
const ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface Intention extends IntentionRule {
  /** A UUID, made by the proposer when the pair is first written; kept when it is replaced. */
  readonly id: string;
  readonly description: string;
  readonly createIndex: number;
  readonly modifyIndex: number;
}

export type NewIntention = Omit<Intention, "createIndex" | "modifyIndex">;

export type IntentionCommand =
  | { readonly op: typeof OP_UPSERT; readonly intention: NewIntention }
  | { readonly op: typeof OP_DELETE; readonly source: string; readonly destination: string };

/** What changed at a revision: the names touched, or everything (a snapshot or backup replaced the state). */
export type IntentionChange =
  | { readonly kind: "names"; readonly destinations: ReadonlySet<string>; readonly sources: ReadonlySet<string> }
  | { readonly kind: "restored" };

export type IntentionListener = (revision: number, change: IntentionChange) => void;

/** A name as an intention may hold it: a service name or `*`. */
export function isIntentionName(name: string): boolean {
  return name === WILDCARD || isServiceName(name);
}

function readName(r: Reader, what: string): string {
  const name = r.string();
  if (!isIntentionName(name)) throw new CodecError(`intention ${what} ${JSON.stringify(name.slice(0, 80))} is not a service name or *`);
  return name;
}

function writeIntention(w: Writer, i: NewIntention): void {
  w.string(i.id);
  w.string(i.source);
  w.string(i.destination);
  w.u8(i.action === "allow" ? ACTION_ALLOW : ACTION_DENY);
  w.string(i.description);
}

function readIntention(r: Reader): NewIntention {
  const id = r.string();
  if (!ID_PATTERN.test(id)) throw new CodecError(`intention ID ${JSON.stringify(id.slice(0, 80))} is not a lowercase UUID`);
  const source = readName(r, "source");
  const destination = readName(r, "destination");
  const tag = r.u8();
  let action: IntentionAction;
  if (tag === ACTION_ALLOW) action = "allow";
  else if (tag === ACTION_DENY) action = "deny";
  else throw new CodecError(`intention ${id}: unknown action ${tag}`);
  const description = r.string();
  if (description.length > DESCRIPTION_CHARS_MAX) throw new CodecError(`intention ${id}: description longer than ${DESCRIPTION_CHARS_MAX} characters`);
  return { id, source, destination, action, description };
}

export function encodeIntentionCommand(cmd: IntentionCommand): Uint8Array {
  const w = new Writer(128);
  w.u8(cmd.op);
  switch (cmd.op) {
    case OP_UPSERT:
      writeIntention(w, cmd.intention);
      break;
    case OP_DELETE:
      w.string(cmd.source);
      w.string(cmd.destination);
      break;
  }
  return w.finish();
}

/** Strict: an unknown op, a malformed field or trailing bytes raise CodecError. */
export function decodeIntentionCommand(data: Uint8Array): IntentionCommand {
  const r = new Reader(data);
  const op = r.u8();
  let cmd: IntentionCommand;
  switch (op) {
    case OP_UPSERT:
      cmd = { op, intention: readIntention(r) };
      break;
    case OP_DELETE:
      cmd = { op, source: readName(r, "source"), destination: readName(r, "destination") };
      break;
    default:
      throw new CodecError(`unknown intention command op ${op}`);
  }
  r.done();
  return cmd;
}

/**
 * Per name, the revision of the last change that touched it. A name no intention holds any more
 * is forgotten (so the map is bounded by the intentions that exist), and answers `floor`: the
 * latest revision at which any name was forgotten. A name's index therefore never goes back: it
 * was below the floor when it was forgotten, and is above it when it comes back.
 */
class NameIndexes {
  private readonly byName = new Map<string, number>();
  private floor = 0;

  of(name: string): number {
    return this.byName.get(name) ?? this.floor;
  }

  touch(name: string, revision: number, stillHeld: boolean): void {
    if (stillHeld) {
      this.byName.set(name, revision);
    } else {
      this.byName.delete(name);
      this.floor = revision;
    }
  }

  reset(revision: number, held: Iterable<string>): void {
    this.byName.clear();
    this.floor = revision;
    for (const name of held) this.byName.set(name, revision);
  }
}

export class IntentionsState implements StateMachine {
  /** destination -> source -> intention. */
  private byDestination = new Map<string, Map<string, Intention>>();
  /** source -> the destinations it has intentions for. */
  private bySource = new Map<string, Set<string>>();
  private countValue = 0;
  private revisionValue = 0;
  private readonly destinationIndexes = new NameIndexes();
  private readonly sourceIndexes = new NameIndexes();
  private readonly listeners: IntentionListener[] = [];

  /** Called after every apply or restore that changed an intention, with what it touched. */
  onChange(listener: IntentionListener): void {
    this.listeners.push(listener);
  }

  /** The index of the last change; 0 before any. */
  get revision(): number {
    return this.revisionValue;
  }

  get count(): number {
    return this.countValue;
  }

  get(source: string, destination: string): Intention | undefined {
    return this.byDestination.get(destination)?.get(source);
  }

  /** Every intention, in evaluation order. */
  all(): Intention[] {
    const out: Intention[] = [];
    for (const sources of this.byDestination.values()) out.push(...sources.values());
    return out.sort(compareIntentions);
  }

  /** The intentions naming `destination` exactly (not `*`), in any order. */
  withDestination(destination: string): Iterable<Intention> {
    return this.byDestination.get(destination)?.values() ?? [];
  }

  /** The intentions naming `source` exactly (not `*`), in any order. */
  withSource(source: string): Intention[] {
    const out: Intention[] = [];
    for (const destination of this.bySource.get(source) ?? []) {
      const i = this.get(source, destination);
      if (i !== undefined) out.push(i);
    }
    return out;
  }

  /** The revision of the last change to an intention naming `destination` exactly. */
  destinationIndex(destination: string): number {
    return this.destinationIndexes.of(destination);
  }

  /** The revision of the last change to an intention naming `source` exactly. */
  sourceIndex(source: string): number {
    return this.sourceIndexes.of(source);
  }

  apply(index: number, data: Uint8Array): void {
    const cmd = decodeIntentionCommand(data);
    const touched = this.applyCommand(index, cmd);
    if (touched === undefined) return;
    this.destinationIndexes.touch(touched.destination, index, this.byDestination.has(touched.destination));
    this.sourceIndexes.touch(touched.source, index, this.bySource.has(touched.source));
    this.changed(index, { kind: "names", destinations: new Set([touched.destination]), sources: new Set([touched.source]) });
  }

  /** The pair it changed, or undefined when nothing changed (a delete of a pair that does not exist). */
  private applyCommand(index: number, cmd: IntentionCommand): { source: string; destination: string } | undefined {
    switch (cmd.op) {
      case OP_UPSERT: {
        const { source, destination } = cmd.intention;
        const existing = this.get(source, destination);
        // A replace keeps the pair's identity: Consul's exact API updates the intention in place.
        this.put({ ...cmd.intention, id: existing?.id ?? cmd.intention.id, createIndex: existing?.createIndex ?? index, modifyIndex: index });
        return { source, destination };
      }
      case OP_DELETE: {
        const sources = this.byDestination.get(cmd.destination);
        if (sources?.get(cmd.source) === undefined) return undefined;
        sources.delete(cmd.source);
        if (sources.size === 0) this.byDestination.delete(cmd.destination);
        const destinations = this.bySource.get(cmd.source);
        destinations?.delete(cmd.destination);
        if (destinations?.size === 0) this.bySource.delete(cmd.source);
        this.countValue--;
        return { source: cmd.source, destination: cmd.destination };
      }
    }
  }

  private put(i: Intention): void {
    let sources = this.byDestination.get(i.destination);
    if (sources === undefined) this.byDestination.set(i.destination, (sources = new Map<string, Intention>()));
    if (!sources.has(i.source)) this.countValue++;
    sources.set(i.source, i);
    let destinations = this.bySource.get(i.source);
    if (destinations === undefined) this.bySource.set(i.source, (destinations = new Set()));
    destinations.add(i.destination);
  }

  snapshot(): Chunks {
    const w = new Writer(64 + this.countValue * 96);
    w.u8(SNAPSHOT_VERSION);
    w.uint(this.revisionValue);
    w.uint(this.countValue);
    for (const sources of this.byDestination.values()) {
      for (const i of sources.values()) {
        writeIntention(w, i);
        w.uint(i.createIndex);
        w.uint(i.modifyIndex);
      }
    }
    return [w.finish()];
  }

  restore(data: Uint8Array): void {
    if (data.byteLength === 0) {
      this.replace([], 0);
      return;
    }
    const { revision, intentions } = decodeSnapshot(data, "intentions snapshot");
    this.replace(intentions, revision);
  }

  /**
   * Replaces the state with a backup's (snapshot() bytes, from this cluster or another), as if
   * every intention in it were written at `revision`, which becomes the state's revision. IDs are
   * kept, so a restored intention is the one that was saved. Strict: a backup that does not
   * decode, or holds a pair twice, throws CodecError and changes nothing.
   */
  restoreBackup(data: Uint8Array, revision: number): void {
    const { intentions } = decodeSnapshot(data, "intentions section");
    this.replace(intentions.map((i) => ({ ...i, createIndex: revision, modifyIndex: revision })), revision);
  }

  private replace(intentions: readonly Intention[], revision: number): void {
    this.byDestination = new Map();
    this.bySource = new Map();
    this.countValue = 0;
    for (const i of intentions) this.put(i);
    this.destinationIndexes.reset(revision, this.byDestination.keys());
    this.sourceIndexes.reset(revision, this.bySource.keys());
    this.changed(revision, { kind: "restored" });
  }

  private changed(revision: number, change: IntentionChange): void {
    this.revisionValue = revision;
    for (const l of this.listeners) l(revision, change);
  }
}

function decodeSnapshot(data: Uint8Array, what: string): { revision: number; intentions: Intention[] } {
  const r = new Reader(data);
  const version = r.u8();
  if (version !== SNAPSHOT_VERSION) throw new CodecError(`${what} version ${version} is not one this build understands (${SNAPSHOT_VERSION})`);
  const revision = r.uint();
  const intentions: Intention[] = [];
  const pairs = new Set<string>();
  for (let n = r.uint(); n > 0; n--) {
    const i = readIntention(r);
    const createIndex = r.uint();
    const modifyIndex = r.uint();
    // A newline is in no intention name, so it separates the pair unambiguously.
    const pair = `${i.source}\n${i.destination}`;
    if (pairs.has(pair)) throw new CodecError(`${what} holds the intention ${i.source} -> ${i.destination} twice`);
    pairs.add(pair);
    intentions.push({ ...i, createIndex, modifyIndex });
  }
  r.done();
  return { revision, intentions };
}
