// One HTTP request as the fuzzer sends it: any method token, any (escaped) path, any header a
// client can put on the wire, any body bytes, with a bound on how long the answer may take.

import { Agent, request } from "node:http";

export interface FuzzRequest {
  readonly method: string;
  /** Path and query, already escaped so that node:http accepts it. */
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer | undefined;
}

export type Outcome =
  /** A whole response arrived. */
  | "answered"
  /** A server-sent event stream opened; the fuzzer closed it after the headers. */
  | "stream"
  /** No headers within the bound. */
  | "timeout"
  /** Headers arrived, the body did not end within the bound. */
  | "bodyTimeout"
  /** The connection failed (reset, refused): a crash, or the server cut the request off. */
  | "connectionError"
  /** node:http refused to put it on the wire (an invalid header character, say): nothing was sent. */
  | "unsendable";

export interface FuzzResponse {
  readonly outcome: Outcome;
  readonly status: number;
  readonly contentType: string;
  /** The start of the body, for failure reports. */
  readonly bodyStart: string;
  readonly elapsedMs: number;
  readonly error?: string;
}

/** How much of a body is kept for a report. */
const BODY_KEPT_BYTES_MAX = 2048;

/** Kept-alive connections, as real clients use them; sockets are reused across cases. */
export const fuzzAgent = new Agent({ keepAlive: true, maxSockets: 8 });

export function send(baseUrl: URL, req: FuzzRequest, boundMs: number): Promise<FuzzResponse> {
  const started = performance.now();
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: Omit<FuzzResponse, "elapsedMs">): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      outgoing.destroy();
      resolve({ ...r, elapsedMs: performance.now() - started });
    };
    let status = 0;
    let contentType = "";
    let kept = "";
    let outgoing: ReturnType<typeof request>;
    try {
      outgoing = request({
        host: baseUrl.hostname,
        port: baseUrl.port,
        method: req.method,
        path: req.path,
        headers: { ...req.headers, ...(req.body === undefined ? {} : { "content-length": String(req.body.length) }) },
        agent: fuzzAgent,
      }, (res) => {
        status = res.statusCode ?? 0;
        contentType = String(res.headers["content-type"] ?? "");
        if (contentType.startsWith("text/event-stream")) {
          finish({ outcome: "stream", status, contentType, bodyStart: "" });
          return;
        }
        res.on("data", (chunk: Buffer) => {
          if (kept.length < BODY_KEPT_BYTES_MAX) kept += chunk.toString("utf8", 0, Math.min(chunk.length, BODY_KEPT_BYTES_MAX - kept.length));
        });
        res.on("end", () => finish({ outcome: "answered", status, contentType, bodyStart: kept }));
        res.on("error", (err) => finish({ outcome: "connectionError", status, contentType, bodyStart: kept, error: err.message }));
      });
    } catch (err) {
      resolve({ outcome: "unsendable", status: 0, contentType: "", bodyStart: "", elapsedMs: 0, error: (err as Error).message });
      return;
    }
    const timer = setTimeout(() => finish({ outcome: status === 0 ? "timeout" : "bodyTimeout", status, contentType, bodyStart: kept }), boundMs);
    outgoing.on("error", (err) => finish({ outcome: "connectionError", status, contentType, bodyStart: kept, error: err.message }));
    outgoing.end(req.body);
  });
}

/** A JSON GET for the fuzzer's own bookkeeping (state, health), bounded; throws when it fails. */
export async function getJson(baseUrl: URL, path: string, headers: Record<string, string>, boundMs: number): Promise<unknown> {
  const r = await fetch(new URL(path, baseUrl), { headers, signal: AbortSignal.timeout(boundMs) });
  const text = await r.text();
  if (!r.ok) throw new Error(`GET ${path} answered ${r.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as unknown;
}
