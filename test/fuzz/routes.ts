// The HTTP routes to fuzz, read from the running node's own OpenAPI document, which is derived
// from the routes as fastify registers them: a route added to the server is fuzzed without an
// edit here.

import type { Schema } from "./schema.js";

export interface RouteParameter {
  readonly name: string;
  readonly in: "path" | "query" | "header";
  readonly required: boolean;
  readonly schema: Schema;
}

export interface Route {
  readonly method: string;
  /** OpenAPI's form: /v1/kv/{key}. */
  readonly path: string;
  readonly parameters: readonly RouteParameter[];
  readonly body: Schema | undefined;
  /** A blocking query (Consul's ?index=N&wait=D): may be held by design until something changes. */
  readonly blocking: boolean;
}

interface OpenApiOperation {
  readonly parameters?: readonly RouteParameter[];
  readonly requestBody?: { readonly content?: { readonly "application/json"?: { readonly schema?: Schema } } };
}

interface OpenApiDocument {
  readonly paths: Record<string, Record<string, OpenApiOperation>>;
}

function isDocument(value: unknown): value is OpenApiDocument {
  return value !== null && typeof value === "object" && "paths" in value && value.paths !== null && typeof value.paths === "object";
}

export function routesOf(doc: unknown): Route[] {
  if (!isDocument(doc)) throw new Error("the node's /v1/openapi.json has no paths object: is it a Cairn node?");
  const routes: Route[] = [];
  for (const [path, operations] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(operations)) {
      const parameters = op.parameters ?? [];
      routes.push({
        method: method.toUpperCase(),
        path,
        parameters,
        body: op.requestBody?.content?.["application/json"]?.schema,
        blocking: parameters.some((p) => p.in === "query" && p.name === "index"),
      });
    }
  }
  if (routes.length === 0) throw new Error("the node's OpenAPI document lists no routes");
  return routes.sort((a, b) => `${a.path} ${a.method}`.localeCompare(`${b.path} ${b.method}`));
}

export async function fetchRoutes(baseUrl: string, headers: Record<string, string>): Promise<Route[]> {
  const res = await fetch(`${baseUrl}/v1/openapi.json`, { headers });
  if (!res.ok) throw new Error(`GET ${baseUrl}/v1/openapi.json answered ${res.status}: the fuzzer enumerates routes from it`);
  return routesOf(await res.json());
}

/** Whether the node serves `method path` (for parts of the fuzzer that need a route another change adds). */
export function hasRoute(routes: readonly Route[], method: string, path: string): boolean {
  return routes.some((r) => r.method === method && r.path === path);
}
