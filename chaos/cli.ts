// npm run chaos -- --duration 10m --nemesis all [--nodes 3|5] [--seed N] [--network auto|netns|proxy]
//                  [--out DIR] [--planted-bug NAME] [--leader-share F (faults aimed at the leader, default 0.6)]
// npm run chaos -- --check DIR     judges a saved run's history.jsonl again with the current checkers
// Runs the cluster under faults, writes chaos/results/<timestamp>/ (history.jsonl, verdicts.json,
// timeline.html, the nodes' logs), and ends with `chaos: N ops, A anomalies, L lost`. It exits 1
// on any anomaly or lost write, 2 on bad flags.

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseGoDuration } from "../src/common/duration.js";
import { errorMessage } from "../src/common/errors.js";
import { type NemesisName, NEMESES, parseNemeses } from "./nemesis.js";
import { readHistory } from "./history_file.js";
import { judge, runChaos } from "./run.js";

const resultsRoot = fileURLToPath(new URL("../../chaos/results/", import.meta.url));

interface Args {
  durationMs: number;
  nodes: number;
  nemeses: NemesisName[];
  seed: number;
  network: "auto" | "netns" | "proxy";
  out: string | undefined;
  plantedBug: string | undefined;
  check: string | undefined;
  leaderTargetShare: number | undefined;
}

function usage(problem: string): never {
  process.stderr.write(`chaos: ${problem}\n` +
    "usage: npm run chaos -- [--duration 10m] [--nemesis all|none|partition|NAME,...] [--nodes 3] [--seed N]\n" +
    "                        [--network auto|netns|proxy] [--out DIR] [--planted-bug NAME] [--leader-share 0.6]\n" +
    "       npm run chaos -- --check DIR   (judge a saved run again)\n" +
    `nemeses:\n${Object.entries(NEMESES).map(([n, d]) => `  ${n.padEnd(18)} ${d}`).join("\n")}\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { durationMs: 60_000, nodes: 3, nemeses: parseNemeses("all"), seed: Date.now() % 1_000_000, network: "auto", out: undefined, plantedBug: undefined, check: undefined, leaderTargetShare: undefined };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) usage(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--duration": {
        const v = value();
        const ms = parseGoDuration(v);
        if (ms === undefined || ms < 1_000) usage(`--duration must be a Go duration of at least 1s (like 90s or 10m), not "${v}"`);
        args.durationMs = ms;
        break;
      }
      case "--nodes": {
        const v = value();
        const n = Number(v);
        if (!Number.isInteger(n) || n < 3 || n > 7) usage(`--nodes must be a whole number from 3 to 7, not "${v}"`);
        args.nodes = n;
        break;
      }
      case "--nemesis":
        try {
          args.nemeses = parseNemeses(value());
        } catch (err) {
          usage(errorMessage(err));
        }
        break;
      case "--seed": {
        const v = value();
        const n = Number(v);
        if (!Number.isSafeInteger(n) || n < 0) usage(`--seed must be a whole number, not "${v}"`);
        args.seed = n;
        break;
      }
      case "--network": {
        const v = value();
        if (v !== "auto" && v !== "netns" && v !== "proxy") usage(`--network must be auto, netns or proxy, not "${v}"`);
        args.network = v;
        break;
      }
      case "--out": args.out = value(); break;
      case "--planted-bug": args.plantedBug = value(); break;
      case "--check": args.check = value(); break;
      case "--leader-share": {
        const v = value();
        const share = Number(v);
        if (v === "" || !Number.isFinite(share) || share < 0 || share > 1) usage(`--leader-share must be a number from 0 to 1, not "${v}"`);
        args.leaderTargetShare = share;
        break;
      }
      case "--help": case "-h": usage("help");
      // falls through: usage exits
      default: usage(`unknown flag "${flag}"`);
    }
  }
  return args;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const log = (line: string): void => { process.stdout.write(`${line}\n`); };
  if (args.check !== undefined) {
    const history = await readHistory(join(args.check, "history.jsonl"));
    const result = await judge(args.check, history, [], log);
    log(`chaos: ${history.ops.length} ops, ${result.anomalies} anomalies, ${result.lost} lost`);
    process.exitCode = result.anomalies > 0 || result.lost > 0 ? 1 : 0;
    return;
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const dir = args.out ?? join(resultsRoot, stamp);
  log(`chaos: ${args.nodes} nodes, ${args.durationMs / 1000}s, nemeses ${args.nemeses.join(",") || "none"}, seed ${args.seed}, results in ${dir}`);
  const result = await runChaos({
    durationMs: args.durationMs, nodes: args.nodes, nemeses: args.nemeses, seed: args.seed, network: args.network, dir, log,
    ...(args.plantedBug === undefined ? {} : { plantedBug: args.plantedBug }),
    ...(args.leaderTargetShare === undefined ? {} : { schedule: { leaderTargetShare: args.leaderTargetShare } }),
  });
  log(`chaos: results in ${result.dir} (open timeline.html)`);
  log(`chaos: ${result.ops} ops, ${result.anomalies} anomalies, ${result.lost} lost`);
  process.exitCode = result.anomalies > 0 || result.lost > 0 ? 1 : 0;
}

main().catch((err: unknown) => {
  process.stderr.write(`chaos: the run failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
