// The timeline page of a chaos run: one self-contained HTML file (inline SVG and CSS, no scripts,
// nothing fetched) that shows, on one time axis, the faults injected, each node's role, and every
// operation's latency, with the checkers' verdicts above and their anomalies and stats below.
// Hovering over a fault, a lane, a term change or an anomaly marker shows its details (SVG <title>).
//
// Pure: the page is a function of the history and the verdicts alone, so the same run always draws
// the same page. Layout, top to bottom:
//   time axis | anomaly markers | one lane per nemesis | one lane per node | latency scatter | time axis

import type { Anomaly, FaultRecord, RunHistory, Verdict } from "../history.js";
import { escapeHtml, formatDuration, formatSeconds, formatStat, statsTable } from "./html.js";
import { compareNodeNames, leaderLanes, type LaneState, type NodeLane } from "./leader_lanes.js";
import { OPERATION_KINDS, opColumns, POINT_CLASSES, type OpColumns, type PointClass } from "./op_columns.js";
import { latencyRange, scatterPoints, type ScatterFrame, type ScatterPoints } from "./scatter.js";

/** Two polls of a node further apart than this mean it was unreachable in between. */
const observationGapMsMax = 1000;
/** Past this many operations the scatter is thinned (see scatter.ts), keeping the page a few MB at most. */
const scatterPointsMax = 20_000;
const anomaliesListedMax = 100;
const anomalyMarkersMax = 1000;
/** Op ids shown per listed anomaly; the rest are counted. */
const anomalyOpIdsListedMax = 20;
/** Faults of one nemesis that overlap in time stack in rows; past this they share the last row. */
const faultRowsPerLaneMax = 6;
const timeTicksTarget = 12;

const layout = {
  widthPx: 1200,
  labelWidthPx: 150,
  rightMarginPx: 20,
  axisHeightPx: 24,
  anomalyRowPx: 14,
  sectionTitlePx: 18,
  faultRowPx: 18,
  nodeLanePx: 16,
  laneGapPx: 3,
  unknownStripPx: 14,
  scatterHeightPx: 320,
  /** The average glyph width of the 11px labels, to cut a fault's label to its band. */
  charWidthPx: 6.4,
} as const;

const plotWidthPx = layout.widthPx - layout.labelWidthPx - layout.rightMarginPx;

const POINT_COLORS: Readonly<Record<PointClass, string>> = {
  register: "#1f77b4",
  deregister: "#9467bd",
  read: "#2ca02c",
  cert: "#8c564b",
  heartbeat: "#17becf",
  health: "#bcbd22",
  failed: "#d62728",
  unknown: "#ff7f0e",
};

const NEMESIS_COLORS: Readonly<Record<string, string>> = {
  crash: "#8c2d04",
  pause: "#d94801",
  "partition-isolate": "#54278f",
  "partition-halves": "#756bb1",
  "partition-bridge": "#3f007d",
  "partition-ring": "#9e9ac8",
  "partition-oneway": "#6a51a3",
  "slow-links": "#238b45",
  "clock-jump": "#c51b7d",
  membership: "#525252",
};
/** For a nemesis the map above does not name. */
const NEMESIS_FALLBACK_COLORS = ["#01665e", "#8c510a", "#2166ac", "#b2182b", "#4d9221"];

const LANE_COLORS: Readonly<Record<LaneState, string>> = {
  leader: "#2166ac",
  follower: "#d1e5f0",
  candidate: "#fdb863",
  other: "#c2a5cf",
  unreachable: "url(#unreachable)",
};

/** Maps run time to the x of the plot area. */
interface TimeFrame {
  readonly endMs: number;
  readonly xPxOfMs: (ms: number) => number;
}

/** A block of the chart: its SVG, drawn at y = 0, and how tall it is. */
interface Block {
  readonly svg: string;
  readonly heightPx: number;
}

export function renderTimeline(history: RunHistory, verdicts: readonly Verdict[]): string {
  const columns = opColumns(history.ops);
  const time = timeFrameOf(history, columns);
  const lanes = leaderLanes(history.observations, nodesOf(history, columns), observationGapMsMax);
  const scatterFrame: ScatterFrame = { xPxOfMs: time.xPxOfMs, heightPx: layout.scatterHeightPx, latency: latencyRange(columns), unknownYPx: -layout.unknownStripPx / 2 };
  const points = scatterPoints(columns, scatterFrame, scatterPointsMax);
  const colors = nemesisColors(history.faults);
  const listed = listedAnomalies(verdicts);

  const blocks: Block[] = [
    timeAxis(time, "top"),
    anomalyMarkers(listed.slice(0, anomalyMarkersMax), time),
    faultLanes(history.faults, colors, time),
    nodeLanes(lanes, time),
    latencyScatter(points, columns, scatterFrame, history.faults, colors, time),
    timeAxis(time, "bottom"),
  ];
  const chart = stack(blocks, time);

  return [
    "<!DOCTYPE html>",
    `<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(titleOf(history))}</title><style>${PAGE_CSS}</style></head><body>`,
    header(history, verdicts),
    chart,
    legend(points, columns),
    anomalyList(listed),
    statsSection(verdicts),
    "</body></html>",
  ].join("\n");
}

function titleOf(history: RunHistory): string {
  return `Cairn chaos: ${history.settings.nodes} nodes, seed ${history.settings.seed}`;
}

function timeFrameOf(history: RunHistory, columns: OpColumns): TimeFrame {
  let endMs = Math.max(1, history.settings.durationMs, columns.lastAtMs);
  for (const fault of history.faults) endMs = Math.max(endMs, fault.endMs ?? fault.startMs);
  for (const observation of history.observations) endMs = Math.max(endMs, observation.atMs);
  return { endMs, xPxOfMs: (ms) => layout.labelWidthPx + (ms / endMs) * plotWidthPx };
}

/** Every node the run names: polled, faulted, or sent an operation. */
function nodesOf(history: RunHistory, columns: OpColumns): string[] {
  const nodes = new Set<string>(columns.nodes);
  for (const observation of history.observations) nodes.add(observation.node);
  for (const fault of history.faults) for (const node of fault.nodes) nodes.add(node);
  return [...nodes].sort(compareNodeNames);
}

/** Blocks one under another in one SVG, with the time grid behind them all. */
function stack(blocks: readonly Block[], time: TimeFrame): string {
  const heightPx = blocks.reduce((sum, block) => sum + block.heightPx, 0);
  const parts: string[] = [];
  let yPx = 0;
  for (const block of blocks) {
    parts.push(`<g transform="translate(0 ${px(yPx)})">${block.svg}</g>`);
    yPx += block.heightPx;
  }
  const grid = timeTicks(time.endMs).map((ms) => `<line class="grid" x1="${px(time.xPxOfMs(ms))}" x2="${px(time.xPxOfMs(ms))}" y1="0" y2="${px(heightPx)}"/>`);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${layout.widthPx} ${px(heightPx)}" width="${layout.widthPx}" height="${px(heightPx)}">`,
    `<defs><pattern id="unreachable" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#eeeeee"/><line x1="0" y1="0" x2="0" y2="6" stroke="#999999" stroke-width="2"/></pattern></defs>`,
    ...grid,
    ...parts,
    "</svg>",
  ].join("\n");
}

/** Tick times at a round step (1, 2 or 5 times a power of ten seconds), about timeTicksTarget of them. */
function timeTicks(endMs: number): number[] {
  const rawStepMs = endMs / timeTicksTarget;
  const decadeMs = 10 ** Math.floor(Math.log10(rawStepMs));
  const stepMs = [1, 2, 5, 10].map((m) => m * decadeMs).find((s) => s >= rawStepMs) ?? 10 * decadeMs;
  const ticks: number[] = [];
  for (let i = 0; i * stepMs <= endMs; i++) ticks.push(i * stepMs);
  return ticks;
}

function timeAxis(time: TimeFrame, side: "top" | "bottom"): Block {
  const lineYPx = side === "top" ? layout.axisHeightPx - 2 : 2;
  const labelYPx = side === "top" ? layout.axisHeightPx - 8 : layout.axisHeightPx - 4;
  const parts = [`<line class="axis" x1="${layout.labelWidthPx}" x2="${layout.labelWidthPx + plotWidthPx}" y1="${lineYPx}" y2="${lineYPx}"/>`];
  for (const ms of timeTicks(time.endMs)) {
    parts.push(`<text class="tick" x="${px(time.xPxOfMs(ms))}" y="${labelYPx}" text-anchor="middle">${Number((ms / 1000).toFixed(3))} s</text>`);
  }
  parts.push(`<text class="label" x="4" y="${labelYPx}">time since start</text>`);
  return { svg: parts.join(""), heightPx: layout.axisHeightPx };
}

/** An anomaly with its checker and its number in the list below the chart. */
interface ListedAnomaly {
  readonly number: number;
  readonly checker: string;
  readonly anomaly: Anomaly;
}

function listedAnomalies(verdicts: readonly Verdict[]): ListedAnomaly[] {
  const listed: ListedAnomaly[] = [];
  for (const verdict of verdicts) {
    for (const anomaly of verdict.anomalies) listed.push({ number: listed.length + 1, checker: verdict.checker, anomaly });
  }
  return listed;
}

function anomalyMarkers(listed: readonly ListedAnomaly[], time: TimeFrame): Block {
  const parts = [`<text class="label" x="4" y="${layout.anomalyRowPx - 3}">anomalies</text>`];
  for (const { number, checker, anomaly } of listed) {
    if (anomaly.atMs === undefined) continue;
    // A checker may place an anomaly after the last recorded event; it is pinned to the axis end.
    const xPx = time.xPxOfMs(Math.min(Math.max(0, anomaly.atMs), time.endMs));
    parts.push(`<path class="anomaly" d="M${px(xPx)} ${layout.anomalyRowPx - 1}l-5 -9h10z"><title>#${number} ${escapeHtml(checker)} at ${formatSeconds(anomaly.atMs)}: ${escapeHtml(anomaly.message)}</title></path>`);
  }
  return { svg: parts.join(""), heightPx: layout.anomalyRowPx };
}

/** One color per nemesis, the same in its lane and behind the scatter. */
function nemesisColors(faults: readonly FaultRecord[]): ReadonlyMap<string, string> {
  const colors = new Map<string, string>();
  let fallbackIndex = 0;
  for (const fault of [...faults].sort((a, b) => a.startMs - b.startMs)) {
    if (!colors.has(fault.nemesis)) colors.set(fault.nemesis, NEMESIS_COLORS[fault.nemesis] ?? NEMESIS_FALLBACK_COLORS[fallbackIndex++ % NEMESIS_FALLBACK_COLORS.length]);
  }
  return colors;
}

function faultLanes(faults: readonly FaultRecord[], colors: ReadonlyMap<string, string>, time: TimeFrame): Block {
  const byNemesis = new Map<string, FaultRecord[]>();
  for (const fault of [...faults].sort((a, b) => a.startMs - b.startMs)) {
    const lane = byNemesis.get(fault.nemesis);
    if (lane === undefined) byNemesis.set(fault.nemesis, [fault]);
    else lane.push(fault);
  }
  const parts = [sectionTitle("faults", faults.length === 0 ? "none injected" : `${faults.length} injected`)];
  let yPx = layout.sectionTitlePx;
  for (const [nemesis, laneFaults] of byNemesis) {
    const color = colors.get(nemesis) ?? NEMESIS_FALLBACK_COLORS[0];
    const rows = faultRows(laneFaults, time.endMs);
    const rowCount = Math.max(...rows) + 1;
    const laneHeightPx = rowCount * layout.faultRowPx;
    parts.push(`<text class="label" x="4" y="${px(yPx + layout.faultRowPx - 5)}">${escapeHtml(nemesis)}</text>`);
    laneFaults.forEach((fault, i) => {
      // A label too long for its band runs on past the band's end, up to the next band in its row.
      const nextInRow = laneFaults.find((_, j) => j > i && rows[j] === rows[i]);
      parts.push(faultBand(fault, color, yPx + rows[i] * layout.faultRowPx, nextInRow?.startMs ?? time.endMs, time));
    });
    yPx += laneHeightPx + layout.laneGapPx;
  }
  return { svg: parts.join(""), heightPx: yPx + layout.laneGapPx };
}

/** The row of each fault (sorted by start) in its lane: the first row free by the time it starts. */
function faultRows(faults: readonly FaultRecord[], runEndMs: number): number[] {
  const rowEndsMs: number[] = [];
  return faults.map((fault) => {
    let row = rowEndsMs.findIndex((endMs) => endMs <= fault.startMs);
    if (row === -1) row = Math.min(rowEndsMs.length, faultRowsPerLaneMax - 1);
    rowEndsMs[row] = Math.max(rowEndsMs[row] ?? 0, fault.endMs ?? runEndMs);
    return row;
  });
}

function faultBand(fault: FaultRecord, color: string, yPx: number, rowFreeUntilMs: number, time: TimeFrame): string {
  const healed = fault.endMs !== undefined;
  const endMs = fault.endMs ?? time.endMs;
  const xPx = time.xPxOfMs(fault.startMs);
  const widthPx = Math.max(2, time.xPxOfMs(endMs) - xPx);
  const heightPx = layout.faultRowPx - 2;
  const textYPx = px(yPx + heightPx - 4);
  const span = healed ? `${formatSeconds(fault.startMs)} to ${formatSeconds(endMs)} (${formatSeconds(endMs - fault.startMs)})` : `${formatSeconds(fault.startMs)}, never healed`;
  const tooltip = `${fault.detail} [${fault.nemesis}; nodes ${fault.nodes.join(", ")}] ${span}`;
  const inside = fitted(fault.detail, widthPx - 4);
  let label = "";
  if (inside === fault.detail) {
    label = `<text class="band" x="${px(xPx + 3)}" y="${textYPx}">${escapeHtml(inside)}</text>`;
  } else {
    const afterPx = xPx + widthPx + 3;
    const after = fitted(fault.detail, time.xPxOfMs(rowFreeUntilMs) - afterPx - 3);
    if (after !== "") label = `<text class="after-band" x="${px(afterPx)}" y="${textYPx}">${escapeHtml(after)}</text>`;
    else if (inside !== "") label = `<text class="band" x="${px(xPx + 3)}" y="${textYPx}">${escapeHtml(inside)}</text>`;
  }
  return `<g><rect class="fault${healed ? "" : " unhealed"}" x="${px(xPx)}" y="${px(yPx)}" width="${px(widthPx)}" height="${heightPx}" fill="${color}"/>${label}<title>${escapeHtml(tooltip)}</title></g>`;
}

/** As much of `text` as fits in `widthPx`, with an ellipsis when cut; "" when not even a few letters fit. */
function fitted(text: string, widthPx: number): string {
  const charsMax = Math.floor(widthPx / layout.charWidthPx);
  if (text.length <= charsMax) return text;
  if (charsMax < 4) return "";
  return `${text.slice(0, charsMax - 1)}…`;
}

function nodeLanes(lanes: readonly NodeLane[], time: TimeFrame): Block {
  const parts = [sectionTitle("nodes", `role polled from /v1/cluster; t = term; hatched = no answer for over ${observationGapMsMax / 1000} s`)];
  let yPx = layout.sectionTitlePx;
  for (const lane of lanes) {
    parts.push(`<g class="lane" data-node="${escapeHtml(lane.node)}">`);
    parts.push(`<text class="label" x="4" y="${px(yPx + layout.nodeLanePx - 4)}">${escapeHtml(lane.node)}${lane.segments.length === 0 ? " (never polled)" : ""}</text>`);
    for (const segment of lane.segments) {
      const xPx = time.xPxOfMs(segment.startMs);
      const widthPx = Math.max(1, time.xPxOfMs(segment.endMs) - xPx);
      const what = segment.state === "unreachable" ? "unreachable" : `${segment.role}, term ${segment.term}`;
      parts.push(`<rect x="${px(xPx)}" y="${px(yPx)}" width="${px(widthPx)}" height="${layout.nodeLanePx}" fill="${LANE_COLORS[segment.state]}"><title>${escapeHtml(`${lane.node}: ${what}, ${formatSeconds(segment.startMs)} to ${formatSeconds(segment.endMs)}`)}</title></rect>`);
      const termLabel = `t${segment.term}`;
      if (segment.state === "leader" && widthPx >= termLabel.length * layout.charWidthPx + 4) {
        parts.push(`<text class="term" x="${px(xPx + 2)}" y="${px(yPx + layout.nodeLanePx - 4)}">${termLabel}</text>`);
      }
    }
    for (const change of lane.termChanges) {
      const xPx = px(time.xPxOfMs(change.atMs));
      parts.push(`<line class="term-change" x1="${xPx}" x2="${xPx}" y1="${px(yPx - 1)}" y2="${px(yPx + layout.nodeLanePx + 1)}"><title>${escapeHtml(`${lane.node}: term ${change.fromTerm} → ${change.toTerm} at ${formatSeconds(change.atMs)}`)}</title></line>`);
    }
    parts.push("</g>");
    yPx += layout.nodeLanePx + layout.laneGapPx;
  }
  return { svg: parts.join(""), heightPx: yPx + layout.laneGapPx };
}

function latencyScatter(points: ScatterPoints, columns: OpColumns, frame: ScatterFrame, faults: readonly FaultRecord[], colors: ReadonlyMap<string, string>, time: TimeFrame): Block {
  const plotTopPx = layout.sectionTitlePx + layout.unknownStripPx;
  const parts = [sectionTitle("latency", "x = invoked, y = latency (log); red = failed; orange ticks on top = unknown outcome")];
  parts.push(`<g transform="translate(0 ${plotTopPx})">`);
  // Faint fault spans behind the points, so a latency spike lines up with the fault that caused it.
  for (const fault of faults) {
    const xPx = time.xPxOfMs(fault.startMs);
    const widthPx = Math.max(1, time.xPxOfMs(fault.endMs ?? time.endMs) - xPx);
    parts.push(`<rect class="backdrop" x="${px(xPx)}" y="0" width="${px(widthPx)}" height="${frame.heightPx}" fill="${colors.get(fault.nemesis) ?? NEMESIS_FALLBACK_COLORS[0]}"/>`);
  }
  parts.push(`<rect class="frame" x="${layout.labelWidthPx}" y="0" width="${plotWidthPx}" height="${frame.heightPx}"/>`);
  parts.push(`<text class="label unknown" x="4" y="${px(frame.unknownYPx + 4)}">unknown</text>`);
  for (let decadeMs = frame.latency.minMs; decadeMs <= frame.latency.maxMs * 1.0001; decadeMs *= 10) {
    const yPx = px(frame.heightPx * (1 - Math.log10(decadeMs / frame.latency.minMs) / Math.log10(frame.latency.maxMs / frame.latency.minMs)));
    parts.push(`<line class="grid" x1="${layout.labelWidthPx}" x2="${layout.labelWidthPx + plotWidthPx}" y1="${yPx}" y2="${yPx}"/>`);
    parts.push(`<text class="tick" x="${layout.labelWidthPx - 4}" y="${px(Number(yPx) + 4)}" text-anchor="end">${latencyLabel(decadeMs)}</text>`);
  }
  for (const pointClass of POINT_CLASSES) {
    const coordinates = points.byClass.get(pointClass) ?? [];
    if (coordinates.length === 0) continue;
    // One path per class: a zero-length segment with a round cap is a dot, a few bytes per point.
    const mark = pointClass === "unknown" ? "v-6" : "h0";
    const d: string[] = [];
    for (let i = 0; i < coordinates.length; i += 2) {
      const yPx = pointClass === "unknown" ? coordinates[i + 1] + 3 : coordinates[i + 1];
      d.push(`M${px(coordinates[i])} ${px(yPx)}${mark}`);
    }
    parts.push(`<path class="points ${pointClass}" stroke="${POINT_COLORS[pointClass]}" d="${d.join("")}"><title>${pointClass}: ${(columns.countByClass.get(pointClass) ?? 0).toLocaleString("en-US")} ops</title></path>`);
  }
  parts.push("</g>");
  return { svg: parts.join(""), heightPx: plotTopPx + frame.heightPx + 4 };
}

function latencyLabel(ms: number): string {
  if (ms >= 1000) return `${Number((ms / 1000).toPrecision(3))} s`;
  return `${Number(ms.toPrecision(3))} ms`;
}

function sectionTitle(name: string, note: string): string {
  return `<text class="section" x="4" y="${layout.sectionTitlePx - 5}">${escapeHtml(name)}</text><text class="note" x="${layout.labelWidthPx}" y="${layout.sectionTitlePx - 5}">${escapeHtml(note)}</text>`;
}

function header(history: RunHistory, verdicts: readonly Verdict[]): string {
  const { settings } = history;
  const anomalyCount = verdicts.reduce((sum, verdict) => sum + verdict.anomalies.length, 0);
  const lost = verdicts.find((verdict) => verdict.checker === "lost-writes")?.stats.lost;
  const summary = [
    `${settings.nodes} nodes`,
    formatDuration(settings.durationMs),
    `network ${settings.network}`,
    `seed ${settings.seed}`,
    `${history.ops.length.toLocaleString("en-US")} ops`,
    `${anomalyCount.toLocaleString("en-US")} anomalies`,
    `${lost === undefined ? "n/a" : formatStat(lost)} lost`,
  ];
  const badges = verdicts.map((verdict) => `<span class="verdict ${verdict.ok ? "ok" : "fail"}">${escapeHtml(verdict.checker)} ${verdict.ok ? "ok" : "FAIL"} (${verdict.anomalies.length.toLocaleString("en-US")})</span>`);
  return [
    `<h1>${escapeHtml(titleOf(history))}</h1>`,
    `<p class="summary${anomalyCount === 0 ? "" : " bad"}">${summary.map(escapeHtml).join(" · ")}</p>`,
    `<p class="verdicts">${badges.length === 0 ? "no verdicts" : badges.join(" ")}</p>`,
    `<p class="note">nemeses: ${escapeHtml(settings.nemeses.join(", ") || "none")} · leader wait ${settings.leaderWaitMs} ms · TTL ${settings.ttlMs} ms</p>`,
  ].join("\n");
}

function legend(points: ScatterPoints, columns: OpColumns): string {
  const count = (n: number): string => n.toLocaleString("en-US");
  const key = (color: string, text: string): string => `<span class="key"><i style="background:${color}"></i>${text}</span>`;
  const kindKeys = OPERATION_KINDS.map((kind) => {
    const counts = columns.countsByKind.get(kind) ?? { ok: 0, fail: 0, unknown: 0 };
    return key(POINT_COLORS[kind], `${kind} ${count(counts.ok)} ok, ${count(counts.fail)} failed, ${count(counts.unknown)} unknown`);
  });
  const outcomeKeys = (["failed", "unknown"] as const).map((pointClass) => key(POINT_COLORS[pointClass], `${pointClass} ${count(columns.countByClass.get(pointClass) ?? 0)}`));
  // The unreachable fill is an SVG pattern, which HTML cannot use: its swatch is drawn in CSS instead.
  const lanes = (Object.keys(LANE_COLORS) as LaneState[]).map((state) => {
    const swatch = state === "unreachable" ? `<i class="unreachable"></i>` : `<i style="background:${LANE_COLORS[state]}"></i>`;
    return `<span class="key">${swatch}${state}</span>`;
  });
  const thinning = points.cellPx === 0
    ? `all ${count(columns.count)} operations drawn`
    : `${count(points.keptCount)} of ${count(columns.count)} operations drawn (one per ${points.cellPx} px cell per class, so every outlier stays)`;
  return `<p class="legend">${[...kindKeys, ...outcomeKeys].join(" ")}</p><p class="legend">node lanes: ${lanes.join(" ")}</p><p class="note">${thinning}</p>`;
}

function anomalyList(listed: readonly ListedAnomaly[]): string {
  if (listed.length === 0) return `<h2>Anomalies</h2><p class="none">none</p>`;
  const items = listed.slice(0, anomaliesListedMax).map(({ number, checker, anomaly }) => {
    const at = anomaly.atMs === undefined ? "" : ` at ${formatSeconds(anomaly.atMs)}`;
    const opIds = anomaly.opIds ?? [];
    const more = opIds.length > anomalyOpIdsListedMax ? ` and ${opIds.length - anomalyOpIdsListedMax} more` : "";
    const ops = opIds.length === 0 ? "" : ` <span class="ops">(ops ${opIds.slice(0, anomalyOpIdsListedMax).join(", ")}${more})</span>`;
    return `<li value="${number}"><b>${escapeHtml(checker)}</b>${at}: ${escapeHtml(anomaly.message)}${ops}</li>`;
  });
  const rest = listed.length > anomaliesListedMax ? `<p class="note">and ${(listed.length - anomaliesListedMax).toLocaleString("en-US")} more not listed</p>` : "";
  return `<h2>Anomalies (${listed.length.toLocaleString("en-US")})</h2><ol>${items.join("")}</ol>${rest}`;
}

function statsSection(verdicts: readonly Verdict[]): string {
  const availability = verdicts.find((verdict) => verdict.checker === "availability");
  const tables = verdicts.map((verdict) => `<div><h3 class="${verdict.ok ? "ok" : "fail"}">${escapeHtml(verdict.checker)} ${verdict.ok ? "ok" : "FAIL"}</h3>${statsTable(verdict.stats)}</div>`);
  return [
    "<h2>Availability by fault</h2>",
    availability === undefined ? `<p class="none">no availability verdict</p>` : statsTable(availability.stats),
    "<h2>Checker stats</h2>",
    `<div class="tables">${tables.join("")}</div>`,
  ].join("\n");
}

/** A coordinate to a tenth of a pixel: finer is invisible and costs bytes on every point. */
function px(value: number): string {
  return (Math.round(value * 10) / 10).toString();
}

const PAGE_CSS = [
  "body{font:13px system-ui,sans-serif;margin:16px;color:#222}",
  "h1{font-size:18px;margin:0 0 4px}h2{font-size:15px;margin:18px 0 6px}h3{font-size:13px;margin:8px 0 4px}",
  ".summary{font-size:15px;font-weight:600;margin:4px 0}.summary.bad{color:#b2182b}",
  ".verdict{display:inline-block;padding:1px 6px;margin:2px;border-radius:3px;color:#fff}",
  ".ok{color:#1a7f37}.fail{color:#b2182b}.verdict.ok{background:#1a7f37;color:#fff}.verdict.fail{background:#b2182b;color:#fff}",
  ".note,.none{color:#666;margin:2px 0}",
  "svg{display:block;max-width:100%;height:auto;font:11px system-ui,sans-serif}",
  "svg .grid{stroke:#e4e4e4;stroke-width:1}svg .axis{stroke:#444}svg .tick{fill:#444}svg .label{fill:#222}",
  "svg .section{font-weight:700;fill:#222}svg .note{fill:#777}svg .band{fill:#fff}svg .after-band{fill:#333}svg .term{fill:#fff;font-size:10px}",
  "svg .fault{opacity:.85}svg .unhealed{stroke:#000;stroke-dasharray:3 2}svg .backdrop{opacity:.07}",
  "svg .frame{fill:none;stroke:#bbb}svg .term-change{stroke:#000;stroke-width:1.5}svg .anomaly{fill:#d62728}",
  "svg .points{fill:none;stroke-width:3;stroke-linecap:round}svg .points.unknown{stroke-width:1.5;stroke-linecap:butt}svg .label.unknown{fill:#ff7f0e}",
  ".legend{margin:4px 0}.key{margin-right:12px;white-space:nowrap}.key i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}",
  ".key i.unreachable{background:repeating-linear-gradient(45deg,#eee 0 2px,#999 2px 4px)}",
  "table{border-collapse:collapse;margin:4px 0}th,td{border:1px solid #ddd;padding:2px 8px;text-align:left}td{font-variant-numeric:tabular-nums}",
  ".tables{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}ol{padding-left:36px}li{margin:2px 0}.ops{color:#666}",
].join("");
