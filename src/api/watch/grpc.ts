// cairn.registry.v1.Registry/Watch on the public gRPC port (proto/cairn/registry/v1/watch.proto).
// A bidirectional stream carrying any number of watches, as etcd's does: one HTTP/2 stream costs
// the node 10-12 KB (Node's http2 and grpc-js), one watch on it about 3 KB, so a client
// with many watches multiplexes them. Responses are written as bytes encoded once per batch
// (encode.ts) plus the watch's id, so the service is declared with its own serializers rather
// than through proto-loader.

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Registry } from "../../registry/registry.js";
import { TooManyWatchStreamsError, type WatchHandle, WatchInputError, type WatchRequest } from "../../registry/watch_hub.js";
import { type GuardedRegistrar, accessorOfCall, onCallTokenChange, permissionsOfCall } from "../acl/grpc.js";
import { watchRefusal } from "./sse.js";
import { WatchRequestType, protoBatch, protoCanceled, protoCreated, protoProgress, protoResetChunk, protoWatchIdField } from "./encode.js";

export const grpcWatchLimits = {
  /** A request larger than this ends the stream: 64 service names fit many times over. */
  requestBytesMax: 16 * 1024,
  /** Watches one stream may hold at once; a create beyond it is refused with KIND_CANCELED. */
  watchesPerStreamMax: 10_000,
} as const;

type DecodedRequest =
  | { readonly kind: "create"; readonly watchId: number; readonly request: WatchRequest }
  | { readonly kind: "cancel"; readonly watchId: number }
  | { readonly kind: "invalid"; readonly watchId: number; readonly error: string };

interface RawRequest {
  create_request?: { watch_id: string; services: string[]; since_revision: string; progress_interval_ms: number };
  cancel_request?: { watch_id: string };
}

function decodeRequest(bytes: Buffer): DecodedRequest {
  if (bytes.byteLength > grpcWatchLimits.requestBytesMax) {
    return { kind: "invalid", watchId: 0, error: `the request is ${bytes.byteLength} bytes; at most ${grpcWatchLimits.requestBytesMax} are accepted` };
  }
  let raw: RawRequest;
  try {
    raw = WatchRequestType.toObject(WatchRequestType.decode(bytes), { longs: String, defaults: false });
  } catch (err) {
    return { kind: "invalid", watchId: 0, error: `the request is not a cairn.registry.v1.WatchRequest: ${err instanceof Error ? err.message : String(err)}` };
  }
  const number = (text: string | undefined, field: string): number | string => {
    const n = Number(text ?? "0");
    return Number.isSafeInteger(n) ? n : `${field} ${text} is too large`;
  };
  if (raw.create_request !== undefined) {
    const c = raw.create_request;
    const watchId = number(c.watch_id, "watch_id");
    const since = number(c.since_revision, "since_revision");
    if (typeof watchId === "string") return { kind: "invalid", watchId: 0, error: watchId };
    if (typeof since === "string") return { kind: "invalid", watchId, error: since };
    return { kind: "create", watchId, request: { transport: "grpc", services: c.services ?? [], sinceRevision: since, progressIntervalMs: c.progress_interval_ms ?? 0 } };
  }
  if (raw.cancel_request !== undefined) {
    const watchId = number(raw.cancel_request.watch_id, "watch_id");
    if (typeof watchId === "string") return { kind: "invalid", watchId: 0, error: watchId };
    return { kind: "cancel", watchId };
  }
  return { kind: "invalid", watchId: 0, error: "the request has neither create_request nor cancel_request" };
}

const identity = (b: Buffer): Buffer => b;

const watchService: grpc.ServiceDefinition = {
  Watch: {
    path: "/cairn.registry.v1.Registry/Watch",
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: decodeRequest,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

export function addWatchService(server: GuardedRegistrar, registry: Registry, logger: Logger): void {
  server.addService(watchService, {
    Watch: (call: grpc.ServerDuplexStream<DecodedRequest, Buffer>) => {
      const watches = new Map<number, WatchHandle>();
      /** Each watch's services, so a narrowed token can be checked against every open watch. */
      const watchedServices = new Map<number, readonly string[]>();
      let nextAutoId = 1;
      let ended = false;
      const write = (bytes: Buffer): boolean => (ended ? false : call.write(bytes));
      /** Every message of one batch or chunk goes at once; false when the stream is full after them. */
      const writeAll = (messages: readonly Buffer[], idField: Buffer): boolean => {
        let room = true;
        for (const m of messages) room = write(Buffer.concat([m, idField])) && room;
        return room;
      };
      const create = (watchId: number, request: WatchRequest): void => {
        if (watchId === 0) {
          while (watches.has(nextAutoId)) nextAutoId++;
          watchId = nextAutoId++;
        }
        const refusal = watchRefusal(permissionsOfCall(call), request.services, accessorOfCall(call));
        if (refusal !== undefined) {
          write(protoCanceled(watchId, refusal));
          return;
        }
        if (watches.has(watchId)) {
          write(protoCanceled(watchId, `watch ${watchId} already exists on this stream; cancel it first or pick another id`));
          return;
        }
        if (watches.size >= grpcWatchLimits.watchesPerStreamMax) {
          write(protoCanceled(watchId, `this stream already holds ${grpcWatchLimits.watchesPerStreamMax} watches; open another stream`));
          return;
        }
        const idField = protoWatchIdField(watchId);
        let handle: WatchHandle;
        // The node's revision when the watch was made: the created response says where it starts.
        const revision = registry.state.revision;
        try {
          handle = registry.watches.open({
            events: (batch) => writeAll(protoBatch(batch), idField),
            reset: (chunk) => writeAll(protoResetChunk(chunk), idField),
            progress: (at) => write(protoProgress(watchId, at)),
          }, request);
        } catch (err) {
          if (err instanceof WatchInputError || err instanceof TooManyWatchStreamsError) {
            write(protoCanceled(watchId, err.message));
            return;
          }
          throw err;
        }
        watches.set(watchId, handle);
        watchedServices.set(watchId, request.services);
        // The hub sends nothing before the next turn of the event loop, so this comes first.
        write(protoCreated(watchId, revision));
      };
      call.on("data", (req: DecodedRequest) => {
        try {
          if (req.kind === "invalid") write(protoCanceled(req.watchId, req.error));
          else if (req.kind === "cancel") {
            const handle = watches.get(req.watchId);
            if (handle === undefined) {
              write(protoCanceled(req.watchId, `no watch ${req.watchId} on this stream`));
              return;
            }
            handle.close();
            watches.delete(req.watchId);
            watchedServices.delete(req.watchId);
            write(protoCanceled(req.watchId, ""));
          } else create(req.watchId, req.request);
        } catch (err) {
          logger.error({ err }, "a watch request failed");
          end();
          call.emit("error", { code: grpc.status.INTERNAL, details: "internal error; see the server log" });
        }
      });
      // A token narrowed while the stream is open cancels the watches it may no longer make, with why.
      onCallTokenChange(call, (token) => {
        for (const [watchId, services] of watchedServices) {
          const refusal = watchRefusal(token.permissions, services, token.accessorId);
          if (refusal === undefined) continue;
          watches.get(watchId)?.close();
          watches.delete(watchId);
          watchedServices.delete(watchId);
          write(protoCanceled(watchId, refusal));
        }
      });
      // A full stream stops every watch on it; when it drains, each sends what is pending.
      call.on("drain", () => {
        for (const h of watches.values()) h.resume();
      });
      const end = (): void => {
        if (ended) return;
        ended = true;
        for (const h of watches.values()) h.close();
        watches.clear();
        watchedServices.clear();
      };
      call.on("end", () => {
        end();
        call.end();
      });
      call.on("cancelled", end);
      call.on("close", end);
      call.on("finish", end);
      call.on("error", end);
    },
  }, { Watch: { filtered: "service" } });
}
