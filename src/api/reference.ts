// The API reference (docs/api.md), rendered from what the server itself declares: the OpenAPI
// document that the routes' JSON schemas produce, the ACL rule each route and gRPC method
// declares, and the .proto files the gRPC services are built from. Generated, never written by
// hand, so it cannot drift: test/docs/api_reference.test.ts fails when docs/api.md is stale.

import protobuf from "protobufjs";
import type { OpenApiDocument } from "./openapi.js";

type Schema = { readonly [key: string]: unknown };

/** One gRPC service as its .proto declares it, with the ACL rule the server logs for each method. */
export interface GrpcServiceReference {
  readonly file: string;
  readonly service: protobuf.Service;
  /** Who may call it, for a service not on the public gRPC port (whose rules the server logs). */
  readonly access?: string;
}

/** Loads each .proto file (paths relative to `root`) and finds its services. */
export function grpcServicesOf(root: string, files: readonly { readonly file: string; readonly access?: string }[]): GrpcServiceReference[] {
  const found: GrpcServiceReference[] = [];
  for (const { file, access } of files) {
    const r = new protobuf.Root();
    r.resolvePath = (_origin, target) => (target.startsWith("/") ? target : `${root}/${target}`);
    r.loadSync(file, { keepCase: true });
    r.resolveAll();
    const visit = (ns: protobuf.NamespaceBase): void => {
      for (const nested of ns.nestedArray) {
        if (nested instanceof protobuf.Service) found.push({ file, service: nested, ...(access === undefined ? {} : { access }) });
        else if (nested instanceof protobuf.Namespace) visit(nested);
      }
    };
    visit(r);
  }
  return found;
}

/** The markdown of docs/api.md. `grpcRules` maps a method's path to its ACL rule, as the server logs them. */
export function renderApiReference(doc: OpenApiDocument, grpc: readonly GrpcServiceReference[], grpcRules: Readonly<Record<string, string>>): string {
  const out: string[] = [
    "# API reference",
    "",
    "Generated from the running server's own declarations by `npm run docs:api`: the HTTP routes from",
    "their JSON schemas (`GET /v1/openapi.json` serves the same, as OpenAPI 3.0), the gRPC services from",
    "the `.proto` files in `proto/`, and each one's ACL rule as the server enforces it. Do not edit by",
    "hand; `npm test` fails when this page is stale.",
    "",
    "ACL rules read: `open` (no token needed), `filtered` (answers only what the token may read),",
    "`resource:access` (the token needs it, on the name the request gives where it says so). See",
    "[security](security.md) for the rules themselves.",
    "",
    "## HTTP",
    "",
  ];
  const groups = new Map<string, { path: string; method: string; op: OpenApiDocument["paths"][string][string] }[]>();
  for (const [path, methods] of Object.entries(doc.paths).sort(([a], [b]) => a.localeCompare(b))) {
    for (const [method, op] of Object.entries(methods)) {
      const group = groupOf(path);
      let list = groups.get(group);
      if (list === undefined) groups.set(group, (list = []));
      list.push({ path, method, op });
    }
  }
  out.push(`${[...groups.values()].reduce((n, l) => n + l.length, 0)} operations.`, "");
  for (const [group, ops] of [...groups].sort(([a], [b]) => a.localeCompare(b))) {
    out.push(`### ${group}`, "");
    for (const { path, method, op } of ops) {
      out.push(`#### \`${method.toUpperCase()} ${path}\``, "");
      if (op.summary !== undefined) out.push(oneLine(op.summary), "");
      out.push(`- **ACL:** ${oneLine(op["x-cairn-acl"] ?? "(none declared)")}`);
      for (const p of op.parameters) {
        out.push(`- **${p.in} \`${p.name}\`**${p.required ? " (required)" : ""}: ${typeText(p.schema)}${p.description === undefined ? "" : ` — ${oneLine(p.description)}`}`);
      }
      const body = op.requestBody?.content["application/json"].schema;
      if (body !== undefined) out.push(`- **body**: ${fieldsText(body)}`);
      const ok = Object.entries(op.responses).find(([code]) => code.startsWith("2"));
      const [media, answer] = Object.entries(ok?.[1].content ?? {})[0] ?? [];
      if (answer !== undefined) {
        const shape = media === "application/json" ? fieldsText(answer.schema) : `\`${media}\``;
        out.push(`- **answers ${ok?.[0] ?? "200"}**: ${shape}`);
      }
      out.push("");
    }
  }
  out.push("## gRPC", "");
  for (const { file, service, access } of grpc) {
    out.push(`### \`${service.fullName.replace(/^\./, "")}\` (${file})`, "");
    if (service.comment !== null && service.comment !== undefined) out.push(oneLine(service.comment), "");
    for (const m of service.methodsArray) {
      const path = `/${service.fullName.replace(/^\./, "")}/${m.name}`;
      const request = `${m.requestStream === true ? "stream " : ""}${m.requestType}`;
      const response = `${m.responseStream === true ? "stream " : ""}${m.responseType}`;
      out.push(`- **\`${m.name}(${request}) returns (${response})\`** — ACL: ${oneLine(grpcRules[path] ?? access ?? "not served on the public gRPC port")}`);
      if (m.comment !== null && m.comment !== undefined) out.push(`  ${oneLine(m.comment)}`);
    }
    out.push("");
  }
  const described = new Set(grpc.flatMap(({ service }) => service.methodsArray.map((m) => `/${service.fullName.replace(/^\./, "")}/${m.name}`)));
  const others = Object.entries(grpcRules).filter(([path]) => !described.has(path)).sort(([a], [b]) => a.localeCompare(b));
  if (others.length > 0) {
    out.push("### Standard services (their protos ship with their packages: `@grpc/grpc-js-xds` for xDS, gRPC's health)", "");
    for (const [path, rule] of others) out.push(`- **\`${path}\`** — ACL: ${oneLine(rule)}`);
    out.push("");
  }
  return `${out.join("\n").trimEnd()}\n`;
}

/** Routes grouped by their first segments: `/v1/acl/token/{id}` is "/v1/acl". */
function groupOf(path: string): string {
  const parts = path.split("/").filter((p) => p !== "");
  if (parts[0] !== "v1") return `/${parts[0] ?? ""}`;
  return `/v1/${parts[1] ?? ""}`;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim().replaceAll("|", "\\|");
}

function typeText(schema: Schema | undefined): string {
  if (schema === undefined) return "any";
  if (Array.isArray(schema.enum)) return `one of ${(schema.enum as unknown[]).map((v) => `\`${String(v)}\``).join(", ")}`;
  const type = Array.isArray(schema.type) ? (schema.type as unknown[]).join(" or ") : typeof schema.type === "string" ? schema.type : "any";
  if (type === "array") return `array of ${typeText(schema.items as Schema | undefined)}`;
  return type;
}

/** An object schema's fields in one line: `{name (string, required), tags (array of string)}`. */
function fieldsText(schema: Schema): string {
  const properties = schema.properties as Record<string, Schema> | undefined;
  if (properties === undefined) return typeText(schema);
  const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
  const fields = Object.entries(properties).map(([name, p]) => `\`${name}\` (${typeText(p)}${required.has(name) ? ", required" : ""})`);
  return fields.length === 0 ? "an object" : fields.join(", ");
}
