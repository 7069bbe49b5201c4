import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Instance, InstanceDefinition } from "../../src/registry/model.js";
import { type RegistryCommand, RegistryState, encodeRegistryCommand } from "../../src/registry/state.js";
import { type EventBatch, type ResetChunk, WatchHub, type WatchHubOptions, WatchInputError, type WatchRequest } from "../../src/registry/watch_hub.js";
import { instanceIdOf } from "../../src/registry/events.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import { ServiceViews } from "../../src/registry/service_views.js";

function def(id: string, service: string, port = 80): InstanceDefinition {
  return { id, service, address: "10.0.0.1", port, tags: [], meta: {}, weights: { passing: 1, warning: 1 }, zone: "", node: "n1", nodeAddress: "127.0.0.1" };
}

const ttl = (checkId: string) => ({
  checkId, name: checkId, kind: "ttl" as const, notes: "", ttlMs: 1000, target: "", intervalMs: 0, timeoutMs: 0,
  deregisterCriticalAfterMs: 0, status: "critical" as const, output: "",
});

/** A registry fed commands at consecutive revisions, as the driver applies them. */
class Feed {
  revision = 0;
  constructor(readonly state: RegistryState) {}
  apply(cmd: RegistryCommand): number {
    this.state.apply(++this.revision, encodeRegistryCommand(cmd));
    return this.revision;
  }
  register(id: string, service: string, port = 80): number {
    return this.apply({ op: "register", instance: def(id, service, port), checks: [ttl(`c-${id}`)], atMs: 1 });
  }
  deregister(id: string): number {
    return this.apply({ op: "deregister", id });
  }
  health(id: string, status: "passing" | "critical"): number {
    return this.apply({ op: "setCheckStatus", checkId: `c-${id}`, status, output: "", atMs: 2 });
  }
}

type Message =
  | { kind: "events"; batch: EventBatch }
  | { kind: "reset"; chunk: ResetChunk }
  | { kind: "progress"; revision: number };

/**
 * A client that applies what it is sent and checks the stream's promises as it goes: revisions
 * never go down, events come in revision order, and a reset's chunks arrive whole.
 */
class RecordingSink {
  readonly messages: Message[] = [];
  readonly view = new Map<string, Instance>();
  revision = 0;
  private resetting = false;
  /** When set, every send answers "full" until resumed. */
  full = false;

  events(batch: EventBatch): boolean {
    assert.equal(this.resetting, false, "events arrived in the middle of a reset");
    assert.ok(batch.revision > this.revision, `a batch at ${batch.revision} came after revision ${this.revision}`);
    let last = this.revision;
    for (const e of batch.events) {
      assert.ok(e.revision > this.revision && e.revision <= batch.revision, `event ${e.revision} outside (${this.revision}, ${batch.revision}]`);
      assert.ok(e.revision >= last, "events out of revision order");
      last = e.revision;
      if (e.change.kind === "delete") this.view.delete(e.change.id);
      else this.view.set(e.change.instance.id, e.change.instance);
    }
    this.revision = batch.revision;
    this.messages.push({ kind: "events", batch });
    return !this.full;
  }

  reset(chunk: ResetChunk): boolean {
    if (chunk.first) {
      this.view.clear();
      this.resetting = true;
    }
    assert.ok(this.resetting, "a reset chunk arrived without its first");
    assert.ok(chunk.revision >= this.revision, `a reset to ${chunk.revision} came after revision ${this.revision}`);
    for (const inst of chunk.instances) this.view.set(inst.id, inst);
    if (chunk.last) {
      this.resetting = false;
      this.revision = chunk.revision;
    }
    this.messages.push({ kind: "reset", chunk });
    return !this.full;
  }

  progress(revision: number): boolean {
    assert.equal(this.resetting, false);
    assert.ok(revision >= this.revision, `progress ${revision} is below revision ${this.revision} already sent`);
    this.revision = revision;
    this.messages.push({ kind: "progress", revision });
    return !this.full;
  }

  eventIds(): string[] {
    return this.messages.flatMap((m) => m.kind === "events" ? m.batch.events.map((e) => `${e.revision}:${e.change.kind}:${instanceIdOf(e)}`) : []);
  }

  resets(): ResetChunk[] {
    return this.messages.flatMap((m) => m.kind === "reset" ? [m.chunk] : []);
  }
}

async function settle(hub: WatchHub): Promise<void> {
  for (let i = 0; i < 10_000 && !hub.idle; i++) await new Promise((r) => setImmediate(r));
  assert.ok(hub.idle, "the fan-out never finished");
}

/** A hub as the registry makes it: resets list a service's instances from its views. */
function setup(opts: WatchHubOptions = {}, eventsMax?: number): { feed: Feed; hub: WatchHub } {
  const state = new RegistryState(eventsMax === undefined ? {} : { eventsMax });
  return { feed: new Feed(state), hub: new WatchHub(state, { views: new ServiceViews(state), ...opts }) };
}

const watch = (services: string[], sinceRevision: number, progressIntervalMs = 0): WatchRequest => ({ transport: "grpc", services, sinceRevision, progressIntervalMs });

function expectView(sink: RecordingSink, state: RegistryState, services?: string[]): void {
  const want = services === undefined ? [...state.allInstances()] : services.flatMap((s) => state.instancesOf(s));
  assert.deepEqual([...sink.view.keys()].sort(), want.map((i) => i.id).sort());
  for (const inst of want) assert.equal(sink.view.get(inst.id)?.modifyIndex, inst.modifyIndex, `${inst.id} is stale in the watcher's view`);
}

void describe("watch hub", () => {
  void test("a stream from revision 0 starts with a reset to the current state, then gets each change with its revision", async () => {
    const { feed, hub } = setup();
    feed.register("web-1", "web");
    feed.register("db-1", "db");
    const sink = new RecordingSink();
    hub.open(sink, watch([], 0));
    await settle(hub);
    const [reset] = sink.resets();
    assert.equal(reset.reason, "initial");
    assert.equal(reset.revision, 2);
    assert.ok(reset.first && reset.last);
    const r3 = feed.health("web-1", "passing");
    const r4 = feed.deregister("db-1");
    await settle(hub);
    assert.deepEqual(sink.eventIds(), [`${r3}:health:web-1`, `${r4}:delete:db-1`]);
    expectView(sink, feed.state);
  });

  void test("resuming inside the window replays exactly what came after; below the floor it is an explicit reset, never a gap", async () => {
    const { feed, hub } = setup({}, 4);
    for (let i = 1; i <= 3; i++) feed.register(`web-${i}`, "web");
    const inside = new RecordingSink();
    const first = feed.state.instance("web-1");
    assert.ok(first !== undefined);
    inside.view.set("web-1", first);
    inside.revision = 1;
    hub.open(inside, watch(["web"], 1));
    await settle(hub);
    assert.deepEqual(inside.eventIds(), ["2:upsert:web-2", "3:upsert:web-3"]);
    for (let i = 4; i <= 8; i++) {
      feed.register(`web-${i}`, "web");
      await settle(hub);
    }
    const below = new RecordingSink();
    hub.open(below, watch(["web"], 2));
    await settle(hub);
    assert.equal(below.eventIds().length, 0);
    assert.equal(below.resets()[0].reason, "compacted");
    expectView(below, feed.state, ["web"]);
    expectView(inside, feed.state, ["web"]);
    assert.equal(hub.stats.resets.compacted, 1);
  });

  void test("a stream of one service is not sent other services' changes, and a quiet cursor below the floor is not reset needlessly", async () => {
    const { feed, hub } = setup({}, 3);
    feed.register("web-1", "web");
    const web = new RecordingSink();
    hub.open(web, watch(["web"], 1));
    for (let i = 1; i <= 10; i++) feed.register(`db-${i}`, "db");
    await settle(hub);
    assert.equal(web.messages.length, 0, "db's writes reached a watcher of web");
    const r = feed.deregister("web-1");
    await settle(hub);
    assert.deepEqual(web.eventIds(), [`${r}:delete:web-1`]);
    assert.equal(web.resets().length, 0);
  });

  void test("a full stream holds up no other stream; when it drains it gets its backlog, coalesced past the bound, reset past the larger one", async () => {
    const { feed, hub } = setup({ streamEventsMax: 5, coalescedInstancesMax: 8 });
    const slow = new RecordingSink();
    const fast = new RecordingSink();
    const slowHandle = hub.open(slow, watch(["web"], 0));
    hub.open(fast, watch(["web"], 0));
    await settle(hub);
    slow.full = true;
    feed.register("web-1", "web");
    await settle(hub);
    // 12 changes to 3 instances: over streamEventsMax, within coalescedInstancesMax.
    for (let round = 0; round < 4; round++) {
      for (let i = 1; i <= 3; i++) feed.register(`web-${i}`, "web", 1000 + round);
      await settle(hub);
    }
    assert.equal(fast.eventIds().length, 13, "the fast stream got every change while the slow one was full");
    slow.full = false;
    slowHandle.resume();
    await settle(hub);
    const last = slow.messages.at(-1);
    assert.ok(last?.kind === "events" && last.batch.coalesced, "the backlog was not coalesced");
    assert.equal(last.batch.events.length, 3);
    expectView(slow, feed.state, ["web"]);
    // 10 distinct instances behind: past coalescedInstancesMax, so a reset.
    slow.full = true;
    feed.register("web-x", "web");
    await settle(hub);
    for (let i = 10; i < 20; i++) {
      feed.register(`web-${i}`, "web");
      await settle(hub);
    }
    slow.full = false;
    slowHandle.resume();
    await settle(hub);
    assert.equal(slow.resets().at(-1)?.reason, "behind");
    expectView(slow, feed.state, ["web"]);
    expectView(fast, feed.state, ["web"]);
    assert.equal(hub.stats.coalesced, 1);
    assert.equal(hub.stats.resets.behind, 1);
  });

  void test("a reset is sent in chunks; events applied meanwhile follow it", async () => {
    const { feed, hub } = setup({ resetChunkInstances: 10, resetChunksPerTurn: 2 });
    for (let i = 0; i < 95; i++) feed.register(`web-${i}`, "web");
    const sink = new RecordingSink();
    hub.open(sink, watch(["web"], 0));
    await new Promise((r) => setImmediate(r));
    const r = feed.deregister("web-0");
    await settle(hub);
    const chunks = sink.resets();
    assert.equal(chunks.length, 10);
    assert.ok(chunks.every((c) => c.revision === 95));
    assert.deepEqual(sink.eventIds(), [`${r}:delete:web-0`]);
    expectView(sink, feed.state, ["web"]);
  });

  void test("a snapshot restore resets every stream", async () => {
    const { feed, hub } = setup();
    feed.register("web-1", "web");
    const sink = new RecordingSink();
    hub.open(sink, watch([], 1));
    await settle(hub);
    const snapshot = new RegistryState();
    snapshot.apply(40, encodeRegistryCommand({ op: "register", instance: def("web-9", "web"), checks: [], atMs: 1 }));
    feed.state.restore(Buffer.concat(await snapshot.snapshot()));
    await settle(hub);
    assert.equal(sink.resets().at(-1)?.reason, "restored");
    assert.deepEqual([...sink.view.keys()], ["web-9"]);
  });

  void test("progress notifications come while nothing changes, at the current revision, never below one sent, and jittered", async () => {
    const { feed, hub } = setup({ progressTickMs: 20, progressIntervalMsMin: 50 });
    feed.register("web-1", "web");
    const sinks = Array.from({ length: 20 }, () => new RecordingSink());
    const draws = [0.05, 0.95];
    let n = 0;
    const jittered = new WatchHub(feed.state, { progressTickMs: 20, progressIntervalMsMin: 50, random: () => draws[n++ % 2] });
    for (const s of sinks) jittered.open(s, watch(["web"], 1, 200));
    const started = Date.now();
    const firstAt = new Map<RecordingSink, number>();
    while (Date.now() - started < 1500 && firstAt.size < sinks.length) {
      await new Promise((r) => setTimeout(r, 5));
      for (const s of sinks) if (!firstAt.has(s) && s.messages.some((m) => m.kind === "progress")) firstAt.set(s, Date.now() - started);
    }
    assert.equal(firstAt.size, sinks.length, "some streams were never told their progress");
    const times = [...firstAt.values()].sort((a, b) => a - b);
    assert.ok(times[times.length - 1] - times[0] >= 80, `first notifications spread over ${times[times.length - 1] - times[0]} ms only`);
    feed.register("db-1", "db");
    await new Promise((r) => setTimeout(r, 450));
    for (const s of sinks) {
      const revisions = s.messages.map((m) => (m.kind === "progress" ? m.revision : -1));
      assert.ok(revisions.every((r) => r >= 1));
      assert.equal(s.revision, 2, "progress did not move to the revision of another service's change");
    }
    jittered.stop();
    hub.stop();
  });

  void test("bad requests are refused with the field named", () => {
    const { hub } = setup();
    const sink = new RecordingSink();
    assert.throws(() => hub.open(sink, watch(["Not A Name"], 0)), (e: Error) => e instanceof WatchInputError && e.field === "services");
    assert.throws(() => hub.open(sink, watch([], -1)), (e: Error) => e instanceof WatchInputError && e.field === "sinceRevision");
    assert.throws(() => hub.open(sink, watch([], 0, 10)), (e: Error) => e instanceof WatchInputError && e.field === "progressInterval");
    assert.throws(() => hub.open(sink, watch(Array.from({ length: 65 }, (_, i) => `s${i}`), 0)), WatchInputError);
  });

  void test("one change reaches 10,000 streams in slices of at most 500", async () => {
    const { feed, hub } = setup({ sliceStreams: 500 });
    feed.register("web-1", "web");
    const sinks = Array.from({ length: 10_000 }, () => new RecordingSink());
    for (const s of sinks) hub.open(s, watch(["web"], 1));
    await settle(hub);
    feed.health("web-1", "passing");
    let slices = 0;
    const reachedPerSlice: number[] = [];
    let reached = 0;
    while (!hub.idle) {
      await new Promise((r) => setImmediate(r));
      const now = sinks.filter((s) => s.eventIds().length === 1).length;
      reachedPerSlice.push(now - reached);
      reached = now;
      slices++;
    }
    assert.ok(sinks.every((s) => s.eventIds().length === 1));
    assert.ok(slices >= 20, `the fan-out ran in ${slices} slices`);
    assert.ok(reachedPerSlice.every((n) => n <= 500), `a slice served more than 500 streams: ${reachedPerSlice.join(",")}`);
    // Every stream of the group was handed the same batch: it is encoded once.
    const batches = new Set(sinks.map((s) => s.messages[0].kind === "events" ? s.messages[0].batch : undefined));
    assert.equal(batches.size, 1);
  });

  void test("random writes, slow streams and resumes: every stream converges to the state, revisions never go down, no gap without a reset", async () => {
    for (let seed = 1; seed <= 20; seed++) {
      const source = new SeededRandom(seed);
      const rand = (): number => source.nextUint32() / 2 ** 32;
      const { feed, hub } = setup({ streamEventsMax: 8, coalescedInstancesMax: 12, resetChunkInstances: 3, sliceStreams: 3 }, 16);
      const services = ["a", "b", "c"];
      const streams: { sink: RecordingSink; handle: ReturnType<WatchHub["open"]>; services: string[] }[] = [];
      // The state after every revision, so a stream resuming from one starts from what a client would hold there.
      const history = new Map<number, Instance[]>([[0, []]]);
      const record = (): void => void history.set(feed.revision, [...feed.state.allInstances()]);
      for (let step = 0; step < 300; step++) {
        const r = rand();
        const id = `i${Math.floor(rand() * 10)}`;
        if (r < 0.45) feed.register(id, services[Math.floor(rand() * 3)]);
        else if (r < 0.6) feed.deregister(id);
        else if (r < 0.75) feed.health(id, rand() < 0.5 ? "passing" : "critical");
        else if (r < 0.8 && streams.length < 12) {
          const watched = rand() < 0.3 ? [] : [services[Math.floor(rand() * 3)]];
          const sink = new RecordingSink();
          const since = Math.floor(rand() * (feed.revision + 1));
          for (const inst of history.get(since) ?? []) if (watched.length === 0 || watched.includes(inst.service)) sink.view.set(inst.id, inst);
          sink.revision = since;
          streams.push({ sink, handle: hub.open(sink, watch(watched, since)), services: watched });
        } else if (r < 0.9 && streams.length > 0) {
          const s = streams[Math.floor(rand() * streams.length)];
          s.sink.full = !s.sink.full;
          if (!s.sink.full) s.handle.resume();
        } else {
          await new Promise((res) => setImmediate(res));
        }
        record();
      }
      for (const s of streams) {
        s.sink.full = false;
        s.handle.resume();
      }
      await settle(hub);
      for (const s of streams) expectView(s.sink, feed.state, s.services.length === 0 ? undefined : s.services);
    }
  });
});
