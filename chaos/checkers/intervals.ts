// Time spans shared by the checkers that judge operations against faults: when the run ended,
// when each fault ended, and the span each operation may have been in flight.

import type { FaultRecord, Operation, RunHistory } from "../history.js";
import { pushTo } from "./group.js";

export interface SpanMs {
  readonly startMs: number;
  readonly endMs: number;
}

/** The last moment the history mentions (or the planned duration, if later). */
export function runEndMs(history: RunHistory): number {
  let end = history.settings.durationMs;
  for (const op of history.ops) end = Math.max(end, op.invokedAtMs, op.completedAtMs ?? 0);
  for (const f of history.faults) end = Math.max(end, f.startMs, f.endMs ?? 0);
  for (const w of history.watches) for (const m of w.messages) end = Math.max(end, m.atMs);
  for (const o of history.observations) end = Math.max(end, o.atMs);
  return end;
}

/** A fault that never healed lasts to the end of the run. */
export function faultSpanMs(fault: FaultRecord, endOfRunMs: number): SpanMs {
  return { startMs: fault.startMs, endMs: fault.endMs ?? endOfRunMs };
}

/** Closed spans overlap when they share at least one instant. */
export function overlaps(a: SpanMs, b: SpanMs): boolean {
  return a.startMs <= b.endMs && b.startMs <= a.endMs;
}

/**
 * The span each operation may have been in flight. An ok or failed operation spans its interval.
 * An unknown one has no completion, but its client runs one operation at a time, so it had given
 * up by the time it invoked its next operation; the client's last operation runs to the end of the run.
 */
export function opSpansMs(history: RunHistory): Map<number, SpanMs> {
  const endOfRunMs = runEndMs(history);
  const byClient = new Map<string, Operation[]>();
  for (const op of history.ops) pushTo(byClient, op.client, op);
  const spans = new Map<number, SpanMs>();
  for (const ops of byClient.values()) {
    ops.sort((a, b) => a.invokedAtMs - b.invokedAtMs || a.id - b.id);
    ops.forEach((op, i) => {
      const endMs = op.completedAtMs ?? (i + 1 < ops.length ? ops[i + 1].invokedAtMs : endOfRunMs);
      spans.set(op.id, { startMs: op.invokedAtMs, endMs: Math.max(op.invokedAtMs, endMs) });
    });
  }
  return spans;
}
