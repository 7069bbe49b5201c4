// What every blocking read shares, Consul's and Cairn's own: the bounds of `wait`, its jitter,
// and noticing a client that went away.

import type { FastifyInstance, FastifyReply } from "fastify";

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

/** Makes every blocking read and stream on `app` end at once when `app` closes. Call before routes. */
export function endWaitsOnClose(app: FastifyInstance): void {
  const closing = new AbortController();
  closingSignals.set(app.server, closing.signal);
  app.addHook("preClose", (done) => {
    closing.abort();
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
 * Aborts when the response closes (answered, or the client hung up: its waiter is freed then) or
 * when the server begins to close (the wait ends early and answers what is current).
 */
export function waitEndSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once("close", () => controller.abort());
  const closing = closingSignals.get(reply.server.server);
  return closing === undefined ? controller.signal : AbortSignal.any([controller.signal, closing]);
}
