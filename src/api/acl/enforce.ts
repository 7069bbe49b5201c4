// ACL enforcement on every HTTP route. Each route declares, next to itself, the rule it needs in
// its fastify config (`config: { acl: ... }`); one preHandler hook resolves the presented token
// and applies that rule. A route registered without a rule is refused at start-up, so no route can
// be left open by forgetting.
//
// The hook runs after the body is parsed and validated (a malformed request is a 400 before it
// is a 403, as in Consul), because some rules name what the body names (a registration's service).

import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AclNotFoundError, type AclService, type ResolvedToken, type TokenRecheck } from "../../acl/acl.js";
import { presentedToken } from "../../acl/presented.js";
import { type Access, type NamedResource, Permissions, type Resource } from "../../acl/rules.js";

/** What a route needs from the token a request presents. */
export type RouteAcl =
  /** Anyone, with or without a token: the reason says why (Consul leaves it open too, or it holds nothing secret). */
  | { readonly open: string }
  /**
   * `access` to `need`; for service, node and key, on the name `name` gives. `name` may read the
   * request (params, body, or the state). Undefined means the request names nothing that exists:
   * the handler answers it (404 or 400), as it would without ACLs.
   */
  | { readonly need: Resource; readonly access: Access; readonly name?: (req: FastifyRequest) => string | undefined | Promise<string | undefined> }
  /** A read whose handler shows only what the token may read of `filtered` (see permissionsOf and markFiltered). */
  | { readonly filtered: NamedResource }
  /** Any token that exists, anonymous included: the route answers about the token itself. */
  | { readonly self: true }
  /** Any token that exists; what it may get is decided further in, by `checkedBy` (the CA authorizer). */
  | { readonly checkedBy: string };

declare module "fastify" {
  interface FastifyContextConfig {
    acl?: RouteAcl;
    /** The rule as one line, for the OpenAPI document (set by the ACL hook). */
    aclRule?: string;
  }
  interface FastifyRequest {
    /** The resolved token; set by the ACL hook before any handler runs. */
    aclToken?: ResolvedToken;
  }
  interface FastifyInstance {
    /** The node's ACLs, for routes that keep a token past the request (holdRequestToken). */
    aclService: AclService;
  }
}

/** Why a stream ends when its token is deleted while it is open; Consul's wording for an unknown token. */
export const STREAM_TOKEN_DELETED = "ACL not found: the token this stream was opened with has been deleted; open it again with a valid token";

/**
 * Ties a stream answered to `req` to the token the request presented: `recheck` hears the token
 * again after each ACL change that touches it (see AclService.holdToken). Call the returned
 * release when the stream ends.
 */
export function holdRequestToken(req: FastifyRequest, recheck: TokenRecheck): () => void {
  return req.server.aclService.holdToken(presentedToken(req.headers), recheck);
}

/** Consul's header on a list that the token's rules shortened. */
export const FILTERED_HEADER = "X-Consul-Results-Filtered-By-ACLs";

/** Paths answered in Consul's style (text/plain errors); the rest answer {error} JSON, as Cairn's native API does. */
const CONSUL_PATHS = /^\/v1\/(agent|catalog|health|acl|connect|status)\//;

export function describeRouteAcl(rule: RouteAcl): string {
  if ("open" in rule) return `open: ${rule.open}`;
  if ("filtered" in rule) return `filtered: shows only what ${rule.filtered}:read allows`;
  if ("self" in rule) return "any token: answers about the token itself";
  if ("checkedBy" in rule) return `any token; then ${rule.checkedBy}`;
  return `${rule.need}:${rule.access}${rule.name === undefined ? "" : " on the name the request gives"}`;
}

/**
 * The AccessorID of the token a request presented, for audit logs and rate limits: the anonymous
 * token's for none, undefined when ACLs are off or the route is open.
 */
export function accessorOf(req: FastifyRequest): string | undefined {
  return req.aclToken?.accessorId;
}

/** What the request's token may do; everything when ACLs are off. */
export function permissionsOf(req: FastifyRequest): Permissions {
  return req.aclToken?.permissions ?? Permissions.allowAll();
}

/** Sets Consul's header saying the answer left out what the token may not read. */
export function markFiltered(reply: FastifyReply): void {
  void reply.header(FILTERED_HEADER, "true");
}

/** The 403 body, in Consul's words: "Permission denied: token with AccessorID '...' lacks permission 'service:write' on \"web\"". */
export function permissionDenied(accessorId: string | undefined, resource: Resource, access: Access, name?: string): string {
  const on = name === undefined ? "" : ` on ${JSON.stringify(name)}`;
  return `Permission denied: token with AccessorID '${accessorId ?? ""}' lacks permission '${resource}:${access}'${on}`;
}

export function sendDenied(req: FastifyRequest, reply: FastifyReply, message: string): FastifyReply {
  if (CONSUL_PATHS.test(req.url)) return reply.code(403).type("text/plain; charset=utf-8").send(message);
  return reply.code(403).send({ error: message });
}

/** Installs the hooks. Call before any route is registered. */
export function installAcl(app: FastifyInstance, acl: AclService): void {
  app.decorate("aclService", acl);
  app.decorateRequest("aclToken", undefined);
  app.addHook("onRoute", (route) => {
    const rule = route.config?.acl;
    if (rule === undefined) {
      // A bug, caught at start-up: every route must say what it needs.
      throw new Error(`route ${String(route.method)} ${route.url} declares no ACL rule: give it config: { acl: ... } (see src/api/acl/enforce.ts)`);
    }
    route.config = { ...route.config, aclRule: describeRouteAcl(rule) };
  });
  app.addHook("preHandler", async (req, reply) => {
    const rule = req.routeOptions.config.acl;
    // fastify's own 404 handler has no rule: it answers nothing but that the route does not exist.
    if (rule === undefined || "open" in rule || !acl.enabled) return;
    let token: ResolvedToken;
    try {
      token = acl.resolve(presentedToken(req.headers));
    } catch (err) {
      if (err instanceof AclNotFoundError) return sendDenied(req, reply, err.message);
      throw err;
    }
    req.aclToken = token;
    if (!("need" in rule)) return;
    const name = rule.name === undefined ? undefined : await rule.name(req);
    if (rule.name !== undefined && name === undefined) return;
    if (!token.permissions.allows(rule.need, rule.access, name)) return sendDenied(req, reply, permissionDenied(token.accessorId, rule.need, rule.access, name));
  });
}
