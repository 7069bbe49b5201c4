// The operator's side of the HTTP API, for tools that run a cluster rather than services that use
// it: membership and leadership (/v1/cluster), the CA's roots and rotation (/v1/ca), and ACL
// bootstrap, tokens and policies (/v1/acl, in Consul's shapes). Requests fail over as every
// client request does (transport.ts); answers are decoded field by field (decode.ts), so a caller
// gets typed data or an error naming the node and the field.
//
// Written from the API's shapes (src/api/cluster, src/api/ca/routes.ts, src/api/acl/routes.ts),
// not from the server's modules, as types.ts is.

import { type Fields, array, bool, decodeAnswer, fields, oneOf, stringArray, text, whole } from "./decode.js";
import type { Transport } from "./transport.js";

export type MemberRole = "leader" | "follower" | "learner";

export interface ClusterMember {
  readonly id: string;
  readonly peerAddress: string;
  readonly role: MemberRole;
  /** The leader's view of how far the member's log matches its own; null on followers or for the leader itself. */
  readonly match: number | null;
}

/** GET /v1/cluster: the answering node's view of the cluster. */
export interface ClusterStatus {
  /** The node that answered. */
  readonly id: string;
  readonly role: string;
  /** The leader's id; "" during an election. */
  readonly leader: string;
  readonly term: number;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  /** Since this node last heard from the leader; null on the leader. */
  readonly lastContactMs: number | null;
  readonly members: readonly ClusterMember[];
}

export interface CaRootInfo {
  readonly id: string;
  readonly name: string;
  /** The root certificate, PEM. */
  readonly certificate: string;
  /** The root that signs new leaves now; the others are trusted until they retire. */
  readonly active: boolean;
  readonly notBefore: string;
  readonly notAfter: string;
  readonly keyType: string;
  /** Its intermediate, and its certificate cross-signed by the root before it, PEM. */
  readonly intermediates: readonly string[];
  /** When a replaced root leaves the bundle (its last leaf has expired); null while active. */
  readonly retireAfter: string | null;
  readonly createIndex: number;
  readonly modifyIndex: number;
}

/** GET /v1/ca/roots. */
export interface CaRoots {
  readonly trustDomain: string;
  /** The CA's revision. */
  readonly index: number;
  readonly roots: readonly CaRootInfo[];
}

/** A Consul ACL token. SecretID only in the answer that made it (bootstrap or create). */
export interface AclTokenInfo {
  readonly accessorId: string;
  readonly secretId: string | undefined;
  readonly description: string;
  readonly policies: readonly { readonly id: string; readonly name: string }[];
  readonly local: boolean;
  readonly createTime: string;
  readonly createIndex: number;
  readonly modifyIndex: number;
}

export interface AclTokenInput {
  readonly description?: string;
  /** Policies by name. */
  readonly policies?: readonly string[];
  /** A token of this datacenter only. */
  readonly local?: boolean;
}

export interface AclPolicyInput {
  readonly name: string;
  readonly description?: string;
  /** JSON rules as a string, such as {"service":{"web":{"policy":"write"}}}. */
  readonly rules: string;
}

export interface AclPolicyInfo {
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly rules: string;
  readonly createIndex: number;
  readonly modifyIndex: number;
}

const MEMBER_ROLES: readonly MemberRole[] = ["leader", "follower", "learner"];

/** Reached from CairnClient.operator; shares its nodes, token and failover. */
export class CairnOperator {
  constructor(private readonly transport: Transport) {}

  async cluster(): Promise<ClusterStatus> {
    return decodeAnswer(await this.transport.request("GET", "/v1/cluster"), "GET /v1/cluster", decodeClusterStatus);
  }

  /** Adds a node as a learner; the leader promotes it to voter once it has caught up. */
  async addMember(id: string, peerAddress: string): Promise<void> {
    await this.transport.request("POST", "/v1/cluster/members", { id, peerAddress });
  }

  async removeMember(id: string): Promise<void> {
    await this.transport.request("DELETE", `/v1/cluster/members/${encodeURIComponent(id)}`);
  }

  /** Asks the leader to hand leadership to voter `to`; resolves once the leader has started the transfer. */
  async transferLeadership(to: string): Promise<void> {
    await this.transport.request("POST", "/v1/cluster/leader", { to });
  }

  async caRoots(): Promise<CaRoots> {
    return decodeAnswer(await this.transport.request("GET", "/v1/ca/roots"), "GET /v1/ca/roots", (body) => {
      const o = fields(body, "roots answer");
      return {
        trustDomain: text(o, "trustDomain", "roots answer"),
        index: whole(o, "index", "roots answer"),
        roots: array(o.roots, "roots").map((r, i) => decodeRoot(r, `roots[${i}]`)),
      };
    });
  }

  /** A new root, cross-signed by the current one, signs from now on; `keyType` default the cluster's. */
  async rotateCa(keyType?: string): Promise<CaRootInfo> {
    const answer = await this.transport.request("POST", "/v1/ca/rotate", keyType === undefined ? {} : { keyType });
    return decodeAnswer(answer, "POST /v1/ca/rotate", (body) => decodeRoot(fields(body, "rotate answer").root, "root"));
  }

  /** The first management token, once per cluster; a second bootstrap is refused with 403. */
  async aclBootstrap(): Promise<AclTokenInfo> {
    return decodeAnswer(await this.transport.request("PUT", "/v1/acl/bootstrap"), "PUT /v1/acl/bootstrap", (b) => decodeToken(b, "token"));
  }

  async createToken(input: AclTokenInput): Promise<AclTokenInfo> {
    const body = { Description: input.description ?? "", Policies: (input.policies ?? []).map((Name) => ({ Name })), Local: input.local ?? false };
    return decodeAnswer(await this.transport.request("PUT", "/v1/acl/token", body), "PUT /v1/acl/token", (b) => decodeToken(b, "token"));
  }

  async createPolicy(input: AclPolicyInput): Promise<AclPolicyInfo> {
    const body = { Name: input.name, Description: input.description ?? "", Rules: input.rules };
    return decodeAnswer(await this.transport.request("PUT", "/v1/acl/policy", body), "PUT /v1/acl/policy", (b) => {
      const o = fields(b, "policy");
      return {
        id: text(o, "ID", "policy"),
        name: text(o, "Name", "policy"),
        description: text(o, "Description", "policy"),
        rules: text(o, "Rules", "policy"),
        createIndex: whole(o, "CreateIndex", "policy"),
        modifyIndex: whole(o, "ModifyIndex", "policy"),
      };
    });
  }
}

function nullableWhole(o: Fields, key: string, path: string): number | null {
  return o[key] === null ? null : whole(o, key, path);
}

function decodeClusterStatus(body: unknown): ClusterStatus {
  const path = "cluster";
  const o = fields(body, path);
  return {
    id: text(o, "id", path),
    role: text(o, "role", path),
    leader: text(o, "leader", path),
    term: whole(o, "term", path),
    commitIndex: whole(o, "commitIndex", path),
    appliedIndex: whole(o, "appliedIndex", path),
    lastContactMs: nullableWhole(o, "lastContactMs", path),
    members: array(o.members, `${path}.members`).map((m, i) => {
      const at = `${path}.members[${i}]`;
      const member = fields(m, at);
      return { id: text(member, "id", at), peerAddress: text(member, "peerAddress", at), role: oneOf(member, "role", MEMBER_ROLES, at), match: nullableWhole(member, "match", at) };
    }),
  };
}

function decodeRoot(v: unknown, path: string): CaRootInfo {
  const o = fields(v, path);
  const retireAfter = o.retireAfter === null ? null : text(o, "retireAfter", path);
  return {
    id: text(o, "id", path),
    name: text(o, "name", path),
    certificate: text(o, "certificate", path),
    active: bool(o, "active", path),
    notBefore: text(o, "notBefore", path),
    notAfter: text(o, "notAfter", path),
    keyType: text(o, "keyType", path),
    intermediates: stringArray(o.intermediates, `${path}.intermediates`),
    retireAfter,
    createIndex: whole(o, "createIndex", path),
    modifyIndex: whole(o, "modifyIndex", path),
  };
}

function decodeToken(v: unknown, path: string): AclTokenInfo {
  const o = fields(v, path);
  const secretId = o.SecretID === undefined ? undefined : text(o, "SecretID", path);
  return {
    accessorId: text(o, "AccessorID", path),
    secretId,
    description: text(o, "Description", path),
    policies: array(o.Policies, `${path}.Policies`).map((p, i) => {
      const at = `${path}.Policies[${i}]`;
      const link = fields(p, at);
      return { id: text(link, "ID", at), name: text(link, "Name", at) };
    }),
    local: bool(o, "Local", path),
    createTime: text(o, "CreateTime", path),
    createIndex: whole(o, "CreateIndex", path),
    modifyIndex: whole(o, "ModifyIndex", path),
  };
}
