// Blocking waits (ChangeWaiters) and the shared per-service views (ServiceViews), over a bare
// RegistryState: applied commands drive them, as the Raft driver does.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { InstanceDefinition } from "../../src/registry/model.js";
import { type RegistryCommand, RegistryState, encodeRegistryCommand } from "../../src/registry/state.js";
import { ChangeWaiters, DEADLINE_RESOLUTION_MS } from "../../src/registry/watch.js";
import { PENDING_MERGE_MIN, ServiceViews, compareInstances } from "../../src/registry/service_views.js";
import { TooManyWatchersError } from "../../src/common/errors.js";
import { SeededRandom } from "../../src/raft/core/random.js";

function inst(id: string, service: string, node = "n1", tags: string[] = []): InstanceDefinition {
  return { id, service, address: "10.0.0.1", port: 80, tags, meta: {}, weights: { passing: 1, warning: 1 }, zone: "", node, nodeAddress: "127.0.0.1" };
}

function apply(state: RegistryState, index: number, cmd: RegistryCommand): void {
  state.apply(index, encodeRegistryCommand(cmd));
}

const register = (state: RegistryState, index: number, def: InstanceDefinition): void =>
  apply(state, index, { op: "register", instance: def, checks: [], atMs: index });

/** Resolves after `n` event-loop iterations. */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Seeded, so a failing sequence replays: numbers in [0, 1). */
function seeded(seed: number): () => number {
  const random = new SeededRandom(seed);
  return () => random.nextUint32() / 2 ** 32;
}

void describe("blocking waits", () => {
  void test("a waiter is woken by its own service, freed when its client goes away, and bounded in number", async () => {
    const s = new RegistryState();
    const waiters = new ChangeWaiters(s, { waitersMax: 2 });
    const woken = waiters.wait({ service: "web" }, 0, 60_000);
    let gone: (() => void) | undefined;
    const abandoned = waiters.wait({ service: "db" }, 0, 60_000, (end) => { gone = end; });
    assert.equal(waiters.waiting, 2);
    await assert.rejects(waiters.wait({ catalog: true }, 0, 60_000), TooManyWatchersError);
    gone?.();
    await abandoned;
    assert.equal(waiters.waiting, 1, "the abandoned waiter's place is freed at once");
    register(s, 2, inst("web-1", "web"));
    await woken;
    assert.equal(waiters.waiting, 0);
  });

  void test("a client already gone when its wait begins does not wait", async () => {
    const waiters = new ChangeWaiters(new RegistryState());
    await waiters.wait({ service: "web" }, 0, 600_000, (end) => end());
    assert.equal(waiters.waiting, 0);
  });

  void test("1,000 waiters woken by one change resolve at most wakePerTurn per event-loop iteration, in order, and stay counted until then", async () => {
    const s = new RegistryState();
    const wakePerTurn = 64;
    const waiters = new ChangeWaiters(s, { wakePerTurn });
    const order: number[] = [];
    const all = Array.from({ length: 1000 }, (_, i) => waiters.wait({ service: "web" }, 0, 60_000).then(() => { order.push(i); }));
    register(s, 1, inst("web-1", "web"));
    assert.equal(order.length, 0, "nothing resolves inside apply");
    assert.equal(waiters.waiting, 1000, "woken waiters count against the bound until they resolve");
    const perTurn: number[] = [];
    while (order.length < 1000) {
      const before = order.length;
      await turns(1);
      perTurn.push(order.length - before);
    }
    await Promise.all(all);
    assert.ok(Math.max(...perTurn) <= wakePerTurn, `resolved per iteration: ${perTurn.join(",")}`);
    assert.ok(perTurn.length >= Math.ceil(1000 / wakePerTurn));
    assert.deepEqual(order, [...order].sort((a, b) => a - b), "woken in the order they waited");
    assert.equal(waiters.waiting, 0);
  });

  void test("a change to another service wakes catalog waiters but no waiter of this one; two changes before the wake-up wake each waiter once", async () => {
    const s = new RegistryState();
    const waiters = new ChangeWaiters(s);
    let webWakes = 0;
    let catalogWakes = 0;
    const web = waiters.wait({ service: "web" }, 0, 60_000).then(() => { webWakes++; });
    const catalog = waiters.wait({ catalog: true }, 0, 60_000).then(() => { catalogWakes++; });
    register(s, 1, inst("db-1", "db"));
    await catalog;
    assert.equal(catalogWakes, 1, "a new service changes the catalog");
    await turns(3);
    assert.equal(webWakes, 0, "db's write does not wake web");
    register(s, 2, inst("web-1", "web"));
    register(s, 3, inst("web-2", "web"));
    await web;
    await turns(3);
    assert.equal(webWakes, 1);
    assert.equal(waiters.waiting, 0);
  });

  void test("a wait that runs out ends no earlier than its time, on the shared deadline clock", async () => {
    const waiters = new ChangeWaiters(new RegistryState());
    const timeoutMs = 2 * DEADLINE_RESOLUTION_MS + 7;
    const startMs = performance.now();
    await Promise.all([waiters.wait({ service: "web" }, 0, timeoutMs), waiters.wait({ service: "db" }, 0, 1)]);
    assert.ok(performance.now() - startMs >= timeoutMs, `ended after ${(performance.now() - startMs).toFixed(0)} ms`);
    assert.equal(waiters.waiting, 0);
  });

  void test("wakeAll ends every wait at once (a server shutting down)", async () => {
    const waiters = new ChangeWaiters(new RegistryState());
    const all = [waiters.wait({ service: "a" }, 0, 600_000), waiters.wait({ service: "b" }, 0, 600_000), waiters.wait({ catalog: true }, 0, 600_000)];
    waiters.wakeAll();
    await Promise.all(all);
    assert.equal(waiters.waiting, 0);
  });
});

void describe("service views", () => {
  /** What a view must equal: the state's instances of the service, in answer order. */
  const expected = (s: RegistryState, service: string): string[] => s.instancesOf(service).sort(compareInstances).map((i) => i.id);
  const ids = async (views: ServiceViews, service: string): Promise<{ index: number; ids: string[] }> => {
    const snap = views.snapshot(service);
    return { index: snap.index, ids: (await snap.instances).map((i) => i.id) };
  };

  void test("a random run of registrations, re-registrations on other nodes, moves between services and deregistrations: every snapshot is the state at its index, in (node, ID) order, and so is the catalog", async () => {
    const random = seeded(7);
    const s = new RegistryState();
    const views = new ServiceViews(s);
    const services = ["a", "b", "c"];
    let index = 0;
    const changes = (): void => {
      for (let n = Math.floor(random() * 200); n > 0; n--) {
        const id = `i-${Math.floor(random() * 300)}`;
        const service = services[Math.floor(random() * services.length)];
        if (random() < 0.2) {
          if (s.instance(id) !== undefined) apply(s, ++index, { op: "deregister", id });
        } else {
          register(s, ++index, inst(id, service, `n${1 + Math.floor(random() * 3)}`, random() < 0.5 ? [] : [`t${Math.floor(random() * 4)}`]));
        }
      }
    };
    for (let round = 0; round < 40; round++) {
      changes();
      // Taken now, resolved after more changes: each snapshot is what the state held when it was taken.
      const taken = services.map((service) => ({ service, index: s.serviceIndex(service), want: expected(s, service), snap: views.snapshot(service) }));
      if (random() < 0.5) changes();
      if (random() < 0.5) await turns(1);
      const catalogWanted = [...s.services()].map(([name, tags]) => ({ name, tags: [...tags].sort(), instances: s.instancesOf(name).length }));
      const catalog = views.catalog();
      assert.equal(catalog.index, s.catalogIndex);
      if (random() < 0.5) changes();
      for (const { service, index: at, want, snap } of taken) {
        assert.equal(snap.index, at);
        assert.deepEqual((await snap.instances).map((i) => i.id), want, `service ${service} at round ${round}`);
      }
      const listed = (await catalog.services).map((c) => ({ name: c.name, tags: [...c.tags].sort(), instances: c.instances }));
      assert.deepEqual(listed, catalogWanted, `the catalog at round ${round}`);
    }
  });

  void test("a service of 20,000 instances is sorted and merged in slices, and its pending changes are merged in the background without any read", async () => {
    const s = new RegistryState();
    const views = new ServiceViews(s);
    // Registered in reverse ID order, so the view must really sort.
    const n = 20_000;
    for (let i = n; i > 0; i--) register(s, n - i + 1, inst(`big-${String(i).padStart(5, "0")}`, "big"));
    assert.equal(views.pendingChanges("big"), n, "inside apply a change is only recorded");
    let ranBetween = 0;
    const counter = setInterval(() => { ranBetween++; }, 0);
    try {
      for (let waited = 0; views.pendingChanges("big") > 0 && waited < 1000; waited++) await turns(1);
      assert.equal(views.pendingChanges("big"), 0, "pending changes were merged without a read");
      const got = await ids(views, "big");
      assert.deepEqual(got.ids, expected(s, "big"));
      assert.equal(got.index, n);
    } finally {
      clearInterval(counter);
    }
    assert.ok(ranBetween > 0, "timers ran while the view was built");
    // A few changes to a built view: merged at the next read.
    apply(s, n + 1, { op: "deregister", id: "big-00001" });
    register(s, n + 2, inst("big-00000", "big", "n0"));
    assert.ok(views.pendingChanges("big") < PENDING_MERGE_MIN);
    const after = await ids(views, "big");
    assert.equal(after.ids[0], "big-00000", "node n0 sorts first");
    assert.deepEqual(after.ids, expected(s, "big"));
  });

  void test("after a snapshot restore, views are rebuilt from the restored state, with the changes applied while they are rebuilt", async () => {
    const source = new RegistryState();
    for (let i = 1; i <= 5000; i++) register(source, i, inst(`r-${i}`, i % 2 === 0 ? "even" : "odd"));
    const snapshot = Buffer.concat((await source.snapshot()).map((c) => Buffer.from(c)));

    const s = new RegistryState();
    const views = new ServiceViews(s);
    register(s, 1, inst("gone-1", "even"));
    assert.deepEqual((await ids(views, "even")).ids, ["gone-1"]);
    s.restore(snapshot);
    // Before the rebuild's first slice: a change, and a read.
    register(s, 5001, inst("r-5001", "odd"));
    apply(s, 5002, { op: "deregister", id: "r-2" });
    register(s, 5003, inst("t-1", "third"));
    const catalog = views.catalog();
    apply(s, 5004, { op: "deregister", id: "t-1" });
    assert.deepEqual((await catalog.services).map((c) => [c.name, c.instances]), [["even", 2499], ["odd", 2501], ["third", 1]], "the catalog when it was asked");
    const odd = await ids(views, "odd");
    assert.deepEqual(odd.ids, expected(s, "odd"));
    assert.equal(odd.ids.length, 2501);
    assert.deepEqual((await ids(views, "even")).ids, expected(s, "even"));
    assert.ok(!(await ids(views, "even")).ids.includes("gone-1"), "nothing of the state before the restore");
  });

  void test("an unknown service is an empty list at index 0, and a service whose last instance left keeps no view", async () => {
    const s = new RegistryState();
    const views = new ServiceViews(s);
    await turns(2);
    assert.deepEqual(await ids(views, "nothing"), { index: 0, ids: [] });
    register(s, 1, inst("x-1", "x"));
    apply(s, 2, { op: "deregister", id: "x-1" });
    assert.deepEqual(await ids(views, "x"), { index: 2, ids: [] });
    assert.equal(views.size, 0);
  });
});
