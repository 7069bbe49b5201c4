// Decoding Consul's request bodies the way Consul's Go server does, so its clients' bodies mean
// the same thing here. Go's encoding/json matches field names case-insensitively and Consul also
// accepts snake_case spellings, so keys are compared with case and underscores ignored. Since
// Consul 1.7 an unknown field is a 400 ("stricter JSON decoding"); a known Consul field that Cairn
// does not model is accepted when it has no effect, and refused with a 400 that names it when
// ignoring it would change what the registration means.

import type { CheckInput, RegisterInput } from "../../registry/registry.js";
import type { HealthStatus } from "../../registry/model.js";
import { HEALTH_STATUSES, MTLS_META_KEY } from "../../registry/model.js";

/** A request Consul would answer with 400; the message names the field and what to do. */
export class ConsulBadRequest extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConsulBadRequest";
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** How a field is spelled in Consul's documentation, keyed by its case- and underscore-free form. */
const SERVICE_FIELDS = spellings([
  "ID", "Name", "Tags", "Address", "Port", "Meta", "Weights", "Check", "Checks", "Locality",
  // Accepted and ignored: they do not change which endpoints are served or their health.
  "TaggedAddresses", "EnableTagOverride", "Token", "Namespace", "Partition", "Proxy",
  // Connect.Native marks the instance as speaking mTLS (MTLS_META_KEY); its sidecar is ignored.
  "Connect",
  // Accepted only at their zero value.
  "Kind", "SocketPath",
]);

const CHECK_FIELDS = spellings([
  "CheckID", "ID", "Name", "TTL", "HTTP", "TCP", "GRPC", "Interval", "Timeout", "DeregisterCriticalServiceAfter",
  "Status", "Notes",
  // Accepted and ignored.
  "ServiceID", "OutputMaxSize", "TLSServerName", "DisableRedirects",
  // Accepted only at their zero value (see SEMANTIC_CHECK_FIELDS and UNSUPPORTED_CHECK_KINDS).
  "Method", "Header", "Body", "TLSSkipVerify", "GRPCUseTLS", "TCPUseTLS", "H2PingUseTLS",
  "SuccessBeforePassing", "FailuresBeforeWarning", "FailuresBeforeCritical",
  "Args", "ScriptArgs", "Script", "UDP", "H2PING", "DockerContainerID", "Shell", "AliasNode", "AliasService", "OSService",
]);

/** Check kinds Consul has and Cairn does not probe: refusing beats registering a check that never runs. */
const UNSUPPORTED_CHECK_KINDS = ["Args", "ScriptArgs", "Script", "UDP", "H2PING", "DockerContainerID", "Shell", "AliasNode", "AliasService", "OSService"];

/** Probe options Cairn's prober does not implement; a non-default value would be silently wrong. */
const SEMANTIC_CHECK_FIELDS = ["Header", "Body", "TLSSkipVerify", "GRPCUseTLS", "TCPUseTLS", "H2PingUseTLS",
  "SuccessBeforePassing", "FailuresBeforeWarning", "FailuresBeforeCritical"];

const UPDATE_FIELDS = spellings(["Status", "Output"]);

/** Consul's ServiceConnect; a sidecar registration is accepted and ignored, as Proxy is. */
const CONNECT_FIELDS = spellings(["Native", "SidecarService"]);

function spellings(names: readonly string[]): ReadonlyMap<string, string> {
  return new Map(names.map((n) => [fold(n), n]));
}

function fold(key: string): string {
  return key.replaceAll("_", "").toLowerCase();
}

/**
 * An object's fields keyed by their Consul spelling. null counts as absent, as it does for Go's
 * zero values. A key Consul does not know is refused with Consul's own wording.
 */
function fieldsOf(value: unknown, where: string, known: ReadonlyMap<string, string>): Map<string, Json> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ConsulBadRequest(`Request decode failed: ${where === "" ? "the body" : where} must be a JSON object`);
  }
  const out = new Map<string, Json>();
  for (const [key, v] of Object.entries(value as JsonObject)) {
    const name = known.get(fold(key));
    if (name === undefined) throw new ConsulBadRequest(`Request decode failed: json: unknown field "${key}"${where === "" ? "" : ` in ${where}`}`);
    if (v !== null) out.set(name, v);
  }
  return out;
}

function path(where: string, field: string): string {
  return where === "" ? field : `${where}.${field}`;
}

function str(fields: Map<string, Json>, name: string, where: string): string | undefined {
  const v = fields.get(name);
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new ConsulBadRequest(`Request decode failed: ${path(where, name)} must be a string, not ${JSON.stringify(v)}`);
  return v;
}

function int(fields: Map<string, Json>, name: string, where: string): number | undefined {
  const v = fields.get(name);
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new ConsulBadRequest(`Request decode failed: ${path(where, name)} must be a whole number, not ${JSON.stringify(v)}`);
  }
  return v;
}

function stringList(fields: Map<string, Json>, name: string, where: string): string[] | undefined {
  const v = fields.get(name);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((t) => typeof t === "string")) {
    throw new ConsulBadRequest(`Request decode failed: ${path(where, name)} must be a list of strings`);
  }
  return v;
}

function stringMap(fields: Map<string, Json>, name: string, where: string): Record<string, string> | undefined {
  const v = fields.get(name);
  if (v === undefined) return undefined;
  if (typeof v !== "object" || v === null || Array.isArray(v) || !Object.values(v).every((x) => typeof x === "string")) {
    throw new ConsulBadRequest(`Request decode failed: ${path(where, name)} must be an object of string values`);
  }
  return v as Record<string, string>;
}

/**
 * A duration field: a Go duration string ("10s"), or a number of nanoseconds, which is how Go
 * encodes a time.Duration and which Consul accepts too.
 */
function duration(fields: Map<string, Json>, name: string, where: string): string | undefined {
  const v = fields.get(name);
  if (v === undefined) return undefined;
  if (typeof v === "number" && Number.isFinite(v) && v >= 0) return `${v / 1e6}ms`;
  if (typeof v !== "string") throw new ConsulBadRequest(`Request decode failed: ${path(where, name)} must be a duration like "10s"`);
  return v;
}

/** A value other than Go's zero value for its type. */
function isSet(v: Json | undefined): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === "") return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "object") return Object.keys(v).length > 0;
  return true;
}

/** PUT /v1/agent/service/register: Consul's ServiceDefinition as Cairn's RegisterInput. */
export function decodeServiceRegistration(body: unknown): RegisterInput {
  const f = fieldsOf(body ?? {}, "", SERVICE_FIELDS);
  const name = str(f, "Name", "");
  if (name === undefined || name === "") throw new ConsulBadRequest("Missing service name: the Name field is required");
  const kind = str(f, "Kind", "");
  if (kind !== undefined && kind !== "") {
    throw new ConsulBadRequest(`Kind "${kind}" is not supported: Cairn registers typical services only; omit Kind`);
  }
  if (isSet(f.get("SocketPath"))) throw new ConsulBadRequest("SocketPath is not supported: register an Address and Port");

  let weights: RegisterInput["weights"];
  const w = f.get("Weights");
  if (w !== undefined) {
    const wf = fieldsOf(w, "Weights", spellings(["Passing", "Warning"]));
    // Go's zero values: a Weights object without Passing has Passing 0, which Consul refuses.
    weights = { passing: int(wf, "Passing", "Weights") ?? 0, warning: int(wf, "Warning", "Weights") ?? 0 };
    if (weights.passing < 1) throw new ConsulBadRequest("Invalid Weights: Passing must be greater than 0");
  }
  let zone: string | undefined;
  const locality = f.get("Locality");
  if (locality !== undefined) zone = str(fieldsOf(locality, "Locality", spellings(["Region", "Zone"])), "Zone", "Locality");

  const checks: CheckInput[] = [];
  if (f.has("Check")) checks.push(decodeCheck(f.get("Check"), "Check"));
  const list = f.get("Checks");
  if (list !== undefined) {
    if (!Array.isArray(list)) throw new ConsulBadRequest("Request decode failed: Checks must be a list of checks");
    list.forEach((c, i) => checks.push(decodeCheck(c, `Checks[${i}]`)));
  }
  let meta = stringMap(f, "Meta", "");
  if (connectNative(f.get("Connect"))) {
    const given = meta?.[MTLS_META_KEY];
    if (given !== undefined && given !== "true") {
      throw new ConsulBadRequest(`Connect.Native is true but Meta.${MTLS_META_KEY} is "${given}": a native Connect service speaks mTLS; drop one of them`);
    }
    meta = { ...meta, [MTLS_META_KEY]: "true" };
  }
  return {
    name,
    ...defined("id", str(f, "ID", "")),
    ...defined("address", str(f, "Address", "")),
    ...defined("port", int(f, "Port", "")),
    ...defined("tags", stringList(f, "Tags", "")),
    ...defined("meta", meta),
    ...defined("weights", weights),
    ...defined("zone", zone),
    checks,
  };
}

/** Whether a registration's Connect block says the service is Connect-native (it speaks mTLS itself). */
function connectNative(value: Json | undefined): boolean {
  if (value === undefined) return false;
  const c = fieldsOf(value, "Connect", CONNECT_FIELDS);
  const native = c.get("Native");
  if (native !== undefined && typeof native !== "boolean") throw new ConsulBadRequest("Request decode failed: Connect.Native must be true or false");
  return native === true;
}

function decodeCheck(value: unknown, where: string): CheckInput {
  const f = fieldsOf(value, where, CHECK_FIELDS);
  for (const kind of UNSUPPORTED_CHECK_KINDS) {
    if (isSet(f.get(kind))) throw new ConsulBadRequest(`${where}.${kind}: this kind of check is not supported; use TTL, HTTP, TCP or GRPC`);
  }
  for (const option of SEMANTIC_CHECK_FIELDS) {
    if (isSet(f.get(option))) throw new ConsulBadRequest(`${where}.${option} is not supported; remove it or leave it at its default`);
  }
  const method = str(f, "Method", where);
  if (method !== undefined && method !== "" && method.toUpperCase() !== "GET") {
    throw new ConsulBadRequest(`${where}.Method "${method}" is not supported: HTTP checks use GET`);
  }
  const checkId = str(f, "CheckID", where) ?? str(f, "ID", where);
  const status = str(f, "Status", where);
  if (status !== undefined && status !== "" && !HEALTH_STATUSES.includes(status as HealthStatus)) {
    throw new ConsulBadRequest(`${where}.Status "${status}": status for checks must be 'passing', 'warning' or 'critical'`);
  }
  return {
    ...defined("id", checkId),
    ...defined("name", str(f, "Name", where)),
    ...defined("ttl", duration(f, "TTL", where)),
    ...defined("http", str(f, "HTTP", where)),
    ...defined("tcp", str(f, "TCP", where)),
    ...defined("grpc", str(f, "GRPC", where)),
    ...defined("interval", duration(f, "Interval", where)),
    ...defined("timeout", duration(f, "Timeout", where)),
    ...defined("deregisterCriticalAfter", duration(f, "DeregisterCriticalServiceAfter", where)),
    ...defined("status", status),
    ...defined("notes", str(f, "Notes", where)),
  };
}

/** PUT /v1/agent/check/update/:id: {Status, Output}. */
export function decodeCheckUpdate(body: unknown): { status: HealthStatus; output: string } {
  const f = fieldsOf(body ?? {}, "", UPDATE_FIELDS);
  const status = str(f, "Status", "") ?? "";
  if (!HEALTH_STATUSES.includes(status as HealthStatus)) {
    throw new ConsulBadRequest(`Invalid check status: '${status}'; Status must be passing, warning or critical`);
  }
  return { status: status as HealthStatus, output: str(f, "Output", "") ?? "" };
}

/** `{ key: value }` when value is defined, else `{}`: an absent field stays absent rather than present as undefined. */
function defined<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return value === undefined ? {} : ({ [key]: value } as { [P in K]?: V });
}
