// How the client's requests reach a node: the one place that sends HTTP, so every request and
// watch stream carries the ACL token and trusts the same CAs.
//
// Plain http:// endpoints, and https:// ones verified against the system's roots, use Node's
// fetch. Node's fetch cannot be given its own CA without the undici package, so https:// with a
// CA of the caller's (a cluster whose public TLS comes from a private CA, like consul's
// CONSUL_CACERT) goes through node:https with that CA, answered as a WHATWG Response: the rest
// of the client reads both the same way, streams included.

import * as https from "node:https";
import { Readable } from "node:stream";

export interface ClientTlsOptions {
  /**
   * PEM certificates of the CAs that sign the nodes' HTTPS certificates, trusted instead of the
   * system's roots for https:// endpoints.
   */
  readonly ca?: string;
}

export interface ClientHttpOptions {
  /** The ACL token's SecretID, sent as X-Consul-Token on every request; none: the anonymous token. */
  readonly token?: string;
  readonly tls?: ClientTlsOptions;
}

export interface HttpRequest {
  readonly method?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string;
  readonly signal?: AbortSignal;
}

/** Statuses whose answers have no body (a WHATWG Response refuses one). */
const NULL_BODY_STATUSES = new Set([204, 205, 304]);

export class ClientHttp {
  private readonly tokenHeaders: Readonly<Record<string, string>>;
  /** Set when the caller gave its own CA; https:// requests then go through it. */
  private readonly agent: https.Agent | undefined;

  constructor(opts: ClientHttpOptions = {}) {
    const token = opts.token?.trim();
    if (token !== undefined && /[\r\n]/.test(token)) throw new RangeError("token: a token cannot hold a line break; is the token file more than one line?");
    this.tokenHeaders = token === undefined || token === "" ? {} : { "x-consul-token": token };
    const ca = opts.tls?.ca;
    if (ca !== undefined && !ca.includes("-----BEGIN CERTIFICATE-----")) throw new RangeError("tls.ca: expected PEM certificates (-----BEGIN CERTIFICATE-----)");
    // Keep-alive sockets are unref'd by the agent while idle, so they never hold the process open.
    this.agent = ca === undefined ? undefined : new https.Agent({ ca, keepAlive: true });
  }

  /**
   * fetch(), with the token added. It rejects as fetch does: a TypeError for a network or TLS
   * failure (its cause says which), the signal's reason when it aborts.
   */
  fetch(url: string, init: HttpRequest = {}): Promise<Response> {
    const headers = { ...init.headers, ...this.tokenHeaders };
    if (this.agent !== undefined && url.startsWith("https:")) return requestWithAgent(this.agent, new URL(url), { ...init, headers });
    return fetch(url, {
      method: init.method ?? "GET",
      headers,
      ...(init.body === undefined ? {} : { body: init.body }),
      ...(init.signal === undefined ? {} : { signal: init.signal }),
    });
  }
}

function requestWithAgent(agent: https.Agent, url: URL, init: HttpRequest): Promise<Response> {
  const method = init.method ?? "GET";
  const signal = init.signal;
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(abortReason(signal));
      return;
    }
    const headers: Record<string, string> = { ...init.headers };
    if (init.body !== undefined) headers["content-length"] = String(Buffer.byteLength(init.body));
    const req = https.request(url, { method, headers, agent }, (res) => {
      const status = res.statusCode ?? 0;
      const answerHeaders = new Headers();
      for (const [name, value] of Object.entries(res.headers)) {
        if (value === undefined) continue;
        for (const one of Array.isArray(value) ? value : [value]) answerHeaders.append(name, one);
      }
      const bodyless = NULL_BODY_STATUSES.has(status) || method === "HEAD";
      if (bodyless) res.resume();
      // Ending the signal after the answer arrived ends its body too, as fetch's does.
      res.on("close", () => signal?.removeEventListener("abort", onAbort));
      try {
        const response = new Response(bodyless ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), { status, statusText: res.statusMessage ?? "", headers: answerHeaders });
        Object.defineProperty(response, "url", { value: url.href });
        resolve(response);
      } catch (err) {
        res.destroy();
        reject(new TypeError(`fetch failed: ${url.origin} answered HTTP status ${status}, which is not a final answer`, { cause: err }));
      }
    });
    const onAbort = (): void => {
      if (signal !== undefined) req.destroy(abortReason(signal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    req.on("error", (err) => {
      signal?.removeEventListener("abort", onAbort);
      reject(signal?.aborted === true ? abortReason(signal) : new TypeError("fetch failed", { cause: err }));
    });
    req.end(init.body);
  });
}

/** What fetch rejects with when its signal aborts: the signal's reason (a TimeoutError for AbortSignal.timeout). */
function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new DOMException("the request was aborted", "AbortError");
}
