// What every chaos checker hands back: a Verdict with a bounded list of anomalies and a count of
// all of them, so a run with a million problems still writes a report a person can read.

import type { Anomaly, Verdict } from "../history.js";

/** Anomalies listed in one verdict, at most; the rest are only counted (stats.anomaliesFound). */
export const ANOMALIES_LISTED_MAX = 50;

/** Collects one checker's anomalies: keeps the first ANOMALIES_LISTED_MAX, counts them all. */
export class AnomalyLog {
  private readonly listed: Anomaly[] = [];
  private found = 0;

  constructor(private readonly listedMax: number = ANOMALIES_LISTED_MAX) {}

  add(anomaly: Anomaly): void {
    this.found++;
    if (this.listed.length < this.listedMax) this.listed.push(anomaly);
  }

  get count(): number {
    return this.found;
  }

  /** The verdict: ok exactly when nothing was found; stats gain anomaliesFound. */
  verdict(checker: string, stats: Readonly<Record<string, number | string>>): Verdict {
    return { checker, ok: this.found === 0, anomalies: [...this.listed], stats: { ...stats, anomaliesFound: this.found } };
  }
}

/** "#12 (register, client c3, 100-140 ms)": how an anomaly names an operation. */
export function describeOp(op: { readonly id: number; readonly kind: string; readonly client: string; readonly invokedAtMs: number; readonly completedAtMs: number | undefined }): string {
  const end = op.completedAtMs === undefined ? "?" : String(op.completedAtMs);
  return `#${op.id} (${op.kind}, client ${op.client}, ${op.invokedAtMs}-${end} ms)`;
}
