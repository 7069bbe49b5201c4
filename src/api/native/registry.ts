// Cairn's native registry API: register, deregister, heartbeat, list services, list a service's
// instances by health, get one instance. Reads are linearizable unless ?stale; ?index=N&wait=30s
// makes a read block until the service's index passes N.

import type { FastifyInstance, FastifyReply } from "fastify";
import type { RaftDriver } from "../../raft/node/driver.js";
import { parseGoDuration } from "../../common/duration.js";
import { type Instance, aggregateStatus } from "../../registry/model.js";
import type { RegisterInput, Registry } from "../../registry/registry.js";
import type { WatchKey } from "../../registry/watch.js";
import { WAIT_DEFAULT_MS, WAIT_MAX_MS, onReplyGone, sendEncoded, serverClosing, serviceAnswer, sharedReads, withJitterMs } from "../blocking.js";
import { encodeArrayInSlices } from "../../common/json_chunks.js";
import { sendError } from "../errors.js";
import { FILTERED_HEADER, markFiltered, permissionsOf, type RouteAcl } from "../acl/enforce.js";


const checkSchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    id: { type: "string", maxLength: 256 },
    name: { type: "string", maxLength: 256 },
    ttl: { type: "string", maxLength: 32 },
    http: { type: "string", maxLength: 2048 },
    tcp: { type: "string", maxLength: 300 },
    grpc: { type: "string", maxLength: 600 },
    interval: { type: "string", maxLength: 32 },
    timeout: { type: "string", maxLength: 32 },
    deregisterCriticalAfter: { type: "string", maxLength: 32 },
    status: { type: "string", enum: ["passing", "warning", "critical"] },
    notes: { type: "string", maxLength: 1024 },
  },
} as const;

const registerSchema = {
  type: "object",
  required: ["name"],
  additionalProperties: false,
  properties: {
    id: { type: "string", maxLength: 128 },
    name: { type: "string", maxLength: 63 },
    address: { type: "string", maxLength: 255 },
    port: { type: "integer", minimum: 0, maximum: 65535 },
    tags: { type: "array", maxItems: 64, items: { type: "string", maxLength: 255 } },
    meta: { type: "object", maxProperties: 64, additionalProperties: { type: "string", maxLength: 512 } },
    weights: {
      type: "object", additionalProperties: false, required: ["passing", "warning"],
      properties: { passing: { type: "integer", minimum: 1 }, warning: { type: "integer", minimum: 0 } },
    },
    zone: { type: "string", maxLength: 128 },
    checks: { type: "array", maxItems: 32, items: checkSchema },
  },
} as const;

const readQuerySchema = {
  type: "object",
  properties: {
    stale: { type: "string" },
    index: { type: "string", pattern: "^[0-9]{1,20}$" },
    wait: { type: "string", maxLength: 32 },
  },
} as const;

type Health = "passing" | "notCritical" | "all";

interface ReadQuery {
  stale?: string;
  index?: string;
  wait?: string;
}

/**
 * The service an instance or check belongs to, for its ACL rule. One this node has not applied yet
 * is looked for after a read barrier, so a write acknowledged elsewhere cannot slip past its rule.
 */
export async function serviceOfInstance(registry: Registry, id: string): Promise<string | undefined> {
  const here = registry.state.instance(id);
  if (here !== undefined) return here.service;
  await registry.consistentRead(false);
  return registry.state.instance(id)?.service;
}

export async function serviceOfCheck(registry: Registry, checkId: string): Promise<string | undefined> {
  const here = registry.state.checkById(checkId);
  if (here !== undefined) return here.instance.service;
  await registry.consistentRead(false);
  return registry.state.checkById(checkId)?.instance.service;
}

export function registryRoutes(app: FastifyInstance, registry: Registry, driver: RaftDriver): void {
  const leaderAddress = (id: string): string | undefined => driver.peerAddressOf(id);
  const answers = sharedReads(app, registry);
  const instanceWrite: RouteAcl = { need: "service", access: "write", name: (req) => serviceOfInstance(registry, (req.params as { id: string }).id) };

  app.post<{ Body: RegisterInput }>("/v1/registry/instances", {
    config: { acl: { need: "service", access: "write", name: (req) => (req.body as RegisterInput).name } },
    schema: { body: registerSchema },
  }, async (req, reply) => {
    try {
      const index = await registry.register(req.body);
      return reply.header("x-cairn-index", String(index)).send({ index, id: req.body.id ?? req.body.name });
    } catch (err) {
      return sendError(reply, err, leaderAddress);
    }
  });

  app.delete<{ Params: { id: string } }>("/v1/registry/instances/:id", { config: { acl: instanceWrite } }, async (req, reply) => {
    try {
      const index = await registry.deregister(req.params.id);
      return reply.header("x-cairn-index", String(index)).send({ index });
    } catch (err) {
      return sendError(reply, err, leaderAddress);
    }
  });

  app.put<{ Params: { checkId: string }; Body: { status: "passing" | "warning" | "critical"; output?: string } }>("/v1/registry/checks/:checkId", {
    config: { acl: { need: "service", access: "write", name: (req) => serviceOfCheck(registry, (req.params as { checkId: string }).checkId) } },
    schema: {
      body: {
        type: "object", required: ["status"], additionalProperties: false,
        properties: { status: { type: "string", enum: ["passing", "warning", "critical"] }, output: { type: "string", maxLength: 4096 } },
      },
    },
  }, async (req, reply) => {
    try {
      await registry.updateCheck(req.params.checkId, req.body.status, req.body.output ?? "");
      return reply.send({});
    } catch (err) {
      return sendError(reply, err, leaderAddress);
    }
  });

  app.get<{ Querystring: ReadQuery }>("/v1/registry/services", {
    config: { acl: { filtered: "service" } },
    schema: { querystring: readQuerySchema },
  }, async (req, reply) => {
    if (!await blockingRead(registry, reply, req.query, leaderAddress, { catalog: true })) return reply;
    const index = Math.max(1, registry.waiters.indexOf({ catalog: true }));
    const permissions = permissionsOf(req);
    const encode = async (keep: (name: string) => boolean): ReturnType<typeof encodeArrayInSlices> => encodeArrayInSlices(await registry.views.catalog().services, (s) => keep(s.name),
      (s) => JSON.stringify({ name: s.name, tags: s.tags, instances: s.instances }), { open: `{"index":${index},"services":[`, close: "]}" });
    // The shared answer is for tokens that read every service; any other gets its own, filtered.
    const readsAll = permissions.readsAll("service");
    if (!readsAll && (await registry.views.catalog().services).some((s) => !permissions.allows("service", "read", s.name))) markFiltered(reply);
    const body = readsAll ? await answers.get("services", index, () => encode(() => true)) : await encode((name) => permissions.allows("service", "read", name));
    void reply.header("x-cairn-index", String(index));
    return sendEncoded(reply, body);
  });

  app.get<{ Params: { name: string }; Querystring: ReadQuery & { health?: Health } }>("/v1/registry/services/:name/instances", {
    config: { acl: { filtered: "service" } },
    schema: {
      querystring: { ...readQuerySchema, properties: { ...readQuerySchema.properties, health: { type: "string", enum: ["passing", "notCritical", "all"] } } },
    },
  }, async (req, reply) => {
    const service = req.params.name;
    if (!await blockingRead(registry, reply, req.query, leaderAddress, { service })) return reply;
    if (!permissionsOf(req).allows("service", "read", service)) {
      // As an unknown service: nothing, with Consul's header saying the rules hid something.
      const index = Math.max(1, registry.waiters.indexOf({ service }));
      return reply.header("x-cairn-index", String(index)).header(FILTERED_HEADER, "true").send({ index, instances: [] });
    }
    const health = req.query.health ?? "all";
    // A never-touched service reports 1, as Consul's routes do.
    const { index, body } = serviceAnswer(answers, registry, `instances\n${service}\n${health}`, service, (i) => keep(i, health),
      (i) => JSON.stringify(present(i)), (at) => ({ open: `{"index":${Math.max(1, at)},"instances":[`, close: "]}" }));
    const encoded = await body;
    void reply.header("x-cairn-index", String(Math.max(1, index)));
    return sendEncoded(reply, encoded);
  });

  app.get<{ Params: { id: string }; Querystring: { stale?: string } }>("/v1/registry/instances/:id", { config: { acl: { filtered: "service" } } }, async (req, reply) => {
    try {
      await registry.consistentRead(req.query.stale !== undefined);
    } catch (err) {
      return sendError(reply, err, leaderAddress);
    }
    const found = registry.state.instance(req.params.id);
    // One the token may not read answers as one that does not exist.
    const inst = found !== undefined && permissionsOf(req).allows("service", "read", found.service) ? found : undefined;
    if (inst === undefined) return reply.code(404).send({ error: `instance ${req.params.id} is not registered` });
    return reply.header("x-cairn-index", String(Math.max(1, inst.modifyIndex))).send(present(inst));
  });
}

/**
 * A read at the consistency asked for, blocking when ?index is given. Returns false when an
 * error answer was already sent. The index to answer with is read after, in the same step as the answer.
 */
async function blockingRead(registry: Registry, reply: FastifyReply, query: ReadQuery,
  leaderAddress: (id: string) => string | undefined, key: WatchKey): Promise<boolean> {
  const since = query.index === undefined ? 0 : Number(query.index);
  if (!Number.isSafeInteger(since)) {
    await reply.code(400).send({ error: `index ${query.index} is not a valid index`, field: "index" });
    return false;
  }
  let waitMs = WAIT_DEFAULT_MS;
  if (query.wait !== undefined) {
    const parsed = parseGoDuration(query.wait);
    if (parsed === undefined) {
      await reply.code(400).send({ error: `wait "${query.wait}" is not a duration like "30s"`, field: "wait" });
      return false;
    }
    waitMs = Math.min(parsed, WAIT_MAX_MS);
  }
  try {
    await registry.consistentRead(query.stale !== undefined);
    if (since > 0 && !serverClosing(reply)) {
      await registry.waiters.wait(key, since, withJitterMs(waitMs, Math.random()), onReplyGone(reply));
    }
  } catch (err) {
    await sendError(reply, err, leaderAddress);
    return false;
  }
  return true;
}

function keep(inst: Instance, health: Health): boolean {
  if (health === "all") return true;
  const status = aggregateStatus(inst.checks);
  return health === "passing" ? status === "passing" : status !== "critical";
}

/** An instance as Cairn's native API shows it: its reads and its watch stream alike. */
export function present(inst: Instance): object {
  return {
    id: inst.id,
    service: inst.service,
    address: inst.address === "" ? inst.nodeAddress : inst.address,
    port: inst.port,
    tags: inst.tags,
    meta: inst.meta,
    weights: inst.weights,
    zone: inst.zone,
    node: inst.node,
    status: aggregateStatus(inst.checks),
    checks: inst.checks.map((c) => ({
      id: c.checkId, name: c.name, kind: c.kind, status: c.status, output: c.output, notes: c.notes,
      ...(c.kind === "ttl" ? { ttlMs: c.ttlMs } : { target: c.target, intervalMs: c.intervalMs, timeoutMs: c.timeoutMs }),
      deregisterCriticalAfterMs: c.deregisterCriticalAfterMs,
    })),
    createIndex: inst.createIndex,
    modifyIndex: inst.modifyIndex,
  };
}
