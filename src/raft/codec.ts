// The binary encoding of Raft's data, shared by the disk (storage.ts) and the wire (transport.ts).
// Compact and allocation-light: numbers are LEB128 varints, strings are length-prefixed UTF-8.
// Decoding never trusts its input: a malformed buffer raises CodecError, never a wrong value.

import type { ConfChange, ConfState, Entry, HardState, Message, Snapshot, SnapshotMetadata } from "./types.js";

export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CodecError";
  }
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export class Writer {
  private buf: Uint8Array;
  private pos = 0;

  private readonly initialBytes: number;

  constructor(initialBytes = 256) {
    this.initialBytes = Math.max(16, initialBytes);
    this.buf = new Uint8Array(this.initialBytes);
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf[this.pos++] = v;
  }

  uint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new CodecError(`cannot encode ${v} as an unsigned integer`);
    this.reserve(8);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }

  bytes(v: Uint8Array): void {
    this.uint(v.byteLength);
    this.reserve(v.byteLength);
    this.buf.set(v, this.pos);
    this.pos += v.byteLength;
  }

  /** Bytes with no length in front: for a payload whose length was already written. */
  raw(v: Uint8Array): void {
    this.reserve(v.byteLength);
    this.buf.set(v, this.pos);
    this.pos += v.byteLength;
  }

  /** Length-prefixed UTF-8. Most strings here are short ASCII, copied in without an encoder call. */
  string(v: string): void {
    const n = v.length;
    let ascii = true;
    for (let i = 0; i < n && ascii; i++) ascii = v.charCodeAt(i) < 0x80;
    if (!ascii) {
      this.bytes(textEncoder.encode(v));
      return;
    }
    this.uint(n);
    this.reserve(n);
    for (let i = 0; i < n; i++) this.buf[this.pos++] = v.charCodeAt(i);
  }

  strings(v: readonly string[]): void {
    this.uint(v.length);
    for (const s of v) this.string(s);
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  /**
   * The bytes written since the last take, in a buffer of their own, and the writer empty again:
   * one writer serves as reusable scratch, shrinking back to its initial size after a large write.
   */
  take(): Uint8Array {
    const out = this.buf.slice(0, this.pos);
    this.pos = 0;
    if (this.buf.length > this.initialBytes) this.buf = new Uint8Array(this.initialBytes);
    return out;
  }
}

/**
 * A state machine's snapshot as a list of chunks, in order. Large states are produced in slices;
 * keeping them apart until the one final copy saves holding the whole state several times over.
 */
export type Chunks = readonly Uint8Array[];

export function chunksLength(chunks: Chunks): number {
  let total = 0;
  for (const c of chunks) total += c.byteLength;
  return total;
}

/** Writes `chunks` as one length-prefixed byte string, as Writer.bytes would write their concatenation. */
export function writeChunks(w: Writer, chunks: Chunks): void {
  w.uint(chunksLength(chunks));
  for (const c of chunks) w.raw(c);
}

export function concatChunks(chunks: Chunks): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(chunksLength(chunks));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

export class Reader {
  private pos = 0;

  constructor(private readonly buf: Uint8Array) {}

  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new CodecError(`truncated: needed ${n} more bytes at offset ${this.pos} of ${this.buf.length}`);
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }

  /** A boolean is exactly 0 or 1: a damaged byte must not read as "false" (a reject as an accept). */
  bool(): boolean {
    const b = this.u8();
    if (b > 1) throw new CodecError(`invalid boolean byte ${b} at offset ${this.pos - 1}`);
    return b === 1;
  }

  uint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(result)) break;
        return result;
      }
      scale *= 0x80;
    }
    throw new CodecError(`malformed unsigned integer ending at offset ${this.pos}`);
  }

  bytes(): Uint8Array {
    const n = this.uint();
    this.need(n);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  string(): string {
    try {
      return textDecoder.decode(this.bytes());
    } catch (err) {
      if (err instanceof CodecError) throw err;
      throw new CodecError(`invalid UTF-8 string ending at offset ${this.pos}`);
    }
  }

  strings(): string[] {
    const n = this.uint();
    if (n > this.buf.length) throw new CodecError(`string list of ${n} items cannot fit in ${this.buf.length} bytes`);
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.string());
    return out;
  }

  done(): void {
    if (this.pos !== this.buf.length) throw new CodecError(`${this.buf.length - this.pos} unexpected trailing bytes`);
  }
}

// ---------------------------------------------------------------- entries

const CONF_TYPES = ["addLearner", "promote", "remove"] as const;

export function writeEntry(w: Writer, e: Entry): void {
  w.uint(e.index);
  w.uint(e.term);
  if (e.type === "normal") {
    w.u8(0);
    w.bytes(e.data);
  } else {
    w.u8(1);
    w.u8(CONF_TYPES.indexOf(e.change.type));
    w.string(e.change.node);
    w.string(e.change.type === "addLearner" ? (e.change.context ?? "") : "");
  }
}

export function readEntry(r: Reader): Entry {
  const index = r.uint();
  const term = r.uint();
  const kind = r.u8();
  if (kind === 0) return { index, term, type: "normal", data: r.bytes() };
  if (kind !== 1) throw new CodecError(`unknown entry kind ${kind}`);
  const type = CONF_TYPES[r.u8()];
  if (type === undefined) throw new CodecError("unknown membership change type");
  const node = r.string();
  const context = r.string();
  // An empty context is written for "none", so read it back as none.
  const change: ConfChange = type === "addLearner" && context !== "" ? { type, node, context } : { type, node };
  return { index, term, type: "confChange", change };
}

export function encodeEntry(e: Entry): Uint8Array {
  const w = new Writer(32 + (e.type === "normal" ? e.data.byteLength : 32));
  writeEntry(w, e);
  return w.finish();
}

export function decodeEntry(buf: Uint8Array): Entry {
  const r = new Reader(buf);
  const e = readEntry(r);
  r.done();
  return e;
}

// ---------------------------------------------------------------- state

export function encodeHardState(h: HardState): Uint8Array {
  const w = new Writer(32);
  w.uint(h.term);
  w.string(h.vote);
  w.uint(h.commit);
  return w.finish();
}

export function decodeHardState(buf: Uint8Array): HardState {
  const r = new Reader(buf);
  const h = { term: r.uint(), vote: r.string(), commit: r.uint() };
  r.done();
  return h;
}

function writeConf(w: Writer, c: ConfState): void {
  w.strings(c.voters);
  w.strings(c.learners);
}

function readConf(r: Reader): ConfState {
  return { voters: r.strings(), learners: r.strings() };
}

export function writeSnapshotMetadata(w: Writer, m: SnapshotMetadata): void {
  w.uint(m.index);
  w.uint(m.term);
  writeConf(w, m.conf);
}

export function readSnapshotMetadata(r: Reader): SnapshotMetadata {
  return { index: r.uint(), term: r.uint(), conf: readConf(r) };
}

export function encodeSnapshot(s: Snapshot): Uint8Array {
  const w = new Writer(64 + s.data.byteLength);
  writeSnapshotMetadata(w, s.metadata);
  w.bytes(s.data);
  return w.finish();
}

export function decodeSnapshot(buf: Uint8Array): Snapshot {
  const r = new Reader(buf);
  const metadata = readSnapshotMetadata(r);
  const data = r.bytes();
  r.done();
  return { metadata, data };
}

// ---------------------------------------------------------------- messages

const MESSAGE_TYPES = [
  "vote", "preVote", "voteResp", "preVoteResp", "append", "appendResp", "heartbeat", "heartbeatResp",
  "snapshot", "snapshotStatus", "unreachable", "timeoutNow", "readIndex", "readIndexResp",
] as const satisfies readonly Message["type"][];

export function writeMessage(w: Writer, m: Message): void {
  w.u8(MESSAGE_TYPES.indexOf(m.type));
  w.string(m.from);
  w.string(m.to);
  w.uint(m.term);
  switch (m.type) {
    case "vote":
    case "preVote":
      w.uint(m.lastLogIndex);
      w.uint(m.lastLogTerm);
      w.u8(m.transfer ? 1 : 0);
      return;
    case "voteResp":
    case "preVoteResp":
    case "snapshotStatus":
      w.u8(m.reject ? 1 : 0);
      return;
    case "append":
      w.uint(m.prevLogIndex);
      w.uint(m.prevLogTerm);
      w.uint(m.commit);
      w.uint(m.entries.length);
      for (const e of m.entries) writeEntry(w, e);
      return;
    case "appendResp":
      w.u8(m.reject ? 1 : 0);
      w.uint(m.index);
      w.uint(m.rejectHintIndex);
      w.uint(m.rejectHintTerm);
      return;
    case "heartbeat":
      w.uint(m.commit);
      w.string(m.readContext);
      return;
    case "heartbeatResp":
      w.string(m.readContext);
      return;
    case "snapshot":
      writeSnapshotMetadata(w, m.snapshot.metadata);
      w.bytes(m.snapshot.data);
      return;
    case "unreachable":
    case "timeoutNow":
      return;
    case "readIndex":
      w.string(m.context);
      return;
    case "readIndexResp":
      w.string(m.context);
      w.uint(m.index);
      return;
  }
}

export function readMessage(r: Reader): Message {
  const type = MESSAGE_TYPES[r.u8()];
  if (type === undefined) throw new CodecError("unknown message type");
  const from = r.string();
  const to = r.string();
  const term = r.uint();
  switch (type) {
    case "vote":
    case "preVote":
      return { type, from, to, term, lastLogIndex: r.uint(), lastLogTerm: r.uint(), transfer: r.bool() };
    case "voteResp":
    case "preVoteResp":
    case "snapshotStatus":
      return { type, from, to, term, reject: r.bool() };
    case "append": {
      const prevLogIndex = r.uint();
      const prevLogTerm = r.uint();
      const commit = r.uint();
      const count = r.uint();
      const entries: Entry[] = [];
      for (let i = 0; i < count; i++) entries.push(readEntry(r));
      return { type, from, to, term, prevLogIndex, prevLogTerm, commit, entries };
    }
    case "appendResp":
      return { type, from, to, term, reject: r.bool(), index: r.uint(), rejectHintIndex: r.uint(), rejectHintTerm: r.uint() };
    case "heartbeat":
      return { type, from, to, term, commit: r.uint(), readContext: r.string() };
    case "heartbeatResp":
      return { type, from, to, term, readContext: r.string() };
    case "snapshot": {
      const metadata = readSnapshotMetadata(r);
      return { type, from, to, term, snapshot: { metadata, data: r.bytes() } };
    }
    case "unreachable":
    case "timeoutNow":
      return { type, from, to, term };
    case "readIndex":
      return { type, from, to, term, context: r.string() };
    case "readIndexResp":
      return { type, from, to, term, context: r.string(), index: r.uint() };
  }
}

/** A batch of messages in one buffer: what one transport frame carries. */
export function encodeMessages(messages: readonly Message[]): Uint8Array {
  const w = new Writer(256);
  w.uint(messages.length);
  for (const m of messages) writeMessage(w, m);
  return w.finish();
}

export function decodeMessages(buf: Uint8Array): Message[] {
  const r = new Reader(buf);
  const n = r.uint();
  if (n > buf.length) throw new CodecError(`a batch of ${n} messages cannot fit in ${buf.length} bytes`);
  const out: Message[] = [];
  for (let i = 0; i < n; i++) out.push(readMessage(r));
  r.done();
  return out;
}
