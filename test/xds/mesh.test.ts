// The mesh's resources as gRPC itself reads them: server listeners and mTLS clusters decoded and
// validated by @grpc/grpc-js-xds's own resource types, and the RBAC filter evaluated by its own
// RBAC engine, which must decide every call as the intentions do.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { describe, test } from "node:test";
import fc from "fast-check";
import { pino } from "pino";
import { type EncodedResource, ResourceCache } from "../../src/api/xds/cache.js";
import { encodeServerListener, rbacRulesFor, serverListenerAddress, SERVER_LISTENER_NAME_PREFIX, type RbacRules } from "../../src/api/xds/mesh.js";
import { MTLS_META_KEY } from "../../src/registry/model.js";
import { loadXdsProtos, type XdsProtos } from "../../src/api/xds/protos.js";
import { LISTENER_TYPE } from "../../src/api/xds/resources.js";
import { ServerListeners } from "../../src/api/xds/server_listeners.js";
import type { ResourceSource } from "../../src/api/xds/subscription.js";
import { IntentionsService } from "../../src/intentions/intentions.js";
import { encodeIntentionCommand, IntentionsState, OP_UPSERT } from "../../src/intentions/state.js";
import { decide, type IntentionRule } from "../../src/intentions/precedence.js";
import { ServiceViews } from "../../src/registry/service_views.js";
import { RegistryState, encodeRegistryCommand } from "../../src/registry/state.js";
import { waitFor } from "../support/cluster.js";

const require = createRequire(import.meta.url);
// gRPC reads the flag when its modules load (so before the first require below); the filters
// (router, RBAC) register with register().
process.env.GRPC_XDS_EXPERIMENTAL_RBAC = "true";

/** What the tests use of grpc-js-xds's internals: its resource decoders and its RBAC filter. */
interface Decoded { readonly name: string; readonly value: Record<string, unknown> }
interface ResourceTypeImpl { decode(context: object, resource: { type_url: string; value: Uint8Array }): { name?: string; value?: Decoded["value"]; error?: string } }
interface RbacGroup { apply(info: object): boolean; toString(): string }
const listenerType = (require("@grpc/grpc-js-xds/build/src/xds-resource-type/listener-resource-type.js") as { ListenerResourceType: { get(): ResourceTypeImpl } }).ListenerResourceType.get();
const clusterType = (require("@grpc/grpc-js-xds/build/src/xds-resource-type/cluster-resource-type.js") as { ClusterResourceType: { get(): ResourceTypeImpl } }).ClusterResourceType.get();
const xdsResources = require("@grpc/grpc-js-xds/build/src/resources.js") as { decodeSingleResource(typeUrl: string, bytes: Uint8Array): Record<string, unknown> };
const httpFilters = require("@grpc/grpc-js-xds/build/src/http-filter.js") as { parseTopLevelFilterConfig(config: object, client: boolean): { config: RbacGroup } | null };
(require("@grpc/grpc-js-xds") as { register(): void }).register();

const TRUST_DOMAIN = "mesh.test";
const LDS = "type.googleapis.com/envoy.config.listener.v3.Listener";
const CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

function contextWith(providers: readonly string[]): object {
  return { bootstrap: { certificateProviders: Object.fromEntries(providers.map((p) => [p, { pluginName: "file_watcher", config: {} }])) } };
}

function decodeListener(protos: XdsProtos, bytes: Uint8Array, providers: readonly string[] = ["default"]): { name?: string; value?: Decoded["value"]; error?: string } {
  void protos;
  return listenerType.decode(contextWith(providers), { type_url: LDS, value: bytes });
}

/** The RBAC policy group gRPC builds from a server listener's filter chain. */
function rbacOf(bytes: Uint8Array): RbacGroup {
  const listener = xdsResources.decodeSingleResource(LDS, bytes) as { filter_chains: { filters: { typed_config: { value: Uint8Array } }[] }[] };
  const hcm = xdsResources.decodeSingleResource(HCM, listener.filter_chains[0].filters[0].typed_config.value) as { http_filters: { typed_config: object }[] };
  const parsed = httpFilters.parseTopLevelFilterConfig(hcm.http_filters[0].typed_config, false);
  assert.ok(parsed !== null, "gRPC parses the RBAC filter");
  return parsed.config;
}

/** A call from a workload whose certificate carries `uri` as its URI SAN, as gRPC's RBAC sees it. */
function callFrom(uri: string | undefined): object {
  return {
    tls: uri !== undefined,
    peerCertificate: uri === undefined ? null : { subjectaltname: `URI:${uri}`, subject: { CN: "workload" } },
    headers: {}, urlPath: "/echo.Echo/Say", destinationIp: "127.0.0.1", destinationPort: 50051, sourceIp: "127.0.0.1",
  };
}

function listenerBytes(protos: XdsProtos, rules: RbacRules, mtls = true, provider = "default"): Uint8Array {
  return encodeServerListener(protos, {
    name: `${SERVER_LISTENER_NAME_PREFIX}127.0.0.1:50051`, address: { host: "127.0.0.1", port: 50051 }, provider, trustDomain: TRUST_DOMAIN, mtls, rules,
  });
}

const NAMES = ["a", "b", "c", "*"] as const;
const CALLERS = ["a", "b", "c", "stranger"] as const;
const DESTINATION = "api";

void describe("mesh resources as gRPC reads them", () => {
  void test("the RBAC filter gRPC builds decides every caller as the intentions do (precedence, wildcards, the default)", async () => {
    const protos = await loadXdsProtos();
    const intention = fc.record({ source: fc.constantFrom(...NAMES), destination: fc.constantFrom(DESTINATION, "*"), action: fc.constantFrom("allow" as const, "deny" as const) });
    let checked = 0;
    fc.assert(fc.property(fc.uniqueArray(intention, { selector: (i) => `${i.source}>${i.destination}`, maxLength: 8 }), fc.boolean(), (intentions: IntentionRule[], defaultAllow) => {
      const rbac = rbacOf(listenerBytes(protos, rbacRulesFor(DESTINATION, intentions, defaultAllow)));
      for (const caller of CALLERS) {
        const expected = decide(intentions, caller, DESTINATION, defaultAllow).allowed;
        for (const uri of [`spiffe://${TRUST_DOMAIN}/ns/default/svc/${caller}`, `spiffe://${TRUST_DOMAIN}/ns/default/dc/dc1/svc/${caller}`]) {
          assert.equal(rbac.apply(callFrom(uri)), expected, `${uri} calling ${DESTINATION} with ${JSON.stringify(intentions)}, default ${defaultAllow ? "allow" : "deny"}`);
          checked++;
        }
      }
    }), { numRuns: 300, seed: 20261202 });
    assert.ok(checked >= 300 * CALLERS.length * 2);
  });

  void test("an allow names only this trust domain's workloads of that service, never a look-alike", async () => {
    const protos = await loadXdsProtos();
    const rbac = rbacOf(listenerBytes(protos, rbacRulesFor(DESTINATION, [{ source: "web", destination: DESTINATION, action: "allow" }], false)));
    assert.equal(rbac.apply(callFrom(`spiffe://${TRUST_DOMAIN}/ns/prod/svc/web`)), true);
    for (const uri of [`spiffe://other.test/ns/default/svc/web`, `spiffe://${TRUST_DOMAIN}/ns/default/svc/web2`, `spiffe://${TRUST_DOMAIN}/ns/default/svc/xweb`,
      `spiffe://meshXtest/ns/default/svc/web`, `spiffe://${TRUST_DOMAIN}/cairn/node/web`]) {
      assert.equal(rbac.apply(callFrom(uri)), false, uri);
    }
    assert.equal(rbac.apply(callFrom(undefined)), false, "a plaintext caller is nobody");
  });

  void test("gRPC accepts the server listener, with and without mTLS, and refuses a provider its bootstrap lacks", async () => {
    const protos = await loadXdsProtos();
    const rules = rbacRulesFor(DESTINATION, [], false);
    const secure = decodeListener(protos, listenerBytes(protos, rules, true));
    assert.equal(secure.error, undefined, secure.error);
    const chain = (secure.value as { filter_chains: { transport_socket: { name: string } | null }[] }).filter_chains[0];
    assert.equal(chain.transport_socket?.name, "envoy.transport_sockets.tls");
    const tls = xdsResources.decodeSingleResource("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
      (chain.transport_socket as unknown as { typed_config: { value: Uint8Array } }).typed_config.value) as { require_client_certificate: { value: boolean } };
    assert.equal(tls.require_client_certificate.value, true);
    const plain = decodeListener(protos, listenerBytes(protos, rules, false));
    assert.equal(plain.error, undefined, plain.error);
    assert.equal((plain.value as { filter_chains: { transport_socket: unknown }[] }).filter_chains[0].transport_socket, null);
    const otherProvider = decodeListener(protos, listenerBytes(protos, rules, true, "spiffe"), ["default"]);
    assert.match(otherProvider.error ?? "", /instance_name: spiffe/);
    assert.equal(decodeListener(protos, listenerBytes(protos, rules, true, "spiffe"), ["spiffe"]).error, undefined);
  });

  void test("a service whose instances speak mTLS gets clusters that gRPC accepts and that check the server's SPIFFE ID", async () => {
    const protos = await loadXdsProtos();
    const state = new RegistryState();
    const cache = new ResourceCache(state, { rebuildSliceServices: 64, absentEndpointsCachedMax: 16, skipWarningsMax: 16, rebuildCostHoldFactor: 0 },
      pino({ level: "silent" }), () => false, new ServiceViews(state), TRUST_DOMAIN);
    cache.start(protos);
    const register = (index: number, id: string, meta: Record<string, string>): void => state.apply(index, encodeRegistryCommand({
      op: "register", instance: { id, service: "api", address: "127.0.0.1", port: 6000 + index, tags: [], meta, weights: { passing: 1, warning: 1 }, zone: "", node: "n1", nodeAddress: "127.0.0.1" }, checks: [], atMs: 0,
    }));
    register(1, "api-1", {});
    await waitFor(() => Promise.resolve(cache.cluster("api", "default")), 2000, () => "the cluster is built");
    const plain = clusterType.decode(contextWith(["default"]), { type_url: CDS, value: anyValue(protos, cache.cluster("api", "default")) });
    assert.equal(plain.error, undefined, plain.error);
    assert.equal((plain.value as { securityUpdate?: unknown }).securityUpdate, undefined, "plaintext while no instance speaks mTLS");

    register(2, "api-2", { [MTLS_META_KEY]: "true" });
    const decodeDefault = (): { value?: Decoded["value"]; error?: string } => clusterType.decode(contextWith(["default"]), { type_url: CDS, value: anyValue(protos, cache.cluster("api", "default")) });
    const secure = await waitFor(() => Promise.resolve((decodeDefault().value as { securityUpdate?: unknown } | undefined)?.securityUpdate === undefined ? undefined : decodeDefault()), 2000, () => "the cluster turns to mTLS");
    const update = (secure.value as { securityUpdate: { caCertificateProviderInstance: string; identityCertificateProviderInstance: string; subjectAltNameMatchers: { safe_regex: { regex: string } }[] } }).securityUpdate;
    assert.equal(update.caCertificateProviderInstance, "default");
    assert.equal(update.identityCertificateProviderInstance, "default");
    const pattern = new RegExp(`^${update.subjectAltNameMatchers[0].safe_regex.regex}$`);
    assert.ok(pattern.test(`spiffe://${TRUST_DOMAIN}/ns/default/svc/api`));
    assert.ok(!pattern.test(`spiffe://${TRUST_DOMAIN}/ns/default/svc/web`));
    // Another provider name gets its own variant; a bootstrap without it refuses the cluster.
    const named = anyValue(protos, cache.cluster("api", "spiffe"));
    assert.match(clusterType.decode(contextWith(["default"]), { type_url: CDS, value: named }).error ?? "", /spiffe/);
    assert.equal(clusterType.decode(contextWith(["spiffe"]), { type_url: CDS, value: named }).error, undefined);
    cache.close();
  });

  void test("server listener names: the address gRPC's template makes, and nothing else", () => {
    assert.deepEqual(serverListenerAddress(`${SERVER_LISTENER_NAME_PREFIX}127.0.0.1:50051`), { host: "127.0.0.1", port: 50051 });
    assert.deepEqual(serverListenerAddress(`${SERVER_LISTENER_NAME_PREFIX}[::1]:8080`), { host: "::1", port: 8080 });
    for (const bad of ["web", `${SERVER_LISTENER_NAME_PREFIX}localhost:50051`, `${SERVER_LISTENER_NAME_PREFIX}127.0.0.1`, `${SERVER_LISTENER_NAME_PREFIX}127.0.0.1:0`,
      `${SERVER_LISTENER_NAME_PREFIX}127.0.0.1:70000`, `${SERVER_LISTENER_NAME_PREFIX}::1:8080`, `${SERVER_LISTENER_NAME_PREFIX}[127.0.0.1]:80`]) {
      assert.equal(serverListenerAddress(bad), undefined, bad);
    }
  });
});

function anyValue(_protos: XdsProtos, resource: EncodedResource | undefined): Uint8Array {
  assert.ok(resource !== undefined);
  return resource.any.value;
}

void describe("server listeners follow the registry and the intentions", () => {
  const name = `${SERVER_LISTENER_NAME_PREFIX}10.0.0.5:7000`;

  async function setUp(): Promise<{
    listeners: ServerListeners; source: (visible?: (service: string) => boolean, cluster?: string) => ResourceSource<EncodedResource>; changes: string[][];
    register: (id: string, service: string, address: string, port: number, meta?: Record<string, string>) => void; deregister: (id: string) => void;
    intend: (source: string, destination: string, action: "allow" | "deny") => void; settle: () => Promise<void>;
  }> {
    const protos = await loadXdsProtos();
    const registry = new RegistryState();
    const intentionsState = new IntentionsState();
    let index = 0;
    let intentionIndex = 0;
    const intentions = new IntentionsService(intentionsState, { propose: () => Promise.reject(new Error("not proposed here")), readBarrier: () => Promise.resolve() }, { defaultAllow: false });
    const listeners = new ServerListeners({ state: registry, intentions, trustDomain: TRUST_DOMAIN });
    const subscribed = new Set([name]);
    listeners.start(protos, (_type, n) => subscribed.has(n));
    const changes: string[][] = [];
    listeners.onChange((c) => changes.push(c.map((k) => `${k.kind} ${k.name}${k.namedOnly === true ? " named-only" : ""}`)));
    return {
      listeners,
      source: (visible, cluster) => {
        const client = cluster === undefined ? undefined : { id: `${cluster}-1`, cluster, userAgent: "test", metadata: new Map<string, string>() };
        const s = listeners.sourceFor(LISTENER_TYPE, { client, visible, permissions: undefined, peerAddress: "127.0.0.1" }, undefined);
        assert.ok(s !== undefined);
        return s;
      },
      changes,
      register: (id, service, address, port, meta = {}) => registry.apply(++index, encodeRegistryCommand({
        op: "register", atMs: 0, checks: [], instance: { id, service, address, port, tags: [], meta, weights: { passing: 1, warning: 1 }, zone: "", node: "n1", nodeAddress: "127.0.0.1" },
      })),
      deregister: (id) => registry.apply(++index, encodeRegistryCommand({ op: "deregister", id })),
      intend: (source, destination, action) => intentionsState.apply(++intentionIndex, encodeIntentionCommand({ op: OP_UPSERT, intention: { id: `00000000-0000-4000-8000-${String(intentionIndex).padStart(12, "0")}`, source, destination, action, description: "" } })),
      settle: () => new Promise((resolve) => setImmediate(resolve)),
    };
  }

  const rulesOf = (resource: EncodedResource | undefined): string => {
    assert.ok(resource !== undefined, "the listener exists");
    return rbacOf(resource.any.value).toString();
  };

  void test("absent until an instance is registered at its address, then built, then gone with it", async () => {
    const t = await setUp();
    assert.equal(t.source().get(name), undefined, "no instance at the address: no listener");
    assert.deepEqual([...t.source().names()], [], "a wildcard never covers server listeners");
    t.register("api-1", "api", "10.0.0.5", 7000, { [MTLS_META_KEY]: "true" });
    t.register("web-1", "web", "10.0.0.6", 7000);
    await t.settle();
    assert.deepEqual(t.changes, [[`listener ${name} named-only`]], "only the listener at that address changed");
    const built = t.source().get(name);
    assert.ok(built !== undefined);
    const decoded = decodeListener(await loadXdsProtos(), built.any.value);
    assert.equal(decoded.error, undefined, decoded.error);
    assert.equal(t.source((service) => service !== "api").get(name), undefined, "a token that may not read api does not see its listener");
    t.deregister("api-1");
    await t.settle();
    assert.equal(t.changes.length, 2);
    assert.equal(t.source().get(name), undefined, "its instance went: so did the listener");
    t.listeners.close();
  });

  void test("an intention for its destination (or for *) rebuilds it; one for another destination does not", async () => {
    const t = await setUp();
    t.register("api-1", "api", "10.0.0.5", 7000, { [MTLS_META_KEY]: "true" });
    await t.settle();
    const denyAll = rulesOf(t.source().get(name));
    t.changes.length = 0;
    t.intend("web", "other", "allow");
    await t.settle();
    assert.deepEqual(t.changes, [], "another destination's intention changes nothing here");
    t.intend("web", "api", "allow");
    await t.settle();
    assert.deepEqual(t.changes, [[`listener ${name} named-only`]]);
    const allowWeb = rulesOf(t.source().get(name));
    assert.notEqual(allowWeb, denyAll);
    t.intend("*", "*", "allow");
    await t.settle();
    assert.equal(t.changes.length, 2, "a * destination touches every listener");
    assert.notEqual(rulesOf(t.source().get(name)), allowWeb);
    t.listeners.close();
  });

  void test("a server bound to every address (0.0.0.0) is the instance on its port of the service its node's cluster names", async () => {
    const t = await setUp();
    const any = `${SERVER_LISTENER_NAME_PREFIX}0.0.0.0:7000`;
    t.register("api-1", "api", "10.0.0.5", 7000, { [MTLS_META_KEY]: "true" });
    t.register("web-1", "web", "10.0.0.6", 7000);
    t.intend("web", "api", "allow");
    await t.settle();
    const asApi = t.source(undefined, "api").get(any);
    const asWeb = t.source(undefined, "web").get(any);
    assert.ok(asApi !== undefined && asWeb !== undefined);
    assert.notEqual(rulesOf(asApi), rulesOf(asWeb), "each claiming service gets its own destination's RBAC");
    assert.equal((decodeListener(await loadXdsProtos(), asApi.any.value).value as { address: { socket_address: { address: string } } }).address.socket_address.address, "0.0.0.0");
    assert.equal(t.source(undefined, "nobody").get(any), undefined, "a cluster with no instance on the port has no listener");
    assert.equal(t.source().get(any), undefined, "nor does a node that names no cluster");
    t.listeners.close();
  });

  void test("when two services are at one address, the owner is the first by name, whatever order they came in", async () => {
    const t = await setUp();
    t.intend("web", "alpha", "allow");
    t.register("zeta-1", "zeta", "10.0.0.5", 7000);
    await t.settle();
    const asZeta = rulesOf(t.source().get(name));
    t.register("alpha-1", "alpha", "10.0.0.5", 7000);
    await t.settle();
    const asAlpha = rulesOf(t.source().get(name));
    assert.notEqual(asAlpha, asZeta, "alpha, registered later, owns the listener (its intentions are in it)");
    t.deregister("alpha-1");
    await t.settle();
    assert.equal(rulesOf(t.source().get(name)), asZeta, "and zeta again once alpha goes");
    t.listeners.close();
  });
});

