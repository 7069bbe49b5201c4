// A watch on one service's instances: blocking queries (?index=&wait=) that resume from the last
// index seen, on whichever node answers. The per-service index only moves when that service
// changes, so a watch wakes for its own service only.
//
// An index lower than the last one seen (a restored snapshot, a node that lost its state) means
// the history the watch was following is gone: the watch restarts from 0, which answers at once
// with the current instances.
//
// It stays on blocking queries, beside serviceView()'s stream (view.ts), for what its callers rely
// on: the whole list on every call, the per-service index (Consul's semantics), and plain
// request/answer HTTP that any proxy passes.

import type { Logger } from "pino";
import { CairnAbortedError, CairnRequestError } from "./errors.js";
import { backoffDelayMs } from "../common/backoff.js";
import { WireDecodeError, decodeInstances } from "./decode.js";
import { asError } from "../common/errors.js";
import { type Transport, sleep } from "./transport.js";
import type { Instance } from "./types.js";

export type HealthFilter = "passing" | "notCritical" | "all";

export interface InstancesAnswer {
  readonly index: number;
  readonly instances: Instance[];
}

export interface WatchOptions {
  readonly health?: HealthFilter;
  /** How long the cluster holds each blocking query open (it adds up to wait/16 of jitter). */
  readonly waitMs?: number;
  /** Failures the watch survives (it retries with backoff); and the 4xx that ends it. */
  readonly onError?: (err: Error) => void;
}

export const watchLimits = {
  waitMsDefault: 30_000,
  /** The server caps waits at ten minutes. */
  waitMsMax: 600_000,
  /** The server may hold a query up to wait + wait/16; the client allows that plus this margin. */
  timeoutMarginMs: 5_000,
} as const;

export function instancesPath(service: string, health: HealthFilter, blocking?: { index: number; waitMs: number }): string {
  const q = new URLSearchParams({ health });
  if (blocking !== undefined) {
    q.set("index", String(blocking.index));
    q.set("wait", `${blocking.waitMs}ms`);
  }
  return `/v1/registry/services/${encodeURIComponent(service)}/instances?${q.toString()}`;
}

/** Checks the answer's shape at the boundary, so callers get typed data or a clear error. */
export function instancesAnswer(body: unknown, path: string): InstancesAnswer {
  const b = body as { index?: unknown; instances?: unknown } | undefined;
  if (typeof b !== "object" || b === null || typeof b.index !== "number" || !Array.isArray(b.instances)) {
    throw new Error(`GET ${path}: expected {index, instances}, got ${JSON.stringify(body)?.slice(0, 200)}`);
  }
  try {
    return { index: b.index, instances: decodeInstances(b.instances, "instances") };
  } catch (err) {
    if (err instanceof WireDecodeError) throw new Error(`GET ${path}: ${err.message}`, { cause: err });
    throw err;
  }
}

export interface WatchDeps {
  readonly transport: Transport;
  readonly requestTimeoutMs: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly random: () => number;
  readonly logger?: Logger | undefined;
}

export class ServiceWatch {
  private readonly abort = new AbortController();
  readonly done: Promise<void>;

  constructor(
    private readonly deps: WatchDeps,
    private readonly service: string,
    private readonly onChange: (instances: Instance[], index: number) => void | Promise<void>,
    private readonly opts: WatchOptions,
  ) {
    this.done = this.run();
  }

  stop(): void {
    this.abort.abort();
  }

  private async run(): Promise<void> {
    const health = this.opts.health ?? "passing";
    const waitMs = Math.round(Math.min(watchLimits.waitMsMax, Math.max(1, this.opts.waitMs ?? watchLimits.waitMsDefault)));
    const timeoutMs = waitMs + waitMs / 16 + watchLimits.timeoutMarginMs;
    let index = 0;
    let delivered: number | undefined;
    let failures = 0;
    while (!this.abort.signal.aborted) {
      const path = instancesPath(this.service, health, index === 0 ? undefined : { index, waitMs });
      try {
        const answer = instancesAnswer((await this.deps.transport.request("GET", path, undefined, { timeoutMs, signal: this.abort.signal })).body, path);
        failures = 0;
        if (answer.index < index) {
          this.deps.logger?.info({ service: this.service, was: index, now: answer.index }, "the service's index went backwards; the watch restarts from 0");
          index = 0;
          delivered = undefined;
          continue;
        }
        // An index of 0 would make the next query return at once, forever: block from 1 instead.
        index = Math.max(1, answer.index);
        if (delivered === answer.index) continue;
        delivered = answer.index;
        await this.deliver(answer);
      } catch (err) {
        if (err instanceof CairnAbortedError || this.abort.signal.aborted) return;
        const e = asError(err);
        this.opts.onError?.(e);
        // A refused query (a bad service name, a bad parameter) would be refused forever; 429 is load.
        if (e instanceof CairnRequestError && e.status < 500 && e.status !== 429) {
          this.deps.logger?.warn({ service: this.service, err: e.message }, "the watch was refused; it ends");
          return;
        }
        failures++;
        this.deps.logger?.warn({ service: this.service, failures, err: e.message }, "the watch failed; retrying");
        await sleep(backoffDelayMs(failures, this.deps.backoffBaseMs, this.deps.backoffMaxMs, this.deps.random), this.abort.signal).catch(() => undefined);
      }
    }
  }

  /** A callback that throws is reported and does not end the watch. */
  private async deliver(answer: InstancesAnswer): Promise<void> {
    try {
      await this.onChange(answer.instances, answer.index);
    } catch (err) {
      const e = asError(err);
      this.deps.logger?.warn({ service: this.service, err: e.message }, "the watch's onChange callback threw");
      this.opts.onError?.(e);
    }
  }
}
