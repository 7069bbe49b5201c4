// Text into an HTML or SVG page. Every string that came from a run (a fault's detail, an error a
// node sent, a checker's message) goes through `escapeHtml`, because any of them may hold markup.

const ESCAPES: Readonly<Record<string, string>> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Text made safe for element content and for quoted attribute values, in HTML and in SVG alike. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** A two-column table of a verdict's stats, in the order the checker gave them. */
export function statsTable(stats: Readonly<Record<string, number | string>>): string {
  const rows = Object.entries(stats).map(([key, value]) => `<tr><th>${escapeHtml(key)}</th><td>${escapeHtml(formatStat(value))}</td></tr>`);
  if (rows.length === 0) return `<p class="none">no stats</p>`;
  return `<table>${rows.join("")}</table>`;
}

/** A stat as a person reads it: integers with thousands separators, fractions to 4 significant digits. */
export function formatStat(value: number | string): string {
  if (typeof value === "string") return value;
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return Number(value.toPrecision(4)).toString();
}

/** Milliseconds since the run started, as seconds with millisecond precision: "12.345 s". */
export function formatSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(3)} s`;
}

/** A run's length as a person says it: "3m 0s", "45s", "1h 2m 3s". */
export function formatDuration(ms: number): string {
  const totalSeconds = Math.round(ms / 1000);
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  if (hours > 0) return `${hours}h ${minutes}m ${seconds}s`;
  if (minutes > 0) return `${minutes}m ${seconds}s`;
  return `${seconds}s`;
}
