// A real three-node cluster: separate processes, real LevelDB with fsync, real gRPC between them.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Level } from "level";
import { entryKey } from "../../src/raft/storage/leveldb.js";
import { ELECTION_TIMEOUT_MS, ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

async function putOk(node: ProcessNode, key: string, value: string): Promise<number> {
  const res = await node.put(key, value);
  const body = (await res.json()) as { index?: number; error?: string };
  assert.equal(res.status, 200, `PUT ${key} on ${node.info.id}: ${JSON.stringify(body)}`);
  return body.index as number;
}

async function valueOf(node: ProcessNode, key: string, stale = false): Promise<string | undefined> {
  const res = await node.get(key, stale);
  if (res.status === 404) return undefined;
  const body = (await res.json()) as { value?: string; error?: string };
  assert.equal(res.status, 200, `GET ${key} on ${node.info.id}: ${JSON.stringify(body)}`);
  return body.value;
}

void describe("a three-node cluster of real processes", () => {
  let cluster: ProcessCluster;

  before(async () => {
    cluster = await ProcessCluster.start(3);
  });

  after(async () => {
    await cluster.close();
  });

  void test("three nodes elect one leader, and every node agrees on it", async () => {
    const leader = await cluster.agreedLeader();
    const view = await leader.cluster();
    assert.equal(view.role, "leader");
    assert.equal(view.members.length, 3);
    const status = (await (await fetch(leader.url("/v1/status/leader"))).json()) as string;
    assert.equal(status, leader.info.peer);
    const peers = (await (await fetch(leader.url("/v1/status/peers"))).json()) as string[];
    assert.deepEqual([...peers].sort(), cluster.nodes.map((n) => n.info.peer).sort());
  });

  void test("a write acknowledged by one node is read at once on another (read-your-writes, linearizable reads)", async () => {
    const [a, b] = cluster.nodes as [ProcessNode, ProcessNode, ProcessNode];
    await putOk(a, "greeting", "hello");
    assert.equal(await valueOf(b, "greeting"), "hello");
  });

  void test("kill -9 of the leader: a new leader within two election timeouts, and no acknowledged write is lost", async () => {
    const leader = await cluster.agreedLeader();
    const follower = cluster.nodes.find((n) => n !== leader) as ProcessNode;
    const written: string[] = [];
    for (let i = 0; i < 50; i++) {
      await putOk(i % 2 === 0 ? leader : follower, `before-kill-${i}`, `v${i}`);
      written.push(`before-kill-${i}`);
    }
    const killedAt = Date.now();
    await leader.kill9();
    const survivors = cluster.running();
    const next = await cluster.agreedLeader(10_000, survivors);
    const failoverMs = Date.now() - killedAt;
    assert.notEqual(next.info.id, leader.info.id);
    // Followers wait one randomized election timeout in [T, 2T) after the last heartbeat; then one
    // pre-vote and one vote round trip on loopback.
    assert.ok(failoverMs <= 2 * ELECTION_TIMEOUT_MS + 300, `failover took ${failoverMs} ms`);
    for (const key of written) {
      for (const node of survivors) assert.equal(await valueOf(node, key), `v${key.slice("before-kill-".length)}`, `${key} on ${node.info.id}`);
    }
    await putOk(next, "after-kill", "yes");
    leader.start();
    await waitFor(async () => ((await valueOf(leader, "after-kill", true).catch(() => undefined)) === "yes" ? true : undefined), 15_000,
      () => `restarted ${leader.info.id} did not catch up`);
    for (const key of written) assert.equal(await valueOf(leader, key, true), `v${key.slice("before-kill-".length)}`);
  });

  void test("a follower restarted from its data catches up on what it missed", async () => {
    const leader = await cluster.agreedLeader();
    const follower = cluster.nodes.find((n) => n !== leader && n.running) as ProcessNode;
    await follower.kill9();
    for (let i = 0; i < 20; i++) await putOk(leader, `missed-${i}`, `m${i}`);
    follower.start();
    await waitFor(async () => ((await valueOf(follower, "missed-19", true).catch(() => undefined)) === "m19" ? true : undefined), 15_000,
      () => `${follower.info.id} did not catch up`);
    assert.equal(await valueOf(follower, "missed-0"), "m0");
  });

  void test("leadership moves to a named follower on request", async () => {
    const leader = await cluster.agreedLeader();
    const target = cluster.nodes.find((n) => n !== leader && n.running) as ProcessNode;
    const res = await fetch(leader.url("/v1/cluster/leader"), {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ to: target.info.id }),
    });
    assert.equal(res.status, 202);
    const next = await waitFor(async () => {
      const l = await cluster.agreedLeader();
      return l === target ? l : undefined;
    }, 10_000, () => "leadership did not move");
    assert.equal(next.info.id, target.info.id);
    // The old leader is a follower now: it forwards the request to the leader (see operator_routes.test.ts).
    const back = await fetch(leader.url("/v1/cluster/leader"), {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ to: leader.info.id }),
    });
    assert.equal(back.status, 202, await back.text());
    await waitFor(async () => ((await cluster.agreedLeader()) === leader ? true : undefined), 10_000, () => "leadership did not move back");
  });

  void test("a fourth node joins as a learner, is promoted once caught up, and a node is removed", async () => {
    const leader = await cluster.agreedLeader();
    const joiner = await cluster.join("n4", leader);
    await waitFor(async () => {
      const view = await leader.cluster().catch(() => undefined);
      const member = view?.members.find((m) => m.id === "n4");
      return member !== undefined && member.role !== "learner" ? true : undefined;
    }, 20_000, () => `n4 was not promoted: ${joiner.stderr.slice(-500)}`);
    assert.equal(await valueOf(joiner, "greeting", true), "hello");
    const peers = (await (await fetch(leader.url("/v1/status/peers"))).json()) as string[];
    assert.ok(peers.includes(joiner.info.peer));

    const victim = cluster.nodes.find((n) => n !== leader && n !== joiner && n.running) as ProcessNode;
    const res = await fetch(leader.url(`/v1/cluster/members/${victim.info.id}`), { method: "DELETE" });
    assert.equal(res.status, 200, await res.text());
    const view = await leader.cluster();
    assert.deepEqual(view.members.map((m) => m.id).sort(), cluster.nodes.filter((n) => n !== victim).map((n) => n.info.id).sort());
    await victim.stop();
    await putOk(leader, "after-remove", "ok");
    assert.equal(await valueOf(joiner, "after-remove"), "ok");
  });

  void test("bad membership requests get clear 4xx errors", async () => {
    const leader = await cluster.agreedLeader();
    const bad = await fetch(leader.url("/v1/cluster/members"), {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id: "x y", peerAddress: "nowhere" }),
    });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /id|peerAddress/);
    const unknown = await fetch(leader.url("/v1/cluster/members/ghost"), { method: "DELETE" });
    assert.equal(unknown.status, 404);
  });
});

void describe("snapshots between real processes", () => {
  let cluster: ProcessCluster;

  before(async () => {
    // No catch-up margin: a follower behind the snapshot cannot be fed by appends.
    cluster = await ProcessCluster.start(3, ["--snapshot-entries", "40", "--catch-up-entries", "0"]);
  });

  after(async () => {
    await cluster.close();
  });

  void test("a node that was down while the log was compacted catches up through a snapshot", async () => {
    const leader = await cluster.agreedLeader();
    const follower = cluster.nodes.find((n) => n !== leader) as ProcessNode;
    await follower.kill9();
    for (let i = 0; i < 150; i++) await putOk(leader, `k${i}`, `v${i}`);
    follower.start();
    await waitFor(async () => ((await valueOf(follower, "k149", true).catch(() => undefined)) === "v149" ? true : undefined), 20_000,
      () => `${follower.info.id} did not catch up`);
    assert.match(follower.stdout, /installed snapshot from the leader/);
    assert.equal(await valueOf(follower, "k0", true), "v0");
  });
});

void describe("a corrupt log on disk", () => {
  let cluster: ProcessCluster;

  before(async () => {
    cluster = await ProcessCluster.start(3);
  });

  after(async () => {
    await cluster.close();
  });

  void test("a corrupt log tail is reported with the file and the index, and never applied", async () => {
    const leader = await cluster.agreedLeader();
    for (let i = 0; i < 10; i++) await putOk(leader, `c${i}`, `v${i}`);
    const victim = cluster.nodes.find((n) => n !== leader) as ProcessNode;
    await waitFor(async () => ((await valueOf(victim, "c9", true).catch(() => undefined)) === "v9" ? true : undefined), 10_000, () => "no catch-up");
    const lastIndex = (await victim.cluster()).commitIndex;
    await victim.stop();
    // Damage the newest entry the way a torn write would: keep the key, ruin the bytes.
    const db = new Level<string, Uint8Array>(join(victim.info.dataDir, "raft"), { valueEncoding: "view" });
    const key = entryKey(lastIndex);
    const good = await db.get(key);
    assert.ok(good !== undefined, `entry ${lastIndex} is on disk`);
    const torn = Uint8Array.from(good);
    torn[torn.length - 1] = (torn[torn.length - 1]) ^ 0xff;
    await db.put(key, torn);
    await db.close();

    victim.start();
    const code = await victim.exit;
    assert.equal(code, 2, victim.stderr);
    assert.match(victim.stderr, new RegExp(`corrupt Raft log in .*${victim.info.id}.* at index ${lastIndex}`));
    assert.doesNotMatch(victim.stdout, /cairn node ready/);
  });
});

void describe("graceful shutdown", () => {
  let cluster: ProcessCluster;

  before(async () => {
    cluster = await ProcessCluster.start(3);
  });

  after(async () => {
    await cluster.close();
  });

  void test("SIGTERM on the leader hands leadership over first, so no election timeout is waited out", async () => {
    const leader = await cluster.agreedLeader();
    await putOk(leader, "before-sigterm", "kept");
    const started = Date.now();
    assert.equal(await leader.stop(), 0, leader.stderr);
    const next = await cluster.agreedLeader(10_000, cluster.running());
    const handoverMs = Date.now() - started;
    assert.ok(handoverMs < ELECTION_TIMEOUT_MS, `a new leader took ${handoverMs} ms; an election alone would take at least ${ELECTION_TIMEOUT_MS} ms`);
    assert.match(leader.stdout, /transferring leadership before shutdown/);
    assert.equal(await valueOf(next, "before-sigterm"), "kept");
  });
});
