// How failures reach an HTTP client: a status code and a JSON body naming what went wrong.

import type { FastifyReply } from "fastify";
import { TooManyWatchersError } from "../common/errors.js";
import { CaForbiddenError, CaInputError, CaUnavailableError } from "../ca/authority.js";
import { NotAvailableError } from "../raft/node/errors.js";
import { RaftRefusal } from "../raft/core/types.js";
import { RegistryInputError, RegistryNotFoundError } from "../registry/registry.js";

export interface ErrorBody {
  readonly error: string;
  /** The request field at fault, for a 400. */
  readonly field?: string;
  /** The leader to retry against, when known. */
  readonly leader?: string;
}

export function sendError(reply: FastifyReply, err: unknown, leaderAddress: (id: string) => string | undefined): FastifyReply {
  if (err instanceof NotAvailableError) {
    const leader = err.leaderHint === "" ? undefined : leaderAddress(err.leaderHint);
    return reply.code(503).header("retry-after", "1").send({ error: err.message, ...(leader === undefined ? {} : { leader }) });
  }
  if (err instanceof RegistryInputError || err instanceof CaInputError) return reply.code(400).send({ error: err.message, field: err.field });
  if (err instanceof CaForbiddenError) return reply.code(403).send({ error: err.message });
  if (err instanceof CaUnavailableError) return reply.code(503).header("retry-after", "1").send({ error: err.message });
  if (err instanceof RegistryNotFoundError) return reply.code(404).send({ error: err.message });
  if (err instanceof TooManyWatchersError) return reply.code(429).header("retry-after", "1").send({ error: err.message });
  if (err instanceof RaftRefusal) {
    const code = err.reason === "invalidConfChange" || err.reason === "notVoter" ? 400 : err.reason === "confChangePending" ? 409 : 503;
    return reply.code(code).send({ error: err.message });
  }
  reply.log.error({ err }, "request failed");
  return reply.code(500).send({ error: "internal error; see the server log" });
}
