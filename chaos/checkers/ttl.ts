// TTL correctness, from the heartbeats, the health reads and the abandoned instances.
//
// Early expiry. A health read R (ok, "critical") of instance X is an anomaly when X's TTL could
// not have lapsed anywhere in the span S = [R.invoked - 1.5 * ttlMs - EXPIRY_SETTLE_MS, R.completed]:
//   - no fault overlaps S other than a clock jump (a paused node, a partition or a crash may leave
//     a heartbeat acknowledged by a leader that was being deposed; those are other checks'
//     business). A jumped wall clock is no excuse: TTLs are durations and must not notice it;
//   - every heartbeat of X whose span overlaps S is ok;
//   - at every instant s of S, some ok heartbeat that had certainly arrived (completed <= s)
//     was sent less than ttlMs before s (invoked > s - ttlMs): taking each heartbeat's arrival
//     as late as its completion for "had arrived" and as early as its invocation for "how long
//     ago" is the worst case, so a lapse is impossible. The worst instants are just before each
//     completion inside S and S's end, so only those are checked.
// The 1.5 * ttlMs + EXPIRY_SETTLE_MS before the read leaves time for an expiry decided earlier
// (and for the heartbeat that cures it) to be committed and applied on the node that answered.
//
// Abandoned instances (registered with a TTL check and never heartbeated) must be critical at
// the end: the last ok health read of each that was invoked after every fault had ended (by
// invocation) says "critical". Not critical, or no such read, is an anomaly.

import type { HealthReadOp, HeartbeatOp, RunHistory, Verdict } from "../history.js";
import { pushTo } from "./group.js";
import { faultSpanMs, opSpansMs, overlaps, runEndMs, type SpanMs } from "./intervals.js";
import { AnomalyLog, describeOp } from "./verdicts.js";

/** Time for an expiry or its cure to be committed and applied, beyond the 1.5 TTLs. */
export const EXPIRY_SETTLE_MS = 2_000;
export const EXPIRY_WINDOW_TTLS = 1.5;
/** The one fault a TTL must be immune to. */
const CLOCK_JUMP = "clock-jump";

export function checkTtl(history: RunHistory): Verdict {
  const anomalies = new AnomalyLog();
  const ttlMs = history.settings.ttlMs;
  const endOfRunMs = runEndMs(history);
  const faultSpans = history.faults.filter((f) => f.nemesis !== CLOCK_JUMP).map((f) => faultSpanMs(f, endOfRunMs));
  const spans = opSpansMs(history);
  const heartbeats = new Map<string, HeartbeatOp[]>();
  const healthReads = new Map<string, HealthReadOp[]>();
  for (const op of history.ops) {
    if (op.kind === "heartbeat") pushTo(heartbeats, op.instance, op);
    if (op.kind === "health") pushTo(healthReads, op.instance, op);
  }

  let criticalReads = 0;
  let criticalReadsJudged = 0;
  for (const [instance, reads] of healthReads) {
    for (const read of reads) {
      if (read.outcome !== "ok" || read.health !== "critical" || read.completedAtMs === undefined) continue;
      criticalReads++;
      const window: SpanMs = { startMs: read.invokedAtMs - EXPIRY_WINDOW_TTLS * ttlMs - EXPIRY_SETTLE_MS, endMs: read.completedAtMs };
      if (faultSpans.some((f) => overlaps(f, window))) continue;
      const beats = heartbeats.get(instance) ?? [];
      const inWindow = beats.filter((b) => overlaps(spans.get(b.id) ?? { startMs: b.invokedAtMs, endMs: b.invokedAtMs }, window));
      if (inWindow.some((b) => b.outcome !== "ok")) continue;
      criticalReadsJudged++;
      const ok = beats.filter((b): b is HeartbeatOp & { completedAtMs: number } => b.outcome === "ok" && b.completedAtMs !== undefined);
      if (!alwaysFresh(ok, window, ttlMs)) continue;
      anomalies.add({
        message: `early expiry: health read ${describeOp(read)} on ${read.node} saw instance ${instance} critical, but it was heartbeated ` +
          `ok less than ${ttlMs} ms apart from ${Math.round(window.startMs)} ms through the read, with no fault but a clock jump`,
        opIds: [read.id], atMs: read.invokedAtMs,
      });
    }
  }

  const lastFaultEndMs = Math.max(Number.NEGATIVE_INFINITY, ...faultSpans.map((f) => f.endMs));
  for (const instance of history.abandonedInstances) {
    const after = (healthReads.get(instance) ?? [])
      .filter((r) => r.outcome === "ok" && r.invokedAtMs > lastFaultEndMs)
      .sort((a, b) => a.invokedAtMs - b.invokedAtMs || a.id - b.id);
    const last = after.at(-1);
    if (last === undefined) {
      anomalies.add({ message: `abandoned instance ${instance}: no ok health read after the last fault ended (${lastFaultEndMs} ms), so its expiry was never checked` });
    } else if (last.health !== "critical") {
      anomalies.add({
        message: `abandoned instance ${instance} is ${last.health ?? "of unknown health"} in its last health read ${describeOp(last)} on ${last.node}, not critical`,
        opIds: [last.id], atMs: last.invokedAtMs,
      });
    }
  }
  return anomalies.verdict("ttl", {
    criticalReads, criticalReadsJudged, abandonedInstances: history.abandonedInstances.length, ttlMs,
  });
}

/** Whether at every instant of `window` an arrived heartbeat was sent less than ttlMs earlier (header). */
function alwaysFresh(beats: readonly (HeartbeatOp & { completedAtMs: number })[], window: SpanMs, ttlMs: number): boolean {
  const byCompletion = [...beats].sort((a, b) => a.completedAtMs - b.completedAtMs);
  let sentLatestMs = Number.NEGATIVE_INFINITY;
  let i = 0;
  // Heartbeats that had arrived by the window's start.
  for (; i < byCompletion.length && byCompletion[i].completedAtMs <= window.startMs; i++) sentLatestMs = Math.max(sentLatestMs, byCompletion[i].invokedAtMs);
  for (; i < byCompletion.length && byCompletion[i].completedAtMs <= window.endMs; i++) {
    const arrivedMs = byCompletion[i].completedAtMs;
    // Just before this heartbeat (and any that completed at the same instant) arrived.
    const firstAtThisInstant = i === 0 || byCompletion[i - 1].completedAtMs !== arrivedMs;
    if (firstAtThisInstant && !(sentLatestMs > arrivedMs - ttlMs)) return false;
    sentLatestMs = Math.max(sentLatestMs, byCompletion[i].invokedAtMs);
  }
  return sentLatestMs > window.endMs - ttlMs;
}
