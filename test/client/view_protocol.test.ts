// ServiceView against scripted nodes that speak GET /v1/watch message by message, for what a real
// cluster does too rarely to test on demand: a reset cut off in the middle, a repeated batch, a
// malformed message, refusals, and the view's bounds.

import assert from "node:assert/strict";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import { afterEach, describe, test } from "node:test";
import { CairnClient, CairnLimitError, CairnProtocolError, CairnRequestError, type Instance, type ViewChange } from "../../src/client/client.js";
import { CairnAbortedError } from "../../src/client/errors.js";
import { until } from "./fake_node.js";

function instance(id: string, status: Instance["status"] = "passing"): Instance {
  return {
    id, service: "web", address: "10.0.0.1", port: 80, tags: [], meta: {}, weights: { passing: 1, warning: 1 }, zone: "",
    node: "n1", status, checks: [], createIndex: 1, modifyIndex: 1,
  };
}

const frames = {
  reset(revision: number, instances: Instance[], part: { first?: boolean; last?: boolean; reason?: string } = {}): string {
    const first = part.first ?? true;
    const last = part.last ?? true;
    const data = { revision, reason: part.reason ?? "initial", first, last, instances };
    return `event: reset\n${last ? `id: ${revision}\n` : ""}data: ${JSON.stringify(data)}\n\n`;
  },
  events(revision: number, events: { type: string; revision: number; id: string; instance?: Instance }[]): string {
    const data = { revision, coalesced: false, events: events.map((e) => ({ service: "web", ...e })) };
    return `event: events\nid: ${revision}\ndata: ${JSON.stringify(data)}\n\n`;
  },
};

interface Connection {
  readonly lastEventId: string | undefined;
  readonly query: URLSearchParams;
  readonly res: ServerResponse;
}

/** A node whose n-th watch connection (from 0) is handed to `script`. */
class ScriptedNode {
  private constructor(private readonly server: Server, readonly url: string, readonly connections: Connection[]) {}

  static async start(script: (conn: Connection, n: number) => void): Promise<ScriptedNode> {
    const connections: Connection[] = [];
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const header = req.headers["last-event-id"];
      connections.push({ lastEventId: typeof header === "string" ? header : undefined, query: new URL(req.url ?? "/", "http://x").searchParams, res });
      script(connections[connections.length - 1], connections.length - 1);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const addr = server.address();
    if (addr === null || typeof addr === "string") throw new Error("no TCP address");
    return new ScriptedNode(server, `http://127.0.0.1:${addr.port}`, connections);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function stream(conn: Connection, ...texts: string[]): void {
  conn.res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8" });
  conn.res.write("retry: 1000\n\n");
  for (const t of texts) conn.res.write(t);
}

function answer(conn: Connection, status: number, error: string): void {
  conn.res.writeHead(status, { "content-type": "application/json" });
  conn.res.end(JSON.stringify({ error }));
}

void describe("ServiceView protocol handling", () => {
  const nodes: ScriptedNode[] = [];
  const clients: CairnClient[] = [];

  async function setup(...scripts: ((conn: Connection, n: number) => void)[]): Promise<{ nodes: ScriptedNode[]; client: CairnClient }> {
    const started = await Promise.all(scripts.map((s) => ScriptedNode.start(s)));
    nodes.push(...started);
    const client = new CairnClient({ endpoints: started.map((n) => n.url), random: () => 0.5, backoffBaseMs: 5, backoffMaxMs: 20 });
    clients.push(client);
    return { nodes: started, client };
  }

  afterEach(async () => {
    await Promise.allSettled(clients.splice(0).map((c) => c.close()));
    await Promise.all(nodes.splice(0).map((n) => n.close()));
  });

  void test("a reset cut off after its first chunk is never shown; the view resumes from before it and applies the whole reset from the next node", async () => {
    const { nodes: [first, second], client } = await setup(
      (conn) => {
        stream(conn, frames.reset(5, [instance("a")]), frames.events(6, [{ type: "upsert", revision: 6, id: "b", instance: instance("b") }]),
          frames.reset(9, [instance("c")], { last: false, reason: "behind" }));
        // The stream ends in the middle of the reset: what was sent arrives, the rest never does.
        conn.res.end();
      },
      (conn) => stream(conn, frames.reset(9, [instance("c")], { last: false, reason: "compacted" }), frames.reset(9, [instance("d")], { first: false, reason: "compacted" }),
        frames.events(10, [{ type: "delete", revision: 10, id: "c" }])),
    );
    const view = client.serviceView("web");
    const seen: { change: ViewChange; ids: string[] }[] = [];
    view.onChange((change) => seen.push({ change, ids: view.instances().map((i) => i.id) }));
    await until(() => view.revision === 10, 5_000, "revision 10");
    assert.deepEqual(seen.map((s) => [s.change.kind, s.change.revision, s.change.reason ?? "", s.ids.join(",")]), [
      ["reset", 5, "initial", "a"],
      ["events", 6, "", "a,b"],
      ["reset", 9, "compacted", "c,d"],
      ["events", 10, "", "d"],
    ]);
    assert.equal(first.connections[0].lastEventId, undefined);
    assert.equal(first.connections[0].query.getAll("service").join(","), "web");
    assert.equal(first.connections[0].query.get("progress"), "5000ms");
    assert.equal(second.connections[0].lastEventId, "6", "the resume is from the last complete revision, before the cut reset");
  });

  void test("batches and events at or below the held revision are skipped, so nothing is applied twice", async () => {
    const { client } = await setup((conn) => stream(conn,
      frames.reset(5, [instance("a")]),
      frames.events(6, [{ type: "upsert", revision: 6, id: "b", instance: instance("b") }]),
      frames.events(6, [{ type: "delete", revision: 6, id: "a" }]),
      frames.events(8, [{ type: "delete", revision: 6, id: "b" }, { type: "upsert", revision: 8, id: "c", instance: instance("c", "critical") }]),
    ));
    const view = client.serviceView("web");
    const changes: ViewChange[] = [];
    view.onChange((c) => changes.push(c));
    await until(() => view.revision === 8, 5_000, "revision 8");
    assert.deepEqual(view.instances().map((i) => i.id), ["a", "b"], "c is critical, so the passing view leaves it out");
    assert.deepEqual(changes.map((c) => [c.revision, c.events.map((e) => e.id).join(","), c.changed]), [[5, "", true], [6, "b", true], [8, "c", false]]);
    assert.equal(view.stats.duplicatesSkipped, 2);
  });

  void test("a malformed message, a 429 and a 503 move the view to the next node; a 400 ends it and rejects ready", async () => {
    const errors: Error[] = [];
    const { client } = await setup(
      (conn, n) => (n === 0
        ? stream(conn, frames.reset(5, [instance("a")]), "event: events\nid: 6\ndata: {\"revision\":6,\"coalesced\":false,\"events\":[{\"type\":\"upsert\"}]}\n\n")
        : answer(conn, 400, "services: \"Web_\" is not a service name")),
      (conn) => answer(conn, 429, "this node already serves 250000 watch streams"),
      (conn) => answer(conn, 503, "no leader"),
    );
    const view = client.serviceView("web", { onError: (e) => errors.push(e) });
    await view.ready;
    await view.done;
    assert.ok(view.error instanceof CairnRequestError && view.error.status === 400, view.error?.message);
    assert.deepEqual(errors.map((e) => e.name), ["CairnProtocolError", "CairnRequestError", "CairnRequestError", "CairnRequestError"]);
    assert.match(errors[0].message, /events\.events\[0\]\.revision: expected a whole number >= 0, got nothing/);
    assert.ok(errors[0] instanceof CairnProtocolError);
    assert.deepEqual(errors.slice(1).map((e) => (e as CairnRequestError).status), [429, 503, 400]);
    assert.deepEqual(view.instances().map((i) => i.id), ["a"], "the view keeps the last state it held");

    const refused = client.serviceView("web");
    await assert.rejects(refused.ready, (err: Error) => err instanceof CairnRequestError && err.status === 400);
  });

  void test("a reset of more than instancesMax instances ends the view with CairnLimitError", async () => {
    const { client } = await setup((conn) => stream(conn, frames.reset(5, [instance("a"), instance("b")], { last: false }), frames.reset(5, [instance("c")], { first: false })));
    const view = client.serviceView("web", { instancesMax: 2 });
    await assert.rejects(view.ready, (err: Error) => err instanceof CairnLimitError && err.limit === "instancesMax" && /raise instancesMax/.test(err.message));
    await view.done;
    assert.equal(view.size, 0);
  });

  void test("close() before the first state rejects ready, and client.close() waits for its views to stop", async () => {
    const { nodes: [node], client } = await setup((conn) => conn.res.writeHead(200, { "content-type": "text/event-stream" }));
    const view = client.serviceView(["web", "api"]);
    await until(() => node.connections.length === 1, 5_000, "the connection");
    assert.deepEqual(node.connections[0].query.getAll("service"), ["web", "api"]);
    await client.close();
    await assert.rejects(view.ready, CairnAbortedError);
    await view.done;
    assert.throws(() => client.serviceView("web"), /client is closed/);
  });
});
