// What a chaos run records, and what every checker reads: client operations with their
// outcomes, what each watcher was sent, the faults injected, and what the cluster said about
// itself. Times are milliseconds on the runner's monotonic clock since the run started: every
// client runs in the runner's process, so one clock orders them all, whatever the nodes' clocks say.
//
// Each operation's interval is [invokedAtMs, completedAtMs]. An operation that never learned its
// outcome (a timeout, a reset connection, a crashed node) is "unknown": it may have taken effect
// at any time after it was invoked, or never.

/** ok: acknowledged. fail: definitely did not take effect. unknown: may or may not have. */
export type Outcome = "ok" | "fail" | "unknown";

interface OpBase {
  /** Unique in the run. */
  readonly id: number;
  /** The client that ran it; one client runs one operation at a time. */
  readonly client: string;
  /** The node it was sent to. */
  readonly node: string;
  readonly invokedAtMs: number;
  /** undefined when the outcome is unknown. */
  readonly completedAtMs: number | undefined;
  readonly outcome: Outcome;
  /** For fail and unknown: the HTTP status and error text, for the report. */
  readonly error?: string;
  readonly status?: number;
}

/** Registers a new instance. Every instance id is registered once in a run. */
export interface RegisterOp extends OpBase {
  readonly kind: "register";
  readonly service: string;
  readonly instance: string;
  readonly address: string;
  readonly port: number;
  /** When ok: the revision the write committed at. */
  readonly revision?: number;
}

/** Deregisters an instance; sent only after its registration was acknowledged. */
export interface DeregisterOp extends OpBase {
  readonly kind: "deregister";
  readonly service: string;
  readonly instance: string;
  readonly revision?: number;
}

/** Lists a service's instances (every health state). */
export interface ReadOp extends OpBase {
  readonly kind: "read";
  readonly service: string;
  readonly consistency: "linearizable" | "stale";
  /** When ok: the instance ids listed. */
  readonly instances?: readonly string[];
  /** When ok: the index the answer carried. */
  readonly revision?: number;
}

/** A TTL heartbeat (Consul's check pass) for an instance's TTL check. */
export interface HeartbeatOp extends OpBase {
  readonly kind: "heartbeat";
  readonly instance: string;
  readonly checkId: string;
}

/** A read of one instance's health, for the TTL checker. */
export interface HealthReadOp extends OpBase {
  readonly kind: "health";
  readonly instance: string;
  /** When ok: the instance's aggregate status, or "absent". */
  readonly health?: "passing" | "warning" | "critical" | "absent";
}

/** A workload certificate request: a CSR signed by the node. */
export interface CertOp extends OpBase {
  readonly kind: "cert";
  readonly spiffeId: string;
  /** When ok: the leaf, then the intermediates the node returned, PEM. */
  readonly chainPem?: string;
  /** The trust bundle (roots, PEM) fetched from the same node just before the request. */
  readonly bundlePem?: string;
  /** The runner's wall clock (Unix ms) when the request completed: the time to verify at. */
  readonly completedWallMs?: number;
}

export type Operation = RegisterOp | DeregisterOp | ReadOp | HeartbeatOp | HealthReadOp | CertOp;

/** One change a watcher was sent. */
export interface WatchEvent {
  readonly revision: number;
  readonly type: "upsert" | "delete" | "health";
  readonly service: string;
  readonly instance: string;
}

/** One complete message a watcher applied (fragments already joined, reset chunks already joined). */
export type WatchMessage =
  | { readonly atMs: number; readonly kind: "events"; readonly revision: number; readonly coalesced: boolean; readonly events: readonly WatchEvent[] }
  /** A complete reset: after it the watcher holds exactly `instances` (ids) at `revision`. */
  | { readonly atMs: number; readonly kind: "reset"; readonly revision: number; readonly reason: string; readonly instances: readonly string[] }
  | { readonly atMs: number; readonly kind: "progress"; readonly revision: number }
  /** The stream broke, or was refused; the watcher reconnects (possibly to another node) and resumes. */
  | { readonly atMs: number; readonly kind: "disconnected"; readonly error: string }
  | { readonly atMs: number; readonly kind: "connected"; readonly node: string; readonly sinceRevision: number }
  /** xDS: an EDS ClusterLoadAssignment for the watched service, with its version_info, as ACKed. */
  | { readonly atMs: number; readonly kind: "xds"; readonly version: string; readonly endpoints: readonly string[] };

export interface WatchRecord {
  readonly watcher: string;
  readonly transport: "grpc" | "sse" | "xds";
  /** The services watched (the chaos workload watches named services). */
  readonly services: readonly string[];
  readonly messages: readonly WatchMessage[];
}

/** A fault the nemesis injected, from when it began to when it was healed. */
export interface FaultRecord {
  /** The nemesis: crash, pause, partition-isolate, partition-halves, partition-bridge, partition-ring, partition-oneway, slow-links, clock-jump, membership. */
  readonly nemesis: string;
  /** What exactly, for a person: "isolated n2 (leader)", "n1 clock +40s". */
  readonly detail: string;
  readonly nodes: readonly string[];
  readonly startMs: number;
  /** undefined if the run ended before it healed (it never should: the runner heals before the final reads). */
  readonly endMs: number | undefined;
}

/** What one node said about itself when the runner polled it (GET /v1/cluster). */
export interface ClusterObservation {
  readonly atMs: number;
  readonly node: string;
  readonly role: string;
  readonly term: number;
  readonly leader: string;
  readonly commitIndex: number;
}

/** A node's own account of a role change, from its log ("raft role changed"). */
export interface RoleChange {
  readonly node: string;
  readonly role: string;
  readonly term: number;
  readonly leader: string;
}

/** The state after every fault was healed: a linearizable read of each service on each node. */
export interface FinalRead {
  readonly node: string;
  readonly service: string;
  readonly instances: readonly string[];
  readonly revision: number;
}

export interface RunSettings {
  readonly nodes: number;
  readonly durationMs: number;
  readonly nemeses: readonly string[];
  /** How long a write that meets an election waits for a leader before failing (the server's --leader-wait). */
  readonly leaderWaitMs: number;
  /** TTL of the heartbeated instances' checks. */
  readonly ttlMs: number;
  readonly network: "netns" | "proxy";
  readonly seed: number;
}

export interface RunHistory {
  readonly settings: RunSettings;
  readonly ops: readonly Operation[];
  readonly watches: readonly WatchRecord[];
  readonly faults: readonly FaultRecord[];
  readonly observations: readonly ClusterObservation[];
  readonly roleChanges: readonly RoleChange[];
  readonly finalReads: readonly FinalRead[];
  /** Instances registered with a TTL check and never heartbeated: critical by the end. */
  readonly abandonedInstances: readonly string[];
}

/** One problem a checker found, with what a person needs to find it in the history. */
export interface Anomaly {
  readonly message: string;
  readonly opIds?: readonly number[];
  readonly atMs?: number;
}

export interface Verdict {
  readonly checker: string;
  readonly ok: boolean;
  readonly anomalies: readonly Anomaly[];
  /** Figures for the report: counts, shares, latencies. */
  readonly stats: Readonly<Record<string, number | string>>;
}
