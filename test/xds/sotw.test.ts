// State-of-the-world ADS against the xDS service on loopback, with a client built on Envoy's
// protos that ACKs, NACKs and sends stale nonces as a test tells it. "Nothing more was sent" is
// proved with a barrier: a request of another type whose answer the server writes after anything
// it had pending for the stream.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE } from "../../src/api/xds/resources.js";
import { loadXdsProtos, type XdsProtos } from "../../src/api/xds/protos.js";
import { XdsHarness } from "./harness.js";
import { adsClient, decodeAny, endpointAddresses, RawAdsStream, type DecodedAssignment, type SotwResponse } from "./raw_client.js";

const NODE = { id: "sotw-test-client", cluster: "tests" };

void describe("state-of-the-world ADS", () => {
  let harness: XdsHarness;
  let client: grpc.Client;
  let protos: XdsProtos;
  const streams: RawAdsStream<SotwResponse>[] = [];

  before(async () => {
    protos = await loadXdsProtos();
    // Each write here is its own rebuild, however long a cold first encoding takes.
    harness = await XdsHarness.start({ limits: { rebuildCostHoldFactor: 0 } });
    client = adsClient(harness.address);
  });

  after(async () => {
    for (const s of streams) s.close();
    client.close();
    await harness.close();
  });

  async function open(): Promise<RawAdsStream<SotwResponse>> {
    const s = await RawAdsStream.sotw(client);
    streams.push(s);
    return s;
  }

  const assignment = (r: SotwResponse, i = 0): DecodedAssignment => decodeAny(protos, r.resources[i]) as unknown as DecodedAssignment;

  const barriers = new Map<RawAdsStream<SotwResponse>, { names: string[]; last: SotwResponse | undefined }>();

  /**
   * Adds a cluster name to the stream's subscription (ACKing the previous barrier's answer) and
   * waits for the answer, failing if any other response came first.
   */
  async function barrier(s: RawAdsStream<SotwResponse>): Promise<void> {
    let b = barriers.get(s);
    if (b === undefined) barriers.set(s, (b = { names: [], last: undefined }));
    b.names.push(`barrier-${b.names.length}`);
    s.send({ type_url: CLUSTER_TYPE.typeUrl, resource_names: b.names, response_nonce: b.last?.nonce ?? "", version_info: b.last?.version_info ?? "" });
    const r = await s.next();
    assert.equal(r.type_url, CLUSTER_TYPE.typeUrl, `expected only the barrier's answer, got a ${r.type_url} response`);
    b.last = r;
  }

  void test("an ACKed version is not sent again, and a change pushes the new version once", async () => {
    harness.register("web-1", "web", { address: "10.0.0.1" });
    const s = await open();
    s.send({ node: NODE, type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["web"] });
    const first = await s.next();
    assert.equal(first.type_url, ENDPOINT_TYPE.typeUrl);
    assert.equal(first.control_plane?.identifier, "test-node");
    assert.deepEqual(endpointAddresses(assignment(first)), ["10.0.0.1:8080"]);
    s.send({ type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["web"], response_nonce: first.nonce, version_info: first.version_info });

    harness.register("web-2", "web", { address: "10.0.0.2" });
    const second = await s.next();
    assert.notEqual(second.nonce, first.nonce);
    assert.deepEqual(endpointAddresses(assignment(second)), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    s.send({ type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["web"], response_nonce: second.nonce, version_info: second.version_info });

    // A write that leaves the assignment's bytes as they were (a tag) pushes nothing.
    harness.register("web-2", "web", { address: "10.0.0.2", tags: ["canary"] });
    await barrier(s);
    assert.equal(s.pending, 0);
  });

  void test("a NACKed version is logged with the client's error_detail and not resent; a newer version is sent", async () => {
    harness.register("pay-1", "pay", { address: "10.0.1.1" });
    const s = await open();
    s.send({ node: { id: "nacking-client" }, type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["pay"] });
    const v1 = await s.next();
    s.send({ type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["pay"], response_nonce: v1.nonce, version_info: v1.version_info });
    const nacksBefore = harness.xds.stats.nacks;

    harness.register("pay-2", "pay", { address: "10.0.1.2" });
    const v2 = await s.next();
    s.send({
      type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["pay"], response_nonce: v2.nonce, version_info: v1.version_info,
      error_detail: { code: 3, message: "endpoints[0]: pretend this client cannot use 10.0.1.2" },
    });
    await barrier(s);
    assert.equal(s.pending, 0, "the rejected version must not be sent again");
    assert.equal(harness.xds.stats.nacks, nacksBefore + 1);
    const warning = harness.warnings().find((l) => l.client === "nacking-client");
    assert.ok(warning !== undefined, "the NACK is logged at warn");
    assert.equal(warning.errorDetail, "endpoints[0]: pretend this client cannot use 10.0.1.2");
    assert.deepEqual(warning.rejected, ["pay"]);

    // gRPC repeats error_detail on later requests until a response is good: not a second NACK.
    s.send({
      type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["pay"], response_nonce: v2.nonce, version_info: v1.version_info,
      error_detail: { code: 3, message: "endpoints[0]: pretend this client cannot use 10.0.1.2" },
    });
    await barrier(s);
    assert.equal(s.pending, 0);
    assert.equal(harness.xds.stats.nacks, nacksBefore + 1);

    harness.register("pay-3", "pay", { address: "10.0.1.3" });
    const v3 = await s.next();
    assert.equal(v3.type_url, ENDPOINT_TYPE.typeUrl);
    assert.deepEqual(endpointAddresses(assignment(v3)), ["10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"]);
  });

  void test("a request whose nonce is not the latest response's is ignored", async () => {
    harness.register("stale-1", "stale");
    const s = await open();
    s.send({ node: NODE, type_url: LISTENER_TYPE.typeUrl, resource_names: ["stale"] });
    const r = await s.next();
    const { acks, nacks, staleRequests } = harness.xds.stats;
    // Sent before the client saw the response: an empty nonce, and one the server never sent.
    s.send({ type_url: LISTENER_TYPE.typeUrl, resource_names: ["stale"], error_detail: { code: 3, message: "stale" } });
    s.send({ type_url: LISTENER_TYPE.typeUrl, resource_names: [], response_nonce: "not-a-nonce" });
    s.send({ type_url: LISTENER_TYPE.typeUrl, resource_names: ["stale"], response_nonce: r.nonce, version_info: r.version_info });
    await barrier(s);
    assert.equal(s.pending, 0);
    assert.equal(harness.xds.stats.staleRequests, staleRequests + 2);
    assert.equal(harness.xds.stats.nacks, nacks, "a stale request is no NACK");
    assert.equal(harness.xds.stats.acks, acks + 1, "the listener's ACK");
  });

  void test("listeners and clusters are full state: an unknown name is left out and a removed service is dropped", async () => {
    harness.register("lds-1", "lds");
    harness.register("lds-gone-1", "lds-gone");
    const s = await open();
    s.send({ node: NODE, type_url: LISTENER_TYPE.typeUrl, resource_names: ["lds", "lds-gone", "no-such-service"] });
    const r = await s.next();
    const listeners = r.resources.map((a) => decodeAny(protos, a));
    assert.deepEqual(listeners.map((l) => l.name).sort(), ["lds", "lds-gone"]);
    const listener = listeners.find((l) => l.name === "lds") as unknown as { api_listener: { api_listener: { type_url: string; value: Uint8Array } } };
    assert.equal(listener.api_listener.api_listener.type_url, "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    const hcm = protos.HttpConnectionManager.toObject(protos.HttpConnectionManager.decode(listener.api_listener.api_listener.value), { defaults: true }) as {
      http_filters: { name: string; typed_config: { type_url: string } }[];
      route_config: { virtual_hosts: { domains: string[]; routes: { match: { prefix: string }; route: { cluster: string } }[] }[] };
    };
    assert.equal(hcm.http_filters.at(-1)?.typed_config.type_url, "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "the router filter ends the list");
    assert.deepEqual(hcm.route_config.virtual_hosts[0].routes.map((x) => [x.match.prefix, x.route.cluster]), [["", "lds"]]);
    s.send({ type_url: LISTENER_TYPE.typeUrl, resource_names: ["lds", "lds-gone", "no-such-service"], response_nonce: r.nonce, version_info: r.version_info });

    harness.deregister("lds-gone-1");
    const after = await s.next();
    assert.deepEqual(after.resources.map((a) => decodeAny(protos, a).name), ["lds"], "the full state without the removed service");
  });

  void test("a wildcard subscription (an empty first list) lists every service, and follows new ones", async () => {
    harness.register("wild-a-1", "wild-a");
    const s = await open();
    s.send({ node: NODE, type_url: CLUSTER_TYPE.typeUrl, resource_names: [] });
    const r = await s.next();
    const names = r.resources.map((a) => decodeAny(protos, a).name as string);
    assert.ok(names.includes("wild-a"));
    const cluster = decodeAny(protos, r.resources[names.indexOf("wild-a")]) as { type: string; lb_policy: string; eds_cluster_config: { eds_config: { ads: object | null } } };
    assert.equal(cluster.type, "EDS");
    assert.equal(cluster.lb_policy, "ROUND_ROBIN");
    assert.ok(cluster.eds_cluster_config.eds_config.ads !== null, "endpoints come from ADS");
    s.send({ type_url: CLUSTER_TYPE.typeUrl, resource_names: [], response_nonce: r.nonce, version_info: r.version_info });

    harness.register("wild-b-1", "wild-b");
    const next = await s.next();
    const namesAfter = next.resources.map((a) => decodeAny(protos, a).name as string);
    assert.ok(namesAfter.includes("wild-a") && namesAfter.includes("wild-b"));
  });

  void test("the endpoints of an unknown service are an empty assignment", async () => {
    const s = await open();
    s.send({ node: NODE, type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["nobody-registers-this"] });
    const r = await s.next();
    const cla = assignment(r);
    assert.equal(cla.cluster_name, "nobody-registers-this");
    assert.deepEqual(cla.endpoints, []);
  });

  void test("a client that does not ACK gets the latest version once it does, however many changes came between, and holds up no other", async () => {
    harness.register("slow-1", "slow", { address: "10.0.2.1" });
    const s = await open();
    s.send({ node: NODE, type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["slow"] });
    const first = await s.next();
    const brisk = await open();
    brisk.send({ node: NODE, type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["slow"] });
    let briskLast = await brisk.next();
    const coalescedBefore = harness.xds.stats.coalesced;
    for (let i = 2; i <= 6; i++) {
      brisk.send({ type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["slow"], response_nonce: briskLast.nonce, version_info: briskLast.version_info });
      harness.register(`slow-${i}`, "slow", { address: `10.0.2.${i}` });
      // The stream that ACKs has each version while the other has not answered the first.
      briskLast = await brisk.next();
      assert.equal(endpointAddresses(assignment(briskLast)).length, i);
    }
    assert.equal(harness.xds.stats.coalesced, coalescedBefore + 4, "changes 3 to 6 fold into change 2, unsent");
    assert.equal(s.pending, 0, "nothing is sent while a response is unacknowledged");
    s.send({ type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["slow"], response_nonce: first.nonce, version_info: first.version_info });
    const latest = await s.next();
    assert.equal(endpointAddresses(assignment(latest)).length, 6, "one response, with every change");
    s.send({ type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["slow"], response_nonce: latest.nonce, version_info: latest.version_info });
    await barrier(s);
    assert.equal(s.pending, 0);
  });

  void test("a request that is not a DiscoveryRequest ends the stream with INVALID_ARGUMENT", async () => {
    const s = await open();
    s.sendRaw(Buffer.from([0x0a, 0xff]));
    const status = await s.status();
    assert.equal(status.code, 3);
    assert.match(status.details, /not a valid envoy\.service\.discovery\.v3\.DiscoveryRequest/);
  });

  void test("a stream subscribing to more names of a type than its bound ends with RESOURCE_EXHAUSTED", async () => {
    const small = await XdsHarness.start({ limits: { subscribedNamesMax: 2 } });
    const smallClient = adsClient(small.address);
    try {
      const s = await RawAdsStream.sotw(smallClient);
      s.send({ node: NODE, type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["a", "b", "c"] });
      const status = await s.status();
      assert.equal(status.code, 8);
      assert.match(status.details, /more than 2 resources of type\.googleapis\.com\/envoy\.config\.endpoint\.v3\.ClusterLoadAssignment/);
    } finally {
      smallClient.close();
      await small.close();
    }
  });
});
