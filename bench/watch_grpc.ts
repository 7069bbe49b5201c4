// One change fanned out to N of Cairn's gRPC watches (cairn.registry.v1.Registry/Watch) on one
// node: how long until every watch has it, and what the parked watches cost the node. Watches
// share streams `watchesPerStream` at a time, as etcd's clients multiplex theirs (the npm etcd3
// client puts every watch of a client on one stream); 1 gives each watch a stream of its own.
// Part of `npm run bench:watch`; run alone, `node dist/bench/watch_grpc.js [watchers]
// [watchesPerStream]` starts its own three-node cluster and watches a follower.
//
// Streams are spread over many HTTP/2 connections, as many clients would open them. The client
// reads only each message's kind, revision and watch id, so that its own decoding does not
// dominate the figure it measures (a proxy decodes what it is sent, but a proxy is not one
// process holding 100,000 streams).

import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { loadProtoRoot } from "../src/api/protos.js";
import { ProcessCluster, type ProcessNode } from "../test/support/cluster.js";
import { type FanoutResult, describeFanout, rssBytesOf, timings } from "./support/fanout.js";

/** Streams per HTTP/2 connection. */
const STREAMS_PER_CONNECTION = 1000;
export const WATCHES_PER_STREAM_DEFAULT = 100;
/** Streams opened before the next batch, so the opening does not itself become the measurement. */
const OPEN_BATCH = 2000;
const SETTLE_TIMEOUT_MS = 120_000;
const CHANGE_TIMEOUT_MS = 60_000;
const KIND_EVENTS = 1;

const root = loadProtoRoot("cairn/registry/v1/watch.proto");
const WatchRequest = root.lookupType("cairn.registry.v1.WatchRequest");
const identity = (b: Buffer): Buffer => b;
const watchMethod: grpc.MethodDefinition<object, Buffer> = {
  path: "/cairn.registry.v1.Registry/Watch",
  requestStream: true,
  responseStream: true,
  requestSerialize: (r: object) => Buffer.from(WatchRequest.encode(WatchRequest.fromObject(r)).finish()),
  requestDeserialize: identity,
  responseSerialize: identity,
  responseDeserialize: identity,
};

/** The WatchResponse's kind (field 1), revision (field 2) and watch id (field 9), without decoding the rest. */
function summary(message: Buffer): { kind: number; revision: number; watchId: number } {
  const r = protobuf.Reader.create(message);
  let kind = 0;
  let revision = 0;
  let watchId = 0;
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag === 8) kind = r.uint32();
    else if (tag === 16) revision = Number(r.uint64());
    else if (tag === 72) watchId = Number(r.uint64());
    else r.skipType(tag & 7);
  }
  return { kind, revision, watchId };
}

async function registerOnce(node: ProcessNode, service: string, id: string, port: number): Promise<number> {
  const res = await fetch(node.url("/v1/registry/instances"), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: service, id, address: "10.0.0.1", port }),
  });
  const body = (await res.json()) as { index?: number; error?: string };
  if (!res.ok || body.index === undefined) throw new Error(`registering ${id}: ${res.status} ${body.error ?? ""}`);
  return body.index;
}

export async function measureGrpcWatchers(opts: { node: ProcessNode; writer: ProcessNode; watchers: number; service: string; watchesPerStream?: number }): Promise<FanoutResult> {
  const perStream = opts.watchesPerStream ?? WATCHES_PER_STREAM_DEFAULT;
  const pid = opts.node.process?.pid;
  if (pid === undefined) throw new Error(`${opts.node.info.id} is not running`);
  const setupRevision = await registerOnce(opts.writer, opts.service, `${opts.service}-setup`, 1);
  const clients: grpc.Client[] = [];
  const calls: grpc.ClientDuplexStream<object, Buffer>[] = [];
  const Client = grpc.makeGenericClientConstructor({ Watch: watchMethod }, "Registry");
  let ready = 0;
  let changeRevision = Number.POSITIVE_INFINITY;
  let changeSentAt = 0;
  const latencies: number[] = [];
  let failures = 0;
  const rssBefore = rssBytesOf(pid);
  try {
    const streams = Math.ceil(opts.watchers / perStream);
    for (let i = 0; i < streams; i++) {
      if (i % STREAMS_PER_CONNECTION === 0) {
        // A distinct option gives each client its own connection rather than a shared one.
        clients.push(new Client(opts.node.info.grpc, grpc.credentials.createInsecure(), { "grpc.cairn_bench_connection": i, "grpc.max_receive_message_length": 64 << 20 }));
      }
      const client = clients[clients.length - 1] as unknown as { Watch(): grpc.ClientDuplexStream<object, Buffer> };
      const call = client.Watch();
      const watchesHere = Math.min(perStream, opts.watchers - i * perStream);
      const seenChange = new Set<number>();
      for (let w = 1; w <= watchesHere; w++) {
        // From just before the setup registration: each watch's first event is that one, which says it is open.
        call.write({ create_request: { watch_id: w, services: [opts.service], since_revision: setupRevision - 1 } });
      }
      call.on("data", (m: Buffer) => {
        const { kind, revision, watchId } = summary(m);
        if (kind !== KIND_EVENTS) return;
        if (revision === setupRevision) ready++;
        else if (revision >= changeRevision && !seenChange.has(watchId)) {
          seenChange.add(watchId);
          latencies.push(performance.now() - changeSentAt);
        }
      });
      call.on("error", (err: grpc.ServiceError) => {
        if (err.code !== grpc.status.CANCELLED) failures++;
      });
      calls.push(call);
      if ((i * perStream) % OPEN_BATCH > ((i + 1) * perStream) % OPEN_BATCH || perStream >= OPEN_BATCH) await new Promise((r) => setTimeout(r, 20));
    }
    const settleDeadline = Date.now() + SETTLE_TIMEOUT_MS;
    while (ready < opts.watchers && Date.now() < settleDeadline) {
      if (failures > 0) throw new Error(`${failures} watch streams failed while opening`);
      await new Promise((r) => setTimeout(r, 50));
    }
    if (ready < opts.watchers) throw new Error(`only ${ready} of ${opts.watchers} watch streams opened within ${SETTLE_TIMEOUT_MS} ms`);
    // Let the node's allocations settle before its memory is read.
    await new Promise((r) => setTimeout(r, 1000));
    const rssParked = rssBytesOf(pid);
    changeSentAt = performance.now();
    const pending = registerOnce(opts.writer, opts.service, `${opts.service}-change`, 2);
    changeRevision = await pending;
    const changeDeadline = Date.now() + CHANGE_TIMEOUT_MS;
    while (latencies.length < opts.watchers && Date.now() < changeDeadline) await new Promise((r) => setTimeout(r, 10));
    return {
      kind: `cairn gRPC watch (${perStream} per stream)`,
      watchers: opts.watchers,
      ...timings(latencies),
      missed: opts.watchers - latencies.length,
      rssGrowthBytes: rssParked - rssBefore,
    };
  } finally {
    for (const c of calls) c.cancel();
    for (const c of clients) c.close();
  }
}

async function main(): Promise<void> {
  const watchers = Number(process.argv[2] ?? "10000");
  const watchesPerStream = Number(process.argv[3] ?? String(WATCHES_PER_STREAM_DEFAULT));
  const cluster = await ProcessCluster.start(3);
  try {
    const leader = await cluster.agreedLeader();
    const follower = cluster.nodes.find((n) => n !== leader);
    if (follower === undefined) throw new Error("no follower");
    const result = await measureGrpcWatchers({ node: follower, writer: leader, watchers, service: "bench", watchesPerStream });
    process.stdout.write(`${describeFanout(result)}\n`);
  } finally {
    await cluster.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  });
}
