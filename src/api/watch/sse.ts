// GET /v1/watch: the registry's watch stream as server-sent events, for browsers, curl and any
// HTTP client. The same stream as gRPC's Registry/Watch (events, resets, progress), in JSON. Each
// complete message carries its revision as the event id, so an EventSource that reconnects sends
// it back as Last-Event-ID and resumes where it was.

import type { FastifyInstance } from "fastify";
import { parseGoDuration } from "../../common/duration.js";
import type { Registry } from "../../registry/registry.js";
import { TooManyWatchStreamsError, WatchInputError } from "../../registry/watch_hub.js";
import { startEventStream, waitEndSignal } from "../blocking.js";
import { sseBatch, sseDenied, sseProgress, sseResetChunk } from "./encode.js";
import { STREAM_TOKEN_DELETED, accessorOf, holdRequestToken, permissionDenied, permissionsOf, sendDenied } from "../acl/enforce.js";
import type { Permissions } from "../../acl/rules.js";

/**
 * Why a watch of `services` (none: every service) is refused to a token, or undefined. A watch
 * streams every change of what it covers, so it may cover only services the token may read: one
 * of every service needs read on all of them (service_prefix "" read, and no deny).
 */
export function watchRefusal(permissions: Permissions, services: readonly string[], accessorId: string | undefined): string | undefined {
  if (services.length === 0) {
    return permissions.readsAll("service") ? undefined : `${permissionDenied(accessorId, "service", "read")} on every service: name the services to watch`;
  }
  const hidden = services.find((s) => !permissions.allows("service", "read", s));
  return hidden === undefined ? undefined : permissionDenied(accessorId, "service", "read", hidden);
}

/** How long an EventSource waits before reconnecting, sent once at the start of every stream. */
const RECONNECT_MS = 1000;

interface WatchQuery {
  readonly service?: string[];
  readonly since?: string;
  readonly progress?: string;
}

const watchQuerySchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    service: { type: "array", items: { type: "string", maxLength: 63 }, maxItems: 64, description: "a service to watch; repeat for several; none: every service" },
    since: { type: "string", pattern: "^[0-9]{1,16}$", description: "send the changes after this revision (Last-Event-ID wins); 0 or absent: start with the current state" },
    progress: { type: "string", maxLength: 32, description: "send a progress event about this often while nothing changes, a Go duration (1s to 10m)" },
  },
} as const;

const REVISION = /^[0-9]{1,16}$/;

export function watchRoutes(app: FastifyInstance, registry: Registry): void {
  app.get<{ Querystring: WatchQuery }>("/v1/watch", {
    config: { acl: { filtered: "service" } },
    schema: {
      summary: "Watch services as server-sent events: events, reset and progress, each with its revision as the id",
      querystring: watchQuerySchema,
    },
  }, (req, reply) => {
    const lastEventId = req.headers["last-event-id"];
    const resumeFrom = typeof lastEventId === "string" && lastEventId !== "" ? lastEventId : req.query.since ?? "0";
    if (!REVISION.test(resumeFrom)) return reply.code(400).send({ error: `Last-Event-ID "${resumeFrom.slice(0, 40)}" is not a revision`, field: "Last-Event-ID" });
    let progressIntervalMs = 0;
    if (req.query.progress !== undefined) {
      const parsed = parseGoDuration(req.query.progress);
      if (parsed === undefined) return reply.code(400).send({ error: `progress "${req.query.progress}" is not a duration like "10s"`, field: "progress" });
      progressIntervalMs = parsed;
    }
    const refusal = watchRefusal(permissionsOf(req), req.query.service ?? [], accessorOf(req));
    if (refusal !== undefined) return sendDenied(req, reply, refusal);
    const res = reply.raw;
    let handle;
    try {
      handle = registry.watches.open({
        events: (batch) => res.write(sseBatch(batch)),
        reset: (chunk) => res.write(sseResetChunk(chunk)),
        progress: (revision) => res.write(sseProgress(revision)),
      }, { transport: "sse", services: req.query.service ?? [], sinceRevision: Number(resumeFrom), progressIntervalMs });
    } catch (err) {
      if (err instanceof WatchInputError) return reply.code(400).send({ error: err.message, field: err.field });
      if (err instanceof TooManyWatchStreamsError) return reply.code(429).header("retry-after", "1").send({ error: err.message });
      throw err;
    }
    const opened = handle;
    const stream = startEventStream(reply, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      // Proxies such as nginx would otherwise hold events back in their buffers.
      "x-accel-buffering": "no",
    });
    // A HEAD: its headers are sent; the watch was opened only to check the request as GET would.
    if (stream === undefined) {
      opened.close();
      return reply;
    }
    res.write(`retry: ${RECONNECT_MS}\n\n`);
    res.on("drain", () => opened.resume());
    const services = req.query.service ?? [];
    // A token deleted or narrowed while the stream is open ends it, with why, as a new request would be refused.
    const release = holdRequestToken(req, (token) => {
      const reason = token === undefined ? STREAM_TOKEN_DELETED : watchRefusal(token.permissions, services, token.accessorId);
      if (reason === undefined) return;
      opened.close();
      if (!res.writableEnded) res.end(sseDenied(reason));
    });
    const signal = waitEndSignal(reply);
    signal.addEventListener("abort", () => {
      release();
      opened.close();
      if (!res.writableEnded) res.end();
    }, { once: true });
    return reply;
  });
}
