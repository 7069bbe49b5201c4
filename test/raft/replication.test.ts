// Log replication and flow control: how a leader probes, streams, and bounds what it has in flight
// to each follower (progress.ts, inflights.ts), and how big one append may be.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { type AppendRequest, type Message, entryPayloadBytes } from "../../src/raft/core/types.js";
import { type ConfigOverrides, Network, logTerms, messagesOf } from "./harness.js";

const ELECTION_TIMEOUT_TICKS = 10;

async function electedCluster(defaults: ConfigOverrides = {}): Promise<Network> {
  const net = await Network.bootstrap(["a", "b", "c"], 9, defaults);
  await net.elect("a");
  return net;
}

/** Appends from the leader `a` to `to` that carry entries, among `messages`. */
function appendsWithEntries(messages: readonly Message[], to: string): AppendRequest[] {
  return messagesOf(messages, "append", "a", to).filter((m) => m.entries.length > 0);
}

function payloadBytes(m: AppendRequest): number {
  return m.entries.reduce((sum, e) => sum + entryPayloadBytes(e), 0);
}

function text(bytesLong: number, fill: string): string {
  return fill.repeat(bytesLong);
}

void describe("probe and replicate", () => {
  void test("a new leader probes a follower with one append at a time until it learns where their logs match", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 9);
    net.isolate("c");
    await net.elect("a");
    const a = net.node("a");
    for (let i = 0; i < 5; i++) await net.propose("a", `p${i}`);

    assert.equal(a.progressOf("c")?.state, "probe");
    assert.equal(messagesOf(net.sent, "append", "a", "c").length, 1, "only the first probe went out");
    assert.equal(a.progressOf("b")?.state, "replicate", "b answered, so the leader streams to it");
  });

  void test("a probed follower that comes back moves to replicate and receives everything", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 9);
    net.isolate("c");
    await net.elect("a");
    await net.propose("a", "p0", "p1", "p2");
    net.heal();
    // The next heartbeat response unpauses the probe.
    await net.tick(1, ["a"]);
    assert.equal(net.node("a").progressOf("c")?.state, "replicate");
    assert.deepEqual(net.peer("c").appliedTexts(), ["p0", "p1", "p2"]);
  });

  void test("in replicate state the leader streams appends without waiting for acknowledgements", async () => {
    const net = await electedCluster();
    net.drop((m) => m.type === "appendResp");
    const before = net.sent.length;
    for (let i = 0; i < 5; i++) await net.propose("a", `p${i}`);
    assert.equal(appendsWithEntries(net.sent.slice(before), "b").length, 5);
  });
});

void describe("flow control", () => {
  void test("the inflight window bounds the number of unacknowledged appends to a follower", async () => {
    const net = await electedCluster({ inflightMessagesMax: 4 });
    // b's acknowledgements are lost; c keeps the cluster committing.
    net.drop((m) => m.type === "appendResp" && m.from === "b");
    const before = net.sent.length;
    for (let i = 0; i < 12; i++) await net.propose("a", `p${i}`);

    assert.equal(appendsWithEntries(net.sent.slice(before), "b").length, 4);
    assert.equal(appendsWithEntries(net.sent.slice(before), "c").length, 12);
    assert.equal(net.node("a").log.committed, net.node("a").log.lastIndex(), "a and c still commit");
  });

  void test("the inflight window bounds the payload bytes of unacknowledged appends to a follower", async () => {
    const net = await electedCluster({ inflightBytesMax: 100 });
    net.drop((m) => m.type === "appendResp" && m.from === "b");
    const before = net.sent.length;
    for (let i = 0; i < 12; i++) await net.propose("a", text(30, String.fromCharCode(97 + i)));

    const toB = appendsWithEntries(net.sent.slice(before), "b");
    const bytes = toB.reduce((sum, m) => sum + payloadBytes(m), 0);
    // The window closes once it holds at least inflightBytesMax, so it may overshoot by one append.
    assert.equal(toB.length, 4, `${toB.length} appends, ${bytes} bytes in flight`);
    assert.ok(bytes >= 100 && bytes < 100 + 30);
  });

  void test("a follower whose acknowledgements were lost while its window was full catches up after the link heals", async () => {
    const net = await electedCluster({ inflightMessagesMax: 2 });
    net.drop((m) => m.type === "appendResp" && m.from === "b");
    for (let i = 0; i < 6; i++) await net.propose("a", `p${i}`);
    net.heal();
    await net.tick(3, ["a"]);
    assert.deepEqual(logTerms(net.node("b")), logTerms(net.node("a")), "b's log caught up");
    assert.equal(net.node("a").progressOf("b")?.match, net.node("a").log.lastIndex());
  });

  void test("messageBytesMax limits the payload of one append, and a larger entry travels alone", async () => {
    const net = await electedCluster({ messageBytesMax: 100 });
    net.isolate("c");
    const small = Array.from({ length: 10 }, (_, i) => text(40, String(i)));
    await net.propose("a", ...small);
    await net.propose("a", text(250, "L"));
    await net.propose("a", "tail");
    net.heal();
    const before = net.sent.length;
    await net.tickUntil(() => net.node("c").log.lastIndex() === net.node("a").log.lastIndex(), 2 * ELECTION_TIMEOUT_TICKS, ["a"]);

    const toC = appendsWithEntries(net.sent.slice(before), "c");
    for (const m of toC) {
      assert.ok(payloadBytes(m) <= 100 || m.entries.length === 1, `an append of ${m.entries.length} entries, ${payloadBytes(m)} bytes`);
    }
    assert.ok(toC.some((m) => m.entries.length === 2), "small entries are batched up to the limit");
    assert.ok(toC.some((m) => payloadBytes(m) === 250), "the 250-byte entry was sent on its own");
    await net.tick(1, ["a"]);
    assert.deepEqual(net.peer("c").appliedTexts(), [...small, text(250, "L"), "tail"]);
  });

  void test("committed entries are handed to the state machine in batches of at most committedBytesPerReadyMax", async () => {
    const net = await electedCluster({ committedBytesPerReadyMax: 50 });
    net.isolate("b");
    const texts = Array.from({ length: 6 }, (_, i) => text(20, String(i)));
    await net.propose("a", ...texts);
    net.heal();
    await net.tick(1, ["a"]);

    const b = net.peer("b");
    assert.deepEqual(b.appliedTexts(), texts);
    for (const batch of b.appliedBatches) {
      assert.ok(batch.bytes <= 50 || batch.entries === 1, `a batch of ${batch.entries} entries, ${batch.bytes} bytes`);
    }
    assert.ok(b.appliedBatches.length >= 3, "six 20-byte entries need at least three Readies");
  });
});
