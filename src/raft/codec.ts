// The binary encoding of Raft's data, shared by the disk (storage/) and the wire (transport/),
// written with the common codec.

import { CodecError, Reader, Writer } from "../common/codec.js";
import type { ConfChange, ConfState, Entry, HardState, Message, Snapshot, SnapshotMetadata } from "./core/types.js";

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
    case "preVoteResp": {
      // Bit 0: rejected; bit 1: the voter's commit index and its term follow.
      const hinted = m.commitIndex !== undefined && m.commitIndex > 0;
      w.u8((m.reject ? 1 : 0) | (hinted ? 2 : 0));
      if (hinted) {
        w.uint(m.commitIndex ?? 0);
        w.uint(m.commitTerm ?? 0);
      }
      return;
    }
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
    case "preVoteResp": {
      const flags = r.u8();
      if (flags > 3) throw new CodecError(`invalid vote response flags ${flags}`);
      const reject = (flags & 1) !== 0;
      if ((flags & 2) === 0) return { type, from, to, term, reject };
      return { type, from, to, term, reject, commitIndex: r.uint(), commitTerm: r.uint() };
    }
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
