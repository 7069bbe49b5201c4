// The per-stream, per-type protocol bookkeeping on its own: what goes out when, over a source of
// versioned resources the test changes by hand.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { PushScheduler } from "../../src/api/xds/fanout.js";
import { CLUSTER_TYPE, ENDPOINT_TYPE, type ResourceType } from "../../src/api/xds/resources.js";
import { type ResponseShape, type SubscriberRegistry, SubscriptionLimitError, TypeSubscription, type Versioned } from "../../src/api/xds/subscription.js";

class Source {
  readonly resources = new Map<string, Versioned>();

  set(name: string, version: string): void {
    this.resources.set(name, { name, version });
  }

  get = (name: string): Versioned | undefined => this.resources.get(name);
  names = (): Iterable<string> => this.resources.keys();
  /** Names still being built. */
  readonly building = new Set<string>();
  pending = (name: string): boolean => this.building.has(name);
}

class Registry implements SubscriberRegistry<TypeSubscription<Versioned>> {
  readonly named = new Set<string>();
  wildcard = false;
  add(_sub: TypeSubscription<Versioned>, name: string): void {
    this.named.add(name);
  }
  remove(_sub: TypeSubscription<Versioned>, name: string): void {
    this.named.delete(name);
  }
  setWildcard(_sub: TypeSubscription<Versioned>, on: boolean): void {
    this.wildcard = on;
  }
}

function subscription(type: ResourceType, shape: ResponseShape, source: Source, namesMax = 100): { sub: TypeSubscription<Versioned>; registry: Registry } {
  const registry = new Registry();
  const sub = new TypeSubscription<Versioned>({ flush: () => {} }, type, shape, source, registry, namesMax);
  return { sub, registry };
}

const sent = (plan: { resources: readonly Versioned[] } | undefined): string[] | undefined => plan?.resources.map((r) => `${r.name}@${r.version}`);

void describe("xDS subscription bookkeeping", () => {
  void test("one response is unacknowledged at a time; changes meanwhile wait and coalesce", () => {
    const source = new Source();
    source.set("a", "1");
    const { sub } = subscription(ENDPOINT_TYPE, "incremental", source);
    sub.replaceNames(["a"]);
    assert.deepEqual(sent(sub.takeResponse()), ["a@1"]);
    source.set("a", "2");
    assert.equal(sub.markChanged("a"), false);
    source.set("a", "3");
    assert.equal(sub.markChanged("a"), true, "coalesced into the unsent change");
    assert.equal(sub.takeResponse(), undefined, "the window is closed until the ACK");
    assert.equal(sub.ack(), true);
    assert.deepEqual(sent(sub.takeResponse()), ["a@3"]);
    assert.equal(sub.ack(), true);
    sub.markChanged("a");
    assert.equal(sub.takeResponse(), undefined, "the held version is not sent again");
  });

  void test("a NACKed version is not sent again; the next version is; the client keeps what it held", () => {
    const source = new Source();
    source.set("a", "1");
    source.set("b", "1");
    const { sub } = subscription(ENDPOINT_TYPE, "incremental", source);
    sub.replaceNames(["a", "b"]);
    sub.takeResponse();
    sub.ack();
    source.set("a", "2");
    sub.markChanged("a");
    assert.deepEqual(sent(sub.takeResponse()), ["a@2"]);
    assert.deepEqual(sub.nack(), ["a"]);
    assert.equal(sub.nack(), undefined, "a second NACK of the same response is no NACK");
    sub.markChanged("a");
    assert.equal(sub.takeResponse(), undefined);
    source.set("a", "3");
    sub.markChanged("a");
    assert.deepEqual(sent(sub.takeResponse()), ["a@3"]);
    sub.ack();
    // Once a later version is accepted, the rejection is forgotten: content may come back.
    source.set("a", "2");
    sub.markChanged("a");
    assert.deepEqual(sent(sub.takeResponse()), ["a@2"]);
  });

  void test("full state: every covered resource in each response, an absent name left out, a vanished wildcard name dropped", () => {
    const source = new Source();
    source.set("a", "1");
    source.set("b", "1");
    const { sub, registry } = subscription(CLUSTER_TYPE, "full-state", source);
    sub.replaceNames([]);
    assert.equal(registry.wildcard, true, "an empty first list is the legacy wildcard");
    assert.deepEqual(sent(sub.takeResponse()), ["a@1", "b@1"]);
    sub.ack();
    source.set("b", "2");
    sub.markChanged("b");
    assert.deepEqual(sent(sub.takeResponse()), ["a@1", "b@2"], "the unchanged resource comes too");
    sub.ack();
    source.resources.delete("a");
    sub.markChanged("a");
    assert.deepEqual(sent(sub.takeResponse()), ["b@2"]);
    sub.ack();

    sub.replaceNames(["b", "missing"]);
    assert.equal(registry.wildcard, false, "naming resources ends the legacy wildcard");
    assert.deepEqual(sent(sub.takeResponse()), ["b@2"], "a response is owed for the new name, which does not exist");
    sub.ack();
    sub.replaceNames(["b", "missing"]);
    assert.equal(sub.takeResponse(), undefined, "the same list again asks for nothing");
    sub.replaceNames([]);
    assert.equal(registry.wildcard, false, "after names, an empty list unsubscribes from everything");
    assert.deepEqual([...registry.named], []);
  });

  void test("delta: declared versions are not resent, a fresh subscribe always is, and a vanished name is removed", () => {
    const source = new Source();
    source.set("a", "1");
    source.set("b", "1");
    const { sub } = subscription(CLUSTER_TYPE, "incremental", source);
    const declared = new Map([["a", "1"], ["b", "0"], ["c", "9"]]);
    sub.initialVersions(declared);
    sub.subscribe(["a", "b", "c"], true, declared);
    const plan = sub.takeResponse();
    assert.deepEqual(sent(plan), ["b@1"]);
    assert.deepEqual(plan?.removed, ["c"]);
    sub.ack();
    sub.subscribe(["a"], false, new Map());
    assert.deepEqual(sent(sub.takeResponse()), ["a@1"], "a name subscribed again is sent even if held");
    sub.ack();
    sub.unsubscribe(["a"]);
    source.resources.delete("a");
    sub.markChanged("a");
    assert.equal(sub.takeResponse(), undefined, "an unsubscribed name is not the client's concern");
  });

  void test("a resource still being built is neither sent nor reported absent; it goes out once it lands", () => {
    const source = new Source();
    source.building.add("big");
    const { sub } = subscription(ENDPOINT_TYPE, "incremental", source);
    sub.subscribe(["big"], true, new Map());
    assert.equal(sub.takeResponse(), undefined, "no response that would say big has no assignment");
    source.building.delete("big");
    source.set("big", "7");
    sub.markChanged("big");
    const plan = sub.takeResponse();
    assert.deepEqual(sent(plan), ["big@7"]);
    assert.deepEqual(plan?.removed, []);
  });

  void test("a subscription past its bound of names is refused", () => {
    const { sub } = subscription(ENDPOINT_TYPE, "incremental", new Source(), 2);
    assert.throws(() => sub.replaceNames(["a", "b", "c"]), SubscriptionLimitError);
    assert.throws(() => sub.subscribe(["a", "b", "c"], true, new Map()), /more than 2 resources/);
  });

  void test("the push scheduler flushes a slice of streams per turn of the event loop", async () => {
    const scheduler = new PushScheduler(100);
    let flushed = 0;
    for (let i = 0; i < 250; i++) scheduler.enqueue({ flush: () => flushed++ });
    assert.equal(flushed, 0);
    // The scheduler's turn was queued first, so each awaited turn runs after one of its slices.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(flushed, 100);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(flushed, 200);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(flushed, 250);
    assert.equal(scheduler.queued, 0);
  });
});
