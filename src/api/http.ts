// The HTTP server: the only place Cairn speaks HTTP. Route groups live in their own files.

import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import type { KvStateMachine } from "../kv/kv.js";
import type { RaftDriver } from "../raft/driver.js";
import { clusterRoutes } from "./cluster.js";
import { kvRoutes } from "./kv.js";
import { statusRoutes } from "./status.js";

export interface HttpServerOptions {
  readonly driver: RaftDriver;
  readonly kv: KvStateMachine;
  readonly clusterId: string;
  readonly logger: Logger;
}

/** Request bodies larger than this are refused with 413 before they are parsed. */
export const BODY_BYTES_MAX = 1024 * 1024;

export function buildHttpServer(opts: HttpServerOptions): FastifyInstance {
  // pino's Logger is fastify's logger; only their type declarations disagree.
  const app = Fastify({
    loggerInstance: opts.logger as unknown as FastifyBaseLogger,
    bodyLimit: BODY_BYTES_MAX,
    // Per-request logs would dominate under load; failures are logged where they happen.
    logController: new LogController({ disableRequestLogging: true }),
  });
  app.setErrorHandler((err: { statusCode?: number; message: string; validation?: unknown }, req, reply) => {
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      req.log.error({ err }, "request failed");
      return reply.code(500).send({ error: "internal error; see the server log" });
    }
    return reply.code(status).send({ error: err.message });
  });
  statusRoutes(app, opts.driver);
  clusterRoutes(app, opts.driver, opts.clusterId);
  kvRoutes(app, opts.driver, opts.kv);
  return app;
}
