// npm run sim -- --seeds 10000              runs seeds 1..10000 on every core, prints a summary
// npm run sim -- --seed 42 --trace          replays one seed and prints its trace
// npm run sim -- --seeds 300 --mutant ackStaleAppend   shows the checkers catch one planted bug
// npm run sim -- --mutants --seeds 2000     runs every planted bug over seeds 1..N: how many catch it

import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { Worker, isMainThread, parentPort } from "node:worker_threads";
import { MUTANTS, type Mutant, type SimStats, emptyStats, isMutant, runSimulation } from "./simulator.js";

export interface SeedFailure {
  readonly seed: number;
  readonly violations: string[];
}

export interface Batch {
  readonly mutant: Mutant | undefined;
  readonly from: number;
  readonly to: number;
}

export interface BatchResult {
  readonly batch: Batch;
  readonly failures: SeedFailure[];
  readonly stats: SimStats;
  readonly seeds: number;
}

const BATCH_SEEDS = 10;

function addStats(into: SimStats, from: SimStats): void {
  for (const k of Object.keys(into) as (keyof SimStats)[]) into[k] += from[k];
}

/**
 * Runs seeds [from, to] in this thread. A seed that throws (a checker's own bug, or an invariant
 * error that escaped the driver) is a violation of that seed, never the end of the run.
 */
export async function runSeeds(batch: Batch, simulate: typeof runSimulation = runSimulation): Promise<BatchResult> {
  // Refused proposals are routine in the simulation; capturing their stacks would dominate the run.
  Error.stackTraceLimit = 0;
  const stats = emptyStats();
  const failures: SeedFailure[] = [];
  for (let seed = batch.from; seed <= batch.to; seed++) {
    try {
      const r = await simulate(batch.mutant === undefined ? { seed } : { seed, mutant: batch.mutant });
      addStats(stats, r.stats);
      if (r.violations.length > 0) failures.push({ seed, violations: r.violations });
    } catch (err) {
      failures.push({ seed, violations: [`the simulation threw: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`] });
    }
  }
  return { batch, failures, stats, seeds: batch.to - batch.from + 1 };
}

interface Args {
  seeds: number;
  seed: number | undefined;
  trace: boolean;
  workers: number;
  mutant: Mutant | undefined;
  mutants: boolean;
}

function usage(problem: string): never {
  process.stderr.write(`sim: ${problem}\n` +
    "usage: sim --seeds N [--workers W] [--mutant NAME]\n" +
    "       sim --seed S [--trace] [--mutant NAME]\n" +
    "       sim --mutants [--seeds N] [--workers W]\n" +
    `mutants: ${Object.keys(MUTANTS).join(", ")}\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { seeds: 100, seed: undefined, trace: false, workers: availableParallelism(), mutant: undefined, mutants: false };
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
      case "--mutants": args.mutants = true; break;
      case "--mutant":
      case "--bug": {
        const name = argv[++i];
        if (name === undefined || !isMutant(name)) usage(`unknown mutant ${name ?? "(none given)"}`);
        args.mutant = name;
        break;
      }
      default: usage(`unknown argument ${flag}`);
    }
  }
  if (args.mutants && args.mutant !== undefined) usage("give --mutants or --mutant, not both");
  return args;
}

/** Runs every batch on a pool of worker threads; returns each batch's result (in the order they finished). */
export async function runPool(batches: readonly Batch[], workers: number): Promise<BatchResult[]> {
  const results: BatchResult[] = [];
  let next = 0;
  const count = Math.max(1, Math.min(workers, batches.length));
  await Promise.all(Array.from({ length: count }, () => new Promise<void>((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url));
    const feed = (): void => {
      const batch = batches[next++];
      if (batch === undefined) {
        void worker.terminate().then(() => resolve());
        return;
      }
      worker.postMessage(batch);
    };
    worker.on("message", (r: BatchResult) => {
      results.push(r);
      feed();
    });
    worker.on("error", reject);
    feed();
  })));
  return results;
}

function batchesOf(mutant: Mutant | undefined, seeds: number): Batch[] {
  const out: Batch[] = [];
  for (let from = 1; from <= seeds; from += BATCH_SEEDS) out.push({ mutant, from, to: Math.min(seeds, from + BATCH_SEEDS - 1) });
  return out;
}

/** The checker that spoke first in a violation: "commit safety", "linearizability", ... */
function checkerOf(violation: string): string {
  const text = violation.replace(/^t=\d+ms: /, "");
  const colon = text.indexOf(":");
  return colon < 0 ? text.slice(0, 40) : text.slice(0, colon);
}

async function mutationRun(args: Args): Promise<void> {
  const started = performance.now();
  const names = Object.keys(MUTANTS) as Mutant[];
  const results = await runPool(names.flatMap((m) => batchesOf(m, args.seeds)), args.workers);
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(`mutation run: every planted bug over seeds 1..${args.seeds}\n\n`);
  process.stdout.write("| mutant | caught | catch rate | first seed | caught by |\n|---|---|---|---|---|\n");
  let survivors = 0;
  for (const name of names) {
    const failures = results.filter((r) => r.batch.mutant === name).flatMap((r) => r.failures).sort((a, b) => a.seed - b.seed);
    if (failures.length === 0) survivors++;
    const kinds = new Map<string, number>();
    for (const f of failures) for (const k of new Set(f.violations.map(checkerOf))) kinds.set(k, (kinds.get(k) ?? 0) + 1);
    const by = [...kinds].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, n]) => `${k} (${n})`).join(", ");
    process.stdout.write(`| ${name} | ${failures.length} of ${args.seeds} | ${((100 * failures.length) / args.seeds).toFixed(1)}% | ` +
      `${failures[0]?.seed ?? "-"} | ${by || "-"} |\n`);
  }
  const total = names.length * args.seeds;
  process.stdout.write(`\nrate: ${(total / seconds).toFixed(1)} seeds/s over ${seconds.toFixed(1)}s\n`);
  process.stdout.write(`mutants: ${names.length - survivors} of ${names.length} caught within ${args.seeds} seeds\n`);
  process.exit(survivors === 0 ? 0 : 1);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.seed !== undefined) {
    const r = await runSimulation({ seed: args.seed, trace: args.trace, ...(args.mutant === undefined ? {} : { mutant: args.mutant }) });
    if (args.trace) for (const line of r.trace) process.stdout.write(`${line}\n`);
    process.stdout.write(`seed ${r.seed}: ${r.violations.length === 0 ? "ok" : r.violations.join("\n  ")}\n`);
    process.stdout.write(`stats: ${JSON.stringify(r.stats)}\n`);
    process.exit(r.violations.length === 0 ? 0 : 1);
  }
  if (args.mutants) {
    await mutationRun(args);
    return;
  }
  const started = performance.now();
  const results = await runPool(batchesOf(args.mutant, args.seeds), args.workers);
  const seconds = (performance.now() - started) / 1000;
  const stats = emptyStats();
  for (const r of results) addStats(stats, r.stats);
  const failures = results.flatMap((r) => r.failures).sort((a, b) => a.seed - b.seed);
  for (const f of failures) process.stdout.write(`seed ${f.seed}: ${f.violations.join("\n  ")}\n`);
  process.stdout.write(`stats: ${JSON.stringify(stats)}\n`);
  process.stdout.write(`rate: ${(args.seeds / seconds).toFixed(1)} seeds/s over ${seconds.toFixed(1)}s with ${Math.min(args.workers, results.length)} workers\n`);
  process.stdout.write(`sim: ${args.seeds} seeds, ${failures.length} violations\n`);
  process.exit(failures.length === 0 ? 0 : 1);
}

if (isMainThread && process.argv[1] === fileURLToPath(import.meta.url)) {
  await main();
} else if (!isMainThread) {
  parentPort?.on("message", (batch: Batch) => {
    void runSeeds(batch).then((r) => parentPort?.postMessage(r));
  });
}
