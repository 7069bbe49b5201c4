// Membership over HTTP: add a node (as a learner; the leader promotes it once caught up),
// remove one, and hand leadership to a named voter.

import type { FastifyInstance } from "fastify";
import type { RaftDriver } from "../../raft/node/driver.js";
import { sendError } from "../errors.js";

const NODE_ID_PATTERN = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$";
const HOST_PORT_PATTERN = "^[^\\s:]+:[0-9]{1,5}$";

export interface JoinReply {
  readonly clusterId: string;
  readonly members: Record<string, string>;
}

export function clusterRoutes(app: FastifyInstance, driver: RaftDriver, clusterId: string): void {
  const leaderAddress = (id: string): string | undefined => driver.peerAddressOf(id);

  app.post<{ Body: { id: string; peerAddress: string } }>("/v1/cluster/members", {
    config: { acl: { need: "operator", access: "write" } },
    schema: {
      body: {
        type: "object",
        required: ["id", "peerAddress"],
        additionalProperties: false,
        properties: { id: { type: "string", pattern: NODE_ID_PATTERN }, peerAddress: { type: "string", pattern: HOST_PORT_PATTERN } },
      },
    },
  }, async (req, reply) => {
    const { id, peerAddress } = req.body;
    if (driver.peerAddressOf(id) !== undefined) {
      return reply.code(409).send({ error: `node ${id} is already a member; remove it first to re-add it` });
    }
    try {
      await driver.changeMembership({ type: "addLearner", node: id, context: peerAddress });
    } catch (err) {
      return sendError(reply, err, leaderAddress);
    }
    const body: JoinReply = { clusterId, members: Object.fromEntries(driver.memberAddresses()) };
    return reply.code(200).send(body);
  });

  app.delete<{ Params: { id: string } }>("/v1/cluster/members/:id", {
    config: { acl: { need: "operator", access: "write" } },
    schema: { params: { type: "object", properties: { id: { type: "string", pattern: NODE_ID_PATTERN } } } },
  }, async (req, reply) => {
    if (driver.peerAddressOf(req.params.id) === undefined) {
      return reply.code(404).send({ error: `node ${req.params.id} is not a member` });
    }
    try {
      await driver.changeMembership({ type: "remove", node: req.params.id });
    } catch (err) {
      return sendError(reply, err, leaderAddress);
    }
    return reply.code(200).send({});
  });

  app.post<{ Body: { to: string } }>("/v1/cluster/leader", {
    config: { acl: { need: "operator", access: "write" } },
    schema: {
      body: { type: "object", required: ["to"], additionalProperties: false, properties: { to: { type: "string", pattern: NODE_ID_PATTERN } } },
    },
  }, async (req, reply) => {
    // Checked here so a mistake is a 400 at once: the leader's own refusal reaches a follower as
    // retryable (it waits out --leader-wait), since a refusal there may be a leader change.
    const target = driver.status().members.find((m) => m.id === req.body.to);
    if (target === undefined || target.role === "learner") {
      return reply.code(400).send({ error: `node ${req.body.to} is not a voter, so it cannot lead; name one of the voters in GET /v1/cluster`, field: "body.to" });
    }
    try {
      // Any node accepts: a follower forwards the request to the leader.
      await driver.requestLeadershipTransfer(req.body.to);
    } catch (err) {
      return sendError(reply, err, leaderAddress);
    }
    return reply.code(202).send({ transferringTo: req.body.to });
  });
}
