// Requests to a Cairn cluster with failover. Every node serves every route (followers forward
// writes to the leader and confirm reads with it), so a request that fails with a network error,
// a timeout or a 503 is simply retried on the next node, after a jittered exponential backoff.
// Other answers are final: a 4xx would be refused again anywhere.
//
// The client stays on the node that last answered (its keep-alive connection is warm) and moves
// on only when that node fails.

import type { Logger } from "pino";
import { backoffDelayMs } from "../common/backoff.js";
import { CairnAbortedError, type CairnErrorBody, CairnRequestError, CairnUnavailableError } from "./errors.js";
import type { ClientHttp } from "./http.js";

export interface TransportOptions {
  readonly endpoints: readonly string[];
  /** Sends the requests, with the token and the CAs the client was given. */
  readonly http: ClientHttp;
  /** Per attempt, unless a request names its own. */
  readonly requestTimeoutMs: number;
  /** Attempts per request, across all nodes, including the first. */
  readonly attemptsMax: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** Answers larger than this are refused rather than buffered. */
  readonly responseBytesMax: number;
  /** In [0, 1); injected so tests can fix the jitter. */
  readonly random: () => number;
  readonly logger?: Logger | undefined;
}

export interface RequestOptions {
  /** Overrides the transport's per-attempt timeout (long polls wait longer). */
  readonly timeoutMs?: number;
  /** Ends the request, and every retry of it, at once. */
  readonly signal?: AbortSignal;
}

export interface Answer {
  readonly status: number;
  readonly endpoint: string;
  readonly body: unknown;
}

/** Validates and normalizes the base URLs: http(s), no path, no trailing slash. */
export function normalizeEndpoints(endpoints: readonly string[]): string[] {
  if (endpoints.length === 0) throw new RangeError("endpoints: give at least one node's HTTP base URL, such as http://127.0.0.1:8501");
  return endpoints.map((e) => {
    let url: URL;
    try {
      url = new URL(e);
    } catch {
      throw new RangeError(`endpoints: "${e}" is not a URL; give a base URL such as http://127.0.0.1:8501`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new RangeError(`endpoints: "${e}" must be an http:// or https:// URL`);
    if (url.pathname !== "/" || url.search !== "" || url.hash !== "") throw new RangeError(`endpoints: "${e}" must be a base URL without a path or query`);
    return url.origin;
  });
}

/** Sleeps, or rejects with CairnAbortedError as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal, what = "sleep"): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(new CairnAbortedError("wait", what));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new CairnAbortedError("wait", what));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

class RetryableAnswer extends Error {}

export class Transport {
  readonly endpoints: readonly string[];
  /** Index of the node requests go to first. */
  private current = 0;

  constructor(private readonly opts: TransportOptions) {
    this.endpoints = normalizeEndpoints(opts.endpoints);
  }

  /** The node that requests currently go to first. */
  get currentEndpoint(): string {
    return this.endpoints[this.current];
  }

  /** Sends `method path` with an optional JSON body; retries on the next node as described above. */
  async request(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<Answer> {
    const failures: string[] = [];
    for (let attempt = 0; attempt < this.opts.attemptsMax; attempt++) {
      if (attempt > 0) await sleep(backoffDelayMs(attempt, this.opts.backoffBaseMs, this.opts.backoffMaxMs, this.opts.random), opts.signal, `${method} ${path}`);
      const index = this.current;
      const endpoint = this.endpoints[index];
      try {
        const answer = await this.once(endpoint, method, path, body, opts);
        if (answer.status >= 400) throw new CairnRequestError(method, path, endpoint, answer.status, errorBody(answer.body));
        return answer;
      } catch (err) {
        if (opts.signal?.aborted === true) throw new CairnAbortedError(method, path);
        if (!(err instanceof RetryableAnswer) && !isNetworkFailure(err)) throw err;
        const reason = err instanceof Error ? describeError(err) : String(err);
        failures.push(`${endpoint}: ${reason}`);
        this.opts.logger?.debug({ endpoint, method, path, attempt, reason }, "request failed; trying the next node");
        // Concurrent requests that fail on the same node move on by one node, not one each.
        if (this.current === index) this.current = (index + 1) % this.endpoints.length;
      }
    }
    throw new CairnUnavailableError(method, path, failures);
  }

  private async once(endpoint: string, method: string, path: string, body: unknown, opts: RequestOptions): Promise<Answer> {
    const timeout = AbortSignal.timeout(Math.ceil(opts.timeoutMs ?? this.opts.requestTimeoutMs));
    const signal = opts.signal === undefined ? timeout : AbortSignal.any([timeout, opts.signal]);
    const res = await this.opts.http.fetch(`${endpoint}${path}`, {
      method,
      signal,
      headers: body === undefined ? { accept: "application/json" } : { accept: "application/json", "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await readBounded(res, this.opts.responseBytesMax);
    if (res.status === 503) throw new RetryableAnswer(`503 ${errorBody(parseBody(res, text)).error}`);
    return { status: res.status, endpoint, body: parseBody(res, text) };
  }
}

/** fetch rejects with a TypeError for network failures and a DOMException when the timeout fires. */
function isNetworkFailure(err: unknown): boolean {
  if (err instanceof TypeError) return true;
  return err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError");
}

function describeError(err: Error): string {
  if (err.name === "TimeoutError") return "timed out";
  const cause = (err as { cause?: unknown }).cause;
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String((cause).code) : undefined;
  // fetch says only "fetch failed"; what failed is in its cause: a code (ECONNREFUSED, a TLS
  // verification failure) or, for what fetch itself refuses, a message ("bad port").
  const detail = code ?? (cause instanceof Error ? cause.message : undefined);
  return detail === undefined ? err.message : `${err.message} (${detail})`;
}

export function parseBody(res: Response, text: string): unknown {
  if (text === "") return undefined;
  if (!(res.headers.get("content-type") ?? "").includes("json")) return text;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

export function errorBody(body: unknown): CairnErrorBody {
  if (typeof body === "object" && body !== null && typeof (body as { error?: unknown }).error === "string") {
    const b = body as { error: string; leader?: unknown; field?: unknown };
    return {
      error: b.error,
      ...(typeof b.field === "string" ? { field: b.field } : {}),
      ...(typeof b.leader === "string" ? { leader: b.leader } : {}),
    };
  }
  return { error: typeof body === "string" && body !== "" ? body.slice(0, 512) : "(no error message in the answer)" };
}

/** The answer's text; refused (CairnRequestError) past `bytesMax`. */
export async function readBounded(res: Response, bytesMax: number): Promise<string> {
  const declared = Number(res.headers.get("content-length") ?? "0");
  if (declared > bytesMax) {
    await res.body?.cancel();
    throw new CairnRequestError("read", res.url, res.url, res.status, { error: `answer of ${declared} bytes exceeds responseBytesMax (${bytesMax})` });
  }
  if (res.body === null) return "";
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = res.body.getReader();
  for (;;) {
    const chunk: { done: boolean; value?: Uint8Array } = await reader.read();
    const value = chunk.value;
    if (chunk.done || value === undefined) break;
    total += value.byteLength;
    if (total > bytesMax) {
      await reader.cancel();
      throw new CairnRequestError("read", res.url, res.url, res.status, { error: `answer exceeds responseBytesMax (${bytesMax} bytes)` });
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString("utf8");
}
