// The cluster's state as sections, one per state machine, each under its tag (tags.ts): the
// container the Raft compaction snapshot and a backup's body share (a count, then each section's
// tag and bytes), and the strict check of a backup's sections, which decodes each one into a
// fresh machine of its kind. The server runs that check before it proposes a restore, every node
// runs it again before it applies one, and `cairn snapshot inspect` runs it offline: one decoder,
// so what inspect accepts is exactly what a restore accepts.

import { AclState } from "../acl/state.js";
import { CaState } from "../ca/state.js";
import { type Chunks, CodecError, Reader, Writer, chunksLength, concatChunks } from "../common/codec.js";
import { errorMessage } from "../common/errors.js";
import { KvStateMachine } from "../kv/kv.js";
import { IntentionsState } from "../intentions/state.js";
import { RegistryState } from "../registry/state.js";
import { STATE_TAG_ACL, STATE_TAG_CA, STATE_TAG_INTENTIONS, STATE_TAG_KV, STATE_TAG_REGISTRY } from "./tags.js";

/** What a section holds, for people: counts by what they count, and a few named facts. */
export type SectionSummary = Readonly<Record<string, number | string>>;

/** One section of a backup, checked. */
export interface BackupSection {
  readonly tag: number;
  /** kv, registry, ca, acl or intentions. */
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly summary: SectionSummary;
}

/** A backup's body did not decode: a section is missing, doubled, unknown, or malformed. */
export class BackupSectionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BackupSectionError";
  }
}

interface SectionKind {
  readonly tag: number;
  readonly name: string;
  /** Restores `data` into a fresh machine as a backup (strictly; it throws if it does not decode) and says what it holds. */
  readonly check: (data: Uint8Array) => SectionSummary;
  /**
   * For a section added after backups already existed: what a backup without it holds (an empty
   * machine's bytes), so that a backup taken by an older build still restores. Absent: required.
   */
  readonly whenAbsent?: () => Uint8Array;
}

/** The revision a section is checked at: any will do, since the fresh machine is thrown away. */
const CHECK_REVISION = 1;

/** Every section a backup of this build holds, in the order a body lists them. */
export const BACKUP_SECTIONS: readonly SectionKind[] = [
  {
    tag: STATE_TAG_KV,
    name: "kv",
    check: (data) => {
      const kv = new KvStateMachine();
      kv.restoreBackup(data, CHECK_REVISION);
      return { keys: kv.size };
    },
  },
  {
    tag: STATE_TAG_REGISTRY,
    name: "registry",
    check: (data) => {
      // The event window is this node's record, never part of a backup: one slot will do.
      const registry = new RegistryState({ eventsMax: 1 });
      registry.restoreBackup(data, CHECK_REVISION);
      let checks = 0;
      for (const inst of registry.allInstances()) checks += inst.checks.length;
      return { services: registry.services().size, instances: registry.instanceCount, checks };
    },
  },
  {
    tag: STATE_TAG_CA,
    name: "ca",
    check: (data) => {
      const ca = new CaState();
      ca.restoreBackup(data, CHECK_REVISION);
      return { roots: ca.roots.length, trustDomain: ca.trustDomain ?? "(no CA yet)", activeRoot: ca.activeRoot?.id ?? "(none)" };
    },
  },
  {
    tag: STATE_TAG_ACL,
    name: "acl",
    check: (data) => {
      const acl = new AclState();
      acl.restoreBackup(data, CHECK_REVISION);
      return { tokens: [...acl.allTokens()].length, policies: [...acl.allPolicies()].length, bootstrapped: acl.bootstrapIndex === 0 ? "no" : "yes" };
    },
  },
  {
    tag: STATE_TAG_INTENTIONS,
    name: "intentions",
    check: (data) => {
      const intentions = new IntentionsState();
      intentions.restoreBackup(data, CHECK_REVISION);
      const all = intentions.all();
      return { intentions: all.length, denies: all.filter((i) => i.action === "deny").length };
    },
    // Backups from before intentions existed hold none.
    whenAbsent: () => concatChunks(new IntentionsState().snapshot()),
  },
];

/** The name of the section under `tag`, or the tag itself for one this build does not know. */
export function sectionName(tag: number): string {
  return BACKUP_SECTIONS.find((s) => s.tag === tag)?.name ?? `#${tag}`;
}

/** Sections as one container: a count, then each tag and its length-prefixed bytes. The chunks pass through uncopied. */
export function encodeSections(sections: readonly (readonly [tag: number, chunks: Chunks])[]): Chunks {
  const count = new Writer(16);
  count.uint(sections.length);
  const out: Uint8Array[] = [count.finish()];
  for (const [tag, chunks] of sections) {
    const header = new Writer(32);
    header.uint(tag);
    header.uint(chunksLength(chunks));
    out.push(header.finish(), ...chunks);
  }
  return out;
}

/** The container's sections by tag; an empty container (a node's first snapshot) has none. Throws CodecError if malformed or a tag repeats. */
export function decodeSections(data: Uint8Array): Map<number, Uint8Array> {
  const sections = new Map<number, Uint8Array>();
  if (data.byteLength === 0) return sections;
  const r = new Reader(data);
  for (let n = r.uint(); n > 0; n--) {
    const tag = r.uint();
    if (sections.has(tag)) throw new CodecError(`section ${sectionName(tag)} appears twice`);
    sections.set(tag, r.bytes());
  }
  r.done();
  return sections;
}

/**
 * Checks a backup's body strictly: the container decodes, it holds exactly the sections in
 * BACKUP_SECTIONS (each once, no other), and each restores into a fresh machine of its kind.
 * Throws BackupSectionError naming the section and what was wrong.
 */
export function checkBackupBody(body: Uint8Array): BackupSection[] {
  let sections: Map<number, Uint8Array>;
  try {
    sections = decodeSections(body);
  } catch (err) {
    throw new BackupSectionError(`the snapshot's sections do not decode: ${errorMessage(err)}`);
  }
  for (const tag of sections.keys()) {
    if (!BACKUP_SECTIONS.some((s) => s.tag === tag)) throw new BackupSectionError(`the snapshot holds section ${sectionName(tag)}, which this build does not know: was it written by a newer cairn?`);
  }
  return BACKUP_SECTIONS.map((kind) => {
    const bytes = sections.get(kind.tag) ?? kind.whenAbsent?.();
    if (bytes === undefined) throw new BackupSectionError(`the snapshot has no ${kind.name} section; a complete one has ${BACKUP_SECTIONS.map((s) => s.name).join(", ")}`);
    try {
      return { tag: kind.tag, name: kind.name, bytes, summary: kind.check(bytes) };
    } catch (err) {
      throw new BackupSectionError(`the snapshot's ${kind.name} section does not decode: ${errorMessage(err)}`);
    }
  });
}
