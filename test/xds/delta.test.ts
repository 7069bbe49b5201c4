// Delta ADS against the xDS service on loopback, with a client built on Envoy's protos.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from "../../src/api/xds/resources.js";
import { loadXdsProtos, type XdsProtos } from "../../src/api/xds/protos.js";
import { XdsHarness } from "./harness.js";
import { adsClient, decodeAny, endpointAddresses, RawAdsStream, type DecodedAssignment, type DeltaResponse } from "./raw_client.js";

const NODE = { id: "delta-test-client" };

void describe("delta ADS", () => {
  let harness: XdsHarness;
  let client: grpc.Client;
  let protos: XdsProtos;
  const streams: RawAdsStream<DeltaResponse>[] = [];

  before(async () => {
    protos = await loadXdsProtos();
    harness = await XdsHarness.start();
    client = adsClient(harness.address);
  });

  after(async () => {
    for (const s of streams) s.close();
    client.close();
    await harness.close();
  });

  async function open(): Promise<RawAdsStream<DeltaResponse>> {
    const s = await RawAdsStream.delta(client);
    streams.push(s);
    return s;
  }

  const names = (r: DeltaResponse): string[] => r.resources.map((x) => x.name).sort();
  const ack = (s: RawAdsStream<DeltaResponse>, r: DeltaResponse): void => s.send({ type_url: r.type_url, response_nonce: r.nonce });

  /** Subscribes to one more (unknown) listener and waits for its answer, failing if any other response came first. */
  let barrierCount = 0;
  async function barrier(s: RawAdsStream<DeltaResponse>): Promise<void> {
    const name = `barrier-${++barrierCount}`;
    s.send({ type_url: LISTENER_TYPE.typeUrl, resource_names_subscribe: [name] });
    const r = await s.next();
    assert.deepEqual([r.type_url, r.removed_resources], [LISTENER_TYPE.typeUrl, [name]], "expected only the barrier's answer");
    ack(s, r);
  }

  void test("subscribe and unsubscribe: each response carries versions, and a name that does not exist comes back removed", async () => {
    harness.register("d-web-1", "d-web");
    harness.register("d-api-1", "d-api");
    const s = await open();
    s.send({ node: NODE, type_url: CLUSTER_TYPE.typeUrl, resource_names_subscribe: ["d-web", "d-none"] });
    const first = await s.next();
    assert.ok(first.nonce !== "");
    assert.deepEqual(names(first), ["d-web"]);
    assert.deepEqual(first.removed_resources, ["d-none"], "the client learns the name does not exist");
    assert.match(first.resources[0].version, /^[0-9a-f]{16}$/);
    assert.equal(decodeAny(protos, first.resources[0].resource).name, "d-web");

    s.send({ type_url: CLUSTER_TYPE.typeUrl, response_nonce: first.nonce, resource_names_subscribe: ["d-api"], resource_names_unsubscribe: ["d-web"] });
    const second = await s.next();
    assert.deepEqual(names(second), ["d-api"], "only what was added");
    assert.deepEqual(second.removed_resources, []);
    ack(s, second);

    harness.deregister("d-api-1");
    const removed = await s.next();
    assert.deepEqual([names(removed), removed.removed_resources], [[], ["d-api"]]);
    ack(s, removed);
    harness.deregister("d-web-1");
    await barrier(s);
    assert.equal(s.pending, 0, "an unsubscribed resource's removal is not sent");
  });

  void test("a reconnecting client's initial_resource_versions are not sent again, unless stale", async () => {
    harness.register("d-keep-1", "d-keep");
    harness.register("d-old-1", "d-old");
    const s1 = await open();
    s1.send({ node: NODE, type_url: CLUSTER_TYPE.typeUrl, resource_names_subscribe: ["d-keep", "d-old"] });
    const held = await s1.next();
    ack(s1, held);
    const versions = Object.fromEntries(held.resources.map((r) => [r.name, r.version]));
    s1.close();

    const s2 = await open();
    s2.send({
      node: NODE, type_url: CLUSTER_TYPE.typeUrl, resource_names_subscribe: ["d-keep", "d-old", "d-gone"],
      initial_resource_versions: { "d-keep": versions["d-keep"], "d-old": "0000000000000000", "d-gone": "1111111111111111" },
    });
    const r = await s2.next();
    assert.deepEqual(names(r), ["d-old"], "d-keep is held at its current version");
    assert.deepEqual(r.removed_resources, ["d-gone"]);
  });

  void test("a NACKed version is not resent; a newer one is; a stale nonce still subscribes", async () => {
    harness.register("d-pay-1", "d-pay", { address: "10.1.0.1" });
    const s = await open();
    s.send({ node: NODE, type_url: ENDPOINT_TYPE.typeUrl, resource_names_subscribe: ["d-pay"] });
    const v1 = await s.next();
    ack(s, v1);
    const nacks = harness.xds.stats.nacks;
    harness.register("d-pay-2", "d-pay", { address: "10.1.0.2" });
    const v2 = await s.next();
    assert.notEqual(v2.resources[0].version, v1.resources[0].version);
    const detail = `delta client refuses it: ${"x".repeat(3000)}`;
    s.send({ type_url: ENDPOINT_TYPE.typeUrl, response_nonce: v2.nonce, error_detail: { code: 3, message: detail } });
    await barrier(s);
    assert.equal(s.pending, 0);
    assert.equal(harness.xds.stats.nacks, nacks + 1);
    const logged = harness.warnings().find((l) => typeof l.errorDetail === "string" && l.errorDetail.startsWith("delta client refuses it"));
    assert.equal(logged?.errorDetail, `${detail.slice(0, 2048)}...`, "a long error_detail is cut at 2,048 characters");

    // Not an answer to the latest response, but its subscription counts.
    const stale = harness.xds.stats.staleRequests;
    s.send({ type_url: ENDPOINT_TYPE.typeUrl, response_nonce: "not-a-nonce", resource_names_subscribe: ["d-other"] });
    const other = await s.next();
    assert.deepEqual(names(other), ["d-other"]);
    assert.equal(harness.xds.stats.staleRequests, stale + 1);
    ack(s, other);

    harness.register("d-pay-3", "d-pay", { address: "10.1.0.3" });
    const v3 = await s.next();
    assert.deepEqual(names(v3), ["d-pay"]);
    assert.deepEqual(endpointAddresses(decodeAny(protos, v3.resources[0].resource) as unknown as DecodedAssignment), ["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"]);
  });

  void test("an empty first subscription to listeners is a wildcard", async () => {
    harness.register("d-wild-1", "d-wild");
    const s = await open();
    s.send({ node: NODE, type_url: LISTENER_TYPE.typeUrl });
    const r = await s.next();
    assert.ok(names(r).includes("d-wild"));
    ack(s, r);
    harness.register("d-wild2-1", "d-wild2");
    const added = await s.next();
    assert.deepEqual(names(added), ["d-wild2"], "only the new listener");
  });
});
