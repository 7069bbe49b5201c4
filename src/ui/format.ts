// Times and durations as a person reads them on the dashboard.

const SECOND_MS = 1000;
const MINUTE_MS = 60 * SECOND_MS;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;
const YEAR_MS = 365 * DAY_MS;

/** 850 ms, 12 s, 5 min, 3 h, 12 d, 2.1 y: the largest unit that keeps the figure readable. */
export function duration(ms: number): string {
  const abs = Math.abs(ms);
  if (abs < SECOND_MS) return `${Math.round(abs)} ms`;
  if (abs < MINUTE_MS) return `${(abs / SECOND_MS).toFixed(abs < 10 * SECOND_MS ? 1 : 0)} s`;
  if (abs < HOUR_MS) return `${Math.round(abs / MINUTE_MS)} min`;
  if (abs < DAY_MS) return `${(abs / HOUR_MS).toFixed(abs < 10 * HOUR_MS ? 1 : 0)} h`;
  if (abs < YEAR_MS) return `${Math.round(abs / DAY_MS)} d`;
  return `${(abs / YEAR_MS).toFixed(1)} y`;
}

/** "in 3 h" or "5 min ago", from an ISO time. */
export function relative(iso: string, nowMs: number): string {
  const deltaMs = Date.parse(iso) - nowMs;
  if (Number.isNaN(deltaMs)) return iso;
  return deltaMs >= 0 ? `in ${duration(deltaMs)}` : `${duration(deltaMs)} ago`;
}

/** 2025-06-01 14:03:22 UTC: unambiguous across the operators' time zones. */
export function utc(iso: string): string {
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? iso : `${t.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

export function msUntil(iso: string, nowMs: number): number {
  return Date.parse(iso) - nowMs;
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
