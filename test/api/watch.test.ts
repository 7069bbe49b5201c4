import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";
import { GrpcWatcher, SseWatcher, registryClient } from "../support/watch_client.js";

const WINDOW_EVENTS = 20;

async function call(node: ProcessNode, method: string, path: string, body?: unknown): Promise<{ status: number; json: { index?: number; error?: string } }> {
  const res = await fetch(node.url(path), {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as { index?: number; error?: string } };
}

async function register(node: ProcessNode, id: string, service: string, checks: unknown[] = []): Promise<number> {
  const r = await call(node, "POST", "/v1/registry/instances", { name: service, id, address: "10.1.0.1", port: 9000, checks });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json.index ?? 0;
}

void describe("watch streams over gRPC and server-sent events", () => {
  let cluster: ProcessCluster;
  let leader: ProcessNode;
  let followers: ProcessNode[];
  const clients: grpc.Client[] = [];
  const client = (node: ProcessNode): grpc.Client => {
    const c = registryClient(node.info.grpc);
    clients.push(c);
    return c;
  };

  before(async () => {
    cluster = await ProcessCluster.start(3, ["--watch-window", String(WINDOW_EVENTS)]);
    leader = await cluster.agreedLeader();
    followers = cluster.nodes.filter((n) => n !== leader);
  });
  after(async () => {
    for (const c of clients) c.close();
    await cluster.close();
  });

  void test("a watcher on a follower sees the same events in the same order as one on the leader, and SSE carries them too", async () => {
    const onLeader = new GrpcWatcher(client(leader), { services: ["web"], since_revision: 0 });
    const onFollower = new GrpcWatcher(client(followers[0]), { services: ["web"], since_revision: 0 });
    const sse = new SseWatcher(followers[1].url("/v1/watch?service=web"));
    await onLeader.until(() => onLeader.messages.length > 0);
    await onFollower.until(() => onFollower.messages.length > 0);
    await register(followers[0], "web-1", "web", [{ ttl: "30s" }]);
    await register(leader, "db-1", "db");
    await register(followers[1], "web-2", "web");
    const pass = await fetch(leader.url("/v1/registry/checks/service:web-1"), { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ status: "passing" }) });
    assert.equal(pass.status, 200);
    const last = (await call(leader, "DELETE", "/v1/registry/instances/web-2")).json.index ?? 0;
    for (const w of [onLeader, onFollower]) await w.until(() => w.revision >= last);
    await sse.until(() => sse.events().length >= 4);
    const expected = onLeader.events();
    assert.deepEqual(expected.map((e) => e.split(":").slice(1).join(":")), ["TYPE_UPSERT:web-1", "TYPE_UPSERT:web-2", "TYPE_HEALTH:web-1", "TYPE_DELETE:web-2"]);
    assert.deepEqual(onFollower.events(), expected, "the follower's stream differs from the leader's");
    assert.deepEqual(sse.events(), expected, "the SSE stream differs from gRPC's");
    assert.equal(onFollower.view.get("web-1")?.status, "HEALTH_STATUS_PASSING");
    assert.equal(onFollower.view.get("web-1")?.address, "10.1.0.1");
    assert.deepEqual([...onFollower.view.keys()], ["web-1"]);
    onLeader.cancel();
    onFollower.cancel();
    sse.close();
  });

  void test("resuming from a revision on another node replays exactly what came after it; from below the window, a reset first", async () => {
    const first = await register(leader, "api-1", "api");
    const second = await register(leader, "api-2", "api");
    const resumed = new GrpcWatcher(client(followers[1]), { services: ["api"], since_revision: first });
    await resumed.until(() => resumed.revision >= second);
    assert.deepEqual(resumed.events(), [`${second}:TYPE_UPSERT:api-2`]);
    assert.equal(resumed.messages.filter((m) => m.kind === "KIND_RESET").length, 0);
    resumed.cancel();
    let lastRevision = 0;
    for (let i = 0; i < WINDOW_EVENTS + 5; i++) lastRevision = await register(leader, `filler-${i}`, "filler");
    // Only once the node has applied the fillers has `first` left its window.
    await waitFor(async () => ((await followers[0].cluster()).appliedIndex >= lastRevision ? true : undefined), 10_000, () => `${followers[0].info.id} did not apply ${lastRevision}`);
    const stale = new GrpcWatcher(client(followers[0]), { services: ["api"], since_revision: first });
    await stale.until(() => stale.revision >= lastRevision);
    const reset = stale.messages.filter((m) => m.kind === "KIND_RESET");
    assert.ok(reset.length >= 1 && reset[0].reset_first && reset.at(-1)?.reset_last === true, "no complete reset was sent");
    assert.equal(reset[0].reset_reason, "compacted");
    assert.deepEqual([...stale.view.keys()].sort(), ["api-1", "api-2"]);
    stale.cancel();
    // Server-sent events resume the same way, from Last-Event-ID; api-2, after it, has left the window.
    const tail = await register(leader, "api-3", "api");
    const sse = new SseWatcher(followers[0].url("/v1/watch?service=api"), { "last-event-id": String(first) });
    await sse.until(() => sse.lastId() === String(tail) || sse.messages.some((m) => m.event === "reset"));
    assert.equal(sse.messages[0].event, "reset", "a Last-Event-ID below the window must reset");
    sse.close();
    const sseInside = new SseWatcher(followers[0].url(`/v1/watch?service=api&since=${tail - 1}`));
    await sseInside.until(() => sseInside.lastId() === String(tail));
    assert.deepEqual(sseInside.events(), [`${tail}:TYPE_UPSERT:api-3`]);
    sseInside.close();
  });

  void test("a watcher that stops reading holds up no other watcher, and catches up by a reset when it reads again", async () => {
    const slow = new SseWatcher(followers[0].url("/v1/watch?service=bulk"));
    const fast = new GrpcWatcher(client(followers[0]), { services: ["bulk"], since_revision: 0 });
    await slow.until(() => slow.messages.some((m) => m.event === "reset"));
    slow.pause();
    // Large instances (16 KB each) fill the paused socket's buffers (about 10 MB on loopback); the
    // node then skips the stream, and when it reads again its backlog has left this cluster's
    // small window, so it is reset.
    const meta = Object.fromEntries(Array.from({ length: 32 }, (_, i) => [`key${i}`, "v".repeat(500)]));
    const rounds = 24;
    let last = 0;
    for (let round = 0; round < rounds; round++) {
      const answers = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
        const r = await call(leader, "POST", "/v1/registry/instances", { name: "bulk", id: `bulk-${round}-${i}`, port: 1000 + i, meta });
        assert.equal(r.status, 200, JSON.stringify(r.json));
        return r.json.index ?? 0;
      }));
      last = Math.max(last, ...answers);
    }
    await fast.until(() => fast.revision >= last, 15_000);
    assert.equal(fast.view.size, rounds * 50);
    assert.ok(Number(slow.lastId() ?? 0) < last, "the paused watcher was not held back at all: the test proves nothing");
    slow.resume();
    await slow.until(() => Number(slow.lastId() ?? 0) >= last, 15_000);
    const ids = new Set<string>();
    for (const m of slow.messages) {
      if (m.event === "reset" && m.data.first === true) ids.clear();
      for (const inst of m.data.instances ?? []) ids.add(inst.id);
      for (const e of m.data.events ?? []) if (e.type === "delete") ids.delete(e.id); else ids.add(e.id);
    }
    assert.equal(ids.size, rounds * 50);
    const caughtUp = slow.messages.filter((m) => m.data.coalesced === true || (m.event === "reset" && m.data.reason !== "initial"));
    assert.ok(caughtUp.length > 0, `the slow watcher was sent every event one by one: ${slow.messages.length} messages`);
    slow.close();
    fast.cancel();
  });

  void test("an idle watcher is told its progress, at a revision never below one it was sent", async () => {
    const w = new GrpcWatcher(client(followers[0]), { services: ["quiet"], since_revision: 0, progress_interval_ms: 1000 });
    await w.until(() => w.messages.length > 0);
    const before = w.revision;
    const elsewhere = await register(leader, "other-1", "other");
    await w.until(() => w.messages.some((m) => m.kind === "KIND_PROGRESS" && m.revision >= elsewhere), 5000);
    const revisions = w.messages.map((m) => m.revision);
    assert.ok(revisions.every((r, i) => i === 0 || r >= revisions[i - 1]), `revisions went down: ${revisions.join(",")}`);
    assert.ok(w.revision >= before);
    w.cancel();
  });

  void test("one stream carries several watches, each created and cancelled on its own", async () => {
    const w = new GrpcWatcher(client(followers[0]), { watch_id: 7, services: ["alpha"], since_revision: 0 });
    w.more({ watch_id: 8, services: ["beta"], since_revision: 0 });
    await w.until(() => w.messages.some((m) => m.kind === "KIND_CREATED") && w.others.some((m) => m.kind === "KIND_CREATED"));
    const a = await register(leader, "alpha-1", "alpha");
    const b = await register(leader, "beta-1", "beta");
    await w.until(() => w.revision >= a && w.others.some((m) => m.kind === "KIND_EVENTS" && m.revision >= b));
    assert.deepEqual(w.events(), [`${a}:TYPE_UPSERT:alpha-1`]);
    w.cancelWatch(8);
    await w.until(() => w.others.some((m) => m.kind === "KIND_CANCELED"));
    const later = await register(leader, "beta-2", "beta");
    const alphaLater = await register(leader, "alpha-2", "alpha");
    await w.until(() => w.revision >= alphaLater);
    assert.ok(!w.others.some((m) => m.kind === "KIND_EVENTS" && m.revision >= later), "a cancelled watch was still sent events");
    w.more({ watch_id: 7, services: ["gamma"] });
    await w.until(() => w.messages.some((m) => m.kind === "KIND_CANCELED"));
    assert.match(w.messages.find((m) => m.kind === "KIND_CANCELED")?.cancel_reason ?? "", /already exists/);
    w.cancel();
  });

  void test("bad requests are refused with the reason", async () => {
    const bad = new GrpcWatcher(client(leader), { services: ["not a name"] });
    await bad.until(() => bad.messages.some((m) => m.kind === "KIND_CANCELED"), 5000);
    assert.match(bad.messages[0].cancel_reason, /not a service name/);
    bad.cancel();
    const res = await fetch(leader.url("/v1/watch?progress=soon"));
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { error: string }).error, /progress/);
    const badId = await fetch(leader.url("/v1/watch"), { headers: { "last-event-id": "abc" } });
    assert.equal(badId.status, 400);
  });
});
