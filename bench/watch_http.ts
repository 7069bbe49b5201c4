// HTTP blocking queries fanned out from one change: N `GET /v1/health/service/:name?index=X&wait=5m`
// parked on a follower, one write on the leader, and how long until each query has its answer.
// Also what the parked queries cost the follower in resident memory.
//
// measureBlockingQueries() is the piece the watch benchmark (`npm run bench:watch`) calls; run
// alone (`node dist/bench/watch_http.js`) it starts its own three-node cluster and measures
// BENCH_WATCHERS (default "1000,10000"); BENCH_DEBUG=1 also prints the follower's heap growth,
// the first answer's time and any query that failed. The client process needs one socket per
// query: `ulimit -n` must exceed the largest count. Never part of npm test.

import { Agent, request } from "node:http";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type FanoutResult, describeFanout, rssBytesOf, timings } from "./support/fanout.js";
import { ProcessCluster, type ProcessNode, waitFor } from "../test/support/cluster.js";

export interface BlockingQueryOptions {
  readonly follower: ProcessNode;
  readonly leader: ProcessNode;
  readonly watchers: number;
  readonly service: string;
}

/** Every query must be parked within this long, or the measurement fails. */
const PARK_TIMEOUT_MS = 120_000;
/** After the write, a query that has not answered within this long counts as missed. */
const DELIVERY_TIMEOUT_MS = 60_000;
/** Without the runtime route (older builds), parking counts as done once the follower's CPU has been idle this long. */
const CPU_IDLE_SETTLE_MS = 500;
/** Queries opened per macrotask while parking, so the client does not build 10,000 requests in one go. */
const PARK_BATCH = 500;
const BLOCKING_WAIT = "5m";

interface RuntimeStats {
  readonly blockingQueries?: number;
  readonly heapUsedBytes?: number;
}

/**
 * Parks `watchers` blocking queries on the follower, measures its RSS growth, writes once on the
 * leader and times each query's answer from just before the write.
 */
export async function measureBlockingQueries(opts: BlockingQueryOptions): Promise<FanoutResult> {
  const { follower, leader, watchers, service } = opts;
  // Every query keeps its socket: a pool that closed sockets as answers arrive would make the
  // follower close connections while it answers, and that would be measured too.
  const agent = new Agent({ keepAlive: true, maxSockets: watchers + 16, maxFreeSockets: watchers + 16 });
  try {
    // The service exists, and the follower has applied it, before anyone parks.
    await post(agent, leader, "/v1/agent/service/register", { Name: service, ID: `${service}-seed`, Port: 1 });
    const index = await waitFor(async () => {
      const res = await get(agent, follower, `/v1/health/service/${service}?stale`);
      const body = JSON.parse(res.body) as unknown[];
      return body.length > 0 ? Number(res.headers["x-consul-index"]) : undefined;
    }, 10_000, () => `the follower never listed ${service}`);
    const pid = follower.process?.pid;
    if (pid === undefined) throw new Error(`follower ${follower.info.id} has no process`);
    const statsBefore = await runtimeStats(agent, follower);
    const parkedBefore = statsBefore?.blockingQueries ?? 0;
    const rssBeforeBytes = rssBytesOf(pid);

    let writeAtMs = 0;
    const latenciesMs: number[] = [];
    let failed = 0;
    const answers: Promise<void>[] = [];
    for (let i = 0; i < watchers; i++) {
      if (i > 0 && i % PARK_BATCH === 0) await new Promise((resolve) => setImmediate(resolve));
      answers.push(get(agent, follower, `/v1/health/service/${service}?index=${index}&wait=${BLOCKING_WAIT}`, DELIVERY_TIMEOUT_MS + PARK_TIMEOUT_MS)
        .then((res) => {
          if (res.status !== 200 || writeAtMs === 0) {
            failed++;
            if (process.env.BENCH_DEBUG !== undefined) process.stderr.write(`answer before the write: ${res.status} ${res.body.slice(0, 200)}\n`);
          } else latenciesMs.push(performance.now() - writeAtMs);
        }, (err: unknown) => {
          failed++;
          if (process.env.BENCH_DEBUG !== undefined) process.stderr.write(`query failed: ${String(err)}\n`);
        }));
    }
    await waitUntilParked(agent, follower, pid, parkedBefore + watchers);
    const rssGrowthBytes = rssBytesOf(pid) - rssBeforeBytes;
    if (process.env.BENCH_DEBUG !== undefined) {
      const heapBytes = ((await runtimeStats(agent, follower))?.heapUsedBytes ?? 0) - (statsBefore?.heapUsedBytes ?? 0);
      process.stderr.write(`follower heap +${(heapBytes / watchers / 1024).toFixed(2)} KB per query (not collected first)\n`);
    }

    writeAtMs = performance.now();
    await post(agent, leader, "/v1/agent/service/register", { Name: service, ID: `${service}-change`, Port: 2 });
    await Promise.race([Promise.all(answers), new Promise((resolve) => setTimeout(resolve, DELIVERY_TIMEOUT_MS).unref())]);
    // A failed query (an error status, a reset) counts as missed; say how many there were.
    if (failed > 0) process.stderr.write(`${failed} of ${watchers} blocking queries failed rather than answering\n`);
    if (process.env.BENCH_DEBUG !== undefined) process.stderr.write(`first answer after ${Math.min(...latenciesMs).toFixed(0)} ms\n`);
    return {
      kind: "cairn HTTP blocking query",
      watchers,
      ...timings(latenciesMs),
      missed: watchers - latenciesMs.length,
      rssGrowthBytes,
    };
  } finally {
    agent.destroy();
  }
}

/** Waits until the follower reports `expected` parked queries, or (older builds) until its CPU is idle. */
async function waitUntilParked(agent: Agent, follower: ProcessNode, pid: number, expected: number): Promise<void> {
  if ((await runtimeStats(agent, follower))?.blockingQueries !== undefined) {
    let seen = 0;
    await waitFor(async () => {
      seen = (await runtimeStats(agent, follower))?.blockingQueries ?? 0;
      return seen >= expected ? true : undefined;
    }, PARK_TIMEOUT_MS, () => `only ${seen} of ${expected} blocking queries parked on ${follower.info.id}`);
    return;
  }
  let lastCpu = cpuTicksOf(pid);
  let idleSinceMs = performance.now();
  await waitFor(async () => {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const cpu = cpuTicksOf(pid);
    if (cpu !== lastCpu) {
      lastCpu = cpu;
      idleSinceMs = performance.now();
    }
    return performance.now() - idleSinceMs >= CPU_IDLE_SETTLE_MS ? true : undefined;
  }, PARK_TIMEOUT_MS, () => `the follower ${follower.info.id} never went idle`);
}

/** utime + stime of a process, in clock ticks (Linux). */
function cpuTicksOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

async function runtimeStats(agent: Agent, node: ProcessNode): Promise<RuntimeStats | undefined> {
  const res = await get(agent, node, "/v1/status/runtime");
  return res.status === 200 ? JSON.parse(res.body) as RuntimeStats : undefined;
}

interface HttpAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

function get(agent: Agent, node: ProcessNode, path: string, timeoutMs = 10_000): Promise<HttpAnswer> {
  return call(agent, node, "GET", path, undefined, timeoutMs);
}

async function post(agent: Agent, node: ProcessNode, path: string, body: unknown): Promise<void> {
  const res = await call(agent, node, "PUT", path, JSON.stringify(body), 10_000);
  if (res.status !== 200) throw new Error(`${path} on ${node.info.id}: ${res.status} ${res.body}`);
}

function call(agent: Agent, node: ProcessNode, method: string, path: string, body: string | undefined, timeoutMs: number): Promise<HttpAnswer> {
  const [host, port] = node.info.http.split(":");
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), method, path, agent, timeout: timeoutMs, headers: body === undefined ? {} : { "content-type": "application/json" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out after ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------- run alone

function watcherCounts(): number[] {
  const raw = process.env.BENCH_WATCHERS ?? "1000,10000";
  const counts = raw.split(",").map((s) => Number(s.trim()));
  if (counts.some((n) => !Number.isInteger(n) || n < 1 || n > 50_000)) throw new RangeError(`BENCH_WATCHERS=${raw}: give whole numbers from 1 to 50000, comma-separated`);
  return counts;
}

async function main(): Promise<void> {
  const counts = watcherCounts();
  for (const watchers of counts) {
    // A fresh cluster per count, so one measurement's sockets and garbage do not weigh on the next.
    const cluster = await ProcessCluster.start(3);
    try {
      const leader = await cluster.agreedLeader();
      const follower = cluster.nodes.find((n) => n !== leader);
      if (follower === undefined) throw new Error("no follower");
      const result = await measureBlockingQueries({ follower, leader, watchers, service: "fanout" });
      process.stdout.write(`${describeFanout(result)}\n`);
    } finally {
      await cluster.close();
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
