// The `cairn snapshot` file: a point-in-time backup of the whole state (registry, CA, ACLs,
// intentions, the key/value store), written by `GET /v1/snapshot`, read back by `PUT /v1/snapshot` and by
// `cairn snapshot inspect`, which needs no cluster. Both ends use this one module.
//
//   offset  bytes  field
//   0       8      magic "CAIRNSNP"
//   8       2      format version, big-endian (1)
//   10      4      header length H, big-endian (at most HEADER_BYTES_MAX)
//   14      H      header, in the binary codec: cluster id, node id, Raft index and term, time
//                  taken (ms since the epoch), body length, body SHA-256
//   14+H    4      CRC-32 of bytes 8 .. 14+H (version, length and header)
//   18+H    ...    body: exactly the header's body length, then the end of the file
//
// The body is the cluster state machine's sections (sections.ts), the same container Raft
// compaction snapshots use, without the membership (Raft configuration is not state) and without
// any restore being staged.

import { crc32 } from "node:zlib";
import { type Chunks, CodecError, Reader, Writer, chunksLength } from "../common/codec.js";
import { errorMessage } from "../common/errors.js";
import { sha256 } from "./restore.js";
import { type BackupSection, BackupSectionError, checkBackupBody } from "./sections.js";

export const SNAPSHOT_MAGIC = "CAIRNSNP";
export const SNAPSHOT_FORMAT_VERSION = 1;
/** A header is a few ids and numbers; anything longer is not one. */
const HEADER_BYTES_MAX = 4096;
const MAGIC_BYTES = 8;
const VERSION_BYTES = 2;
const LENGTH_BYTES = 4;
const CRC_BYTES = 4;
const PREFIX_BYTES = MAGIC_BYTES + VERSION_BYTES + LENGTH_BYTES;
const SHA256_BYTES = 32;
const magicBytes = Buffer.from(SNAPSHOT_MAGIC, "latin1");

export interface SnapshotHeader {
  readonly formatVersion: number;
  readonly clusterId: string;
  /** The node that served the snapshot (a follower may). */
  readonly nodeId: string;
  /** The Raft index the state was captured at (the applied index, past a linearizable read barrier), and its entry's term. */
  readonly index: number;
  readonly term: number;
  /** When it was captured, by the serving node's clock, in ms since the epoch. */
  readonly takenAtMs: number;
  readonly bodyBytes: number;
  readonly bodySha256Hex: string;
}

export type SnapshotMeta = Omit<SnapshotHeader, "formatVersion" | "bodyBytes" | "bodySha256Hex">;

export type SnapshotFileProblem = "notSnapshot" | "version" | "truncated" | "corrupt" | "sections";

/** A file that is not a snapshot this build can read; the message says what was wrong and what to do. */
export class SnapshotFileError extends Error {
  constructor(readonly problem: SnapshotFileProblem, message: string) {
    super(message);
    this.name = "SnapshotFileError";
  }
}

/** The file for `body` (ClusterStateMachine.backup()'s chunks): its header, and its bytes as chunks (the body's pass through uncopied). */
export function encodeSnapshotFile(meta: SnapshotMeta, body: Chunks): { readonly header: SnapshotHeader; readonly chunks: Chunks; readonly fileBytes: number } {
  const bodySha256 = sha256(body);
  const header: SnapshotHeader = {
    formatVersion: SNAPSHOT_FORMAT_VERSION, ...meta, bodyBytes: chunksLength(body), bodySha256Hex: Buffer.from(bodySha256).toString("hex"),
  };
  const w = new Writer(256);
  w.string(header.clusterId);
  w.string(header.nodeId);
  w.uint(header.index);
  w.uint(header.term);
  w.uint(header.takenAtMs);
  w.uint(header.bodyBytes);
  w.bytes(bodySha256);
  const encoded = w.finish();
  const prefix = Buffer.alloc(PREFIX_BYTES + encoded.byteLength + CRC_BYTES);
  magicBytes.copy(prefix, 0);
  prefix.writeUInt16BE(SNAPSHOT_FORMAT_VERSION, MAGIC_BYTES);
  prefix.writeUInt32BE(encoded.byteLength, MAGIC_BYTES + VERSION_BYTES);
  prefix.set(encoded, PREFIX_BYTES);
  prefix.writeUInt32BE(crc32(prefix.subarray(MAGIC_BYTES, PREFIX_BYTES + encoded.byteLength)), PREFIX_BYTES + encoded.byteLength);
  return { header, chunks: [prefix, ...body], fileBytes: prefix.byteLength + header.bodyBytes };
}

/**
 * Reads a whole file: magic, version, header and its CRC, the body's length and SHA-256. Throws
 * SnapshotFileError saying what is wrong (not a snapshot, a newer format, truncated, corrupt).
 * The body's sections are not decoded here: checkSnapshotFile does that too.
 */
export function decodeSnapshotFile(file: Uint8Array): { readonly header: SnapshotHeader; readonly headerBytes: number; readonly body: Uint8Array } {
  const bytes = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  if (bytes.byteLength < MAGIC_BYTES || !bytes.subarray(0, MAGIC_BYTES).equals(magicBytes)) {
    throw new SnapshotFileError("notSnapshot", `not a Cairn snapshot: it does not start with "${SNAPSHOT_MAGIC}"; give a file written by \`cairn snapshot save\``);
  }
  if (bytes.byteLength < PREFIX_BYTES) throw truncated(`it ends after ${bytes.byteLength} bytes, inside its header`);
  const version = bytes.readUInt16BE(MAGIC_BYTES);
  if (version !== SNAPSHOT_FORMAT_VERSION) {
    throw new SnapshotFileError("version", `snapshot format version ${version} is not one this build reads (${SNAPSHOT_FORMAT_VERSION}): use the cairn that wrote it, or a newer one`);
  }
  const headerLength = bytes.readUInt32BE(MAGIC_BYTES + VERSION_BYTES);
  if (headerLength > HEADER_BYTES_MAX) throw corrupt(`its header claims ${headerLength} bytes, more than any header (${HEADER_BYTES_MAX})`);
  const bodyAt = PREFIX_BYTES + headerLength + CRC_BYTES;
  if (bytes.byteLength < bodyAt) throw truncated(`it ends after ${bytes.byteLength} bytes, inside its ${bodyAt}-byte header`);
  const storedCrc = bytes.readUInt32BE(PREFIX_BYTES + headerLength);
  if (crc32(bytes.subarray(MAGIC_BYTES, PREFIX_BYTES + headerLength)) !== storedCrc) throw corrupt("its header does not match the header's CRC-32");
  let header: SnapshotHeader;
  try {
    const r = new Reader(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength));
    const clusterId = r.string();
    const nodeId = r.string();
    const index = r.uint();
    const term = r.uint();
    const takenAtMs = r.uint();
    const bodyBytes = r.uint();
    const sha = r.bytes();
    r.done();
    if (sha.byteLength !== SHA256_BYTES) throw new CodecError(`its body checksum has ${sha.byteLength} bytes, not ${SHA256_BYTES}`);
    header = { formatVersion: version, clusterId, nodeId, index, term, takenAtMs, bodyBytes, bodySha256Hex: Buffer.from(sha).toString("hex") };
  } catch (err) {
    throw corrupt(`its header does not decode: ${errorMessage(err)}`);
  }
  const present = bytes.byteLength - bodyAt;
  if (present < header.bodyBytes) throw truncated(`its header says the body has ${header.bodyBytes} bytes, but only ${present} follow`);
  if (present > header.bodyBytes) throw corrupt(`${present - header.bodyBytes} bytes follow the ${header.bodyBytes}-byte body its header describes`);
  const body = bytes.subarray(bodyAt);
  const actual = Buffer.from(sha256([body])).toString("hex");
  if (actual !== header.bodySha256Hex) throw corrupt(`its body's SHA-256 is ${actual}, but its header says ${header.bodySha256Hex}`);
  return { header, headerBytes: bodyAt, body };
}

/** decodeSnapshotFile, then every section decoded strictly (sections.ts): what a restore would take. */
export function checkSnapshotFile(file: Uint8Array): { readonly header: SnapshotHeader; readonly headerBytes: number; readonly body: Uint8Array; readonly sections: BackupSection[] } {
  const decoded = decodeSnapshotFile(file);
  try {
    return { ...decoded, sections: checkBackupBody(decoded.body) };
  } catch (err) {
    if (err instanceof BackupSectionError) throw new SnapshotFileError("sections", `${err.message}; the file's checksum matches, so it was written wrong: take a new snapshot`);
    throw err;
  }
}

/** A header as the API and `cairn snapshot inspect --json` show it. */
export function snapshotHeaderJson(h: SnapshotHeader): SnapshotHeaderJson {
  return {
    formatVersion: h.formatVersion, clusterId: h.clusterId, nodeId: h.nodeId, index: h.index, term: h.term,
    takenAt: new Date(h.takenAtMs).toISOString(), bodyBytes: h.bodyBytes, sha256: h.bodySha256Hex,
  };
}

export interface SnapshotHeaderJson {
  readonly formatVersion: number;
  readonly clusterId: string;
  readonly nodeId: string;
  readonly index: number;
  readonly term: number;
  /** RFC 3339. */
  readonly takenAt: string;
  readonly bodyBytes: number;
  readonly sha256: string;
}

function truncated(detail: string): SnapshotFileError {
  return new SnapshotFileError("truncated", `the snapshot is truncated: ${detail}. The file was cut short (an interrupted save or copy?): use a complete copy`);
}

function corrupt(detail: string): SnapshotFileError {
  return new SnapshotFileError("corrupt", `the snapshot is corrupt: ${detail}. Use an undamaged copy`);
}
