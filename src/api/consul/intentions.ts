// Consul's intention API over Cairn's intentions: the exact API (one source/destination pair),
// the list, match and check reads (list and match as blocking queries), and the agent's
// authorize, which a proxy asks whether a client certificate may reach a service.
//
// ACLs are Consul's: writing an intention needs intentions:write on its destination (a
// service:write rule grants it), reading needs intentions:read there (service:read grants it).
// The list and match answers leave out what the token may not read, with Consul's header.

import type { FastifyInstance, FastifyReply } from "fastify";
import type { CertificateAuthority } from "../../ca/authority.js";
import { SpiffeIdError, parseSpiffeId, workloadOf } from "../../ca/spiffe.js";
import { type Intention } from "../../intentions/state.js";
import { type IntentionsService, type MatchBy } from "../../intentions/intentions.js";
import { precedenceOf } from "../../intentions/precedence.js";
import { markFiltered, permissionsOf } from "../acl/enforce.js";
import { waitEndSignal, withJitterMs } from "../blocking.js";
import { sendText } from "../errors.js";
import { ConsulBadRequest } from "./decode.js";
import { type ReadOptions, type ReadQuery, readQueryProperties } from "./read_query.js";

export interface IntentionRouteDeps {
  readonly intentions: IntentionsService;
  readonly ca: CertificateAuthority;
  readonly random: () => number;
  /** Consul's query options (consistency, datacenter, blocking index and wait), shared with the rest of the Consul API. */
  readonly readOptions: (query: ReadQuery) => ReadOptions;
  readonly readHeaders: (reply: FastifyReply, index: number) => void;
}

/** {Action, Description} and Consul's other Intention fields: a small body. */
const UPSERT_BODY_BYTES_MAX = 16 * 1024;
/** {Target, ClientCertURI, ClientCertSerial}. */
const AUTHORIZE_BODY_BYTES_MAX = 8 * 1024;
/** `match` names per request, at most. */
const MATCH_NAMES_MAX = 64;
/** Consul's namespace for everything outside Enterprise. */
const DEFAULT_NAMESPACE = "default";

const CONSUL_TAGS = ["consul"];

const pairQuery = {
  type: "object",
  properties: {
    source: { type: "string", description: "the source service's name, or *" },
    destination: { type: "string", description: "the destination service's name, or *" },
    ...readQueryProperties,
  },
} as const;

export const intentionSchema = {
  type: "object",
  properties: {
    ID: { type: "string" },
    Description: { type: "string" },
    SourceNS: { type: "string" },
    SourceName: { type: "string" },
    DestinationNS: { type: "string" },
    DestinationName: { type: "string" },
    SourceType: { type: "string", enum: ["consul"] },
    Action: { type: "string", enum: ["allow", "deny"] },
    Precedence: { type: "integer", description: "9 exact/exact, 8 */exact, 6 exact/*, 5 */*: higher is evaluated first" },
    Meta: { type: "object", additionalProperties: { type: "string" } },
    CreateIndex: { type: "integer" },
    ModifyIndex: { type: "integer" },
  },
} as const;

const upsertBodyDoc = {
  type: "object",
  description: "Consul's Intention; Action is required, keys match case-insensitively, and the read-only fields Consul's clients send back are ignored",
  properties: { Action: { type: "string", enum: ["allow", "deny"] }, Description: { type: "string" }, SourceType: { type: "string", enum: ["consul"] } },
} as const;

interface PairQuery extends ReadQuery {
  readonly source?: string;
  readonly destination?: string;
}

export function intentionRoutes(app: FastifyInstance, deps: IntentionRouteDeps): void {
  const { intentions } = deps;
  const destinationOf = (req: { query: unknown }): string | undefined => nonEmpty((req.query as PairQuery).destination);

  /** The linearizable barrier first, then the wait the query asks for. */
  const blockingRead = async (query: ReadQuery, key: { by: MatchBy; name: string } | undefined, reply: FastifyReply): Promise<void> => {
    const opts = deps.readOptions(query);
    await intentions.consistentRead(opts.stale);
    if (opts.sinceIndex > 0) await intentions.wait(key, opts.sinceIndex, withJitterMs(opts.waitMs, deps.random()), waitEndSignal(reply));
  };

  app.put<{ Querystring: PairQuery }>("/v1/connect/intentions/exact", {
    bodyLimit: UPSERT_BODY_BYTES_MAX,
    config: { acl: { need: "intention", access: "write", name: destinationOf } },
    schema: {
      summary: "Create or replace the intention from source to destination; answers true", tags: CONSUL_TAGS,
      querystring: pairQuery, body: upsertBodyDoc, response: { 200: { type: "boolean" } },
    },
    // The schema documents; decodeUpsert and pairOf validate, with Go's case-insensitive keys.
    validatorCompiler: () => () => true,
  }, async (req) => {
    const { source, destination } = pairOf(req.query);
    const body = decodeUpsert(req.body, source, destination);
    await intentions.upsert({ source, destination, ...body });
    return true;
  });

  app.get<{ Querystring: PairQuery }>("/v1/connect/intentions/exact", {
    config: { acl: { need: "intention", access: "read", name: destinationOf } },
    schema: {
      summary: "The intention from source to destination; 404 if there is none", tags: CONSUL_TAGS,
      querystring: pairQuery, response: { 200: intentionSchema },
    },
  }, async (req, reply) => {
    const { source, destination } = pairOf(req.query);
    await blockingRead(req.query, undefined, reply);
    const found = intentions.get(source, destination);
    deps.readHeaders(reply, intentions.revision);
    if (found === undefined) return sendText(reply, 404, `Intention not found: no intention from "${source}" to "${destination}"`);
    return consulIntention(found);
  });

  app.delete<{ Querystring: PairQuery }>("/v1/connect/intentions/exact", {
    config: { acl: { need: "intention", access: "write", name: destinationOf } },
    schema: {
      summary: "Delete the intention from source to destination (none is no error); answers true", tags: CONSUL_TAGS,
      querystring: pairQuery, response: { 200: { type: "boolean" } },
    },
  }, async (req) => {
    const { source, destination } = pairOf(req.query);
    await intentions.delete(source, destination);
    return true;
  });

  app.get<{ Querystring: ReadQuery }>("/v1/connect/intentions", {
    config: { acl: { filtered: "intention" } },
    schema: {
      summary: "Every intention the token may read, in evaluation order; blocks on the intentions' index", tags: CONSUL_TAGS,
      querystring: { type: "object", properties: readQueryProperties }, response: { 200: { type: "array", items: intentionSchema } },
    },
  }, async (req, reply) => {
    await blockingRead(req.query, undefined, reply);
    const index = intentions.revision;
    const answer = readable(intentions.state.all(), req, reply);
    deps.readHeaders(reply, index);
    return answer.map(consulIntention);
  });

  app.get<{ Querystring: ReadQuery & { by?: string; name?: string[] } }>("/v1/connect/intentions/match", {
    config: { acl: { filtered: "intention" } },
    schema: {
      summary: "For each name, the intentions that match it on the given side, in evaluation order; blocks on that name's index", tags: CONSUL_TAGS,
      querystring: {
        type: "object",
        properties: {
          by: { type: "string", description: "source or destination" },
          name: { type: "array", items: { type: "string" }, description: "a service name (repeat for several)" },
          ...readQueryProperties,
        },
      },
      response: { 200: { type: "object", additionalProperties: { type: "array", items: intentionSchema } } },
    },
  }, async (req, reply) => {
    const by = req.query.by;
    if (by === undefined || by === "") throw new ConsulBadRequest("required query parameter 'by' not set: give by=destination or by=source");
    if (by !== "destination" && by !== "source") throw new ConsulBadRequest(`by must be "destination" or "source", not ${JSON.stringify(by.slice(0, 40))}`);
    const names = [...new Set(req.query.name ?? [])];
    if (names.length === 0) throw new ConsulBadRequest("required query parameter 'name' not set: give name=<service>");
    if (names.length > MATCH_NAMES_MAX) throw new ConsulBadRequest(`at most ${MATCH_NAMES_MAX} names per match; ask in several requests`);
    // Checked before waiting: a bad name is a 400 at once.
    for (const n of names) intentions.match(by, n);
    // One name waits on that name's index only; several wait on any change.
    const only = names.length === 1 ? names[0] : undefined;
    await blockingRead(req.query, only === undefined ? undefined : { by, name: only }, reply);
    const index = only === undefined ? intentions.revision : intentions.matchIndex(by, only);
    const answer: Record<string, unknown[]> = {};
    for (const n of names) answer[n] = readable(intentions.match(by, n), req, reply).map(consulIntention);
    deps.readHeaders(reply, index);
    return answer;
  });

  app.get<{ Querystring: PairQuery }>("/v1/connect/intentions/check", {
    config: { acl: { need: "intention", access: "read", name: destinationOf } },
    schema: {
      summary: "Whether a connection from source to destination would be allowed, by the intentions and the default", tags: CONSUL_TAGS,
      querystring: pairQuery,
      response: { 200: { type: "object", required: ["Allowed"], properties: { Allowed: { type: "boolean" } } } },
    },
  }, async (req, reply) => {
    const { source, destination } = pairOf(req.query);
    const opts = deps.readOptions(req.query);
    await intentions.consistentRead(opts.stale);
    const decision = intentions.check(source, destination);
    deps.readHeaders(reply, intentions.matchIndex("destination", destination));
    return { Allowed: decision.allowed };
  });

  app.post("/v1/agent/connect/authorize", {
    bodyLimit: AUTHORIZE_BODY_BYTES_MAX,
    // As Consul: service:write on the target, the right of a proxy that fronts it.
    config: { acl: { need: "service", access: "write", name: (req) => nonEmpty(decodeAuthorize(req.body).target) } },
    schema: {
      summary: "Whether a client certificate's service may connect to Target, by the intentions (as a proxy asks)", tags: CONSUL_TAGS,
      body: {
        type: "object",
        properties: { Target: { type: "string" }, ClientCertURI: { type: "string" }, ClientCertSerial: { type: "string" } },
      },
      response: { 200: { type: "object", required: ["Authorized", "Reason"], properties: { Authorized: { type: "boolean" }, Reason: { type: "string" } } } },
    },
    validatorCompiler: () => () => true,
  }, (req) => {
    const { target, clientCertUri } = decodeAuthorize(req.body);
    if (target === "") throw new ConsulBadRequest("Target service must be specified");
    if (clientCertUri === "") throw new ConsulBadRequest("ClientCertURI must be specified");
    let source: string;
    try {
      const id = parseSpiffeId(clientCertUri);
      const workload = workloadOf(id);
      if (workload === undefined) return { Authorized: false, Reason: `Client ID ${JSON.stringify(clientCertUri)} does not name a service (spiffe://<trust-domain>/ns/<ns>/svc/<service>)` };
      if (id.trustDomain !== deps.ca.trustDomain) return { Authorized: false, Reason: `Client ID is from trust domain "${id.trustDomain}", not this cluster's "${deps.ca.trustDomain}"` };
      source = workload.service;
    } catch (err) {
      if (err instanceof SpiffeIdError) throw new ConsulBadRequest(`ClientCertURI: ${err.message}`);
      throw err;
    }
    // The decision is this node's applied state, at once: a proxy asks on every new connection.
    const decision = intentions.check(source, target);
    if (decision.by === undefined) return { Authorized: decision.allowed, Reason: `Default behavior configured by --intentions-default (${decision.allowed ? "allow" : "deny"}): no intention matches ${source} => ${target}` };
    const i = decision.by;
    return { Authorized: decision.allowed, Reason: `Matched intention: ${i.action.toUpperCase()} ${i.source} => ${i.destination} (ID: ${i.id}, Precedence: ${precedenceOf(i.source, i.destination)})` };
  });
}

/** The intentions whose destination the token may read; marks the answer filtered if any were left out. */
function readable(all: readonly Intention[], req: Parameters<typeof permissionsOf>[0], reply: FastifyReply): Intention[] {
  const permissions = permissionsOf(req);
  const kept = all.filter((i) => permissions.allows("intention", "read", i.destination));
  if (kept.length < all.length) markFiltered(reply);
  return kept;
}

function consulIntention(i: Intention): Record<string, unknown> {
  return {
    ID: i.id,
    Description: i.description,
    SourceNS: DEFAULT_NAMESPACE,
    SourceName: i.source,
    DestinationNS: DEFAULT_NAMESPACE,
    DestinationName: i.destination,
    SourceType: "consul",
    Action: i.action,
    Precedence: precedenceOf(i.source, i.destination),
    Meta: {},
    CreateIndex: i.createIndex,
    ModifyIndex: i.modifyIndex,
  };
}

function nonEmpty(text: unknown): string | undefined {
  if (Array.isArray(text)) throw new ConsulBadRequest("a query parameter is given more than once: give each of source and destination once");
  return typeof text !== "string" || text === "" ? undefined : text;
}

function pairOf(query: PairQuery): { source: string; destination: string } {
  const source = nonEmpty(query.source);
  const destination = nonEmpty(query.destination);
  if (source === undefined) throw new ConsulBadRequest("required query parameter 'source' not set: give source=<service> or source=*");
  if (destination === undefined) throw new ConsulBadRequest("required query parameter 'destination' not set: give destination=<service> or destination=*");
  return { source, destination };
}

/** Go's field matching: case and underscores ignored. */
function fieldKey(key: string): string {
  return key.toLowerCase().replaceAll("_", "");
}

/** Fields of Consul's Intention its clients send back with a write, and Consul ignores (it sets them). */
const IGNORED_FIELDS = new Set(["id", "precedence", "createindex", "modifyindex", "createdat", "updatedat", "hash", "legacyid", "legacycreatetime", "legacyupdatetime", "legacymeta", "sourcepartition", "destinationpartition"].map(fieldKey));

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Consul's Intention body for an exact write. Action is required; the names, if given, must be
 * the query's; what Cairn does not model (namespaces other than default, L7 permissions, peers,
 * Meta) is refused rather than dropped, since dropping it would change what the intention means.
 */
function decodeUpsert(body: unknown, source: string, destination: string): { action: string; description: string } {
  if (body === undefined) throw new ConsulBadRequest('the body is required: {"Action": "allow" or "deny", "Description": "..."}');
  if (!isObject(body)) throw new ConsulBadRequest('the body must be a JSON object such as {"Action": "allow"}');
  let action: string | undefined;
  let description = "";
  const text = (field: string, v: unknown): string => {
    if (v === null || v === undefined) return "";
    if (typeof v !== "string") throw new ConsulBadRequest(`${field} must be a string`);
    return v;
  };
  for (const [key, value] of Object.entries(body)) {
    const k = fieldKey(key);
    if (IGNORED_FIELDS.has(k)) continue;
    switch (k) {
      case "action":
        action = text("Action", value);
        break;
      case "description":
        description = text("Description", value);
        break;
      case "sourcetype": {
        const t = text("SourceType", value);
        if (t !== "" && t !== "consul") throw new ConsulBadRequest(`SourceType must be "consul", not ${JSON.stringify(t.slice(0, 40))}`);
        break;
      }
      case "sourcename":
      case "destinationname": {
        const given = text(key, value);
        const expected = k === "sourcename" ? source : destination;
        if (given !== "" && given !== expected) throw new ConsulBadRequest(`${key} ${JSON.stringify(given.slice(0, 80))} differs from the query's ${k === "sourcename" ? "source" : "destination"} ${JSON.stringify(expected)}: the exact API names the pair in the query`);
        break;
      }
      case "sourcens":
      case "destinationns": {
        const ns = text(key, value);
        if (ns !== "" && ns !== DEFAULT_NAMESPACE) throw new ConsulBadRequest(`${key}: Cairn has the "default" namespace only, not ${JSON.stringify(ns.slice(0, 40))}`);
        break;
      }
      case "permissions":
        if (value !== null && !(Array.isArray(value) && value.length === 0)) throw new ConsulBadRequest("Permissions (L7 intentions) are not supported: give an Action for the whole service");
        break;
      case "meta":
        if (value !== null && !(isObject(value) && Object.keys(value).length === 0)) throw new ConsulBadRequest("Meta is not kept on intentions here: leave it out");
        break;
      default:
        throw new ConsulBadRequest(`Request decode failed: json: unknown field ${JSON.stringify(key.slice(0, 60))}`);
    }
  }
  if (action === undefined || action === "") throw new ConsulBadRequest('Action is required: "allow" or "deny"');
  return { action, description };
}

/** {Target, ClientCertURI, ClientCertSerial}, keys case-insensitive; missing ones are "". */
function decodeAuthorize(body: unknown): { target: string; clientCertUri: string } {
  if (body === undefined) throw new ConsulBadRequest('the body is required: {"Target": "<service>", "ClientCertURI": "spiffe://...", "ClientCertSerial": "..."}');
  if (!isObject(body)) throw new ConsulBadRequest('the body must be a JSON object such as {"Target": "db", "ClientCertURI": "spiffe://..."}');
  let target = "";
  let clientCertUri = "";
  for (const [key, value] of Object.entries(body)) {
    const k = fieldKey(key);
    if (k !== "target" && k !== "clientcerturi" && k !== "clientcertserial") throw new ConsulBadRequest(`Request decode failed: json: unknown field ${JSON.stringify(key.slice(0, 60))}`);
    if (value !== null && typeof value !== "string") throw new ConsulBadRequest(`${key} must be a string`);
    if (k === "target") target = value ?? "";
    if (k === "clientcerturi") clientCertUri = value ?? "";
  }
  return { target, clientCertUri };
}
