// Consul's query options on reads (consistency, datacenter, filter, blocking index and wait): one
// shape for every Consul read route, the catalog's, health's and the intentions' alike.

/** Consul's query options as they arrive, before readOptions() checks them. */
export interface ReadQuery {
  readonly index?: string;
  readonly wait?: string;
  readonly stale?: string;
  readonly consistent?: string;
  readonly dc?: string;
  readonly filter?: string;
}

export interface ReadOptions {
  readonly stale: boolean;
  /** 0: answer at once. Otherwise block until the index passes this. */
  readonly sinceIndex: number;
  readonly waitMs: number;
}

export const readQueryProperties = {
  index: { type: "string", description: "block until the index passes this one (uint64; 0 or absent: do not block)" },
  wait: { type: "string", description: "how long to block, a Go duration (default 5m, at most 10m)" },
  stale: { type: "string", description: "present: answer from this node's state without asking the leader" },
  consistent: { type: "string", description: "present: linearizable read (the default here)" },
  dc: { type: "string", description: "datacenter; only this cluster's own" },
  filter: { type: "string", description: "not supported: a filter is refused rather than ignored" },
} as const;

export const readQuerySchema = { type: "object", properties: readQueryProperties } as const;
