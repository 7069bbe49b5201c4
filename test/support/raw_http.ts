// HTTP/1.1 by hand over a TCP socket, for tests that must control every byte and see exactly when
// the server ends a connection: a client that trickles its headers, that holds sockets open, or
// that sends HEAD and watches whether the socket is freed.

import { type Socket, connect } from "node:net";

/** Connects to "host:port", from `localAddress` when given (any 127.x.y.z works on Linux loopback). */
export function openSocket(hostPort: string, localAddress?: string): Promise<Socket> {
  const at = hostPort.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)), ...(localAddress === undefined ? {} : { localAddress }) });
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

export interface RawResponse {
  readonly status: number;
  /** Header names in lower case. */
  readonly headers: ReadonlyMap<string, string>;
  readonly body: string;
}

/** The first response in `text`, if it holds a whole one (a HEAD answer has no body, whatever its length says). */
export function parseResponse(text: string, head = false): RawResponse | undefined {
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1]);
  const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(":")).trim().toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  const length = Number(headers.get("content-length") ?? "0");
  const body = text.slice(end + 4);
  if (!head && headers.get("transfer-encoding") === undefined && Buffer.byteLength(body) < length) return undefined;
  return { status, headers, body: head ? "" : body };
}

/**
 * Collects what the server sends until it closes the socket or `timeoutMs` passes; says which,
 * and when. Closing is the point of most tests here, so a timeout is an answer, not an error.
 */
export function readUntilClosed(socket: Socket, timeoutMs: number): Promise<{ text: string; closed: boolean; afterMs: number }> {
  const startMs = performance.now();
  let text = "";
  return new Promise((resolve) => {
    const finish = (closed: boolean): void => {
      clearTimeout(timer);
      socket.removeAllListeners("data");
      resolve({ text, closed, afterMs: performance.now() - startMs });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on("data", (chunk: Buffer) => { text += chunk.toString("latin1"); });
    socket.once("close", () => finish(true));
    // A reset after the answer still ends the connection; what was read is kept.
    socket.once("error", () => undefined);
  });
}

/** Sends `request` and waits up to `timeoutMs` for one whole response on the socket (which stays open). */
export function exchange(socket: Socket, request: string, timeoutMs: number, head = false): Promise<RawResponse> {
  let text = "";
  return new Promise((resolve, reject) => {
    const done = (err: Error | undefined, res?: RawResponse): void => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      if (err !== undefined) reject(err);
      else resolve(res as RawResponse);
    };
    const onData = (chunk: Buffer): void => {
      text += chunk.toString("latin1");
      const res = parseResponse(text, head);
      if (res !== undefined) done(undefined, res);
    };
    const onClose = (): void => done(new Error(`the server closed the connection before a whole answer; it sent ${JSON.stringify(text.slice(0, 200))}`));
    const timer = setTimeout(() => done(new Error(`no whole answer within ${timeoutMs} ms; got ${JSON.stringify(text.slice(0, 200))}`)), timeoutMs);
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.write(request);
  });
}
