// Every check must be able to fail: with a real bug planted in every server (CAIRN_PLANTED_BUG),
// a short chaos run must report anomalies, from the checker that the bug offends.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseNemeses } from "../../chaos/nemesis.js";
import { runChaosWithin } from "../support/chaos_run.js";

const PLANTED_RUN_MS = 25_000;
/** 25-second runs caught ackBeforeCommit at 7 of 8 seeds (two leader isolations each); this one has six or more. */
const ACK_BEFORE_COMMIT_RUN_MS = 40_000;

const cases = [
  { bug: "readWithoutReadIndex", nemeses: "partition-isolate,pause", checkers: ["linearizable"], durationMs: PLANTED_RUN_MS },
  // Write-heavy, with fewer readers: only a write that reaches the cut-off leader before check-quorum deposes it is lost.
  { bug: "ackBeforeCommit", nemeses: "partition-isolate", checkers: ["linearizable", "lost-writes"], durationMs: ACK_BEFORE_COMMIT_RUN_MS,
    workload: { writers: 12, staleReaders: 0, linearizableReaders: 2, thinkMs: 5 } },
  { bug: "watchSkipsEvent", nemeses: "none", checkers: ["watches"], durationMs: PLANTED_RUN_MS },
] as const;

for (const c of cases) {
  void test(`chaos catches the planted bug ${c.bug}`, { timeout: 200_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), `cairn-chaos-${c.bug}-`));
    try {
      const { result, lines } = await runChaosWithin({
        durationMs: c.durationMs, nodes: 3, nemeses: parseNemeses(c.nemeses), seed: 7, network: "auto", dir,
        plantedBug: c.bug,
        ...("workload" in c ? { workload: c.workload } : {}),
        // Every fault at the leader. A write acknowledged before it committed is lost when its leader is
        // cut off: clients still reach it, and it acknowledges until check-quorum deposes it. A crash or
        // pause rarely catches one, since on loopback an entry commits within a client's round trip.
        schedule: { faultMsMin: 3_000, faultMsMax: 5_000, gapMsMin: 1_000, gapMsMax: 2_000, leaderTargetShare: 1 },
      }, 180_000);
      const flagged = result.verdicts.filter((v) => !v.ok).map((v) => v.checker);
      assert.ok(result.anomalies > 0, `no anomaly reported with ${c.bug} planted:\n${lines.join("\n")}`);
      assert.ok(c.checkers.some((name) => flagged.includes(name)), `${c.bug} was flagged by ${flagged.join(", ")}, not by ${c.checkers.join(" or ")}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
