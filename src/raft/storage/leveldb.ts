// The durable state of one Raft node: its hard state, its latest snapshot and the log after it,
// plus a few metadata records the server keeps across restarts. One LevelDB per node.
//
// Layout. Keys are UTF-8 strings, so LevelDB's byte order is index order for the entries:
//   "hs"                            the hard state
//   "snap"                          the latest snapshot, as one value (megabytes are fine for now)
//   "e/" + index as 16 decimals     one log entry; 16 digits hold Number.MAX_SAFE_INTEGER
//   "m/" + key                      server metadata (cluster id, member addresses)
// Every value is a record: a CRC32 (4 bytes, big-endian) over the rest of the record, a format
// byte, then the codec's encoding. The checksum catches bit rot and foreign writes; the format byte
// lets a later version change the encoding; and an entry's own index is checked against its key,
// so a value that landed under the wrong key cannot pass for another entry.
//
// Every write is one LevelDB batch, synced unless it carries only a commit index (see saveReady).
// The Ready contract lets messages leave once step 1 is durable, and a batch is atomic: after a
// crash the disk holds all of a Ready or none.
//
// Corruption is never skipped or truncated away: a node that silently lost a committed entry, or
// applied a damaged one, would diverge from its peers. It refuses to start instead, and says how
// to recover.

import { mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import { crc32 } from "node:zlib";
import { Level } from "level";
import { decodeEntry, decodeHardState, decodeSnapshot, encodeEntry, encodeHardState, writeSnapshotMetadata } from "../codec.js";
import { CodecError, Writer } from "../../common/codec.js";
import { asError, errorMessage } from "../../common/errors.js";
import { type Entry, type Snapshot, invariant } from "../core/types.js";
import { type LogStorage, type PersistedState, type ReadyWrite, layoutReadyWrite } from "./log_storage.js";

export interface StorageStats {
  /** Entries on disk after the snapshot; always lastIndex - firstIndex + 1. */
  readonly entries: number;
  /** snapshotIndex + 1, also when the log is empty (then lastIndex is firstIndex - 1). */
  readonly firstIndex: number;
  readonly lastIndex: number;
  /** Approximate bytes of the log on disk before LevelDB's own compression: keys plus records. */
  readonly bytes: number;
  /** The index of the persisted snapshot, or 0 when there is none. */
  readonly snapshotIndex: number;
}

/** Which kind of record was found damaged. */
export type StorageRecordKind = "entry" | "hardState" | "snapshot" | "meta";

const RECOVERY_ADVICE = "Restore this node from a peer (remove its data directory and re-join).";

/** Something on disk is damaged or inconsistent. Restarting will not help; the node must be restored. */
export class StorageCorruptionError extends Error {
  constructor(
    /** The storage directory. */
    readonly path: string,
    /** The log index the damage was found at, when it concerns the log. */
    readonly index: number | undefined,
    readonly record: StorageRecordKind,
    /** What exactly is wrong, without the advice. */
    readonly reason: string,
  ) {
    const where = record === "entry"
      ? `corrupt Raft log in ${path}${index === undefined ? "" : ` at index ${index}`}`
      : record === "hardState"
        ? `corrupt Raft hard state in ${path}`
        : record === "snapshot"
          ? `corrupt Raft snapshot in ${path}`
          : `corrupt metadata in ${path}`;
    const verb = record === "entry" ? "apply" : "use";
    super(`${where}: ${reason}; the node refuses to start rather than ${verb} it. ${RECOVERY_ADVICE}`);
    this.name = "StorageCorruptionError";
  }
}

/** Bounds on the metadata records: they are small by design, so anything large is a bug upstream. */
export const metaKeyBytesMax = 256;
export const metaValueBytesMax = 1024 * 1024;

const HARD_STATE_KEY = "hs";
const SNAPSHOT_KEY = "snap";
const ENTRY_PREFIX = "e/";
/** "0" follows "/" in ASCII, so every "e/..." key sorts below this bound and nothing else does. */
const ENTRY_RANGE_END = "e0";
const META_PREFIX = "m/";
const INDEX_DIGITS = 16;
const ENTRY_KEY_PATTERN = /^e\/[0-9]{16}$/;

/**
 * Reads that skip LevelDB's block cache: every read here is a one-time scan (the log at start,
 * the snapshot when a follower needs it, one entry per compaction), so caching what it read
 * would only hold memory.
 */
const READ_ONCE = { fillCache: false } as const;

const RECORD_FORMAT = 1;
const CHECKSUM_BYTES = 4;
const RECORD_HEADER_BYTES = CHECKSUM_BYTES + 1;

/** The LevelDB key of the entry at `index`. Exported so tests can reach the on-disk format. */
export function entryKey(index: number): string {
  invariant(Number.isSafeInteger(index) && index >= 1, () => `cannot store an entry at index ${index}`);
  return ENTRY_PREFIX + index.toString().padStart(INDEX_DIGITS, "0");
}

function parseEntryKey(key: string): number | undefined {
  if (!ENTRY_KEY_PATTERN.test(key)) return undefined;
  const index = Number(key.slice(ENTRY_PREFIX.length));
  return Number.isSafeInteger(index) && index >= 1 ? index : undefined;
}

/** Frames an encoded value as a record: checksum, format byte, payload. */
function seal(payload: Uint8Array): Uint8Array {
  const record = new Uint8Array(RECORD_HEADER_BYTES + payload.byteLength);
  record[CHECKSUM_BYTES] = RECORD_FORMAT;
  record.set(payload, RECORD_HEADER_BYTES);
  new DataView(record.buffer, record.byteOffset, record.byteLength).setUint32(0, crc32(record.subarray(CHECKSUM_BYTES)));
  return record;
}

/**
 * A snapshot's record, built in one allocation: the bytes codec's encodeSnapshot would give,
 * sealed. A snapshot is the whole state, so an intermediate copy costs as much as the state.
 */
function sealSnapshot(snapshot: Snapshot): Uint8Array {
  const head = new Writer(64);
  writeSnapshotMetadata(head, snapshot.metadata);
  head.uint(snapshot.data.byteLength);
  const headBytes = head.finish();
  const record = new Uint8Array(RECORD_HEADER_BYTES + headBytes.byteLength + snapshot.data.byteLength);
  record[CHECKSUM_BYTES] = RECORD_FORMAT;
  record.set(headBytes, RECORD_HEADER_BYTES);
  record.set(snapshot.data, RECORD_HEADER_BYTES + headBytes.byteLength);
  new DataView(record.buffer, record.byteOffset, record.byteLength).setUint32(0, crc32(record.subarray(CHECKSUM_BYTES)));
  return record;
}

type Unsealed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

/** Checks a record and decodes its payload, or says why it cannot be trusted. Never throws CodecError. */
function unseal<T>(stored: Uint8Array, decode: (payload: Uint8Array) => T): Unsealed<T> {
  // LevelDB hands back Buffers; callers get plain Uint8Arrays (same memory), as they were written.
  const record = new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength);
  if (record.byteLength < RECORD_HEADER_BYTES) {
    return { ok: false, reason: `the record is ${record.byteLength} bytes, shorter than its ${RECORD_HEADER_BYTES}-byte header` };
  }
  const expected = new DataView(record.buffer, record.byteOffset, record.byteLength).getUint32(0);
  const computed = crc32(record.subarray(CHECKSUM_BYTES));
  if (expected !== computed) {
    return { ok: false, reason: `checksum mismatch (stored ${hex32(expected)}, computed ${hex32(computed)})` };
  }
  const format = record[CHECKSUM_BYTES];
  if (format !== RECORD_FORMAT) return { ok: false, reason: `unknown record format ${format} (this version reads ${RECORD_FORMAT})` };
  try {
    return { ok: true, value: decode(record.subarray(RECORD_HEADER_BYTES)) };
  } catch (err) {
    if (err instanceof CodecError) return { ok: false, reason: `the record does not decode (${err.message})` };
    throw err;
  }
}

function hex32(n: number): string {
  return "0x" + n.toString(16).padStart(8, "0");
}

function utf8Bytes(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

type BatchOp =
  | { readonly type: "put"; readonly key: string; readonly value: Uint8Array }
  | { readonly type: "del"; readonly key: string };

/**
 * What one Ready does to the log, worked out before anything is written so that the in-memory
 * index changes only once the batch is durable.
 */
/** Compacted entries deleted per LevelDB batch, so that Ready writes queue behind small batches only. */
const COMPACTION_DELETES_PER_BATCH = 2048;

interface LogChange {
  readonly ops: BatchOp[];
  /** The snapshot index after the change. */
  readonly snapshotIndex: number;
  /** Entries that survive, counted from the (new) snapshot index + 1. */
  readonly keptEntries: number;
  /** Stored sizes of the entries appended after the kept ones. */
  readonly appendedBytes: readonly number[];
}

export class LevelLogStorage implements LogStorage {
  /** Absolute path of the data directory, as named in every error. */
  readonly dir: string;
  private readonly db: Level<string, Uint8Array>;

  // The in-memory index of the log, built by the one scan in load(). The log on disk is exactly
  // the entries snapshotIndex + 1 .. lastIndex; entryBytes[i] is the size of entry snapshotIndex + 1 + i.
  private loaded = false;
  private snapshotIndex = 0;
  private lastIndex = 0;
  private entryBytes: number[] = [];
  private entryBytesTotal = 0;

  /** Operations run one at a time, in call order, so the index always matches the disk. */
  private tail: Promise<unknown> = Promise.resolve();
  /** After a failed write the disk's state is uncertain; refusing later writes keeps it from getting worse. */
  private writeFailure: Error | undefined;
  private closed = false;

  private constructor(dir: string, db: Level<string, Uint8Array>) {
    this.dir = dir;
    this.db = db;
  }

  /** Opens (creating if needed) the storage in `dir`. Call load() before saving anything. */
  static async open(dir: string): Promise<LevelLogStorage> {
    const path = resolve(dir);
    try {
      await mkdir(path, { recursive: true });
    } catch (err) {
      throw new Error(`cannot create the Raft data directory ${path}: ${errorMessage(err)}; check the path and its permissions`, { cause: err });
    }
    const db = new Level<string, Uint8Array>(path, { keyEncoding: "utf8", valueEncoding: "view" });
    try {
      await db.open();
    } catch (err) {
      if (causeCode(err) === "LEVEL_LOCKED") {
        throw new Error(`the Raft data directory ${path} is locked by another process; is another Cairn node running with it? Stop that node or choose another data directory`, { cause: err });
      }
      throw new Error(`cannot open the Raft data directory ${path}: ${errorMessage(err)}`, { cause: err });
    }
    return new LevelLogStorage(path, db);
  }

  /**
   * Reads everything the core needs to restart, checking every record. Throws
   * StorageCorruptionError rather than return a log with a damaged, missing or misplaced entry.
   * Entries at or below the snapshot index are ignored and then deleted: the core ignores them too,
   * and a compaction interrupted by a crash may leave them (this code writes a compaction as one
   * atomic batch, but a later one may delete a large prefix in the background).
   */
  async load(): Promise<PersistedState> {
    this.assertOpen();
    return await this.serially(async () => {
      const hardState = await this.readSingle(HARD_STATE_KEY, "hardState", decodeHardState);
      const snapshot = await this.readSingle(SNAPSHOT_KEY, "snapshot", decodeSnapshot);
      const snapshotIndex = snapshot?.metadata.index ?? 0;

      const entries: Entry[] = [];
      const entryBytes: number[] = [];
      const leftovers: string[] = [];
      let prevTerm = snapshot?.metadata.term ?? 0;
      for await (const [key, record] of this.db.iterator({ gte: ENTRY_PREFIX, lt: ENTRY_RANGE_END, ...READ_ONCE })) {
        const index = parseEntryKey(key);
        if (index === undefined) throw this.corrupt("entry", undefined, `unexpected key ${JSON.stringify(key)} among the entries`);
        if (index <= snapshotIndex) {
          leftovers.push(key);
          continue;
        }
        const expected = snapshotIndex + 1 + entries.length;
        if (index !== expected) {
          throw this.corrupt("entry", expected, `the entry is missing (the next stored entry is ${index}; ${snapshot === undefined ? "there is no snapshot" : `the snapshot is at ${snapshotIndex}`})`);
        }
        const result = unseal(record, decodeEntry);
        if (!result.ok) throw this.corrupt("entry", index, result.reason);
        const entry = result.value;
        if (entry.index !== index) throw this.corrupt("entry", index, `the value stored under this index is entry ${entry.index}`);
        if (entry.term < prevTerm) {
          throw this.corrupt("entry", index, `term ${entry.term} follows term ${prevTerm}, but terms in a Raft log never decrease`);
        }
        prevTerm = entry.term;
        entries.push(entry);
        entryBytes.push(key.length + record.byteLength);
      }

      const lastIndex = snapshotIndex + entries.length;
      // A missing tail is invisible to the gap check; the hard state's commit index still reveals it
      // when what is missing was committed. (The core would also refuse, but as an invariant failure.)
      if (hardState !== undefined && hardState.commit > lastIndex) {
        throw this.corrupt("entry", lastIndex + 1,
          `the entry is missing: the hard state says entries through ${hardState.commit} are committed, but the log ends at ${lastIndex}`);
      }

      if (leftovers.length > 0) await this.write(leftovers.map((key) => ({ type: "del", key })));

      this.snapshotIndex = snapshotIndex;
      this.lastIndex = lastIndex;
      this.entryBytes = entryBytes;
      this.entryBytesTotal = sum(entryBytes);
      this.loaded = true;
      return { hardState, snapshot, entries };
    });
  }

  /**
   * One Ready's durable part, in ONE LevelDB batch, synced unless the caller says the batch holds
   * nothing that must survive a crash (a commit index alone: it is learned again from the
   * leader). LevelDB's log is ordered, so an unsynced batch that survives implies every earlier
   * one did. Snapshot (replaces the log:
   * delete all entries), then entries (overwrite from entries[0].index: delete any persisted
   * entries with index >= entries[0].index first, then put), then hardState.
   */
  async saveReady(part: ReadyWrite, options: { readonly sync: boolean } = { sync: true }): Promise<void> {
    this.assertOpen();
    await this.serially(async () => {
      this.assertLoaded("saveReady");
      const change = this.planReady(part);
      if (change.ops.length === 0) return;
      await this.write(change.ops, options.sync);
      this.applyChange(change);
    });
  }

  /**
   * Local compaction: write `snapshot` (synced), then delete entries with index <= its index. A
   * snapshot at or below the one already stored is stale (a newer snapshot from the leader was
   * saved while this one was being taken) and is dropped: storing it would resurrect a log prefix
   * that no longer exists.
   *
   * The prefix goes in batches of COMPACTION_DELETES_PER_BATCH, each queued behind the writes
   * that arrived meanwhile: one batch of 50,000 deletes held every Ready write up for tens of
   * milliseconds, the registry's worst latencies. They need no fsync: once the snapshot is durable,
   * load() ignores and deletes any entry at or below it that a crash left behind.
   */
  async saveSnapshot(snapshot: Snapshot): Promise<void> {
    this.assertOpen();
    const prefix = await this.serially(async () => {
      this.assertLoaded("saveSnapshot");
      const { index, term } = snapshot.metadata;
      if (index <= this.snapshotIndex) return undefined;
      if (index <= this.lastIndex) {
        // The core names the term of the entry it compacted through; a mismatch means the
        // snapshot and the log disagree about history, and one of them would be wrong on restart.
        const stored = await this.readEntry(index);
        invariant(stored.term === term, () => `snapshot at index ${index} has term ${term}, but the stored entry there has term ${stored.term}`);
      }
      const dropFrom = this.snapshotIndex + 1;
      const dropThrough = Math.min(index, this.lastIndex);
      const ops: BatchOp[] = [{ type: "put", key: SNAPSHOT_KEY, value: sealSnapshot(snapshot) }];
      await this.write(ops);
      this.applyChange({ ops, snapshotIndex: index, keptEntries: this.lastIndex - dropThrough, appendedBytes: [] });
      return { dropFrom, dropThrough };
    });
    if (prefix === undefined) return;
    for (let from = prefix.dropFrom; from <= prefix.dropThrough; from += COMPACTION_DELETES_PER_BATCH) {
      const through = Math.min(prefix.dropThrough, from + COMPACTION_DELETES_PER_BATCH - 1);
      await this.serially(async () => {
        // Closed meanwhile: the next load() deletes what is left.
        if (this.closed) return;
        const ops: BatchOp[] = [];
        for (let i = from; i <= through; i++) ops.push({ type: "del", key: entryKey(i) });
        await this.write(ops, false);
      });
    }
  }

  /**
   * The stored snapshot, read back and checked: the driver keeps only its metadata in memory and
   * reads the bytes when a follower needs them. Undefined when none is stored.
   */
  async loadSnapshot(): Promise<Snapshot | undefined> {
    this.assertOpen();
    return await this.serially(async () => await this.readSingle(SNAPSHOT_KEY, "snapshot", decodeSnapshot));
  }

  /** Small metadata records the server needs to survive restarts (cluster id, member addresses). */
  async getMeta(key: string): Promise<Uint8Array | undefined> {
    this.assertOpen();
    assertMetaKey(key);
    return await this.serially(async () => {
      const record = await this.db.get(META_PREFIX + key);
      if (record === undefined) return undefined;
      const result = unseal(record, (payload) => payload);
      if (!result.ok) throw this.corrupt("meta", undefined, `record ${JSON.stringify(key)}: ${result.reason}`);
      return result.value;
    });
  }

  /** Writes one metadata record, synced. */
  async putMeta(key: string, value: Uint8Array): Promise<void> {
    this.assertOpen();
    assertMetaKey(key);
    if (value.byteLength > metaValueBytesMax) {
      throw new RangeError(`metadata record ${JSON.stringify(key)} is ${value.byteLength} bytes; the limit is ${metaValueBytesMax}`);
    }
    await this.serially(async () => {
      await this.write([{ type: "put", key: META_PREFIX + key, value: seal(value) }]);
    });
  }

  /** Size of the entry log, for metrics. Needs load() first. */
  stats(): StorageStats {
    invariant(this.loaded, "stats() called before load()");
    return {
      entries: this.lastIndex - this.snapshotIndex,
      firstIndex: this.snapshotIndex + 1,
      lastIndex: this.lastIndex,
      bytes: this.entryBytesTotal,
      snapshotIndex: this.snapshotIndex,
    };
  }

  /** Waits for queued operations, then closes LevelDB. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    await this.db.close();
  }

  // ---------------------------------------------------------------- internals

  private planReady(part: ReadyWrite): LogChange {
    const layout = layoutReadyWrite({ snapshotIndex: this.snapshotIndex, lastIndex: this.lastIndex }, part);
    const ops: BatchOp[] = [];
    // Operations apply in batch order: a received snapshot's deletes must precede the puts after it.
    let storedLast = this.lastIndex;
    if (part.snapshot !== undefined) {
      ops.push({ type: "put", key: SNAPSHOT_KEY, value: sealSnapshot(part.snapshot) });
      for (let i = this.snapshotIndex + 1; i <= this.lastIndex; i++) ops.push({ type: "del", key: entryKey(i) });
      storedLast = part.snapshot.metadata.index;
    }
    const appendedBytes: number[] = [];
    for (const e of part.entries) {
      const key = entryKey(e.index);
      const value = seal(encodeEntry(e));
      ops.push({ type: "put", key, value });
      appendedBytes.push(key.length + value.byteLength);
    }
    // Keys up to the new last index were overwritten by the puts above; only a stale tail beyond
    // it needs deleting.
    for (let i = layout.lastIndex + 1; i <= storedLast; i++) ops.push({ type: "del", key: entryKey(i) });
    if (part.hardState !== undefined) ops.push({ type: "put", key: HARD_STATE_KEY, value: seal(encodeHardState(part.hardState)) });
    return { ops, snapshotIndex: layout.snapshotIndex, keptEntries: layout.keptEntries, appendedBytes };
  }

  private applyChange(change: LogChange): void {
    // Entries at or below the new snapshot index go from the front (rare: compaction or a received
    // snapshot), then a replaced suffix from the back, then the appended ones; no full rescans.
    const dropped = Math.min(change.snapshotIndex - this.snapshotIndex, this.entryBytes.length);
    if (dropped > 0) this.entryBytesTotal -= sum(this.entryBytes.splice(0, dropped));
    if (change.keptEntries < this.entryBytes.length) this.entryBytesTotal -= sum(this.entryBytes.splice(change.keptEntries));
    for (const bytes of change.appendedBytes) {
      this.entryBytes.push(bytes);
      this.entryBytesTotal += bytes;
    }
    this.snapshotIndex = change.snapshotIndex;
    this.lastIndex = change.snapshotIndex + this.entryBytes.length;
  }

  private async readSingle<T>(key: string, kind: "hardState" | "snapshot", decode: (payload: Uint8Array) => T): Promise<T | undefined> {
    const record = await this.db.get(key, READ_ONCE);
    if (record === undefined) return undefined;
    const result = unseal(record, decode);
    if (!result.ok) throw this.corrupt(kind, undefined, result.reason);
    return result.value;
  }

  private async readEntry(index: number): Promise<Entry> {
    const record = await this.db.get(entryKey(index), READ_ONCE);
    if (record === undefined) throw this.corrupt("entry", index, "the entry is missing");
    const result = unseal(record, decodeEntry);
    if (!result.ok) throw this.corrupt("entry", index, result.reason);
    if (result.value.index !== index) throw this.corrupt("entry", index, `the value stored under this index is entry ${result.value.index}`);
    return result.value;
  }

  /** Writes one batch, taking `ops`; `sync` false only where losing it in a crash is harmless (see saveReady). */
  private async write(ops: BatchOp[], sync = true): Promise<void> {
    if (this.writeFailure !== undefined) {
      throw new Error(`Raft storage in ${this.dir} refuses writes after an earlier write failed (${this.writeFailure.message}); restart the node`,
        { cause: this.writeFailure });
    }
    try {
      // A chained batch copies each operation into LevelDB's own batch at once, so the keys and
      // records (and `ops`, emptied here) die young. db.batch(ops) keeps them all, and copies of
      // every op, alive until the write completes; a write waits behind others and its fsync, so
      // they outlived two scavenges and were promoted: most of the old-space garbage under load.
      const batch = this.db.batch();
      try {
        for (const op of ops) {
          if (op.type === "put") batch.put(op.key, op.value);
          else batch.del(op.key);
        }
      } catch (err) {
        await batch.close();
        throw err;
      }
      ops.length = 0;
      await batch.write({ sync });
    } catch (err) {
      this.writeFailure = asError(err);
      throw new Error(`Raft storage in ${this.dir} failed to write: ${errorMessage(err)}; what reached the disk is uncertain, so restart the node`,
        { cause: err });
    }
  }

  private serially<T>(op: () => Promise<T>): Promise<T> {
    const result = this.tail.then(op);
    // The queue continues after a failure; each operation reports its own.
    this.tail = result.catch(() => undefined);
    return result;
  }

  private assertOpen(): void {
    invariant(!this.closed, () => `Raft storage in ${this.dir} used after close()`);
  }

  private assertLoaded(what: string): void {
    invariant(this.loaded, () => `${what}() called before load(): the log index is not built yet`);
  }

  private corrupt(record: StorageRecordKind, index: number | undefined, reason: string): StorageCorruptionError {
    return new StorageCorruptionError(this.dir, index, record, reason);
  }
}

function assertMetaKey(key: string): void {
  const bytes = utf8Bytes(key);
  if (bytes === 0 || bytes > metaKeyBytesMax) {
    throw new RangeError(`metadata key ${JSON.stringify(key.slice(0, 64))} is ${bytes} bytes; it must be 1 to ${metaKeyBytesMax}`);
  }
}

function sum(values: readonly number[]): number {
  let total = 0;
  for (const v of values) total += v;
  return total;
}

function causeCode(err: unknown): unknown {
  if (!(err instanceof Error)) return undefined;
  const cause: unknown = err.cause;
  if (typeof cause !== "object" || cause === null || !("code" in cause)) return undefined;
  return cause.code;
}
