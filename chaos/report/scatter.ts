// Operation latencies as points: x the time an operation was invoked, y its latency on a log
// scale. Failed operations are their own class (drawn red, over the rest); unknown operations
// have no latency, so they sit in a strip above the plot.
//
// A long run has far more operations than a page can carry, so past a bound the points are thinned
// on a pixel grid: one point per class per cell, the cell growing until the bound holds. It is
// deterministic (the first operation in history order keeps its cell) and keeps every outlier,
// since a point alone in its cell always survives; only points hidden under others are dropped.

import { POINT_CLASSES, type OpColumns, type PointClass } from "./op_columns.js";

/** The latencies the y axis spans, in powers of ten. */
export interface LatencyRange {
  readonly minMs: number;
  readonly maxMs: number;
}

/** The smallest latency the axis shows: anything faster is drawn on the bottom edge. */
const latencyAxisFloorMs = 0.1;

/**
 * How much the thinning cell grows per pass. Small steps land close under the bound, so the plot
 * keeps as many points as it may; each pass is one walk over the points.
 */
const cellGrowthFactor = 1.25;

export function latencyRange(columns: OpColumns): LatencyRange {
  let minMs = Infinity;
  let maxMs = 0;
  for (const latencyMs of columns.latencyMs) {
    // NaN (unknown outcome) fails both tests.
    if (latencyMs > 0 && latencyMs < minMs) minMs = latencyMs;
    if (latencyMs > maxMs) maxMs = latencyMs;
  }
  if (minMs === Infinity) return { minMs: 1, maxMs: 1000 };
  const lowMs = Math.max(latencyAxisFloorMs, 10 ** Math.floor(Math.log10(minMs)));
  const highMs = Math.max(lowMs * 10, 10 ** Math.ceil(Math.log10(maxMs)));
  return { minMs: lowMs, maxMs: highMs };
}

/** Where the points go: pixel coordinates relative to the plot's top-left corner. */
export interface ScatterFrame {
  readonly xPxOfMs: (ms: number) => number;
  readonly heightPx: number;
  readonly latency: LatencyRange;
  /** The y of unknown operations: inside the strip above the plot (negative). */
  readonly unknownYPx: number;
}

export function yPxOfLatency(latencyMs: number, frame: ScatterFrame): number {
  const lowLog = Math.log10(frame.latency.minMs);
  const highLog = Math.log10(frame.latency.maxMs);
  const clampedMs = Math.min(frame.latency.maxMs, Math.max(frame.latency.minMs, latencyMs));
  return frame.heightPx * (1 - (Math.log10(clampedMs) - lowLog) / (highLog - lowLog));
}

export interface ScatterPoints {
  /** Per class, the kept points as x0, y0, x1, y1, ... in pixels. */
  readonly byClass: ReadonlyMap<PointClass, readonly number[]>;
  readonly keptCount: number;
  /** The side in pixels of the thinning cell the bound was met at; 0 when every point was kept. */
  readonly cellPx: number;
}

/** The points of every operation, thinned to at most `pointsMax` (see the top of this file). */
export function scatterPoints(columns: OpColumns, frame: ScatterFrame, pointsMax: number): ScatterPoints {
  const xs = new Float64Array(columns.count);
  const ys = new Float64Array(columns.count);
  for (let i = 0; i < columns.count; i++) {
    xs[i] = frame.xPxOfMs(columns.invokedAtMs[i]);
    const latencyMs = columns.latencyMs[i];
    ys[i] = Number.isNaN(latencyMs) ? frame.unknownYPx : yPxOfLatency(latencyMs, frame);
  }
  let keep: (i: number) => boolean = () => true;
  let cellPx = 0;
  if (columns.count > pointsMax) {
    for (cellPx = 1; ; cellPx = Math.round(cellPx * cellGrowthFactor * 100) / 100) {
      const kept = firstInCell(columns.classIndex, xs, ys, cellPx);
      if (kept.count <= pointsMax) {
        keep = (i) => kept.flags[i] === 1;
        break;
      }
    }
  }
  const byClass = new Map<PointClass, number[]>(POINT_CLASSES.map((c) => [c, []]));
  const lists = POINT_CLASSES.map((c) => byClass.get(c) ?? []);
  let keptCount = 0;
  for (let i = 0; i < columns.count; i++) {
    if (!keep(i)) continue;
    lists[columns.classIndex[i]].push(xs[i], ys[i]);
    keptCount++;
  }
  return { byClass, keptCount, cellPx };
}

/** Flags the first point of each class in each cellPx-sided cell, on a grid over the points' extent. */
function firstInCell(classIndex: Uint8Array, xs: Float64Array, ys: Float64Array, cellPx: number): { flags: Uint8Array; count: number } {
  let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
  for (let i = 0; i < xs.length; i++) {
    minX = Math.min(minX, xs[i]); maxX = Math.max(maxX, xs[i]);
    minY = Math.min(minY, ys[i]); maxY = Math.max(maxY, ys[i]);
  }
  const columns = Math.floor((maxX - minX) / cellPx) + 1;
  const rows = Math.floor((maxY - minY) / cellPx) + 1;
  const taken = new Uint8Array(POINT_CLASSES.length * columns * rows);
  const flags = new Uint8Array(xs.length);
  let count = 0;
  for (let i = 0; i < xs.length; i++) {
    const cell = (classIndex[i] * columns + Math.floor((xs[i] - minX) / cellPx)) * rows + Math.floor((ys[i] - minY) / cellPx);
    if (taken[cell] === 1) continue;
    taken[cell] = 1;
    flags[i] = 1;
    count++;
  }
  return { flags, count };
}
