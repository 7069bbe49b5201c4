// Which members the leader can reach, on the simulated ports: the leader hears from each live
// follower every heartbeat, a crashed one goes silent and shows as unreachable once an election
// timeout has passed, and a follower asked for the cluster's status gets the leader's view over
// the peer network.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decodeStatusReply, encodeStatusReply } from "../../src/raft/node/forwarding.js";
import { NotAvailableError } from "../../src/raft/node/errors.js";
import { NONE } from "../../src/raft/core/types.js";
import { DriverCluster, scenarioDefaults } from "./driver_cluster.js";

const { tickMs } = scenarioDefaults;
const electionTimeoutMs = tickMs * 10;

void describe("member contact", () => {
  void test("the leader sees every follower reachable; a crashed one turns unreachable after an election timeout, and a follower reports the leader's view", async () => {
    const cluster = await DriverCluster.start(11, { electionTimeoutTicks: 10 });
    const leader = cluster.leader() as string;
    const [follower, doomed] = cluster.followers();
    await cluster.runFor(3 * tickMs);
    const before = cluster.driver(leader).status();
    for (const m of before.members) {
      assert.equal(m.reachable, true, `${m.id} reachable while all run`);
      assert.ok((m.lastContactMs ?? Infinity) <= 2 * tickMs, `${m.id} heard from within a heartbeat or two (${m.lastContactMs} ms)`);
    }
    // A follower knows nothing of the others' contact: only the leader does.
    assert.ok(cluster.driver(follower).status().members.every((m) => m.reachable === undefined && m.lastContactMs === undefined));

    cluster.crash(doomed);
    const crashedAtMs = cluster.world.nowMs;
    const doomedOf = (status: { members: { id: string; reachable: boolean | undefined }[] }): boolean | undefined => status.members.find((m) => m.id === doomed)?.reachable;
    await cluster.runUntil(() => doomedOf(cluster.driver(leader).status()) === false, electionTimeoutMs + 3 * tickMs, `the leader sees ${doomed} unreachable`);
    const silentMs = cluster.world.nowMs - crashedAtMs;
    assert.ok(silentMs >= electionTimeoutMs - tickMs, `not before an election timeout of silence (${silentMs} ms)`);

    const asked = cluster.track(cluster.driver(follower).leaderStatus());
    await cluster.runUntil(() => asked.settled, 1_000, "the follower's status request is answered");
    assert.equal(asked.error, undefined);
    const view = asked.value;
    assert.ok(view !== undefined);
    assert.equal(view.id, leader, "answered by the leader");
    assert.equal(doomedOf(view), false);
    assert.equal(view.members.find((m) => m.id === follower)?.reachable, true);
    assert.deepEqual(cluster.fatalErrors, []);
  });

  void test("without a leader, a status request fails at once and says so", async () => {
    const cluster = await DriverCluster.start(12);
    const [survivor, other] = cluster.followers();
    cluster.crash(cluster.leader() as string);
    cluster.crash(other);
    await cluster.runUntil(() => cluster.driver(survivor).leader === NONE, 1_000, `${survivor} notices the leader is gone`);
    const asked = cluster.track(cluster.driver(survivor).leaderStatus());
    await cluster.runFor(tickMs);
    assert.ok(asked.settled, "not held for the leader wait");
    assert.ok(asked.error instanceof NotAvailableError);
    assert.match(asked.error.message, /no leader/);
  });

  void test("the status reply decodes strictly: what was sent comes back, and damage is refused", () => {
    const status = {
      id: "n1", role: "leader" as const, leader: "n1", term: 4, commitIndex: 90, appliedIndex: 90, lastContactMs: 0,
      members: [
        { id: "n1", peerAddress: "127.0.0.1:1", role: "leader" as const, match: 90, lastContactMs: 0, reachable: true },
        { id: "n2", peerAddress: "127.0.0.1:2", role: "follower" as const, match: 88, lastContactMs: 700, reachable: false },
        { id: "n3", peerAddress: "127.0.0.1:3", role: "learner" as const, match: undefined, lastContactMs: undefined, reachable: undefined },
      ],
    };
    const bytes = encodeStatusReply(status);
    assert.deepEqual(decodeStatusReply(bytes, "n1"), status);
    assert.throws(() => decodeStatusReply(new Uint8Array([...bytes, 0]), "n1"), /trailing/);
    assert.throws(() => decodeStatusReply(bytes.subarray(0, bytes.length - 2), "n1"), /truncated/);
  });
});
