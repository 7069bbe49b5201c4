// What every blocking read shares, Consul's and Cairn's own: the bounds of `wait`, its jitter,
// noticing a client that went away, and sending an encoded answer that several readers share.

import { Readable } from "node:stream";
import type { FastifyInstance, FastifyReply } from "fastify";
import type { EncodedBody } from "../common/json_chunks.js";

/** Consul's blocking-query bounds: wait defaults to 5 minutes and is capped at 10. */
export const WAIT_DEFAULT_MS = 5 * 60_000;
export const WAIT_MAX_MS = 10 * 60_000;
/**
 * Consul adds up to wait/16 of random jitter so watchers that started together do not wake
 * together. It must stay under 10%: the npm client gives up on a request after wait plus 10%.
 */
const WAIT_JITTER_FRACTION = 16;

/** The wait plus up to wait/16 of jitter, as Consul adds; `random01` is in [0, 1). */
export function withJitterMs(waitMs: number, random01: number): number {
  return waitMs + Math.floor(random01 * (waitMs / WAIT_JITTER_FRACTION));
}

/** Per HTTP server: aborted when the server begins to close, so that no wait holds up a shutdown. */
const closingSignals = new WeakMap<object, AbortSignal>();
/** Per HTTP server: what ends the waits that do not hold an AbortSignal each (see whenClosing). */
const closingHooks = new WeakMap<object, (() => void)[]>();

/** Makes every blocking read and stream on `app` end at once when `app` closes. Call before routes. */
export function endWaitsOnClose(app: FastifyInstance): void {
  const closing = new AbortController();
  const hooks: (() => void)[] = [];
  closingSignals.set(app.server, closing.signal);
  closingHooks.set(app.server, hooks);
  app.addHook("preClose", (done) => {
    closing.abort();
    for (const hook of hooks) hook();
    done();
  });
  // Answers sent while closing end their connection: an idle keep-alive socket would otherwise
  // hold the close up until its timeout.
  app.addHook("onSend", (_req, reply, payload, done) => {
    if (closing.signal.aborted) void reply.header("connection", "close");
    done(null, payload);
  });
}

/**
 * Runs `end` when `app`'s server begins to close: for a route group whose waiters can all be
 * ended at once (ChangeWaiters.wakeAll), which is far lighter than a signal per wait.
 */
export function whenClosing(app: FastifyInstance, end: () => void): void {
  closingHooks.get(app.server)?.push(end);
}

/** Whether the server answering `reply` has begun to close: a new wait should not begin then. */
export function serverClosing(reply: FastifyReply): boolean {
  return closingSignals.get(reply.server.server)?.aborted === true;
}

/**
 * Registers `end` to run when the response closes: answered, or the client hung up, so that
 * its waiter is freed at once. A listener on the response, nothing more: 10,000 parked queries
 * hold 10,000 of these, where an AbortSignal each cost several hundred bytes more.
 */
export function onReplyGone(reply: FastifyReply): (end: () => void) => void {
  return (end) => {
    // The client may have gone while the read barrier held the request.
    if (reply.raw.destroyed) end();
    else reply.raw.on("close", end);
  };
}

/**
 * Sends an encoded JSON answer that other readers may share: a small one as one Buffer, a large
 * one chunk by chunk at the pace the client reads (never concatenated into one Buffer).
 */
export function sendEncoded(reply: FastifyReply, body: EncodedBody): FastifyReply {
  void reply.type("application/json; charset=utf-8");
  if (body.chunks.length === 1) return reply.send(body.chunks[0]);
  void reply.header("content-length", String(body.bytes));
  return reply.send(Readable.from(body.chunks, { objectMode: false }));
}

/**
 * Aborts when the response closes (answered, or the client hung up: its waiter is freed then) or
 * when the server begins to close (the wait ends early and answers what is current).
 */
export function waitEndSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once("close", () => controller.abort());
  const closing = closingSignals.get(reply.server.server);
  return closing === undefined ? controller.signal : AbortSignal.any([controller.signal, closing]);
}
