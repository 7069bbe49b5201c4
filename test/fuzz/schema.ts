// JSON values from a route's own JSON schema (as the OpenAPI document carries it), and mutations
// of them: a valid body reaches the handler, a mutated one probes the validation in front of it.

import fc from "fast-check";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Schema = { readonly [key: string]: unknown };

/** Bounds on what a generated value may hold, so one case stays small enough to send thousands of. */
export const schemaBounds = {
  /** Strings longer than this are cut, whatever maxLength allows (a mutation makes the huge ones). */
  stringLengthMax: 80,
  arrayItemsMax: 4,
  /** Deeper than this a schema-free value is a leaf. */
  depthMax: 4,
} as const;

/**
 * Values a field name suggests, so valid bodies reach the handler's own checks rather than
 * bounce off a pattern: durations, addresses, health states.
 */
const NAMED_STRING_SEEDS: Readonly<Record<string, readonly string[]>> = {
  ttl: ["10s", "1s", "90m", "1h", "0s", "-1s", "25h", "1e9h", "1.5h", "10", ""],
  interval: ["10s", "1s", "0s", "100ms", "1ns"],
  timeout: ["1s", "100ms", "0s"],
  deregisterCriticalAfter: ["1m", "90s", "0s"],
  wait: ["1ms", "10ms", "0s", "", "1h", "x"],
  http: ["http://127.0.0.1:1/health", "https://[::1]:1/", "ftp://x", "not a url"],
  tcp: ["127.0.0.1:1", "[::1]:1", "localhost", ":"],
  grpc: ["127.0.0.1:1", "127.0.0.1:1/svc", ""],
  address: ["10.0.0.1", "::1", "", "host.example"],
  peerAddress: ["127.0.0.1:1", "10.0.0.1:65535", "a:0"],
  keyType: ["ec-p256", "rsa-2048", "ed25519"],
};

function stringFor(schema: Schema, name: string | undefined): fc.Arbitrary<string> {
  const minLength = typeof schema.minLength === "number" ? schema.minLength : 0;
  const maxLength = Math.max(minLength, Math.min(typeof schema.maxLength === "number" ? schema.maxLength : schemaBounds.stringLengthMax, schemaBounds.stringLengthMax));
  const free = fc.string({ minLength, maxLength, unit: "grapheme" });
  const patterned = typeof schema.pattern === "string" ? fc.stringMatching(new RegExp(schema.pattern)).filter((s) => s.length <= maxLength && s.length >= minLength) : undefined;
  const seeds = name === undefined ? undefined : NAMED_STRING_SEEDS[name];
  const choices: fc.Arbitrary<string>[] = [patterned ?? free];
  if (seeds !== undefined) choices.push(fc.constantFrom(...seeds));
  if (patterned === undefined) choices.push(fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/));
  return fc.oneof(...choices);
}

function numberFor(schema: Schema, integer: boolean): fc.Arbitrary<number> {
  const min = typeof schema.minimum === "number" ? schema.minimum : -1e6;
  const max = typeof schema.maximum === "number" ? schema.maximum : 1e6;
  return integer ? fc.integer({ min: Math.ceil(min), max: Math.floor(max) }) : fc.double({ min, max, noNaN: true });
}

/** A value that satisfies `schema` (as far as the keywords used by Cairn's routes go). */
export function valueOf(schema: Schema, name?: string, depth = 0): fc.Arbitrary<Json> {
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return fc.constantFrom(...(schema.enum as Json[]));
  if ("const" in schema) return fc.constant(schema.const as Json);
  for (const key of ["oneOf", "anyOf"] as const) {
    const options = schema[key];
    if (Array.isArray(options) && options.length > 0) return fc.oneof(...options.map((o) => valueOf(o as Schema, name, depth)));
  }
  const type = schema.type;
  const nullable = schema.nullable === true || (Array.isArray(type) && type.includes("null"));
  const types = (Array.isArray(type) ? type : type === undefined ? [] : [type]).filter((t): t is string => typeof t === "string" && t !== "null");
  const arbs = types.map((t) => valueOfType(schema, t, name, depth));
  if (arbs.length === 0) arbs.push(anyJson(depth));
  if (nullable) arbs.push(fc.constant(null));
  return arbs.length === 1 ? arbs[0] : fc.oneof(...arbs);
}

function valueOfType(schema: Schema, type: string, name: string | undefined, depth: number): fc.Arbitrary<Json> {
  switch (type) {
    case "string": return stringFor(schema, name);
    case "integer": return numberFor(schema, true);
    case "number": return numberFor(schema, false);
    case "boolean": return fc.boolean();
    case "array": {
      const items = (schema.items ?? {}) as Schema;
      const maxItems = Math.min(typeof schema.maxItems === "number" ? schema.maxItems : schemaBounds.arrayItemsMax, schemaBounds.arrayItemsMax);
      const minItems = Math.min(typeof schema.minItems === "number" ? schema.minItems : 0, maxItems);
      return fc.array(valueOf(items, name, depth + 1), { minLength: minItems, maxLength: maxItems });
    }
    case "object": return objectOf(schema, depth);
    default: return anyJson(depth);
  }
}

function objectOf(schema: Schema, depth: number): fc.Arbitrary<Json> {
  const properties = (schema.properties ?? {}) as Record<string, Schema>;
  const required = Array.isArray(schema.required) ? (schema.required as string[]) : [];
  const names = Object.keys(properties);
  const extra = schema.additionalProperties;
  const extraValues = extra !== null && typeof extra === "object" ? extra as Schema : undefined;
  if (names.length === 0 && extraValues !== undefined) {
    return fc.dictionary(fc.stringMatching(/^[A-Za-z][A-Za-z0-9_-]{0,15}$/), valueOf(extraValues, undefined, depth + 1), { maxKeys: schemaBounds.arrayItemsMax });
  }
  if (names.length === 0) return depth >= schemaBounds.depthMax ? fc.constant({}) : fc.dictionary(fc.string({ maxLength: 8 }), anyJson(depth + 1), { maxKeys: 3 });
  const model: Record<string, fc.Arbitrary<Json>> = {};
  for (const n of names) model[n] = valueOf(properties[n], n, depth + 1);
  return fc.record(model, { requiredKeys: required.filter((r) => names.includes(r)) });
}

/** Any JSON value, small. */
export function anyJson(depth = 0): fc.Arbitrary<Json> {
  return fc.jsonValue({ maxDepth: Math.max(0, schemaBounds.depthMax - depth) }) as fc.Arbitrary<Json>;
}

// ---------------------------------------------------------------- mutations

/** A value of another JSON type than the one given. */
const otherType = (v: Json): fc.Arbitrary<Json> => fc.constantFrom<Json>(
  ...([null, true, 0, -1, 1.5, 2 ** 53, -(2 ** 63), "", "x", [], {}, [null], { "": null }] as Json[]).filter((x) => typeof x !== typeof v || Array.isArray(x) !== Array.isArray(v)),
);

/** Paths to every node of a JSON value, the root first. */
function pathsOf(v: Json, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => pathsOf(x, [...at, i], out));
  else if (v !== null && typeof v === "object") for (const [k, x] of Object.entries(v)) pathsOf(x, [...at, k], out);
  return out;
}

function replaceAt(root: Json, path: readonly (string | number)[], value: Json | undefined): Json {
  if (path.length === 0) return value ?? null;
  const [head, ...rest] = path;
  if (Array.isArray(root)) {
    const copy = [...root];
    const next = replaceAt(copy[head as number], rest, value);
    if (rest.length === 0 && value === undefined) copy.splice(head as number, 1);
    else copy[head as number] = next;
    return copy;
  }
  if (root !== null && typeof root === "object") {
    const copy = { ...root };
    if (rest.length === 0 && value === undefined) delete copy[head];
    else copy[head] = replaceAt(copy[head], rest, value);
    return copy;
  }
  return root;
}

function getAt(root: Json, path: readonly (string | number)[]): Json {
  let v: Json = root;
  for (const p of path) v = Array.isArray(v) ? v[p as number] : v !== null && typeof v === "object" ? v[p] : null;
  return v;
}

/** Values at the edges of what JSON parsers and validators handle. */
export const edgeValues = {
  /** The body limit is 1 MiB; a string this long sits just within it. */
  hugeString: (bytes: number): string => "a".repeat(bytes),
  /** `depth` nested arrays: a parser or validator that recurses may run out of stack. */
  deepArrayText: (depth: number): string => "[".repeat(depth) + "]".repeat(depth),
  deepObjectText: (depth: number): string => '{"a":'.repeat(depth) + "1" + "}".repeat(depth),
};

/** One change to a JSON value: a field dropped, added, retyped, or made huge. */
export function mutated(value: Json): fc.Arbitrary<Json> {
  const paths = pathsOf(value);
  const pathArb = fc.constantFrom(...paths);
  const inner = paths.filter((p) => p.length > 0);
  const dropped = inner.length === 0 ? [] : [fc.constantFrom(...inner).map((p) => replaceAt(value, p, undefined))];
  return fc.oneof(
    pathArb.chain((p) => otherType(getAt(value, p)).map((x) => replaceAt(value, p, x))),
    ...dropped,
    pathArb.chain((p) => fc.tuple(fc.string({ maxLength: 12 }), anyJson(2)).map(([k, x]) => {
      const node = getAt(value, p);
      if (node !== null && typeof node === "object" && !Array.isArray(node)) return replaceAt(value, p, { ...node, [k]: x });
      if (Array.isArray(node)) return replaceAt(value, p, [...node, x]);
      return replaceAt(value, p, { [k]: x });
    })),
    pathArb.chain((p) => fc.integer({ min: 1, max: 900_000 }).map((n) => replaceAt(value, p, edgeValues.hugeString(n)))),
    pathArb.chain((p) => fc.integer({ min: 1, max: 2000 }).map((n) => replaceAt(value, p, Array.from({ length: n }, () => "x")))),
    pathArb.chain((p) => fc.constantFrom<Json>("\u0000", "\ud800", "💥".repeat(50), "../../etc/passwd", "%00", "${x}", "<script>", "a\nb", " ", "__proto__", "constructor")
      .map((s) => replaceAt(value, p, s))),
    pathArb.map((p) => replaceAt(value, p, JSON.parse('{"__proto__":{"polluted":true}}') as Json)),
  );
}
