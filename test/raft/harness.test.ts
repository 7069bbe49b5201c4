// The scenario harness's own checks must be able to fail. Every message a peer's Ready loop sends
// is checked against what the peer's disk holds durably at that moment; the driver's planted bug
// ackBeforeFsync (send a Ready's messages before its write is durable) must trip that check.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { Message } from "../../src/raft/core/types.js";
import type { DriverPlantedBug } from "../../src/raft/node/settings.js";
import { Network, bytes, messagesOf, paperState } from "./harness.js";

const VOTERS = ["a", "b", "c"];

/** A network of one node, `id`, recovered in term 2 with log [1@1] and no vote cast. */
async function nodeInTerm2(id: string, driverBug?: DriverPlantedBug): Promise<Network> {
  const net = new Network(61, {}, driverBug);
  await net.add(id, paperState(VOTERS, [1], 2));
  return net;
}

const voteInTerm2: Message = { type: "vote", from: "b", to: "a", term: 2, lastLogIndex: 1, lastLogTerm: 1, transfer: false };

const appendInTerm2: Message = {
  type: "append", from: "a", to: "b", term: 2, prevLogIndex: 1, prevLogTerm: 1,
  entries: [{ index: 2, term: 2, type: "normal", data: bytes("2@2") }], commit: 0,
};

void describe("the harness checks what a message promises against the durable disk", () => {
  void test("a vote granted before it is durable fails the check (driver plantedBug ackBeforeFsync)", async () => {
    const net = await nodeInTerm2("a", "ackBeforeFsync");
    await assert.rejects(net.send(voteInTerm2), /a granted b a vote in term 2 before the vote was durable/);
  });

  void test("an append acknowledged before it is durable fails the check (driver plantedBug ackBeforeFsync)", async () => {
    const net = await nodeInTerm2("b", "ackBeforeFsync");
    await assert.rejects(net.send(appendInTerm2), /b acknowledged index 2 but only 1 is durable/);
  });

  void test("without the planted bug the same vote and acknowledgement leave once durable, and pass", async () => {
    const voter = await nodeInTerm2("a");
    await voter.send(voteInTerm2);
    assert.equal(messagesOf(voter.sent, "voteResp", "a", "b")[0]?.reject, false, "the vote was granted");
    assert.equal(voter.peer("a").durable.hardState?.vote, "b");

    const follower = await nodeInTerm2("b");
    await follower.send(appendInTerm2);
    const ack = messagesOf(follower.sent, "appendResp", "b", "a")[0];
    assert.ok(ack !== undefined && !ack.reject && ack.index === 2, "the append was acknowledged");
    assert.equal(follower.peer("b").durable.entries.at(-1)?.index, 2);
  });
});
