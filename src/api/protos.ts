// Cairn's gRPC services are described by the .proto files in the package's proto/ directory
// (committed, not copied by the build); Envoy's, for xDS, ship inside @grpc/grpc-js-xds.

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

/** How proto3 maps to JS objects on both sides of Cairn's proto services: field names as written, 64-bit integers as numbers. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

function cairnProtoPath(file: string): string {
  const path = fileURLToPath(new URL(`../../../proto/${file}`, import.meta.url));
  if (!existsSync(path)) throw new Error(`the proto file ${path} is missing: Cairn's proto/ directory must sit in the package root, beside dist/`);
  return path;
}

/**
 * The messages of a file in Cairn's `proto/` directory, for code that encodes a message once and
 * writes the same bytes to many streams. Field names are kept as written, as PROTO_LOADER_OPTIONS does.
 */
export function loadProtoRoot(file: string): protobuf.Root {
  return new protobuf.Root().loadSync(cairnProtoPath(file), { keepCase: true });
}

/**
 * A service from Cairn's `proto/` directory. This module compiles to dist/src/api/, three levels
 * below the package root where proto/ sits.
 */
export function loadProtoService(file: string, serviceName: string): grpc.ServiceDefinition {
  const path = cairnProtoPath(file);
  const definition = protoLoader.loadSync(path, PROTO_LOADER_OPTIONS)[serviceName];
  // A message or enum definition carries `format`; a service is a map of methods.
  if (definition === undefined || "format" in definition) throw new Error(`${path} defines no service ${serviceName}`);
  return definition;
}
