// GET /v1/status/runtime: how this node's process is doing, for operators and for the tests that
// hold the node to its rules: event-loop delay since the previous call (the histogram resets on
// every call, so each caller sees its own window), memory, and parked blocking queries.

import { type IntervalHistogram, monitorEventLoopDelay } from "node:perf_hooks";
import type { FastifyInstance } from "fastify";

/** How often the event-loop delay is sampled, in ms: a stall shorter than this can go unseen. */
const EVENT_LOOP_RESOLUTION_MS = 5;
const NS_PER_MS = 1e6;

export interface RuntimeSources {
  /** Blocking queries parked on this node now. */
  readonly blockingQueries: () => number;
}

const delayMs = { type: "object", properties: { p50: { type: "number" }, p99: { type: "number" }, max: { type: "number" } } } as const;

export function runtimeRoutes(app: FastifyInstance, sources: RuntimeSources): void {
  const histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
  histogram.enable();
  app.addHook("onClose", (_app, done) => {
    histogram.disable();
    done();
  });

  app.get("/v1/status/runtime", {
    config: { acl: { need: "operator", access: "read" } },
    schema: {
      summary: "Event-loop delay since the previous call (which resets it), memory, and parked blocking queries",
      response: {
        200: {
          type: "object",
          properties: {
            eventLoopDelayMs: delayMs,
            windowMs: { type: "number" },
            rssBytes: { type: "integer" },
            heapUsedBytes: { type: "integer" },
            blockingQueries: { type: "integer" },
          },
        },
      },
    },
  }, () => {
    const nowMs = performance.now();
    // Node records the time between two samples, so an idle loop reads about the resolution (5
    // ms) and a 100 ms stall about 100. An empty window (no sample yet) reads 0.
    const ms = (ns: number): number => (histogram.count > 0 && Number.isFinite(ns) ? ns / NS_PER_MS : 0);
    const answer = {
      eventLoopDelayMs: { p50: ms(histogram.percentile(50)), p99: ms(histogram.percentile(99)), max: ms(histogram.max) },
      windowMs: nowMs - windowStartMs,
      rssBytes: process.memoryUsage.rss(),
      heapUsedBytes: process.memoryUsage().heapUsed,
      blockingQueries: sources.blockingQueries(),
    };
    histogram.reset();
    windowStartMs = nowMs;
    return answer;
  });
  let windowStartMs = performance.now();
}
