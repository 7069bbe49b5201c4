// The chaos smoke that CI runs on every submission: a short run with every nemesis on three real
// nodes, checked by every checker. The long runs (10 minutes, 3 and 5 nodes) are manual:
// `npm run chaos -- --duration 10m --nemesis all [--nodes 5]`.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parseNemeses } from "../../chaos/nemesis.js";
import { runChaosWithin } from "../support/chaos_run.js";

const SMOKE_DURATION_MS = 75_000;

void test("a chaos smoke with every nemesis on three nodes finds no anomaly and loses nothing", { timeout: 260_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "cairn-chaos-smoke-"));
  try {
    const { result, lines } = await runChaosWithin({
      durationMs: SMOKE_DURATION_MS, nodes: 3, nemeses: parseNemeses("all"), seed: 11, network: "auto", dir,
      schedule: { faultMsMin: 2_500, faultMsMax: 5_000, gapMsMin: 1_500, gapMsMax: 3_000 },
    }, 240_000);
    const failed = result.verdicts.filter((v) => !v.ok).map((v) => `${v.checker}: ${v.anomalies.slice(0, 3).map((a) => a.message).join("; ")}`);
    assert.deepEqual(failed, [], `anomalies:\n${failed.join("\n")}\n${lines.join("\n")}`);
    assert.equal(result.lost, 0);
    assert.ok(result.ops > 1_000, `only ${result.ops} operations ran`);
    for (const file of ["history.jsonl", "verdicts.json", "timeline.html"]) assert.ok(existsSync(join(dir, file)), `${file} was not written`);
    const kinds = new Set(result.faults.map((f) => f.nemesis));
    assert.ok(kinds.size >= 5, `only ${[...kinds].join(", ")} were injected`);
    assert.ok(result.faults.every((f) => f.endMs !== undefined), "a fault was never healed");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
