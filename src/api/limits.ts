// What the HTTP server accepts from a client before any route sees the request: header size,
// how long the request may take to arrive, how long an idle keep-alive socket stays, and how many
// connections one address may hold. Answering is never bounded here: a blocking query legitimately
// lasts up to 10 minutes and a write may wait out an election (--leader-wait), and the driver
// bounds those waits itself. So every timeout below is on receiving a request, never on its answer.

import type { Server } from "node:http";
import type { Socket } from "node:net";

export interface HttpLimits {
  /** The request line and headers together, at most; past it the client gets 431. */
  readonly headerBytesMax: number;
  /** The request line and every header must arrive within this, or the client gets 408 (slowloris). */
  readonly headersTimeoutMs: number;
  /** The whole request, headers and body, must arrive within this, or the client gets 408. */
  readonly requestReceiveTimeoutMs: number;
  /** A keep-alive socket with no request in progress is closed after this. */
  readonly keepAliveIdleMs: number;
  /** Open connections from one remote address, at most; past it a connection is answered 429 and closed. 0: no cap. */
  readonly connectionsPerClientMax: number;
  /** How often node looks for requests past their receive timeouts: a slow client is cut within timeout + this. */
  readonly timeoutCheckIntervalMs: number;
}

export const httpLimitDefaults: HttpLimits = {
  // Node's own default; Consul's Go server allows 1 MiB, but no Cairn or Consul request needs more than a few KiB.
  headerBytesMax: 16 * 1024,
  headersTimeoutMs: 10_000,
  // Long enough for the largest body (1 MiB) on a slow link, short enough that a trickled body is cut.
  requestReceiveTimeoutMs: 30_000,
  // fastify's default: longer than the 60 s that common load balancers keep an idle upstream
  // socket, so the balancer, not Cairn, closes it and never reuses a socket Cairn just closed.
  keepAliveIdleMs: 72_000,
  // Consul's http_max_conns_per_client.
  connectionsPerClientMax: 200,
  timeoutCheckIntervalMs: 1_000,
};

/** The limits in force: `partial` over the defaults, checked against each other. */
export function resolveHttpLimits(partial: Partial<HttpLimits> = {}): HttpLimits {
  const limits: HttpLimits = { ...httpLimitDefaults, ...partial };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`HTTP limit ${name} must be a whole number, not ${value}`);
  }
  if (limits.headerBytesMax < 1024) throw new RangeError(`HTTP limit headerBytesMax must be at least 1024 bytes, not ${limits.headerBytesMax}`);
  if (limits.headersTimeoutMs < 1 || limits.requestReceiveTimeoutMs < 1 || limits.timeoutCheckIntervalMs < 1 || limits.keepAliveIdleMs < 1) {
    throw new RangeError("HTTP timeouts must be at least 1 ms: a request with no bound to arrive is what slowloris exploits");
  }
  // Node refuses a headers timeout above the request timeout: the headers are part of the request.
  if (limits.headersTimeoutMs > limits.requestReceiveTimeoutMs) {
    throw new RangeError(`the headers timeout (${limits.headersTimeoutMs} ms) must not exceed the request receive timeout (${limits.requestReceiveTimeoutMs} ms)`);
  }
  return limits;
}

/** What fastify passes to http.createServer, and its own options that set the same bounds. */
export function fastifyServerOptions(limits: HttpLimits): {
  http: { maxHeaderSize: number; headersTimeout: number; connectionsCheckingInterval: number };
  requestTimeout: number;
  keepAliveTimeout: number;
} {
  return {
    http: { maxHeaderSize: limits.headerBytesMax, headersTimeout: limits.headersTimeoutMs, connectionsCheckingInterval: limits.timeoutCheckIntervalMs },
    // Node's requestTimeout covers receiving the request only: once the body is in, the answer may take as long as it needs.
    requestTimeout: limits.requestReceiveTimeoutMs,
    keepAliveTimeout: limits.keepAliveIdleMs,
  };
}

/**
 * Sent to a connection past the per-address cap, before it is closed. An HTTP answer rather
 * than a reset, so the client sees why and when to retry rather than a bare connection error.
 */
function refusal(limit: number): Buffer {
  const body = JSON.stringify({ error: `this address already holds ${limit} connections to this node, the most it may; reuse one (keep-alive) or retry after closing some` });
  return Buffer.from(
    "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n" +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** How long a refused socket may take to take its 429 before it is destroyed. */
const REFUSED_SOCKET_LINGER_MS = 1_000;

/**
 * Caps open connections per remote address on `server`. It runs before node's own connection
 * listener, so a refused socket is answered and closed before any request on it is served.
 */
export function capConnectionsPerClient(server: Server, limit: number, onRefused: (address: string) => void): void {
  if (limit === 0) return;
  const answer = refusal(limit);
  const open = new Map<string, number>();
  server.prependListener("connection", (socket: Socket) => {
    const address = socket.remoteAddress;
    // A socket already gone has no address; node's own listener cleans it up.
    if (address === undefined) return;
    const count = open.get(address) ?? 0;
    if (count >= limit) {
      onRefused(address);
      // No request on this socket is read: what the client sent is discarded with it.
      socket.pause();
      socket.end(answer);
      // A client that never reads the answer must not hold the socket open either.
      socket.setTimeout(REFUSED_SOCKET_LINGER_MS, () => socket.destroy());
      return;
    }
    open.set(address, count + 1);
    socket.once("close", () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left === 0) open.delete(address);
      else open.set(address, left);
    });
  });
}
