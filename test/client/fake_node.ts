// A stand-in for one Cairn node: a node:http server on 127.0.0.1, port 0, whose answers a test
// scripts. It records every request it saw, with the time it arrived.

import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";

export interface SeenRequest {
  readonly method: string;
  /** The path as sent, query included (percent-encoding kept). */
  readonly url: string;
  readonly pathname: string;
  readonly query: URLSearchParams;
  readonly body: unknown;
  readonly atMs: number;
}

/** An answer; "hang" never answers (until the node closes), to exercise timeouts. */
export type Reply = { status: number; body?: unknown } | "hang";

export type Handler = (req: SeenRequest) => Reply | Promise<Reply>;

export class FakeNode {
  readonly seen: SeenRequest[] = [];

  private constructor(private readonly server: Server, readonly url: string, public handler: Handler) {}

  static async start(handler: Handler): Promise<FakeNode> {
    let node: FakeNode | undefined = undefined;
    const server = createServer((req, res) => {
      void (node as FakeNode).handle(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const addr = server.address();
    if (addr === null || typeof addr === "string") throw new Error("the fake node has no TCP address");
    node = new FakeNode(server, `http://127.0.0.1:${addr.port}`, handler);
    return node;
  }

  /** Requests seen with this method whose path starts with `prefix`. */
  count(method: string, prefix: string): number {
    return this.seen.filter((r) => r.method === method && r.pathname.startsWith(prefix)).length;
  }

  /** Stops listening and cuts every open connection, as a killed process would. */
  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const url = new URL(req.url ?? "/", "http://fake");
    const seen: SeenRequest = {
      method: req.method ?? "GET",
      url: req.url ?? "/",
      pathname: url.pathname,
      query: url.searchParams,
      body: text === "" ? undefined : JSON.parse(text) as unknown,
      atMs: performance.now(),
    };
    this.seen.push(seen);
    const reply = await this.handler(seen);
    if (reply === "hang") return;
    if (res.destroyed) return;
    const payload = reply.body === undefined ? "" : JSON.stringify(reply.body);
    res.writeHead(reply.status, { "content-type": "application/json", "content-length": Buffer.byteLength(payload) });
    res.end(payload);
  }
}

/** A handler for the routes a registering client uses, all answering success. */
export function registryHandler(): Handler {
  let index = 10;
  return (req) => {
    if (req.method === "POST" && req.pathname === "/v1/registry/instances") {
      const body = req.body as { id?: string; name: string };
      return { status: 200, body: { index: ++index, id: body.id ?? body.name } };
    }
    if (req.method === "PUT" && req.pathname.startsWith("/v1/registry/checks/")) return { status: 200, body: {} };
    if (req.method === "DELETE" && req.pathname.startsWith("/v1/registry/instances/")) return { status: 200, body: { index: ++index } };
    if (req.method === "GET" && req.pathname.endsWith("/instances")) return { status: 200, body: { index, instances: [] } };
    return { status: 404, body: { error: `no route ${req.method} ${req.pathname}` } };
  };
}

/** Polls `probe` every 5 ms until it is true, or fails after `timeoutMs` saying `what`. */
export async function until(probe: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!probe()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
