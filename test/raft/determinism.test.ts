// The core is a pure function of its inputs and its seeded RandomSource, so a run replays exactly.
// That is what lets the simulator reproduce a failure from its seed. The randomized runs below
// also check the two safety properties a scenario test can only sample: one leader per term, and
// state machines that never disagree at an index.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { ConfigOverrides } from "./harness.js";
import { Network } from "./harness.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import { RaftRefusal } from "../../src/raft/core/types.js";

const IDS = ["n1", "n2", "n3", "n4", "n5"];
const ELECTION_TIMEOUT_TICKS = 10;

function trace(net: Network): string {
  return JSON.stringify(net.sent, (_key, value: unknown) => (value instanceof Uint8Array ? Array.from(value) : value));
}

/** Elects a leader, writes, partitions the leader away, lets the rest elect another, heals. */
async function scriptedRun(seed: number): Promise<string> {
  const net = await Network.bootstrap(IDS, seed);
  await net.tickUntil(() => net.leaders().length > 0, 10 * ELECTION_TIMEOUT_TICKS);
  const first = net.leader();
  await net.propose(first, "a", "b");
  net.isolate(first);
  const others = IDS.filter((id) => id !== first);
  await net.tickUntil(() => others.some((id) => net.node(id).role === "leader"), 10 * ELECTION_TIMEOUT_TICKS);
  await net.propose(net.leader(), "c");
  net.heal();
  await net.tick(3 * ELECTION_TIMEOUT_TICKS);
  return trace(net);
}

interface ChaosResult {
  readonly trace: string;
  readonly violation: string | undefined;
}

/**
 * Random partitions, message loss, proposals, compactions and restarts for `ticks` rounds,
 * checking after every round that no term has two leaders and no two state machines disagree,
 * then that the healed cluster still commits. A broken harness assertion (such as a vote that
 * was granted but not persisted) also counts as a violation.
 */
async function chaosRun(seed: number, ticks: number, overrides: ConfigOverrides = {}): Promise<ChaosResult> {
  const net = await Network.bootstrap(IDS, seed, overrides);
  let violation: string | undefined;
  try {
    violation = await storm(net, new SeededRandom(seed ^ 0x5eed), ticks) ?? await healAndCommit(net);
  } catch (e) {
    if (!(e instanceof assert.AssertionError)) throw e;
    violation = e.message;
  }
  return { trace: trace(net), violation };
}

async function storm(net: Network, rng: SeededRandom, ticks: number): Promise<string | undefined> {
  const leaderOfTerm = new Map<number, string>();
  let writes = 0;
  for (let t = 0; t < ticks; t++) {
    const dice = rng.nextFloat();
    if (dice < 0.03) net.isolate(rng.pick(IDS));
    else if (dice < 0.06) net.cut(rng.pick(IDS), rng.pick(IDS));
    else if (dice < 0.1) {
      net.heal();
      // A lossy network: one message in twenty is lost.
      net.drop(() => rng.chance(0.05));
    } else if (dice < 0.12) await net.restart(rng.pick(IDS));
    else if (dice < 0.14) await net.compact(rng.pick(IDS));
    const leaders = net.leaders();
    if (rng.chance(0.3) && leaders.length > 0) {
      try {
        await net.propose(rng.pick(leaders), `w${writes++}`);
      } catch (e) {
        if (!(e instanceof RaftRefusal)) throw e;
      }
    }
    await net.tick();

    for (const id of net.leaders()) {
      const term = net.node(id).term;
      const known = leaderOfTerm.get(term);
      if (known === undefined) leaderOfTerm.set(term, id);
      else if (known !== id) return `term ${term} has two leaders: ${known} and ${id}`;
    }
    const disagreement = net.appliedDisagreement();
    if (disagreement !== undefined) return disagreement;
  }
  return undefined;
}

/** An attempt may land on a leader that check-quorum is about to depose, so retry a few times. */
async function healAndCommit(net: Network): Promise<string | undefined> {
  net.heal();
  for (let attempt = 0; attempt < 5; attempt++) {
    await net.tickUntil(() => net.leaders().length > 0, 20 * ELECTION_TIMEOUT_TICKS);
    try {
      await net.propose(net.leader(), `final${attempt}`);
    } catch (e) {
      if (!(e instanceof RaftRefusal)) throw e;
    }
    await net.tick(3 * ELECTION_TIMEOUT_TICKS);
    if (IDS.every((id) => net.peer(id).appliedTexts().at(-1) === `final${attempt}`)) return net.appliedDisagreement();
  }
  return "the healed cluster did not commit a write";
}

void describe("determinism", () => {
  void test("two runs with the same seed produce identical message sequences", async () => {
    const first = await scriptedRun(7);
    assert.equal(await scriptedRun(7), first);
    // The seed is what decides: another one takes another path.
    assert.notEqual(await scriptedRun(8), first);
  });

  void test("two randomized runs with faults and restarts replay identically from their seed", async () => {
    assert.equal((await chaosRun(3, 200)).trace, (await chaosRun(3, 200)).trace);
  });
});

void describe("safety under random faults", () => {
  void test("across seeded runs with partitions, message loss, restarts and compaction, no term has two leaders and state machines never disagree", async () => {
    for (let seed = 1; seed <= 20; seed++) {
      const { violation } = await chaosRun(seed, 300);
      assert.equal(violation, undefined, `seed ${seed}`);
    }
  });

  void test("the same randomized runs catch the planted bug grantTwoVotesPerTerm", async () => {
    // Proof that the checks above are not vacuous: with double voting switched on, some of the
    // first few seeds must end with two leaders in one term (or a broken state machine).
    const caught: string[] = [];
    for (let seed = 1; seed <= 10; seed++) {
      const { violation } = await chaosRun(seed, 300, { plantedBug: "grantTwoVotesPerTerm" });
      if (violation !== undefined) caught.push(`seed ${seed}: ${violation}`);
    }
    assert.ok(caught.length > 0, "no seed exposed the planted bug");
  });
});
