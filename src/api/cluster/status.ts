// Cluster status: Consul's /v1/status endpoints and Cairn's own cluster view.

import type { FastifyInstance } from "fastify";
import type { RaftDriver } from "../../raft/node/driver.js";
import { clusterHealth } from "../../raft/node/status.js";
import { sendError } from "../errors.js";

/** A member's role, progress and contact; progress and contact are known on the leader only (null elsewhere). */
const memberSchema = {
  type: "object",
  properties: {
    id: { type: "string" },
    peerAddress: { type: "string" },
    role: { type: "string", enum: ["leader", "follower", "learner"] },
    match: { type: ["integer", "null"], description: "the highest log index the member is known to hold (leader only)" },
    lastContactMs: { type: ["integer", "null"], description: "milliseconds since the leader last heard from the member (leader only; null if never)" },
    reachable: { type: ["boolean", "null"], description: "heard from within an election timeout (leader only; null until the leader can tell)" },
  },
} as const;

/** undefined as null: the JSON answer names every field, known or not. */
const orNull = <T>(v: T | undefined): T | null => v ?? null;

export function statusRoutes(app: FastifyInstance, driver: RaftDriver): void {
  // Consul's shape: the leader's peer address as a JSON string, "" when there is none.
  // Fastify sends a returned string as text/plain; Consul clients expect a JSON-encoded string.
  app.get("/v1/status/leader", { config: { acl: { open: "Consul leaves /v1/status open: the leader's address is no secret, and health checks need it" } } }, (_req, reply) => {
    const leader = driver.leader;
    const address = leader === "" ? "" : (driver.peerAddressOf(leader) ?? "");
    return reply.type("application/json").send(JSON.stringify(address));
  });

  app.get("/v1/status/peers", { config: { acl: { open: "Consul leaves /v1/status open" } }, schema: { response: { 200: { type: "array", items: { type: "string" } } } } }, () => {
    return driver.status().members.filter((m) => m.role !== "learner").map((m) => m.peerAddress);
  });

  app.get("/v1/cluster", {
    config: { acl: { need: "operator", access: "read" } },
    schema: {
      response: {
        200: {
          type: "object",
          properties: {
            id: { type: "string" },
            role: { type: "string" },
            leader: { type: "string" },
            term: { type: "integer" },
            commitIndex: { type: "integer" },
            appliedIndex: { type: "integer" },
            lastContactMs: { type: ["integer", "null"] },
            members: { type: "array", items: memberSchema },
          },
        },
      },
    },
  }, () => {
    const s = driver.status();
    return {
      ...s,
      lastContactMs: orNull(s.lastContactMs),
      members: s.members.map((m) => ({ ...m, match: orNull(m.match), lastContactMs: orNull(m.lastContactMs), reachable: orNull(m.reachable) })),
    };
  });

  // Which members are up is known only to the leader, so any node asks it (Consul's autopilot
  // health is answered by the leader too). No leader: 503 at once, not after the leader wait.
  app.get("/v1/cluster/health", {
    config: { acl: { need: "operator", access: "read" } },
    schema: {
      summary: "The leader's view of every member: reachable or not, last contact, how far its log lags; asked of the leader from any node",
      response: {
        200: {
          type: "object",
          properties: {
            leader: { type: "string" },
            term: { type: "integer" },
            commitIndex: { type: "integer" },
            healthy: { type: "boolean", description: "every voter is reachable" },
            failureTolerance: { type: "integer", description: "voters that may still fail before the cluster loses its quorum" },
            members: {
              type: "array",
              items: { ...memberSchema, properties: { ...memberSchema.properties, lagEntries: { type: ["integer", "null"], description: "committed entries the member is not known to hold" } } },
            },
          },
        },
      },
    },
  }, async (_req, reply) => {
    let health;
    try {
      health = clusterHealth(await driver.leaderStatus());
    } catch (err) {
      return sendError(reply, err, (id) => driver.peerAddressOf(id));
    }
    return {
      ...health,
      members: health.members.map((m) => ({
        ...m, match: orNull(m.match), lastContactMs: orNull(m.lastContactMs), reachable: orNull(m.reachable), lagEntries: orNull(m.lagEntries),
      })),
    };
  });
}
