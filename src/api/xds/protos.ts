// Envoy's xDS protos, as shipped inside @grpc/grpc-js-xds (deps/envoy-api, xds, googleapis,
// protoc-gen-validate), loaded with protobufjs: nothing is vendored, and the server, the tests and
// the benchmark all read the same definitions. The field tags the response envelopes are built
// from are looked up here by name, never written as bare numbers.

import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import protobuf from "protobufjs";

/** The files that define every message Cairn reads or writes over xDS (their imports come along). */
const XDS_PROTO_FILES = [
  "envoy/service/discovery/v3/ads.proto",
  "envoy/config/listener/v3/listener.proto",
  "envoy/config/cluster/v3/cluster.proto",
  "envoy/config/endpoint/v3/endpoint.proto",
  "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
  "envoy/extensions/filters/http/router/v3/router.proto",
  "envoy/extensions/filters/http/rbac/v3/rbac.proto",
  "envoy/extensions/transport_sockets/tls/v3/tls.proto",
  "envoy/extensions/transport_sockets/tls/v3/secret.proto",
] as const;

/** Where @grpc/grpc-js-xds keeps each proto tree, below its package root. */
const XDS_PROTO_TREES = ["deps/envoy-api", "deps/xds", "deps/googleapis", "deps/protoc-gen-validate"] as const;

/** Protobuf wire type 2: a length-delimited field (strings, bytes, embedded messages). */
const WIRE_TYPE_LENGTH_DELIMITED = 2;

export interface XdsProtos {
  readonly DiscoveryRequest: protobuf.Type;
  readonly DiscoveryResponse: protobuf.Type;
  readonly DeltaDiscoveryRequest: protobuf.Type;
  readonly DeltaDiscoveryResponse: protobuf.Type;
  readonly Resource: protobuf.Type;
  readonly Any: protobuf.Type;
  readonly Listener: protobuf.Type;
  readonly HttpConnectionManager: protobuf.Type;
  readonly Router: protobuf.Type;
  readonly Cluster: protobuf.Type;
  readonly ClusterLoadAssignment: protobuf.Type;
  readonly LocalityLbEndpoints: protobuf.Type;
  readonly Rbac: protobuf.Type;
  readonly DownstreamTlsContext: protobuf.Type;
  readonly UpstreamTlsContext: protobuf.Type;
  /** envoy.config.core.v3.HealthStatus.HEALTHY, for encoding without name conversion. */
  readonly healthStatusHealthy: number;
  /** The key (field number and wire type) of DiscoveryResponse.resources, which each pre-encoded resource is framed with. */
  readonly sotwResourceKey: number;
  /** The key of DeltaDiscoveryResponse.resources. */
  readonly deltaResourceKey: number;
  /** The key of ClusterLoadAssignment.endpoints, which each hand-assembled locality group is framed with. */
  readonly assignmentEndpointsKey: number;
  /** SDS: a certificate and its key, or a trust bundle. */
  readonly Secret: protobuf.Type;
}

let loading: Promise<XdsProtos> | undefined;

/**
 * Loads the protos once per process; every caller shares the result. Loading parses about 70
 * files (100-250 ms), so it runs in the background from the moment xDS is set up, rather than
 * holding up a node's start.
 */
export function loadXdsProtos(): Promise<XdsProtos> {
  loading ??= loadProtos();
  return loading;
}

async function loadProtos(): Promise<XdsProtos> {
  const require = createRequire(import.meta.url);
  const xdsPackage = dirname(require.resolve("@grpc/grpc-js-xds/package.json"));
  // google/protobuf/descriptor.proto, which the validate annotations import, ships with protobufjs.
  const includeDirs = [...XDS_PROTO_TREES.map((tree) => join(xdsPackage, tree)), dirname(require.resolve("protobufjs/package.json"))];
  for (const dir of includeDirs) {
    if (!existsSync(dir)) throw new Error(`Envoy's protos are missing: ${dir} does not exist; reinstall @grpc/grpc-js-xds (npm ci)`);
  }
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    for (const dir of includeDirs) {
      const candidate = join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return target;
  };
  await root.load([...XDS_PROTO_FILES], { keepCase: true });
  root.resolveAll();
  const type = (name: string): protobuf.Type => root.lookupType(name);
  const DiscoveryResponse = type("envoy.service.discovery.v3.DiscoveryResponse");
  const DeltaDiscoveryResponse = type("envoy.service.discovery.v3.DeltaDiscoveryResponse");
  const ClusterLoadAssignment = type("envoy.config.endpoint.v3.ClusterLoadAssignment");
  return {
    DiscoveryRequest: type("envoy.service.discovery.v3.DiscoveryRequest"),
    DiscoveryResponse,
    DeltaDiscoveryRequest: type("envoy.service.discovery.v3.DeltaDiscoveryRequest"),
    DeltaDiscoveryResponse,
    Resource: type("envoy.service.discovery.v3.Resource"),
    Any: type("google.protobuf.Any"),
    Listener: type("envoy.config.listener.v3.Listener"),
    HttpConnectionManager: type("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
    Router: type("envoy.extensions.filters.http.router.v3.Router"),
    Cluster: type("envoy.config.cluster.v3.Cluster"),
    ClusterLoadAssignment,
    LocalityLbEndpoints: type("envoy.config.endpoint.v3.LocalityLbEndpoints"),
    Rbac: type("envoy.extensions.filters.http.rbac.v3.RBAC"),
    DownstreamTlsContext: type("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"),
    UpstreamTlsContext: type("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"),
    healthStatusHealthy: enumValue(root.lookupEnum("envoy.config.core.v3.HealthStatus"), "HEALTHY"),
    sotwResourceKey: lengthDelimitedKey(DiscoveryResponse, "resources"),
    deltaResourceKey: lengthDelimitedKey(DeltaDiscoveryResponse, "resources"),
    assignmentEndpointsKey: lengthDelimitedKey(ClusterLoadAssignment, "endpoints"),
    Secret: type("envoy.extensions.transport_sockets.tls.v3.Secret"),
  };
}

function lengthDelimitedKey(type: protobuf.Type, fieldName: string): number {
  const field = type.fields[fieldName];
  if (field === undefined) throw new Error(`${type.fullName} has no field ${fieldName}: the Envoy protos in @grpc/grpc-js-xds are not the ones this build expects`);
  return (field.id << 3) | WIRE_TYPE_LENGTH_DELIMITED;
}

function enumValue(type: protobuf.Enum, name: string): number {
  const value = type.values[name];
  if (value === undefined) throw new Error(`${type.fullName} has no value ${name}: the Envoy protos in @grpc/grpc-js-xds are not the ones this build expects`);
  return value;
}

/** `bytes` framed as one length-delimited field with `key`: what a repeated message field holds per element. */
export function frameField(key: number, bytes: Uint8Array): Uint8Array {
  return protobuf.Writer.create().uint32(key).bytes(bytes).finish();
}

/** Encodes a plain object as `type`, converting enum names and nested messages as protobufjs' fromObject does. */
export function encodeMessage(type: protobuf.Type, value: object): Uint8Array {
  return type.encode(type.fromObject(value)).finish();
}
