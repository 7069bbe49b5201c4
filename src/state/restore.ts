// Restoring a backup through Raft, so that every node, and every node that later catches up from
// the log or from a compaction snapshot, ends in the same state.
//
// A backup may be far larger than one Raft entry can be (an append travels in one peer frame of
// at most 4 MiB, and a leader sends an entry larger than that to nobody), so it is committed in
// pieces: `begin` names the restore, its size and its body's SHA-256; `chunk`s carry the body in
// order, each at the offset staged so far; `commit` checks the staged body (complete, the right
// checksum, every section decoding) and only then replaces every state machine with it, at the
// commit's index; `abort` drops it. The staging is replicated state: it goes into compaction
// snapshots, so a node that installs a snapshot taken half way through holds the same pieces.
//
// Every rule is deterministic, so each node reaches the same verdict on its own:
//   - a begin replaces whatever was staged (a restore that was superseded commits nothing);
//   - a chunk is taken only if it names the staged restore and starts where the staged bytes end,
//     so a chunk proposed twice (a retry whose first try did commit) is taken once;
//   - a commit of anything but the staged restore, complete and matching its checksum, is refused.
// A verdict is remembered on each node by restore id, so the node that proposed the commit can
// tell its client what happened; that memory is not replicated state and is not in snapshots.

import { createHash } from "node:crypto";
import { type Chunks, CodecError, Reader, Writer, concatChunks } from "../common/codec.js";

/** The largest backup body a restore takes. Every node holds it staged, then in its log until the next compaction. */
export const SNAPSHOT_RESTORE_BYTES_MAX = 128 * 1024 * 1024;
/**
 * Body bytes per chunk entry: well under the peer transport's frameBytesMax (4 MiB), which
 * carries one entry in an append and a follower's forwarded proposals in one call, and no more
 * than the core's messageBytesMax (1 MiB), so an append holding a chunk is no larger than usual.
 */
export const RESTORE_CHUNK_BYTES = 512 * 1024;
/** Verdicts each node remembers, newest first; a client asks for its own right after its commit applies. */
const RESTORE_VERDICTS_KEPT = 16;
const SHA256_BYTES = 32;
/** A restore id is a UUID. */
const RESTORE_ID_CHARS_MAX = 64;

export const OP_RESTORE_BEGIN = 1;
export const OP_RESTORE_CHUNK = 2;
export const OP_RESTORE_COMMIT = 3;
export const OP_RESTORE_ABORT = 4;
/** The staging's own snapshot format. */
const STAGING_FORMAT = 1;

export type RestoreCommand =
  | { readonly op: typeof OP_RESTORE_BEGIN; readonly restoreId: string; readonly bodyBytes: number; readonly bodySha256: Uint8Array }
  | { readonly op: typeof OP_RESTORE_CHUNK; readonly restoreId: string; readonly offset: number; readonly data: Uint8Array }
  | { readonly op: typeof OP_RESTORE_COMMIT; readonly restoreId: string }
  | { readonly op: typeof OP_RESTORE_ABORT; readonly restoreId: string };

export function encodeRestoreCommand(cmd: RestoreCommand): Uint8Array {
  const w = new Writer(cmd.op === OP_RESTORE_CHUNK ? cmd.data.byteLength + 96 : 96);
  w.u8(cmd.op);
  w.string(cmd.restoreId);
  switch (cmd.op) {
    case OP_RESTORE_BEGIN:
      w.uint(cmd.bodyBytes);
      w.bytes(cmd.bodySha256);
      break;
    case OP_RESTORE_CHUNK:
      w.uint(cmd.offset);
      w.bytes(cmd.data);
      break;
    case OP_RESTORE_COMMIT:
    case OP_RESTORE_ABORT:
      break;
  }
  return w.finish();
}

/** Strict: an unknown op, a malformed field or trailing bytes raise CodecError. */
export function decodeRestoreCommand(data: Uint8Array): RestoreCommand {
  const r = new Reader(data);
  const op = r.u8();
  const restoreId = readRestoreId(r);
  let cmd: RestoreCommand;
  switch (op) {
    case OP_RESTORE_BEGIN:
      cmd = { op, restoreId, bodyBytes: r.uint(), bodySha256: readSha256(r) };
      break;
    case OP_RESTORE_CHUNK:
      cmd = { op, restoreId, offset: r.uint(), data: r.bytes() };
      break;
    case OP_RESTORE_COMMIT:
    case OP_RESTORE_ABORT:
      cmd = { op, restoreId };
      break;
    default:
      throw new CodecError(`unknown restore command op ${op}`);
  }
  r.done();
  return cmd;
}

function readRestoreId(r: Reader): string {
  const id = r.string();
  if (id.length === 0 || id.length > RESTORE_ID_CHARS_MAX) throw new CodecError(`a restore id has 1 to ${RESTORE_ID_CHARS_MAX} characters, not ${id.length}`);
  return id;
}

function readSha256(r: Reader): Uint8Array {
  const sha = r.bytes();
  if (sha.byteLength !== SHA256_BYTES) throw new CodecError(`a SHA-256 has ${SHA256_BYTES} bytes, not ${sha.byteLength}`);
  return sha;
}

export function sha256(chunks: Chunks): Uint8Array {
  const hash = createHash("sha256");
  for (const c of chunks) hash.update(c);
  return hash.digest();
}

/** What a node decided about one restore's commit. */
export type RestoreVerdict =
  | { readonly restoreId: string; readonly index: number; readonly restored: true }
  | { readonly restoreId: string; readonly index: number; readonly restored: false; readonly reason: string };

/** A restore being received, as every node holds it. Invariant: receivedBytes = sum of chunks' lengths <= bodyBytes. */
interface Staged {
  readonly restoreId: string;
  readonly bodyBytes: number;
  readonly bodySha256: Uint8Array;
  readonly chunks: Uint8Array[];
  receivedBytes: number;
}

/** Where a staged restore stands, for the node that sends it. */
export interface StagedProgress {
  readonly restoreId: string;
  readonly receivedBytes: number;
  readonly bodyBytes: number;
}

/**
 * Applies the body of a restore that is complete and matches its checksum, at `index`. Answers
 * why it refused, or undefined once every machine holds the body: it must change nothing when it refuses.
 */
export type ApplyBackup = (body: Uint8Array, index: number) => string | undefined;

export class RestoreStaging {
  private staged: Staged | undefined;
  private verdicts: RestoreVerdict[] = [];

  constructor(private readonly applyBackup: ApplyBackup) {}

  apply(index: number, data: Uint8Array): void {
    const cmd = decodeRestoreCommand(data);
    switch (cmd.op) {
      case OP_RESTORE_BEGIN:
        // Over the bound, nothing is staged (every node alike), and its commit is refused.
        this.staged = cmd.bodyBytes > SNAPSHOT_RESTORE_BYTES_MAX ? undefined
          : { restoreId: cmd.restoreId, bodyBytes: cmd.bodyBytes, bodySha256: cmd.bodySha256.slice(), chunks: [], receivedBytes: 0 };
        break;
      case OP_RESTORE_CHUNK: {
        const s = this.staged;
        if (s === undefined || s.restoreId !== cmd.restoreId || cmd.offset !== s.receivedBytes || s.receivedBytes + cmd.data.byteLength > s.bodyBytes) return;
        // A copy: a view would keep alive whatever buffer the entry arrived in (a whole peer frame, say).
        s.chunks.push(cmd.data.slice());
        s.receivedBytes += cmd.data.byteLength;
        break;
      }
      case OP_RESTORE_COMMIT:
        this.remember({ restoreId: cmd.restoreId, index, ...this.commit(index, cmd.restoreId) });
        break;
      case OP_RESTORE_ABORT:
        if (this.staged?.restoreId === cmd.restoreId) this.staged = undefined;
        break;
    }
  }

  /** This node's verdict on restore `restoreId`'s commit, if it applied it (and remembers it still). */
  verdict(restoreId: string): RestoreVerdict | undefined {
    return this.verdicts.find((v) => v.restoreId === restoreId);
  }

  get progress(): StagedProgress | undefined {
    const s = this.staged;
    return s === undefined ? undefined : { restoreId: s.restoreId, receivedBytes: s.receivedBytes, bodyBytes: s.bodyBytes };
  }

  /** The staged restore, for a compaction snapshot; undefined when none is staged. Captured now: later chunks do not leak in. */
  snapshot(): Chunks | undefined {
    const s = this.staged;
    if (s === undefined) return undefined;
    const head = new Writer(128);
    head.u8(STAGING_FORMAT);
    head.string(s.restoreId);
    head.uint(s.bodyBytes);
    head.bytes(s.bodySha256);
    // The bytes received so far, length-prefixed as Writer.bytes writes them, without copying them together.
    head.uint(s.receivedBytes);
    return [head.finish(), ...s.chunks];
  }

  /** Restores the staging from a compaction snapshot's section; an empty one means nothing is staged. */
  restore(data: Uint8Array): void {
    if (data.byteLength === 0) {
      this.staged = undefined;
      return;
    }
    const r = new Reader(data);
    const format = r.u8();
    if (format !== STAGING_FORMAT) throw new CodecError(`restore staging format ${format} is not understood by this build`);
    const restoreId = readRestoreId(r);
    const bodyBytes = r.uint();
    // Copies: a view would keep the whole compaction snapshot it came in alive.
    const bodySha256 = readSha256(r).slice();
    const received = r.bytes().slice();
    r.done();
    if (received.byteLength > bodyBytes) throw new CodecError(`restore staging holds ${received.byteLength} bytes of a ${bodyBytes}-byte snapshot`);
    this.staged = { restoreId, bodyBytes, bodySha256, chunks: [received], receivedBytes: received.byteLength };
  }

  private commit(index: number, restoreId: string): { restored: true } | { restored: false; reason: string } {
    const s = this.staged;
    if (s === undefined || s.restoreId !== restoreId) {
      return { restored: false, reason: "another restore began after this one and replaced it, or it was aborted; nothing was restored" };
    }
    this.staged = undefined;
    if (s.receivedBytes !== s.bodyBytes) return { restored: false, reason: `only ${s.receivedBytes} of the snapshot's ${s.bodyBytes} bytes arrived; nothing was restored` };
    const body = concatChunks(s.chunks);
    if (!Buffer.from(s.bodySha256).equals(sha256([body]))) return { restored: false, reason: "the staged snapshot does not match its SHA-256; nothing was restored" };
    const refused = this.applyBackup(body, index);
    return refused === undefined ? { restored: true } : { restored: false, reason: `${refused}; nothing was restored` };
  }

  private remember(verdict: RestoreVerdict): void {
    this.verdicts = [verdict, ...this.verdicts.filter((v) => v.restoreId !== verdict.restoreId)].slice(0, RESTORE_VERDICTS_KEPT);
  }
}
