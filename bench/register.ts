// npm run bench:register: registrations per second, Cairn against etcd, side by side on this machine.
//   - Cairn: a three-node cluster of real processes, fsync on; wrk issues PUT /v1/agent/service/register
//     with a Consul body registering a new instance per request.
//   - etcd 3.4 (Debian's etcd-server): a three-node cluster on loopback, fsync on (its default);
//     the same wrk load issues POST /v3/kv/put through its JSON gateway, ~100-byte values, new keys.
//   - Each side runs BENCH_ROUNDS times, alternating, each on a fresh cluster; medians are reported.
//   - Memory: 100,000 instances registered into a fresh Cairn cluster; each node's RSS.
// Load goes to all three nodes of each cluster at once (BENCH_TARGET=spread: one wrk per node,
// -t1, connections split 22/21/21, latency percentiles merged), or to the leader only
// (BENCH_TARGET=leader: one wrk, -t2 -c64). wrk pins each thread to one address, so two threads
// cannot cover three nodes. Never part of npm test. Needs `apt-get install -y wrk etcd-server`.

import { readFileSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { loadavg } from "node:os";
import { join } from "node:path";
import { type ProcessCluster, type ProcessNode, UNLIMITED_RATE_ARGS } from "../test/support/cluster.js";
import { EtcdCluster, installedEtcdVersion } from "./support/etcd.js";
import { cleanup, spawnTracked, startCairnCluster, tempDir } from "./support/processes.js";
import { envChoice, envInt, median } from "./support/settings.js";

// ---------------------------------------------------------------- settings, each bounded

const RUN_SECONDS = envInt("BENCH_SECONDS", 15, 1, 120);
const WARMUP_SECONDS = envInt("BENCH_WARMUP_SECONDS", 2, 0, 30);
const ROUNDS = envInt("BENCH_ROUNDS", 3, 1, 9);
const THREADS = 2;
const CONNECTIONS = 64;
const TARGET = envChoice("BENCH_TARGET", ["spread", "leader"] as const);
/** kv: Cairn's internal PUT /v1/kv/:key, to compare the registry's cost with a bare Raft write. */
const CAIRN_ROUTE = envChoice("BENCH_CAIRN_ROUTE", ["register", "kv"] as const);
/** Extra `cairn server` flags for diagnosis, e.g. "--snapshot-entries 1000000"; split on spaces. */
const CAIRN_EXTRA_ARGS = (process.env.BENCH_CAIRN_ARGS ?? "").split(" ").filter((a) => a !== "");
const MEMORY_INSTANCES = envInt("BENCH_INSTANCES", 100_000, 0, 1_000_000);
const MEMORY_CONCURRENCY = 128;
const MEMORY_ATTEMPTS_MAX = 5;
const MEMORY_DEADLINE_MS = 15 * 60_000;
const MEMORY_RETRY_BASE_MS = 200;
const RSS_GOAL_MB = 300;
const READY_TIMEOUT_MS = 30_000;
/** wrk runs at most this much longer than asked before it is killed. */
const WRK_GRACE_MS = 30_000;
const ETCD_VALUE = "v".repeat(100);
const HOST = "127.0.0.1";

// ---------------------------------------------------------------- wrk

interface WrkResult {
  readonly requests: number;
  readonly durationUs: number;
  readonly statusErrors: number;
  readonly socketErrors: number;
  readonly p50Us: number;
  readonly p99Us: number;
  /** Latency (us) at each point of PERCENTILE_POINTS, for merging several wrk processes. */
  readonly percentiles: readonly number[];
}

/** 0.1 steps to 99, then 0.01 steps: the tail is what p99 is made of. */
const PERCENTILE_POINTS: readonly number[] = [
  ...Array.from({ length: 990 }, (_, i) => (i + 1) / 10),
  ...Array.from({ length: 100 }, (_, i) => 99 + (i + 1) / 100),
];

const LUA_COMMON = `
-- Written by bench/register.ts. Each thread numbers its own requests; init's argument names the
-- wrk process, so every request creates a new instance (or key).
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1, c2, c3, c4 = math.floor(n / 262144) % 64, math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64
    out[#out + 1] = B64:sub(c1 + 1, c1 + 1) .. B64:sub(c2 + 1, c2 + 1) ..
      (b and B64:sub(c3 + 1, c3 + 1) or "=") .. (c and B64:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
prefix = "w"
counter = 0
function init(args)
  prefix = args[1] or "w"
end
local points = { ${PERCENTILE_POINTS.map((p) => p.toFixed(2)).join(", ")} }
function done(summary, latency, requests)
  local pct = {}
  for i, p in ipairs(points) do pct[i] = string.format("%d", latency:percentile(p)) end
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests":%d,"durationUs":%d,"statusErrors":%d,"socketErrors":%d,"p50Us":%d,"p99Us":%d,"percentiles":[%s]}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(pct, ",")))
end
`;

const LUA_CAIRN_REGISTER = `${LUA_COMMON}
local headers = { ["Content-Type"] = "application/json" }
function request()
  counter = counter + 1
  local n = counter
  local address = "10." .. (math.floor(n / 65536) % 256) .. "." .. (math.floor(n / 256) % 256) .. "." .. (n % 256)
  local body = '{"ID":"bench-' .. prefix .. '-' .. tid .. '-' .. n .. '","Name":"bench","Address":"' .. address ..
    '","Port":' .. (1024 + n % 60000) .. ',"Tags":["bench"]}'
  return wrk.format("PUT", "/v1/agent/service/register", headers, body)
end
`;

const LUA_CAIRN_KV = `${LUA_COMMON}
local headers = { ["Content-Type"] = "application/json" }
local body = '{"value":"${ETCD_VALUE}"}'
function request()
  counter = counter + 1
  return wrk.format("PUT", "/v1/kv/bench-" .. prefix .. "-" .. tid .. "-" .. counter, headers, body)
end
`;

const LUA_ETCD = `${LUA_COMMON}
local headers = { ["Content-Type"] = "application/json" }
local value = b64("${ETCD_VALUE}")
function request()
  counter = counter + 1
  local key = "bench/" .. prefix .. "-" .. tid .. "-" .. counter
  return wrk.format("POST", "/v3/kv/put", headers, '{"key":"' .. b64(key) .. '","value":"' .. value .. '"}')
end
`;

async function runWrk(url: string, script: string, name: string, threads: number, connections: number, seconds: number): Promise<WrkResult> {
  const child = spawnTracked("wrk", [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, "--timeout", "10s", "--latency", "-s", script, url, "--", name]);
  let out = "";
  let err = "";
  child.stdout?.on("data", (c: Buffer) => { out += c.toString(); });
  child.stderr?.on("data", (c: Buffer) => { err += c.toString(); });
  const killer = setTimeout(() => child.kill("SIGKILL"), seconds * 1000 + WRK_GRACE_MS);
  // "close", not "exit": only then has all of stdout been read.
  const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  clearTimeout(killer);
  const line = out.split("\n").find((l) => l.startsWith("BENCH_JSON "));
  if (code !== 0 || line === undefined) throw new Error(`wrk ${url} exited with ${code}: ${err || out}`);
  return JSON.parse(line.slice("BENCH_JSON ".length)) as WrkResult;
}

interface LoadResult {
  /** Answered requests (any status), over all wrk processes. */
  readonly requests: number;
  readonly rate: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly non2xx: number;
  readonly socketErrors: number;
}

/** Runs wrk against `urls` at once: one process with THREADS threads for one URL, else one single-threaded wrk per URL. */
async function load(urls: readonly string[], script: string, tag: string, seconds: number): Promise<LoadResult> {
  const results = urls.length === 1
    ? [await runWrk(urls[0], script, tag, THREADS, CONNECTIONS, seconds)]
    : await Promise.all(urls.map((u, i) => runWrk(u, script, `${tag}n${i}`, 1, Math.floor(CONNECTIONS / urls.length) + (i < CONNECTIONS % urls.length ? 1 : 0), seconds)));
  const rate = results.reduce((s, r) => s + r.requests / (r.durationUs / 1e6), 0);
  const single = results.length === 1 ? results[0] : undefined;
  return {
    requests: results.reduce((s, r) => s + r.requests, 0),
    rate,
    p50Ms: (single?.p50Us ?? mergedPercentile(results, 50)) / 1000,
    p99Ms: (single?.p99Us ?? mergedPercentile(results, 99)) / 1000,
    non2xx: results.reduce((s, r) => s + r.statusErrors, 0),
    socketErrors: results.reduce((s, r) => s + r.socketErrors, 0),
  };
}

/**
 * The p-th percentile of several wrk runs together: each run's quantile points carry the share
 * of requests they stand for (step size times the run's request count).
 */
function mergedPercentile(results: readonly WrkResult[], p: number): number {
  const weighted: { us: number; weight: number }[] = [];
  for (const r of results) {
    let prev = 0;
    PERCENTILE_POINTS.forEach((point, i) => {
      weighted.push({ us: r.percentiles[i], weight: ((point - prev) / 100) * r.requests });
      prev = point;
    });
  }
  weighted.sort((a, b) => a.us - b.us);
  const total = weighted.reduce((s, w) => s + w.weight, 0);
  let cumulative = 0;
  for (const w of weighted) {
    cumulative += w.weight;
    if (cumulative >= (p / 100) * total - 1e-9) return w.us;
  }
  return weighted.at(-1)?.us ?? Number.NaN;
}

// ---------------------------------------------------------------- Cairn

/** A fresh three-node Cairn cluster with an agreed leader, and the function that closes it. */
function startCairn(): Promise<{ cluster: ProcessCluster; close: () => Promise<void> }> {
  // The write rate limits are raised far above the load: they must not shape the benchmark.
  return startCairnCluster(3, ["--log-level", "warn", ...UNLIMITED_RATE_ARGS, ...CAIRN_EXTRA_ARGS], READY_TIMEOUT_MS);
}

const agent = new Agent({ keepAlive: true, maxSockets: MEMORY_CONCURRENCY });

function httpCall(url: string, method: string, body: string | undefined, timeoutMs = 10_000): Promise<{ status: number; text: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: Number(u.port), path: u.pathname + u.search, method, agent, timeout: timeoutMs,
      headers: body === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => { text += c; });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end(body);
  });
}

function registerBody(id: string, n: number): string {
  return JSON.stringify({ ID: id, Name: "bench", Address: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, Port: 1024 + (n % 60000), Tags: ["bench"] });
}

/** One request of the kind wrk will send, so a missing route fails here with its answer, not as 100% non-2xx. */
async function probeCairnRoute(node: ProcessNode): Promise<void> {
  const res = CAIRN_ROUTE === "register"
    ? await httpCall(node.url("/v1/agent/service/register"), "PUT", registerBody("bench-probe", 1))
    : await httpCall(node.url("/v1/kv/bench-probe"), "PUT", JSON.stringify({ value: ETCD_VALUE }));
  if (res.status !== 200) throw new Error(`Cairn's ${CAIRN_ROUTE} route answered ${res.status}: ${res.text.slice(0, 300)}`);
}

function rssKb(pid: number): { rssKb: number; hwmKb: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string): number => Number(/\s(\d+) kB/.exec(status.split("\n").find((l) => l.startsWith(`${name}:`)) ?? "")?.[1] ?? Number.NaN);
  return { rssKb: field("VmRSS"), hwmKb: field("VmHWM") };
}

async function memory(instances: number): Promise<void> {
  const { cluster, close } = await startCairn();
  try {
    const nodes = cluster.nodes;
    const baseline = nodes.map((n) => n.process?.pid === undefined ? Number.NaN : rssKb(n.process.pid).rssKb / 1024);
    process.stdout.write(`memory: fresh cluster RSS ${baseline.map((mb, i) => `${nodes[i]?.info.id} ${mb.toFixed(0)} MB`).join(", ")}\n`);
    let next = 0;
    let registered = 0;
    let failedAttempts = 0;
    const failures = new Map<string, number>();
    const deadline = performance.now() + MEMORY_DEADLINE_MS;
    const started = performance.now();
    let lastReport = started;
    await Promise.all(Array.from({ length: MEMORY_CONCURRENCY }, async (_, worker) => {
      while (next < instances && performance.now() < deadline) {
        const n = next++;
        const body = registerBody(`mem-${n}`, n);
        for (let attempt = 0; attempt < MEMORY_ATTEMPTS_MAX; attempt++) {
          const node = nodes[(n + attempt + worker) % nodes.length];
          const res = await httpCall(node.url("/v1/agent/service/register"), "PUT", body).catch((e: unknown) => ({ status: 0, text: String(e) }));
          if (res.status === 200) {
            registered++;
            break;
          }
          failedAttempts++;
          const key = `${res.status} ${res.text.slice(0, 120)}`;
          failures.set(key, (failures.get(key) ?? 0) + 1);
          // Long enough, summed over the attempts, to outlast an election.
          if (attempt + 1 < MEMORY_ATTEMPTS_MAX) await new Promise((r) => setTimeout(r, MEMORY_RETRY_BASE_MS * 2 ** attempt));
        }
        if (performance.now() - lastReport > 10_000) {
          lastReport = performance.now();
          process.stdout.write(`  memory: ${registered} registered after ${((lastReport - started) / 1000).toFixed(0)} s\n`);
        }
      }
    }));
    const seconds = (performance.now() - started) / 1000;
    const listed = JSON.parse((await httpCall(nodes[0]?.url("/v1/registry/services"), "GET", undefined, 60_000)).text) as { services?: { name: string; instances: number }[] };
    const count = listed.services?.find((s) => s.name === "bench")?.instances ?? 0;
    process.stdout.write(`memory: ${registered}/${instances} instances registered in ${seconds.toFixed(1)} s (${(registered / seconds).toFixed(0)}/s, ` +
      `${MEMORY_CONCURRENCY} concurrent requests over 3 nodes, ${failedAttempts} failed attempts); the cluster lists ${count}\n`);
    for (const [k, v] of failures) process.stdout.write(`  failed attempts: ${v} x ${k}\n`);
    // Let a snapshot in progress finish and the heap settle before reading RSS.
    await new Promise((r) => setTimeout(r, 5_000));
    for (const node of nodes) {
      const pid = node.process?.pid;
      if (pid === undefined || !node.running) {
        process.stdout.write(`  ${node.info.id}: not running\n`);
        continue;
      }
      const { rssKb: rss, hwmKb } = rssKb(pid);
      const role = (await node.cluster()).role;
      const perInstanceBytes = ((rss / 1024 - (baseline[nodes.indexOf(node)] ?? Number.NaN)) * 1024 * 1024) / Math.max(1, count);
      process.stdout.write(`  ${node.info.id} (${role}): RSS ${(rss / 1024).toFixed(0)} MB, peak ${(hwmKb / 1024).toFixed(0)} MB, ` +
        `${(perInstanceBytes / 1024).toFixed(1)} KB per instance above the fresh node` +
        ` (goal <= ${RSS_GOAL_MB} MB: ${rss / 1024 <= RSS_GOAL_MB ? "met" : "MISSED"})\n`);
    }
  } finally {
    await close();
  }
}

// ---------------------------------------------------------------- the run

function describeRun(r: LoadResult): string {
  return `${r.rate.toFixed(0).padStart(6)} req/s  p50 ${r.p50Ms.toFixed(2).padStart(7)} ms  p99 ${r.p99Ms.toFixed(2).padStart(7)} ms  non-2xx ${r.non2xx}  socket errors ${r.socketErrors}`;
}

async function cairnRound(round: number, script: string): Promise<LoadResult> {
  const { cluster, close } = await startCairn();
  try {
    const leader = await cluster.agreedLeader(READY_TIMEOUT_MS);
    await probeCairnRoute(cluster.nodes[round % 3]);
    const urls = TARGET === "leader" ? [`http://${leader.info.http}`] : cluster.nodes.map((n) => `http://${n.info.http}`);
    const warm = WARMUP_SECONDS > 0 ? (await load(urls, script, `c${round}w`, WARMUP_SECONDS)).requests : 0;
    const run = await load(urls, script, `c${round}`, RUN_SECONDS);
    if (CAIRN_ROUTE === "register") {
      // Every answered request must have made its own instance (requests cut off at the end may add a few more).
      const listed = JSON.parse((await httpCall(leader.url("/v1/registry/services"), "GET", undefined)).text) as { services?: { name: string; instances: number }[] };
      const stored = listed.services?.find((x) => x.name === "bench")?.instances ?? 0;
      process.stdout.write(`    cairn stored ${stored} instances for ${warm + run.requests + 1} answered registrations (warm-up and probe included)\n`);
    }
    return run;
  } finally {
    await close();
  }
}

async function etcdRound(round: number, script: string): Promise<LoadResult> {
  const etcd = await EtcdCluster.start(3);
  try {
    const urls = TARGET === "leader" ? [await etcd.leaderUrl()] : etcd.clientUrls;
    const warm = WARMUP_SECONDS > 0 ? (await load(urls, script, `e${round}w`, WARMUP_SECONDS)).requests : 0;
    const run = await load(urls, script, `e${round}`, RUN_SECONDS);
    process.stdout.write(`    etcd stored ${await etcd.countKeys("bench/")} keys for ${warm + run.requests} answered puts (warm-up included)\n`);
    return run;
  } finally {
    await etcd.close();
  }
}

async function main(): Promise<void> {
  const dir = tempDir("cairn-bench-wrk-");
  const cairnScript = join(dir, "cairn.lua");
  const etcdScript = join(dir, "etcd.lua");
  writeFileSync(cairnScript, CAIRN_ROUTE === "register" ? LUA_CAIRN_REGISTER : LUA_CAIRN_KV);
  writeFileSync(etcdScript, LUA_ETCD);
  const etcdVersion = await installedEtcdVersion();
  const spread = TARGET === "spread"
    ? `all 3 nodes at once (3 wrk processes x 1 thread, ${CONNECTIONS} connections split 22/21/21)`
    : `the leader only (1 wrk, ${THREADS} threads, ${CONNECTIONS} connections)`;
  process.stdout.write(`bench:register on ${HOST}: ${ROUNDS} rounds per side, alternating, ${RUN_SECONDS} s each after ${WARMUP_SECONDS} s of warm-up, ` +
    `fresh clusters per round, fsync on; load to ${spread}\n` +
    `  cairn: ${CAIRN_ROUTE === "register" ? "PUT /v1/agent/service/register, a new instance per request" : "PUT /v1/kv/:key, a new key per request"}` +
    `${CAIRN_EXTRA_ARGS.length > 0 ? ` (server flags: ${CAIRN_EXTRA_ARGS.join(" ")})` : ""}\n` +
    `  etcd:  ${etcdVersion}, POST /v3/kv/put (JSON gateway), a new key per request, 100-byte value\n`);

  const cairn: LoadResult[] = [];
  const etcd: LoadResult[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const c = await cairnRound(round, cairnScript);
    cairn.push(c);
    process.stdout.write(`  round ${round} cairn: ${describeRun(c)}  (load average ${loadavg()[0]?.toFixed(1)})\n`);
    const e = await etcdRound(round, etcdScript);
    etcd.push(e);
    process.stdout.write(`  round ${round} etcd:  ${describeRun(e)}  (load average ${loadavg()[0]?.toFixed(1)})\n`);
  }
  const med = (rs: LoadResult[]): LoadResult => ({
    requests: median(rs.map((r) => r.requests)),
    rate: median(rs.map((r) => r.rate)),
    p50Ms: median(rs.map((r) => r.p50Ms)),
    p99Ms: median(rs.map((r) => r.p99Ms)),
    non2xx: rs.reduce((s, r) => s + r.non2xx, 0),
    socketErrors: rs.reduce((s, r) => s + r.socketErrors, 0),
  });
  const mc = med(cairn);
  const me = med(etcd);
  process.stdout.write(`medians of ${ROUNDS} (non-2xx and socket errors summed over all rounds):\n` +
    `  cairn: ${describeRun(mc)}\n  etcd:  ${describeRun(me)}\n` +
    `  cairn/etcd: rate x${(mc.rate / me.rate).toFixed(2)}, p50 x${(mc.p50Ms / me.p50Ms).toFixed(2)}, p99 x${(mc.p99Ms / me.p99Ms).toFixed(2)}\n`);

  if (MEMORY_INSTANCES > 0) await memory(MEMORY_INSTANCES);
}

try {
  await main();
} finally {
  agent.destroy();
  await cleanup();
}
