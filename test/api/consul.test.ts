// Consul's own npm client, unchanged, against a real three-node Cairn cluster: every behaviour is
// checked through each of the three nodes, since a client may be pointed at any of them.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import Consul from "consul";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";
import { WAIT_DEFAULT_MS, WAIT_MAX_MS, goBool, parseIndex, readOptions, withJitterMs } from "../../src/api/consul/routes.js";
import { ConsulBadRequest, decodeCheckUpdate, decodeServiceRegistration } from "../../src/api/consul/decode.js";
import { openApiPath, toOpenApiSchema } from "../../src/api/openapi.js";

const DATACENTER = "test-dc";
const NODES = [0, 1, 2] as const;

interface HealthCheck {
  Node: string; CheckID: string; Name: string; Status: string; Notes: string; Output: string;
  ServiceID: string; ServiceName: string; ServiceTags: string[]; Type: string;
}
interface ServiceEntry {
  Node: { Node: string; Address: string; Datacenter: string; TaggedAddresses: Record<string, string>; Meta: Record<string, string> };
  Service: { ID: string; Service: string; Tags: string[]; Address: string; Port: number; Meta: Record<string, string>; Weights: { Passing: number; Warning: number };
    CreateIndex: number; ModifyIndex: number };
  Checks: HealthCheck[];
}
interface CatalogEntry {
  Node: string; Address: string; Datacenter: string; TaggedAddresses: Record<string, string>; NodeMeta: Record<string, string>;
  ServiceID: string; ServiceName: string; ServiceTags: string[]; ServiceAddress: string; ServicePort: number;
  ServiceMeta: Record<string, string>; ServiceWeights: { Passing: number; Warning: number }; CreateIndex: number; ModifyIndex: number;
}
interface AgentService { ID: string; Service: string; Tags: string[]; Meta: Record<string, string>; Port: number; Address: string; Datacenter: string }
interface ClientError extends Error { statusCode?: number }

function portOf(node: ProcessNode): number {
  return Number(node.info.http.slice(node.info.http.lastIndexOf(":") + 1));
}

async function health(consul: Consul, service: string, passing = false): Promise<ServiceEntry[]> {
  return (await consul.health.service({ service, passing })) as ServiceEntry[];
}

/**
 * agent.service.register with the options as the client's code reads them. Its type declarations
 * require a check's name and timeout, which neither its code nor Consul does.
 */
function register(consul: Consul, options: Record<string, unknown>): Promise<unknown> {
  return consul.agent.service.register(options as never) as Promise<unknown>;
}

/** The error a client call failed with. */
async function failsWith(call: Promise<unknown>): Promise<ClientError> {
  const err = await call.then(() => undefined, (e: unknown) => e as ClientError);
  assert.ok(err !== undefined, "the call succeeded; an error was expected");
  return err;
}

/** What consul.watch() reported, as it arrives. */
function watchHealth(consul: Consul, service: string): {
  changes: ServiceEntry[][]; atMs: number[]; indexes: string[]; errors: Error[]; ended: () => boolean; end: () => void;
} {
  const changes: ServiceEntry[][] = [];
  const atMs: number[] = [];
  const indexes: string[] = [];
  const errors: Error[] = [];
  let ended = false;
  const watch = consul.watch({ method: consul.health.service.bind(consul.health), options: { service } });
  watch.on("change", (data: ServiceEntry[], res: { headers: Record<string, string> }) => {
    changes.push(data);
    atMs.push(Date.now());
    indexes.push(res.headers["x-consul-index"] ?? "");
  });
  watch.on("error", (err: Error) => errors.push(err));
  watch.on("end", () => { ended = true; });
  return { changes, atMs, indexes, errors, ended: () => ended, end: () => watch.end() };
}

void describe("the Consul HTTP API through Consul's npm client", () => {
  let cluster: ProcessCluster | undefined;
  let clients: Consul[] = [];
  const node = (i: number): ProcessNode => (cluster as ProcessCluster).nodes[i];
  const client = (i: number): Consul => clients[i];

  before(async () => {
    const started = await ProcessCluster.start(3, ["--deregister-critical-min", "1s", "--datacenter", DATACENTER]);
    cluster = started;
    await started.agreedLeader();
    clients = started.nodes.map((n) => new Consul({ host: "127.0.0.1", port: portOf(n) }));
  });

  after(async () => {
    for (const c of clients) c.destroy();
    // Even when start-up failed half-way, no server process outlives the test.
    await cluster?.close();
  });

  for (const i of NODES) {
    void test(`node ${i + 1}: a service registered with a TTL check and passed is listed by health.service({passing: true}) on every node`, async () => {
      const consul = client(i);
      const id = `web-n${i + 1}`;
      await register(consul, {
        name: "web", id, port: 8080 + i, tags: ["v1", `n${i + 1}`], meta: { build: "42" }, check: { ttl: "10s", notes: "heartbeat" },
      });
      // Unpassed, the check starts critical, as in Consul.
      assert.ok(!(await health(consul, "web", true)).some((e) => e.Service.ID === id));
      // The client percent-encodes the generated check id "service:web-nN".
      await consul.agent.check.pass({ id: `service:${id}`, note: "all good" });

      for (const j of NODES) {
        const entry = (await health(client(j), "web", true)).find((e) => e.Service.ID === id);
        assert.ok(entry !== undefined, `node ${j + 1} lists ${id} as passing`);
        assert.deepEqual(entry.Service, {
          ID: id, Service: "web", Tags: ["v1", `n${i + 1}`], Address: "", Port: 8080 + i, Meta: { build: "42" },
          Weights: { Passing: 1, Warning: 1 }, EnableTagOverride: false, CreateIndex: entry.Service.CreateIndex, ModifyIndex: entry.Service.ModifyIndex,
        });
        assert.ok(entry.Service.CreateIndex > 0 && entry.Service.ModifyIndex >= entry.Service.CreateIndex);
        assert.equal(entry.Node.Node, node(i).info.id);
        assert.equal(entry.Node.Address, "127.0.0.1");
        assert.equal(entry.Node.Datacenter, DATACENTER);
        assert.equal(entry.Node.TaggedAddresses.lan, "127.0.0.1");
        assert.deepEqual(entry.Node.Meta, {});
        assert.equal(entry.Checks.length, 1);
        const check = entry.Checks[0];
        assert.equal(check.CheckID, `service:${id}`);
        assert.equal(check.Status, "passing");
        assert.equal(check.Output, "all good");
        assert.equal(check.Notes, "heartbeat");
        assert.equal(check.ServiceID, id);
        assert.equal(check.ServiceName, "web");
        assert.deepEqual(check.ServiceTags, ["v1", `n${i + 1}`]);
        assert.equal(check.Type, "ttl");
        assert.equal(check.Node, node(i).info.id);
      }
    });
  }

  for (const i of NODES) {
    void test(`node ${i + 1}: passing keeps only instances whose checks all pass (warning is not passing), and takes any Go boolean`, async () => {
      const consul = client(i);
      const service = `mixed-n${i + 1}`;
      await register(consul, { name: service, id: `${service}-ok`, port: 1, check: { ttl: "10s", status: "passing" } });
      await register(consul, {
        name: service, id: `${service}-warn`, port: 2,
        checks: [{ ttl: "10s", status: "passing" }, { ttl: "10s", status: "passing", checkid: `${service}-second` }],
      });
      await consul.agent.check.warn({ id: `${service}-second`, note: "slow" });
      const all = await health(consul, service);
      assert.deepEqual(all.map((e) => e.Service.ID), [`${service}-ok`, `${service}-warn`]);
      // With several checks and no CheckID, Consul numbers them service:<id>:<n>.
      assert.deepEqual((all[1]).Checks.map((c) => c.CheckID), [`service:${service}-warn:1`, `${service}-second`]);
      assert.deepEqual((await health(consul, service, true)).map((e) => e.Service.ID), [`${service}-ok`]);
      const url = (q: string): string => node(i).url(`/v1/health/service/${service}?${q}`);
      for (const q of ["passing", "passing=1", "passing=t", "passing=TRUE", "passing=True"]) {
        assert.equal(((await (await fetch(url(q))).json()) as ServiceEntry[]).length, 1, q);
      }
      for (const q of ["passing=0", "passing=false", "passing=F"]) {
        assert.equal(((await (await fetch(url(q))).json()) as ServiceEntry[]).length, 2, q);
      }
      assert.equal((await fetch(url("passing=yes"))).status, 400);
    });
  }

  for (const i of NODES) {
    void test(`node ${i + 1}: catalog.service.list maps names to tags and catalog.service.nodes is Consul's flat array, filtered by tag`, async () => {
      const consul = client(i);
      const service = `api-n${i + 1}`;
      await register(consul, { name: service, id: `${service}-a`, address: "10.0.0.1", port: 9000, tags: ["blue"] });
      await register(consul, { name: service, id: `${service}-b`, port: 9001, tags: ["green"], meta: { zone: "z1" } });
      for (const j of NODES) {
        const services = (await client(j).catalog.service.list()) as Record<string, string[]>;
        assert.deepEqual([...(services[service] ?? [])].sort(), ["blue", "green"], `node ${j + 1}`);
        const nodes = (await client(j).catalog.service.nodes(service)) as CatalogEntry[];
        assert.equal(nodes.length, 2);
        const [a, b] = nodes as [CatalogEntry, CatalogEntry];
        assert.deepEqual({ ...a, CreateIndex: 0, ModifyIndex: 0, ID: "" }, {
          ID: "", Node: node(i).info.id, Address: "127.0.0.1", Datacenter: DATACENTER, TaggedAddresses: a.TaggedAddresses, NodeMeta: {},
          ServiceKind: "", ServiceID: `${service}-a`, ServiceName: service, ServiceTags: ["blue"], ServiceAddress: "10.0.0.1",
          ServiceWeights: { Passing: 1, Warning: 1 }, ServiceMeta: {}, ServicePort: 9000, ServiceEnableTagOverride: false,
          CreateIndex: 0, ModifyIndex: 0,
        });
        assert.ok(a.CreateIndex > 0 && a.ModifyIndex >= a.CreateIndex);
        // An empty ServiceAddress means the node's Address, as in Consul.
        assert.equal(b.ServiceAddress, "");
        assert.deepEqual(b.ServiceMeta, { zone: "z1" });
        const green = (await client(j).catalog.service.nodes({ service, tag: "green" })) as CatalogEntry[];
        assert.deepEqual(green.map((e) => e.ServiceID), [`${service}-b`]);
      }
    });
  }

  for (const i of NODES) {
    void test(`node ${i + 1}: agent.service.list shows the instances registered through that node, keyed by ID`, async () => {
      const consul = client(i);
      await register(consul, { name: "agent-list", id: `agent-list-n${i + 1}`, port: 7000 + i, tags: ["x"] });
      const list = (await consul.agent.service.list()) as Record<string, AgentService>;
      const mine = list[`agent-list-n${i + 1}`];
      assert.ok(mine !== undefined);
      assert.equal(mine.Service, "agent-list");
      assert.equal(mine.Port, 7000 + i);
      assert.deepEqual(mine.Tags, ["x"]);
      assert.deepEqual(mine.Meta, {});
      assert.equal(mine.Datacenter, DATACENTER);
      for (const other of NODES.filter((j) => j !== i)) assert.equal(list[`agent-list-n${other + 1}`], undefined);
    });
  }

  void test("consul.watch on health.service fires when an instance is added, when its TTL lapses, and when deregister-after removes it (through each node at once)", { timeout: 30_000 }, async () => {
    await Promise.all(NODES.map(async (i) => {
      const consul = client(i);
      const service = `watched-n${i + 1}`;
      const watch = watchHealth(consul, service);
      try {
        // The first answer is the empty list, with a usable index.
        await waitFor(async () => Promise.resolve(watch.changes.length >= 1 ? true : undefined), 5_000, () => `node ${i + 1}: no first answer`);
        assert.deepEqual(watch.changes[0], []);
        const registeredAtMs = Date.now();
        await register(consul, {
          name: service, id: `${service}-1`, port: 1,
          check: { ttl: "1s", status: "passing", deregistercriticalserviceafter: "1s" },
        });
        const statuses = (): string[] => watch.changes.map((c) => c.length === 0 ? "none" : (c[0]).Checks.map((x) => x.Status).join(","));
        await waitFor(async () => Promise.resolve(statuses().includes("passing") ? true : undefined), 5_000, () => `node ${i + 1}: ${statuses().join(" ")}`);
        // No heartbeat: the leader's health scan marks it critical once the TTL lapses...
        await waitFor(async () => Promise.resolve(statuses().includes("critical") ? true : undefined), 5_000, () => `node ${i + 1}: ${statuses().join(" ")}`);
        // ...and removes it once it has been critical for DeregisterCriticalServiceAfter.
        await waitFor(async () => Promise.resolve(statuses().at(-1) === "none" && watch.changes.length >= 4 ? true : undefined), 8_000,
          () => `node ${i + 1}: ${statuses().join(" ")}`);
        assert.deepEqual(statuses(), ["none", "passing", "critical", "none"]);
        // Each transition waited its full time: the TTL runs from the registration, and
        // deregister-after from the moment the check turned critical.
        const [, , criticalAtMs, removedAtMs] = watch.atMs as [number, number, number, number];
        assert.ok(criticalAtMs - registeredAtMs >= 950, `node ${i + 1}: critical ${criticalAtMs - registeredAtMs} ms after registering with a 1s TTL`);
        assert.ok(removedAtMs - criticalAtMs >= 950, `node ${i + 1}: removed ${removedAtMs - criticalAtMs} ms after turning critical`);
        assert.ok(watch.indexes.every((x) => Number(x) > 0), `indexes ${watch.indexes.join(",")}`);
        assert.deepEqual(watch.errors, []);
        assert.ok(!watch.ended());
      } finally {
        watch.end();
      }
    }));
  });

  for (const i of NODES) {
    void test(`node ${i + 1}: deregister removes the instance and its checks`, async () => {
      const consul = client(i);
      const service = `gone-n${i + 1}`;
      await register(consul, { name: service, port: 1, check: { ttl: "10s" } });
      await consul.agent.check.pass(`service:${service}`);
      assert.equal((await health(consul, service)).length, 1);
      await consul.agent.service.deregister(service);
      for (const j of NODES) {
        assert.deepEqual(await health(client(j), service), []);
        assert.deepEqual(await client(j).catalog.service.nodes(service), []);
        assert.equal(((await client(j).catalog.service.list()) as Record<string, string[]>)[service], undefined);
      }
      assert.equal((await failsWith(consul.agent.check.pass(`service:${service}`))).statusCode, 404);
      assert.equal((await failsWith(consul.agent.service.deregister(service))).statusCode, 404);
    });
  }

  for (const i of NODES) {
    void test(`node ${i + 1}: X-Consul-Index is never 0 and is per service: a write to B does not wake a blocking query on A`, { timeout: 20_000 }, async () => {
      const consul = client(i);
      const n = node(i);
      const a = `idx-a-n${i + 1}`;
      const b = `idx-b-n${i + 1}`;
      const unknown = await fetch(n.url(`/v1/health/service/never-registered-n${i + 1}`));
      assert.equal(unknown.headers.get("x-consul-index"), "1");
      assert.deepEqual(await unknown.json(), []);
      assert.equal(unknown.headers.get("x-consul-knownleader"), "true");
      assert.match(unknown.headers.get("x-consul-lastcontact") ?? "", /^\d+$/);

      await register(consul, { name: a, port: 1 });
      const first = await fetch(n.url(`/v1/health/service/${a}`));
      const indexA = first.headers.get("x-consul-index") ?? "";
      assert.ok(Number(indexA) > 1, indexA);

      const started = Date.now();
      const blocked = fetch(n.url(`/v1/health/service/${a}?index=${indexA}&wait=1s`));
      // Keep writing to B for as long as the query on A is blocked.
      let done = false;
      let writesToB = 0;
      void blocked.finally(() => { done = true; });
      while (!done) {
        await register(consul, { name: b, port: 1000 + writesToB });
        writesToB++;
      }
      const answer = await blocked;
      assert.ok(Date.now() - started >= 950, `answered after ${Date.now() - started} ms`);
      assert.equal(answer.headers.get("x-consul-index"), indexA);
      assert.ok(writesToB > 1);

      // A write to A itself does wake it, long before the wait runs out.
      const wakeStarted = Date.now();
      const woken = fetch(n.url(`/v1/health/service/${a}?index=${indexA}&wait=20s`));
      await register(consul, { name: a, id: `${a}-2`, port: 2 });
      const wokenAnswer = await woken;
      assert.ok(Date.now() - wakeStarted < 5_000);
      assert.ok(Number(wokenAnswer.headers.get("x-consul-index")) > Number(indexA));
      assert.equal(((await wokenAnswer.json()) as ServiceEntry[]).length, 2);
    });
  }

  for (const i of NODES) {
    void test(`node ${i + 1}: a bad index or wait is a 400 naming it`, async () => {
      const consul = client(i);
      const badIndex = await failsWith(consul.health.service({ service: "web", index: "abc" } as never));
      assert.equal(badIndex.statusCode, 400);
      assert.match(badIndex.message, /Invalid index/);
      const badWait = await failsWith(consul.catalog.service.list({ index: "1", wait: "soon" } as never));
      assert.equal(badWait.statusCode, 400);
      assert.match(badWait.message, /Invalid wait time/);
      for (const q of ["index=-1", "index=18446744073709551616", "index=1.5", "index=1&wait=-1s", "stale&consistent"]) {
        const res = await fetch(node(i).url(`/v1/catalog/services?${q}`));
        assert.equal(res.status, 400, q);
        assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
      }
      // The largest uint64 is a valid index; it is simply never passed, so the query waits.
      const res = await fetch(node(i).url(`/v1/catalog/services?index=18446744073709551615&wait=10ms`));
      assert.equal(res.status, 200);
    });
  }

  for (const i of NODES) {
    void test(`node ${i + 1}: bad registrations and unknown checks are 4xx, never 5xx`, async () => {
      const consul = client(i);
      const put = (path: string, body?: string): Promise<Response> =>
        fetch(node(i).url(path), { method: "PUT", ...(body === undefined ? {} : { body }) });
      // The npm client refuses a registration without a name before sending it, so send it raw.
      const noName = await put("/v1/agent/service/register", JSON.stringify({ Port: 80 }));
      assert.equal(noName.status, 400);
      assert.match(await noName.text(), /Missing service name/);
      const unknownField = await put("/v1/agent/service/register", JSON.stringify({ Name: "x", Frobnicate: true }));
      assert.equal(unknownField.status, 400);
      assert.match(await unknownField.text(), /unknown field "Frobnicate"/);
      const notJson = await put("/v1/agent/service/register", "{not json");
      assert.equal(notJson.status, 400);
      const badPort = await put("/v1/agent/service/register", JSON.stringify({ Name: "x", Port: "eighty" }));
      assert.equal(badPort.status, 400);
      assert.match(await badPort.text(), /Port/);
      const badTtl = await failsWith(register(consul, { name: "x", check: { ttl: "soon" } }));
      assert.equal(badTtl.statusCode, 400);
      assert.equal((await failsWith(consul.agent.check.pass("no-such-check"))).statusCode, 404);
      assert.equal((await failsWith(consul.agent.check.fail("no-such-check"))).statusCode, 404);
      const badStatus = await put("/v1/agent/check/update/no-such-check", JSON.stringify({ Status: "fine" }));
      assert.equal(badStatus.status, 400);
      // Lowercase and snake_case keys are Consul's too (Go's JSON matching is case-insensitive).
      const lower = await put("/v1/agent/service/register", JSON.stringify({ name: `lower-n${i + 1}`, port: 5, check: { ttl: "10s", check_id: `lower-n${i + 1}-check` } }));
      assert.equal(lower.status, 200);
      assert.equal(await lower.text(), "");
      const update = await put(`/v1/agent/check/update/lower-n${i + 1}-check`, JSON.stringify({ Status: "warning", Output: "degraded" }));
      assert.equal(update.status, 200);
      const entry = (await health(consul, `lower-n${i + 1}`))[0];
      assert.deepEqual([entry.Checks[0]?.Status, entry.Checks[0]?.Output], ["warning", "degraded"]);
    });
  }

  for (const i of NODES) {
    void test(`node ${i + 1}: an unknown service is an empty list, and /v1/agent/self reports the datacenter`, async () => {
      const consul = client(i);
      assert.deepEqual(await consul.health.service("no-such-service"), []);
      assert.deepEqual(await consul.catalog.service.nodes("no-such-service"), []);
      const self = (await consul.agent.self()) as { Config: { Datacenter: unknown; NodeName: string }; Member: { Name: string } };
      assert.equal(self.Config.Datacenter, DATACENTER);
      assert.equal(self.Config.NodeName, node(i).info.id);
      assert.equal(self.Member.Name, node(i).info.id);
      const res = await fetch(node(i).url("/v1/catalog/services"));
      assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    });
  }

  void test("the OpenAPI document is derived from the routes' schemas and lists the Consul routes", async () => {
    const doc = (await (await fetch(node(0).url("/v1/openapi.json"))).json()) as {
      openapi: string;
      paths: Record<string, Record<string, { parameters: { name: string; in: string; required: boolean }[]; requestBody?: unknown; responses: Record<string, { content?: { "application/json": { schema: { type: string } } } }> }>>;
    };
    assert.equal(doc.openapi, "3.0.3");
    for (const [path, method] of [
      ["/v1/agent/service/register", "put"], ["/v1/agent/service/deregister/{id}", "put"], ["/v1/agent/check/pass/{id}", "put"],
      ["/v1/agent/check/warn/{id}", "put"], ["/v1/agent/check/fail/{id}", "put"], ["/v1/agent/check/update/{id}", "put"],
      ["/v1/agent/services", "get"], ["/v1/agent/self", "get"], ["/v1/catalog/services", "get"],
      ["/v1/catalog/service/{service}", "get"], ["/v1/health/service/{service}", "get"],
    ] as const) {
      assert.ok(doc.paths[path]?.[method] !== undefined, `${method.toUpperCase()} ${path}`);
    }
    assert.equal(doc.paths["/v1/health/service/{service}"]?.head, undefined);
    const healthOp = doc.paths["/v1/health/service/{service}"]?.get;
    const params = new Map(healthOp?.parameters.map((p) => [p.name, p]));
    assert.deepEqual([params.get("service")?.in, params.get("service")?.required], ["path", true]);
    for (const q of ["index", "wait", "stale", "passing", "tag"]) assert.equal(params.get(q)?.in, "query", q);
    assert.equal(healthOp?.responses["200"]?.content?.["application/json"].schema.type, "array");
    assert.ok(doc.paths["/v1/agent/service/register"]?.put?.requestBody !== undefined);
    assert.ok(doc.paths["/v1/agent/check/update/{id}"]?.put?.requestBody !== undefined);
  });
});

void describe("Consul's request conventions, without a cluster", () => {
  void test("blocking-query jitter stays under the npm client's socket timeout of wait plus 10% (at least 500 ms)", () => {
    for (const waitMs of [1_000, 30_000, 120_000, WAIT_DEFAULT_MS, WAIT_MAX_MS]) {
      const clientTimeoutMs = Math.ceil(waitMs + Math.max(waitMs * 0.1, 500));
      assert.equal(withJitterMs(waitMs, 0), waitMs);
      const most = withJitterMs(waitMs, 1 - Number.EPSILON);
      assert.ok(most <= waitMs + waitMs / 16 && most < clientTimeoutMs, `wait ${waitMs}: up to ${most}, client gives up at ${clientTimeoutMs}`);
    }
  });

  void test("index is a uint64 and wait a Go duration, defaulting to 5m and capped at 10m", () => {
    const opts = (q: Record<string, string>): ReturnType<typeof readOptions> => readOptions(q, "dc1");
    assert.deepEqual(opts({}), { stale: false, sinceIndex: 0, waitMs: WAIT_DEFAULT_MS });
    assert.deepEqual(opts({ index: "0", wait: "0" }), { stale: false, sinceIndex: 0, waitMs: WAIT_DEFAULT_MS });
    assert.deepEqual(opts({ index: "42", wait: "120000ms", stale: "" }), { stale: true, sinceIndex: 42, waitMs: 120_000 });
    assert.equal(opts({ wait: "1h" }).waitMs, WAIT_MAX_MS);
    assert.equal(opts({ wait: "1m30s" }).waitMs, 90_000);
    assert.equal(parseIndex("18446744073709551615"), Number.MAX_SAFE_INTEGER);
    for (const index of ["-1", "+1", " 1", "1.0", "0x10", "18446744073709551616", "abc"]) {
      assert.throws(() => parseIndex(index), (e: Error) => e instanceof ConsulBadRequest && e.message.startsWith("Invalid index"), index);
    }
    for (const wait of ["soon", "10", "-1s", "1d"]) {
      assert.throws(() => opts({ index: "1", wait }), (e: Error) => e instanceof ConsulBadRequest && e.message.startsWith("Invalid wait time"), wait);
    }
    assert.throws(() => opts({ stale: "", consistent: "" }), ConsulBadRequest);
    assert.throws(() => opts({ dc: "elsewhere" }), /No path to datacenter "elsewhere"/);
    assert.equal(opts({ dc: "dc1" }).sinceIndex, 0);
    assert.throws(() => opts({ filter: "Service.Port > 80" }), /filter/);
  });

  void test("a flag is true when bare or any of Go's true spellings, false for Go's false spellings, and 400 otherwise", () => {
    assert.equal(goBool("passing", undefined), false);
    for (const t of ["", "1", "t", "T", "TRUE", "true", "True"]) assert.equal(goBool("passing", t), true, t);
    for (const f of ["0", "f", "F", "FALSE", "false", "False"]) assert.equal(goBool("passing", f), false, f);
    for (const bad of ["yes", "on", "tRuE"]) assert.throws(() => goBool("passing", bad), ConsulBadRequest, bad);
  });

  void test("a registration decodes as Go does: case-insensitive keys, snake_case, null as absent, durations as nanoseconds", () => {
    assert.deepEqual(decodeServiceRegistration({
      name: "web", ID: "web-1", PORT: 80, tags: ["a"], Meta: null, weights: { passing: 3, warning: 1 }, Locality: { Region: "r", Zone: "z1" },
      enable_tag_override: true, TaggedAddresses: { lan: { Address: "10.0.0.1", Port: 80 } },
      check: { ttl: 10_000_000_000, deregister_critical_service_after: "90s", check_id: "c1", status: "passing", Notes: "n" },
      Checks: [{ HTTP: "http://127.0.0.1:1/health", Interval: "5s", Timeout: "1s", Method: "GET" }],
    }), {
      name: "web", id: "web-1", port: 80, tags: ["a"], weights: { passing: 3, warning: 1 }, zone: "z1",
      checks: [
        { id: "c1", ttl: "10000ms", deregisterCriticalAfter: "90s", status: "passing", notes: "n" },
        { http: "http://127.0.0.1:1/health", interval: "5s", timeout: "1s" },
      ],
    });
  });

  void test("Connect.Native registers an instance that speaks mTLS (the mesh's meta key); a sidecar is ignored", () => {
    assert.deepEqual(decodeServiceRegistration({ Name: "api", Port: 9000, Connect: { Native: true }, Meta: { team: "core" } }).meta, { team: "core", "cairn-mtls": "true" });
    assert.deepEqual(decodeServiceRegistration({ Name: "api", connect: { native: false, sidecar_service: {} } }).meta, undefined);
    assert.throws(() => decodeServiceRegistration({ Name: "api", Connect: { Native: "yes" } }), /Connect\.Native must be true or false/);
    assert.throws(() => decodeServiceRegistration({ Name: "api", Connect: { Native: true }, Meta: { "cairn-mtls": "false" } }), /Connect\.Native is true but Meta\.cairn-mtls is "false"/);
    assert.throws(() => decodeServiceRegistration({ Name: "api", Connect: { Proxy: {} } }), /unknown field "Proxy" in Connect/);
  });

  void test("a registration Cairn would misread is refused with a 400 naming the field", () => {
    const refused = (body: unknown, pattern: RegExp): void => {
      assert.throws(() => decodeServiceRegistration(body), (e: Error) => e instanceof ConsulBadRequest && pattern.test(e.message), pattern.source);
    };
    refused(undefined, /Missing service name/);
    refused({ Port: 1 }, /Missing service name/);
    refused({ Name: "x", Service: "x" }, /unknown field "Service"/);
    refused({ Name: "x", Check: { TTL: "1s", Frequency: "1s" } }, /unknown field "Frequency" in Check/);
    refused({ Name: "x", Port: "80" }, /Port must be a whole number/);
    refused({ Name: "x", Tags: "a" }, /Tags must be a list of strings/);
    refused({ Name: "x", Meta: { a: 1 } }, /Meta must be an object of string values/);
    refused({ Name: "x", Weights: { Warning: 1 } }, /Passing must be greater than 0/);
    refused({ Name: "x", Kind: "connect-proxy" }, /Kind "connect-proxy" is not supported/);
    refused({ Name: "x", Check: { Args: ["/bin/true"], Interval: "10s" } }, /Check\.Args: this kind of check is not supported/);
    refused({ Name: "x", Checks: [{ TTL: "1s" }, { UDP: "127.0.0.1:53", Interval: "10s" }] }, /Checks\[1\]\.UDP/);
    refused({ Name: "x", Check: { HTTP: "http://a/", Interval: "1s", Method: "POST" } }, /Check\.Method "POST" is not supported/);
    refused({ Name: "x", Check: { HTTP: "http://a/", Interval: "1s", Header: { A: ["b"] } } }, /Check\.Header is not supported/);
    refused({ Name: "x", Check: { TTL: "1s", Status: "ok" } }, /Check\.Status "ok"/);
    refused(["Name"], /must be a JSON object/);
    assert.deepEqual(decodeCheckUpdate({ status: "warning", output: "slow" }), { status: "warning", output: "slow" });
    assert.throws(() => decodeCheckUpdate({ Status: "fine" }), /Invalid check status: 'fine'/);
    assert.throws(() => decodeCheckUpdate({ Status: "passing", Note: "x" }), /unknown field "Note"/);
  });

  void test("OpenAPI paths and schemas use OpenAPI 3.0's spelling", () => {
    assert.equal(openApiPath("/v1/agent/check/pass/:id"), "/v1/agent/check/pass/{id}");
    assert.equal(openApiPath("/v1/registry/services/:name/instances"), "/v1/registry/services/{name}/instances");
    assert.deepEqual(toOpenApiSchema({ type: "object", properties: { lastContactMs: { type: ["integer", "null"] }, kind: { const: "ttl" } } }), {
      type: "object", properties: { lastContactMs: { type: "integer", nullable: true }, kind: { enum: ["ttl"] } },
    });
  });
});
