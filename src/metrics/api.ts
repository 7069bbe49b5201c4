// The public API's figures: HTTP requests by route template and status, gRPC calls by method and
// status code, ACL denials and rate-limit refusals. src/api calls these as requests end; it knows
// the route templates and methods, all of which are fixed when the servers start, so every label
// here has a bounded set of values (a path never becomes a label: an unknown one is "unmatched").

import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { REQUEST_SECONDS_BUCKETS } from "./buckets.js";
import { mirroredCounter } from "./mirror.js";

/** The route label of a request no route matched (404, 405): its path is the client's to choose, so it is never a label. */
export const UNMATCHED_ROUTE = "unmatched";

/** A gRPC status code, by name as grpc-js spells it (OK, PERMISSION_DENIED, ...). */
export type GrpcCodeName = string;

/** Rate-limit refusals as the limiter counts them: class -> bucket kind -> refusals. */
export type RateLimitRefusals = Readonly<Record<string, Readonly<Record<string, number>>>>;

export class ApiMetrics {
  private readonly httpRequests: Counter<"method" | "route" | "status">;
  private readonly httpSeconds: Histogram<"method" | "route" | "status">;
  private readonly httpInFlight: Gauge;
  private readonly httpConnectionsRefused: Counter;
  private readonly grpcRequests: Counter<"method" | "code">;
  private readonly grpcSeconds: Histogram<"method" | "code">;
  private readonly grpcInFlight: Gauge<"method">;
  private readonly aclDenials: Counter<"transport">;

  constructor(private readonly registry: Registry) {
    const registers = [registry];
    this.httpRequests = new Counter({
      name: "cairn_http_requests_total",
      help: "HTTP requests answered, by method, route template (unmatched for no route) and status code",
      labelNames: ["method", "route", "status"],
      registers,
    });
    this.httpSeconds = new Histogram({
      name: "cairn_http_request_duration_seconds",
      help: "HTTP requests from arrival to the last byte of the answer; blocking queries and event streams are held open by design",
      labelNames: ["method", "route", "status"],
      buckets: [...REQUEST_SECONDS_BUCKETS],
      registers,
    });
    this.httpInFlight = new Gauge({ name: "cairn_http_requests_in_flight", help: "HTTP requests being served now, parked blocking queries and open event streams included", registers });
    this.httpConnectionsRefused = new Counter({
      name: "cairn_http_connections_refused_total",
      help: "HTTP connections refused because their address already held --http-max-conns-per-client",
      registers,
    });
    this.grpcRequests = new Counter({
      name: "cairn_grpc_requests_total",
      help: "Public gRPC calls ended, by method and status code (a stream counts when it ends)",
      labelNames: ["method", "code"],
      registers,
    });
    this.grpcSeconds = new Histogram({
      name: "cairn_grpc_request_duration_seconds",
      help: "Public gRPC calls from arrival to their status; streams last as long as their client keeps them",
      labelNames: ["method", "code"],
      buckets: [...REQUEST_SECONDS_BUCKETS],
      registers,
    });
    this.grpcInFlight = new Gauge({ name: "cairn_grpc_requests_in_flight", help: "Public gRPC calls being served now, open streams included", labelNames: ["method"], registers });
    this.aclDenials = new Counter({
      name: "cairn_acl_denials_total",
      help: "Requests refused for want of permission (HTTP 403, gRPC PERMISSION_DENIED): an unknown token, a token whose rules do not allow it, or an identity it may not hold",
      labelNames: ["transport"],
      registers,
    });
    for (const transport of ["http", "grpc"]) this.aclDenials.inc({ transport }, 0);
  }

  httpRequestStarted(): void {
    this.httpInFlight.inc();
  }

  /** `route` is the route's template (/v1/kv/:key), or UNMATCHED_ROUTE. */
  httpRequestEnded(method: string, route: string, status: number, durationSeconds: number): void {
    const labels = { method, route, status: String(status) };
    this.httpInFlight.dec();
    this.httpRequests.inc(labels);
    this.httpSeconds.observe(labels, durationSeconds);
    if (status === 403) this.aclDenials.inc({ transport: "http" });
  }

  httpConnectionRefused(): void {
    this.httpConnectionsRefused.inc();
  }

  grpcCallStarted(method: string): void {
    this.grpcInFlight.inc({ method });
  }

  /** `method` is the full path of a method the server serves (/cairn.registry.v1.Registry/Watch). */
  grpcCallEnded(method: string, code: GrpcCodeName, durationSeconds: number): void {
    this.grpcInFlight.dec({ method });
    this.grpcRequests.inc({ method, code });
    this.grpcSeconds.observe({ method, code }, durationSeconds);
    if (code === "PERMISSION_DENIED") this.aclDenials.inc({ transport: "grpc" });
  }

  /** Registers the rate limiter's refusals, read at every scrape. */
  readRateLimits(refusals: RateLimitRefusals): void {
    mirroredCounter(this.registry, {
      name: "cairn_rate_limit_refusals_total",
      help: "Requests refused with 429 by the rate limits, by class (write, sign) and by the bucket that refused (token, address)",
      labelNames: ["class", "limit"],
      read: () => Object.entries(refusals).flatMap(([cls, byKind]) => Object.entries(byKind).map(([limit, n]) => [{ class: cls, limit }, n] as const)),
    });
  }
}
