// What every fan-out measurement of `npm run bench:watch` reports, whatever the watcher kind: how
// long one change took to reach every watcher, and what the watchers cost the serving process.

import { readFileSync } from "node:fs";

export interface FanoutResult {
  /** For example "cairn gRPC watch", "cairn HTTP blocking query", "etcd 3.4 watch". */
  readonly kind: string;
  readonly watchers: number;
  /** From just before the write was sent until each watcher had the change, in milliseconds. */
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Watchers that never saw the change within the measurement's deadline. */
  readonly missed: number;
  /** The serving process's resident memory with the watchers parked, less its memory before them. */
  readonly rssGrowthBytes: number;
}

export function bytesPerWatcher(r: FanoutResult): number {
  return r.watchers === 0 ? 0 : r.rssGrowthBytes / r.watchers;
}

/** The nearest-rank percentile of `samples` (p in [0, 100]); NaN when there are none. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

/** Fills a FanoutResult's timing fields from per-watcher latencies. */
export function timings(latenciesMs: readonly number[]): Pick<FanoutResult, "p50Ms" | "p99Ms" | "maxMs"> {
  return { p50Ms: percentile(latenciesMs, 50), p99Ms: percentile(latenciesMs, 99), maxMs: percentile(latenciesMs, 100) };
}

/** A process's resident set size, from /proc (Linux). */
export function rssBytesOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (match === null) throw new Error(`/proc/${pid}/status has no VmRSS line: is process ${pid} running?`);
  return Number(match[1]) * 1024;
}

export function describeFanout(r: FanoutResult): string {
  const perWatcher = bytesPerWatcher(r);
  return `${r.kind}: ${r.watchers} watchers, p50 ${r.p50Ms.toFixed(0)} ms, p99 ${r.p99Ms.toFixed(0)} ms, max ${r.maxMs.toFixed(0)} ms` +
    `${r.missed > 0 ? `, ${r.missed} MISSED` : ""}, RSS +${(r.rssGrowthBytes / 1048576).toFixed(1)} MB (${(perWatcher / 1024).toFixed(2)} KB per watcher)`;
}
