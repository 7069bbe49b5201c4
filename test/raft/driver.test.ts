// The driver's answers to its clients across leader changes, on the simulated ports: virtual
// time, a simulated disk per node and the simulated network, so each scenario is scripted exactly
// and replays the same way every run. Every wait a client can be in has a bound, every answer
// says whether the request certainly had no effect, and only then is it retried.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { errorMessage } from "../../src/common/errors.js";
import { NONE } from "../../src/raft/core/types.js";
import { NotAvailableError } from "../../src/raft/node/errors.js";
import { DriverCluster, type Outcome, type ScenarioSettings, scenarioDefaults } from "./driver_cluster.js";

const { tickMs, requestTimeoutMs, leaderWaitMs } = scenarioDefaults;

/** The outcome was a NotAvailableError; returns it. */
function notAvailable(outcome: Outcome<unknown>, what: string): NotAvailableError {
  assert.ok(outcome.settled, `${what}: not answered`);
  assert.ok(outcome.error instanceof NotAvailableError, `${what}: expected a NotAvailableError, got ${outcome.error === undefined ? `success (${String(outcome.value)})` : errorMessage(outcome.error)}`);
  return outcome.error;
}

function succeeded<T>(outcome: Outcome<T>, what: string): T {
  assert.ok(outcome.settled, `${what}: not answered`);
  assert.equal(outcome.error, undefined, `${what}: failed with ${errorMessage(outcome.error)}`);
  return outcome.value as T;
}

/** A started cluster whose leader was just killed; `follower` still believes in it. */
async function withLeaderCrashed(seed: number, settings: ScenarioSettings = {}): Promise<{ cluster: DriverCluster; leader: string; follower: string }> {
  const cluster = await DriverCluster.start(seed, settings);
  const leader = cluster.leader() as string;
  const follower = cluster.followers()[0];
  cluster.crash(leader);
  return { cluster, leader, follower };
}

void describe("a write that meets an election", () => {
  void test("waits while there is no leader, and succeeds once one is elected", async () => {
    const { cluster, follower } = await withLeaderCrashed(1);
    await cluster.runUntil(() => cluster.driver(follower).leader === NONE, 1_000, `${follower} notices the leader is gone`);
    const askedAtMs = cluster.world.nowMs;
    const write = cluster.propose(follower, "during-election");
    await cluster.runUntil(() => write.settled, leaderWaitMs, "the write is answered");
    const index = succeeded(write, "the write held through the election");
    assert.ok((write.atMs as number) - askedAtMs >= tickMs, "it was held until a leader was elected, not answered at once");
    for (const id of cluster.running()) {
      await cluster.runUntil(() => cluster.applied(id).some((e) => e.index === index), 1_000, `${id} applies it`);
      assert.equal(cluster.applied(id).filter((e) => e.text === "during-election").length, 1, `applied once on ${id}`);
    }
    assert.deepEqual(cluster.fatalErrors, []);
  });

  void test("past leaderWaitMs without a leader, it fails with a retryable NotAvailableError", async () => {
    const cluster = await DriverCluster.start(2);
    const [survivor, ...others] = cluster.followers();
    for (const id of [cluster.leader() as string, ...others]) cluster.crash(id);
    await cluster.runUntil(() => cluster.driver(survivor).leader === NONE, 1_000, `${survivor} notices the leader is gone`);
    const askedAtMs = cluster.world.nowMs;
    const write = cluster.propose(survivor, "no-majority");
    await cluster.runUntil(() => write.settled, leaderWaitMs + 2 * tickMs, "the write is answered within the leader wait");
    const err = notAvailable(write, "a write with no leader to be had");
    assert.equal(err.neverApplied, true, "it certainly had no effect, so it may be retried");
    assert.match(err.message, new RegExp(`no leader was elected within ${leaderWaitMs} ms`));
    assert.ok((write.atMs as number) - askedAtMs >= leaderWaitMs, `answered after the whole leader wait, at ${(write.atMs as number) - askedAtMs} ms`);
  });
});

void describe("every wait is bounded", () => {
  void test("a proposal on a leader cut off from its followers is answered within the request timeout: its outcome is unknown", async () => {
    const cluster = await DriverCluster.start(3);
    const leader = cluster.leader() as string;
    cluster.isolate(leader, "drop");
    const askedAtMs = cluster.world.nowMs;
    const write = cluster.propose(leader, "cut-off");
    await cluster.runUntil(() => write.settled, requestTimeoutMs + 2 * tickMs, "the proposal is answered");
    const err = notAvailable(write, "a proposal that cannot commit");
    assert.equal(err.neverApplied, false, "it is in the log and may yet commit: not safe to retry");
    assert.match(err.message, /was not applied within 1000 ms; whether it will commit is unknown/);
    assert.ok((write.atMs as number) - askedAtMs >= requestTimeoutMs, "answered at the request timeout, not before");
  });

  void test("a proposal whose index a leader's snapshot replaces is answered when the snapshot installs (outcome unknown), not at the request timeout", async () => {
    const cluster = await DriverCluster.start(5, { snapshotEntries: 5, requestTimeoutMs: 10_000, raft: { catchUpEntries: 0 } });
    const old = cluster.leader() as string;
    cluster.isolate(old, "drop");
    const stranded = cluster.propose(old, "stranded");
    await cluster.runUntil(() => cluster.leader() !== undefined && cluster.leader() !== old, 2_000, "the others elect a new leader");
    const leader = cluster.leader() as string;
    const writes = Array.from({ length: 12 }, (_, i) => cluster.propose(leader, `w${i}`));
    await cluster.runUntil(() => writes.every((w) => w.settled), 2_000, "the new leader commits, and compacts past the stranded index");
    cluster.isolate(old, "up");
    await cluster.runUntil(() => stranded.settled, 2_000, "the stranded proposal is answered once the old leader installs the snapshot");
    const err = notAvailable(stranded, "a proposal whose index a snapshot replaced");
    assert.equal(err.neverApplied, false, "what the snapshot holds at its index is not known here");
    assert.match(err.message, /replaced by the leader's snapshot/);
  });

  void test("a linearizable read on a leader cut off from its followers is refused within the leader wait (reads are always safe to retry)", async () => {
    const cluster = await DriverCluster.start(3);
    const leader = cluster.leader() as string;
    cluster.isolate(leader, "drop");
    const askedAtMs = cluster.world.nowMs;
    const read = cluster.track(cluster.driver(leader).readBarrier());
    await cluster.runUntil(() => read.settled, leaderWaitMs + 2 * tickMs, "the read is answered");
    const err = notAvailable(read, "a read that cannot be confirmed");
    assert.equal(err.neverApplied, true);
    assert.ok((read.atMs as number) - askedAtMs >= leaderWaitMs, "it waited for a leader to confirm it, for the whole leader wait");
  });
});

/**
 * A leader, F, takes proposals its followers never receive: its uncommitted tail. Another node, M,
 * wins the next term and its first entry overwrites F's tail, but reaches only F (whose answers are
 * lost), so it does not commit. F then wins again (the third node, C, lacks M's entry and cannot)
 * and puts its own first entry after M's: F's old clients still wait on the indexes past it, and
 * nothing of a newer term has applied on F yet.
 */
async function loseTailAndWinAgain(cluster: DriverCluster, tailLength: number): Promise<{ first: string; tailFrom: number; tail: Outcome<number>[] }> {
  const first = cluster.leader() as string;
  const tailFrom = cluster.driver(first).core.log.lastIndex() + 1;
  for (const id of cluster.followers()) cluster.network.setMode(first, id, "drop");
  const tail = Array.from({ length: tailLength }, (_, i) => cluster.propose(first, `tail-${i}`));
  await cluster.runUntil(() => cluster.driver(first).core.log.lastIndex() === tailFrom + tailLength - 1, 100, "the tail enters F's log");
  await cluster.runUntil(() => cluster.leader() !== first, 2_000, "another node, M, leads");
  const second = cluster.leader() as string;
  const third = cluster.followers().find((id) => id !== first) as string;
  // M's first entry goes to F only.
  cluster.network.setMode(second, third, "drop");
  await cluster.runUntil(() => cluster.driver(first).core.log.term(tailFrom) === cluster.driver(second).core.term, 500, "M's first entry overwrites F's tail");
  assert.equal(cluster.driver(first).core.log.lastIndex(), tailFrom, "F's tail is gone");
  cluster.isolate(second, "drop");
  for (const id of cluster.ids) if (id !== second) cluster.network.setMode(first, id, "up");
  await cluster.runUntil(() => cluster.leader() === first, 2_000, "F leads again");
  assert.ok(cluster.applied(first).every((e) => e.index < tailFrom) && cluster.driver(first).applied < tailFrom, "F applied nothing past its lost tail yet");
  return { first, tailFrom, tail };
}

void describe("a leader that loses its uncommitted tail and wins again", () => {
  void test("its first client learns the proposal was lost (retryable), never hangs; the second client's write at the same index succeeds", async () => {
    // A leader wait shorter than the failover: the answer the first client gets is the one the proposal had.
    const cluster = await DriverCluster.start(4, { leaderWaitMs: 20 });
    const { first, tailFrom, tail } = await loseTailAndWinAgain(cluster, 6);
    // F's own first entry of the new term is at tailFrom + 1; the next write lands where tail-2 waits.
    const write = cluster.propose(first, "second-client");
    await cluster.runUntil(() => write.settled, requestTimeoutMs / 2, "the second client's write is answered");
    const index = succeeded(write, "the second client's write");
    assert.equal(index, tailFrom + 2, "proposed at the index tail-2 waits on");
    for (const [i, outcome] of tail.entries()) {
      assert.ok(outcome.settled && (outcome.atMs as number) <= (write.atMs as number), `tail-${i} (index ${tailFrom + i}) is answered by the time the second write is, not at a timeout`);
      const err = notAvailable(outcome, `tail-${i}`);
      assert.equal(err.neverApplied, true, `tail-${i} certainly never applied: safe to retry (${err.message})`);
      assert.match(err.message, /lost to a leader change/);
    }
    assert.deepEqual(cluster.applied(first).filter((e) => e.text.startsWith("tail-")), [], "no tail entry was applied");
    assert.deepEqual(cluster.applied(first).find((e) => e.index === index), { index, text: "second-client" });
  });

  void test("within the leader wait, each proposal lost with the tail is proposed again and applied once", async () => {
    const cluster = await DriverCluster.start(4);
    const { first, tail } = await loseTailAndWinAgain(cluster, 6);
    const write = cluster.propose(first, "second-client");
    await cluster.runUntil(() => write.settled && tail.every((o) => o.settled), requestTimeoutMs / 2, "every write is answered");
    succeeded(write, "the second client's write");
    for (const [i, outcome] of tail.entries()) {
      const index = succeeded(outcome, `tail-${i}, proposed again`);
      assert.deepEqual(cluster.applied(first).filter((e) => e.text === `tail-${i}`), [{ index, text: `tail-${i}` }], `tail-${i} applied once`);
    }
  });
});

void describe("a leader that removes itself", () => {
  void test("answers the proposals still pending (outcome unknown) as soon as it applies its removal, releasing every forward it serves; forwards go on to the new leader", async () => {
    // One append in flight per follower: the entries after the removal leave only once the
    // removal is acknowledged, so they are still uncommitted when the leader applies it.
    const cluster = await DriverCluster.start(5, { requestTimeoutMs: 2_000, raft: { inflightMessagesMax: 1 } });
    const leader = cluster.leader() as string;
    const follower = cluster.followers()[0];
    const removal = cluster.track(cluster.driver(leader).changeMembership({ type: "remove", node: leader }));
    const removalIndex = cluster.driver(leader).core.log.lastIndex();
    await cluster.runUntil(() => cluster.observed(leader).sent.some(({ message: m }) => m.type === "append" && m.entries.some((e) => e.index === removalIndex)),
      100, "the removal is sent to the followers");
    const local = Array.from({ length: 20 }, (_, i) => cluster.propose(leader, `local-${i}`));
    // Many forwarded calls, one per turn of the follower's event loop.
    const forwarded: Outcome<number>[] = [];
    for (let i = 0; i < 20; i++) cluster.world.at(cluster.world.nowMs + i / 10, () => forwarded.push(cluster.propose(follower, `forwarded-${i}`)));
    await cluster.runUntil(() => removal.settled, 500, "the leader applies its removal");
    succeeded(removal, "the removal");
    const removedAtMs = removal.atMs as number;
    await cluster.runUntil(() => local.every((o) => o.settled) && cluster.observed(leader).forwardsServing === 0, 5 * tickMs,
      "every proposal pending on the removed leader is answered, and every forward it serves is answered");
    let pendingAtRemoval = 0;
    for (const [i, outcome] of local.entries()) {
      if (outcome.error === undefined) continue;
      const err = notAvailable(outcome, `local-${i}`);
      assert.equal(err.neverApplied, false, `local-${i}: it may commit without the leader: ${err.message}`);
      assert.match(err.message, /was removed from the cluster; whether the proposal at index \d+ committed is unknown/);
      pendingAtRemoval++;
    }
    assert.ok(pendingAtRemoval > 0, "the scenario leaves proposals pending when the leader applies its removal");
    // The follower's clients: an unknown outcome for what the removed leader held, the rest proposed
    // again to the next leader; no one waits for a timeout.
    await cluster.runUntil(() => forwarded.length === 20 && forwarded.every((o) => o.settled), leaderWaitMs, "every forwarded proposal is answered");
    let unknown = 0;
    for (const [i, outcome] of forwarded.entries()) {
      assert.ok((outcome.atMs as number) - removedAtMs < requestTimeoutMs, `forwarded-${i} is answered before any timeout`);
      if (outcome.error === undefined) continue;
      assert.match(notAvailable(outcome, `forwarded-${i}`).message, /was removed from the cluster/);
      unknown++;
    }
    assert.ok(unknown > 0, "the removed leader held some forwarded proposals when it applied its removal");
    // The cluster goes on without it: forwards from the follower reach the new leader.
    const after = cluster.propose(follower, "after-removal");
    await cluster.runUntil(() => after.settled, leaderWaitMs, "a write after the removal is answered");
    succeeded(after, "a write after the removal");
    assert.notEqual(cluster.leader(), leader);
    assert.deepEqual(cluster.fatalErrors, []);
  });
});

void describe("a membership change", () => {
  void test("is in the membership a node reports by the time its client is answered, even while the Ready's fsync is still running", async () => {
    const cluster = await DriverCluster.start(11);
    const leader = cluster.leader() as string;
    const victim = cluster.followers()[0];
    // Every fsync on the leader takes 40 ms, so the committed removal is applied while its Ready's write is in flight.
    cluster.diskOf(leader).profile = { syncLatencyMs: () => 40, errorRate: 0 };
    let membersWhenAnswered: string[] | undefined;
    const removal = cluster.track(cluster.driver(leader).changeMembership({ type: "remove", node: victim }).then((index) => {
      membersWhenAnswered = cluster.driver(leader).status().members.map((m) => m.id);
      return index;
    }));
    await cluster.runUntil(() => removal.settled, 1_000, "the removal is answered");
    succeeded(removal, "the removal");
    assert.deepEqual(membersWhenAnswered?.sort(), cluster.ids.filter((id) => id !== victim).sort());
  });
});

void describe("read contexts", () => {
  void test("are unique across restarts: a ReadIndex answer held in flight from before a follower's restart does not answer a read made after it", async () => {
    // One entry per append, one append in flight: a restarted follower catches up slowly, so an
    // answer with an older index would be believed before the follower applied what it misses.
    const cluster = await DriverCluster.start(6, { requestTimeoutMs: 5_000, raft: { messageBytesMax: 1, inflightMessagesMax: 1 } });
    const leader = cluster.leader() as string;
    const follower = cluster.followers()[0];
    // The leader's answers to the follower wait on the link.
    cluster.network.setMode(leader, follower, "hold");
    const before = cluster.track(cluster.driver(follower).readBarrier());
    const answered = (): { index: number } | undefined =>
      cluster.observed(leader).sent.map((o) => o.message).find((m) => m.type === "readIndexResp" && m.to === follower) as { index: number } | undefined;
    await cluster.runUntil(() => answered() !== undefined, 500, "the leader answers the follower's read");
    const oldIndex = (answered() as { index: number }).index;
    cluster.crash(follower);
    assert.equal(before.settled, false, "the read before the restart never got its answer");
    const writes = Array.from({ length: 20 }, (_, i) => cluster.propose(leader, `w-${i}`));
    await cluster.runUntil(() => writes.every((w) => w.settled), 1_000, "writes commit without the follower");
    const lastWrite = Math.max(...writes.map((w, i) => succeeded(w, `w-${i}`)));
    await cluster.restart(follower);
    let appliedAtAnswer = -1;
    const after = cluster.track(cluster.driver(follower).readBarrier().then(() => { appliedAtAnswer = cluster.driver(follower).applied; }));
    // What the link held arrives late and out of order, after newer messages, as a reconnect may deliver it.
    cluster.network.profile = { dropRate: 0, duplicateRate: 0, delayMinMs: 1, delayMaxMs: 40, reorder: true };
    cluster.network.setMode(leader, follower, "up");
    await cluster.runUntil(() => after.settled, 4_000, "the read after the restart is answered");
    succeeded(after, "the read after the restart");
    assert.ok(appliedAtAnswer >= lastWrite, `the read reflects every write acknowledged before it: applied ${appliedAtAnswer}, last write ${lastWrite}`);
    // The scenario did deliver the old answer while the new read was waiting for its own.
    const askedAtMs = cluster.observed(follower).sent.find((o) => o.message.type === "readIndex")?.atMs ?? Number.POSITIVE_INFINITY;
    const oldArrival = cluster.observed(follower).received.find((o) => o.message.type === "readIndexResp" && o.message.index === oldIndex);
    assert.ok(oldArrival !== undefined && oldArrival.atMs > askedAtMs && oldArrival.atMs <= (after.atMs as number),
      `the old answer (index ${oldIndex}) arrived after the new read was asked (at ${askedAtMs} ms) and before it was answered (at ${after.atMs} ms): ${oldArrival?.atMs} ms`);
  });
});

void describe("a proposal forwarded to a leader that died", () => {
  void test("before the call: it is proposed again to the new leader within the leader wait, and applied once", async () => {
    const { cluster, leader, follower } = await withLeaderCrashed(7);
    assert.equal(cluster.driver(follower).leader, leader, "the follower still forwards to the dead leader");
    const write = cluster.propose(follower, "to-the-dead");
    await cluster.runUntil(() => write.settled, leaderWaitMs, "the write is answered within the leader wait");
    const index = succeeded(write, "a write forwarded to a dead leader");
    for (const id of cluster.running()) {
      await cluster.runUntil(() => cluster.applied(id).some((e) => e.index === index), 1_000, `${id} applies it`);
      assert.equal(cluster.applied(id).filter((e) => e.text === "to-the-dead").length, 1, `applied once on ${id}`);
    }
  });

  void test("before the call, with a leader wait shorter than the failover: a retryable error at the end of the wait", async () => {
    const { cluster, leader, follower } = await withLeaderCrashed(8, { leaderWaitMs: 50 });
    const askedAtMs = cluster.world.nowMs;
    const write = cluster.propose(follower, "to-the-dead");
    await cluster.runUntil(() => write.settled, 50 + 2 * tickMs, "the write is answered at the end of the leader wait");
    const err = notAvailable(write, "a write forwarded to a dead leader");
    assert.equal(err.neverApplied, true, `nothing reached the dead leader: safe to retry (${err.message})`);
    assert.match(err.message, new RegExp(`could not reach leader ${leader}`));
    assert.ok((write.atMs as number) - askedAtMs >= 50, "it was tried again until the leader wait ran out");
  });

  for (const restartAfterMs of [undefined, 50]) {
    const how = restartAfterMs === undefined ? "and stays down: answered at the request timeout" : `and restarts ${restartAfterMs} ms later: answered then`;
    void test(`mid-call, ${how}, with an unknown outcome, never retried`, async () => {
      const cluster = await DriverCluster.start(9);
      const leader = cluster.leader() as string;
      const follower = cluster.followers()[0];
      const lastIndex = cluster.driver(leader).core.log.lastIndex();
      const askedAtMs = cluster.world.nowMs;
      const write = cluster.propose(follower, "mid-call");
      await cluster.runUntil(() => cluster.observed(leader).forwardsServing > 0 && cluster.driver(leader).core.log.lastIndex() > lastIndex, 100,
        "the leader serves the forward and appends the proposal");
      cluster.crash(leader);
      if (restartAfterMs !== undefined) cluster.world.at(cluster.world.nowMs + restartAfterMs, () => cluster.start(leader));
      await cluster.runUntil(() => write.settled, requestTimeoutMs + 2 * tickMs, "the write is answered");
      const err = notAvailable(write, "a write whose leader died while serving it");
      assert.equal(err.neverApplied, false, `the dead leader may have replicated it: not safe to retry (${err.message})`);
      assert.match(err.message, new RegExp(`leader ${leader} did not answer \\(.*\\); the request may or may not have been applied`));
      const answeredAfterMs = (write.atMs as number) - askedAtMs;
      if (restartAfterMs === undefined) assert.ok(answeredAfterMs >= requestTimeoutMs, `at the request timeout, not ${answeredAfterMs} ms`);
      else assert.ok(answeredAfterMs < restartAfterMs + 10 * tickMs, `once the dead leader's calls broke, not ${answeredAfterMs} ms`);
      // Whatever became of it, it is never applied twice.
      await cluster.runUntil(() => cluster.leader() !== undefined, leaderWaitMs, "a new leader");
      await cluster.runFor(200);
      for (const id of cluster.running()) assert.ok(cluster.applied(id).filter((e) => e.text === "mid-call").length <= 1, `at most once on ${id}`);
    });
  }
});
