// How failures reach an HTTP client: a status code and a JSON body naming what went wrong.

import type { FastifyReply, FastifyRequest } from "fastify";
import { TooManyWatchersError } from "../common/errors.js";
import { CaForbiddenError, CaInputError, CaUnavailableError } from "../ca/authority.js";
import { NotAvailableError } from "../raft/node/errors.js";
import { CaBusyError } from "../ca/csr_pool.js";
import { RaftRefusal } from "../raft/core/types.js";
import { RegistryInputError, RegistryNotFoundError } from "../registry/registry.js";

export interface ErrorBody {
  readonly error: string;
  /** The request field at fault, for a 400. */
  readonly field?: string;
  /** The leader to retry against, when known. */
  readonly leader?: string;
  /** On a 503 for a write: true when it certainly had no effect (safe to send again), false when it may have committed. */
  readonly neverApplied?: boolean;
}

export function sendError(reply: FastifyReply, err: unknown, leaderAddress: (id: string) => string | undefined): FastifyReply {
  if (err instanceof NotAvailableError) {
    const leader = err.leaderHint === "" ? undefined : leaderAddress(err.leaderHint);
    const body: ErrorBody = { error: err.message, neverApplied: err.neverApplied, ...(leader === undefined ? {} : { leader }) };
    return reply.code(503).header("retry-after", "1").send(body);
  }
  if (err instanceof RegistryInputError || err instanceof CaInputError) return reply.code(400).send({ error: err.message, field: err.field });
  if (err instanceof CaForbiddenError) return reply.code(403).send({ error: err.message });
  if (err instanceof CaBusyError) return reply.code(503).header("retry-after", String(err.retryAfterSeconds)).send({ error: err.message });
  if (err instanceof CaUnavailableError) return reply.code(503).header("retry-after", "1").send({ error: err.message });
  if (err instanceof RegistryNotFoundError) return reply.code(404).send({ error: err.message });
  if (err instanceof TooManyWatchersError) return reply.code(429).header("retry-after", "1").send({ error: err.message });
  if (err instanceof RaftRefusal) {
    const code = err.reason === "invalidConfChange" || err.reason === "notVoter" ? 400 : err.reason === "confChangePending" ? 409 : 503;
    // The core refused before touching its log.
    const body: ErrorBody = code === 503 ? { error: err.message, neverApplied: true } : { error: err.message };
    return reply.code(code).send(body);
  }
  reply.log.error({ err }, "request failed");
  return reply.code(500).send({ error: "internal error; see the server log" });
}

/** Consul's routes (its API and ACL endpoints) answer errors as plain text, as Consul does. */
export function sendText(reply: FastifyReply, code: number, message: string): FastifyReply {
  return reply.code(code).type("text/plain; charset=utf-8").send(message);
}

/** A plain-text 503 for a request that met an election or an unreachable leader, naming the leader when known. */
export function sendTextNotAvailable(reply: FastifyReply, err: NotAvailableError, leaderAddress: (id: string) => string | undefined): FastifyReply {
  const leader = err.leaderHint === "" ? undefined : leaderAddress(err.leaderHint);
  void reply.header("retry-after", "1");
  return sendText(reply, 503, leader === undefined ? err.message : `${err.message}; the leader is ${err.leaderHint} (peer address ${leader})`);
}

/** A plain-text answer for an error no handler named: its own status below 500, else a 500 logged with what failed. */
export function sendTextFallback(req: FastifyRequest, reply: FastifyReply, err: Error & { readonly statusCode?: number }, what: string): FastifyReply {
  const status = err.statusCode ?? 500;
  if (status < 500) return sendText(reply, status, err.message);
  req.log.error({ err, url: req.url }, `${what} request failed`);
  return sendText(reply, 500, "internal error; see the server log");
}
