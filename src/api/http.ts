// The HTTP server: the only place Cairn speaks HTTP. Route groups live in their own files.

import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import type { AuditLog } from "../audit/audit.js";
import type { CertificateAuthority } from "../ca/authority.js";
import type { LeafCache } from "../ca/leaves.js";
import type { KvStateMachine } from "../kv/kv.js";
import type { RaftDriver } from "../raft/node/driver.js";
import type { Registry } from "../registry/registry.js";
import { auditWrites } from "./audit.js";
import { endWaitsOnClose } from "./blocking.js";
import { type PublicTlsMaterial, httpsServerOptions } from "./tls.js";
import type { AclService } from "../acl/acl.js";
import type { IntentionsService } from "../intentions/intentions.js";
import { installAcl } from "./acl/enforce.js";
import { aclRoutes } from "./acl/routes.js";
import { sendError } from "./errors.js";
import { caRoutes } from "./ca/routes.js";
import { clusterRoutes } from "./cluster/routes.js";
import { consulRoutes } from "./consul/routes.js";
import { kvRoutes } from "./native/kv.js";
import { type HttpLimits, capConnectionsPerClient, fastifyServerOptions, resolveHttpLimits } from "./limits.js";
import { RouteMethods } from "./methods.js";
import { OpenApiCollector } from "./openapi.js";
import { registryRoutes } from "./native/registry.js";
import { statusRoutes } from "./cluster/status.js";
import { runtimeRoutes } from "./cluster/runtime.js";
import { watchRoutes } from "./watch/sse.js";
import { uiRoutes } from "./ui.js";
import { RateLimiter, addRateLimits, rateLimitDefaults } from "./rate_limit.js";
import { type CsrIssuer, inlineIssuer } from "../ca/csr_pool.js";
import type { NodeMetrics } from "../metrics/metrics.js";
import { instrumentHttp, metricsRoutes } from "./metrics.js";
import type { SnapshotService } from "../state/snapshots.js";
import { snapshotRoutes } from "./snapshot.js";

interface HttpError {
  readonly statusCode?: number;
  readonly message: string;
  readonly validationContext?: string;
  readonly validation?: readonly { instancePath: string; message?: string; params?: Record<string, unknown> }[];
}

export interface HttpServerOptions {
  readonly driver: RaftDriver;
  readonly kv: KvStateMachine;
  readonly registry: Registry;
  readonly ca: CertificateAuthority;
  /** Which services may call which (Consul's intentions). */
  readonly intentions: IntentionsService;
  readonly datacenter: string;
  /**
   * The address Consul clients see as this node's Address (Consul's Node is the node id). The
   * default is the host of this node's peer address.
   */
  readonly nodeAddress?: string;
  readonly clusterId: string;
  readonly logger: Logger;
  /** Serve HTTPS with this material; plaintext HTTP when absent. */
  readonly tls?: PublicTlsMaterial;
  /** Rate limits on writes and signing; default rateLimitDefaults. */
  readonly rateLimiter?: RateLimiter;
  /** Where CSR signatures are checked; default on the event loop. */
  readonly csrIssuer?: CsrIssuer;
  /** What a client may send and hold before a route sees its request; the defaults when absent. */
  readonly limits?: Partial<HttpLimits>;
  /** Where every write is recorded once answered; none when absent (in-process tests). */
  readonly audit?: AuditLog;
  /** Tokens and policies; every route is checked against them (all allowed when ACLs are off). */
  readonly acl: AclService;
  /** This node's metrics: every request is counted there, and GET /metrics serves them. */
  readonly metrics: NodeMetrics;
  /** --metrics-open: GET /metrics needs no token even with ACLs on. */
  readonly metricsOpen?: boolean;
  /** Saves and restores snapshots of the whole state (GET and PUT /v1/snapshot). */
  readonly snapshots: SnapshotService;
  /** This node's Consul-style agent leaves, shared with SDS; Consul's routes keep their own when absent. */
  readonly leaves?: LeafCache;
}

/** The version of the API the OpenAPI document describes: the /v1 routes. */
const OPENAPI_VERSION = "1";

/** Request bodies larger than this are refused with 413 before they are parsed. */
export const BODY_BYTES_MAX = 1024 * 1024;

/** Refused connections are logged at most this often, each line with how many were refused. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

export function buildHttpServer(opts: HttpServerOptions): FastifyInstance {
  const limits = resolveHttpLimits(opts.limits);
  // pino's Logger is fastify's logger; only their type declarations disagree.
  const app = Fastify({
    loggerInstance: opts.logger as unknown as FastifyBaseLogger,
    bodyLimit: BODY_BYTES_MAX,
    // A schema's additionalProperties: false rejects unknown fields, rather than quietly dropping them.
    ajv: { customOptions: { removeAdditional: false } },
    // Per-request logs would dominate under load; failures are logged where they happen.
    logController: new LogController({ disableRequestLogging: true }),
    // No timeout may end a request while the driver holds it: a write or a consistent read
    // that meets an election waits up to --leader-wait and then its commit, and the driver
    // bounds each of those waits itself. So fastify's connectionTimeout (socket inactivity) and
    // handlerTimeout stay off; the limits bound receiving a request and idle keep-alive only.
    // With https the server is an https.Server; the routes see no difference, so the instance
    // keeps the plain type.
    ...fastifyServerOptions(limits),
    // fastify hands `http` to http.createServer only; an https server takes the same limits with its TLS options.
    ...(opts.tls === undefined ? {} : { https: { ...httpsServerOptions(opts.tls), ...fastifyServerOptions(limits).http } }),
  }) as unknown as FastifyInstance;
  // A flood of refused connections must not become a flood of log lines: one per interval, with the count.
  let refusedUnlogged = 0;
  let refusalLoggedAtMs = -Infinity;
  capConnectionsPerClient(app.server, limits.connectionsPerClientMax, (address) => {
    opts.metrics.api.httpConnectionRefused();
    refusedUnlogged++;
    const nowMs = performance.now();
    if (nowMs - refusalLoggedAtMs < REFUSAL_LOG_INTERVAL_MS) return;
    opts.logger.warn({ address, refused: refusedUnlogged, limit: limits.connectionsPerClientMax }, "connections refused: their address holds the most connections allowed per client (--http-max-conns-per-client)");
    refusedUnlogged = 0;
    refusalLoggedAtMs = nowMs;
  });
  // Before any route: every route's schema goes into the OpenAPI document.
  const openApi = new OpenApiCollector();
  endWaitsOnClose(app);
  // Before the other request hooks, so that what they answer themselves (a 429) is counted too.
  instrumentHttp(app, opts.metrics.api);
  // First: it refuses a route without an ACL rule, and names the rule for the OpenAPI document.
  installAcl(app, opts.acl);
  addRateLimits(app, opts.rateLimiter ?? new RateLimiter(rateLimitDefaults));
  app.addHook("onRoute", openApi.onRoute);
  const methods = new RouteMethods();
  app.addHook("onRoute", methods.onRoute);
  app.setNotFoundHandler(methods.notFound);
  if (opts.audit !== undefined) auditWrites(app, opts.audit);
  app.setErrorHandler((err: HttpError, _req, reply) => {
    const status = err.statusCode ?? 500;
    // An ACL rule that reads the state may meet an election (503) before the handler does.
    if (status >= 500) return sendError(reply, err, (id) => opts.driver.peerAddressOf(id));
    const first = err.validation?.[0];
    if (first !== undefined) {
      // Name the field: "body.checks/0/ttl must be string", or the unknown field itself.
      const extra = first.params?.additionalProperty;
      const where = `${err.validationContext ?? "request"}${first.instancePath.replaceAll("/", ".")}`;
      const field = typeof extra === "string" ? `${where}.${extra}` : where;
      const message = typeof extra === "string" ? `unknown field "${extra}"` : (first.message ?? "is invalid");
      return reply.code(400).send({ error: `${field}: ${message}`, field });
    }
    return reply.code(status).send({ error: err.message });
  });
  statusRoutes(app, opts.driver);
  aclRoutes(app, { acl: opts.acl, driver: opts.driver });
  runtimeRoutes(app, { blockingQueries: () => opts.registry.waiters.waiting });
  clusterRoutes(app, opts.driver, opts.clusterId);
  snapshotRoutes(app, { snapshots: opts.snapshots, driver: opts.driver });
  kvRoutes(app, opts.driver, opts.kv);
  registryRoutes(app, opts.registry, opts.driver);
  caRoutes(app, { ca: opts.ca, driver: opts.driver, issuer: opts.csrIssuer ?? inlineIssuer });
  watchRoutes(app, opts.registry);
  consulRoutes(app, {
    registry: opts.registry,
    ca: opts.ca,
    intentions: opts.intentions,
    driver: opts.driver,
    datacenter: opts.datacenter,
    nodeName: opts.driver.id,
    nodeAddress: opts.nodeAddress ?? hostOf(opts.driver.peerAddressOf(opts.driver.id) ?? "127.0.0.1"),
    ...(opts.leaves === undefined ? {} : { leaves: opts.leaves }),
  });
  metricsRoutes(app, { metrics: opts.metrics, driver: opts.driver, open: opts.metricsOpen ?? false });
  uiRoutes(app);
  app.get("/v1/openapi.json", { config: { acl: { open: "it describes the API, which is public; it holds no state" } }, schema: { summary: "This document: the HTTP API as OpenAPI 3.0, derived from the routes' schemas" } },
    () => openApi.document({ title: "Cairn HTTP API", version: OPENAPI_VERSION }));
  return app;
}

/** "host:port" or "[v6]:port" to the bare host. */
function hostOf(address: string): string {
  const at = address.lastIndexOf(":");
  const host = at < 0 ? address : address.slice(0, at);
  return host.replace(/^\[(.*)\]$/, "$1");
}
