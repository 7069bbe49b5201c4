// npm run sim -- --seeds 10000          runs seeds 1..10000 on every core, prints a summary
// npm run sim -- --seed 42 --trace      replays one seed and prints its trace
// npm run sim -- --seeds 300 --bug grantTwoVotesPerTerm   shows the checkers catch a planted bug

import { availableParallelism } from "node:os";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import type { PlantedBug } from "../../src/raft/core/raft.js";
import { type SimStats, runSimulation } from "./simulator.js";

interface SeedFailure {
  readonly seed: number;
  readonly violations: string[];
}

interface BatchResult {
  readonly failures: SeedFailure[];
  readonly stats: SimStats;
  readonly seeds: number;
}

const BATCH_SEEDS = 50;

function emptyStats(): SimStats {
  return {
    elections: 0, partitions: 0, crashes: 0, snapshotInstalls: 0, membershipChanges: 0,
    leaderTransfers: 0, writesAcknowledged: 0, readsServed: 0, messagesDelivered: 0,
  };
}

function addStats(into: SimStats, from: SimStats): void {
  for (const k of Object.keys(into) as (keyof SimStats)[]) into[k] += from[k];
}

/** Runs seeds [from, to] in this thread. */
export function runSeeds(from: number, to: number, plantedBug: PlantedBug | undefined): BatchResult {
  // Refused proposals are routine in the simulation; capturing their stacks would dominate the run.
  Error.stackTraceLimit = 0;
  const stats = emptyStats();
  const failures: SeedFailure[] = [];
  for (let seed = from; seed <= to; seed++) {
    const r = runSimulation(plantedBug === undefined ? { seed } : { seed, plantedBug });
    addStats(stats, r.stats);
    if (r.violations.length > 0) failures.push({ seed, violations: r.violations });
  }
  return { failures, stats, seeds: to - from + 1 };
}

interface Args {
  seeds: number;
  seed: number | undefined;
  trace: boolean;
  workers: number;
  bug: PlantedBug | undefined;
}

function usage(problem: string): never {
  process.stderr.write(`sim: ${problem}\nusage: sim --seeds N [--workers W] [--bug commitOldTermByCounting|grantTwoVotesPerTerm|readWithoutQuorumCheck]\n       sim --seed S [--trace]\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { seeds: 100, seed: undefined, trace: false, workers: availableParallelism(), bug: undefined };
  const positiveInt = (flag: string, v: string | undefined): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) usage(`${flag} needs a positive whole number, not ${v ?? "nothing"}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    switch (flag) {
      case "--seeds": args.seeds = positiveInt(flag, argv[++i]); break;
      case "--seed": args.seed = positiveInt(flag, argv[++i]); break;
      case "--workers": args.workers = positiveInt(flag, argv[++i]); break;
      case "--trace": args.trace = true; break;
      case "--bug": {
        const bug = argv[++i];
        if (bug !== "commitOldTermByCounting" && bug !== "grantTwoVotesPerTerm" && bug !== "readWithoutQuorumCheck") {
          usage(`unknown planted bug ${bug ?? "(none given)"}`);
        }
        args.bug = bug;
        break;
      }
      default: usage(`unknown argument ${flag}`);
    }
  }
  return args;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.seed !== undefined) {
    const r = runSimulation({ seed: args.seed, trace: args.trace, ...(args.bug === undefined ? {} : { plantedBug: args.bug }) });
    if (args.trace) for (const line of r.trace) process.stdout.write(`${line}\n`);
    process.stdout.write(`seed ${r.seed}: ${r.violations.length === 0 ? "ok" : r.violations.join("\n  ")}\n`);
    process.stdout.write(`stats: ${JSON.stringify(r.stats)}\n`);
    process.exit(r.violations.length === 0 ? 0 : 1);
  }
  const started = performance.now();
  const stats = emptyStats();
  const failures: SeedFailure[] = [];
  let next = 1;
  let done = 0;
  const workerCount = Math.max(1, Math.min(args.workers, Math.ceil(args.seeds / BATCH_SEEDS)));
  await Promise.all(Array.from({ length: workerCount }, () => new Promise<void>((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { bug: args.bug } });
    const feed = (): void => {
      if (next > args.seeds) {
        void worker.terminate().then(() => resolve());
        return;
      }
      const from = next;
      const to = Math.min(args.seeds, from + BATCH_SEEDS - 1);
      next = to + 1;
      worker.postMessage({ from, to });
    };
    worker.on("message", (r: BatchResult) => {
      addStats(stats, r.stats);
      failures.push(...r.failures);
      done += r.seeds;
      feed();
    });
    worker.on("error", reject);
    feed();
  })));
  const seconds = (performance.now() - started) / 1000;
  failures.sort((a, b) => a.seed - b.seed);
  for (const f of failures) process.stdout.write(`seed ${f.seed}: ${f.violations.join("\n  ")}\n`);
  process.stdout.write(`stats: ${JSON.stringify(stats)}\n`);
  process.stdout.write(`rate: ${(done / seconds).toFixed(1)} seeds/s over ${seconds.toFixed(1)}s with ${workerCount} workers\n`);
  process.stdout.write(`sim: ${done} seeds, ${failures.length} violations\n`);
  process.exit(failures.length === 0 ? 0 : 1);
}

if (isMainThread) {
  await main();
} else {
  const { bug } = workerData as { bug: PlantedBug | undefined };
  parentPort?.on("message", ({ from, to }: { from: number; to: number }) => {
    parentPort?.postMessage(runSeeds(from, to, bug));
  });
}
