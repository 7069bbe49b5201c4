// Consul's answer shapes: the JSON schemas that serialize and document them, and the functions
// that turn Cairn's instances into them. Field names and nesting follow Consul's Go api package,
// which is what its clients decode; lists are always [] and maps always {}, never null.

import { createHash } from "node:crypto";
import { formatGoDuration } from "../../common/duration.js";
import type { Check, Instance } from "../../registry/model.js";

/** What every Consul answer about an instance needs to know about where it was asked. */
export interface ConsulContext {
  readonly datacenter: string;
}

const stringMap = { type: "object", additionalProperties: { type: "string" } } as const;
const stringList = { type: "array", items: { type: "string" } } as const;
const weights = { type: "object", properties: { Passing: { type: "integer" }, Warning: { type: "integer" } } } as const;
const locality = { type: "object", properties: { Region: { type: "string" }, Zone: { type: "string" } } } as const;

export const healthCheckSchema = {
  type: "object",
  properties: {
    Node: { type: "string" },
    CheckID: { type: "string" },
    Name: { type: "string" },
    Status: { type: "string", enum: ["passing", "warning", "critical"] },
    Notes: { type: "string" },
    Output: { type: "string" },
    ServiceID: { type: "string" },
    ServiceName: { type: "string" },
    ServiceTags: stringList,
    Type: { type: "string" },
    Definition: {
      type: "object",
      properties: {
        HTTP: { type: "string" },
        TCP: { type: "string" },
        GRPC: { type: "string" },
        Interval: { type: "string" },
        Timeout: { type: "string" },
        DeregisterCriticalServiceAfter: { type: "string" },
      },
    },
    CreateIndex: { type: "integer" },
    ModifyIndex: { type: "integer" },
  },
} as const;

export const catalogServiceSchema = {
  type: "object",
  properties: {
    ID: { type: "string" },
    Node: { type: "string" },
    Address: { type: "string" },
    Datacenter: { type: "string" },
    TaggedAddresses: stringMap,
    NodeMeta: stringMap,
    ServiceKind: { type: "string" },
    ServiceID: { type: "string" },
    ServiceName: { type: "string" },
    ServiceTags: stringList,
    ServiceAddress: { type: "string" },
    ServiceWeights: weights,
    ServiceMeta: stringMap,
    ServicePort: { type: "integer" },
    ServiceEnableTagOverride: { type: "boolean" },
    ServiceLocality: locality,
    CreateIndex: { type: "integer" },
    ModifyIndex: { type: "integer" },
  },
} as const;

/** A service as the agent and health endpoints show it (the catalog flattens it with a Service prefix). */
const agentServiceFields = {
  ID: { type: "string" },
  Service: { type: "string" },
  Tags: stringList,
  Address: { type: "string" },
  Meta: stringMap,
  Port: { type: "integer" },
  Weights: weights,
  EnableTagOverride: { type: "boolean" },
  Locality: locality,
  CreateIndex: { type: "integer" },
  ModifyIndex: { type: "integer" },
} as const;

export const serviceEntrySchema = {
  type: "object",
  properties: {
    Node: {
      type: "object",
      properties: {
        ID: { type: "string" },
        Node: { type: "string" },
        Address: { type: "string" },
        Datacenter: { type: "string" },
        TaggedAddresses: stringMap,
        Meta: stringMap,
      },
    },
    Service: { type: "object", properties: agentServiceFields },
    Checks: { type: "array", items: healthCheckSchema },
  },
} as const;

export const agentServiceSchema = {
  type: "object",
  properties: { ...agentServiceFields, Datacenter: { type: "string" } },
} as const;

export const agentSelfSchema = {
  type: "object",
  properties: {
    Config: {
      type: "object",
      properties: {
        Datacenter: { type: "string" },
        PrimaryDatacenter: { type: "string" },
        NodeName: { type: "string" },
        NodeID: { type: "string" },
        Server: { type: "boolean" },
        Version: { type: "string" },
        Revision: { type: "string" },
      },
    },
    Member: {
      type: "object",
      properties: {
        Name: { type: "string" },
        Addr: { type: "string" },
        Port: { type: "integer" },
        Tags: stringMap,
        Status: { type: "integer" },
      },
    },
    Stats: { type: "object", additionalProperties: stringMap },
    Meta: stringMap,
  },
} as const;

export const catalogServicesSchema = { type: "object", additionalProperties: stringList } as const;

/** Node IDs remembered, at most: a cluster has a handful of nodes, so this is only a guard. */
const NODE_IDS_MAX = 4096;
const nodeIds = new Map<string, string>();

/**
 * Consul nodes have a UUID. Cairn nodes have a name, so derive a stable UUID-shaped id from it:
 * the same node reports the same id on every answer and across restarts. Remembered per name:
 * an answer of 100,000 instances would otherwise hash 100,000 times.
 */
export function nodeId(nodeName: string): string {
  const known = nodeIds.get(nodeName);
  if (known !== undefined) return known;
  const h = createHash("sha256").update(`cairn-node:${nodeName}`).digest("hex");
  const id = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  if (nodeIds.size >= NODE_IDS_MAX) nodeIds.clear();
  nodeIds.set(nodeName, id);
  return id;
}

/** Consul's TaggedAddresses for a node: its LAN and WAN addresses, which are the same here. */
export function taggedAddresses(address: string): Record<string, string> {
  const out: Record<string, string> = { lan: address, wan: address };
  const family = address.includes(":") ? "ipv6" : /^\d+\.\d+\.\d+\.\d+$/.test(address) ? "ipv4" : undefined;
  if (family !== undefined) {
    out[`lan_${family}`] = address;
    out[`wan_${family}`] = address;
  }
  return out;
}

function localityOf(inst: Instance): { Region: string; Zone: string } | undefined {
  return inst.zone === "" ? undefined : { Region: "", Zone: inst.zone };
}

/** What Consul says of the node an instance was registered through, in catalog and health answers alike. */
function nodeFields(inst: Instance, ctx: ConsulContext): object {
  return {
    ID: nodeId(inst.node),
    Node: inst.node,
    Address: inst.nodeAddress,
    Datacenter: ctx.datacenter,
    TaggedAddresses: taggedAddresses(inst.nodeAddress),
  };
}

/** The node half of a catalog entry: the same for every instance the node registered. */
function catalogNode(inst: Instance, ctx: ConsulContext): object {
  return { ...nodeFields(inst, ctx), NodeMeta: {} };
}

/** The service half of a catalog entry. */
function catalogInstance(inst: Instance): object {
  return {
    ServiceKind: "",
    ServiceID: inst.id,
    ServiceName: inst.service,
    ServiceTags: [...inst.tags],
    ServiceAddress: inst.address,
    ServiceWeights: { Passing: inst.weights.passing, Warning: inst.weights.warning },
    ServiceMeta: { ...inst.meta },
    ServicePort: inst.port,
    ServiceEnableTagOverride: false,
    ServiceLocality: localityOf(inst),
    CreateIndex: inst.createIndex,
    ModifyIndex: inst.modifyIndex,
  };
}

/** One entry of GET /v1/catalog/service/:name. ServiceAddress stays empty when the node's applies. */
export function catalogService(inst: Instance, ctx: ConsulContext): object {
  return { ...catalogNode(inst, ctx), ...catalogInstance(inst) };
}

export function healthCheck(inst: Instance, c: Check): object {
  const definition: Record<string, string> = {};
  if (c.kind === "http") definition.HTTP = c.target;
  if (c.kind === "tcp") definition.TCP = c.target;
  if (c.kind === "grpc") definition.GRPC = c.target;
  if (c.kind !== "ttl") {
    definition.Interval = formatGoDuration(c.intervalMs);
    definition.Timeout = formatGoDuration(c.timeoutMs);
  }
  if (c.deregisterCriticalAfterMs > 0) definition.DeregisterCriticalServiceAfter = formatGoDuration(c.deregisterCriticalAfterMs);
  return {
    Node: inst.node,
    CheckID: c.checkId,
    Name: c.name,
    Status: c.status,
    Notes: c.notes,
    Output: c.output,
    ServiceID: inst.id,
    ServiceName: inst.service,
    ServiceTags: [...inst.tags],
    Type: c.kind,
    Definition: definition,
    CreateIndex: inst.createIndex,
    ModifyIndex: inst.modifyIndex,
  };
}

/** The Node of a health entry: the same for every instance the node registered. */
function healthNode(inst: Instance, ctx: ConsulContext): object {
  return { ...nodeFields(inst, ctx), Meta: {} };
}

function healthService(inst: Instance): object {
  return {
    ID: inst.id,
    Service: inst.service,
    Tags: [...inst.tags],
    Address: inst.address,
    Meta: { ...inst.meta },
    Port: inst.port,
    Weights: { Passing: inst.weights.passing, Warning: inst.weights.warning },
    EnableTagOverride: false,
    Locality: localityOf(inst),
    CreateIndex: inst.createIndex,
    ModifyIndex: inst.modifyIndex,
  };
}

/** One entry of GET /v1/health/service/:name. */
export function serviceEntry(inst: Instance, ctx: ConsulContext): object {
  return { Node: healthNode(inst, ctx), Service: healthService(inst), Checks: inst.checks.map((c) => healthCheck(inst, c)) };
}

/** Node parts encoded, remembered per encoder, at most: a guard, as nodes are few. */
const ENCODED_NODES_MAX = 4096;

/**
 * Encodes answer entries straight to JSON, as serviceEntry and catalogService shape them, with
 * each node's half encoded once: in an answer of 100,000 instances it repeats 100,000 times.
 * The output is what JSON.stringify of the shaped object gives (the tests compare them).
 */
export class ConsulEncoder {
  private readonly healthNodes = new Map<string, string>();
  private readonly catalogNodes = new Map<string, string>();

  constructor(private readonly ctx: ConsulContext) {}

  healthEntry(inst: Instance): string {
    const node = this.nodePart(this.healthNodes, inst, () => JSON.stringify(healthNode(inst, this.ctx)));
    const checks = inst.checks.length === 0 ? "[]" : JSON.stringify(inst.checks.map((c) => healthCheck(inst, c)));
    return `{"Node":${node},"Service":${JSON.stringify(healthService(inst))},"Checks":${checks}}`;
  }

  catalogEntry(inst: Instance): string {
    // The node's fields without the closing brace, then the service's without the opening one.
    const node = this.nodePart(this.catalogNodes, inst, () => JSON.stringify(catalogNode(inst, this.ctx)).slice(0, -1));
    return `${node},${JSON.stringify(catalogInstance(inst)).slice(1)}`;
  }

  private nodePart(cache: Map<string, string>, inst: Instance, encode: () => string): string {
    // The node's name and address both go into its half.
    const key = `${inst.node}\n${inst.nodeAddress}`;
    let part = cache.get(key);
    if (part === undefined) {
      part = encode();
      if (cache.size >= ENCODED_NODES_MAX) cache.clear();
      cache.set(key, part);
    }
    return part;
  }
}

/** One value of GET /v1/agent/services, its fields in its schema's order (as the serializer wrote them). */
export function agentService(inst: Instance, ctx: ConsulContext): object {
  return {
    ID: inst.id,
    Service: inst.service,
    Tags: [...inst.tags],
    Address: inst.address,
    Meta: { ...inst.meta },
    Port: inst.port,
    Weights: { Passing: inst.weights.passing, Warning: inst.weights.warning },
    EnableTagOverride: false,
    Locality: localityOf(inst),
    CreateIndex: inst.createIndex,
    ModifyIndex: inst.modifyIndex,
    Datacenter: ctx.datacenter,
  };
}
