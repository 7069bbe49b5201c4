// The deterministic simulator: the clean core survives it, and it catches planted bugs.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, test } from "node:test";
import { runSimulation } from "../../chaos/sim/simulator.js";
import type { PlantedBug } from "../../src/raft/core/raft.js";

const run = promisify(execFile);
const cliPath = fileURLToPath(new URL("../../chaos/sim/cli.js", import.meta.url));
const regressionsPath = fileURLToPath(new URL("../../../test/sim/regressions.json", import.meta.url));
const SEEDS_PER_TEST_RUN = 500;
/** "Within a few hundred seeds": the most seeds a planted bug may survive. */
const PLANTED_BUG_SEEDS_MAX = 400;

/** The first seed at which the simulator reports a violation, or undefined. */
function firstViolatingSeed(plantedBug: PlantedBug): { seed: number; violations: string[] } | undefined {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    for (let seed = 1; seed <= PLANTED_BUG_SEEDS_MAX; seed++) {
      const r = runSimulation({ seed, plantedBug });
      if (r.violations.length > 0) return { seed, violations: r.violations };
    }
    return undefined;
  } finally {
    Error.stackTraceLimit = limit;
  }
}

describe("deterministic simulation", () => {
  test(`${SEEDS_PER_TEST_RUN} seeds of faults, crashes, partitions and membership changes break no invariant`, async () => {
    const { stdout } = await run(process.execPath, [cliPath, "--seeds", String(SEEDS_PER_TEST_RUN)], { maxBuffer: 16 * 1024 * 1024 });
    const lines = stdout.trim().split("\n");
    assert.equal(lines[lines.length - 1], `sim: ${SEEDS_PER_TEST_RUN} seeds, 0 violations`, stdout);
    const stats = JSON.parse((lines.find((l) => l.startsWith("stats: ")) as string).slice(7)) as Record<string, number>;
    // The run must actually exercise what it claims to.
    for (const key of ["elections", "partitions", "crashes", "snapshotInstalls", "membershipChanges", "leaderTransfers", "readsServed"]) {
      assert.ok((stats[key] ?? 0) > SEEDS_PER_TEST_RUN / 10, `only ${stats[key]} ${key} in ${SEEDS_PER_TEST_RUN} seeds`);
    }
  });

  test("every seed that ever failed passes now", () => {
    const { seeds } = JSON.parse(readFileSync(regressionsPath, "utf8")) as { seeds: { seed: number; found: string }[] };
    for (const { seed, found } of seeds) {
      const r = runSimulation({ seed });
      assert.deepEqual(r.violations, [], `seed ${seed} (${found})`);
    }
  });

  test("a seed replays exactly: the same trace twice", () => {
    const a = runSimulation({ seed: 77, trace: true });
    const b = runSimulation({ seed: 77, trace: true });
    assert.ok(a.trace.length > 20);
    assert.deepEqual(a.trace, b.trace);
    assert.deepEqual(a.stats, b.stats);
  });

  test("the replay command prints the trace of one seed", async () => {
    const { stdout } = await run(process.execPath, [cliPath, "--seed", "5", "--trace"]);
    assert.match(stdout, /leads term/);
    assert.match(stdout, /seed 5: ok/);
  });

  test("it catches a leader that commits an old-term entry by counting replicas (Figure 8)", () => {
    const found = firstViolatingSeed("commitOldTermByCounting");
    assert.ok(found !== undefined, `no violation within ${PLANTED_BUG_SEEDS_MAX} seeds`);
    assert.match(found.violations.join("\n"), /commit safety|leader completeness|state machine safety|linearizability/);
  });

  test("its linearizability checker catches a leader that serves reads without confirming it still leads", () => {
    const found = firstViolatingSeed("readWithoutQuorumCheck");
    assert.ok(found !== undefined, `no violation within ${PLANTED_BUG_SEEDS_MAX} seeds`);
    assert.match(found.violations.join("\n"), /linearizability: /);
  });

  test("it catches a node that grants two votes in one term", () => {
    const found = firstViolatingSeed("grantTwoVotesPerTerm");
    assert.ok(found !== undefined, `no violation within ${PLANTED_BUG_SEEDS_MAX} seeds`);
    assert.match(found.violations.join("\n"), /election safety|commit safety|leader completeness|state machine safety|log matching/);
  });
});
