// Metrics and health on a real three-node cluster with ACLs on: every node's /metrics is in
// Prometheus's text format and passes `promtool check metrics`; every family the issue lists is
// there with values that follow what the cluster did (a registration, a signed CSR, a 403, a 429,
// a watch stream); HTTP requests are labelled by route template, never by path; a real Prometheus
// scrapes all three nodes and answers a query about them; /healthz and /readyz give load
// balancers 200 or 503 with the reason, and a lone node whose peers are gone is not ready.
//
// One cluster serves the whole file; the last test stops two of its nodes.

import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ProcessCluster, type ProcessNode, freePort, waitFor } from "../support/cluster.js";
import { csrKeys, csrPem } from "../support/fast_csr.js";

const PROMTOOL = "/usr/bin/promtool";
const PROMETHEUS = "/usr/bin/prometheus";
const SCRATCH = mkdtempSync(join(tmpdir(), "cairn-metrics-test-"));
/** Certificates per second a token may ask for, and its burst: small, so the test meets the limit in three requests. */
const SIGN_TOKEN_LIMIT = "0.1,2";

// ---------------------------------------------------------------- reading an exposition

interface Sample { readonly name: string; readonly labels: Readonly<Record<string, string>>; readonly value: number }
interface Scrape { readonly text: string; readonly contentType: string; readonly types: ReadonlyMap<string, string>; readonly samples: readonly Sample[] }

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function parseExposition(text: string): Pick<Scrape, "types" | "samples"> {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("# TYPE ")) {
      const [name, type] = line.slice("# TYPE ".length).split(" ");
      types.set(name, type);
      continue;
    }
    if (line === "" || line.startsWith("#")) continue;
    const m = SAMPLE_LINE.exec(line);
    assert.ok(m !== null, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? "").matchAll(LABEL_PAIR)) labels[pair[1]] = pair[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return { types, samples };
}

async function scrape(node: ProcessNode, token = node.token): Promise<Scrape> {
  const res = await fetch(node.url("/metrics"), { headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
  const text = await res.text();
  assert.equal(res.status, 200, text.slice(0, 300));
  return { text, contentType: res.headers.get("content-type") ?? "", ...parseExposition(text) };
}

/** The sum of the samples named `name` whose labels include `labels`; undefined when there are none. */
function valueOf(s: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  const matching = s.samples.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return matching.length === 0 ? undefined : matching.reduce((sum, x) => sum + x.value, 0);
}

function must(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const v = valueOf(s, name, labels);
  assert.ok(v !== undefined, `no sample ${name}${JSON.stringify(labels)} in the scrape`);
  return v;
}

/** Scrapes `node` until `probe` accepts a scrape, within `timeoutMs`. */
async function scrapeUntil(node: ProcessNode, what: string, probe: (s: Scrape) => boolean, timeoutMs = 10_000): Promise<Scrape> {
  let last: Scrape | undefined;
  return waitFor(async () => {
    last = await scrape(node);
    return probe(last) ? last : undefined;
  }, timeoutMs, () => `${node.info.id}: ${what}`);
}

// ---------------------------------------------------------------- calling the node

async function call(node: ProcessNode, method: string, path: string, opts: { token?: string | undefined; body?: unknown } = {}): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = { ...(opts.token === undefined ? {} : { "x-consul-token": opts.token }), ...(opts.body === undefined ? {} : { "content-type": "application/json" }) };
  const res = await fetch(node.url(path), { method, headers, ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }) });
  return { status: res.status, text: await res.text() };
}

/** Opens a public gRPC stream with `token` and resolves with the status it ends with. */
function grpcWatchStatus(node: ProcessNode, token: string): Promise<grpc.status> {
  const client = new grpc.Client(node.info.grpc, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set("x-consul-token", token);
  const identity = (b: Buffer): Buffer => b;
  const stream = client.makeBidiStreamRequest("/cairn.registry.v1.Registry/Watch", identity, identity, md);
  return new Promise((resolve) => {
    stream.on("data", () => {});
    stream.on("status", (status: grpc.StatusObject) => {
      client.close();
      resolve(status.code);
    });
    stream.on("error", () => {});
  });
}

function grpcHealthCheck(node: ProcessNode): Promise<void> {
  const client = new grpc.Client(node.info.grpc, grpc.credentials.createInsecure());
  const identity = (b: Buffer): Buffer => b;
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest("/grpc.health.v1.Health/Check", identity, identity, Buffer.alloc(0), (err) => {
      client.close();
      if (err === null) resolve();
      else reject(err);
    });
  });
}

void describe("metrics and health on a real three-node cluster", { timeout: 180_000 }, () => {
  let cluster: ProcessCluster;
  let management: string;
  let leader: ProcessNode;
  let followers: ProcessNode[];

  before(async () => {
    cluster = await ProcessCluster.start(3, ["--rate-limit-sign-token", SIGN_TOKEN_LIMIT], { acl: true });
    management = await cluster.bootstrapAcl();
    leader = await cluster.agreedLeader();
    followers = cluster.nodes.filter((n) => n !== leader);
  });
  after(async () => {
    await cluster.close();
    rmSync(SCRATCH, { recursive: true, force: true });
  });

  test("every node serves /metrics in Prometheus's text format, and promtool check metrics passes on each scrape", async (t) => {
    for (const node of cluster.nodes) {
      const s = await scrape(node);
      assert.equal(s.contentType, "text/plain; version=0.0.4; charset=utf-8");
      for (const name of s.types.keys()) {
        if (name.startsWith("process_") || name.startsWith("nodejs_")) continue;
        assert.match(name, /^cairn_[a-z0-9_]+$/, `${name}: Cairn's own families carry the cairn_ prefix, in snake case`);
        if (s.types.get(name) === "counter") assert.match(name, /_total$/, `${name}: a counter ends in _total`);
      }
      t.diagnostic(`${node.info.id}: ${s.types.size} metric families (# TYPE lines)`);
      if (!existsSync(PROMTOOL)) {
        t.skip(`${PROMTOOL} is absent (Debian's prometheus package provides it; CI installs it)`);
        continue;
      }
      const lint = spawnSync(PROMTOOL, ["check", "metrics"], { input: s.text, encoding: "utf8" });
      assert.equal(lint.status, 0, `promtool check metrics on ${node.info.id}:\n${lint.stdout}${lint.stderr}`);
    }
  });

  test("/metrics needs operator:read with ACLs on; /healthz and /readyz are open and answer 200 on a healthy cluster", async () => {
    const denied = await call(leader, "GET", "/metrics");
    assert.equal(denied.status, 403, denied.text);
    assert.match(denied.text, /lacks permission 'operator:read'/);
    for (const node of cluster.nodes) {
      const health = await call(node, "GET", "/healthz");
      assert.equal(health.status, 200);
      assert.deepEqual(JSON.parse(health.text), { status: "ok" });
      const ready = await call(node, "GET", "/readyz");
      assert.equal(ready.status, 200, ready.text);
      const body = JSON.parse(ready.text) as { status: string; leader: string; applyLagEntries: number };
      assert.equal(body.status, "ready");
      assert.equal(body.leader, leader.info.id);
      assert.ok(body.applyLagEntries <= 1000);
    }
  });

  test("Raft: term, role, indexes, fsync and append latency, elections, leader changes and each follower's match lag", async () => {
    const scrapes = await Promise.all(cluster.nodes.map((n) => scrape(n)));
    const terms = new Set(scrapes.map((s) => must(s, "cairn_raft_term")));
    assert.equal(terms.size, 1, `one term on every node: ${[...terms].join(", ")}`);
    assert.ok([...terms][0] >= 2, "the founding term 1 is over once a leader is elected");
    assert.deepEqual(scrapes.map((s) => must(s, "cairn_raft_role", { role: "leader" })), cluster.nodes.map((n) => (n === leader ? 1 : 0)));
    for (const [i, s] of scrapes.entries()) {
      const node = cluster.nodes[i].info.id;
      assert.equal(must(s, "cairn_raft_has_leader"), 1, node);
      assert.equal(must(s, "cairn_raft_role"), 1, `${node}: exactly one role is 1`);
      assert.ok(must(s, "cairn_raft_commit_index") >= must(s, "cairn_raft_applied_index"), node);
      assert.ok(must(s, "cairn_raft_applied_index") > 1, `${node}: the bootstrap and ACL entries are applied`);
      assert.ok(must(s, "cairn_raft_fsync_duration_seconds_count") > 0, `${node}: every node fsyncs its log`);
      assert.ok(must(s, "cairn_raft_leader_changes_total") >= 1, `${node} has seen the leader arrive`);
      assert.equal(s.types.get("cairn_raft_snapshots_total"), "counter");
      assert.equal(s.types.get("cairn_raft_proposals_total"), "counter");
    }
    assert.ok(scrapes.reduce((sum, s) => sum + must(s, "cairn_raft_elections_total"), 0) >= 1, "someone ran an election");
    // A write, so the leader has appends to time and the followers have an entry to acknowledge.
    assert.equal((await leader.put("metrics-raft", "v")).status, 200);
    const atLeader = await scrapeUntil(leader, "append acknowledgements from both followers", (s) =>
      followers.every((f) => (valueOf(s, "cairn_raft_append_duration_seconds_count", { follower: f.info.id }) ?? 0) > 0));
    for (const f of followers) {
      const lag = must(atLeader, "cairn_raft_follower_match_lag_entries", { follower: f.info.id });
      assert.ok(lag >= 0 && lag < 100, `${f.info.id} trails by ${lag}`);
    }
    assert.ok(must(atLeader, "cairn_raft_proposals_total", { result: "applied" }) >= 1);
    assert.equal(valueOf(await scrape(followers[0]), "cairn_raft_follower_match_lag_entries"), undefined, "only the leader knows its followers' match");
  });

  test("a registration shows in the services and instances gauges, and its check passing moves it between health labels", async () => {
    const node = followers[0];
    const before = await scrape(node);
    const services = must(before, "cairn_registry_services");
    const critical = must(before, "cairn_registry_instances", { health: "critical" });
    const passing = must(before, "cairn_registry_instances", { health: "passing" });
    const registered = await call(node, "PUT", "/v1/agent/service/register", { token: management, body: { Name: "metrics-web", ID: "metrics-web-1", Check: { TTL: "60s" } } });
    assert.equal(registered.status, 200, registered.text);
    // The write is applied on the node that took it before it answers.
    const after = await scrape(node);
    assert.equal(must(after, "cairn_registry_services"), services + 1);
    assert.equal(must(after, "cairn_registry_instances", { health: "critical" }), critical + 1, "a TTL check starts critical");
    assert.equal((await call(node, "PUT", "/v1/agent/check/pass/service:metrics-web-1", { token: management })).status, 200);
    await scrapeUntil(node, "the instance counted passing", (s) =>
      must(s, "cairn_registry_instances", { health: "passing" }) === passing + 1 && must(s, "cairn_registry_instances", { health: "critical" }) === critical);
    // Every node counts the same registry.
    await scrapeUntil(leader, "the leader counts the service", (s) => must(s, "cairn_registry_services") === services + 1);
  });

  test("a signed CSR grows cairn_ca_certificates_issued_total and its latency histogram; roots and intermediates report their expiry", async () => {
    const node = followers[1];
    const before = await scrape(node);
    const issued = must(before, "cairn_ca_certificates_issued_total", { source: "csr" });
    const [key] = csrKeys(1);
    const signed = await call(node, "POST", "/v1/ca/sign", { token: management, body: { csr: csrPem(key, "spiffe://cairn.local/ns/default/svc/metrics-web") } });
    assert.equal(signed.status, 200, signed.text);
    const after = await scrape(node);
    assert.equal(must(after, "cairn_ca_certificates_issued_total", { source: "csr" }), issued + 1);
    assert.equal(must(after, "cairn_ca_issuance_duration_seconds_count", { source: "csr" }), issued + 1);
    assert.ok(must(after, "cairn_ca_issuance_duration_seconds_sum", { source: "csr" }) > 0);
    const roots = after.samples.filter((x) => x.name === "cairn_ca_root_time_to_expiry_seconds");
    assert.equal(roots.length, 1, "one root before any rotation");
    assert.equal(roots[0].labels.state, "active");
    assert.ok(roots[0].value > 300 * 86_400, `the root has years left, not ${roots[0].value} s`);
    const intermediate = must(after, "cairn_ca_intermediate_time_to_expiry_seconds", { root_id: roots[0].labels.root_id });
    assert.ok(intermediate > 0 && intermediate <= roots[0].value + 1, "the intermediate expires no later than its root");
    assert.equal(must(after, "cairn_ca_roots", { state: "active" }), 1);
    assert.equal(must(after, "cairn_ca_rotation_in_progress"), 0);
  });

  test("a 403 counts an ACL denial and a 429 a rate-limit refusal, on HTTP and gRPC", async () => {
    const node = leader;
    const before = await scrape(node);
    // An unknown token: charged to its own sign bucket (a burst of 2) before the ACL check refuses it.
    const stranger = "00000000-aaaa-bbbb-cccc-000000000000";
    const answers: number[] = [];
    for (let i = 0; i < 3; i++) answers.push((await call(node, "POST", "/v1/ca/sign", { token: stranger, body: { csr: "x" } })).status);
    assert.deepEqual(answers, [403, 403, 429]);
    assert.equal(await grpcWatchStatus(node, stranger), grpc.status.PERMISSION_DENIED);
    await grpcHealthCheck(node);
    const after = await scrape(node);
    assert.equal(must(after, "cairn_acl_denials_total", { transport: "http" }), must(before, "cairn_acl_denials_total", { transport: "http" }) + 2);
    assert.equal(must(after, "cairn_acl_denials_total", { transport: "grpc" }), must(before, "cairn_acl_denials_total", { transport: "grpc" }) + 1);
    assert.equal(must(after, "cairn_rate_limit_refusals_total", { class: "sign", limit: "token" }), must(before, "cairn_rate_limit_refusals_total", { class: "sign", limit: "token" }) + 1);
    const route = { method: "POST", route: "/v1/ca/sign" };
    assert.equal(must(after, "cairn_http_requests_total", { ...route, status: "429" }), (valueOf(before, "cairn_http_requests_total", { ...route, status: "429" }) ?? 0) + 1);
    assert.ok(must(after, "cairn_grpc_requests_total", { method: "/cairn.registry.v1.Registry/Watch", code: "PERMISSION_DENIED" }) >= 1);
    assert.ok(must(after, "cairn_grpc_request_duration_seconds_count", { method: "/grpc.health.v1.Health/Check", code: "OK" }) >= 1);
  });

  test("requests are labelled by route template, never by the raw path; a path no route matches is labelled unmatched", async () => {
    const node = followers[0];
    const key = `metrics-key-${Date.now()}`;
    assert.equal((await node.put(key, "v")).status, 200);
    assert.equal((await node.get(key)).status, 200);
    const nowhere = `/no-such-route-${Date.now()}`;
    assert.equal((await call(node, "GET", nowhere, { token: management })).status, 404);
    const s = await scrape(node);
    assert.ok(must(s, "cairn_http_requests_total", { method: "PUT", route: "/v1/kv/:key", status: "200" }) >= 1);
    assert.ok(must(s, "cairn_http_request_duration_seconds_count", { method: "GET", route: "/v1/kv/:key", status: "200" }) >= 1);
    assert.ok(must(s, "cairn_http_requests_total", { method: "GET", route: "unmatched", status: "404" }) >= 1);
    assert.ok(!s.text.includes(key) && !s.text.includes(nowhere), "no raw path is a label");
    for (const x of s.samples.filter((y) => y.name === "cairn_http_requests_total")) {
      assert.ok(x.labels.route === "unmatched" || x.labels.route.startsWith("/"), `route label ${x.labels.route}`);
    }
  });

  test("a blocking query counts as parked while it waits, and one its client abandons is counted with status 499", async () => {
    const node = followers[0];
    const headers = { "x-consul-token": management };
    const first = await fetch(node.url("/v1/health/service/metrics-block"), { headers });
    assert.equal(first.status, 200);
    await first.text();
    const index = first.headers.get("x-consul-index") ?? "";
    const route = { method: "GET", route: "/v1/health/service/:service", status: "499" };
    const abandoned = valueOf(await scrape(node), "cairn_http_requests_total", route) ?? 0;
    const abort = new AbortController();
    const parked = fetch(node.url(`/v1/health/service/metrics-block?index=${index}&wait=30s`), { headers, signal: abort.signal }).catch(() => undefined);
    await scrapeUntil(node, "the query parked", (s) => must(s, "cairn_registry_blocking_queries") >= 1);
    abort.abort();
    await parked;
    await scrapeUntil(node, "the abandoned query counted", (s) => valueOf(s, "cairn_http_requests_total", route) === abandoned + 1);
  });

  test("an open watch stream counts by kind, and the events sent to it are counted", async () => {
    const node = followers[1];
    const before = await scrape(node);
    const sse = must(before, "cairn_watch_streams_active", { kind: "sse" });
    const abort = new AbortController();
    const res = await fetch(node.url("/v1/watch?service=metrics-sse"), { headers: { "x-consul-token": management }, signal: abort.signal });
    assert.equal(res.status, 200);
    try {
      await scrapeUntil(node, "the SSE stream counted", (s) => must(s, "cairn_watch_streams_active", { kind: "sse" }) === sse + 1);
      const registered = await call(node, "PUT", "/v1/agent/service/register", { token: management, body: { Name: "metrics-sse", ID: "metrics-sse-1" } });
      assert.equal(registered.status, 200, registered.text);
      await scrapeUntil(node, "the event sent", (s) => must(s, "cairn_watch_events_sent_total") > must(before, "cairn_watch_events_sent_total"));
    } finally {
      abort.abort();
    }
    const after = await scrapeUntil(node, "the closed stream no longer counted", (s) => must(s, "cairn_watch_streams_active", { kind: "sse" }) === sse);
    assert.ok(must(after, "cairn_watch_resets_total", { reason: "initial" }) >= 1, "a stream from revision 0 starts with a reset");
    for (const name of ["cairn_xds_pushes_total", "cairn_xds_acks_total", "cairn_xds_nacks_total"]) assert.equal(after.types.get(name), "counter", name);
    assert.equal(must(after, "cairn_watch_streams_active", { kind: "xds" }), 0);
  });

  test("a real Prometheus scrapes all three nodes with a bearer token and answers a query about them", { skip: existsSync(PROMETHEUS) ? false : `${PROMETHEUS} is absent (Debian's prometheus package provides it; CI installs it)` }, async () => {
    const tokenFile = join(SCRATCH, "token");
    writeFileSync(tokenFile, management, { mode: 0o600 });
    const config = join(SCRATCH, "prometheus.yml");
    writeFileSync(config, [
      "global:",
      "  scrape_interval: 1s",
      "  scrape_timeout: 1s",
      "scrape_configs:",
      "  - job_name: cairn",
      "    authorization:",
      "      type: Bearer",
      `      credentials_file: ${tokenFile}`,
      "    static_configs:",
      `      - targets: [${cluster.nodes.map((n) => `"${n.info.http}"`).join(", ")}]`,
      "",
    ].join("\n"));
    const web = `127.0.0.1:${await freePort()}`;
    let output = "";
    const prometheus: ChildProcess = spawn(PROMETHEUS, [`--config.file=${config}`, `--storage.tsdb.path=${join(SCRATCH, "tsdb")}`, `--web.listen-address=${web}`], { stdio: ["ignore", "pipe", "pipe"] });
    prometheus.stdout?.on("data", (c: Buffer) => { output += c.toString(); });
    prometheus.stderr?.on("data", (c: Buffer) => { output += c.toString(); });
    const exited = new Promise((resolve) => prometheus.once("exit", resolve));
    type QueryAnswer = { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    const query = async (q: string): Promise<QueryAnswer["data"]["result"] | undefined> => {
      const res = await fetch(`http://${web}/api/v1/query?query=${encodeURIComponent(q)}`).catch(() => undefined);
      if (res?.status !== 200) return undefined;
      const body = (await res.json()) as QueryAnswer;
      return body.status === "success" ? body.data.result : undefined;
    };
    try {
      const tail = (): string => output.split("\n").slice(-8).join("\n");
      const up = await waitFor(async () => {
        const result = await query("up");
        return result !== undefined && result.length === 3 && result.every((r) => r.value[1] === "1") ? result : undefined;
      }, 30_000, () => `Prometheus never saw all three targets up:\n${tail()}`);
      assert.deepEqual(up.map((r) => r.metric.instance).sort(), cluster.nodes.map((n) => n.info.http).sort());
      const leaders = await waitFor(async () => {
        const result = await query('sum(cairn_raft_role{role="leader"})');
        return result?.length === 1 ? result : undefined;
      }, 10_000, () => `no answer to the leader query:\n${tail()}`);
      assert.equal(leaders[0].value[1], "1", "exactly one leader across the three nodes");
      const terms = await query("count(count by (instance) (cairn_raft_term))");
      assert.equal(terms?.[0]?.value[1], "3", "every node reports its term");
    } finally {
      prometheus.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (prometheus.exitCode === null && prometheus.signalCode === null) prometheus.kill("SIGKILL");
    }
  });

  test("/readyz answers 503 with the reason on a node whose peers are gone, while /healthz stays 200; --metrics-open serves /metrics without a token", async () => {
    const survivor = followers[0];
    await Promise.all(cluster.nodes.filter((n) => n !== survivor).map((n) => n.kill9()));
    const notReady = await waitFor(async () => {
      const r = await call(survivor, "GET", "/readyz");
      return r.status === 503 ? r : undefined;
    }, 15_000, () => `${survivor.info.id} still ready without its peers${survivor.lastWords()}`);
    const body = JSON.parse(notReady.text) as { status: string; reason: string };
    assert.equal(body.status, "not ready");
    assert.match(body.reason, /^no leader/);
    assert.equal((await call(survivor, "GET", "/healthz")).status, 200, "alive, if not ready");
    assert.equal(must(await scrape(survivor), "cairn_raft_has_leader"), 0);
    // Restarted alone with --metrics-open: a scraper without a token reads it, leader or not.
    await survivor.stop();
    survivor.start(["--metrics-open"]);
    await waitFor(async () => ((await call(survivor, "GET", "/healthz").catch(() => undefined))?.status === 200 ? true : undefined), 15_000, () => `${survivor.info.id} did not come back${survivor.lastWords()}`);
    const open = await scrape(survivor, undefined);
    assert.equal(must(open, "cairn_raft_has_leader"), 0);
    assert.equal((await call(survivor, "GET", "/readyz")).status, 503);
  });
});
