// The xDS piece of the watch fan-out benchmark: N state-of-the-world ADS streams (a client built
// on Envoy's protos, not @grpc/grpc-js-xds, so one process can hold a thousand) subscribe to one
// service's endpoints; once every stream holds the current assignment, one instance is registered
// over HTTP, and the time until each stream has the new assignment is measured.
//
// measureXdsFanout() is what `npm run bench:watch` calls against a cluster it started. Run alone,
// `node dist/bench/watch_xds.js` starts its own three-node cluster (BENCH_SUBSCRIBERS, default
// 1000; BENCH_ROUNDS changes, default 3). Never part of npm test.

import { pathToFileURL } from "node:url";
import type * as grpc from "@grpc/grpc-js";
import { ENDPOINT_TYPE } from "../src/api/xds/resources.js";
import { ProcessCluster } from "../test/support/cluster.js";
import { adsClient, RawAdsStream, type SotwResponse } from "../test/xds/raw_client.js";
import { describeFanout, type FanoutResult, rssBytesOf, timings } from "./support/fanout.js";
import { envInt } from "./support/settings.js";

/** Streams multiplexed on one connection, as a process's xDS client would share one; more connections spread the load as separate proxies would. */
const STREAMS_PER_CONNECTION = 100;
/** How long every stream may take to hold the first assignment (admission spreads 1,000 over about 2 s). */
const SUBSCRIBE_DEADLINE_MS = 60_000;
/** How long a change may take to reach every stream before the rest count as missed. */
const CHANGE_DEADLINE_MS = 30_000;
const SUBSCRIBERS_MAX = 100_000;

export interface XdsFanoutOptions {
  readonly grpcAddress: string;
  readonly httpBase: string;
  readonly subscribers: number;
  /** The serving node's process, for its RSS with the streams parked. */
  readonly serverPid?: number;
}

interface Subscriber {
  readonly stream: RawAdsStream<SotwResponse>;
  /** The assignment's bytes in the last response, and when the one after the change arrived. */
  held: Uint8Array | undefined;
  changedAtMs: number | undefined;
}

let round = 0;

export async function measureXdsFanout(opts: XdsFanoutOptions): Promise<FanoutResult> {
  if (!Number.isInteger(opts.subscribers) || opts.subscribers < 1 || opts.subscribers > SUBSCRIBERS_MAX) {
    throw new RangeError(`subscribers = ${opts.subscribers}: give a whole number from 1 to ${SUBSCRIBERS_MAX}`);
  }
  // A service of its own per measurement, so rounds do not see each other's writes.
  const service = `xds-fanout-${process.pid}-${++round}`;
  await register(opts.httpBase, service, 0);
  // The node loads Envoy's protos on its first xDS stream: one stream first, so that is not
  // counted as the streams' memory.
  await warmUp(opts.grpcAddress);
  const rssBeforeBytes = opts.serverPid === undefined ? 0 : rssBytesOf(opts.serverPid);

  const clients: grpc.Client[] = [];
  const subscribers: Subscriber[] = [];
  let changeSentAtMs: number | undefined;
  try {
    for (let i = 0; i < opts.subscribers; i++) {
      if (i % STREAMS_PER_CONNECTION === 0) clients.push(adsClient(opts.grpcAddress));
      const stream = await RawAdsStream.sotw(clients[clients.length - 1]);
      const sub: Subscriber = { stream, held: undefined, changedAtMs: undefined };
      stream.onResponse = (r) => {
        const nowMs = performance.now();
        const bytes = r.resources[0]?.value;
        if (changeSentAtMs !== undefined && sub.changedAtMs === undefined && sub.held !== undefined && bytes !== undefined && !sameBytes(bytes, sub.held)) sub.changedAtMs = nowMs;
        sub.held = bytes;
        stream.send({ type_url: ENDPOINT_TYPE.typeUrl, resource_names: [service], response_nonce: r.nonce, version_info: r.version_info });
      };
      stream.send({ node: { id: `bench-${process.pid}-${i}`, cluster: "bench" }, type_url: ENDPOINT_TYPE.typeUrl, resource_names: [service] });
      subscribers.push(sub);
    }
    await until(() => subscribers.every((s) => s.held !== undefined), SUBSCRIBE_DEADLINE_MS, () => `${subscribers.filter((s) => s.held === undefined).length} of ${opts.subscribers} streams never got the first assignment`);
    const rssParkedBytes = opts.serverPid === undefined ? 0 : rssBytesOf(opts.serverPid);

    changeSentAtMs = performance.now();
    await register(opts.httpBase, service, 1);
    await until(() => subscribers.every((s) => s.changedAtMs !== undefined), CHANGE_DEADLINE_MS, () => "").catch(() => undefined);
    const sentAtMs = changeSentAtMs;
    const latencies = subscribers.flatMap((s) => (s.changedAtMs === undefined ? [] : [s.changedAtMs - sentAtMs]));
    return {
      kind: "cairn xDS (SotW ADS, EDS)",
      watchers: opts.subscribers,
      ...timings(latencies),
      missed: opts.subscribers - latencies.length,
      rssGrowthBytes: rssParkedBytes - rssBeforeBytes,
    };
  } finally {
    for (const s of subscribers) s.stream.close();
    for (const c of clients) c.close();
  }
}

async function warmUp(grpcAddress: string): Promise<void> {
  const client = adsClient(grpcAddress);
  const stream = await RawAdsStream.sotw(client);
  try {
    stream.send({ node: { id: `bench-${process.pid}-warm-up` }, type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["warm-up"] });
    await stream.next(SUBSCRIBE_DEADLINE_MS);
  } finally {
    stream.close();
    client.close();
  }
}

async function register(httpBase: string, service: string, n: number): Promise<void> {
  const res = await fetch(new URL("/v1/registry/instances", httpBase), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: service, id: `${service}-${n}`, address: `10.200.0.${n + 1}`, port: 9000 }),
  });
  if (!res.ok) throw new Error(`registering ${service}-${n} at ${httpBase}: ${res.status} ${await res.text()}`);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

async function until(done: () => boolean, timeoutMs: number, describe: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${describe()}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

// ---------------------------------------------------------------- run alone

async function main(): Promise<void> {
  const subscribers = envInt("BENCH_SUBSCRIBERS", 1000, 1, SUBSCRIBERS_MAX);
  const rounds = envInt("BENCH_ROUNDS", 3, 1, 20);
  const cluster = await ProcessCluster.start(3);
  try {
    const leader = await cluster.agreedLeader();
    // A follower serves the streams: the change reaches it by replication, as for most proxies.
    const node = cluster.running().find((n) => n !== leader) ?? leader;
    const pid = node.process?.pid;
    for (let r = 1; r <= rounds; r++) {
      const result = await measureXdsFanout({ grpcAddress: node.info.grpc, httpBase: `http://${leader.info.http}`, subscribers, ...(pid === undefined ? {} : { serverPid: pid }) });
      process.stdout.write(`round ${r}: ${describeFanout(result)}\n`);
    }
  } finally {
    await cluster.close();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  });
}
