// npm run bench:raft: the three-node cluster on this machine, fsync on, real processes.
//   - committed writes per second and commit latency at 1 and 64 concurrent clients;
//   - failover: kill -9 of the leader, 20 times: time until a new leader accepts writes.
// Prints medians and percentiles; never part of npm test.

import { Agent, request } from "node:http";
import { ProcessCluster, type ProcessNode, UNLIMITED_RATE_ARGS, waitFor } from "../test/support/cluster.js";

const LOAD_SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const FAILOVER_ROUNDS = Number(process.env.BENCH_FAILOVERS ?? 20);
const VALUE = "x".repeat(100);

const agent = new Agent({ keepAlive: true, maxSockets: 256 });

function put(node: ProcessNode, key: string, timeoutMs = 5000): Promise<number> {
  const [host, port] = node.info.http.split(":") as [string, string];
  const body = JSON.stringify({ value: VALUE });
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), path: `/v1/kv/${key}`, method: "PUT", agent, timeout: timeoutMs,
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end(body);
  });
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function load(leader: ProcessNode, clients: number): Promise<{ rate: number; p50: number; p99: number; errors: number }> {
  const latencies: number[] = [];
  let errors = 0;
  const deadline = performance.now() + LOAD_SECONDS * 1000;
  let seq = 0;
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    while (performance.now() < deadline) {
      const started = performance.now();
      const status = await put(leader, `bench-${c}-${seq++}`).catch(() => 0);
      if (status === 200) latencies.push(performance.now() - started);
      else errors++;
    }
  }));
  latencies.sort((a, b) => a - b);
  return { rate: latencies.length / LOAD_SECONDS, p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors };
}

async function failover(cluster: ProcessCluster): Promise<number[]> {
  const times: number[] = [];
  for (let round = 1; round <= FAILOVER_ROUNDS; round++) {
    const leader = await cluster.agreedLeader(30_000);
    const killedAt = performance.now();
    await leader.kill9();
    const survivors = cluster.running();
    // Ask the survivors who leads (cheap, local answers), then write to the new leader directly,
    // so the measurement is the outage and not a client's retry timeout.
    await waitFor(async () => {
      const views = await Promise.all(survivors.map((n) => n.cluster().catch(() => undefined)));
      const newLeader = survivors.find((n, i) => views[i]?.role === "leader" && n !== leader);
      if (newLeader === undefined) return undefined;
      return (await put(newLeader, `failover-${round}`, 1000).catch(() => 0)) === 200 ? true : undefined;
    }, 30_000, () => "no write accepted after the leader was killed");
    const ms = performance.now() - killedAt;
    times.push(ms);
    process.stdout.write(`  failover ${round}: ${ms.toFixed(0)} ms\n`);
    leader.start();
    await cluster.agreedLeader(30_000, cluster.nodes);
  }
  return times.sort((a, b) => a - b);
}

const cluster = await ProcessCluster.start(3, ["--log-level", "warn", ...UNLIMITED_RATE_ARGS]);
try {
  const leader = await cluster.agreedLeader(30_000);
  process.stdout.write(`cluster up; leader ${leader.info.id}; ${LOAD_SECONDS}s per load run, fsync on\n`);
  for (const clients of [1, 64]) {
    const r = await load(leader, clients);
    process.stdout.write(`writes, ${String(clients).padStart(2)} client(s): ${r.rate.toFixed(0)} committed writes/s, ` +
      `p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, errors ${r.errors}\n`);
  }
  const times = await failover(cluster);
  process.stdout.write(`failover (kill -9 of the leader, ${times.length} rounds): p50 ${percentile(times, 50).toFixed(0)} ms, ` +
    `p99 ${percentile(times, 99).toFixed(0)} ms, max ${(times[times.length - 1] ?? Number.NaN).toFixed(0)} ms\n`);
} finally {
  agent.destroy();
  await cluster.close();
}
