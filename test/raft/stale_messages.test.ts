// Messages that arrive late, from an older term, must never count as an acknowledgement of entries
// the sender's log holds differently. The transport keeps queued messages across a reconnect and
// delivers them in order, so "late" is routine, not exotic.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { Message } from "../../src/raft/core/types.js";
import { RaftNode } from "../../src/raft/core/raft.js";
import { Network, bytes, logTerms, messagesOf, nodeConfig, paperState } from "./harness.js";

const VOTERS = ["a", "b", "c", "d", "e"];

void describe("stale acknowledgements", () => {
  void test("an append from an older term is answered with index 0, so a later leader of that term cannot commit on a minority", async () => {
    const net = new Network(11);
    // a led term 2 and wrote 2@2 only to itself; c led term 3 and wrote 2..4 to b only. b has since
    // learned term 4 (from a pre-vote rejection, say). Nothing is committed beyond index 1... yet.
    await net.add("a", paperState(VOTERS, [1, 2], 3));
    await net.add("b", paperState(VOTERS, [1, 3, 3, 3], 4));
    await net.add("c", paperState(VOTERS, [1, 3, 3, 3], 3));
    await net.add("d", paperState(VOTERS, [1], 3));
    await net.add("e", paperState(VOTERS, [1], 3));
    net.isolate("c");
    // b's answers to a are held back: the reply to the stale append reaches a only later.
    const heldFromB: Message[] = [];
    let holdingB = true;
    net.drop((m) => holdingB && m.from === "b" && m.to === "a" && heldFromB.push(m) > 0);

    // The term-2 append a queued while its link to b was down reaches b now, at term 4.
    await net.send({
      type: "append", from: "a", to: "b", term: 2, prevLogIndex: 1, prevLogTerm: 1,
      entries: [{ index: 2, term: 2, type: "normal", data: bytes("2@2") }], commit: 0,
    });
    const staleReply = messagesOf(heldFromB, "appendResp")[0];
    assert.ok(staleReply !== undefined, "b answers the stale append (it tells a about term 4)");
    assert.equal(staleReply.term, 4);
    assert.equal(staleReply.index, 0, "the answer acknowledges no entry");

    // a wins term 4 with d and e (b's log is more up to date, and its refusals are held anyway).
    await net.elect("a");
    assert.equal(net.node("a").term, 4);
    assert.equal(net.node("a").log.committed, 3, "a, d and e hold the empty entry of term 4");
    // x reaches d only: held by a and d, it is on two of five nodes and must not commit.
    net.drop((m) => m.from === "a" && m.to === "e");
    await net.propose("a", "x");
    assert.equal(net.node("a").log.lastIndex(), 4);

    // Now the link from b heals and the held answer arrives, in a's own term.
    holdingB = false;
    await net.send(staleReply);
    assert.equal(net.node("a").log.committed, 3, "x, held by a and d only, is not committed");
    assert.deepEqual(net.node("a").progressOf("b")?.match, 0, "b is not taken to hold anything");
    assert.equal(net.appliedDisagreement(), undefined, "b does not apply its own term-3 entries as committed");

    // Once everything heals, b is repaired and every node agrees.
    net.heal();
    await net.tick(5);
    for (const id of VOTERS) {
      assert.deepEqual(logTerms(net.node(id)), [1, 2, 4, 4], `log of ${id}`);
      assert.equal(net.node(id).log.committed, 4, `commit index of ${id}`);
    }
    assert.equal(net.appliedDisagreement(), undefined);
  });

  void test("a leader ignores an acknowledgement of an index beyond its own last index", async () => {
    const net = await Network.bootstrap(["a", "b", "c"], 3);
    await net.elect("a");
    await net.propose("a", "x");
    const last = net.node("a").log.lastIndex();
    const before = net.node("a").progressOf("b")?.match;
    await net.send({ type: "appendResp", from: "b", to: "a", term: net.node("a").term, reject: false, index: last + 5, rejectHintIndex: 0, rejectHintTerm: 0 });
    assert.equal(net.node("a").progressOf("b")?.match, before);
    assert.ok((net.node("a").progressOf("b")?.next ?? 0) <= last + 1);
  });

  void test("an acknowledgement made in an older term never leaves once a newer leader overwrote its entry in the same batch", () => {
    // f takes 2@2 from term 2's leader, then, before its next Ready, an append of term 3 that
    // overwrites index 2. The Ready persists 2@3; it must not also send "I hold 2 (as of term 2)".
    const f = new RaftNode(nodeConfig("f", 13), paperState(["l2", "l3", "f"], [1], 2));
    f.step({ type: "append", from: "l2", to: "f", term: 2, prevLogIndex: 1, prevLogTerm: 1, entries: [{ index: 2, term: 2, type: "normal", data: bytes("2@2") }], commit: 0 });
    f.step({ type: "append", from: "l3", to: "f", term: 3, prevLogIndex: 1, prevLogTerm: 1, entries: [{ index: 2, term: 3, type: "normal", data: bytes("2@3") }], commit: 0 });
    const rd = f.ready();
    assert.deepEqual(rd.entries.map((e) => `${e.index}@${e.term}`), ["2@3"], "only the newer entry is written");
    const acks = messagesOf(rd.messages, "appendResp", "f").filter((m) => !m.reject);
    assert.deepEqual(acks.map((m) => `to ${m.to} in term ${m.term}: ${m.index}`), ["to l3 in term 3: 2"]);
  });
});
