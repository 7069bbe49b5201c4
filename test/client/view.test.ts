// ServiceView against real three-node clusters: it converges through registrations, health
// changes and deregistrations; it survives kill -9 of its node with no gap and no duplicate; it
// notices a stopped (SIGSTOP) node and moves on; and resuming below a tiny event window brings a
// reset that leaves it right.

import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";
import { SseWatcher } from "../support/watch_client.js";
import { CairnClient, type HealthFilter, type ServiceView, type ViewChange } from "../../src/client/client.js";

/** Progress every second: a stall is noticed after three (3 s). */
const PROGRESS_MS = 1_000;
const CONVERGE_MS = 15_000;

function endpointOf(node: ProcessNode): string {
  return `http://${node.info.http}`;
}

async function call(node: ProcessNode, method: string, path: string, body?: unknown): Promise<{ status: number; index: number }> {
  const res = await fetch(node.url(path), {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json()) as { index?: number; error?: string };
  return { status: res.status, index: json.index ?? 0 };
}

/** Registers through the HTTP API, not the client, so no heartbeats change the checks behind the test's back. */
async function register(node: ProcessNode, service: string, id: string, extra: Record<string, unknown> = {}): Promise<number> {
  const r = await call(node, "POST", "/v1/registry/instances", { name: service, id, address: "10.2.0.1", port: 7000, ...extra });
  assert.equal(r.status, 200, `register ${id}`);
  return r.index;
}

async function setCheck(node: ProcessNode, checkId: string, status: string): Promise<void> {
  const r = await call(node, "PUT", `/v1/registry/checks/${encodeURIComponent(checkId)}`, { status });
  assert.equal(r.status, 200, `check ${checkId} ${status}`);
}

/** Waits until the view holds exactly what a linearizable read of the cluster answers. */
async function converged(observer: CairnClient, view: ServiceView, service: string, health: HealthFilter): Promise<void> {
  let last = "";
  await waitFor(async () => {
    const read = [...await observer.instances(service, { health })].sort((a, b) => (a.id < b.id ? -1 : 1));
    last = `cluster ${JSON.stringify(read.map((i) => `${i.id}:${i.status}`))}, view at ${view.revision} ${JSON.stringify(view.instances().map((i) => `${i.id}:${i.status}`))}`;
    return isDeepStrictEqual(read, [...view.instances()]) ? true : undefined;
  }, CONVERGE_MS, () => `the ${health} view of ${service} did not converge: ${last}`);
}

function until(probe: () => boolean, timeoutMs: number, describe: () => string): Promise<true> {
  return waitFor(() => Promise.resolve(probe() ? true : undefined), timeoutMs, describe);
}

/** Records every change a view applies. */
function record(view: ServiceView): ViewChange[] {
  const changes: ViewChange[] = [];
  view.onChange((c) => changes.push(c));
  return changes;
}

/** Each change applied is after the one before: no batch applied twice, and none out of order. */
function assertIncreasing(changes: readonly ViewChange[]): void {
  for (let i = 1; i < changes.length; i++) {
    assert.ok(changes[i].revision > changes[i - 1].revision, `change ${i} at ${changes[i].revision} is not after ${changes[i - 1].revision}`);
  }
}

function eventKeys(changes: readonly ViewChange[], after: number): string[] {
  return changes.flatMap((c) => c.events).filter((e) => e.revision > after).map((e) => `${e.revision}:TYPE_${e.type.toUpperCase()}:${e.id}`);
}

function sigcont(node: ProcessNode): void {
  if (node.running && node.process?.pid !== undefined) process.kill(node.process.pid, "SIGCONT");
}

async function roles(cluster: ProcessCluster): Promise<{ leader: ProcessNode; followers: ProcessNode[] }> {
  const leader = await cluster.agreedLeader(15_000, cluster.nodes);
  return { leader, followers: cluster.nodes.filter((n) => n !== leader) };
}

void describe("ServiceView against a three-node cluster", () => {
  let cluster: ProcessCluster;
  let observer: CairnClient;
  const clients: CairnClient[] = [];
  const client = (nodes: ProcessNode[]): CairnClient => {
    const c = new CairnClient({ endpoints: nodes.map(endpointOf), requestTimeoutMs: 2_000, backoffBaseMs: 20, backoffMaxMs: 200 });
    clients.push(c);
    return c;
  };

  before(async () => {
    cluster = await ProcessCluster.start(3, ["--log-level", "warn"]);
    await cluster.agreedLeader();
    observer = client(cluster.nodes);
  });

  after(async () => {
    for (const n of cluster.nodes) sigcont(n);
    await Promise.allSettled(clients.map((c) => c.close()));
    await cluster.close();
  });

  void test("a view converges through registrations, TTL checks passing and failing, and deregistrations", async () => {
    const { leader, followers } = await roles(cluster);
    const c = client([followers[0], leader, followers[1]]);
    const passing = c.serviceView("conv", { health: "passing", progressIntervalMs: PROGRESS_MS });
    const all = c.serviceView("conv", { health: "all", progressIntervalMs: PROGRESS_MS });
    const changes = record(passing);
    await Promise.all([passing.ready, all.ready]);
    assert.deepEqual(passing.instances(), []);

    const steps: [string, () => Promise<unknown>][] = [
      ["register conv-1, its TTL check critical", () => register(leader, "conv", "conv-1", { checks: [{ ttl: "60s" }] })],
      ["conv-1's check passes", () => setCheck(followers[1], "service:conv-1", "passing")],
      ["register conv-2 without checks", () => register(followers[0], "conv", "conv-2")],
      ["conv-1's check fails", () => setCheck(leader, "service:conv-1", "critical")],
      ["conv-1's check passes again", () => setCheck(leader, "service:conv-1", "passing")],
      ["deregister conv-2", () => call(leader, "DELETE", "/v1/registry/instances/conv-2")],
    ];
    const passingIds: string[][] = [];
    for (const [what, step] of steps) {
      await step();
      await converged(observer, passing, "conv", "passing").catch((err: Error) => assert.fail(`after "${what}": ${err.message}`));
      await converged(observer, all, "conv", "all").catch((err: Error) => assert.fail(`after "${what}": ${err.message}`));
      passingIds.push(passing.instances().map((i) => i.id));
    }
    assert.deepEqual(passingIds, [[], ["conv-1"], ["conv-1", "conv-2"], ["conv-2"], ["conv-1", "conv-2"], ["conv-1"]]);
    assert.equal(all.instance("conv-1")?.checks[0]?.status, "passing");
    assert.deepEqual(changes.filter((ch) => ch.kind === "reset").map((ch) => ch.reason), ["initial"]);
    assertIncreasing(changes);
    passing.close();
    all.close();
    await Promise.all([passing.done, all.done]);
  });

  void test("kill -9 of the view's node while writes go on: it resumes on another node with no gap, no duplicate and no reset", async (t) => {
    const { leader, followers } = await roles(cluster);
    const [target, survivor] = followers;
    // What a watcher that stays on one node saw: the view must have applied exactly the same events.
    const reference = new SseWatcher(survivor.url("/v1/watch?service=load"));
    const c = client([target, leader, survivor]);
    const view = c.serviceView("load", { health: "all", progressIntervalMs: PROGRESS_MS });
    const changes = record(view);
    let writing = true;
    let writes = 0;
    let lastIndex = 0;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        const id = `load-${i % 8}`;
        const r = i % 3 === 2 ? await call(leader, "DELETE", `/v1/registry/instances/${id}`) : await call(leader, "POST", "/v1/registry/instances", { name: "load", id, port: 1000 + i });
        if (r.status === 200) {
          writes++;
          lastIndex = Math.max(lastIndex, r.index);
        }
      }
    })();
    try {
      await view.ready;
      await reference.until(() => reference.messages.length > 0);
      assert.equal(view.endpoint, endpointOf(target));
      await until(() => writes >= 30, 10_000, () => `only ${writes} writes`);
      const revisionAtKill = view.revision;
      const killedAt = performance.now();
      await target.kill9();
      await until(() => view.endpoint !== undefined && view.endpoint !== endpointOf(target), 10_000, () => `the view did not move from ${endpointOf(target)}`);
      const reattachMs = performance.now() - killedAt;
      const writesAtMove = writes;
      await until(() => writes >= writesAtMove + 30, 10_000, () => `only ${writes - writesAtMove} writes after the move`);
      writing = false;
      await writer;
      await until(() => view.revision >= lastIndex, CONVERGE_MS, () => `the view is at ${view.revision}, the last write at ${lastIndex}`);
      await converged(observer, view, "load", "all");
      await reference.until(() => Number(reference.lastId() ?? 0) >= lastIndex);

      const resets = changes.filter((ch) => ch.kind === "reset");
      assert.deepEqual(resets.map((ch) => ch.reason), ["initial"], "the resume was within the window, so no reset");
      assertIncreasing(changes);
      const from = Math.max(resets[0].revision, Number(reference.messages.find((m) => m.event === "reset" && m.data.last === true)?.id ?? 0));
      const applied = eventKeys(changes, from);
      assert.ok(applied.some((e) => Number(e.split(":")[0]) > revisionAtKill), "events after the kill were applied");
      assert.deepEqual(applied, reference.events().filter((e) => Number(e.split(":")[0]) > from), "the view applied a different event sequence than a watcher that stayed on one node");
      assert.equal(view.stats.duplicatesSkipped, 0);
      assert.ok(view.stats.failures >= 1 && view.stats.connects >= 2, JSON.stringify(view.stats));
      t.diagnostic(`reattached ${Math.round(reattachMs)} ms after kill -9; ${writes} writes, ${applied.length} events applied in ${changes.length - 1} batches, stats ${JSON.stringify(view.stats)}`);
    } finally {
      writing = false;
      await writer;
      reference.close();
      view.close();
      target.start();
      await cluster.agreedLeader(15_000, cluster.nodes);
    }
  });

  void test("a stream from a stopped node (SIGSTOP) is noticed within three progress intervals and the view moves to another node", async (t) => {
    const { leader, followers } = await roles(cluster);
    const target = followers[0];
    const c = client([target, leader, followers[1]]);
    const view = c.serviceView("stall", { health: "all", progressIntervalMs: PROGRESS_MS });
    const changes = record(view);
    try {
      await view.ready;
      await register(leader, "stall", "stall-1");
      await until(() => view.instance("stall-1") !== undefined, CONVERGE_MS, () => "stall-1 did not reach the view");
      assert.equal(view.endpoint, endpointOf(target));
      const pid = target.process?.pid;
      assert.ok(pid !== undefined);
      process.kill(pid, "SIGSTOP");
      const stoppedAt = performance.now();
      await register(leader, "stall", "stall-2");
      await until(() => view.instance("stall-2") !== undefined, CONVERGE_MS, () => `stall-2 did not reach the view; stats ${JSON.stringify(view.stats)}`);
      const movedMs = performance.now() - stoppedAt;
      assert.notEqual(view.endpoint, endpointOf(target));
      assert.equal(view.stats.stalls, 1, JSON.stringify(view.stats));
      // Without stall detection the open connection to the stopped node would hold the view for good.
      assert.ok(movedMs < 3 * PROGRESS_MS + 5_000, `the view caught up only ${Math.round(movedMs)} ms after SIGSTOP`);
      assert.deepEqual(changes.filter((ch) => ch.kind === "reset").map((ch) => ch.reason), ["initial"]);
      assertIncreasing(changes);
      await converged(observer, view, "stall", "all");
      t.diagnostic(`the stall was noticed and the view caught up ${Math.round(movedMs)} ms after SIGSTOP (stall bound ${3 * PROGRESS_MS} ms)`);
    } finally {
      sigcont(target);
      view.close();
    }
  });
});

void describe("ServiceView against a cluster with a tiny event window", () => {
  const WINDOW_EVENTS = 5;
  let cluster: ProcessCluster;
  let observer: CairnClient;

  before(async () => {
    cluster = await ProcessCluster.start(3, ["--log-level", "warn", "--watch-window", String(WINDOW_EVENTS)]);
    await cluster.agreedLeader();
    observer = new CairnClient({ endpoints: cluster.nodes.map(endpointOf), requestTimeoutMs: 2_000 });
  });

  after(async () => {
    for (const n of cluster.nodes) sigcont(n);
    await observer.close().catch(() => undefined);
    await cluster.close();
  });

  void test("resuming below the next node's window brings a reset (compacted), never a gap, and the view ends right", async () => {
    const { leader, followers } = await roles(cluster);
    const target = followers[0];
    const c = new CairnClient({ endpoints: [target, leader, followers[1]].map(endpointOf), backoffBaseMs: 20, backoffMaxMs: 200 });
    const view = c.serviceView("win", { health: "all", progressIntervalMs: PROGRESS_MS });
    const changes = record(view);
    try {
      await view.ready;
      await register(leader, "win", "win-0");
      await until(() => view.instance("win-0") !== undefined, CONVERGE_MS, () => "win-0 did not reach the view");
      const pid = target.process?.pid;
      assert.ok(pid !== undefined);
      process.kill(pid, "SIGSTOP");
      // More changes than the window holds, while the view is stuck on the stopped node.
      for (let i = 1; i <= 2 * WINDOW_EVENTS; i++) await register(leader, "win", `win-${i}`);
      await call(leader, "DELETE", "/v1/registry/instances/win-0");
      await converged(observer, view, "win", "all");
      assert.deepEqual(changes.filter((ch) => ch.kind === "reset").map((ch) => ch.reason), ["initial", "compacted"]);
      assert.equal(view.stats.stalls, 1);
      assertIncreasing(changes);
      assert.deepEqual(view.instances().map((i) => i.id), Array.from({ length: 2 * WINDOW_EVENTS }, (_, i) => `win-${i + 1}`).sort());
    } finally {
      sigcont(target);
      await c.close();
    }
  });
});
