// The internal key/value API: writes acknowledged once applied here, linearizable reads by default.

import type { FastifyInstance } from "fastify";
import type { RaftDriver } from "../../raft/node/driver.js";
import { type KvStateMachine, encodeKvCommand } from "../../kv/kv.js";
import { sendError } from "../errors.js";
import { STATE_TAG_KV, withTag } from "../../state/tags.js";

const KEY_SCHEMA = { type: "object", properties: { key: { type: "string", minLength: 1, maxLength: 512 } } } as const;
const VALUE_BYTES_MAX = 64 * 1024;

export function kvRoutes(app: FastifyInstance, driver: RaftDriver, kv: KvStateMachine): void {
  const leaderAddress = (id: string): string | undefined => driver.peerAddressOf(id);

  app.put<{ Params: { key: string }; Body: { value: string } }>("/v1/kv/:key", {
    config: { acl: { need: "key", access: "write", name: (req) => (req.params as { key: string }).key } },
    bodyLimit: VALUE_BYTES_MAX + 1024,
    schema: {
      params: KEY_SCHEMA,
      body: { type: "object", required: ["value"], additionalProperties: false, properties: { value: { type: "string", maxLength: VALUE_BYTES_MAX } } },
    },
  }, async (req, reply) => {
    try {
      const index = await driver.propose(withTag(STATE_TAG_KV, encodeKvCommand({ op: "put", key: req.params.key, value: req.body.value })));
      return reply.header("x-cairn-index", String(index)).send({ index });
    } catch (err) {
      return sendError(reply, err, leaderAddress);
    }
  });

  app.delete<{ Params: { key: string } }>("/v1/kv/:key", {
    config: { acl: { need: "key", access: "write", name: (req) => (req.params as { key: string }).key } },
    schema: { params: KEY_SCHEMA },
  }, async (req, reply) => {
    try {
      const index = await driver.propose(withTag(STATE_TAG_KV, encodeKvCommand({ op: "delete", key: req.params.key })));
      return reply.header("x-cairn-index", String(index)).send({ index });
    } catch (err) {
      return sendError(reply, err, leaderAddress);
    }
  });

  app.get<{ Params: { key: string }; Querystring: { stale?: string } }>("/v1/kv/:key", {
    config: { acl: { need: "key", access: "read", name: (req) => (req.params as { key: string }).key } },
    schema: { params: KEY_SCHEMA, querystring: { type: "object", properties: { stale: { type: "string" } } } },
  }, async (req, reply) => {
    if (req.query.stale === undefined) {
      try {
        await driver.readBarrier();
      } catch (err) {
        return sendError(reply, err, leaderAddress);
      }
    }
    reply.header("x-cairn-index", String(driver.applied));
    const record = kv.get(req.params.key);
    if (record === undefined) return reply.code(404).send({ error: `key ${req.params.key} not found` });
    return reply.send(record);
  });
}
