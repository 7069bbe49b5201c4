// CairnClient against a real three-node cluster of server processes: registration with automatic
// heartbeats, reads and a watch, kill -9 of the node the client talks to (a follower, then the
// leader), and close().

import assert from "node:assert/strict";
import { after, before, describe, test, type TestContext } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";
import { CairnClient, type Instance } from "../../src/client/client.js";

const TTL = "2s";
const TTL_MS = 2_000;

function endpointOf(node: ProcessNode): string {
  return `http://${node.info.http}`;
}

/** Resolves once `probe()` holds, polling; fails after `timeoutMs`. */
function until(probe: () => boolean, timeoutMs: number, describe: () => string): Promise<true> {
  return waitFor(() => Promise.resolve(probe() ? true : undefined), timeoutMs, describe);
}

void describe("CairnClient against a three-node cluster", () => {
  let cluster: ProcessCluster;
  /** Only observes, so that close() of the client under test can be checked from outside. */
  let observer: CairnClient;

  before(async () => {
    cluster = await ProcessCluster.start(3, ["--log-level", "warn"]);
    await cluster.agreedLeader();
    observer = new CairnClient({ endpoints: cluster.nodes.map(endpointOf), requestTimeoutMs: 2_000 });
  });

  after(async () => {
    await observer.close().catch(() => undefined);
    await cluster.close();
  });

  /**
   * Registers `id` through a client whose first endpoint is `target`, kills -9 `target`, and shows
   * that heartbeats, reads and a watch carry on through the other nodes; then close() deregisters.
   */
  async function survivesKill(t: TestContext, target: ProcessNode, id: string): Promise<void> {
    const others = cluster.nodes.filter((n) => n !== target);
    const client = new CairnClient({ endpoints: [target, ...others].map(endpointOf), requestTimeoutMs: 2_000 });
    try {
      const reg = await client.register({ name: "web", id, address: "10.0.0.1", port: 8080, tags: ["v1"], ttl: TTL });
      assert.deepEqual(reg.checkIds, [`service:${id}`]);
      assert.equal(client.currentEndpoint, endpointOf(target));

      // register() sent the first heartbeat, so the instance is passing at once.
      const passing = await client.instances("web", { health: "passing" });
      assert.deepEqual(passing.filter((i) => i.id === id).map((i) => [i.status, i.address, i.port]), [["passing", "10.0.0.1", 8080]]);

      const watched: Instance[][] = [];
      const stopWatch = client.watch("web", (instances) => { watched.push(instances); }, { health: "all", waitMs: 5_000 });
      await until(() => watched.length >= 1, 5_000, () => "the watch's first delivery");

      t.diagnostic(`killing ${target.info.id} (${(await target.cluster()).role}), the node the client talks to`);
      const heartbeatsBefore = reg.heartbeats;
      const killedAt = Date.now();
      await target.kill9();

      // Sample health for two TTLs through the same client: every read answers (failover) and the
      // instance never goes critical (heartbeats failed over too).
      const statuses: string[] = [];
      while (Date.now() - killedAt < 2 * TTL_MS) {
        const all = await client.instances("web", { health: "all" });
        statuses.push(all.find((i) => i.id === id)?.status ?? "missing");
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(statuses.length >= 5, `only ${statuses.length} reads in ${2 * TTL_MS} ms`);
      assert.deepEqual([...new Set(statuses)], ["passing"], `statuses after the kill: ${statuses.join(",")}`);
      assert.ok(reg.heartbeats >= heartbeatsBefore + 3, `heartbeats before the kill ${heartbeatsBefore}, after ${reg.heartbeats}`);
      assert.notEqual(client.currentEndpoint, endpointOf(target));
      t.diagnostic(`${reg.heartbeats - heartbeatsBefore} heartbeats and ${statuses.length} reads in ${2 * TTL_MS} ms after the kill`);

      // The watch follows too: a registration made after the kill reaches it.
      const probeId = `${id}-probe`;
      await observer.register({ name: "web", id: probeId, address: "10.0.0.2", port: 8080 });
      await until(() => watched.at(-1)?.some((i) => i.id === probeId) === true, 10_000,
        () => `the watch did not see ${probeId}; last delivery: ${JSON.stringify(watched.at(-1)?.map((i) => i.id))}`);
      stopWatch();

      await client.close();
      const left = (await observer.instances("web", { health: "all" })).map((i) => i.id);
      assert.ok(!left.includes(id), `close() did not deregister ${id}: ${left.join(",")}`);
      assert.ok(left.includes(probeId), "close() deregistered only what this client registered");
      const heartbeatsAtClose = reg.heartbeats;
      await new Promise((r) => setTimeout(r, TTL_MS / 2));
      assert.equal(reg.heartbeats, heartbeatsAtClose, "no heartbeat after close()");
    } finally {
      await client.close().catch(() => undefined);
      target.start();
      await cluster.agreedLeader(15_000, cluster.nodes);
    }
  }

  void test("heartbeats, reads and a watch fail over when the follower the client talks to is killed -9; close() deregisters", async (t) => {
    const leader = await cluster.agreedLeader();
    await survivesKill(t, cluster.nodes.find((n) => n !== leader) as ProcessNode, "web-f");
  });

  void test("heartbeats, reads and a watch fail over when the leader the client talks to is killed -9; close() deregisters", async (t) => {
    await survivesKill(t, await cluster.agreedLeader(), "web-l");
  });
});
