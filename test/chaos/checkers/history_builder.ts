// Known-good and known-bad histories for the checker tests, written as a few lines each: every
// operation gets the next id, and what a test does not care about gets a plain default.

import type {
  CertOp, ClusterObservation, DeregisterOp, FaultRecord, FinalRead, HealthReadOp, HeartbeatOp, Operation, Outcome, ReadOp,
  RegisterOp, RoleChange, RunHistory, RunSettings, WatchRecord,
} from "../../../chaos/history.js";

/** [invokedAtMs, completedAtMs]; a missing completion means the outcome is unknown. */
export type Interval = readonly [number, number?];

interface Common {
  readonly client?: string;
  readonly node?: string;
  readonly outcome?: Outcome;
  readonly status?: number;
}

export const DEFAULT_SETTINGS: RunSettings = {
  nodes: 3, durationMs: 60_000, nemeses: [], leaderWaitMs: 5_000, ttlMs: 3_000, network: "proxy", seed: 1,
};

export class HistoryBuilder {
  readonly ops: Operation[] = [];
  readonly watches: WatchRecord[] = [];
  readonly faults: FaultRecord[] = [];
  readonly observations: ClusterObservation[] = [];
  readonly roleChanges: RoleChange[] = [];
  readonly finalReads: FinalRead[] = [];
  readonly abandonedInstances: string[] = [];
  private nextId = 1;

  constructor(private readonly settings: Partial<RunSettings> = {}) {}

  private base(at: Interval, c: Common): Omit<RegisterOp, "kind" | "service" | "instance" | "address" | "port"> {
    const outcome = c.outcome ?? (at[1] === undefined ? "unknown" : "ok");
    return {
      id: this.nextId++, client: c.client ?? "c1", node: c.node ?? "n1", invokedAtMs: at[0],
      completedAtMs: outcome === "unknown" ? undefined : at[1], outcome, ...(c.status === undefined ? {} : { status: c.status }),
    };
  }

  private add<T extends Operation>(op: T): T {
    this.ops.push(op);
    return op;
  }

  register(instance: string, at: Interval, o: Common & { service?: string; revision?: number; address?: string; port?: number } = {}): RegisterOp {
    return this.add({ ...this.base(at, o), kind: "register", service: o.service ?? "web", instance,
      address: o.address ?? "10.0.0.1", port: o.port ?? 8080, ...(o.revision === undefined ? {} : { revision: o.revision }) });
  }

  deregister(instance: string, at: Interval, o: Common & { service?: string; revision?: number } = {}): DeregisterOp {
    return this.add({ ...this.base(at, o), kind: "deregister", service: o.service ?? "web", instance,
      ...(o.revision === undefined ? {} : { revision: o.revision }) });
  }

  read(instances: readonly string[], at: Interval, o: Common & { service?: string; consistency?: "linearizable" | "stale"; revision?: number } = {}): ReadOp {
    return this.add({ ...this.base(at, o), kind: "read", service: o.service ?? "web", consistency: o.consistency ?? "linearizable",
      instances, revision: o.revision ?? 1 });
  }

  heartbeat(instance: string, at: Interval, o: Common = {}): HeartbeatOp {
    return this.add({ ...this.base(at, o), kind: "heartbeat", instance, checkId: `ttl-${instance}` });
  }

  health(instance: string, health: HealthReadOp["health"], at: Interval, o: Common = {}): HealthReadOp {
    return this.add({ ...this.base(at, o), kind: "health", instance, health });
  }

  cert(spiffeId: string, at: Interval, o: Common & { chainPem?: string; bundlePem?: string; completedWallMs?: number } = {}): CertOp {
    return this.add({ ...this.base(at, o), kind: "cert", spiffeId,
      ...(o.chainPem === undefined ? {} : { chainPem: o.chainPem }),
      ...(o.bundlePem === undefined ? {} : { bundlePem: o.bundlePem }),
      ...(o.completedWallMs === undefined ? {} : { completedWallMs: o.completedWallMs }) });
  }

  fault(nemesis: string, startMs: number, endMs: number | undefined, nodes: readonly string[] = ["n1"]): FaultRecord {
    const f: FaultRecord = { nemesis, detail: `${nemesis} ${nodes.join(",")}`, nodes, startMs, endMs };
    this.faults.push(f);
    return f;
  }

  finalRead(service: string, instances: readonly string[], revision: number, node = "n1"): void {
    this.finalReads.push({ node, service, instances, revision });
  }

  build(): RunHistory {
    return {
      settings: { ...DEFAULT_SETTINGS, ...this.settings },
      ops: this.ops, watches: this.watches, faults: this.faults, observations: this.observations,
      roleChanges: this.roleChanges, finalReads: this.finalReads, abandonedInstances: this.abandonedInstances,
    };
  }
}
