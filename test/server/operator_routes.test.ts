// Operator routes work from any node of a real three-node cluster: a follower forwards what only
// the leader may do (a leadership transfer) to the leader, and proposes the rest (membership, CA
// rotation) through Raft as any write, so an operator need not find the leader first.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

async function call(node: ProcessNode, method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(node.url(path), {
    method,
    ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
  });
  return { status: res.status, text: await res.text() };
}

void describe("operator routes on followers", () => {
  let cluster: ProcessCluster;

  before(async () => {
    cluster = await ProcessCluster.start(3);
  });
  after(async () => {
    await cluster.close();
  });

  const followersOf = (leader: ProcessNode): ProcessNode[] => cluster.nodes.filter((n) => n !== leader);

  void test("POST /v1/cluster/leader on a follower moves leadership to the node it names", async () => {
    const leader = await cluster.agreedLeader();
    const [asked, target] = followersOf(leader);
    // Asked of one follower, naming the other: the request must travel to the leader.
    const res = await call(asked, "POST", "/v1/cluster/leader", { to: target.info.id });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(JSON.parse(res.text), { transferringTo: target.info.id });
    const next = await waitFor(async () => {
      const l = await cluster.agreedLeader();
      return l === target ? l : undefined;
    }, 10_000, () => "leadership did not move to the named follower");
    assert.equal((await next.cluster()).role, "leader");
    // And a follower may hand it to itself.
    const self = followersOf(next)[0];
    const toSelf = await call(self, "POST", "/v1/cluster/leader", { to: self.info.id });
    assert.equal(toSelf.status, 202, toSelf.text);
    await waitFor(async () => ((await cluster.agreedLeader()) === self ? true : undefined), 10_000, () => "leadership did not move to the asking follower");
  });

  void test("a transfer to a node that is not a voter is a 400 at once, on any node", async () => {
    const leader = await cluster.agreedLeader();
    for (const node of cluster.nodes) {
      const startMs = performance.now();
      const res = await call(node, "POST", "/v1/cluster/leader", { to: "no-such-node" });
      assert.equal(res.status, 400, `${node.info.id}${node === leader ? " (leader)" : ""}: ${res.text}`);
      assert.match(res.text, /not a voter/);
      assert.ok(performance.now() - startMs < 1_000, "the refusal must not wait out --leader-wait");
    }
  });

  void test("a member is added on one follower and removed on the other", async () => {
    const leader = await cluster.agreedLeader();
    const [adder, remover] = followersOf(leader);
    // A learner that never starts: the change is what is tested, not the node.
    const added = await call(adder, "POST", "/v1/cluster/members", { id: "n9", peerAddress: "127.0.0.1:9" });
    assert.equal(added.status, 200, added.text);
    const members = (JSON.parse(added.text) as { members: Record<string, string> }).members;
    assert.equal(members.n9, "127.0.0.1:9");
    await waitFor(async () => ((await remover.cluster()).members.some((m) => m.id === "n9") ? true : undefined), 10_000, () => `${remover.info.id} never learned of n9`);
    const removed = await call(remover, "DELETE", "/v1/cluster/members/n9");
    assert.equal(removed.status, 200, removed.text);
    await waitFor(async () => ((await leader.cluster()).members.some((m) => m.id === "n9") ? undefined : true), 10_000, () => "n9 is still a member on the leader");
  });

  void test("POST /v1/ca/rotate on a follower rotates the cluster's root", async () => {
    const leader = await cluster.agreedLeader();
    const follower = followersOf(leader)[0];
    const before = JSON.parse((await call(leader, "GET", "/v1/ca/roots")).text) as { roots: { id: string; active: boolean }[] };
    const rotated = await call(follower, "POST", "/v1/ca/rotate", {});
    assert.equal(rotated.status, 200, rotated.text);
    const newRoot = (JSON.parse(rotated.text) as { root: { id: string } }).root.id;
    assert.ok(!before.roots.some((r) => r.id === newRoot), "rotation must make a new root");
    await waitFor(async () => {
      const after = JSON.parse((await call(leader, "GET", "/v1/ca/roots")).text) as { roots: { id: string; active: boolean }[] };
      return after.roots.find((r) => r.active)?.id === newRoot ? true : undefined;
    }, 10_000, () => "the leader never saw the follower's rotation");
  });
});
