// cairn.registry.v1.Registry/Watch on the public gRPC port (proto/cairn/registry/v1/watch.proto).
// Responses are written as bytes encoded once per batch (encode.ts), so the service is declared
// with its own serializers rather than through proto-loader.

import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Registry } from "../../registry/registry.js";
import { TooManyWatchStreamsError, type WatchHandle, WatchInputError, type WatchRequest } from "../../registry/watch_hub.js";
import { WatchRequestType, protoBatch, protoProgress, protoResetChunk } from "./encode.js";

/** A request larger than this is refused: 64 service names fit many times over. */
const REQUEST_BYTES_MAX = 16 * 1024;

/** The request as decoded, or why it could not be: the handler answers INVALID_ARGUMENT with it. */
type DecodedRequest = { readonly ok: true; readonly request: WatchRequest } | { readonly ok: false; readonly error: string };

function decodeRequest(bytes: Buffer): DecodedRequest {
  if (bytes.byteLength > REQUEST_BYTES_MAX) return { ok: false, error: `the request is ${bytes.byteLength} bytes; at most ${REQUEST_BYTES_MAX} are accepted` };
  try {
    const raw = WatchRequestType.toObject(WatchRequestType.decode(bytes), { longs: String, defaults: true }) as {
      services: string[]; since_revision: string; progress_interval_ms: number;
    };
    const since = Number(raw.since_revision);
    if (!Number.isSafeInteger(since)) return { ok: false, error: `since_revision ${raw.since_revision} is beyond any revision` };
    return { ok: true, request: { services: raw.services, sinceRevision: since, progressIntervalMs: raw.progress_interval_ms } };
  } catch (err) {
    return { ok: false, error: `the request is not a cairn.registry.v1.WatchRequest: ${err instanceof Error ? err.message : String(err)}` };
  }
}

const identity = (b: Buffer): Buffer => b;

const watchService: grpc.ServiceDefinition = {
  Watch: {
    path: "/cairn.registry.v1.Registry/Watch",
    requestStream: false,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: decodeRequest,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

export function addWatchService(server: grpc.Server, registry: Registry, logger: Logger): void {
  server.addService(watchService, {
    Watch: (call: grpc.ServerWritableStream<DecodedRequest, Buffer>) => {
      const decoded = call.request;
      const fail = (code: grpc.status, details: string): void => {
        call.emit("error", { code, details });
      };
      if (!decoded.ok) {
        fail(grpc.status.INVALID_ARGUMENT, decoded.error);
        return;
      }
      let handle: WatchHandle;
      try {
        handle = registry.watches.open({
          events: (batch) => call.write(protoBatch(batch)),
          reset: (chunk) => call.write(protoResetChunk(chunk)),
          progress: (revision) => call.write(protoProgress(revision)),
        }, decoded.request);
      } catch (err) {
        if (err instanceof WatchInputError) fail(grpc.status.INVALID_ARGUMENT, err.message);
        else if (err instanceof TooManyWatchStreamsError) fail(grpc.status.RESOURCE_EXHAUSTED, err.message);
        else {
          logger.error({ err }, "opening a watch stream failed");
          fail(grpc.status.INTERNAL, "internal error; see the server log");
        }
        return;
      }
      call.on("drain", () => handle.resume());
      const end = (): void => handle.close();
      call.on("cancelled", end);
      call.on("close", end);
      call.on("finish", end);
      call.on("error", end);
    },
  });
}
