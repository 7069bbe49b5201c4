// GET /metrics (Prometheus's text format), and the probes load balancers and Kubernetes ask:
// GET /healthz (the process is alive and serving) and GET /readyz (it knows a leader and has
// applied what is committed, so its answers are current). Also where the HTTP and public gRPC
// servers report each request to the node's metrics, by route template and method, never by path.

import * as grpc from "@grpc/grpc-js";
import type { FastifyInstance } from "fastify";
import type { RouteAcl } from "./acl/enforce.js";
import type { ApiMetrics } from "../metrics/api.js";
import { type NodeMetrics, UNMATCHED_ROUTE } from "../metrics/metrics.js";
import type { RaftDriver } from "../raft/node/driver.js";

/**
 * A node more than this many committed entries short of applied is not ready: its reads are
 * behind (a follower still being caught up after a restart, say). A healthy follower trails by a
 * handful at most, even at thousands of writes a second.
 */
export const READY_APPLY_LAG_ENTRIES_MAX = 1_000;

/**
 * The status label of a request whose client went away before any answer was sent (a blocking
 * query it stopped waiting for, say): nginx's 499, "client closed request". Nothing was sent, so
 * no real status fits.
 */
export const CLIENT_CLOSED_REQUEST = 499;

export type Readiness =
  | { readonly ready: true; readonly leader: string; readonly appliedIndex: number; readonly applyLagEntries: number }
  | { readonly ready: false; readonly reason: string };

/** Whether `driver` can answer with current state: it knows a leader and has applied nearly everything committed. */
export function readinessOf(driver: Pick<RaftDriver, "isStarted" | "status" | "applyLagEntries">): Readiness {
  if (!driver.isStarted) return { ready: false, reason: "starting: the Raft log is still being read" };
  const status = driver.status();
  if (status.leader === "") {
    return { ready: false, reason: `no leader: this node (${status.role}, term ${status.term}) knows of no Raft leader; an election is under way or it cannot reach a majority of the cluster` };
  }
  const lag = driver.applyLagEntries;
  if (lag > READY_APPLY_LAG_ENTRIES_MAX) {
    return { ready: false, reason: `catching up: ${lag} committed entries are not applied here yet (ready at ${READY_APPLY_LAG_ENTRIES_MAX} or fewer)` };
  }
  return { ready: true, leader: status.leader, appliedIndex: status.appliedIndex, applyLagEntries: lag };
}

export interface MetricsRouteOptions {
  readonly metrics: NodeMetrics;
  readonly driver: RaftDriver;
  /** --metrics-open: /metrics needs no token (with ACLs on it otherwise needs operator:read). */
  readonly open: boolean;
}

const probeAcl: RouteAcl = { open: "load balancers and Kubernetes probe without a token; the answer says only whether the node is up and current" };

export function metricsRoutes(app: FastifyInstance, opts: MetricsRouteOptions): void {
  const metricsAcl: RouteAcl = opts.open
    ? { open: "--metrics-open: Prometheus scrapes without a token" }
    : { need: "operator", access: "read" };
  app.get("/metrics", {
    config: { acl: metricsAcl },
    schema: {
      summary: "This node's metrics in Prometheus's text exposition format (version 0.0.4); the families are listed in docs/operations.md",
      response: { 200: { type: "string", description: "text/plain; version=0.0.4" } },
    },
  }, async (_req, reply) => reply.type(opts.metrics.contentType).send(await opts.metrics.exposition()));

  app.get("/healthz", {
    config: { acl: probeAcl },
    schema: {
      summary: "Liveness: 200 while the process serves HTTP (a node whose Raft log fails exits rather than linger)",
      response: { 200: { type: "object", properties: { status: { type: "string", const: "ok" } }, required: ["status"] } },
    },
  }, () => ({ status: "ok" as const }));

  app.get("/readyz", {
    config: { acl: probeAcl },
    schema: {
      summary: `Readiness: 200 once this node knows a Raft leader and has applied all but at most ${READY_APPLY_LAG_ENTRIES_MAX} committed entries; else 503 with the reason`,
      response: {
        200: {
          type: "object",
          properties: { status: { type: "string", const: "ready" }, leader: { type: "string" }, appliedIndex: { type: "integer" }, applyLagEntries: { type: "integer" } },
          required: ["status", "leader", "appliedIndex", "applyLagEntries"],
        },
        503: { type: "object", properties: { status: { type: "string", const: "not ready" }, reason: { type: "string" } }, required: ["status", "reason"] },
      },
    },
  }, (_req, reply) => {
    const readiness = readinessOf(opts.driver);
    if (!readiness.ready) return reply.code(503).send({ status: "not ready", reason: readiness.reason });
    const { leader, appliedIndex, applyLagEntries } = readiness;
    return reply.send({ status: "ready", leader, appliedIndex, applyLagEntries });
  });
}

/**
 * Reports every request to `metrics` when its answer ends, by method, route template (or
 * "unmatched") and status. Install before any other onRequest hook, so that requests those hooks
 * answer (a 429 from the rate limits) are counted too. The raw response's close event ends every
 * request, hijacked streams and blocking queries included, and abandoned ones as well.
 */
export function instrumentHttp(app: FastifyInstance, metrics: ApiMetrics): void {
  app.addHook("onRequest", (req, reply, done) => {
    const startedAtMs = performance.now();
    // Known here: routing happens before onRequest. A 404 or 405 has no route (the not-found handler answers it).
    const route = req.is404 ? UNMATCHED_ROUTE : (req.routeOptions.url ?? UNMATCHED_ROUTE);
    metrics.httpRequestStarted();
    reply.raw.once("close", () => {
      const status = reply.raw.headersSent ? reply.raw.statusCode : CLIENT_CLOSED_REQUEST;
      metrics.httpRequestEnded(req.method, route, status, (performance.now() - startedAtMs) / 1000);
    });
    done();
  });
}

/**
 * A server interceptor that reports every public gRPC call when it ends, by method path (only
 * methods the server serves reach interceptors: grpc-js answers others UNIMPLEMENTED itself) and
 * status code. A call the client cancels ends as CANCELLED.
 */
export function grpcMetricsInterceptor(metrics: ApiMetrics): grpc.ServerInterceptor {
  return (method, call) => {
    const path = method.path;
    const startedAtMs = performance.now();
    let ended = false;
    const end = (code: grpc.status): void => {
      if (ended) return;
      ended = true;
      metrics.grpcCallEnded(path, grpc.status[code] ?? String(code), (performance.now() - startedAtMs) / 1000);
    };
    metrics.grpcCallStarted(path);
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => next({ onCancel: () => end(grpc.status.CANCELLED) }),
      sendStatus: (status, next) => {
        end(status.code);
        next(status);
      },
    });
  };
}
