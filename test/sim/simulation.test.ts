// The deterministic simulator: the real driver survives it, every planted bug is caught, and a
// seed replays exactly.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { before, describe, test } from "node:test";
import { type Batch, type BatchResult, runPool, runSeeds } from "../../chaos/sim/cli.js";
import { MUTANTS, type Mutant, isMutant, runSimulation } from "../../chaos/sim/simulator.js";

const run = promisify(execFile);
const cliPath = fileURLToPath(new URL("../../chaos/sim/cli.js", import.meta.url));
const regressionsPath = fileURLToPath(new URL("../../../test/sim/regressions.json", import.meta.url));
const catchesPath = fileURLToPath(new URL("../../../test/sim/mutant_catches.json", import.meta.url));
const SEEDS_PER_TEST_RUN = 150;
/** What runSeeds makes of a simulation that threw: a violation, but never a checker's catch. */
const THREW = /^the simulation threw: /;

/** Each seed simulated once (with `mutant`, or the real code), on every core: the violations of each. */
async function simulateOnEveryCore(runs: readonly { readonly seed: number; readonly mutant: Mutant | undefined }[]): Promise<(mutant: Mutant | undefined, seed: number) => string[]> {
  const results: BatchResult[] = await runPool(runs.map((r): Batch => ({ mutant: r.mutant, from: r.seed, to: r.seed })), availableParallelism());
  return (mutant, seed) => {
    const result = results.find((r) => r.batch.mutant === mutant && r.batch.from === seed);
    if (result === undefined) throw new Error(`seed ${seed}${mutant === undefined ? "" : ` with ${mutant}`} was not simulated`);
    return result.failures.flatMap((f) => f.violations);
  };
}

void describe("deterministic simulation", () => {
  void test(`${SEEDS_PER_TEST_RUN} seeds of faults, crashes, pauses, partitions and membership changes break no invariant`, async () => {
    const { stdout } = await run(process.execPath, [cliPath, "--seeds", String(SEEDS_PER_TEST_RUN)], { maxBuffer: 16 * 1024 * 1024 });
    const lines = stdout.trim().split("\n");
    assert.equal(lines[lines.length - 1], `sim: ${SEEDS_PER_TEST_RUN} seeds, 0 violations`, stdout);
    const stats = JSON.parse((lines.find((l) => l.startsWith("stats: ")) as string).slice(7)) as Record<string, number>;
    // The run must actually exercise what it claims to.
    for (const key of ["elections", "partitions", "crashes", "pauses", "snapshotInstalls", "membershipChanges", "leaderTransfers", "readsServed", "messagesReleasedLate", "diskErrors"]) {
      assert.ok((stats[key] ?? 0) > SEEDS_PER_TEST_RUN / 10, `only ${stats[key]} ${key} in ${SEEDS_PER_TEST_RUN} seeds`);
    }
  });

  void test("every seed that ever failed passes now", async () => {
    const { seeds } = JSON.parse(readFileSync(regressionsPath, "utf8")) as { seeds: { seed: number; found: string }[] };
    const violations = await simulateOnEveryCore(seeds.map(({ seed }) => ({ seed, mutant: undefined })));
    for (const { seed, found } of seeds) assert.deepEqual(violations(undefined, seed), [], `seed ${seed} (${found})`);
  });

  void test("a seed replays exactly: the same trace twice", async () => {
    const a = await runSimulation({ seed: 77, trace: true });
    const b = await runSimulation({ seed: 77, trace: true });
    assert.ok(a.trace.length > 20);
    assert.deepEqual(a.trace, b.trace);
    assert.deepEqual(a.stats, b.stats);
  });

  void test("the replay command prints the trace of one seed", async () => {
    const { stdout } = await run(process.execPath, [cliPath, "--seed", "5", "--trace"]);
    assert.match(stdout, /leads term/);
    assert.match(stdout, /seed 5: ok/);
  });

  void test("a seed whose simulation throws is reported as that seed's violation, and the other seeds still run", async () => {
    const result = await runSeeds({ mutant: undefined, from: 1, to: 3 }, (opts) => {
      if (opts.seed === 2) throw new RangeError("a checker's own bug");
      return runSimulation(opts);
    });
    assert.equal(result.seeds, 3);
    assert.deepEqual(result.failures, [{ seed: 2, violations: ["the simulation threw: RangeError: a checker's own bug"] }]);
  });
});

void describe("every planted bug is caught", () => {
  // The seed at which each mutant was first caught, as `npm run sim -- --mutants` found it.
  // A change to the simulator moves these: run it again and record the new first seeds.
  const catches = JSON.parse(readFileSync(catchesPath, "utf8")) as { seeds: Record<string, number> };
  // Every catch's seed with its mutant and without, simulated at once on every core; each test judges its own.
  let violations: (mutant: Mutant | undefined, seed: number) => string[];
  before(async () => {
    const recorded = Object.entries(catches.seeds).filter((entry): entry is [Mutant, number] => isMutant(entry[0]));
    const cleanSeeds = [...new Set(recorded.map(([, seed]) => seed))];
    violations = await simulateOnEveryCore([
      ...recorded.map(([mutant, seed]) => ({ seed, mutant })),
      ...cleanSeeds.map((seed) => ({ seed, mutant: undefined })),
    ]);
  });

  void test("every mutant has a recorded catch", () => {
    assert.deepEqual(Object.keys(catches.seeds).sort(), Object.keys(MUTANTS).sort());
  });

  for (const [name, seed] of Object.entries(catches.seeds)) {
    void test(`${name}: ${MUTANTS[name as Mutant] ?? "(unknown)"}; seed ${seed} catches it, and passes without it`, () => {
      assert.ok(isMutant(name), `${name} is not a mutant`);
      const planted = violations(name, seed);
      assert.notDeepEqual(planted, [], `seed ${seed} no longer catches ${name}: run npm run sim -- --mutants and record the new first seed`);
      assert.deepEqual(planted.filter((v) => THREW.test(v)), [], `the simulation of seed ${seed} with ${name} threw: a crash is no catch`);
      assert.ok(planted.some((v) => !/^t=\d+ms: liveness:/.test(v)), `seed ${seed} catches ${name} by liveness alone: record a seed a safety checker catches it at`);
      assert.deepEqual(violations(undefined, seed), [], `seed ${seed} fails without the bug`);
    });
  }
});
