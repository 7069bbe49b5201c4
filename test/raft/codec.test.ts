// The binary codec shared by the disk and the wire: every value round-trips exactly, and a
// truncated or malformed buffer raises CodecError instead of decoding to something else.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { decodeEntry, decodeHardState, decodeMessages, decodeSnapshot, encodeEntry, encodeHardState, encodeMessages, encodeSnapshot } from "../../src/raft/codec.js";
import { CodecError, Writer } from "../../src/common/codec.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import type { Entry, HardState, Message, MessageType, Snapshot } from "../../src/raft/core/types.js";

const encoder = new TextEncoder();

const ENTRIES: readonly Entry[] = [
  { index: 1, term: 1, type: "normal", data: new Uint8Array(0) },
  { index: 2, term: 1, type: "normal", data: encoder.encode("register service web") },
  { index: 300, term: 7, type: "normal", data: new Uint8Array([0, 255, 128, 127, 1]) },
  { index: 301, term: 7, type: "confChange", change: { type: "addLearner", node: "d", context: "10.0.0.4:7000" } },
  { index: 302, term: 7, type: "confChange", change: { type: "addLearner", node: "nœud-ü", context: "[::1]:7000" } },
  { index: 303, term: 8, type: "confChange", change: { type: "promote", node: "d" } },
  { index: 304, term: 8, type: "confChange", change: { type: "remove", node: "c" } },
  { index: Number.MAX_SAFE_INTEGER, term: Number.MAX_SAFE_INTEGER, type: "normal", data: encoder.encode("edge") },
];

const SNAPSHOTS: readonly Snapshot[] = [
  { metadata: { index: 1, term: 1, conf: { voters: ["a", "b", "c"], learners: [] } }, data: new Uint8Array(0) },
  { metadata: { index: 9000, term: 12, conf: { voters: ["a"], learners: ["d", "e"] } }, data: encoder.encode("state") },
  { metadata: { index: 0, term: 0, conf: { voters: [], learners: [] } }, data: new Uint8Array(70_000).fill(7) },
];

const HARD_STATES: readonly HardState[] = [
  { term: 0, vote: "", commit: 0 },
  { term: 5, vote: "b", commit: 1234567 },
  { term: 2 ** 40, vote: "node-with-a-long-name-ü", commit: 2 ** 52 },
];

const SNAPSHOT = SNAPSHOTS[1];

/** One of every message type; `satisfies` makes a new type in types.ts a compile error here. */
const MESSAGES = {
  vote: { type: "vote", from: "a", to: "b", term: 3, lastLogIndex: 10, lastLogTerm: 2, transfer: false },
  preVote: { type: "preVote", from: "a", to: "b", term: 4, lastLogIndex: 11, lastLogTerm: 3, transfer: true },
  voteResp: { type: "voteResp", from: "b", to: "a", term: 3, reject: true, commitIndex: 41, commitTerm: 2 },
  preVoteResp: { type: "preVoteResp", from: "b", to: "a", term: 4, reject: false },
  append: { type: "append", from: "a", to: "c", term: 8, prevLogIndex: 300, prevLogTerm: 7, entries: ENTRIES.slice(2, 7), commit: 299 },
  appendResp: { type: "appendResp", from: "c", to: "a", term: 8, reject: true, index: 300, rejectHintIndex: 120, rejectHintTerm: 5 },
  heartbeat: { type: "heartbeat", from: "a", to: "b", term: 8, commit: 304, readContext: "read-17" },
  heartbeatResp: { type: "heartbeatResp", from: "b", to: "a", term: 8, readContext: "" },
  snapshot: { type: "snapshot", from: "a", to: "d", term: 12, snapshot: SNAPSHOT },
  snapshotStatus: { type: "snapshotStatus", from: "d", to: "a", term: 0, reject: true },
  unreachable: { type: "unreachable", from: "d", to: "a", term: 0 },
  timeoutNow: { type: "timeoutNow", from: "a", to: "b", term: 9 },
  readIndex: { type: "readIndex", from: "b", to: "a", term: 9, context: "client-42" },
  readIndexResp: { type: "readIndexResp", from: "a", to: "b", term: 9, context: "client-42", index: 310 },
} as const satisfies { readonly [T in MessageType]: Message & { readonly type: T } };

const ALL_MESSAGES: readonly Message[] = Object.values(MESSAGES);

/** Every proper prefix of a valid encoding is truncated, and must be refused as such. */
function assertEveryPrefixRefused(encoded: Uint8Array, decode: (buf: Uint8Array) => unknown, what: string): void {
  for (let n = 0; n < encoded.length; n++) {
    assert.throws(() => decode(encoded.subarray(0, n)), CodecError, `${what} truncated to ${n} of ${encoded.length} bytes`);
  }
}

function withTrailingByte(encoded: Uint8Array): Uint8Array {
  const out = new Uint8Array(encoded.length + 1);
  out.set(encoded);
  return out;
}

function bytesOf(...parts: (number | string)[]): Uint8Array {
  const w = new Writer(16);
  for (const p of parts) {
    if (typeof p === "string") w.string(p);
    else w.u8(p);
  }
  return w.finish();
}

void describe("codec round trips", () => {
  void test("every message type round-trips, alone and in one batch", () => {
    for (const m of ALL_MESSAGES) assert.deepEqual(decodeMessages(encodeMessages([m])), [m], m.type);
    assert.deepEqual(decodeMessages(encodeMessages(ALL_MESSAGES)), ALL_MESSAGES);
    assert.deepEqual(decodeMessages(encodeMessages([])), []);
  });

  void test("normal entries and every membership change, including addLearner with its context, round-trip", () => {
    for (const e of ENTRIES) assert.deepEqual(decodeEntry(encodeEntry(e)), e, `entry ${e.index}`);
    const kinds = new Set(ENTRIES.map((e) => (e.type === "normal" ? "normal" : e.change.type)));
    assert.deepEqual([...kinds].sort(), ["addLearner", "normal", "promote", "remove"]);
  });

  void test("an addLearner without a context round-trips without one", () => {
    const entry = { index: 5, term: 2, type: "confChange", change: { type: "addLearner", node: "d" } } as const;
    assert.deepEqual(decodeEntry(encodeEntry(entry)), entry);
  });

  void test("hard states round-trip, including an empty vote and commit indexes above 2^32", () => {
    for (const h of HARD_STATES) assert.deepEqual(decodeHardState(encodeHardState(h)), h);
  });

  void test("snapshots round-trip, with empty and non-empty configurations and data", () => {
    for (const s of SNAPSHOTS) assert.deepEqual(decodeSnapshot(encodeSnapshot(s)), s);
  });

  void test("numbers that are not unsigned safe integers are refused when encoding", () => {
    for (const bad of [-1, 1.5, Number.MAX_SAFE_INTEGER + 1, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => encodeHardState({ term: bad, vote: "", commit: 0 }), CodecError, String(bad));
      assert.throws(() => encodeEntry({ index: bad, term: 1, type: "normal", data: new Uint8Array(0) }), CodecError, String(bad));
    }
  });
});

void describe("codec refuses malformed input", () => {
  void test("every truncation of every encoding throws CodecError", () => {
    for (const e of ENTRIES) assertEveryPrefixRefused(encodeEntry(e), decodeEntry, `entry ${e.index}`);
    for (const h of HARD_STATES) assertEveryPrefixRefused(encodeHardState(h), decodeHardState, "hard state");
    for (const s of SNAPSHOTS.slice(0, 2)) assertEveryPrefixRefused(encodeSnapshot(s), decodeSnapshot, "snapshot");
    for (const m of ALL_MESSAGES) assertEveryPrefixRefused(encodeMessages([m]), decodeMessages, `message ${m.type}`);
  });

  void test("trailing bytes after a complete value throw CodecError", () => {
    assert.throws(() => decodeEntry(withTrailingByte(encodeEntry(ENTRIES[1]))), CodecError);
    assert.throws(() => decodeHardState(withTrailingByte(encodeHardState(HARD_STATES[1]))), CodecError);
    assert.throws(() => decodeSnapshot(withTrailingByte(encodeSnapshot(SNAPSHOT))), CodecError);
    assert.throws(() => decodeMessages(withTrailingByte(encodeMessages([MESSAGES.vote]))), CodecError);
  });

  void test("unknown tags, invalid UTF-8 and oversized numbers or counts throw CodecError", () => {
    const cases: [string, () => unknown][] = [
      ["unknown entry kind", () => decodeEntry(bytesOf(1, 1, 2))],
      ["unknown membership change type", () => decodeEntry(bytesOf(1, 1, 1, 3, "d", ""))],
      ["unknown message type", () => decodeMessages(bytesOf(1, 14, "a", "b", 1))],
      ["message type 255", () => decodeMessages(bytesOf(1, 255, "a", "b", 1))],
      ["invalid UTF-8 in a node id", () => decodeHardState(new Uint8Array([1, 2, 0xc3, 0x28, 0]))],
      ["lone continuation byte in a node id", () => decodeHardState(new Uint8Array([1, 1, 0x80, 0]))],
      ["varint longer than 8 bytes", () => decodeHardState(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0]))],
      ["varint of 2^53", () => decodeHardState(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0]))],
      ["string longer than the buffer", () => decodeHardState(new Uint8Array([1, 100, 0x61, 0]))],
      ["string list count larger than the buffer", () => decodeSnapshot(new Uint8Array([1, 1, 0x7f, 0, 0]))],
      ["message count larger than the buffer", () => decodeMessages(new Uint8Array([0x7f, 11, 0, 0, 0]))],
      ["append with more entries than it carries", () => decodeMessages(bytesOf(1, 4, "a", "b", 1, 0, 0, 0, 100))],
    ];
    for (const [what, decode] of cases) assert.throws(decode, CodecError, what);
  });

  void test("random garbage either throws CodecError or decodes to a value that re-encodes to itself", () => {
    const random = new SeededRandom(99);
    const decoders: [string, (buf: Uint8Array) => unknown, (v: never) => Uint8Array][] = [
      ["entry", decodeEntry, encodeEntry],
      ["hard state", decodeHardState, encodeHardState],
      ["snapshot", decodeSnapshot, encodeSnapshot],
      ["messages", decodeMessages, encodeMessages],
    ];
    let decodedCount = 0;
    for (let i = 0; i < 4000; i++) {
      const buf = new Uint8Array(random.nextInt(40));
      for (let j = 0; j < buf.length; j++) buf[j] = random.nextInt(i % 2 === 0 ? 256 : 16);
      for (const [what, decode, encode] of decoders) {
        let value: unknown;
        try {
          value = decode(buf);
        } catch (err) {
          assert.ok(err instanceof CodecError, `${what} of ${Buffer.from(buf).toString("hex")} threw ${String(err)}, not CodecError`);
          continue;
        }
        decodedCount++;
        // Whatever decoded must be a well-formed value: encoding it again and decoding that gives it back.
        assert.deepEqual(decode(encode(value as never)), value, `${what} of ${Buffer.from(buf).toString("hex")}`);
      }
    }
    assert.ok(decodedCount > 0, "some garbage is well-formed, so the re-encoding check did run");
  });

  void test("a boolean byte other than 0 or 1 is refused", () => {
    const vote = encodeMessages([MESSAGES.vote]);
    const tampered = vote.slice();
    tampered[tampered.length - 1] = 2;
    assert.throws(() => decodeMessages(tampered), CodecError);
  });
});
