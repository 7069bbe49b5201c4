// The OpenAPI 3.0 document of the HTTP API, derived from the routes' own JSON schemas: the schemas
// that validate and serialize a route also describe it, so the document cannot drift from the code.

import type { FastifySchema } from "fastify";

declare module "fastify" {
  interface FastifySchema {
    /** One line describing the operation, for the OpenAPI document. */
    summary?: string;
    description?: string;
    /** Groups operations in the OpenAPI document (for example "consul"). */
    tags?: readonly string[];
  }
}

/** What onRoute hands over that matters here. */
export interface RouteInfo {
  readonly method: string | readonly string[];
  readonly url: string;
  readonly schema?: FastifySchema;
  /** The route's ACL rule as one line (set by src/api/acl/enforce.ts), shown as x-cairn-acl. */
  readonly config?: { readonly aclRule?: string };
}

type Schema = { readonly [key: string]: unknown };

interface Parameter {
  readonly name: string;
  readonly in: "path" | "query" | "header";
  readonly required: boolean;
  readonly description?: string;
  readonly schema: Schema;
}

interface Operation {
  readonly operationId: string;
  readonly summary?: string;
  readonly description?: string;
  readonly tags?: readonly string[];
  readonly parameters: Parameter[];
  readonly requestBody?: { readonly required: boolean; readonly content: { readonly "application/json": { readonly schema: Schema } } };
  readonly responses: Record<string, { readonly description: string; readonly content?: Readonly<Record<string, { readonly schema: Schema }>> }>;
  readonly "x-cairn-acl"?: string;
}

export interface OpenApiDocument {
  readonly openapi: "3.0.3";
  readonly info: { readonly title: string; readonly version: string };
  readonly paths: Record<string, Record<string, Operation>>;
}

/** Routes the document leaves out: fastify adds a HEAD route for every GET. */
const UNDOCUMENTED_METHODS = new Set(["HEAD"]);

/** Collects every route as it is registered (`app.addHook("onRoute", c.onRoute)`, before any route). */
export class OpenApiCollector {
  private readonly routes: RouteInfo[] = [];
  private cached: OpenApiDocument | undefined;

  readonly onRoute = (route: RouteInfo): void => {
    this.routes.push({ method: route.method, url: route.url, ...(route.schema === undefined ? {} : { schema: route.schema }),
      ...(route.config?.aclRule === undefined ? {} : { config: { aclRule: route.config.aclRule } }) });
    this.cached = undefined;
  };

  document(info: { title: string; version: string }): OpenApiDocument {
    if (this.cached !== undefined) return this.cached;
    const paths: Record<string, Record<string, Operation>> = {};
    for (const route of this.routes) {
      const methods = typeof route.method === "string" ? [route.method] : route.method;
      const path = openApiPath(route.url);
      for (const method of methods) {
        if (UNDOCUMENTED_METHODS.has(method.toUpperCase())) continue;
        const acl = route.config?.aclRule;
        (paths[path] ??= {})[method.toLowerCase()] = { ...operation(method, path, route.schema), ...(acl === undefined ? {} : { "x-cairn-acl": acl }) };
      }
    }
    this.cached = { openapi: "3.0.3", info, paths };
    return this.cached;
  }
}

/** fastify's `/a/:id` and `/a/*` as OpenAPI's `/a/{id}` and `/a/{wildcard}`; regex constraints dropped. */
export function openApiPath(url: string): string {
  return url
    .replace(/:([A-Za-z0-9_]+)(\([^)]*\))?/g, "{$1}")
    .replace(/\*$/, "{wildcard}");
}

function operation(method: string, path: string, schema: FastifySchema | undefined): Operation {
  const parameters: Parameter[] = [
    ...parametersOf(schema?.params, "path"),
    ...parametersOf(schema?.querystring, "query"),
    ...parametersOf(schema?.headers, "header"),
  ];
  // Path parameters the schema does not describe are still parameters.
  for (const m of path.matchAll(/\{([^}]+)\}/g)) {
    const name = m[1];
    if (!parameters.some((p) => p.in === "path" && p.name === name)) parameters.push({ name, in: "path", required: true, schema: { type: "string" } });
  }
  const body = asSchema(schema?.body);
  return {
    operationId: operationId(method, path),
    ...(schema?.summary === undefined ? {} : { summary: schema.summary }),
    ...(schema?.description === undefined ? {} : { description: schema.description }),
    ...(schema?.tags === undefined ? {} : { tags: schema.tags }),
    parameters,
    ...(body === undefined ? {} : { requestBody: { required: true, content: { "application/json": { schema: toOpenApiSchema(body) } } } }),
    responses: responsesOf(schema?.response),
  };
}

function operationId(method: string, path: string): string {
  const words = path.split(/[^A-Za-z0-9]+/).filter((w) => w !== "");
  return method.toLowerCase() + words.map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join("");
}

function asSchema(value: unknown): Schema | undefined {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Schema) : undefined;
}

function parametersOf(value: unknown, where: Parameter["in"]): Parameter[] {
  const schema = asSchema(value);
  const properties = asSchema(schema?.properties);
  if (properties === undefined) return [];
  const required = Array.isArray(schema?.required) ? (schema.required as unknown[]) : [];
  return Object.entries(properties).map(([name, prop]) => {
    const s = asSchema(prop) ?? {};
    const { description, ...rest } = s;
    return {
      name,
      in: where,
      required: where === "path" || required.includes(name),
      ...(typeof description === "string" ? { description } : {}),
      schema: toOpenApiSchema(rest),
    };
  });
}

function responsesOf(value: unknown): Operation["responses"] {
  const byStatus = asSchema(value);
  if (byStatus === undefined || Object.keys(byStatus).length === 0) return { "200": { description: "OK" } };
  const out: Operation["responses"] = {};
  for (const [status, raw] of Object.entries(byStatus)) {
    const s = asSchema(raw) ?? {};
    const key = /^[1-5]xx$/i.test(status) ? status.toUpperCase() : status;
    const description = typeof s.description === "string" ? s.description : "OK";
    // fastify's per-media-type form, { content: { "text/html": { schema } } }, as OpenAPI writes it too;
    // otherwise JSON, except a binary string, which is a file (GET /v1/snapshot answers one).
    const byMediaType = asSchema(s.content);
    const media = s.type === "string" && s.format === "binary" ? "application/octet-stream" : "application/json";
    const content = byMediaType === undefined
      ? { [media]: { schema: toOpenApiSchema(s) } }
      : Object.fromEntries(Object.entries(byMediaType).map(([mediaType, m]) => [mediaType, { schema: toOpenApiSchema(asSchema(asSchema(m)?.schema) ?? {}) }]));
    out[key] = { description, content };
  }
  return out;
}

/**
 * JSON Schema as OpenAPI 3.0's dialect: a type list with "null" becomes `nullable`, other type
 * lists become oneOf, `const` becomes a one-value enum, and keywords 3.0 lacks are dropped.
 */
export function toOpenApiSchema(schema: Schema): Schema {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    switch (key) {
      case "$id":
      case "$schema":
        break;
      case "type":
        if (Array.isArray(value)) {
          const types = (value as string[]).filter((t) => t !== "null");
          if (types.length !== value.length) out.nullable = true;
          if (types.length === 1) out.type = types[0];
          else out.oneOf = types.map((t) => ({ type: t }));
        } else {
          out.type = value;
        }
        break;
      case "const":
        out.enum = [value];
        break;
      case "properties": {
        const props: Record<string, Schema> = {};
        for (const [name, prop] of Object.entries(asSchema(value) ?? {})) props[name] = toOpenApiSchema(asSchema(prop) ?? {});
        out.properties = props;
        break;
      }
      case "items":
      case "additionalProperties":
      case "not": {
        const s = asSchema(value);
        out[key] = s === undefined ? value : toOpenApiSchema(s);
        break;
      }
      case "allOf":
      case "anyOf":
      case "oneOf":
        out[key] = Array.isArray(value) ? value.map((v) => toOpenApiSchema(asSchema(v) ?? {})) : value;
        break;
      default:
        out[key] = value;
    }
  }
  return out;
}
