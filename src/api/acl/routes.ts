// Consul's ACL HTTP API: bootstrap, tokens and policies, in Consul's shapes, so Consul's tooling
// works. A token's SecretID is answered once, when the token is made (or bootstrapped), and never
// again: only its hash is kept.

import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import {
  AclInputError, AclMissingError, AclNotFoundError, AclPermissionError, type AclService, type PolicyInput, type TokenInput,
} from "../../acl/acl.js";
import type { AclPolicy, AclState, AclToken } from "../../acl/state.js";
import { NotAvailableError } from "../../raft/node/errors.js";
import { sendText, sendTextFallback, sendTextNotAvailable } from "../errors.js";
import type { RaftDriver } from "../../raft/node/driver.js";
import { type RouteAcl } from "./enforce.js";
import { installJsonBodies } from "../consul/routes.js";

/** Token and policy bodies are small; a policy's rules are bounded by RULES_BYTES_MAX (128 KiB). */
const ACL_BODY_BYTES_MAX = 256 * 1024;
const ACL_TAGS = ["acl"];

const aclRead: RouteAcl = { need: "acl", access: "read" };
const aclWrite: RouteAcl = { need: "acl", access: "write" };

const idParams = { type: "object", required: ["id"], properties: { id: { type: "string", minLength: 1, maxLength: 128 } } } as const;
const nameParams = { type: "object", required: ["name"], properties: { name: { type: "string", minLength: 1, maxLength: 128 } } } as const;

const tokenBodyDoc = {
  type: "object",
  description: "Consul's ACLToken: Description, Policies [{ID} or {Name}], Local; AccessorID and SecretID (UUIDs) only when making one",
  properties: {
    AccessorID: { type: "string" }, SecretID: { type: "string" }, Description: { type: "string" }, Local: { type: "boolean" },
    Policies: { type: "array", items: { type: "object", properties: { ID: { type: "string" }, Name: { type: "string" } } } },
  },
} as const;

const policyBodyDoc = {
  type: "object",
  description: "Consul's ACLPolicy: Name, Description, Rules (JSON rules as a string; HCL is refused)",
  properties: { ID: { type: "string" }, Name: { type: "string" }, Description: { type: "string" }, Rules: { type: "string" } },
} as const;

/** Fields Consul's token and policy bodies carry that Cairn reads nothing from, accepted so Consul's tools can send them. */
const IGNORED_TOKEN_FIELDS = new Set(["Roles", "ServiceIdentities", "NodeIdentities", "TemplatedPolicies", "ExpirationTime", "ExpirationTTL", "Namespace", "Partition", "CreateIndex", "ModifyIndex", "CreateTime", "Hash"]);
const IGNORED_POLICY_FIELDS = new Set(["Datacenters", "Namespace", "Partition", "CreateIndex", "ModifyIndex", "Hash"]);

export interface AclRouteDeps {
  readonly acl: AclService;
  readonly driver: RaftDriver;
}

export function aclRoutes(app: FastifyInstance, deps: AclRouteDeps): void {
  void app.register((scope, _opts, done) => {
    installAclErrors(scope, deps.driver);
    installJsonBodies(scope, (message) => new AclInputError("body", message));
    routes(scope, deps);
    done();
  });
}

function routes(app: FastifyInstance, { acl }: AclRouteDeps): void {
  const state = acl.state;
  const disabled = (reply: FastifyReply): FastifyReply | undefined =>
    acl.enabled ? undefined : reply.code(401).type("text/plain; charset=utf-8").send("ACL support disabled: start the servers with --acl on");

  app.put("/v1/acl/bootstrap", {
    config: { acl: { open: "it works once, before any token exists; after that it answers 403, as Consul's does" } },
    schema: { summary: "Make the first management token, once; answers it with its SecretID", tags: ACL_TAGS },
  }, async (_req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    const { token, secretId } = await acl.bootstrap();
    return tokenJson(state, token, secretId);
  });

  app.put("/v1/acl/token", {
    bodyLimit: ACL_BODY_BYTES_MAX,
    config: { acl: aclWrite },
    schema: { summary: "Make a token; the answer carries its SecretID, the only time it is shown", tags: ACL_TAGS, body: tokenBodyDoc },
    validatorCompiler: () => () => true,
  }, async (req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    const { token, secretId } = await acl.createToken(decodeToken(req.body));
    return tokenJson(state, token, secretId);
  });

  app.get("/v1/acl/token/self", {
    config: { acl: { self: true } },
    schema: { summary: "The token the request presents", tags: ACL_TAGS },
  }, (req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    const accessor = req.aclToken?.accessorId;
    const token = accessor === undefined ? undefined : state.token(accessor);
    if (token === undefined) throw new AclNotFoundError();
    return tokenJson(state, token);
  });

  app.get<{ Params: { id: string } }>("/v1/acl/token/:id", {
    config: { acl: aclRead },
    schema: { summary: "A token by AccessorID (its SecretID is never shown again)", tags: ACL_TAGS, params: idParams },
  }, (req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    const token = state.token(req.params.id);
    if (token === undefined) throw new AclMissingError(`ACL not found: no token with AccessorID ${req.params.id}`);
    return tokenJson(state, token);
  });

  app.put<{ Params: { id: string } }>("/v1/acl/token/:id", {
    bodyLimit: ACL_BODY_BYTES_MAX,
    config: { acl: aclWrite },
    schema: { summary: "Update a token's description and policies (its secret stays)", tags: ACL_TAGS, params: idParams, body: tokenBodyDoc },
    validatorCompiler: () => () => true,
  }, async (req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    return tokenJson(state, await acl.updateToken(req.params.id, decodeToken(req.body)));
  });

  app.delete<{ Params: { id: string } }>("/v1/acl/token/:id", {
    config: { acl: aclWrite },
    schema: { summary: "Delete a token: its secret stops working at once on every node that applied the change", tags: ACL_TAGS, params: idParams },
  }, async (req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    await acl.deleteToken(req.params.id);
    return reply.type("application/json").send("true");
  });

  app.get("/v1/acl/tokens", {
    config: { acl: aclRead },
    schema: { summary: "Every token, without secrets", tags: ACL_TAGS },
  }, (_req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    return [...state.allTokens()].sort((a, b) => a.createIndex - b.createIndex).map((t) => tokenJson(state, t));
  });

  app.put("/v1/acl/policy", {
    bodyLimit: ACL_BODY_BYTES_MAX,
    config: { acl: aclWrite },
    schema: { summary: "Make a policy from JSON rules", tags: ACL_TAGS, body: policyBodyDoc },
    validatorCompiler: () => () => true,
  }, async (req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    return policyJson(await acl.createPolicy(decodePolicy(req.body)));
  });

  app.get<{ Params: { name: string } }>("/v1/acl/policy/name/:name", {
    config: { acl: aclRead },
    schema: { summary: "A policy by name", tags: ACL_TAGS, params: nameParams },
  }, (req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    const policy = state.policyByName(req.params.name);
    if (policy === undefined) throw new AclMissingError(`ACL not found: no policy named "${req.params.name}"`);
    return policyJson(policy);
  });

  app.get<{ Params: { id: string } }>("/v1/acl/policy/:id", {
    config: { acl: aclRead },
    schema: { summary: "A policy by ID", tags: ACL_TAGS, params: idParams },
  }, (req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    const policy = state.policy(req.params.id);
    if (policy === undefined) throw new AclMissingError(`ACL not found: no policy with ID ${req.params.id}`);
    return policyJson(policy);
  });

  app.put<{ Params: { id: string } }>("/v1/acl/policy/:id", {
    bodyLimit: ACL_BODY_BYTES_MAX,
    config: { acl: aclWrite },
    schema: { summary: "Update a policy; tokens that name it change with it", tags: ACL_TAGS, params: idParams, body: policyBodyDoc },
    validatorCompiler: () => () => true,
  }, async (req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    const input = decodePolicy(req.body);
    return policyJson(await acl.updatePolicy(req.params.id, input));
  });

  app.delete<{ Params: { id: string } }>("/v1/acl/policy/:id", {
    config: { acl: aclWrite },
    schema: { summary: "Delete a policy; tokens that named it lose what it granted", tags: ACL_TAGS, params: idParams },
  }, async (req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    await acl.deletePolicy(req.params.id);
    return reply.type("application/json").send("true");
  });

  app.get("/v1/acl/policies", {
    config: { acl: aclRead },
    schema: { summary: "Every policy (without their rules, as Consul lists them)", tags: ACL_TAGS },
  }, (_req, reply) => {
    if (disabled(reply) !== undefined) return reply;
    return [...state.allPolicies()].sort((a, b) => a.createIndex - b.createIndex)
      .map((p) => ({ ID: p.id, Name: p.name, Description: p.description, CreateIndex: p.createIndex, ModifyIndex: p.modifyIndex }));
  });
}

// ---------------------------------------------------------------- shapes

function tokenJson(state: AclState, t: AclToken, secretId?: string): Record<string, unknown> {
  return {
    AccessorID: t.accessorId,
    ...(secretId === undefined ? {} : { SecretID: secretId }),
    Description: t.description,
    // A link to a deleted policy is dropped, as Consul drops it.
    Policies: t.policyIds.flatMap((id) => {
      const p = state.policy(id);
      return p === undefined ? [] : [{ ID: p.id, Name: p.name }];
    }),
    Local: t.local,
    CreateTime: new Date(t.createTimeMs).toISOString(),
    CreateIndex: t.createIndex,
    ModifyIndex: t.modifyIndex,
  };
}

function policyJson(p: AclPolicy): { ID: string; Name: string; Description: string; Rules: string; CreateIndex: number; ModifyIndex: number } {
  return { ID: p.id, Name: p.name, Description: p.description, Rules: p.rules, CreateIndex: p.createIndex, ModifyIndex: p.modifyIndex };
}

// ---------------------------------------------------------------- decoding

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function optionalString(body: Record<string, unknown>, field: string): string | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new AclInputError(field, "must be a string");
  return v;
}

function decodeToken(body: unknown): TokenInput {
  if (!isObject(body)) throw new AclInputError("body", 'must be a JSON object such as {"Description":"web","Policies":[{"Name":"web"}]}');
  for (const key of Object.keys(body)) {
    if (!["AccessorID", "SecretID", "Description", "Policies", "Local"].includes(key) && !IGNORED_TOKEN_FIELDS.has(key)) {
      throw new AclInputError(key, "is not a field of a token");
    }
  }
  const accessorId = optionalString(body, "AccessorID");
  const secretId = optionalString(body, "SecretID");
  const local = body.Local;
  if (local !== undefined && typeof local !== "boolean") throw new AclInputError("Local", "must be true or false");
  const policiesRaw = body.Policies ?? [];
  if (!Array.isArray(policiesRaw)) throw new AclInputError("Policies", 'must be a list such as [{"Name":"web"}]');
  const policies = policiesRaw.map((p: unknown, i) => {
    if (!isObject(p)) throw new AclInputError(`Policies[${i}]`, 'must be {"ID": ...} or {"Name": ...}');
    const id = optionalString(p, "ID");
    const name = optionalString(p, "Name");
    return { ...(id === undefined || id === "" ? {} : { id }), ...(name === undefined || name === "" ? {} : { name }) };
  });
  return {
    ...(accessorId === undefined || accessorId === "" ? {} : { accessorId }),
    // On an update a SecretID is only compared with the token's: it can never be changed.
    ...(secretId === undefined || secretId === "" ? {} : { secretId }),
    description: optionalString(body, "Description") ?? "",
    policies,
    local: local ?? false,
  };
}

function decodePolicy(body: unknown): PolicyInput {
  if (!isObject(body)) throw new AclInputError("body", 'must be a JSON object such as {"Name":"web","Rules":"{\\"service\\":{\\"web\\":{\\"policy\\":\\"write\\"}}}"}');
  for (const key of Object.keys(body)) {
    if (!["ID", "Name", "Description", "Rules"].includes(key) && !IGNORED_POLICY_FIELDS.has(key)) throw new AclInputError(key, "is not a field of a policy");
  }
  const name = optionalString(body, "Name");
  if (name === undefined || name === "") throw new AclInputError("Name", "is required");
  return { name, description: optionalString(body, "Description") ?? "", rules: optionalString(body, "Rules") ?? "" };
}

// ---------------------------------------------------------------- errors and bodies

interface RouteError extends Error {
  readonly statusCode?: number;
}

function installAclErrors(scope: FastifyInstance, driver: RaftDriver): void {
  scope.setErrorHandler((err: RouteError, req: FastifyRequest, reply: FastifyReply) => {
    if (err instanceof AclInputError) return sendText(reply, 400, err.message);
    if (err instanceof AclPermissionError || err instanceof AclNotFoundError) return sendText(reply, 403, err.message);
    if (err instanceof AclMissingError) return sendText(reply, 404, err.message);
    if (err instanceof NotAvailableError) return sendTextNotAvailable(reply, err, (id) => driver.peerAddressOf(id));
    return sendTextFallback(req, reply, err, "ACL API");
  });
}

