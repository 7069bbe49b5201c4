// Every check must be able to fail: with a real bug planted in every server (CAIRN_PLANTED_BUG),
// a short chaos run must report anomalies, from the checker that the bug offends. Each run is as
// short as catches its bug every time (docs/chaos.md gives the figures): what a run needs to
// catch a bug is a few seconds of the right moment, not minutes of chaos.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseNemeses } from "../../chaos/nemesis.js";
import { runChaosWithin } from "../support/chaos_run.js";

/**
 * Every fault at the leader, each outlasting an election. A write acknowledged before it committed
 * is lost when its leader is cut off: clients still reach it, and it acknowledges until
 * check-quorum deposes it. A crash or pause rarely catches one, since on loopback an entry commits
 * within a client's round trip.
 */
const LEADER_FAULTS = { faultMsMin: 3_000, faultMsMax: 5_000, gapMsMin: 1_000, gapMsMax: 2_000, leaderTargetShare: 1 } as const;

const cases = [
  // One leader fault healed inside the run (a gap of at most 2 s, then at most 5 s of fault), a
  // second healed at its end. A node answering from local state answers stale reads while it is
  // cut off or paused and as it rejoins, and a follower a moment behind does even with no fault.
  { bug: "readWithoutReadIndex", nemeses: "partition-isolate,pause", checkers: ["linearizable"], durationMs: 10_000, schedule: LEADER_FAULTS },
  // Write-heavy, with fewer readers: only a write that reaches the cut-off leader before
  // check-quorum deposes it is lost. Two isolations, each after 4-5 s of a healthy cluster: right
  // after a heal most writers still wait on forwards to the leader cut off before, and few reach
  // the next one while it acknowledges alone; given the time to come back, many do.
  { bug: "ackBeforeCommit", nemeses: "partition-isolate", checkers: ["linearizable", "lost-writes"], durationMs: 15_000,
    schedule: { ...LEADER_FAULTS, faultMsMin: 2_500, faultMsMax: 3_000, gapMsMin: 4_000, gapMsMax: 5_000 },
    workload: { writers: 12, staleReaders: 0, linearizableReaders: 2, thinkMs: 5 } },
  // Every revision that is a multiple of 29 is left out of every stream: five seconds make
  // hundreds of revisions, each skipped one a gap in every stream that watches its service.
  { bug: "watchSkipsEvent", nemeses: "none", checkers: ["watches"], durationMs: 5_000, schedule: LEADER_FAULTS },
] as const;

for (const c of cases) {
  void test(`chaos catches the planted bug ${c.bug}`, { timeout: 200_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), `cairn-chaos-${c.bug}-`));
    try {
      const { result, lines } = await runChaosWithin({
        durationMs: c.durationMs, nodes: 3, nemeses: parseNemeses(c.nemeses), seed: 7, network: "auto", dir,
        plantedBug: c.bug, schedule: c.schedule,
        ...("workload" in c ? { workload: c.workload } : {}),
      }, 180_000);
      const flagged = result.verdicts.filter((v) => !v.ok).map((v) => v.checker);
      assert.ok(result.anomalies > 0, `no anomaly reported with ${c.bug} planted:\n${lines.join("\n")}`);
      assert.ok(c.checkers.some((name) => flagged.includes(name)), `${c.bug} was flagged by ${flagged.join(", ")}, not by ${c.checkers.join(" or ")}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
