// The three ways the workload watches: Cairn's gRPC Registry/Watch, its SSE /v1/watch, and
// Envoy's ADS (EDS for one service). Each opens one stream to one node and reports what arrives;
// the resuming watcher decides when a stream is broken and where to go next.

import type * as grpc from "@grpc/grpc-js";
import { ENDPOINT_TYPE } from "../../src/api/xds/resources.js";
import { loadXdsProtos } from "../../src/api/xds/protos.js";
import { errorMessage } from "../../src/common/errors.js";
import { GrpcWatcher, type SseMessage, SseWatcher, type WireResponse, registryClient } from "../../test/support/watch_client.js";
import { adsClient, decodeAny, type DecodedAssignment, endpointAddresses, RawAdsStream, type SotwResponse } from "../../test/xds/raw_client.js";
import type { WatchEvent } from "../history.js";
import type { NodeTarget } from "./http.js";
import type { WatchPiece } from "./watch_assembler.js";

/** How often a quiet watch asks for a progress message: what lets a stalled stream be told from a quiet one. */
export const PROGRESS_INTERVAL_MS = 1000;
/**
 * ADS has no progress messages, so its channel pings: a node that is paused or cut off stops
 * answering, and the stream ends within about keepalive time + timeout.
 */
const XDS_KEEPALIVE_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 1000,
  "grpc.keepalive_timeout_ms": 2000,
  "grpc.keepalive_permit_without_calls": 1,
};

export interface StreamHandlers {
  /** A registry watch piece (gRPC, SSE). */
  piece(p: WatchPiece): void;
  /** Any sign that the stream is alive, with nothing to record (gRPC's CREATED). */
  alive(): void;
  /** An EDS assignment, about to be ACKed. */
  assignment(version: string, endpoints: readonly string[]): void;
  /** The stream ended or could not open. */
  ended(error: string): void;
}

export interface OpenStream {
  close(): void;
}

export interface WatchTransport {
  readonly kind: "grpc" | "sse" | "xds";
  open(node: NodeTarget, services: readonly string[], sinceRevision: number, handlers: StreamHandlers): OpenStream;
}

const GRPC_EVENT_TYPES: Readonly<Record<string, WatchEvent["type"]>> = { TYPE_UPSERT: "upsert", TYPE_DELETE: "delete", TYPE_HEALTH: "health" };
const SSE_EVENT_TYPES: Readonly<Record<string, WatchEvent["type"]>> = { upsert: "upsert", delete: "delete", health: "health" };

export const grpcTransport: WatchTransport = {
  kind: "grpc",
  open(node, services, sinceRevision, handlers) {
    const client = registryClient(node.grpc);
    const watcher = new GrpcWatcher(client, { services: [...services], since_revision: sinceRevision, progress_interval_ms: PROGRESS_INTERVAL_MS }, {
      retainMessages: false,
      onResponse: (m) => {
        const piece = grpcPiece(m);
        if (typeof piece === "string") handlers.ended(piece);
        else if (piece === undefined) handlers.alive();
        else handlers.piece(piece);
      },
      onError: (err) => handlers.ended(`gRPC watch: ${err.code} ${err.details}`),
    });
    return {
      close() {
        watcher.cancel();
        client.close();
      },
    };
  },
};

/** A response as a piece; undefined for one with nothing to record; a string when the watch ended. */
function grpcPiece(m: WireResponse): WatchPiece | string | undefined {
  switch (m.kind) {
    case "KIND_EVENTS":
      return {
        kind: "events", revision: m.revision, coalesced: m.coalesced, fragment: m.fragment,
        events: m.events.map((e) => ({ revision: e.revision, type: GRPC_EVENT_TYPES[e.type] ?? "upsert", service: e.service, instance: e.instance_id })),
      };
    case "KIND_RESET":
      return { kind: "reset", revision: m.revision, reason: m.reset_reason, first: m.reset_first, last: m.reset_last, instances: m.instances.map((i) => i.id) };
    case "KIND_PROGRESS":
      return { kind: "progress", revision: m.revision };
    case "KIND_CANCELED":
      return `the watch was cancelled: ${m.cancel_reason}`;
    default:
      return undefined;
  }
}

export const sseTransport: WatchTransport = {
  kind: "sse",
  open(node, services, sinceRevision, handlers) {
    const query = [...services.map((s) => `service=${encodeURIComponent(s)}`), `since=${sinceRevision}`, `progress=${PROGRESS_INTERVAL_MS}ms`].join("&");
    const watcher = new SseWatcher(`http://${node.http}/v1/watch?${query}`, {}, {
      retainMessages: false,
      onMessage: (m) => {
        const piece = ssePiece(m);
        if (typeof piece === "string") handlers.ended(piece);
        else handlers.piece(piece);
      },
    });
    void watcher.done.then(() => handlers.ended(watcher.error === undefined ? `SSE stream ended (HTTP ${watcher.status})` : `SSE: ${errorMessage(watcher.error)}`));
    return { close: () => watcher.close() };
  },
};

function ssePiece(m: SseMessage): WatchPiece | string {
  const d = m.data;
  if (m.event === "events") {
    return {
      kind: "events", revision: d.revision, coalesced: d.coalesced ?? false, fragment: false,
      events: (d.events ?? []).map((e) => ({ revision: e.revision, type: SSE_EVENT_TYPES[e.type] ?? "upsert", service: e.service ?? "", instance: e.id })),
    };
  }
  if (m.event === "reset") {
    return { kind: "reset", revision: d.revision, reason: d.reason ?? "", first: d.first ?? false, last: d.last ?? false, instances: (d.instances ?? []).map((i) => i.id) };
  }
  if (m.event === "progress") return { kind: "progress", revision: d.revision };
  return `unexpected SSE event "${m.event}"`;
}

/** State-of-the-world ADS asking for one service's endpoints, ACKing each assignment it records. */
export function xdsTransport(clientNodeId: string): WatchTransport {
  return {
    kind: "xds",
    open(node, services, _sinceRevision, handlers) {
      const client = adsClient(node.grpc, XDS_KEEPALIVE_OPTIONS);
      let stream: RawAdsStream<SotwResponse> | undefined;
      let closed = false;
      const names = [...services];
      void Promise.all([loadXdsProtos(), RawAdsStream.sotw(client)]).then(([protos, opened]) => {
        if (closed) {
          opened.close();
          return;
        }
        stream = opened;
        opened.onEnd = (status) => handlers.ended(`ADS: ${status.code} ${status.details}`);
        opened.onResponse = (r) => {
          if (r.type_url !== ENDPOINT_TYPE.typeUrl) return;
          let endpoints: string[];
          try {
            endpoints = r.resources.flatMap((any) => endpointAddresses(decodeAny(protos, any) as unknown as DecodedAssignment)).sort();
          } catch (err) {
            handlers.ended(`ADS: an assignment did not decode: ${errorMessage(err)}`);
            return;
          }
          handlers.assignment(r.version_info, endpoints);
          opened.send({ type_url: ENDPOINT_TYPE.typeUrl, resource_names: names, response_nonce: r.nonce, version_info: r.version_info });
        };
        opened.send({ node: { id: clientNodeId, cluster: "chaos" }, type_url: ENDPOINT_TYPE.typeUrl, resource_names: names });
      }, (err: unknown) => handlers.ended(`ADS: ${errorMessage(err)}`));
      return {
        close() {
          closed = true;
          stream?.close();
          client.close();
        },
      };
    },
  };
}
