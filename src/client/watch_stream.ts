// One resumable watch of the registry over GET /v1/watch (server-sent events), that follows the
// cluster rather than one node. It holds `revision`, the last revision it is complete up to, and
//
//   0 <= revision;  an events batch is handed on only when its revision > revision (then revision = it)
//
// so nothing is applied twice. When the stream breaks (the node died, refused, sent garbage, or
// stalled: nothing arrived for `stallMs`, which spans several of the progress notifications it
// asks for) it reconnects to the next node, after a backoff, with Last-Event-ID: revision.
// Revisions are Raft indexes, the same on every node, so the next node sends exactly what came
// after it, or a reset when that is older than its retained window: nothing is missed.
//
// A reset arrives in chunks. They are gathered here and handed on only once the last one is in,
// so a consumer never holds half a reset; a stream cut in the middle of one resumes from before
// it (only the last chunk carries an id) and is sent the whole reset again.
//
// There is no queue: messages are handed on synchronously as they are parsed, and the next chunk
// is read only after that, so a slow consumer slows the reading and the node, which coalesces or
// resets the stream rather than buffering for it.

import type { Logger } from "pino";
import { backoffDelayMs } from "../common/backoff.js";
import { asError } from "../common/errors.js";
import { type EventsMessage, type WatchMessage, WireDecodeError, decodeWatchMessage } from "./decode.js";
import { CairnLimitError, CairnProtocolError, CairnRequestError } from "./errors.js";
import type { ClientHttp } from "./http.js";
import { SseEventTooLargeError, SseParser } from "./sse.js";
import { errorBody, parseBody, readBounded, sleep } from "./transport.js";
import type { Instance, ResetReason } from "./types.js";

export interface WatchStreamOptions {
  /** Normalized base URLs (transport.ts). */
  readonly endpoints: readonly string[];
  /** Sends the requests, with the token and the CAs the client was given. */
  readonly http: ClientHttp;
  /** Where the first connection goes. */
  readonly firstEndpoint: number;
  /** Empty: every service. */
  readonly services: readonly string[];
  readonly progressIntervalMs: number;
  /** A connection that receives nothing for this long (headers included) is given up for the next node. */
  readonly stallMs: number;
  /** A reset with more instances than this ends the watch (CairnLimitError). */
  readonly instancesMax: number;
  /** One server-sent event's text; a longer one ends the watch. */
  readonly eventCharsMax: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly random: () => number;
  readonly logger?: Logger | undefined;
}

/** A whole reset: the state of the watched services at `revision`. */
export interface CompleteReset {
  readonly revision: number;
  readonly reason: ResetReason;
  readonly instances: readonly Instance[];
}

/**
 * Where the stream hands what it receives. events() and reset() may throw CairnLimitError to end
 * the watch (a bound of the consumer's own was exceeded).
 */
export interface WatchStreamHandler {
  /** A batch whose events are all after what was handed on before. */
  events(batch: EventsMessage): void;
  reset(reset: CompleteReset): void;
  /** The stream failed and will retry on the next node; or, when final, it has ended. */
  failed(err: Error, final: boolean): void;
}

export interface WatchStreamStats {
  /** Connections that were answered with an event stream. */
  connects: number;
  /** Connections that broke or were refused (each is followed by a reconnect unless final). */
  failures: number;
  /** Of those, the ones given up because nothing arrived for stallMs. */
  stalls: number;
  resets: number;
  batches: number;
  /** Batches or events at or below the held revision, dropped (a node should never send them). */
  duplicatesSkipped: number;
}

/** A connection that received nothing for stallMs: the node is stopped, overloaded, or cut off. */
export class CairnWatchStalledError extends Error {
  constructor(readonly endpoint: string, readonly stallMs: number) {
    super(`${endpoint} sent nothing on the watch stream for ${stallMs} ms, several progress intervals; moving to the next node`);
    this.name = "CairnWatchStalledError";
  }
}

/** An error answer's body is read only this far: it is a short JSON message. */
const ERROR_ANSWER_BYTES_MAX = 16 * 1024;

/** A reset being gathered on one connection. */
interface PendingReset {
  readonly revision: number;
  readonly reason: ResetReason;
  readonly instances: Instance[];
}

interface ConnectionOutcome {
  readonly err: Error;
  readonly final: boolean;
  /** A message arrived on it: the node worked, so the backoff starts over. */
  readonly delivered: boolean;
}

export class WatchStream {
  readonly stats: WatchStreamStats = { connects: 0, failures: 0, stalls: 0, resets: 0, batches: 0, duplicatesSkipped: 0 };
  /** Resolves once the stream has ended: stopped, or a final failure (handed to failed()). */
  readonly done: Promise<void>;
  private revisionHeld = 0;
  /** False until the first reset is complete: until then a reconnect asks for a fresh state. */
  private holdsState = false;
  private attachedTo: string | undefined;
  private readonly stopper = new AbortController();

  constructor(private readonly opts: WatchStreamOptions, private readonly handler: WatchStreamHandler) {
    this.done = this.run();
  }

  /** The last revision the stream is complete up to (0 before the first state). */
  get revision(): number {
    return this.revisionHeld;
  }

  /** The node the stream is attached to now; undefined while it connects. */
  get endpoint(): string | undefined {
    return this.attachedTo;
  }

  stop(): void {
    this.stopper.abort();
  }

  private async run(): Promise<void> {
    const { endpoints } = this.opts;
    let index = this.opts.firstEndpoint;
    let failures = 0;
    while (!this.stopper.signal.aborted) {
      const endpoint = endpoints[index];
      const outcome = await this.connect(endpoint);
      this.attachedTo = undefined;
      if (outcome === undefined) return;
      this.stats.failures++;
      if (outcome.err instanceof CairnWatchStalledError) this.stats.stalls++;
      if (outcome.final) {
        this.opts.logger?.warn({ endpoint, err: outcome.err.message }, "the watch stream ended");
        this.handler.failed(outcome.err, true);
        return;
      }
      failures = outcome.delivered ? 1 : failures + 1;
      this.opts.logger?.warn({ endpoint, failures, revision: this.revisionHeld, err: outcome.err.message }, "the watch stream failed; resuming on the next node");
      this.handler.failed(outcome.err, false);
      index = (index + 1) % endpoints.length;
      try {
        await sleep(backoffDelayMs(failures, this.opts.backoffBaseMs, this.opts.backoffMaxMs, this.opts.random), this.stopper.signal, "watch reconnect");
      } catch {
        return;
      }
    }
  }

  /** One connection, until it breaks; undefined when it ended because the stream was stopped. */
  private async connect(endpoint: string): Promise<ConnectionOutcome | undefined> {
    const connection = new AbortController();
    const onStop = (): void => connection.abort();
    this.stopper.signal.addEventListener("abort", onStop, { once: true });
    let stalled = false;
    const stallTimer = setTimeout(() => {
      stalled = true;
      connection.abort();
    }, this.opts.stallMs);
    stallTimer.unref();
    let delivered = false;
    try {
      const res = await this.opts.http.fetch(`${endpoint}${this.path()}`, {
        headers: this.holdsState ? { accept: "text/event-stream", "last-event-id": String(this.revisionHeld) } : { accept: "text/event-stream" },
        signal: connection.signal,
      });
      if (res.status !== 200) throw await refusal(res, endpoint, this.path());
      const contentType = res.headers.get("content-type") ?? "";
      if (!contentType.startsWith("text/event-stream") || res.body === null) {
        await res.body?.cancel();
        throw new CairnProtocolError(endpoint, `GET /v1/watch answered 200 with content-type "${contentType}", not an event stream`);
      }
      this.attachedTo = endpoint;
      this.stats.connects++;
      this.opts.logger?.debug({ endpoint, revision: this.revisionHeld }, "the watch stream is attached");
      const parser = new SseParser(this.opts.eventCharsMax);
      const decoder = new TextDecoder();
      const reader = res.body.getReader();
      let pending: PendingReset | undefined;
      for (;;) {
        const chunk: { done: boolean; value?: Uint8Array } = await reader.read();
        if (chunk.done || chunk.value === undefined) throw new Error(`${endpoint} ended the watch stream`);
        stallTimer.refresh();
        for (const sse of parser.feed(decoder.decode(chunk.value, { stream: true }))) {
          let message: WatchMessage | undefined;
          try {
            message = decodeWatchMessage(sse);
          } catch (err) {
            if (err instanceof WireDecodeError) throw new CairnProtocolError(endpoint, err.message, { cause: err });
            throw err;
          }
          if (message === undefined) continue;
          pending = this.accept(message, pending, endpoint);
          delivered = true;
        }
      }
    } catch (caught) {
      if (this.stopper.signal.aborted) return undefined;
      const err = stalled ? new CairnWatchStalledError(endpoint, this.opts.stallMs) : asError(caught);
      const final = finalError(err);
      return { err: final ?? err, final: final !== undefined, delivered };
    } finally {
      clearTimeout(stallTimer);
      this.stopper.signal.removeEventListener("abort", onStop);
      // Releases the connection whatever ended the read.
      connection.abort();
    }
  }

  private path(): string {
    const q = new URLSearchParams();
    for (const s of this.opts.services) q.append("service", s);
    q.set("progress", `${this.opts.progressIntervalMs}ms`);
    return `/v1/watch?${q.toString()}`;
  }

  /** Applies one message of a connection; returns the reset it is gathering, if any. */
  private accept(message: WatchMessage, pending: PendingReset | undefined, endpoint: string): PendingReset | undefined {
    switch (message.kind) {
      case "reset": {
        if (!message.first && pending?.revision !== message.revision) {
          throw new CairnProtocolError(endpoint, `a reset chunk at revision ${message.revision} without the first chunk of that reset`);
        }
        // A first chunk starts a reset over, even in the middle of another one.
        const gathering: PendingReset = message.first ? { revision: message.revision, reason: message.reason, instances: [] } : (pending as PendingReset);
        if (gathering.instances.length + message.instances.length > this.opts.instancesMax) {
          throw new CairnLimitError("instancesMax", this.opts.instancesMax,
            `the watch of ${this.describeServices()} was sent a reset of more than instancesMax (${this.opts.instancesMax}) instances; raise instancesMax or watch fewer services`);
        }
        for (const inst of message.instances) gathering.instances.push(inst);
        if (!message.last) return gathering;
        this.revisionHeld = gathering.revision;
        this.holdsState = true;
        this.stats.resets++;
        this.handler.reset(gathering);
        return undefined;
      }
      case "events": {
        if (pending !== undefined) throw new CairnProtocolError(endpoint, `an events batch at revision ${message.revision} in the middle of a reset`);
        if (!this.holdsState) throw new CairnProtocolError(endpoint, `an events batch at revision ${message.revision} before the watch's first state`);
        if (message.revision <= this.revisionHeld) {
          this.stats.duplicatesSkipped++;
          this.opts.logger?.warn({ endpoint, batch: message.revision, held: this.revisionHeld }, "the watch stream repeated a batch it had sent; skipped");
          return undefined;
        }
        const held = this.revisionHeld;
        const fresh = message.events.filter((e) => e.revision > held);
        if (fresh.length < message.events.length) this.stats.duplicatesSkipped++;
        this.revisionHeld = message.revision;
        this.stats.batches++;
        this.handler.events(fresh.length === message.events.length ? message : { ...message, events: fresh });
        return undefined;
      }
      case "progress":
        if (pending !== undefined) throw new CairnProtocolError(endpoint, `a progress notification at revision ${message.revision} in the middle of a reset`);
        // Complete up to there: a reconnect resumes from it and is sent less again.
        if (this.holdsState && message.revision > this.revisionHeld) this.revisionHeld = message.revision;
        return undefined;
    }
  }

  private describeServices(): string {
    return this.opts.services.length === 0 ? "every service" : this.opts.services.join(", ");
  }
}

/** A refusal that would be the same on any node ends the watch; others are retried on the next one. */
function finalError(err: Error): Error | undefined {
  if (err instanceof CairnLimitError) return err;
  if (err instanceof SseEventTooLargeError) return new CairnLimitError("responseBytesMax", err.eventCharsMax, err.message);
  if (err instanceof CairnRequestError && err.status < 500 && err.status !== 429) return err;
  return undefined;
}

/** A non-200 answer to GET /v1/watch, as the error it is. */
async function refusal(res: Response, endpoint: string, path: string): Promise<CairnRequestError> {
  let body: unknown;
  try {
    body = parseBody(res, await readBounded(res, ERROR_ANSWER_BYTES_MAX));
  } catch {
    body = undefined;
  }
  return new CairnRequestError("GET", path, endpoint, res.status, errorBody(body));
}
