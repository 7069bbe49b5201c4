// Backups of a running cluster: saving a consistent, point-in-time snapshot from any node, and
// restoring one through Raft (restore.ts) so that every node takes it.
//
// Save: a linearizable read barrier (ReadIndex), then every state machine captured at once at
// the index this node has applied, which the file's header names with its term. A follower may
// serve it: past the barrier its state holds every write acknowledged before the request.
//
// Restore: the whole file is checked first (magic, version, checksums, every section decoded
// into fresh machines), then the cluster id and whether this node could use the CA's keys, and
// only then is anything proposed, so a bad file changes nothing. The body is proposed in chunks
// and committed; each node checks the staged body again and replaces its state at the commit's
// index. Membership is Raft configuration, not state: a restore does not change the members.

import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { CaRoot } from "../ca/state.js";
import { decodeCaSnapshot } from "../ca/state.js";
import type { Chunks } from "../common/codec.js";
import { errorMessage } from "../common/errors.js";
import type { RaftDriver } from "../raft/node/driver.js";
import { NotAvailableError } from "../raft/node/errors.js";
import type { ClusterStateMachine } from "./cluster.js";
import {
  OP_RESTORE_ABORT, OP_RESTORE_BEGIN, OP_RESTORE_CHUNK, OP_RESTORE_COMMIT, RESTORE_CHUNK_BYTES, type RestoreCommand, SNAPSHOT_RESTORE_BYTES_MAX,
  encodeRestoreCommand, sha256,
} from "./restore.js";
import type { BackupSection } from "./sections.js";
import { type SnapshotHeader, checkSnapshotFile, encodeSnapshotFile } from "./snapshot_file.js";
import { STATE_TAG_RESTORE, withTag } from "./tags.js";

/** A chunk or commit whose outcome is unknown (its leader went away) is looked up and sent again this many times at most. */
const RESTORE_SEND_FAILURES_MAX = 3;

export type SnapshotConflict = "otherCluster" | "unusableKeys" | "busy" | "superseded" | "refused";

/** The file is sound but this cluster will not take it now; the message says why and what to do (HTTP 409). */
export class SnapshotConflictError extends Error {
  constructor(readonly conflict: SnapshotConflict, message: string) {
    super(message);
    this.name = "SnapshotConflictError";
  }
}

/** The snapshot's body is larger than a restore takes (HTTP 413). */
export class SnapshotTooLargeError extends Error {
  constructor(bodyBytes: number) {
    super(`the snapshot's body has ${bodyBytes} bytes, more than a restore takes (${SNAPSHOT_RESTORE_BYTES_MAX}, SNAPSHOT_RESTORE_BYTES_MAX)`);
    this.name = "SnapshotTooLargeError";
  }
}

export interface SavedSnapshot {
  readonly header: SnapshotHeader;
  readonly chunks: Chunks;
  readonly fileBytes: number;
}

export interface RestoredSnapshot {
  /** The index the restore committed at: every node's state is the snapshot's from there on. */
  readonly index: number;
  /** The snapshot's own header: where and when it was taken. */
  readonly snapshot: SnapshotHeader;
  readonly sections: readonly Pick<BackupSection, "name" | "summary">[];
  /** Raft entries the body was sent in. */
  readonly chunks: number;
  /** Whether --force let a snapshot of another cluster in. */
  readonly forced: boolean;
}

export interface SnapshotServiceOptions {
  readonly driver: Pick<RaftDriver, "id" | "readBarrier" | "propose" | "applied" | "appliedTerm">;
  readonly state: ClusterStateMachine;
  readonly clusterId: string;
  readonly logger: Logger;
  /** Whether this node could sign with a snapshot's roots (their keys under a KEK it holds): the CA says why not. */
  readonly ca?: { restoreProblem(roots: readonly CaRoot[]): string | undefined };
  readonly now?: () => number;
  /** Body bytes per Raft entry; tests shrink it to send a small snapshot in many chunks. */
  readonly chunkBytes?: number;
}

export class SnapshotService {
  private readonly chunkBytes: number;
  private readonly now: () => number;
  private restoring = false;

  constructor(private readonly opts: SnapshotServiceOptions) {
    this.chunkBytes = opts.chunkBytes ?? RESTORE_CHUNK_BYTES;
    if (!Number.isSafeInteger(this.chunkBytes) || this.chunkBytes < 1 || this.chunkBytes > RESTORE_CHUNK_BYTES) {
      throw new RangeError(`chunkBytes must be a whole number from 1 to ${RESTORE_CHUNK_BYTES}, not ${this.chunkBytes}`);
    }
    this.now = opts.now ?? Date.now;
  }

  /** A snapshot of the whole state, consistent and linearizable, at the index it names. */
  async save(): Promise<SavedSnapshot> {
    const { driver, state } = this.opts;
    await driver.readBarrier();
    // From here to backup() nothing yields: the machines are captured at exactly this index.
    const index = driver.applied;
    const term = driver.appliedTerm;
    const body = await state.backup();
    const saved = encodeSnapshotFile({ clusterId: this.opts.clusterId, nodeId: driver.id, index, term, takenAtMs: this.now() }, body);
    if (saved.header.bodyBytes > SNAPSHOT_RESTORE_BYTES_MAX) {
      this.opts.logger.warn({ index, bodyBytes: saved.header.bodyBytes, restoreBytesMax: SNAPSHOT_RESTORE_BYTES_MAX }, "this snapshot is larger than a restore takes: it can be inspected but not restored");
    }
    this.opts.logger.info({ index, term, bodyBytes: saved.header.bodyBytes, sha256: saved.header.bodySha256Hex }, "snapshot saved");
    return saved;
  }

  /**
   * Checks `file` whole, then restores it through Raft. Throws SnapshotFileError for a file that
   * is not a sound snapshot and SnapshotConflictError for one this cluster will not take, both
   * before anything is proposed; NotAvailableError when the cluster cannot take writes.
   */
  async restore(file: Uint8Array, opts: { readonly force: boolean }): Promise<RestoredSnapshot> {
    if (this.restoring) throw new SnapshotConflictError("busy", "a restore is already running on this node; wait for it to finish");
    const { header, body, sections } = checkSnapshotFile(file);
    if (header.clusterId !== this.opts.clusterId && !opts.force) {
      throw new SnapshotConflictError("otherCluster",
        `the snapshot was taken from cluster ${header.clusterId}, not this one (${this.opts.clusterId}); restoring it replaces this cluster's whole state ` +
        "with that cluster's. If that is what you mean (moving to a new cluster, say), restore with --force (?force)");
    }
    if (body.byteLength > SNAPSHOT_RESTORE_BYTES_MAX) throw new SnapshotTooLargeError(body.byteLength);
    const caSection = sections.find((s) => s.name === "ca");
    const keyProblem = caSection === undefined ? undefined : this.opts.ca?.restoreProblem(decodeCaSnapshot(caSection.bytes).roots);
    if (keyProblem !== undefined) throw new SnapshotConflictError("unusableKeys", keyProblem);
    this.restoring = true;
    try {
      const { index, chunks } = await this.send(body);
      this.opts.logger.info({ index, from: { clusterId: header.clusterId, index: header.index, node: header.nodeId }, bodyBytes: body.byteLength, chunks, forced: opts.force,
        sections: Object.fromEntries(sections.map((s) => [s.name, s.summary])) }, "snapshot restored: every state machine now holds it");
      return { index, snapshot: header, sections: sections.map(({ name, summary }) => ({ name, summary })), chunks, forced: header.clusterId !== this.opts.clusterId };
    } finally {
      this.restoring = false;
    }
  }

  /** Begin, the chunks in order, commit: answers the commit's index once this node has applied it. */
  private async send(body: Uint8Array): Promise<{ index: number; chunks: number }> {
    const restoreId = randomUUID();
    const propose = (cmd: RestoreCommand): Promise<number> => this.opts.driver.propose(withTag(STATE_TAG_RESTORE, encodeRestoreCommand(cmd)));
    let chunks = 0;
    try {
      await propose({ op: OP_RESTORE_BEGIN, restoreId, bodyBytes: body.byteLength, bodySha256: sha256([body]) });
      let failures = 0;
      for (let offset = 0; offset < body.byteLength;) {
        const end = Math.min(body.byteLength, offset + this.chunkBytes);
        let applied = true;
        try {
          await propose({ op: OP_RESTORE_CHUNK, restoreId, offset, data: body.subarray(offset, end) });
          chunks++;
        } catch (err) {
          // Whether it committed is unknown: what this node has staged, once it has caught up, says.
          if (!(err instanceof NotAvailableError) || ++failures > RESTORE_SEND_FAILURES_MAX) throw err;
          applied = false;
          await this.opts.driver.readBarrier();
        }
        const staged = this.opts.state.stagedRestore;
        if (staged?.restoreId !== restoreId) throw superseded();
        // A chunk applied here was taken, or the staging is no longer ours: anything else is a bug, not a reason to send it forever.
        if (applied && staged.receivedBytes !== end) throw new Error(`restore ${restoreId}: the chunk at ${offset} applied, but ${staged.receivedBytes} bytes are staged, not ${end}`);
        offset = staged.receivedBytes;
      }
      return { index: await this.commit(restoreId, propose), chunks };
    } catch (err) {
      // Best effort: a restore left staged holds memory on every node until the next one begins.
      void propose({ op: OP_RESTORE_ABORT, restoreId }).catch((abortErr: unknown) => {
        this.opts.logger.warn({ restoreId, err: errorMessage(abortErr) }, "could not abort an unfinished restore; the next restore replaces it");
      });
      throw err;
    }
  }

  private async commit(restoreId: string, propose: (cmd: RestoreCommand) => Promise<number>): Promise<number> {
    for (let failures = 0; ; failures++) {
      let index: number | undefined;
      try {
        index = await propose({ op: OP_RESTORE_COMMIT, restoreId });
      } catch (err) {
        if (!(err instanceof NotAvailableError) || failures >= RESTORE_SEND_FAILURES_MAX) throw err;
        await this.opts.driver.readBarrier();
      }
      const verdict = this.opts.state.restoreVerdict(restoreId);
      if (verdict !== undefined) {
        if (!verdict.restored) throw new SnapshotConflictError("refused", `the cluster refused the restore: ${verdict.reason}`);
        return verdict.index;
      }
      // No verdict: the commit did not apply (a retry may still); another restore may have replaced this one meanwhile.
      if (this.opts.state.stagedRestore?.restoreId !== restoreId) throw superseded();
      if (index !== undefined) throw new Error(`the restore's commit applied at index ${index}, but this node holds no verdict on it`);
    }
  }
}

function superseded(): SnapshotConflictError {
  return new SnapshotConflictError("superseded", "another restore began while this one was being sent, and replaced it; nothing of this one was restored. Restore again once the other has finished");
}
