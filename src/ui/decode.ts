// What the dashboard reads from the HTTP API, decoded: every answer is checked field by field
// against the shape its route's schema declares, so an answer of another shape shows as an error
// naming the field, never as a wrong figure. Only the fields the page shows are read.

export class DecodeError extends Error {
  constructor(at: string, expected: string, value: unknown) {
    const got = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
    super(`the server's answer has ${at} as ${got} where ${expected} was expected`);
    this.name = "DecodeError";
  }
}

type Fields = Readonly<Record<string, unknown>>;

function object(value: unknown, at: string): Fields {
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new DecodeError(at, "an object", value);
  return value as Fields;
}

function list(value: unknown, at: string): readonly unknown[] {
  if (!Array.isArray(value)) throw new DecodeError(at, "an array", value);
  return value;
}

function text(o: Fields, key: string, at: string): string {
  const v = o[key];
  if (typeof v !== "string") throw new DecodeError(`${at}.${key}`, "a string", v);
  return v;
}

function integer(o: Fields, key: string, at: string): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isInteger(v)) throw new DecodeError(`${at}.${key}`, "an integer", v);
  return v;
}

function flag(o: Fields, key: string, at: string): boolean {
  const v = o[key];
  if (typeof v !== "boolean") throw new DecodeError(`${at}.${key}`, "a boolean", v);
  return v;
}

function integerOrNull(o: Fields, key: string, at: string): number | null {
  return o[key] === null ? null : integer(o, key, at);
}

function flagOrNull(o: Fields, key: string, at: string): boolean | null {
  return o[key] === null ? null : flag(o, key, at);
}

function textOrNull(o: Fields, key: string, at: string): string | null {
  return o[key] === null ? null : text(o, key, at);
}

function oneOf<T extends string>(o: Fields, key: string, allowed: readonly T[], at: string): T {
  const v = text(o, key, at);
  const found = allowed.find((a) => a === v);
  if (found === undefined) throw new DecodeError(`${at}.${key}`, `one of ${allowed.join(", ")}`, v);
  return found;
}

function items<T>(o: Fields, key: string, at: string, decode: (item: unknown, at: string) => T): T[] {
  return list(o[key], `${at}.${key}`).map((item, i) => decode(item, `${at}.${key}[${i}]`));
}

// ---------------------------------------------------------------- the cluster

export const MEMBER_ROLES = ["leader", "follower", "learner"] as const;
export type MemberRole = (typeof MEMBER_ROLES)[number];

/** GET /v1/cluster: the serving node's own view. */
export interface NodeView {
  readonly id: string;
  readonly role: string;
  readonly leader: string;
  readonly term: number;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly members: readonly { readonly id: string; readonly peerAddress: string; readonly role: MemberRole }[];
}

export function decodeNodeView(value: unknown): NodeView {
  const at = "GET /v1/cluster";
  const o = object(value, at);
  return {
    id: text(o, "id", at),
    role: text(o, "role", at),
    leader: text(o, "leader", at),
    term: integer(o, "term", at),
    commitIndex: integer(o, "commitIndex", at),
    appliedIndex: integer(o, "appliedIndex", at),
    members: items(o, "members", at, (item, where) => {
      const m = object(item, where);
      return { id: text(m, "id", where), peerAddress: text(m, "peerAddress", where), role: oneOf(m, "role", MEMBER_ROLES, where) };
    }),
  };
}

export interface MemberHealth {
  readonly id: string;
  readonly peerAddress: string;
  readonly role: MemberRole;
  readonly match: number | null;
  readonly lagEntries: number | null;
  readonly lastContactMs: number | null;
  /** null: the leader cannot tell yet. */
  readonly reachable: boolean | null;
}

/** GET /v1/cluster/health: the leader's view, from any node. */
export interface ClusterHealth {
  readonly leader: string;
  readonly term: number;
  readonly commitIndex: number;
  readonly healthy: boolean;
  readonly failureTolerance: number;
  readonly members: readonly MemberHealth[];
}

export function decodeClusterHealth(value: unknown): ClusterHealth {
  const at = "GET /v1/cluster/health";
  const o = object(value, at);
  return {
    leader: text(o, "leader", at),
    term: integer(o, "term", at),
    commitIndex: integer(o, "commitIndex", at),
    healthy: flag(o, "healthy", at),
    failureTolerance: integer(o, "failureTolerance", at),
    members: items(o, "members", at, (item, where) => {
      const m = object(item, where);
      return {
        id: text(m, "id", where),
        peerAddress: text(m, "peerAddress", where),
        role: oneOf(m, "role", MEMBER_ROLES, where),
        match: integerOrNull(m, "match", where),
        lagEntries: integerOrNull(m, "lagEntries", where),
        lastContactMs: integerOrNull(m, "lastContactMs", where),
        reachable: flagOrNull(m, "reachable", where),
      };
    }),
  };
}

// ---------------------------------------------------------------- the certificate authority

export interface Root {
  readonly id: string;
  readonly name: string;
  readonly keyType: string;
  readonly active: boolean;
  readonly notBefore: string;
  readonly notAfter: string;
  /** Set once the root is replaced: it leaves the bundle after this. */
  readonly retireAfter: string | null;
}

/** GET /v1/ca/roots. */
export interface Roots {
  readonly trustDomain: string;
  readonly roots: readonly Root[];
}

export function decodeRoots(value: unknown): Roots {
  const at = "GET /v1/ca/roots";
  const o = object(value, at);
  return {
    trustDomain: text(o, "trustDomain", at),
    roots: items(o, "roots", at, (item, where) => {
      const r = object(item, where);
      return {
        id: text(r, "id", where),
        name: text(r, "name", where),
        keyType: text(r, "keyType", where),
        active: flag(r, "active", where),
        notBefore: text(r, "notBefore", where),
        notAfter: text(r, "notAfter", where),
        retireAfter: textOrNull(r, "retireAfter", where),
      };
    }),
  };
}

export interface Issuance {
  readonly serial: string;
  readonly spiffeId: string;
  readonly notAfter: string;
  readonly issuedAt: string;
  readonly origin: string;
}

/** GET /v1/ca/issued: the serving node's recent issuances, newest first. */
export interface Issued {
  readonly node: string;
  readonly kept: number;
  readonly certificates: readonly Issuance[];
}

export function decodeIssued(value: unknown): Issued {
  const at = "GET /v1/ca/issued";
  const o = object(value, at);
  return {
    node: text(o, "node", at),
    kept: integer(o, "kept", at),
    certificates: items(o, "certificates", at, (item, where) => {
      const c = object(item, where);
      return {
        serial: text(c, "serial", where),
        spiffeId: text(c, "spiffeId", where),
        notAfter: text(c, "notAfter", where),
        issuedAt: text(c, "issuedAt", where),
        origin: text(c, "origin", where),
      };
    }),
  };
}

// ---------------------------------------------------------------- the registry's watch stream

export const HEALTH_STATUSES = ["passing", "warning", "critical"] as const;
export type HealthStatus = (typeof HEALTH_STATUSES)[number];

export interface Check {
  readonly id: string;
  readonly name: string;
  readonly status: HealthStatus;
  readonly output: string;
}

export interface Instance {
  readonly id: string;
  readonly service: string;
  readonly address: string;
  readonly port: number;
  readonly tags: readonly string[];
  readonly zone: string;
  readonly node: string;
  readonly status: HealthStatus;
  readonly checks: readonly Check[];
}

function decodeInstance(value: unknown, at: string): Instance {
  const o = object(value, at);
  return {
    id: text(o, "id", at),
    service: text(o, "service", at),
    address: text(o, "address", at),
    port: integer(o, "port", at),
    tags: list(o.tags, `${at}.tags`).map((t, i) => {
      if (typeof t !== "string") throw new DecodeError(`${at}.tags[${i}]`, "a string", t);
      return t;
    }),
    zone: text(o, "zone", at),
    node: text(o, "node", at),
    status: oneOf(o, "status", HEALTH_STATUSES, at),
    checks: items(o, "checks", at, (item, where) => {
      const c = object(item, where);
      return { id: text(c, "id", where), name: text(c, "name", where), status: oneOf(c, "status", HEALTH_STATUSES, where), output: text(c, "output", where) };
    }),
  };
}

export type WatchEvent =
  | { readonly type: "upsert" | "health"; readonly revision: number; readonly instance: Instance }
  | { readonly type: "delete"; readonly revision: number; readonly id: string };

/** `event: events`: changes after the previous revision. */
export interface EventBatch {
  readonly revision: number;
  readonly events: readonly WatchEvent[];
}

/** `event: reset`: the whole state, in chunks from `first` to `last`, replacing what came before. */
export interface ResetChunk {
  readonly revision: number;
  readonly first: boolean;
  readonly last: boolean;
  readonly instances: readonly Instance[];
}

const EVENT_TYPES = ["upsert", "health", "delete"] as const;

export function decodeEventBatch(value: unknown): EventBatch {
  const at = "the watch's events";
  const o = object(value, at);
  return {
    revision: integer(o, "revision", at),
    events: items(o, "events", at, (item, where): WatchEvent => {
      const e = object(item, where);
      const type = oneOf(e, "type", EVENT_TYPES, where);
      const revision = integer(e, "revision", where);
      if (type === "delete") return { type, revision, id: text(e, "id", where) };
      return { type, revision, instance: decodeInstance(e.instance, `${where}.instance`) };
    }),
  };
}

export function decodeResetChunk(value: unknown): ResetChunk {
  const at = "the watch's reset";
  const o = object(value, at);
  return {
    revision: integer(o, "revision", at),
    first: flag(o, "first", at),
    last: flag(o, "last", at),
    instances: items(o, "instances", at, decodeInstance),
  };
}

export function decodeProgress(value: unknown): number {
  return integer(object(value, "the watch's progress"), "revision", "the watch's progress");
}

/** GET /v1/registry/services: the names of the services the token may read. */
export function decodeServiceNames(value: unknown): string[] {
  const at = "GET /v1/registry/services";
  return items(object(value, at), "services", at, (item, where) => text(object(item, where), "name", where));
}
