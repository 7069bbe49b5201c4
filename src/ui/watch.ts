// The registry's watch stream (GET /v1/watch, server-sent events) read with fetch() rather than
// EventSource: EventSource cannot send headers, and the token must go in X-Consul-Token, never in
// the URL. So this module does what EventSource would: parse the event stream, remember the id of
// the last complete message (its revision), and on a dropped connection reconnect after a backoff
// with that id as Last-Event-ID, so the server resumes exactly where the stream left off (or
// sends a reset when it no longer holds those events).

import { ApiError, authHeaders, errorOf } from "./api.js";
import { type EventBatch, type ResetChunk, decodeEventBatch, decodeProgress, decodeResetChunk } from "./decode.js";

export interface WatchHandlers {
  readonly events: (batch: EventBatch) => void;
  readonly reset: (chunk: ResetChunk) => void;
  readonly progress: (revision: number) => void;
  /** The stream is open (live), or down and about to retry (with why). */
  readonly connection: (state: "live" | "retrying", detail: string) => void;
  /** The server refused the watch (4xx): retrying would not help. */
  readonly refused: (err: ApiError) => void;
  /** The stream broke: a reset it was in the middle of is incomplete, and is sent again on reconnecting. */
  readonly interrupted: () => void;
}

/** How often the server sends a progress event on a quiet stream: a dead connection shows within it. */
const PROGRESS_INTERVAL = "15s";
/** A stream that sends nothing, not even progress, for this long is dead, though its socket says otherwise. */
const SILENCE_MAX_MS = 40_000;
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 10_000;
/**
 * One message's text, at most. A reset chunk carries many instances; far past what the server
 * sends in one, a message is a broken stream, dropped with a reconnect rather than held in memory.
 */
const MESSAGE_CHARS_MAX = 64 * 1024 * 1024;

export class RegistryWatch {
  private lastEventId = "";
  private controller: AbortController | undefined;
  private stopped = false;
  private retryMs = RETRY_FIRST_MS;

  /** `services`: the services to watch; none watches every service (which needs read on all of them). */
  constructor(private readonly handlers: WatchHandlers, private readonly services: readonly string[] = []) {}

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.controller?.abort();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.stream();
        this.handlers.connection("retrying", "the server ended the stream");
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 429) {
          this.handlers.refused(err);
          return;
        }
        this.handlers.connection("retrying", err instanceof Error ? err.message : String(err));
      }
      this.handlers.interrupted();
      await new Promise((resolve) => setTimeout(resolve, this.retryMs));
      this.retryMs = Math.min(2 * this.retryMs, RETRY_MAX_MS);
    }
  }

  private async stream(): Promise<void> {
    const controller = new AbortController();
    this.controller = controller;
    const query = new URLSearchParams({ progress: PROGRESS_INTERVAL });
    for (const s of this.services) query.append("service", s);
    const path = `/v1/watch?${query.toString()}`;
    const headers = authHeaders({ accept: "text/event-stream", ...(this.lastEventId === "" ? {} : { "last-event-id": this.lastEventId }) });
    const res = await fetch(path, { headers, cache: "no-store", credentials: "omit", signal: controller.signal });
    if (!res.ok) throw await errorOf(res, path);
    if (res.body === null) throw new Error("the watch answered without a body");
    this.handlers.connection("live", "");
    this.retryMs = RETRY_FIRST_MS;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let silence = setTimeout(() => controller.abort(), SILENCE_MAX_MS);
    let buffer = "";
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        clearTimeout(silence);
        silence = setTimeout(() => controller.abort(), SILENCE_MAX_MS);
        buffer += value.replaceAll("\r\n", "\n");
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          this.dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
        if (buffer.length > MESSAGE_CHARS_MAX) throw new Error(`a watch message exceeded ${MESSAGE_CHARS_MAX} characters; reconnecting`);
      }
    } finally {
      clearTimeout(silence);
      controller.abort();
    }
  }

  /** One message of the event stream: `event:`, `id:` and `data:` lines (comments and `retry:` ignored). */
  private dispatch(message: string): void {
    let event = "message";
    let id: string | undefined;
    const data: string[] = [];
    for (const line of message.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "id") id = value;
      else if (field === "data") data.push(value);
    }
    if (data.length === 0) return;
    const payload: unknown = JSON.parse(data.join("\n"));
    if (event === "events") this.handlers.events(decodeEventBatch(payload));
    else if (event === "reset") this.handlers.reset(decodeResetChunk(payload));
    else if (event === "progress") this.handlers.progress(decodeProgress(payload));
    // Only a message handled in full moves the resume point: a reconnect repeats nothing and skips nothing.
    if (id !== undefined) this.lastEventId = id;
  }
}
