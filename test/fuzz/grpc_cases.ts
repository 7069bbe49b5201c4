// Random and mutated protobuf messages and metadata for every public gRPC method: the services
// in Cairn's proto/ directory (the trust bundle, the registry watch, the SPIFFE Workload API),
// the standard health check, and Envoy's ADS. Messages are built from each method's request type
// with protobufjs, field by field, then encoded and sometimes mutated at the byte level.

import { readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import protobuf from "protobufjs";
import { loadXdsProtos } from "../../src/api/xds/protos.js";
import { ADS_SERVICE_NAME } from "../../src/api/xds/service.js";

export interface GrpcMethod {
  /** /package.Service/Method */
  readonly path: string;
  readonly requestType: protobuf.Type;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  /** Served on the Workload API's Unix socket rather than the public port. */
  readonly workloadSocket: boolean;
}

const WORKLOAD_SERVICE = "SpiffeWorkloadAPI";
const protoDir = fileURLToPath(new URL("../../../proto/", import.meta.url));

/** The standard health check's request: `string service = 1`. */
const HEALTH_PROTO = `syntax = "proto3"; package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse { int32 status = 1; }
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }`;

function protoFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".proto")).map((f) => join(dir, f)).sort();
}

function methodsOf(root: protobuf.Root, only?: string): GrpcMethod[] {
  const out: GrpcMethod[] = [];
  const visit = (ns: protobuf.NamespaceBase): void => {
    for (const nested of ns.nestedArray) {
      if (nested instanceof protobuf.Service) {
        const full = nested.fullName.replace(/^\./, "");
        if (only !== undefined && full !== only) continue;
        for (const m of nested.methodsArray) {
          m.resolve();
          out.push({
            path: `/${full}/${m.name}`,
            requestType: m.resolvedRequestType as protobuf.Type,
            requestStream: m.requestStream === true,
            responseStream: m.responseStream === true,
            workloadSocket: nested.name === WORKLOAD_SERVICE,
          });
        }
      } else if (nested instanceof protobuf.Namespace) {
        visit(nested);
      }
    }
  };
  visit(root);
  return out;
}

/**
 * Every public method: each service of every file in proto/ (so a new .proto service is fuzzed
 * without an edit here), the health check, and ADS from Envoy's protos.
 */
export async function grpcMethods(): Promise<GrpcMethod[]> {
  const cairn = new protobuf.Root();
  cairn.loadSync(protoFiles(protoDir), { keepCase: true });
  cairn.resolveAll();
  const health = protobuf.parse(HEALTH_PROTO, { keepCase: true }).root;
  const xds = await loadXdsProtos();
  const ads = methodsOf(xds.DiscoveryRequest.root, ADS_SERVICE_NAME);
  if (ads.length === 0) throw new Error(`Envoy's protos define no ${ADS_SERVICE_NAME}: did @grpc/grpc-js-xds change its layout?`);
  return [...methodsOf(cairn), ...methodsOf(health), ...ads].sort((a, b) => a.path.localeCompare(b.path));
}

// ---------------------------------------------------------------- messages

/** Strings a field's name suggests, so valid requests get past the first check. */
const STRING_SEEDS: Readonly<Record<string, readonly string[]>> = {
  type_url: [
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/x", "",
  ],
  resource_names: ["web", "api", "*", "", "xdstp://x/y", "web.default"],
  resource_names_subscribe: ["web", "api", "*", ""],
  resource_names_unsubscribe: ["web", "*"],
  services: ["web", "api", "", "*"],
  service: ["", "web", "grpc.health.v1.Health"],
  version_info: ["", "1", "0", "999999999999"],
  response_nonce: ["", "1", "0", "nonce"],
  audience: ["web", ""],
  spiffe_id: ["spiffe://cairn.local/ns/default/svc/web", "", "spiffe://x"],
  svid: ["", "a.b.c", "eyJhbGciOiJub25lIn0.e30."],
  id: ["fuzz-node", "", "sidecar~10.0.0.1~web~default"],
  cluster: ["web", ""],
};

const MESSAGE_DEPTH_MAX = 3;
const REPEATED_MAX = 3;

function scalarOf(field: protobuf.Field): fc.Arbitrary<unknown> {
  const seeds = STRING_SEEDS[field.name];
  switch (field.type) {
    case "string":
      return seeds === undefined ? fc.string({ maxLength: 40 }) : fc.oneof(fc.constantFrom(...seeds), fc.string({ maxLength: 40 }));
    case "bytes": return fc.uint8Array({ maxLength: 64 });
    case "bool": return fc.boolean();
    case "double": case "float": return fc.double();
    case "int32": case "sint32": case "sfixed32": return fc.integer();
    case "uint32": case "fixed32": return fc.integer({ min: 0, max: 0xffffffff });
    case "int64": case "sint64": case "sfixed64": return fc.oneof(fc.integer(), fc.constantFrom(Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 0));
    case "uint64": case "fixed64": return fc.oneof(fc.nat(), fc.constantFrom(0, 1, Number.MAX_SAFE_INTEGER, 2 ** 32));
    default: return fc.constant(undefined);
  }
}

function fieldValue(field: protobuf.Field, depth: number): fc.Arbitrary<unknown> {
  field.resolve();
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Enum) {
    const values = Object.values(resolved.values);
    return fc.oneof(fc.constantFrom(...values), fc.integer({ min: -5, max: 1000 }));
  }
  if (resolved instanceof protobuf.Type) return depth >= MESSAGE_DEPTH_MAX ? fc.constant({}) : messageObject(resolved, depth + 1);
  return scalarOf(field);
}

/** A JS object for `type` as protobufjs's fromObject takes it; every field optional. */
function messageObject(type: protobuf.Type, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of type.fieldsArray) {
    if (field instanceof protobuf.MapField) {
      model[field.name] = fc.dictionary(fc.string({ maxLength: 12 }), fieldValue(field, depth), { maxKeys: REPEATED_MAX });
    } else if (field.repeated) {
      model[field.name] = fc.array(fieldValue(field, depth), { maxLength: REPEATED_MAX });
    } else {
      model[field.name] = fieldValue(field, depth);
    }
  }
  return fc.record(model, { requiredKeys: [] });
}

/** Encodes a generated object; fromObject drops what the type cannot hold. */
function encode(type: protobuf.Type, value: Record<string, unknown>): Buffer {
  return Buffer.from(type.encode(type.fromObject(value)).finish());
}

/** Byte-level changes to an encoded message, including wire-format edges (bad wire types, huge lengths). */
function mutatedBytes(bytes: Buffer): fc.Arbitrary<{ how: string; bytes: Buffer }> {
  const at = fc.nat({ max: bytes.length });
  const flips = bytes.length === 0 ? [] : [fc.tuple(fc.nat({ max: bytes.length - 1 }), fc.integer({ min: 0, max: 7 })).map(([i, bit]) => {
    const copy = Buffer.from(bytes);
    copy[i] ^= 1 << bit;
    return { how: `flip bit ${bit} at ${i}`, bytes: copy };
  })];
  return fc.oneof(
    ...flips,
    at.map((i) => ({ how: `truncate at ${i}`, bytes: bytes.subarray(0, i) })),
    fc.tuple(at, fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([i, b]) => ({ how: `insert ${b.length} at ${i}`, bytes: Buffer.concat([bytes.subarray(0, i), b, bytes.subarray(i)]) })),
    fc.constantFrom(
      { how: "unknown field 999 varint", bytes: Buffer.concat([bytes, Buffer.from([0xb8, 0x3e, 0x01])]) },
      { how: "wire type 7", bytes: Buffer.concat([Buffer.from([0x0f]), bytes]) },
      { how: "group start without end", bytes: Buffer.concat([bytes, Buffer.from([0x0b])]) },
      { how: "length 2^32 for field 1", bytes: Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]) },
      { how: "varint of 11 bytes", bytes: Buffer.from([0x08, ...Array<number>(10).fill(0xff), 0x01]) },
      { how: "field number 0", bytes: Buffer.from([0x00, 0x01]) },
    ),
  );
}

export interface GrpcMessage {
  readonly how: string;
  readonly bytes: Buffer;
}

function messagesFor(method: GrpcMethod): fc.Arbitrary<GrpcMessage> {
  const valid = messageObject(method.requestType).map((v) => encode(method.requestType, v));
  return fc.oneof(
    { weight: 5, arbitrary: valid.map((bytes) => ({ how: "valid", bytes })) },
    { weight: 3, arbitrary: valid.chain(mutatedBytes) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }).map((b) => ({ how: "random bytes", bytes: Buffer.from(b) })) },
    { weight: 1, arbitrary: fc.constant({ how: "empty", bytes: Buffer.alloc(0) }) },
  );
}

/** Metadata entries: tokens, the Workload API's required header (or not), junk and binary headers. */
export type MetadataEntry = readonly [key: string, value: string | Buffer];

function metadataFor(managementToken: string | undefined): fc.Arbitrary<MetadataEntry[]> {
  const token = fc.oneof(...(managementToken === undefined ? [] : [fc.constant(managementToken)]), fc.uuid(), fc.constantFrom("", "anonymous"));
  const entry: fc.Arbitrary<MetadataEntry> = fc.oneof(
    token.map((t): MetadataEntry => ["x-consul-token", t]),
    token.map((t): MetadataEntry => ["authorization", `Bearer ${t}`]),
    fc.constantFrom<MetadataEntry>(["workload.spiffe.io", "true"], ["workload.spiffe.io", "false"], ["workload.spiffe.io", ""], ["authorization", "Basic x"]),
    fc.tuple(fc.stringMatching(/^[a-z0-9_.-]{1,20}$/).filter((k) => !k.startsWith("grpc-") && !k.endsWith("-bin")), fc.stringMatching(/^[ -~]{0,40}$/)).map(([k, v]): MetadataEntry => [k, v]),
    fc.tuple(fc.stringMatching(/^[a-z0-9_.-]{1,16}$/), fc.uint8Array({ maxLength: 32 })).map(([k, v]): MetadataEntry => [`${k}-bin`, Buffer.from(v)]),
  );
  return fc.oneof(
    { weight: 2, arbitrary: fc.array(entry, { maxLength: 4 }) },
    // The Workload API refuses calls without this header, so most cases carry it.
    { weight: 3, arbitrary: fc.array(entry, { maxLength: 3 }).map((es): MetadataEntry[] => [["workload.spiffe.io", "true"], ...es]) },
  );
}

export interface GrpcCase {
  readonly method: GrpcMethod;
  readonly messages: readonly GrpcMessage[];
  readonly metadata: readonly MetadataEntry[];
  /** Whether the client half-closes its side after the messages (a stream it keeps open idles). */
  readonly halfClose: boolean;
}

export function grpcCases(methods: readonly GrpcMethod[], managementToken: string | undefined): fc.Arbitrary<GrpcCase> {
  return fc.oneof(...methods.map((method) => fc.record({
    method: fc.constant(method),
    messages: method.requestStream ? fc.array(messagesFor(method), { maxLength: 4 }) : messagesFor(method).map((m) => [m]),
    metadata: metadataFor(managementToken),
    halfClose: fc.boolean(),
  })));
}

export function metadataOf(entries: readonly MetadataEntry[]): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of entries) {
    // grpc-js refuses, on the client, to send a second authorization value.
    if (k === "authorization" && md.get(k).length > 0) continue;
    md.add(k, v);
  }
  return md;
}
