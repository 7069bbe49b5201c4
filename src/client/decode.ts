// Strict decoding of what nodes send the client: instances (from reads and watch streams) and the
// watch stream's messages (GET /v1/watch). Every field the client relies on is checked for its
// type, so a caller gets typed data or an error naming the field; fields the client does not know
// are ignored, so a newer server can add some.

import type { CheckKind, HealthStatus, Instance, InstanceCheck, ResetReason, WatchEvent } from "./types.js";
import type { SseEvent } from "./sse.js";
import { CairnProtocolError } from "./errors.js";

/** What was wrong, with the path of the field at fault. The caller adds which node sent it. */
export class WireDecodeError extends Error {
  constructor(readonly path: string, expected: string, got: unknown) {
    super(`${path}: expected ${expected}, got ${describe(got)}`);
    this.name = "WireDecodeError";
  }
}

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  const text = JSON.stringify(v);
  return text.length > 80 ? `${text.slice(0, 80)}...` : text;
}

export type Fields = Readonly<Record<string, unknown>>;

export function fields(v: unknown, path: string): Fields {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new WireDecodeError(path, "an object", v);
  return v as Fields;
}

export function array(v: unknown, path: string): readonly unknown[] {
  if (!Array.isArray(v)) throw new WireDecodeError(path, "an array", v);
  return v;
}

export function text(o: Fields, key: string, path: string): string {
  const v = o[key];
  if (typeof v !== "string") throw new WireDecodeError(`${path}.${key}`, "a string", v);
  return v;
}

export function bool(o: Fields, key: string, path: string): boolean {
  const v = o[key];
  if (typeof v !== "boolean") throw new WireDecodeError(`${path}.${key}`, "true or false", v);
  return v;
}

/** A whole number >= 0: revisions, indexes, ports, weights, milliseconds. */
export function whole(o: Fields, key: string, path: string): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new WireDecodeError(`${path}.${key}`, "a whole number >= 0", v);
  return v;
}

export function optionalWhole(o: Fields, key: string, path: string): number | undefined {
  return o[key] === undefined ? undefined : whole(o, key, path);
}

export function oneOf<T extends string>(o: Fields, key: string, allowed: readonly T[], path: string): T {
  const v = o[key];
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) throw new WireDecodeError(`${path}.${key}`, `one of ${allowed.join(", ")}`, v);
  return v as T;
}

const HEALTH_STATUSES: readonly HealthStatus[] = ["passing", "warning", "critical"];
const CHECK_KINDS: readonly CheckKind[] = ["ttl", "http", "tcp", "grpc"];
const RESET_REASONS: readonly ResetReason[] = ["initial", "compacted", "restored", "behind"];

function decodeCheck(v: unknown, path: string): InstanceCheck {
  const o = fields(v, path);
  const ttlMs = optionalWhole(o, "ttlMs", path);
  const intervalMs = optionalWhole(o, "intervalMs", path);
  const timeoutMs = optionalWhole(o, "timeoutMs", path);
  const target = o.target === undefined ? undefined : text(o, "target", path);
  return {
    id: text(o, "id", path),
    name: text(o, "name", path),
    kind: oneOf(o, "kind", CHECK_KINDS, path),
    status: oneOf(o, "status", HEALTH_STATUSES, path),
    output: text(o, "output", path),
    notes: text(o, "notes", path),
    ...(ttlMs === undefined ? {} : { ttlMs }),
    ...(target === undefined ? {} : { target }),
    ...(intervalMs === undefined ? {} : { intervalMs }),
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    deregisterCriticalAfterMs: whole(o, "deregisterCriticalAfterMs", path),
  };
}

/** An instance in the native API's shape (src/api/native/registry.ts's present()). */
export function decodeInstance(v: unknown, path: string): Instance {
  const o = fields(v, path);
  const tags = stringArray(o.tags, `${path}.tags`);
  const metaFields = fields(o.meta, `${path}.meta`);
  const meta: Record<string, string> = {};
  for (const key of Object.keys(metaFields)) meta[key] = text(metaFields, key, `${path}.meta`);
  const weights = fields(o.weights, `${path}.weights`);
  return {
    id: text(o, "id", path),
    service: text(o, "service", path),
    address: text(o, "address", path),
    port: whole(o, "port", path),
    tags,
    meta,
    weights: { passing: whole(weights, "passing", `${path}.weights`), warning: whole(weights, "warning", `${path}.weights`) },
    zone: text(o, "zone", path),
    node: text(o, "node", path),
    status: oneOf(o, "status", HEALTH_STATUSES, path),
    checks: array(o.checks, `${path}.checks`).map((c, i) => decodeCheck(c, `${path}.checks[${i}]`)),
    createIndex: whole(o, "createIndex", path),
    modifyIndex: whole(o, "modifyIndex", path),
  };
}

export function decodeInstances(v: unknown, path: string): Instance[] {
  return array(v, path).map((inst, i) => decodeInstance(inst, `${path}[${i}]`));
}

// ---------------------------------------------------------------- the watch stream's messages

/** A batch: after it the stream is complete up to `revision`. */
export interface EventsMessage {
  readonly kind: "events";
  readonly revision: number;
  /** Only the latest change per instance since the previous message: intermediate revisions were skipped. */
  readonly coalesced: boolean;
  /** In revision order, each at most `revision`. */
  readonly events: readonly WatchEvent[];
}

/** One piece of a reset: the first replaces what is held; after the last, the state at `revision` is held. */
export interface ResetChunkMessage {
  readonly kind: "reset";
  readonly revision: number;
  readonly reason: ResetReason;
  readonly first: boolean;
  readonly last: boolean;
  readonly instances: readonly Instance[];
}

/** Nothing changed up to `revision`. */
export interface ProgressMessage {
  readonly kind: "progress";
  readonly revision: number;
}

export type WatchMessage = EventsMessage | ResetChunkMessage | ProgressMessage;

const EVENT_TYPES: readonly WatchEvent["type"][] = ["upsert", "health", "delete"];

function decodeEvent(v: unknown, path: string, batchRevision: number, previousRevision: number): WatchEvent {
  const o = fields(v, path);
  const type = oneOf(o, "type", EVENT_TYPES, path);
  const revision = whole(o, "revision", path);
  if (revision > batchRevision || revision < previousRevision) {
    throw new WireDecodeError(`${path}.revision`, `a revision from ${previousRevision} to the batch's ${batchRevision}`, revision);
  }
  const service = text(o, "service", path);
  const id = text(o, "id", path);
  if (type === "delete") return { type, revision, service, id };
  const instance = decodeInstance(o.instance, `${path}.instance`);
  if (instance.id !== id || instance.service !== service) {
    throw new WireDecodeError(`${path}.instance`, `instance ${id} of service ${service}`, `${instance.id} of ${instance.service}`);
  }
  return { type, revision, service, id, instance };
}

/**
 * One server-sent event of GET /v1/watch, or undefined for an event type this client does not
 * know (a newer server's; skipped). Each complete message's id is its revision; a reset chunk has
 * an id only when it is the last.
 */
export function decodeWatchMessage(sse: SseEvent): WatchMessage | undefined {
  if (sse.event !== "events" && sse.event !== "reset" && sse.event !== "progress") return undefined;
  let body: unknown;
  try {
    body = JSON.parse(sse.data);
  } catch (err) {
    throw new WireDecodeError(`${sse.event} data`, "JSON", `${sse.data.slice(0, 40)} (${(err as Error).message})`);
  }
  const path = sse.event;
  const o = fields(body, path);
  const revision = whole(o, "revision", path);
  const idExpected = sse.event === "reset" ? (o.last === true ? String(revision) : undefined) : String(revision);
  if (sse.id !== idExpected) throw new WireDecodeError(`${path} id`, idExpected === undefined ? "no id (a reset chunk before the last)" : `the revision ${idExpected}`, sse.id);
  switch (sse.event) {
    case "progress":
      return { kind: "progress", revision };
    case "events": {
      let previous = 0;
      const events = array(o.events, `${path}.events`).map((e, i) => {
        const event = decodeEvent(e, `${path}.events[${i}]`, revision, previous);
        previous = event.revision;
        return event;
      });
      return { kind: "events", revision, coalesced: bool(o, "coalesced", path), events };
    }
    case "reset":
      return {
        kind: "reset",
        revision,
        reason: oneOf(o, "reason", RESET_REASONS, path),
        first: bool(o, "first", path),
        last: bool(o, "last", path),
        instances: decodeInstances(o.instances, `${path}.instances`),
      };
  }
}

/**
 * A node's answer decoded by `decoder`, or CairnProtocolError naming the node, the request and the
 * field at fault: callers get typed data or an error that says which node sent what.
 */
export function decodeAnswer<T>(answer: { readonly endpoint: string; readonly body: unknown }, request: string, decoder: (body: unknown) => T): T {
  try {
    return decoder(answer.body);
  } catch (err) {
    if (err instanceof WireDecodeError) throw new CairnProtocolError(answer.endpoint, `${request}: ${err.message}`, { cause: err });
    throw err;
  }
}

export function stringArray(v: unknown, path: string): string[] {
  return array(v, path).map((s, i) => {
    if (typeof s !== "string") throw new WireDecodeError(`${path}[${i}]`, "a string", s);
    return s;
  });
}
