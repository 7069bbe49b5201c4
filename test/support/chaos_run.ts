// Runs a chaos run for a test, with its own deadline under the test's: a run that overstays fails
// with the run's log so far (which says the phase it was in), rather than only "test timed out".

import { type ChaosOptions, type ChaosResult, runChaos } from "../../chaos/run.js";

export interface ChaosTestRun {
  readonly result: ChaosResult;
  /** The run's log, each line stamped with the seconds since it started. */
  readonly lines: readonly string[];
}

export async function runChaosWithin(opts: Omit<ChaosOptions, "log">, deadlineMs: number): Promise<ChaosTestRun> {
  const lines: string[] = [];
  const started = performance.now();
  const log = (line: string): void => { lines.push(`[${((performance.now() - started) / 1000).toFixed(1)}s] ${line}`); };
  let timer: NodeJS.Timeout | undefined;
  const overstayed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the chaos run took over ${deadlineMs} ms; its log:\n${lines.join("\n")}`)), deadlineMs);
  });
  try {
    const result = await Promise.race([runChaos({ ...opts, log }), overstayed]);
    return { result, lines };
  } finally {
    clearTimeout(timer);
  }
}
