// What the resources say: the endpoints chosen from a service's instances, and the encoded
// listener, cluster and assignment as a client decodes them.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { pino } from "pino";
import { ResourceCache } from "../../src/api/xds/cache.js";
import { loadXdsProtos } from "../../src/api/xds/protos.js";
import { encodeLoadAssignment, LOCALITY_WEIGHTS_TOTAL_MAX, passingEndpoints } from "../../src/api/xds/resources.js";
import type { Check, HealthStatus, Instance } from "../../src/registry/model.js";
import { ServiceViews } from "../../src/registry/service_views.js";
import { RegistryState, encodeRegistryCommand } from "../../src/registry/state.js";
import { waitFor } from "../support/cluster.js";
import type { LogLine } from "./harness.js";
import type { DecodedAssignment } from "./raw_client.js";

function check(status: HealthStatus): Check {
  return { checkId: "c", name: "c", kind: "ttl", notes: "", ttlMs: 1000, target: "", intervalMs: 0, timeoutMs: 0, deregisterCriticalAfterMs: 0, status, output: "", statusSinceMs: 0 };
}

function inst(id: string, fields: Partial<Instance> = {}): Instance {
  return {
    id, service: "web", address: "10.0.0.1", port: 80, tags: [], meta: {}, weights: { passing: 1, warning: 1 }, zone: "", node: "n1",
    nodeAddress: "192.168.0.1", checks: [], createIndex: 1, modifyIndex: 1, ...fields,
  };
}

void describe("xDS resources", () => {
  void test("endpoints are the passing instances, by zone, weighted, with the node's address for an empty one", () => {
    const { localities, skipped } = passingEndpoints([
      inst("b1", { zone: "b", address: "10.0.0.3", weights: { passing: 3, warning: 1 } }),
      inst("a1", { zone: "a", address: "10.0.0.2" }),
      inst("a2", { zone: "a", address: "", port: 81 }),
      inst("warn", { address: "10.0.0.9", checks: [check("warning")] }),
      inst("down", { address: "10.0.0.8", checks: [check("critical")] }),
      inst("ok", { address: "10.0.0.7", checks: [check("passing")] }),
    ]);
    assert.deepEqual(skipped, []);
    assert.deepEqual(localities, [
      { zone: "", weight: 1, endpoints: [{ address: "10.0.0.7", port: 80, weight: 1 }] },
      { zone: "a", weight: 2, endpoints: [{ address: "10.0.0.2", port: 80, weight: 1 }, { address: "192.168.0.1", port: 81, weight: 1 }] },
      { zone: "b", weight: 3, endpoints: [{ address: "10.0.0.3", port: 80, weight: 3 }] },
    ]);
  });

  void test("an address that is not an IP literal, or one already taken, is left out and said why", () => {
    const { localities, skipped } = passingEndpoints([
      inst("named", { address: "web.internal" }),
      inst("z-second", { address: "10.0.0.1", zone: "b" }),
      inst("a-first", { address: "10.0.0.1", zone: "b" }),
      inst("v6", { address: "fd00::1" }),
    ]);
    assert.deepEqual(localities.flatMap((l) => l.endpoints.map((e) => e.address)), ["fd00::1", "10.0.0.1"], "zone \"\" sorts before b");
    assert.deepEqual(skipped.map((s) => s.id).sort(), ["named", "z-second"]);
    assert.match(skipped.find((s) => s.id === "named")?.reason ?? "", /not an IP literal/);
    assert.match(skipped.find((s) => s.id === "z-second")?.reason ?? "", /already the endpoint of instance a-first/);
  });

  void test("locality weights that would pass gRPC's limit are scaled down together", () => {
    const many = Array.from({ length: 70_000 }, (_, i) => inst(`i${i}`, { zone: i % 2 === 0 ? "a" : "b", address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, weights: { passing: 100_000, warning: 1 } }));
    const { localities } = passingEndpoints(many);
    const total = localities.reduce((sum, l) => sum + l.weight, 0);
    assert.ok(total <= LOCALITY_WEIGHTS_TOTAL_MAX, `total ${total}`);
    assert.equal(localities[0].weight, localities[1].weight);
    assert.equal(localities[0].endpoints[0].weight, 65_535, "an endpoint's weight is capped");
  });

  void test("every group of an assignment carries a locality, also an empty zone's", async () => {
    const protos = await loadXdsProtos();
    const bytes = encodeLoadAssignment(protos, "web", passingEndpoints([inst("x"), inst("y", { zone: "eu-1", address: "10.0.0.2" })]).localities);
    const cla = protos.ClusterLoadAssignment.toObject(protos.ClusterLoadAssignment.decode(bytes), { defaults: true, enums: String }) as DecodedAssignment;
    assert.deepEqual(cla.endpoints.map((g) => g.locality?.zone), ["", "eu-1"]);
    assert.deepEqual(cla.endpoints.map((g) => g.load_balancing_weight?.value), [1, 1]);
    assert.deepEqual(cla.endpoints.map((g) => g.lb_endpoints[0].health_status), ["HEALTHY", "HEALTHY"]);
  });

  void test("the cache gives the same bytes the same version, and warns once per skipped instance", async () => {
    const protos = await loadXdsProtos();
    const state = new RegistryState();
    const lines: LogLine[] = [];
    const limits = { rebuildSliceServices: 10, absentEndpointsCachedMax: 4, skipWarningsMax: 10, rebuildCostHoldFactor: 4 };
    const cache = new ResourceCache(state, limits, pino({}, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) }), () => true, new ServiceViews(state));
    let index = 0;
    const register = (id: string, address: string, tags: string[] = []): void => state.apply(++index, encodeRegistryCommand({
      op: "register", atMs: 0, checks: [],
      instance: { id, service: "web", address, port: 80, tags, meta: {}, weights: { passing: 1, warning: 1 }, zone: "", node: "n1", nodeAddress: "127.0.0.1" },
    }));
    register("web-1", "10.0.0.1");
    register("web-dns", "web.example");
    cache.start(protos);
    await cache.built;
    const v1 = cache.get("endpoint", "web")?.version;
    register("web-1", "10.0.0.1", ["tagged"]);
    register("web-dns", "web.example", ["tagged"]);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(cache.get("endpoint", "web")?.version, v1, "a tag does not change the assignment");
    assert.equal(lines.filter((l) => l.instance === "web-dns").length, 1);
    assert.equal(cache.get("listener", "nothing"), undefined);
    assert.notEqual(cache.get("endpoint", "nothing"), undefined, "an unknown service's endpoints are an empty assignment");
    cache.close();
  });

  void test("endpoints nobody subscribes to are not encoded on a change; a costly rebuild holds its service back a while", async () => {
    const protos = await loadXdsProtos();
    const state = new RegistryState();
    const subscribed = new Set<string>();
    const cache = new ResourceCache(state, { rebuildSliceServices: 10, absentEndpointsCachedMax: 4, skipWarningsMax: 10, rebuildCostHoldFactor: 4 }, pino({ level: "silent" }), (s) => subscribed.has(s), new ServiceViews(state));
    const changes: string[] = [];
    cache.onChange((cs) => changes.push(...cs.map((c) => `${c.kind}:${c.name}`)));
    let index = 0;
    const register = (id: string, service: string, n: number): void => state.apply(++index, encodeRegistryCommand({
      op: "register", atMs: 0, checks: [],
      instance: { id, service, address: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, port: 80, tags: [], meta: {}, weights: { passing: 1, warning: 1 }, zone: "", node: "n1", nodeAddress: "127.0.0.1" },
    }));
    cache.start(protos);
    await cache.built;
    const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

    register("quiet-1", "quiet", 1);
    await turn();
    register("quiet-2", "quiet", 2);
    await turn();
    assert.deepEqual(changes, ["listener:quiet", "cluster:quiet"], "no endpoint is built for a service nobody subscribes to");
    // A framed resource is itself a DiscoveryResponse holding just that resource.
    const framed = protos.DiscoveryResponse.toObject(protos.DiscoveryResponse.decode(cache.get("endpoint", "quiet")?.sotwField ?? new Uint8Array())) as { resources: { value: Uint8Array }[] };
    const cla = protos.ClusterLoadAssignment.toObject(protos.ClusterLoadAssignment.decode(framed.resources[0].value)) as DecodedAssignment;
    assert.equal(cla.endpoints[0].lb_endpoints.length, 2, "asked for, they are built on the spot, current");

    // Building 5,000 endpoints (in slices, being past SYNC_BUILD_INSTANCES_MAX) takes well over 2 ms on any machine.
    subscribed.add("big");
    for (let i = 0; i < 5000; i++) register(`big-${i}`, "big", i);
    await waitFor(() => Promise.resolve(changes.includes("endpoint:big") ? true : undefined), 10_000, () => "the sliced build of big never landed");
    const first = cache.get("endpoint", "big")?.version;
    assert.notEqual(first, undefined);
    changes.length = 0;
    register("big-extra", "big", 5000);
    await turn();
    assert.deepEqual(changes, [], "the next rebuild waits four times as long as the last one took");
    register("big-extra-2", "big", 5001);
    await waitFor(() => Promise.resolve(changes.length > 0 ? true : undefined), 10_000, () => "the held rebuild never ran");
    assert.deepEqual(changes, ["endpoint:big"], "both writes in one rebuild");
    assert.notEqual(cache.get("endpoint", "big")?.version, first);
    cache.close();
  });

  void test("the cache's bounds: services rebuilt per turn, empty assignments kept, skipped instances logged", async () => {
    const protos = await loadXdsProtos();
    const state = new RegistryState();
    const lines: LogLine[] = [];
    const limits = { rebuildSliceServices: 2, absentEndpointsCachedMax: 2, skipWarningsMax: 1, rebuildCostHoldFactor: 0 };
    const cache = new ResourceCache(state, limits, pino({}, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) }), () => true, new ServiceViews(state));
    const changed: string[] = [];
    cache.onChange((cs) => changed.push(...cs.filter((c) => c.kind === "listener").map((c) => c.name)));
    cache.start(protos);
    await cache.built;
    let index = 0;
    for (const [id, address] of [["s1-1", "host-a"], ["s2-1", "host-b"], ["s3-1", "host-c"], ["s4-1", "10.0.0.4"], ["s5-1", "10.0.0.5"]]) {
      state.apply(++index, encodeRegistryCommand({
        op: "register", atMs: 0, checks: [],
        instance: { id, service: id.slice(0, 2), address, port: 80, tags: [], meta: {}, weights: { passing: 1, warning: 1 }, zone: "", node: "n1", nodeAddress: "127.0.0.1" },
      }));
    }
    const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
    await turn();
    assert.equal(changed.length, 2, "two services in the first turn");
    await turn();
    await turn();
    assert.deepEqual(changed.sort(), ["s1", "s2", "s3", "s4", "s5"]);
    const skips = lines.filter((l) => l.instance !== undefined);
    assert.equal(skips.length, 1, "one skipped instance is logged; then one line says no more are");
    assert.equal(lines.filter((l) => l.msg.includes("no more are reported")).length, 1);

    const absent = ["x1", "x2", "x3"].map((n) => cache.get("endpoint", n)?.version);
    assert.equal(new Set(absent).size, 3, "each unknown name has its own empty assignment");
    assert.equal(cache.get("endpoint", "x1")?.version, absent[0], "one dropped past the bound is encoded again, the same");
    cache.close();
  });
});
