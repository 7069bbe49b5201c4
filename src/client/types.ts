// The native API's JSON, as the client sends and reads it: written from the HTTP API's shapes
// (src/api/native/registry.ts's schemas and answers), not imported from the server's modules, so the
// library depends on the protocol only. A change to the API's shapes is a change here too.

export type HealthStatus = "passing" | "warning" | "critical";

export type CheckKind = "ttl" | "http" | "tcp" | "grpc";

/** Relative load-balancing weights by health (Consul's): passing at least 1, warning at least 0. */
export interface Weights {
  readonly passing: number;
  readonly warning: number;
}

/**
 * One check in POST /v1/registry/instances. Give exactly one of ttl, http, tcp or grpc. Durations
 * are Go durations such as "10s".
 */
export interface CheckInput {
  /** Default service:<instance id>, or service:<instance id>:<n> (from 1) when there are several. */
  readonly id?: string;
  readonly name?: string;
  /** A TTL check: the service heartbeats within this long (the client does it for you). */
  readonly ttl?: string;
  /** Probe checks, run by the cluster's leader: an http(s):// URL; HOST:PORT; HOST:PORT[/service]. */
  readonly http?: string;
  readonly tcp?: string;
  readonly grpc?: string;
  /** A probe's schedule; default 10s each. */
  readonly interval?: string;
  readonly timeout?: string;
  /** Remove the instance once the check has been critical this long; the cluster raises it to its minimum (1m unless configured). */
  readonly deregisterCriticalAfter?: string;
  /** The initial status; default critical. */
  readonly status?: HealthStatus;
  readonly notes?: string;
}

/** The body of POST /v1/registry/instances. */
export interface RegisterInput {
  /** Default the service name. */
  readonly id?: string;
  /** The service: a DNS label. */
  readonly name: string;
  /** Default the address of the node that accepts the registration. */
  readonly address?: string;
  readonly port?: number;
  readonly tags?: readonly string[];
  readonly meta?: Readonly<Record<string, string>>;
  readonly weights?: Weights;
  /** Locality (availability zone). */
  readonly zone?: string;
  readonly checks?: readonly CheckInput[];
}

export interface InstanceCheck {
  readonly id: string;
  readonly name: string;
  readonly kind: CheckKind;
  readonly status: HealthStatus;
  readonly output: string;
  readonly notes: string;
  /** TTL checks only. */
  readonly ttlMs?: number;
  /** Probe checks only: URL or host:port, and their schedule. */
  readonly target?: string;
  readonly intervalMs?: number;
  readonly timeoutMs?: number;
  readonly deregisterCriticalAfterMs: number;
}

export interface Instance {
  readonly id: string;
  readonly service: string;
  /** Where to reach the instance: its own address, or the registering node's when it gave none. */
  readonly address: string;
  readonly port: number;
  readonly tags: readonly string[];
  readonly meta: Readonly<Record<string, string>>;
  readonly weights: Weights;
  readonly zone: string;
  readonly node: string;
  /** The worst status among its checks; passing without checks. */
  readonly status: HealthStatus;
  readonly checks: readonly InstanceCheck[];
  readonly createIndex: number;
  readonly modifyIndex: number;
}

/** Why a watch's state was replaced wholesale instead of updated by events. */
export type ResetReason =
  /** The first state of a new watch. */
  | "initial"
  /** The watch resumed from a revision older than the node's retained events. */
  | "compacted"
  /** The node's state was replaced by a Raft snapshot. */
  | "restored"
  /** The stream fell so far behind that its backlog was too large to send as events. */
  | "behind";

/** One change, in GET /v1/watch's `events` messages. upsert and health carry the whole instance as it now is. */
export type WatchEvent =
  | { readonly type: "upsert" | "health"; readonly revision: number; readonly service: string; readonly id: string; readonly instance: Instance }
  | { readonly type: "delete"; readonly revision: number; readonly service: string; readonly id: string };
