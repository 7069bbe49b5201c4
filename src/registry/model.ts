// The registry's vocabulary: services, instances and their health checks.

export type HealthStatus = "passing" | "warning" | "critical";

export const HEALTH_STATUSES: readonly HealthStatus[] = ["passing", "warning", "critical"];

export type CheckKind = "ttl" | "http" | "tcp" | "grpc";

export interface CheckDefinition {
  /** Unique across the cluster; defaults to service:<instance id>[:n]. */
  readonly checkId: string;
  readonly name: string;
  readonly kind: CheckKind;
  readonly notes: string;
  /** TTL checks: the service must heartbeat within this long. */
  readonly ttlMs: number;
  /** Probe checks: the target (URL, host:port, or host:port[/service]) and schedule. */
  readonly target: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Remove the instance once this check has been critical this long (0: never). */
  readonly deregisterCriticalAfterMs: number;
}

export interface Check extends CheckDefinition {
  readonly status: HealthStatus;
  readonly output: string;
  /** Leader wall-clock time (ms) at which the status last changed: drives deregister-after. */
  readonly statusSinceMs: number;
}

export interface Weights {
  readonly passing: number;
  readonly warning: number;
}

export interface InstanceDefinition {
  readonly id: string;
  readonly service: string;
  /** Empty means the registering node's address. */
  readonly address: string;
  readonly port: number;
  readonly tags: readonly string[];
  readonly meta: Readonly<Record<string, string>>;
  readonly weights: Weights;
  /** Locality (availability zone), for xDS and client-side routing. */
  readonly zone: string;
  /** The Cairn node that accepted the registration (Consul's "Node"). */
  readonly node: string;
  readonly nodeAddress: string;
}

export interface Instance extends InstanceDefinition {
  readonly checks: readonly Check[];
  readonly createIndex: number;
  readonly modifyIndex: number;
}

/**
 * An instance whose meta sets this key to "true" speaks mutual TLS with the CA's certificates:
 * the mesh's xDS resources then ask for and check SPIFFE certificates (src/api/xds/mesh.ts), as
 * Istio marks endpoints with tlsMode. Consul's `Connect.Native: true` registers it.
 */
export const MTLS_META_KEY = "cairn-mtls";

/** Whether `inst` speaks mutual TLS (its meta says so). */
export function speaksMtls(inst: Pick<InstanceDefinition, "meta">): boolean {
  return inst.meta[MTLS_META_KEY] === "true";
}

/** The worst status among an instance's checks; an instance without checks is passing. */
export function aggregateStatus(checks: readonly Check[]): HealthStatus {
  let worst: HealthStatus = "passing";
  for (const c of checks) {
    if (c.status === "critical") return "critical";
    if (c.status === "warning") worst = "warning";
  }
  return worst;
}

/** Documented limits on what one registration may carry. */
export const registryLimits = {
  nameBytesMax: 63,
  idBytesMax: 128,
  tagsMax: 64,
  tagBytesMax: 255,
  metaKeysMax: 64,
  metaKeyBytesMax: 128,
  metaValueBytesMax: 512,
  checksMax: 32,
  addressBytesMax: 255,
  outputBytesMax: 4096,
} as const;
