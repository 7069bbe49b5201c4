// The service registry's figures, and the streams that follow it (watches over gRPC and
// server-sent events, and xDS). All are read at scrape time from the counts their owners keep.

import { Gauge, type Registry } from "prom-client";
import { HEALTH_STATUSES } from "../registry/model.js";
import type { RegistryState } from "../registry/state.js";
import { WATCH_TRANSPORTS, type WatchHubStats } from "../registry/watch_hub.js";
import type { XdsStats } from "../api/xds/stats.js";
import { mirroredCounter } from "./mirror.js";

export interface RegistrySource {
  readonly state: Pick<RegistryState, "serviceCount" | "instanceCountsByHealth">;
  /** HTTP blocking queries parked on this node now. */
  readonly blockingQueries: () => number;
}

/** What the xDS server counts; src/api/xds keeps it (a type only: nothing here runs code of the API's). */
export type XdsCounts = Readonly<XdsStats>;

export interface StreamSources {
  readonly watches: Readonly<WatchHubStats>;
  /** Undefined until the public gRPC server has started. */
  readonly xds: () => XdsCounts | undefined;
}

export function registryMetrics(registry: Registry, source: RegistrySource): void {
  const registers = [registry];
  new Gauge({
    name: "cairn_registry_services", help: "Services with at least one registered instance", registers,
    collect() {
      this.set(source.state.serviceCount);
    },
  });
  new Gauge({
    name: "cairn_registry_instances", help: "Registered instances by health: the worst status among each instance's checks (passing without checks)",
    labelNames: ["health"], registers,
    collect() {
      const counts = source.state.instanceCountsByHealth();
      for (const health of HEALTH_STATUSES) this.set({ health }, counts[health]);
    },
  });
  new Gauge({
    name: "cairn_registry_blocking_queries", help: "HTTP blocking queries (?index=) parked on this node, waiting for a change", registers,
    collect() {
      this.set(source.blockingQueries());
    },
  });
}

export function streamMetrics(registry: Registry, sources: StreamSources): void {
  const registers = [registry];
  const { watches } = sources;
  const xds = (read: (c: XdsCounts) => number): number => {
    const counts = sources.xds();
    return counts === undefined ? 0 : read(counts);
  };
  new Gauge({
    name: "cairn_watch_streams_active",
    help: "Open streams by kind: grpc and sse are registry watches (one per watch; a gRPC stream may carry several), xds is Envoy/gRPC xDS streams",
    labelNames: ["kind"], registers,
    collect() {
      for (const transport of WATCH_TRANSPORTS) this.set({ kind: transport }, watches.streamsByTransport[transport]);
      this.set({ kind: "xds" }, xds((c) => c.streamsActive));
    },
  });
  const counter = (name: string, help: string, value: () => number): void => {
    mirroredCounter(registry, { name, help, read: () => [[{}, value()]] });
  };
  counter("cairn_watch_events_sent_total", "Registry events sent on watch streams (an event sent to two streams counts twice)", () => watches.eventsSent);
  counter("cairn_watch_batches_sent_total", "Batches of events sent on watch streams", () => watches.batchesSent);
  counter("cairn_watch_coalesced_total", "Batches coalesced to the latest change per instance because the stream fell behind", () => watches.coalesced);
  counter("cairn_watch_progress_sent_total", "Progress notifications sent on idle watch streams", () => watches.progressSent);
  mirroredCounter(registry, {
    name: "cairn_watch_resets_total",
    help: "Watch streams sent a reset (the full state) instead of events, by reason: initial (asked from 0), compacted (resumed from before the event window), restored (the node restored a snapshot), behind (too slow)",
    labelNames: ["reason"],
    read: () => Object.entries(watches.resets).map(([reason, n]) => [{ reason }, n] as const),
  });
  new Gauge({
    name: "cairn_xds_streams_waiting", help: "xDS streams waiting for admission", registers,
    collect() {
      this.set(xds((c) => c.streamsWaiting));
    },
  });
  counter("cairn_xds_pushes_total", "xDS responses sent", () => xds((c) => c.pushes));
  counter("cairn_xds_acks_total", "xDS responses a client acknowledged", () => xds((c) => c.acks));
  counter("cairn_xds_nacks_total", "xDS responses a client rejected (NACK); the node logs each one's error_detail", () => xds((c) => c.nacks));
  counter("cairn_xds_coalesced_total", "xDS resource changes folded into a change already waiting to be sent on a stream", () => xds((c) => c.coalesced));
  counter("cairn_xds_admission_waits_total", "xDS streams that waited for admission", () => xds((c) => c.admissionWaits));
  counter("cairn_xds_admission_refused_total", "xDS streams refused because the admission queue was full", () => xds((c) => c.admissionRefused));
  counter("cairn_xds_stale_requests_total", "xDS requests ignored because their nonce was not the latest sent", () => xds((c) => c.staleRequests));
  new Gauge({
    name: "cairn_xds_server_listeners", help: "Server listeners (XdsServers' listeners, with their RBAC) this node keeps for the streams subscribed to them", registers,
    collect() {
      this.set(xds((c) => c.serverListeners));
    },
  });
  counter("cairn_xds_server_listener_updates_total", "Server listeners whose owner, mTLS or RBAC changed and were pushed again (an intention write counts once per listener it touched)", () => xds((c) => c.serverListenerUpdates));
}
