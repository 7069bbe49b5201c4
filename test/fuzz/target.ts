// The node under fuzz: real `cairn server` processes on loopback, their replicated state as the
// API shows it (to prove a rejected request changed nothing), their health, and the clean-up
// between batches that keeps the state small and still.

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { ProcessCluster } from "../support/cluster.js";
import { getJson } from "./http_client.js";
import { fetchRoutes, hasRoute, type Route } from "./routes.js";

/** Every bookkeeping call (state, health, clean-up) answers within this, or the node is unhealthy. */
export const BOOKKEEPING_BOUND_MS = 5000;
/** A replaced root due to retire further off than this cannot retire (and commit) during one case. */
const RETIREMENT_MARGIN_MS = 60_000;
/** The identity the fuzzed node's Workload API socket hands out. */
const WORKLOAD_IDENTITY = "spiffe://cairn.local/ns/default/svc/web";

export interface FuzzTarget {
  readonly cluster: ProcessCluster;
  readonly httpUrls: readonly URL[];
  readonly grpcAddresses: readonly string[];
  /** The Workload API socket (single-node targets only: every node would need its own path). */
  readonly workloadSocket: string | undefined;
  /** The bootstrap (management) token, when the node has ACLs. */
  readonly managementToken: string | undefined;
  readonly routes: readonly Route[];
  /** Members the cluster was founded with; the fuzzer never removes them. */
  readonly foundingMembers: ReadonlySet<string>;
  /** ACL accessors and policy ids that existed before the run; the clean-up keeps them. */
  readonly aclKept: ReadonlySet<string>;
}

export function authHeaders(target: Pick<FuzzTarget, "managementToken">): Record<string, string> {
  return target.managementToken === undefined ? {} : { "x-consul-token": target.managementToken };
}

export async function startTarget(nodes: number): Promise<FuzzTarget> {
  const socketDir = mkdtempSync(join(tmpdir(), "cairn-fuzz-sock-"));
  const workloadSocket = nodes === 1 ? join(socketDir, "workload.sock") : undefined;
  const extra = workloadSocket === undefined ? [] : ["--workload-socket", workloadSocket, "--workload-identities", WORKLOAD_IDENTITY];
  // ACLs on with default deny, as `cairn server` runs by default: the fuzzer's random tokens and
  // rules meet the real authorizer, and its own bookkeeping uses the management token.
  const cluster = await ProcessCluster.start(nodes, extra, { acl: true });
  try {
    const managementToken = await cluster.bootstrapAcl();
    await cluster.agreedLeader();
    const httpUrls = cluster.nodes.map((n) => new URL(`http://${n.info.http}`));
    const routes = await fetchRoutes(httpUrls[0].origin, managementToken === undefined ? {} : { "x-consul-token": managementToken });
    const partial = { managementToken, routes };
    const acl = await aclView(httpUrls[0], partial);
    return {
      cluster,
      httpUrls,
      grpcAddresses: cluster.nodes.map((n) => n.info.grpc),
      workloadSocket,
      managementToken,
      routes,
      foundingMembers: new Set(cluster.nodes.map((n) => n.info.id)),
      aclKept: new Set([...acl.policies.map((p) => p.id), ...acl.tokens.map((t) => t.id)]),
    };
  } catch (err) {
    await cluster.close();
    throw err;
  }
}

// ---------------------------------------------------------------- state

export interface ClusterView {
  readonly commitIndex: number;
  readonly term: number;
  readonly leader: string;
  readonly members: readonly { id: string; role: string }[];
}

export interface StateView {
  readonly commitIndex: number;
  readonly term: number;
  /** Everything replicated that the API shows, canonical, without what changes by itself (health). */
  readonly content: string;
  /** Nothing can commit by itself: no instance has a check (health transitions), no replaced root awaits retirement. */
  readonly still: boolean;
  readonly instanceIds: readonly string[];
  readonly extraMembers: readonly string[];
  readonly aclIds: readonly { kind: "policy" | "token"; id: string }[];
}

export async function clusterView(url: URL, target: Pick<FuzzTarget, "managementToken">): Promise<ClusterView> {
  return (await getJson(url, "/v1/cluster", authHeaders(target), BOOKKEEPING_BOUND_MS)) as ClusterView;
}

interface InstanceView {
  readonly id: string;
  readonly checks: readonly Record<string, unknown>[];
  readonly [field: string]: unknown;
}

/** An instance as it is defined: its health and the index health moves are left out. */
const HEALTH_FIELDS = new Set(["status", "output", "modifyIndex"]);

function definitionOf(inst: InstanceView): unknown {
  const defined = (o: Readonly<Record<string, unknown>>): Record<string, unknown> => Object.fromEntries(Object.entries(o).filter(([k]) => !HEALTH_FIELDS.has(k)));
  return { ...defined(inst), checks: inst.checks.map(defined) };
}

async function aclView(url: URL, target: Pick<FuzzTarget, "managementToken" | "routes">): Promise<{ policies: { id: string; body: unknown }[]; tokens: { id: string; body: unknown }[] }> {
  const headers = authHeaders(target);
  const list = async (path: string, idField: string): Promise<{ id: string; body: unknown }[]> => {
    if (!hasRoute(target.routes, "GET", path)) return [];
    const items = (await getJson(url, path, headers, BOOKKEEPING_BOUND_MS)) as Record<string, unknown>[];
    return items.map((item) => ({ id: String(item[idField]), body: item })).sort((a, b) => a.id.localeCompare(b.id));
  };
  return { policies: await list("/v1/acl/policies", "ID"), tokens: await list("/v1/acl/tokens", "AccessorID") };
}

export async function stateView(url: URL, target: Pick<FuzzTarget, "managementToken" | "routes" | "foundingMembers">): Promise<StateView> {
  const headers = authHeaders(target);
  const cluster = await clusterView(url, target);
  const ca = (await getJson(url, "/v1/ca/roots", headers, BOOKKEEPING_BOUND_MS)) as { roots: { id: string; active: boolean; retireAfter: string | null }[] };
  const services = (await getJson(url, "/v1/registry/services?stale", headers, BOOKKEEPING_BOUND_MS)) as { services: { name: string }[] };
  const instances: InstanceView[] = [];
  for (const s of services.services) {
    const r = (await getJson(url, `/v1/registry/services/${encodeURIComponent(s.name)}/instances?stale`, headers, BOOKKEEPING_BOUND_MS)) as { instances: InstanceView[] };
    instances.push(...r.instances);
  }
  instances.sort((a, b) => a.id.localeCompare(b.id));
  const acl = await aclView(url, target);
  const members = [...cluster.members].map((m) => m.id).sort();
  const content = JSON.stringify({
    members,
    roots: ca.roots.map((r) => [r.id, r.active, r.retireAfter]),
    instances: instances.map(definitionOf),
    acl,
  });
  return {
    commitIndex: cluster.commitIndex,
    term: cluster.term,
    content,
    still: instances.every((i) => i.checks.length === 0) && ca.roots.every((r) => r.active || (r.retireAfter !== null && Date.parse(r.retireAfter) > Date.now() + RETIREMENT_MARGIN_MS)),
    instanceIds: instances.map((i) => i.id),
    extraMembers: members.filter((m) => !target.foundingMembers.has(m)),
    aclIds: [...acl.policies.map((p) => ({ kind: "policy" as const, id: p.id })), ...acl.tokens.map((t) => ({ kind: "token" as const, id: t.id }))],
  };
}

// ---------------------------------------------------------------- health and clean-up

/** Undefined when every node runs and answers HTTP and gRPC health; otherwise what is wrong. */
export async function unhealthy(target: FuzzTarget): Promise<string | undefined> {
  for (const [i, node] of target.cluster.nodes.entries()) {
    if (!node.running) return `node ${node.info.id} is not running${node.lastWords()}`;
    try {
      await getJson(target.httpUrls[i], "/v1/status/leader", authHeaders(target), BOOKKEEPING_BOUND_MS);
      await grpcHealth(target.grpcAddresses[i]);
    } catch (err) {
      return `node ${node.info.id} does not answer its health check: ${(err as Error).message}${node.lastWords()}`;
    }
  }
  return undefined;
}

function grpcHealth(address: string): Promise<void> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const identity = (b: Buffer): Buffer => b;
  return new Promise<void>((resolve, reject) => {
    client.makeUnaryRequest("/grpc.health.v1.Health/Check", identity, identity, Buffer.alloc(0), new grpc.Metadata(), { deadline: Date.now() + BOOKKEEPING_BOUND_MS }, (err, reply) => {
      client.close();
      if (err !== null) reject(new Error(`gRPC health: ${err.message}`));
      else if (reply === undefined || !reply.equals(Buffer.from([0x08, 0x01]))) reject(new Error("gRPC health: not SERVING"));
      else resolve();
    });
  });
}

/**
 * Removes what the fuzzer's accepted requests created (instances, members, ACL policies and
 * tokens), so the state stays small and still between batches.
 */
export async function cleanUp(target: FuzzTarget, view: StateView, url: URL = target.httpUrls[0]): Promise<void> {
  const headers = authHeaders(target);
  const del = async (path: string): Promise<void> => {
    const res = await fetch(new URL(path, url), { method: "DELETE", headers, signal: AbortSignal.timeout(BOOKKEEPING_BOUND_MS) });
    await res.text();
    if (res.status >= 500) throw new Error(`clean-up DELETE ${path} answered ${res.status}`);
  };
  for (const id of view.instanceIds) await del(`/v1/registry/instances/${encodeURIComponent(id)}`);
  for (const id of view.extraMembers) await del(`/v1/cluster/members/${encodeURIComponent(id)}`);
  for (const { kind, id } of view.aclIds) if (!target.aclKept.has(id)) await del(`/v1/acl/${kind}/${encodeURIComponent(id)}`);
}
