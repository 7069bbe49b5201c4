// What every blocking read shares, Consul's and Cairn's own: the bounds of `wait`, its jitter,
// noticing a client that went away, and sending an encoded answer that several readers share.
// HEAD asks for an answer's headers alone, so a HEAD never waits: a blocking read answers at once
// with the current index, and an event stream sends its headers and ends.

import type { ServerResponse } from "node:http";
import { Readable } from "node:stream";
import type { FastifyInstance, FastifyReply } from "fastify";
import { type EncodedBody, encodeArrayInSlices } from "../common/json_chunks.js";
import { SharedAnswers } from "../common/shared_answers.js";
import { TurnBudget } from "../common/slices.js";
import type { Instance } from "../registry/model.js";
import type { Registry } from "../registry/registry.js";

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
    if (reply.raw.destroyed || isHead(reply)) end();
    else reply.raw.on("close", end);
  };
}

/**
 * A route group's shared answers: one build per (query, index) for every reader of it, so
 * 10,000 blocking queries woken by one change cost one evaluation and one encoding. They are
 * forgotten when a snapshot replaces the state (indexes may go back, and then mean something
 * else), and the group's waits end when the server begins to close.
 */
export function sharedReads(app: FastifyInstance, registry: Registry): SharedAnswers {
  const answers = new SharedAnswers();
  registry.state.onChange((_revision, _services, _catalogChanged, delta) => {
    if (delta.kind === "restored") answers.clear();
  });
  whenClosing(app, () => registry.waiters.wakeAll());
  return answers;
}

/**
 * A service's instances that `keep` accepts, in answer order, each encoded by `encode`, as a JSON
 * array inside `wrap(index)`: shared per (query, index), built from the service's view in slices.
 * The index is the service's now, read in the same synchronous step as the view's snapshot.
 */
export function serviceAnswer(answers: SharedAnswers, registry: Registry, query: string, service: string,
  keep: (i: Instance) => boolean, encode: (i: Instance) => string,
  wrap: (index: number) => { readonly open?: string; readonly close?: string } = () => ({})): { index: number; body: EncodedBody | Promise<EncodedBody> } {
  const index = registry.waiters.indexOf({ service });
  const body = answers.get(query, index, async () => {
    const snapshot = registry.views.snapshot(service);
    if (snapshot.index !== index) throw new Error(`service ${service}: its view was taken at index ${snapshot.index}, its answer is for ${index}`);
    return encodeArrayInSlices(await snapshot.instances, keep, encode, wrap(index));
  });
  return { index, body };
}

/**
 * Bytes of answers handed to sockets per event-loop iteration, at most (one answer always goes):
 * 10,000 woken queries of a 100-instance service are 900 MB, and the kernel's copies of them
 * held iterations for 100-380 ms at 64 answers each. At 256 KB the longest was ~30 ms, and all
 * the answers arrived sooner (p99 3-4 s instead of 5.5 s).
 */
export const SEND_BYTES_PER_TURN = 256 * 1024;
const sendBudget = new TurnBudget(SEND_BYTES_PER_TURN);

/**
 * Sends an encoded JSON answer that other readers may share: a small one as one Buffer, a large
 * one chunk by chunk at the pace the client reads (never concatenated into one Buffer). Sends
 * share SEND_BYTES_PER_TURN; past it they wait, in order, for the next iterations.
 */
export function sendEncoded(reply: FastifyReply, body: EncodedBody): FastifyReply {
  void reply.type("application/json; charset=utf-8");
  if (body.chunks.length === 1) {
    sendBudget.run(body.bytes, () => void reply.send(body.chunks[0]));
    return reply;
  }
  void reply.header("content-length", String(body.bytes));
  // A stream writes a chunk each time its socket drains: only its first counts here.
  sendBudget.run(body.chunks[0].length, () => void reply.send(Readable.from(body.chunks, { objectMode: false })));
  return reply;
}

/**
 * Aborts when the response closes (answered, or the client hung up: its waiter is freed then) or
 * when the server begins to close (the wait ends early and answers what is current).
 */
export function waitEndSignal(reply: FastifyReply): AbortSignal {
  if (isHead(reply)) return AbortSignal.abort();
  const controller = new AbortController();
  reply.raw.once("close", () => controller.abort());
  const closing = closingSignals.get(reply.server.server);
  return closing === undefined ? controller.signal : AbortSignal.any([controller.signal, closing]);
}

/** Whether `reply` answers a HEAD: headers only, so nothing may wait or stream. */
function isHead(reply: FastifyReply): boolean {
  return reply.request.method === "HEAD";
}

/**
 * Takes the response from fastify and starts a server-sent event stream with `headers`. For a
 * HEAD it sends the headers and ends the response, and answers undefined: a stream's body would
 * never end, and node discards a HEAD's body anyway, so the connection would be held for nothing.
 */
export function startEventStream(reply: FastifyReply, headers: Readonly<Record<string, string>>): ServerResponse | undefined {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, headers);
  if (!isHead(reply)) return res;
  res.end();
  return undefined;
}
