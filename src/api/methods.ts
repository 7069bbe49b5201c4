// Which methods each path accepts, so that a known path asked with the wrong method is answered
// 405 with Allow (as Consul does), and only an unknown path 404. One table, filled from fastify's
// onRoute hook as routes register, consulted by the not-found handler: a route added anywhere is
// covered without being listed here.

import type { FastifyReply, FastifyRequest } from "fastify";

interface RouteMethodsEntry {
  readonly pattern: RegExp;
  readonly methods: Set<string>;
}

/** Longest path looked up; a longer one is no route's (the header limit bounds it anyway). */
const PATH_BYTES_MAX = 8 * 1024;

export class RouteMethods {
  private readonly byUrl = new Map<string, RouteMethodsEntry>();

  /** Add as fastify's onRoute hook, before any route registers. */
  readonly onRoute = (route: { readonly method: string | readonly string[]; readonly url: string }): void => {
    const entry = this.byUrl.get(route.url) ?? { pattern: routePattern(route.url), methods: new Set<string>() };
    for (const method of typeof route.method === "string" ? [route.method] : route.method) entry.methods.add(method.toUpperCase());
    this.byUrl.set(route.url, entry);
  };

  /** The methods some route accepts on `path` (no query string), sorted; empty when no route has the path. */
  allowed(path: string): string[] {
    if (path.length > PATH_BYTES_MAX) return [];
    const methods = new Set<string>();
    for (const entry of this.byUrl.values()) {
      if (!entry.pattern.test(path)) continue;
      for (const m of entry.methods) methods.add(m);
    }
    // fastify answers HEAD wherever it answers GET.
    if (methods.has("GET")) methods.add("HEAD");
    return [...methods].sort();
  }

  /** fastify's not-found handler: 405 with Allow for a known path, 404 for an unknown one. */
  readonly notFound = (req: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const path = pathOf(req.url);
    const allowed = this.allowed(path);
    const shown = path.slice(0, 200);
    if (allowed.length === 0) {
      return reply.code(404).send({ error: `no route ${req.method} ${shown}; the routes are listed at /v1/openapi.json` });
    }
    return reply.code(405).header("allow", allowed.join(", "))
      .send({ error: `${req.method} is not allowed on ${shown}; it accepts ${allowed.join(", ")}` });
  };
}

function pathOf(url: string): string {
  const q = url.indexOf("?");
  return q < 0 ? url : url.slice(0, q);
}

/**
 * A fastify route URL as a regular expression over request paths, as find-my-way matches them: a
 * `:param` is one non-empty segment (a constraint in parentheses is dropped, so such a route's
 * path is matched a little more widely), and a trailing `*` is anything.
 */
export function routePattern(url: string): RegExp {
  let source = "";
  for (const part of url.split(/(:[A-Za-z0-9_]+(?:\([^)]*\))?|\*$)/)) {
    if (part === "") continue;
    if (part === "*") source += ".*";
    else if (part.startsWith(":")) source += "[^/]+";
    else source += part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${source}$`);
}
