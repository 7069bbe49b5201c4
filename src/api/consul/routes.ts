// Consul's HTTP API over Cairn's registry, so that Consul's own clients (the Go api package, the
// npm consul client, Prometheus' consul_sd_configs) work unchanged: the agent endpoints that
// register services and heartbeat their TTL checks, and the catalog and health reads with
// Consul's blocking queries.
//
// The whole cluster plays the part of one Consul datacenter and every Cairn node that of an agent:
// an instance's Node is the Cairn node that accepted its registration. Writes are acknowledged
// once applied on the node asked, so a read on that node sees them at once. Catalog and health
// reads are linearizable unless ?stale; agent reads describe this node and are answered from its
// own state, as Consul's are.
//
// Errors answer as Consul's do, with a text/plain reason, which both the Go client and the npm
// client (papi, under 80 bytes) put into the error they raise.

import { WAIT_DEFAULT_MS, WAIT_MAX_MS, onReplyGone, sendEncoded, serverClosing, serviceAnswer, sharedReads, withJitterMs } from "../blocking.js";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { type RaftDriver } from "../../raft/node/driver.js";
import { NotAvailableError } from "../../raft/node/errors.js";
import { sendText, sendTextFallback, sendTextNotAvailable } from "../errors.js";
import { parseGoDuration } from "../../common/duration.js";
import { type HealthStatus, type Instance, aggregateStatus } from "../../registry/model.js";
import { type Registry, RegistryInputError, RegistryNotFoundError } from "../../registry/registry.js";
import type { WatchKey } from "../../registry/watch.js";
import { compareInstances } from "../../registry/service_views.js";
import { encodeArrayInSlices } from "../../common/json_chunks.js";
import { filterInSlices, sortInSlices } from "../../common/slices.js";
import { TooManyWatchersError, errorMessage } from "../../common/errors.js";
import { CaForbiddenError, CaInputError, CaUnavailableError, type CertificateAuthority } from "../../ca/authority.js";
import { LeafCache } from "../../ca/leaves.js";
import { connectRoutes } from "./connect.js";
import { intentionRoutes } from "./intentions.js";
import { type ReadOptions, type ReadQuery, readQueryProperties, readQuerySchema } from "./read_query.js";
import { type IntentionsService, IntentionsInputError } from "../../intentions/intentions.js";
import { markFiltered, permissionsOf, type RouteAcl } from "../acl/enforce.js";
import { serviceOfCheck, serviceOfInstance } from "../native/registry.js";
import { ConsulBadRequest, decodeCheckUpdate, decodeServiceRegistration } from "./decode.js";
import {
  ConsulEncoder, type ConsulContext, agentSelfSchema, agentService, agentServiceSchema, catalogServiceSchema,
  catalogServicesSchema, nodeId, serviceEntrySchema,
} from "./shapes.js";

export interface ConsulDeps {
  readonly registry: Registry;
  readonly ca: CertificateAuthority;
  readonly intentions: IntentionsService;
  readonly driver: RaftDriver;
  readonly datacenter: string;
  /** This node's name as Consul's Node, and its address as the Node's Address. */
  readonly nodeName: string;
  readonly nodeAddress: string;
  /** Source of jitter for blocking queries; injectable so tests can pin it. */
  readonly random?: () => number;
  /** This node's agent leaves, shared with whatever else hands them out (SDS); a cache of its own when absent. */
  readonly leaves?: LeafCache;
}

/** Consul's blocking-query bounds: wait defaults to 5 minutes and is capped at 10. */
export { WAIT_DEFAULT_MS, WAIT_MAX_MS, withJitterMs };
/** A registration with every limit in registryLimits at its maximum fits well within this. */
const REGISTER_BODY_BYTES_MAX = 256 * 1024;
/** {Status, Output}, with Output at most registryLimits.outputBytesMax. */
const CHECK_UPDATE_BODY_BYTES_MAX = 16 * 1024;
/** The Consul release whose agent, catalog and health API these routes follow; clients gate features on it. */
const CONSUL_API_VERSION = "1.17.0";
const UINT64_MAX = 2n ** 64n - 1n;

/** An answer Consul gives as 404, such as an unknown service or check id. */
class ConsulNotFound extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConsulNotFound";
  }
}

interface ServiceQuery extends ReadQuery {
  readonly tag?: string[];
  readonly passing?: string;
}

const serviceQuerySchema = {
  type: "object",
  properties: {
    ...readQueryProperties,
    tag: { type: "array", items: { type: "string" }, description: "keep instances carrying every tag given" },
    passing: { type: "string", description: "present or a true Go boolean: keep instances whose checks all pass" },
  },
} as const;

const serviceNameParams = { type: "object", required: ["service"], properties: { service: { type: "string", minLength: 1 } } } as const;
const idParams = { type: "object", required: ["id"], properties: { id: { type: "string", minLength: 1 } } } as const;
const noteQuery = { type: "object", properties: { note: { type: "string", description: "becomes the check's Output" } } } as const;

const checkSchemaDoc = {
  type: "object",
  description: "Consul's CheckType: exactly one of TTL, HTTP, TCP or GRPC",
  properties: {
    CheckID: { type: "string" }, Name: { type: "string" }, TTL: { type: "string" }, HTTP: { type: "string" },
    TCP: { type: "string" }, GRPC: { type: "string" }, Interval: { type: "string" }, Timeout: { type: "string" },
    DeregisterCriticalServiceAfter: { type: "string" },
    Status: { type: "string", enum: ["passing", "warning", "critical"] }, Notes: { type: "string" },
  },
} as const;

/**
 * Documents the body. Decoding is done by decodeServiceRegistration, because Consul matches keys
 * case-insensitively, which a JSON schema cannot express.
 */
const registerBodyDoc = {
  type: "object",
  description: "Consul's service definition; keys match case-insensitively and unknown keys are refused",
  properties: {
    ID: { type: "string" }, Name: { type: "string" }, Tags: { type: "array", items: { type: "string" } },
    Address: { type: "string" }, Port: { type: "integer" },
    Meta: { type: "object", additionalProperties: { type: "string" } },
    Weights: { type: "object", properties: { Passing: { type: "integer" }, Warning: { type: "integer" } } },
    Locality: { type: "object", properties: { Region: { type: "string" }, Zone: { type: "string" } } },
    Check: checkSchemaDoc, Checks: { type: "array", items: checkSchemaDoc },
  },
} as const;

const checkUpdateBodyDoc = {
  type: "object",
  properties: { Status: { type: "string", enum: ["passing", "warning", "critical"] }, Output: { type: "string" } },
} as const;

const CONSUL_TAGS = ["consul"];

export function consulRoutes(app: FastifyInstance, deps: ConsulDeps): void {
  // A plugin scope of its own: Consul's error shape and body parsing apply to these routes only.
  void app.register((scope, _opts, done) => {
    installConsulErrors(scope, deps.driver);
    installJsonBodies(scope);
    agentRoutes(scope, deps);
    readRoutes(scope, deps);
    connectRoutes(scope, {
      ca: deps.ca,
      leaves: deps.leaves ?? new LeafCache(deps.ca, deps.datacenter),
      random: deps.random ?? Math.random,
      parseIndex,
      parseWait,
      readHeaders: (reply, index) => readHeaders(reply, deps.driver, index),
    });
    intentionRoutes(scope, {
      intentions: deps.intentions,
      ca: deps.ca,
      random: deps.random ?? Math.random,
      readOptions: (query) => readOptions(query, deps.datacenter),
      readHeaders: (reply, index) => readHeaders(reply, deps.driver, index),
    });
    done();
  });
}

// ---------------------------------------------------------------- agent: writes

function agentRoutes(app: FastifyInstance, deps: ConsulDeps): void {
  const { registry } = deps;
  const ctx: ConsulContext = { datacenter: deps.datacenter };

  const checkWrite: RouteAcl = { need: "service", access: "write", name: (req) => serviceOfCheck(registry, (req.params as { id: string }).id) };

  app.put("/v1/agent/service/register", {
    bodyLimit: REGISTER_BODY_BYTES_MAX,
    // The same decoder as the handler's, so the rule and the write name the same service.
    config: { acl: { need: "service", access: "write", name: (req) => decodeServiceRegistration(req.body).name } },
    schema: { summary: "Register a service instance (ID defaults to Name)", tags: CONSUL_TAGS, body: registerBodyDoc },
    // The schema documents; decodeServiceRegistration validates, with Go's case-insensitive keys.
    validatorCompiler: () => () => true,
  }, async (req, reply) => {
    await registry.register(decodeServiceRegistration(req.body));
    return emptyOk(reply);
  });

  app.put<{ Params: { id: string } }>("/v1/agent/service/deregister/:id", {
    config: { acl: { need: "service", access: "write", name: (req) => serviceOfInstance(registry, (req.params as { id: string }).id) } },
    schema: { summary: "Deregister a service instance and its checks", tags: CONSUL_TAGS, params: idParams },
  }, async (req, reply) => {
    const id = req.params.id;
    // A registration acknowledged by another node may not have reached this one yet: only a
    // linearizable look can tell "unknown" from "not here yet".
    if (registry.state.instance(id) === undefined) await registry.consistentRead(false);
    try {
      await registry.deregister(id);
    } catch (err) {
      if (!(err instanceof RegistryNotFoundError)) throw err;
      throw new ConsulNotFound(`Unknown service ID "${id}". Ensure that the service ID is passed, not the service name.`);
    }
    return emptyOk(reply);
  });

  const heartbeat = async (checkId: string, status: HealthStatus, output: string): Promise<void> => {
    if (registry.state.checkById(checkId) === undefined) await registry.consistentRead(false);
    const found = registry.state.checkById(checkId);
    // Clients match on Consul's wording ("does not have associated TTL") to decide to re-register.
    if (found !== undefined && found.check.kind !== "ttl") {
      throw new ConsulBadRequest(`CheckID "${checkId}" does not have associated TTL: it is a ${found.check.kind} check, which Cairn probes itself`);
    }
    try {
      await registry.updateCheck(checkId, status, output);
    } catch (err) {
      if (!(err instanceof RegistryNotFoundError)) throw err;
      throw new ConsulNotFound(`CheckID "${checkId}" does not have associated TTL: no check with this ID is registered`);
    }
  };

  for (const [verb, status] of [["pass", "passing"], ["warn", "warning"], ["fail", "critical"]] as const) {
    app.put<{ Params: { id: string }; Querystring: { note?: string } }>(`/v1/agent/check/${verb}/:id`, {
      config: { acl: checkWrite },
      schema: { summary: `Set a TTL check to ${status} and reset its TTL`, tags: CONSUL_TAGS, params: idParams, querystring: noteQuery },
    }, async (req, reply) => {
      await heartbeat(req.params.id, status, req.query.note ?? "");
      return emptyOk(reply);
    });
  }

  app.put<{ Params: { id: string } }>("/v1/agent/check/update/:id", {
    bodyLimit: CHECK_UPDATE_BODY_BYTES_MAX,
    config: { acl: checkWrite },
    schema: { summary: "Set a TTL check's status and output and reset its TTL", tags: CONSUL_TAGS, params: idParams, body: checkUpdateBodyDoc },
    validatorCompiler: () => () => true,
  }, async (req, reply) => {
    const { status, output } = decodeCheckUpdate(req.body);
    await heartbeat(req.params.id, status, output);
    return emptyOk(reply);
  });

  // ---------------------------------------------------------------- agent: reads

  app.get<{ Querystring: ReadQuery }>("/v1/agent/services", {
    config: { acl: { filtered: "service" } },
    schema: {
      summary: "The service instances registered through this node, by ID", tags: CONSUL_TAGS, querystring: readQuerySchema,
      response: { 200: { type: "object", additionalProperties: agentServiceSchema } },
    },
  }, async (req, reply) => {
    readOptions(req.query, deps.datacenter);
    const index = registry.state.revision;
    // One copy of the state's instances (~1 ms at 100,000), then filtered, sorted and encoded in slices.
    const all = [...registry.state.allInstances()];
    const permissions = permissionsOf(req);
    let hidden = false;
    const mine = await sortInSlices(await filterInSlices(all, (i) => {
      if (i.node !== deps.nodeName) return false;
      if (permissions.allows("service", "read", i.service)) return true;
      hidden = true;
      return false;
    }), compareInstances);
    if (hidden) markFiltered(reply);
    const body = await encodeArrayInSlices(mine, () => true, (i) => `${JSON.stringify(i.id)}:${JSON.stringify(agentService(i, ctx))}`, { open: "{", close: "}" });
    readHeaders(reply, deps.driver, index);
    return sendEncoded(reply, body);
  });

  app.get("/v1/agent/self", {
    // Consul asks agent:read on the node; Cairn's nodes are its agents, so node:read on this one.
    config: { acl: { need: "node", access: "read", name: () => deps.nodeName } },
    schema: { summary: "This node's configuration and membership (Config.Datacenter)", tags: CONSUL_TAGS, response: { 200: agentSelfSchema } },
  }, (_req, reply) => {
    const status = deps.driver.status();
    const peer = deps.driver.peerAddressOf(deps.driver.id) ?? "";
    readHeaders(reply, deps.driver, registry.state.revision);
    return reply.send({
      Config: {
        Datacenter: deps.datacenter,
        PrimaryDatacenter: deps.datacenter,
        NodeName: deps.nodeName,
        NodeID: nodeId(deps.nodeName),
        Server: true,
        Version: CONSUL_API_VERSION,
        Revision: "cairn",
      },
      Member: {
        Name: deps.nodeName,
        Addr: deps.nodeAddress,
        Port: Number(peer.slice(peer.lastIndexOf(":") + 1)) || 0,
        Tags: { dc: deps.datacenter, role: "consul", id: nodeId(deps.nodeName), vsn: "2" },
        // Serf's StatusAlive.
        Status: 1,
      },
      Stats: {
        consul: {
          server: "true",
          leader: String(status.role === "leader"),
          known_datacenters: "1",
          known_servers: String(status.members.filter((m) => m.role !== "learner").length),
        },
        raft: {
          state: status.role,
          term: String(status.term),
          commit_index: String(status.commitIndex),
          applied_index: String(status.appliedIndex),
        },
      },
      Meta: {},
    });
  });
}

// ---------------------------------------------------------------- catalog and health reads

function readRoutes(app: FastifyInstance, deps: ConsulDeps): void {
  const { registry } = deps;
  const random = deps.random ?? Math.random;
  const encoder = new ConsulEncoder({ datacenter: deps.datacenter });
  const answers = sharedReads(app, registry);

  /** Waits as the query asks. The index to answer with is read after, in the same step as the answer. */
  const blockingRead = async (query: ReadQuery, key: WatchKey, reply: FastifyReply): Promise<void> => {
    const opts = readOptions(query, deps.datacenter);
    // The barrier comes first: a blocking query then waits from a state at least as new as
    // every write acknowledged before it was asked.
    await registry.consistentRead(opts.stale);
    if (opts.sinceIndex > 0 && !serverClosing(reply)) {
      await registry.waiters.wait(key, opts.sinceIndex, withJitterMs(opts.waitMs, random()), onReplyGone(reply));
    }
  };

  /** A service's instances that `keep` accepts, as `encode` shapes them, with Consul's headers. */
  const sendServiceAnswer = async (reply: FastifyReply, query: string, service: string, keep: (i: Instance) => boolean,
    encode: (i: Instance) => string): Promise<FastifyReply> => {
    const { index, body } = serviceAnswer(answers, registry, query, service, keep, encode);
    const encoded = await body;
    readHeaders(reply, deps.driver, index);
    return sendEncoded(reply, encoded);
  };

  /** A service the token may not read answers as an unknown one does, [], with Consul's header saying the rules hid it. */
  const sendHidden = (reply: FastifyReply, service: string): FastifyReply => {
    readHeaders(reply, deps.driver, registry.waiters.indexOf({ service }));
    markFiltered(reply);
    return reply.type("application/json").send("[]");
  };

  app.get<{ Querystring: ReadQuery }>("/v1/catalog/services", {
    config: { acl: { filtered: "service" } },
    schema: {
      summary: "Service names and their tags; blocks on the catalog's index", tags: CONSUL_TAGS, querystring: readQuerySchema,
      response: { 200: catalogServicesSchema },
    },
  }, async (req, reply) => {
    await blockingRead(req.query, { catalog: true }, reply);
    const index = registry.waiters.indexOf({ catalog: true });
    const permissions = permissionsOf(req);
    const encode = async (keep: (name: string) => boolean): ReturnType<typeof encodeArrayInSlices> => encodeArrayInSlices(await registry.views.catalog().services,
      (s) => keep(s.name), (s) => `${JSON.stringify(s.name)}:${JSON.stringify(s.tags)}`, { open: "{", close: "}" });
    // The shared answer is for tokens that read every service; any other gets its own, filtered.
    const readsAll = permissions.readsAll("service");
    if (!readsAll && (await registry.views.catalog().services).some((s) => !permissions.allows("service", "read", s.name))) markFiltered(reply);
    const body = readsAll ? await answers.get("catalog", index, () => encode(() => true)) : await encode((name) => permissions.allows("service", "read", name));
    readHeaders(reply, deps.driver, index);
    return sendEncoded(reply, body);
  });

  app.get<{ Params: { service: string }; Querystring: ServiceQuery }>("/v1/catalog/service/:service", {
    config: { acl: { filtered: "service" } },
    schema: {
      summary: "A service's instances, one flat entry each; blocks on the service's own index", tags: CONSUL_TAGS,
      params: serviceNameParams, querystring: serviceQuerySchema,
      response: { 200: { type: "array", items: catalogServiceSchema } },
    },
  }, async (req, reply) => {
    const service = req.params.service;
    const tags = tagFilter(req.query.tag);
    await blockingRead(req.query, { service }, reply);
    if (!permissionsOf(req).allows("service", "read", service)) return sendHidden(reply, service);
    return sendServiceAnswer(reply, queryKey("catalog-service", service, tags), service, (i) => hasTags(i, tags), (i) => encoder.catalogEntry(i));
  });

  app.get<{ Params: { service: string }; Querystring: ServiceQuery }>("/v1/health/service/:service", {
    config: { acl: { filtered: "service" } },
    schema: {
      summary: "A service's instances with their node and checks; blocks on the service's own index", tags: CONSUL_TAGS,
      params: serviceNameParams, querystring: serviceQuerySchema,
      response: { 200: { type: "array", items: serviceEntrySchema } },
    },
  }, async (req, reply) => {
    const service = req.params.service;
    const passing = goBool("passing", req.query.passing);
    const tags = tagFilter(req.query.tag);
    await blockingRead(req.query, { service }, reply);
    if (!permissionsOf(req).allows("service", "read", service)) return sendHidden(reply, service);
    const keep = (i: Instance): boolean => hasTags(i, tags) && (!passing || aggregateStatus(i.checks) === "passing");
    return sendServiceAnswer(reply, queryKey(passing ? "health-passing" : "health", service, tags), service, keep, (i) => encoder.healthEntry(i));
  });
}

/** The tags a query filters on, once each and in order: `?tag=a&tag=b` and `?tag=b&tag=a` ask the same. */
function tagFilter(tags: readonly string[] | undefined): string[] {
  return tags === undefined || tags.length === 0 ? [] : [...new Set(tags)].sort();
}

/** The key of a query's shared answer. A newline cannot appear in a service name or a tag here. */
function queryKey(route: string, service: string, tags: readonly string[]): string {
  return [route, service, ...tags].join("\n");
}

// ---------------------------------------------------------------- query parsing

/** Consul's query options: consistency, datacenter, and a blocking query's index and wait. */
export function readOptions(query: ReadQuery, datacenter: string): ReadOptions {
  if (query.stale !== undefined && query.consistent !== undefined) {
    throw new ConsulBadRequest("Cannot specify ?stale with ?consistent, conflicting semantics.");
  }
  if (query.dc !== undefined && query.dc !== "" && query.dc !== datacenter) {
    throw new ConsulBadRequest(`No path to datacenter "${query.dc}": this cluster serves datacenter "${datacenter}" only`);
  }
  if (query.filter !== undefined && query.filter !== "") {
    throw new ConsulBadRequest("filter expressions are not supported; filter on the client instead");
  }
  return { stale: query.stale !== undefined, sinceIndex: parseIndex(query.index), waitMs: parseWait(query.wait) };
}

/** A uint64, as Consul's ParseUint reads it. Indexes beyond 2^53 can never be passed, so they wait the full wait. */
export function parseIndex(text: string | undefined): number {
  if (text === undefined || text === "") return 0;
  if (!/^\d{1,20}$/.test(text) || BigInt(text) > UINT64_MAX) {
    throw new ConsulBadRequest(`Invalid index "${text}": want a uint64`);
  }
  const n = BigInt(text);
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(n);
}

export function parseWait(text: string | undefined): number {
  if (text === undefined || text === "") return WAIT_DEFAULT_MS;
  const ms = parseGoDuration(text);
  if (ms === undefined) throw new ConsulBadRequest(`Invalid wait time "${text}": want a Go duration like 30s`);
  return ms === 0 ? WAIT_DEFAULT_MS : Math.min(ms, WAIT_MAX_MS);
}

/** A flag as Consul reads it: present without a value is true, else one of Go's ParseBool spellings. */
export function goBool(name: string, text: string | undefined): boolean {
  if (text === undefined) return false;
  if (text === "" || ["1", "t", "T", "TRUE", "true", "True"].includes(text)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(text)) return false;
  throw new ConsulBadRequest(`Invalid value for ?${name}: "${text}" must be true or false`);
}

// ---------------------------------------------------------------- answers

function hasTags(inst: Instance, tags: readonly string[]): boolean {
  return tags.every((t) => inst.tags.includes(t));
}

/**
 * The headers every Consul read carries. An index of 0 would make the npm client's watch give up
 * for good, so a never-touched service reports 1, which its first write passes.
 */
function readHeaders(reply: FastifyReply, driver: RaftDriver, index: number): void {
  const lastContactMs = driver.lastContactMs;
  void reply
    .header("X-Consul-Index", String(Math.max(1, index)))
    .header("X-Consul-KnownLeader", String(driver.leader !== ""))
    // Never having heard from a leader is at least as stale as the process is old.
    .header("X-Consul-LastContact", String(lastContactMs ?? Math.round(process.uptime() * 1000)));
}

/** Consul's writes answer 200 with an empty body; its Go client accepts nothing else. */
function emptyOk(reply: FastifyReply): FastifyReply {
  return reply.code(200).send();
}

// ---------------------------------------------------------------- errors and bodies

interface RouteError extends Error {
  readonly statusCode?: number;
  readonly validation?: readonly { readonly instancePath: string; readonly message?: string }[];
  readonly validationContext?: string;
}

function installConsulErrors(scope: FastifyInstance, driver: RaftDriver): void {
  scope.setErrorHandler((err: RouteError, req: FastifyRequest, reply: FastifyReply) => {
    const text = (code: number, message: string): FastifyReply => sendText(reply, code, message);
    if (err instanceof ConsulBadRequest) return text(400, err.message);
    if (err instanceof RegistryInputError || err instanceof CaInputError || err instanceof IntentionsInputError) return text(400, err.message);
    if (err instanceof CaForbiddenError) return text(403, err.message);
    if (err instanceof CaUnavailableError) {
      void reply.header("retry-after", "1");
      return text(503, err.message);
    }
    if (err instanceof ConsulNotFound) return text(404, err.message);
    if (err instanceof RegistryNotFoundError) return text(404, err.message);
    if (err instanceof TooManyWatchersError) {
      void reply.header("retry-after", "1");
      return text(429, err.message);
    }
    if (err instanceof NotAvailableError) return sendTextNotAvailable(reply, err, (id) => driver.peerAddressOf(id));
    const first = err.validation?.[0];
    if (first !== undefined) {
      const field = `${err.validationContext ?? "request"}${first.instancePath.replaceAll("/", ".")}`;
      return text(400, `${field}: ${first.message ?? "is invalid"}`);
    }
    return sendTextFallback(req, reply, err, "Consul API");
  });
}

/**
 * Consul reads every body as JSON whatever its Content-Type: `curl --data @file`, as Consul's
 * documentation shows, sends application/x-www-form-urlencoded. An empty body is no body.
 */
export function installJsonBodies(scope: FastifyInstance, badBody: (message: string) => Error = (message) => new ConsulBadRequest(message)): void {
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser("*", { parseAs: "string" }, (_req, body, done) => {
    const text = typeof body === "string" ? body.trim() : body.toString("utf8").trim();
    if (text === "") {
      done(null, undefined);
      return;
    }
    try {
      done(null, JSON.parse(text) as unknown);
    } catch (err) {
      done(badBody(`Request decode failed: ${errorMessage(err)}`), undefined);
    }
  });
}
