// Watch clients for tests and benchmarks, built the way a user would build them: gRPC from
// proto/cairn/registry/v1/watch.proto with proto-loader (so the server's hand-assembled bytes are
// checked by a decoder it did not write), and server-sent events over node:http.

import { type ClientRequest, type IncomingMessage, get as httpGet } from "node:http";
import * as grpc from "@grpc/grpc-js";
import { loadProtoService } from "../../src/api/protos.js";

export interface WireInstance {
  readonly id: string;
  readonly service: string;
  readonly address: string;
  readonly port: number;
  readonly status: string;
  readonly modify_revision: number;
}

export interface WireEvent {
  readonly type: string;
  readonly revision: number;
  readonly service: string;
  readonly instance_id: string;
  readonly instance: WireInstance | null;
}

export interface WireResponse {
  readonly kind: "KIND_EVENTS" | "KIND_RESET" | "KIND_PROGRESS" | "KIND_CREATED" | "KIND_CANCELED";
  readonly watch_id: number;
  readonly cancel_reason: string;
  readonly revision: number;
  readonly events: WireEvent[];
  readonly coalesced: boolean;
  readonly instances: WireInstance[];
  readonly reset_first: boolean;
  readonly reset_last: boolean;
  readonly reset_reason: string;
  readonly fragment: boolean;
}

const watchService = loadProtoService("cairn/registry/v1/watch.proto", "cairn.registry.v1.Registry");
export const RegistryClient = grpc.makeGenericClientConstructor(watchService, "Registry");

export interface WatchCreateMessage {
  readonly watch_id?: number;
  readonly services?: string[];
  readonly since_revision?: number;
  readonly progress_interval_ms?: number;
}

/** For a long-running client: hooks instead of (or beside) the recorded messages. */
export interface GrpcWatcherOptions {
  /** Called with each response of this watch, after the watcher applied it to its view. */
  readonly onResponse?: (m: WireResponse) => void;
  /** Called once when the stream ends with an error (CANCELLED after cancel() included). */
  readonly onError?: (err: grpc.ServiceError) => void;
  /** False: keep no responses in `messages`, so memory stays bounded over a long run. Default true. */
  readonly retainMessages?: boolean;
}

type WatchCall = grpc.ClientDuplexStream<{ create_request?: WatchCreateMessage; cancel_request?: { watch_id: number } }, WireResponse>;

/**
 * One watch on a gRPC watch stream of its own, recording what it is sent and the state it holds.
 * `more` creates further watches on the same stream; their responses go to `others`.
 */
export class GrpcWatcher {
  readonly messages: WireResponse[] = [];
  readonly others: WireResponse[] = [];
  readonly view = new Map<string, WireInstance>();
  revision = 0;
  error: grpc.ServiceError | undefined;
  private readonly call: WatchCall;
  private readonly waiters = new Set<() => void>();
  private readonly watchId: number;
  /** Events of a batch whose last fragment has not arrived yet. */
  private readonly fragments: WireEvent[] = [];

  constructor(readonly client: grpc.Client, request: WatchCreateMessage, options: GrpcWatcherOptions = {}) {
    const retain = options.retainMessages ?? true;
    const call = (client as unknown as { Watch(): WatchCall }).Watch();
    this.call = call;
    this.watchId = request.watch_id ?? 1;
    call.write({ create_request: { ...request, watch_id: this.watchId } });
    call.on("data", (m: WireResponse) => {
      if (m.watch_id !== this.watchId) {
        this.others.push(m);
        this.wake();
        return;
      }
      if (retain) this.messages.push(m);
      if (m.kind === "KIND_EVENTS" && m.fragment) {
        this.fragments.push(...m.events);
        options.onResponse?.(m);
        return;
      }
      if (m.kind === "KIND_RESET" && m.reset_first) this.view.clear();
      for (const inst of m.instances) this.view.set(inst.id, inst);
      const events = this.fragments.length === 0 ? m.events : [...this.fragments.splice(0), ...m.events];
      for (const e of events) {
        if (e.type === "TYPE_DELETE") this.view.delete(e.instance_id);
        else if (e.instance !== null) this.view.set(e.instance_id, e.instance);
      }
      if (m.kind === "KIND_EVENTS" || m.kind === "KIND_PROGRESS" || (m.kind === "KIND_RESET" && m.reset_last)) this.revision = m.revision;
      options.onResponse?.(m);
      this.wake();
    });
    call.on("error", (err: grpc.ServiceError) => {
      this.error = err;
      options.onError?.(err);
      this.wake();
    });
  }

  /** Every event received, as "revision:type:id". */
  events(): string[] {
    return this.messages.flatMap((m) => m.events.map((e) => `${e.revision}:${e.type}:${e.instance_id}`));
  }

  /** Messages that completed a batch or a reset: a client is complete up to their revision. */
  complete(): WireResponse[] {
    return this.messages.filter((m) => (m.kind === "KIND_EVENTS" && !m.fragment) || (m.kind === "KIND_RESET" && m.reset_last) || m.kind === "KIND_PROGRESS");
  }

  /** Resolves once `done()` holds, or rejects after `timeoutMs` describing what arrived. */
  async until(done: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (this.error !== undefined && this.error.code !== grpc.status.CANCELLED) throw this.error;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`watch: timed out; at revision ${this.revision} after ${this.messages.length} messages: ${this.events().slice(-5).join(" ")}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.add(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Stops reading the stream (HTTP/2 flow control then holds the server back), or resumes. */
  pause(): void {
    this.call.pause();
  }

  resume(): void {
    this.call.resume();
  }

  /** Creates another watch on this stream. */
  more(request: WatchCreateMessage): void {
    this.call.write({ create_request: request });
  }

  cancelWatch(watchId: number): void {
    this.call.write({ cancel_request: { watch_id: watchId } });
  }

  /** Ends the whole stream. */
  cancel(): void {
    this.call.cancel();
  }

  private wake(): void {
    for (const w of this.waiters) w();
    this.waiters.clear();
  }
}

export function registryClient(grpcAddress: string): grpc.Client {
  return new RegistryClient(grpcAddress, grpc.credentials.createInsecure());
}

export interface SseMessage {
  readonly event: string;
  readonly id: string | undefined;
  readonly data: {
    readonly revision: number;
    readonly events?: { type: string; revision: number; id: string; service?: string }[];
    readonly instances?: { id: string }[];
    readonly reason?: string;
    readonly first?: boolean;
    readonly last?: boolean;
    readonly coalesced?: boolean;
  };
}

/** For a long-running client: a hook instead of (or beside) the recorded messages. */
export interface SseWatcherOptions {
  /** Called with each event as it is parsed. */
  readonly onMessage?: (m: SseMessage) => void;
  /** False: keep no events in `messages`, so memory stays bounded over a long run. Default true. */
  readonly retainMessages?: boolean;
}

/** One server-sent event stream over node:http, which can stop reading (pause) to play a slow client. */
export class SseWatcher {
  readonly messages: SseMessage[] = [];
  status = 0;
  /** Why the stream ended, when it was not closed by close(). */
  error: unknown;
  readonly done: Promise<void>;
  private request: ClientRequest | undefined;
  private response: IncomingMessage | undefined;
  private closed = false;
  private paused = false;

  constructor(url: string, headers: Record<string, string> = {}, options: SseWatcherOptions = {}) {
    const retain = options.retainMessages ?? true;
    this.done = new Promise<void>((resolve) => {
      const req = httpGet(url, { headers }, (res) => {
        this.response = res;
        this.status = res.statusCode ?? 0;
        if (this.paused) res.pause();
        res.setEncoding("utf8");
        let buffered = "";
        res.on("data", (piece: string) => {
          buffered += piece;
          for (let end = buffered.indexOf("\n\n"); end >= 0; end = buffered.indexOf("\n\n")) {
            const frame = buffered.slice(0, end);
            buffered = buffered.slice(end + 2);
            const fields = new Map<string, string>();
            for (const line of frame.split("\n")) {
              const colon = line.indexOf(": ");
              if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 2));
            }
            const data = fields.get("data");
            if (data === undefined) continue;
            const message: SseMessage = { event: fields.get("event") ?? "message", id: fields.get("id"), data: JSON.parse(data) as SseMessage["data"] };
            if (retain) this.messages.push(message);
            options.onMessage?.(message);
          }
        });
        res.on("end", () => resolve());
        res.on("error", (err) => {
          if (!this.closed) this.error = err;
          resolve();
        });
      });
      req.on("error", (err) => {
        if (!this.closed) this.error = err;
        resolve();
      });
      this.request = req;
    });
  }

  /** Stops reading: the socket's buffers fill and the server is held back. */
  pause(): void {
    this.paused = true;
    this.response?.pause();
  }

  resume(): void {
    this.paused = false;
    this.response?.resume();
  }

  events(): string[] {
    return this.messages.flatMap((m) => (m.data.events ?? []).map((e) => `${e.revision}:TYPE_${e.type.toUpperCase()}:${e.id}`));
  }

  lastId(): string | undefined {
    return this.messages.map((m) => m.id).filter((id) => id !== undefined).at(-1);
  }

  async until(done: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`SSE watch: timed out after ${this.messages.length} messages (status ${this.status}): ${this.events().slice(-5).join(" ")}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.closed = true;
    this.request?.destroy();
  }
}
