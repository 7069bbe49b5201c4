// Availability: the share of operations that failed (fail or unknown), overall and by fault.
// An operation counts toward every nemesis kind with a fault overlapping its span (see
// opSpansMs: an unknown operation spans up to its client's next one), and toward "none" when no
// fault overlaps it. These are figures for the report, not anomalies, with one exception:
//
//   A write (register or deregister) that failed with HTTP 503 in less than
//   leaderWaitMs * (1 - LEADER_WAIT_SLACK) while no fault of any kind overlapped its span did
//   not wait for a leader, as a write that meets an election must (#6): an anomaly.
//
// Write latencies (ok writes, invocation to acknowledgement) are given overall and for the writes
// that overlapped a fault.

import type { Operation, RunHistory, Verdict } from "../history.js";
import { faultSpanMs, opSpansMs, overlaps, runEndMs } from "./intervals.js";
import { AnomalyLog, describeOp } from "./verdicts.js";

/** How much shorter than --leader-wait a 503 may come back and still count as having waited. */
export const LEADER_WAIT_SLACK = 0.2;
export const NO_FAULT_BUCKET = "none";
const HTTP_SERVICE_UNAVAILABLE = 503;
/** Digits a share keeps in the stats. */
const SHARE_DIGITS = 4;

export function checkAvailability(history: RunHistory): Verdict {
  const anomalies = new AnomalyLog();
  const spans = opSpansMs(history);
  const endOfRunMs = runEndMs(history);
  const faults = history.faults.map((f) => ({ nemesis: f.nemesis, span: faultSpanMs(f, endOfRunMs) }));
  const waitedAtLeastMs = history.settings.leaderWaitMs * (1 - LEADER_WAIT_SLACK);
  const buckets = new Map<string, { ops: number; failed: number }>();
  const count = (bucket: string, failed: boolean): void => {
    let b = buckets.get(bucket);
    if (b === undefined) buckets.set(bucket, (b = { ops: 0, failed: 0 }));
    b.ops++;
    if (failed) b.failed++;
  };
  for (const f of faults) if (!buckets.has(f.nemesis)) buckets.set(f.nemesis, { ops: 0, failed: 0 });

  let failedTotal = 0;
  const writeLatencyMs: number[] = [];
  const writeLatencyDuringFaultsMs: number[] = [];
  for (const op of history.ops) {
    const span = spans.get(op.id) ?? { startMs: op.invokedAtMs, endMs: op.invokedAtMs };
    const failed = op.outcome !== "ok";
    if (failed) failedTotal++;
    const kinds = new Set(faults.filter((f) => overlaps(span, f.span)).map((f) => f.nemesis));
    if (kinds.size === 0) count(NO_FAULT_BUCKET, failed);
    for (const kind of kinds) count(kind, failed);
    if (!isWrite(op) || op.completedAtMs === undefined) continue;
    const tookMs = op.completedAtMs - op.invokedAtMs;
    if (op.outcome === "ok") {
      writeLatencyMs.push(tookMs);
      if (kinds.size > 0) writeLatencyDuringFaultsMs.push(tookMs);
    } else if (op.outcome === "fail" && op.status === HTTP_SERVICE_UNAVAILABLE && tookMs < waitedAtLeastMs && kinds.size === 0) {
      anomalies.add({
        message: `did not wait for a leader: ${op.kind} ${describeOp(op)} on ${op.node} failed with 503 after ${tookMs} ms, ` +
          `under ${waitedAtLeastMs} ms (--leader-wait ${history.settings.leaderWaitMs} ms less ${LEADER_WAIT_SLACK * 100}%), with no fault active` +
          (op.error === undefined ? "" : `: ${op.error}`),
        opIds: [op.id], atMs: op.invokedAtMs,
      });
    }
  }

  const stats: Record<string, number | string> = { ops: history.ops.length, failed: failedTotal, failedShare: share(failedTotal, history.ops.length) };
  for (const [bucket, b] of [...buckets].sort(([a], [b]) => a.localeCompare(b))) {
    stats[`ops.${bucket}`] = b.ops;
    stats[`failed.${bucket}`] = b.failed;
    stats[`failedShare.${bucket}`] = share(b.failed, b.ops);
  }
  Object.assign(stats, latencyStats("writeLatencyMs", writeLatencyMs), latencyStats("writeLatencyDuringFaultsMs", writeLatencyDuringFaultsMs));
  return anomalies.verdict("availability", stats);
}

function isWrite(op: Operation): boolean {
  return op.kind === "register" || op.kind === "deregister";
}

function share(part: number, whole: number): number {
  return whole === 0 ? 0 : Number((part / whole).toFixed(SHARE_DIGITS));
}

/** Nearest-rank percentiles; an empty list has none (reported as 0 with its count). */
function latencyStats(name: string, valuesMs: number[]): Record<string, number> {
  const sorted = [...valuesMs].sort((a, b) => a - b);
  const rank = (p: number): number => (sorted.length === 0 ? 0 : sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]);
  return { [`${name}.count`]: sorted.length, [`${name}.p50`]: rank(0.5), [`${name}.p99`]: rank(0.99), [`${name}.max`]: sorted.at(-1) ?? 0 };
}
