// Cluster status: Consul's /v1/status endpoints and Cairn's own cluster view.

import type { FastifyInstance } from "fastify";
import type { RaftDriver } from "../../raft/node/driver.js";

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
            members: {
              type: "array",
              items: {
                type: "object",
                properties: {
                  id: { type: "string" },
                  peerAddress: { type: "string" },
                  role: { type: "string", enum: ["leader", "follower", "learner"] },
                  match: { type: ["integer", "null"] },
                },
              },
            },
          },
        },
      },
    },
  }, () => {
    const s = driver.status();
    return { ...s, lastContactMs: s.lastContactMs ?? null, members: s.members.map((m) => ({ ...m, match: m.match ?? null })) };
  });
}
