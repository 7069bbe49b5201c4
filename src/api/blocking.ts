// What every blocking read shares, Consul's and Cairn's own: the bounds of `wait`, its jitter,
// and noticing a client that went away.

import type { FastifyReply } from "fastify";

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

/** Aborts when the response closes: answered, or the client hung up (its waiter is freed then). */
export function clientGoneSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once("close", () => controller.abort());
  return controller.signal;
}
