// `npm run fuzz -- --cases 100000 [--seed S] [--path P] [--nodes 3] [--bound-ms 5000]`: a fuzz
// campaign against real `cairn server` processes it starts and stops. Prints the cases run, what
// failed (the shrunk counterexample), the seed, and the command that replays it.

import { parseArgs } from "node:util";
import { campaignDefaults, runCampaign } from "./runner.js";
import { startTarget } from "./target.js";

const CASES_DEFAULT = 100_000;

function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} must be a positive whole number, not "${text}"`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: {
    cases: { type: "string" }, examples: { type: "boolean" }, seed: { type: "string" }, path: { type: "string" }, nodes: { type: "string" }, "bound-ms": { type: "string" },
  } });
  const cases = positive("cases", values.cases, CASES_DEFAULT);
  const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
  if (!Number.isSafeInteger(seed)) throw new Error(`--seed must be a whole number, not "${values.seed}"`);
  const nodes = positive("nodes", values.nodes, 1);
  const requestBoundMs = positive("bound-ms", values["bound-ms"], campaignDefaults.requestBoundMs);
  process.stdout.write(`fuzzing ${nodes} node(s) with ${cases} cases, seed ${seed}\n`);
  const target = await startTarget(nodes);
  // Ctrl-C or a kill must not leave the fuzzed servers running.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => void target.cluster.close().finally(() => process.exit(130)));
  }
  try {
    process.stdout.write(`${target.routes.length} HTTP routes from /v1/openapi.json${target.managementToken === undefined ? "" : ", ACLs on (bootstrapped)"}\n`);
    let lastProgress = performance.now();
    const result = await runCampaign(target, {
      cases, seed, requestBoundMs, batchCases: campaignDefaults.batchCases,
      ...(values.path === undefined ? {} : { path: values.path }),
      progress: (line) => {
        if (performance.now() - lastProgress < 10_000) return;
        lastProgress = performance.now();
        process.stdout.write(`  ${line}\n`);
      },
    });
    const seconds = (result.elapsedMs / 1000).toFixed(1);
    process.stdout.write(`\n${result.cases} cases in ${seconds} s (${Math.round(result.cases / (result.elapsedMs / 1000))}/s), seed ${result.seed}\n`);
    process.stdout.write("answers:\n");
    for (const [k, v] of [...result.tally].sort((a, b) => b[1] - a[1])) {
      process.stdout.write(`  ${String(v).padStart(8)}  ${k}\n`);
      const example = result.examples.get(k);
      if (values.examples === true && example !== undefined) process.stdout.write(`            e.g. ${example}\n`);
    }
    if (result.known.size > 0) {
      process.stdout.write("known issues seen (fixed elsewhere; not failures):\n");
      for (const [k, v] of result.known) process.stdout.write(`  ${String(v).padStart(8)}  ${k}\n`);
    }
    if (!result.failed) {
      process.stdout.write("failures found: 0\n");
      return 0;
    }
    process.stdout.write(`failures found: 1 (fast-check stops at the first and shrinks it)\n  ${result.error ?? ""}\ncounterexample:\n  ${result.counterexample ?? "(none)"}\n`);
    process.stdout.write(`reproduce: npm run fuzz -- --cases ${cases} --seed ${result.seed}${result.path === undefined ? "" : ` --path ${result.path}`}${nodes === 1 ? "" : ` --nodes ${nodes}`}\n`);
    return 1;
  } finally {
    await target.cluster.close();
  }
}

main().then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`fuzz: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(2);
});
