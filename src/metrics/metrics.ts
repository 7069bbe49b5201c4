// One node's metrics: the one place Cairn's metric families are named and defined. Each node has
// its own prom-client Registry, never the process's global default one, so that several nodes in
// one process (tests) keep their figures apart. The server creates a NodeMetrics first, hands its
// observers to the parts that report events (the Raft driver, the CA, the HTTP and gRPC servers),
// and, as each part comes up, tells it where to read that part's state at scrape time.
//
// Names follow Prometheus's conventions: the cairn_ prefix, base units (seconds, bytes) named in
// the suffix, _total on counters. docs/operations.md lists every family.

import { Registry, collectDefaultMetrics } from "prom-client";
import { ApiMetrics } from "./api.js";
import { CaMetrics } from "./ca.js";
import { RaftMetrics } from "./raft.js";

export { type RaftSource } from "./raft.js";
export { type CaSource } from "./ca.js";
export { type RegistrySource, type StreamSources, type XdsCounts, registryMetrics, streamMetrics } from "./registry.js";
export { UNMATCHED_ROUTE, type RateLimitRefusals } from "./api.js";

/**
 * prom-client's defaults that `promtool check metrics` rejects: gauges named _total. Each repeats
 * the sum of a gauge that stays (nodejs_active_handles and the others, by type).
 */
const PROMTOOL_REJECTS = ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"];

export class NodeMetrics {
  readonly registry = new Registry();
  /** The Raft driver's observer; `raft.read(driver)` once the driver exists. */
  readonly raft: RaftMetrics;
  /** The CA's onIssued listener; `ca.read(state)` for roots and rotation. */
  readonly ca: CaMetrics;
  /** Called by src/api as HTTP requests and gRPC calls end. */
  readonly api: ApiMetrics;

  constructor() {
    // The process's own figures (CPU, memory, event-loop lag, GC, handles) under the names every
    // Node.js exporter uses (process_*, nodejs_*), so existing dashboards and alerts apply.
    collectDefaultMetrics({ register: this.registry });
    for (const name of PROMTOOL_REJECTS) this.registry.removeSingleMetric(name);
    this.raft = new RaftMetrics(this.registry);
    this.ca = new CaMetrics(this.registry);
    this.api = new ApiMetrics(this.registry);
  }

  /** Prometheus's text exposition format (version 0.0.4). */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Every family, read now. */
  async exposition(): Promise<string> {
    return this.registry.metrics();
  }
}
