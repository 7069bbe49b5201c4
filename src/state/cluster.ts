// The state machine the driver applies: it routes each command to the registry, the CA, the ACLs,
// the intentions or the key/value store by its tag, and snapshots them together. It also takes backups of them
// (the body of a `cairn snapshot` file) and restores one through the log (restore.ts).

import type { Chunks } from "../common/codec.js";
import { errorMessage } from "../common/errors.js";
import type { StateMachine } from "../raft/state_machine.js";
import { type RestoreVerdict, RestoreStaging, type StagedProgress } from "./restore.js";
import { type BackupSection, checkBackupBody, decodeSections, encodeSections } from "./sections.js";
import { STATE_TAG_ACL, STATE_TAG_CA, STATE_TAG_INTENTIONS, STATE_TAG_KV, STATE_TAG_REGISTRY, STATE_TAG_RESTORE } from "./tags.js";

/** A state machine whose state a backup can replace. */
export interface BackupPart extends StateMachine {
  /**
   * Replaces the state with `data` (the machine's own snapshot() bytes, from any cluster), as if
   * every record in it were written at `revision`, and tells the machine's listeners. Strict:
   * throws, changing nothing, if `data` does not decode.
   */
  restoreBackup(data: Uint8Array, revision: number): void;
}

export class ClusterStateMachine implements StateMachine {
  private readonly machines: ReadonlyMap<number, BackupPart>;
  private readonly staging = new RestoreStaging((body, index) => this.applyBackup(body, index));

  constructor(parts: { readonly kv: BackupPart; readonly registry: BackupPart; readonly ca: BackupPart; readonly acl?: BackupPart; readonly intentions?: BackupPart }) {
    this.machines = new Map([[STATE_TAG_KV, parts.kv], [STATE_TAG_REGISTRY, parts.registry], [STATE_TAG_CA, parts.ca],
      ...(parts.acl === undefined ? [] : [[STATE_TAG_ACL, parts.acl] as const]),
      ...(parts.intentions === undefined ? [] : [[STATE_TAG_INTENTIONS, parts.intentions] as const])]);
  }

  apply(index: number, data: Uint8Array): void {
    const tag = data[0] ?? 0;
    if (tag === STATE_TAG_RESTORE) {
      this.staging.apply(index, data.subarray(1));
      return;
    }
    const machine = this.machines.get(tag);
    // An unknown tag is a bug or a newer build's command; applying nothing would diverge silently.
    if (machine === undefined) throw new Error(`entry ${index} names unknown state machine ${data[0] ?? "(empty)"}`);
    machine.apply(index, data.subarray(1));
  }

  /** For Raft compaction: every machine, and the restore being staged if there is one. */
  snapshot(): Promise<Chunks> {
    const staged = this.staging.snapshot();
    return this.capture(staged === undefined ? [] : [[STATE_TAG_RESTORE, staged]]);
  }

  /**
   * A backup: every machine's state at the last apply, captured before this returns, in the
   * sections a `cairn snapshot` file's body holds. Unlike snapshot(), never a staged restore.
   */
  backup(): Promise<Chunks> {
    return this.capture([]);
  }

  restore(data: Uint8Array): void {
    const parts = decodeSections(data);
    for (const [tag, m] of this.machines) m.restore(parts.get(tag) ?? new Uint8Array(0));
    this.staging.restore(parts.get(STATE_TAG_RESTORE) ?? new Uint8Array(0));
  }

  /** This node's verdict on a restore whose commit it applied. */
  restoreVerdict(restoreId: string): RestoreVerdict | undefined {
    return this.staging.verdict(restoreId);
  }

  /** The restore being staged, if any. */
  get stagedRestore(): StagedProgress | undefined {
    return this.staging.progress;
  }

  private capture(extra: readonly (readonly [number, Chunks])[]): Promise<Chunks> {
    // Capture every machine now, in one go, so they all describe the same revision.
    const parts = [...this.machines].map(([tag, m]) => [tag, m.snapshot()] as const);
    return (async () => {
      const settled: (readonly [number, Chunks])[] = [];
      for (const [tag, pending] of parts) settled.push([tag, await pending]);
      return encodeSections([...settled, ...extra]);
    })();
  }

  /**
   * A staged restore's body, complete and matching its checksum, replaces every machine's state
   * at `index`. It is checked again here, section by section, into fresh machines first, so a
   * body that does not decode (which the proposer's own check should have stopped) is refused
   * alike on every node, and changes nothing.
   */
  private applyBackup(body: Uint8Array, index: number): string | undefined {
    let sections: BackupSection[];
    try {
      sections = checkBackupBody(body);
    } catch (err) {
      return errorMessage(err);
    }
    // checkBackupBody insists on every section this build has, so only a node built without one of them can lack its machine.
    const unknown = sections.filter((s) => !this.machines.has(s.tag));
    if (unknown.length > 0) return `this node has no state machine for the snapshot's ${unknown.map((s) => s.name).join(", ")} section`;
    // Each section restored into a fresh machine above, so none can fail here: one that did would be a bug.
    for (const s of sections) this.machines.get(s.tag)?.restoreBackup(s.bytes, index);
    return undefined;
  }
}
