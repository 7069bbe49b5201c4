// A membership change the configuration cannot take is the caller's mistake: it is answered at
// once with 400, not held for the leader wait as if an election were under way and answered 503.
// The fuzzer found DELETE /v1/cluster/members/<the last voter> held 7 s and then answered 503.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode } from "../support/cluster.js";

/** Far below the default --leader-wait (7 s) that the refusal used to be held for. */
const REFUSAL_ANSWER_MS_MAX = 2000;

void describe("membership refusals on a one-node cluster", () => {
  let cluster: ProcessCluster;
  let node: ProcessNode;

  before(async () => {
    cluster = await ProcessCluster.start(1);
    node = await cluster.agreedLeader();
  });

  after(async () => {
    await cluster.close();
  });

  void test("removing the last voter answers 400 at once, and the node still leads and accepts writes", async () => {
    const startedMs = performance.now();
    const res = await fetch(node.url(`/v1/cluster/members/${node.info.id}`), { method: "DELETE" });
    const elapsedMs = performance.now() - startedMs;
    const body = (await res.json()) as { error: string };
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.match(body.error, /last voter/);
    assert.ok(elapsedMs < REFUSAL_ANSWER_MS_MAX, `the refusal took ${Math.round(elapsedMs)} ms`);
    const view = await node.cluster();
    assert.equal(view.role, "leader");
    assert.deepEqual(view.members.map((m) => m.id), [node.info.id]);
    assert.equal((await node.put("after-refusal", "ok")).status, 200);
  });
});
