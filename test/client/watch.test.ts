// Watches (blocking queries) against a fake node that holds queries like Cairn does: until the
// service's index passes the one sent, or the wait runs out.

import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { CairnClient, type Instance } from "../../src/client/client.js";
import { parseGoDuration } from "../../src/common/duration.js";
import { FakeNode, type Reply, type SeenRequest, until } from "./fake_node.js";

function instance(id: string): Instance {
  return {
    id, service: "web", address: "10.0.0.1", port: 80, tags: [], meta: {}, weights: { passing: 1, warning: 1 }, zone: "",
    node: "n1", status: "passing", checks: [], createIndex: 1, modifyIndex: 1,
  };
}

/** One service's state, served with blocking-query semantics. */
class BlockingService {
  index = 5;
  instances: Instance[] = [];
  private wakers: (() => void)[] = [];

  set(index: number, instances: Instance[]): void {
    this.index = index;
    this.instances = instances;
    for (const w of this.wakers.splice(0)) w();
  }

  handler = async (req: SeenRequest): Promise<Reply> => {
    const since = Number(req.query.get("index") ?? "0");
    const waitMs = parseGoDuration(req.query.get("wait") ?? "0") ?? 0;
    if (since > 0 && this.index <= since) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        timer.unref(); // a query the client abandoned must not keep the test process alive
        this.wakers.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    return { status: 200, body: { index: this.index, instances: this.instances } };
  };
}

void describe("watch", () => {
  const nodes: FakeNode[] = [];
  const clients: CairnClient[] = [];

  async function setup(handler: (req: SeenRequest) => Reply | Promise<Reply>): Promise<{ node: FakeNode; client: CairnClient }> {
    const node = await FakeNode.start(handler);
    nodes.push(node);
    const client = new CairnClient({ endpoints: [node.url], random: () => 0.5, backoffBaseMs: 5, backoffMaxMs: 20 });
    clients.push(client);
    return { node, client };
  }

  afterEach(async () => {
    await Promise.allSettled(clients.splice(0).map((c) => c.close()));
    await Promise.all(nodes.splice(0).map((n) => n.close()));
  });

  void test("a watch delivers the current instances, then resumes from the last index and delivers each change", async () => {
    const svc = new BlockingService();
    svc.set(5, [instance("a")]);
    const { node, client } = await setup(svc.handler);
    const seen: { ids: string[]; index: number }[] = [];
    const stop = client.watch("web", (instances, index) => { seen.push({ ids: instances.map((i) => i.id), index }); }, { waitMs: 2_000, health: "all" });
    await until(() => seen.length === 1, 2_000, "the first delivery");
    svc.set(7, [instance("a"), instance("b")]);
    await until(() => seen.length === 2, 2_000, "the second delivery");
    stop();
    assert.deepEqual(seen, [{ ids: ["a"], index: 5 }, { ids: ["a", "b"], index: 7 }]);
    const gets = node.seen.map((r) => r.url);
    assert.equal(gets[0], "/v1/registry/services/web/instances?health=all");
    assert.equal(gets[1], "/v1/registry/services/web/instances?health=all&index=5&wait=2000ms");
  });

  void test("a wait that runs out without a change delivers nothing and polls again from the same index", async () => {
    const svc = new BlockingService();
    const { node, client } = await setup(svc.handler);
    let deliveries = 0;
    const stop = client.watch("web", () => { deliveries++; }, { waitMs: 50 });
    await until(() => node.seen.length >= 4, 2_000, "four polls");
    stop();
    assert.equal(deliveries, 1);
    for (const r of node.seen.slice(1)) assert.equal(r.query.get("index"), "5");
  });

  void test("an index that goes backwards restarts the watch from 0", async () => {
    const svc = new BlockingService();
    svc.set(10, [instance("a")]);
    const { node, client } = await setup(svc.handler);
    const indexes: number[] = [];
    const stop = client.watch("web", (_instances, index) => { indexes.push(index); }, { waitMs: 2_000 });
    await until(() => indexes.length === 1 && node.seen.length === 2, 2_000, "the first delivery and a blocking query");
    svc.set(3, [instance("restored")]);
    await until(() => indexes.length === 2 && node.seen.length === 4, 2_000, "the delivery after the restart and a blocking query");
    stop();
    assert.deepEqual(indexes, [10, 3]);
    // The query that saw 3 < 10 is followed by a non-blocking one (index 0), then blocks from 3.
    const sent = node.seen.map((r) => r.query.get("index"));
    assert.deepEqual(sent.slice(0, 4), [null, "10", null, "3"]);
  });

  void test("stop ends the watch and aborts its blocking query", async () => {
    const svc = new BlockingService();
    const { node, client } = await setup(svc.handler);
    const stop = client.watch("web", () => undefined, { waitMs: 60_000 });
    await until(() => node.seen.length === 2, 2_000, "a blocking query");
    stop();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(node.seen.length, 2);
    await client.close(); // resolves: the watch loop has ended
  });

  void test("a refused watch (400) ends and reports why; a 503 is retried", async () => {
    let calls = 0;
    const { node, client } = await setup(() => {
      calls++;
      if (calls === 1) return { status: 503, body: { error: "no leader" } };
      return { status: 400, body: { error: "wait \"x\" is not a duration like \"30s\"", field: "wait" } };
    });
    const errors: Error[] = [];
    client.watch("web", () => undefined, { onError: (e) => errors.push(e) });
    await until(() => errors.length === 1, 2_000, "the refusal");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(node.seen.length, 2);
    assert.match(errors[0]?.message ?? "", /400: wait "x"/);
  });

  void test("a callback that throws is reported and the watch goes on", async () => {
    const svc = new BlockingService();
    const { client } = await setup(svc.handler);
    const errors: Error[] = [];
    let calls = 0;
    const stop = client.watch("web", () => {
      calls++;
      if (calls === 1) throw new Error("boom");
    }, { waitMs: 2_000, onError: (e) => errors.push(e) });
    await until(() => calls === 1, 2_000, "the first delivery");
    svc.set(6, []);
    await until(() => calls === 2, 2_000, "the second delivery");
    stop();
    assert.deepEqual(errors.map((e) => e.message), ["boom"]);
  });
});
