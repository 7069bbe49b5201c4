// Random and mutated HTTP requests for every route: the route's method or another, its path with
// valid, known or hostile parameters, its query, headers with and without tokens, and bodies built
// from the route's schema and then mutated, or random bytes, or the wrong content type.

import fc from "fast-check";
import type { FuzzRequest } from "./http_client.js";
import type { Route, RouteParameter } from "./routes.js";
import { edgeValues, type Json, mutated, valueOf } from "./schema.js";

/** What the generators need to know about the node: tokens, and names that exist there. */
export interface CaseContext {
  readonly routes: readonly Route[];
  /** A token that may do anything (ACL management), when ACLs are on. */
  readonly managementToken: string | undefined;
  /** The node's HTTP body limit: huge bodies are made just within it and just past it. */
  readonly bodyBytesMax: number;
}

export interface HttpCase {
  readonly route: Route;
  readonly request: FuzzRequest;
  /** How the body was made, for reports and statistics. */
  readonly bodyKind: string;
}

const OTHER_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "X-FUZZ"] as const;

/** Names that exist on a fuzzed node, or that the fuzzer's own valid requests create. */
const KNOWN_NAMES = ["web", "api", "w1", "web-1", "service:w1", "service:web-1", "n1", "n2", "n9", "fuzz", "a", "default"] as const;

/** Characters node:http puts on the wire as they are in a path: 0x21 to 0xff. */
const rawPathChar = fc.integer({ min: 0x21, max: 0xff }).map((c) => String.fromCharCode(c));

const hostileSegment: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: rawPathChar, maxLength: 24 }),
  fc.string({ unit: "grapheme", maxLength: 24 }).map(encodeURIComponent),
  fc.constantFrom("..", ".", "%2e%2e", "%2F", "%00", "%ZZ", "%", "%C0%AF", "%ED%A0%80", "%FF", "~", "*", "?", "#", ":id", "{id}", ""),
  fc.integer({ min: 1, max: 20_000 }).map((n) => "x".repeat(n)),
);

function paramValue(p: RouteParameter): fc.Arbitrary<string> {
  const fromSchema = valueOf(p.schema, p.name).map((v) => (typeof v === "string" ? v : JSON.stringify(v)));
  return fc.oneof(
    { weight: 3, arbitrary: fromSchema.map(encodeURIComponent) },
    { weight: 3, arbitrary: fc.constantFrom(...KNOWN_NAMES) },
    { weight: 2, arbitrary: hostileSegment },
  );
}

function pathOf(route: Route): fc.Arbitrary<string> {
  const pathParams = route.parameters.filter((p) => p.in === "path");
  const values = fc.tuple(...pathParams.map(paramValue));
  const filled = values.map((vs) => {
    let path = route.path;
    pathParams.forEach((p, i) => { path = path.replace(`{${p.name}}`, vs[i]); });
    return path;
  });
  return fc.oneof(
    { weight: 8, arbitrary: filled },
    { weight: 1, arbitrary: fc.tuple(filled, hostileSegment).map(([p, s]) => `${p}/${s}`) },
    { weight: 1, arbitrary: filled.chain((p) => fc.constantFrom(`${p}/`, `/${p}`, p.replace("/v1/", "/v1//"), p.toUpperCase(), `${p}%20`, p.replace("/v1/", "/v2/"))) },
  );
}

function queryOf(route: Route): fc.Arbitrary<string> {
  const known = route.parameters.filter((p) => p.in === "query");
  const knownPairs = known.map((p) => fc.tuple(fc.constant(p.name), fc.oneof(paramValue(p), fc.constant(""))));
  const blockingPair = fc.tuple(fc.constantFrom("index", "wait"), fc.constantFrom("1", "0", "99999999", "-1", "1ms", "10ms", "abc", "1e3"));
  const randomPair = fc.tuple(fc.oneof(fc.constantFrom("stale", "consistent", "dc", "filter", "ns", "token", "pretty", "__proto__"), hostileSegment), hostileSegment);
  const pair = knownPairs.length === 0 ? fc.oneof(randomPair, blockingPair) : fc.oneof({ weight: 4, arbitrary: fc.oneof(...knownPairs) }, { weight: 1, arbitrary: randomPair }, { weight: 1, arbitrary: blockingPair });
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant("") },
    { weight: 6, arbitrary: fc.array(pair, { maxLength: 5 }).map((pairs) => (pairs.length === 0 ? "" : `?${pairs.map(([k, v]) => (v === "" ? k : `${k}=${v}`)).join("&")}`)) },
    { weight: 1, arbitrary: fc.constantFrom("?", "?&&", "?=", "?a=1&a=2&a=3", `?${"a=1&".repeat(2000)}`, "?%", "?x=%ZZ") },
  );
}

/** Header values node:http accepts: tab, 0x20-0x7e, 0x80-0xff. */
const headerChar = fc.oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.integer({ min: 0x80, max: 0xff }), fc.constant(0x09)).map((c) => String.fromCharCode(c));
const headerValue = fc.string({ unit: headerChar, maxLength: 64 });

function tokenHeaders(ctx: CaseContext): fc.Arbitrary<Record<string, string>> {
  const randomToken = fc.oneof(fc.uuid(), headerValue, fc.constantFrom("", "anonymous", "root", "00000000-0000-0000-0000-000000000000"));
  const management = ctx.managementToken === undefined ? [] : [{ weight: 6, arbitrary: fc.constantFrom<Record<string, string>>(
    { "x-consul-token": ctx.managementToken },
    { authorization: `Bearer ${ctx.managementToken}` },
  ) }];
  return fc.oneof<fc.WeightedArbitrary<Record<string, string>>[]>(
    ...management,
    { weight: 2, arbitrary: fc.constant({}) },
    { weight: 1, arbitrary: randomToken.map((t) => ({ "x-consul-token": t })) },
    { weight: 1, arbitrary: randomToken.map((t) => ({ authorization: `Bearer ${t}` })) },
    { weight: 1, arbitrary: fc.tuple(randomToken, randomToken).map(([a, b]) => ({ "x-consul-token": a, authorization: `Bearer ${b}` })) },
    { weight: 1, arbitrary: fc.constantFrom<Record<string, string>>({ authorization: "Bearer" }, { authorization: "Basic dXNlcjpwYXNz" }, { authorization: "bearer  x" }, { authorization: "Bearer ".repeat(500) }) },
  );
}

const CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=utf-16", "application/octet-stream", "application/x-pem-file", "application/merge-patch+json", "", "*/*", ";;;"] as const;

const otherHeaders: fc.Arbitrary<Record<string, string>> = fc.dictionary(
  fc.oneof(fc.constantFrom("accept", "accept-encoding", "x-forwarded-for", "x-request-id", "if-none-match", "range", "origin", "cookie", "x-consul-namespace", "last-event-id"), fc.stringMatching(/^x-[a-z0-9-]{1,20}$/)),
  fc.oneof(headerValue, fc.integer({ min: 1, max: 8000 }).map((n) => "v".repeat(n))),
  { maxKeys: 3 },
);

interface BodyChoice {
  readonly kind: string;
  readonly bytes: Buffer | undefined;
  readonly contentType: string | undefined;
}

function jsonBody(kind: string, v: Json): BodyChoice {
  return { kind, bytes: Buffer.from(JSON.stringify(v)), contentType: "application/json" };
}

function bodyOf(route: Route, ctx: CaseContext): fc.Arbitrary<BodyChoice> {
  const huge = fc.constantFrom(ctx.bodyBytesMax - 64, ctx.bodyBytesMax + 1).map((n) => jsonBody(`huge ${n}`, { value: edgeValues.hugeString(n) }));
  const deep = fc.integer({ min: 100, max: 100_000 }).chain((depth) => fc.constantFrom(
    { kind: `deep array ${depth}`, bytes: Buffer.from(edgeValues.deepArrayText(depth)), contentType: "application/json" },
    { kind: `deep object ${depth}`, bytes: Buffer.from(edgeValues.deepObjectText(depth)), contentType: "application/json" },
  ));
  const randomBytes = fc.uint8Array({ maxLength: 512 }).map((b): BodyChoice => ({ kind: "random bytes", bytes: Buffer.from(b), contentType: undefined }));
  const randomJson = fc.jsonValue({ maxDepth: 3 }).map((v) => jsonBody("random json", v as Json));
  const empty = fc.constantFrom<BodyChoice>(
    { kind: "no body", bytes: undefined, contentType: undefined },
    { kind: "empty json body", bytes: Buffer.alloc(0), contentType: "application/json" },
    { kind: "json null", bytes: Buffer.from("null"), contentType: "application/json" },
    { kind: "truncated json", bytes: Buffer.from('{"name":"web"'), contentType: "application/json" },
    { kind: "bom json", bytes: Buffer.from('\ufeff{"name":"web"}'), contentType: "application/json" },
    { kind: "duplicate keys", bytes: Buffer.from('{"name":"web","name":{"x":1}}'), contentType: "application/json" },
  );
  if (route.body === undefined) {
    return fc.oneof({ weight: 12, arbitrary: fc.constant<BodyChoice>({ kind: "no body", bytes: undefined, contentType: undefined }) }, randomJson, randomBytes, empty, { weight: 1, arbitrary: huge });
  }
  const valid = valueOf(route.body);
  return fc.oneof(
    { weight: 8, arbitrary: valid.map((v) => jsonBody("valid", v)) },
    { weight: 8, arbitrary: valid.chain(mutated).map((v) => jsonBody("mutated", v)) },
    { weight: 1, arbitrary: randomJson },
    { weight: 1, arbitrary: randomBytes },
    { weight: 1, arbitrary: empty },
    { weight: 1, arbitrary: deep },
    { weight: 1, arbitrary: huge },
  );
}

function caseFor(route: Route, ctx: CaseContext): fc.Arbitrary<HttpCase> {
  const method = fc.oneof({ weight: 9, arbitrary: fc.constant(route.method) }, { weight: 1, arbitrary: fc.constantFrom(...OTHER_METHODS) });
  const contentType = fc.oneof({ weight: 6, arbitrary: fc.constant<string | undefined>(undefined) }, { weight: 1, arbitrary: fc.constantFrom(...CONTENT_TYPES) });
  return fc.record({ method, path: pathOf(route), query: queryOf(route), tokens: tokenHeaders(ctx), others: otherHeaders, body: bodyOf(route, ctx), contentType })
    .map(({ method: m, path, query, tokens, others, body, contentType: ct }) => {
      const type = ct ?? body.contentType;
      return {
        route,
        bodyKind: body.kind,
        request: {
          method: m,
          path: `${path}${query}`,
          headers: { ...others, ...tokens, ...(type === undefined ? {} : { "content-type": type }) },
          body: body.bytes,
        },
      };
    });
}

/**
 * Routes whose accepted requests grow the state for good: every rotation or import keeps the
 * replaced root until its leaves expire (up to a day), so they are drawn far less often than
 * the others, in weight per 100 (an ordinary route weighs 100).
 */
const RARE_ROUTES: Readonly<Record<string, number>> = { "POST /v1/ca/rotate": 5, "POST /v1/ca/import": 20 };
const ROUTE_WEIGHT = 100;

/** A request for any one of the node's routes, each route as likely as another except the rare ones. */
export function httpCases(ctx: CaseContext): fc.Arbitrary<HttpCase> {
  return fc.oneof(...ctx.routes.map((r) => ({ weight: RARE_ROUTES[`${r.method} ${r.path}`] ?? ROUTE_WEIGHT, arbitrary: caseFor(r, ctx) })));
}
