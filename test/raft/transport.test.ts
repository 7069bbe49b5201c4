// The peer transport over real gRPC on loopback: framing and batching, cluster isolation,
// reconnects, bounded queues, chunked InstallSnapshot and request forwarding, and the
// PeerNetwork contract that a forward the link cannot carry is refused without being sent.

import { type TestContext, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type Server, type Socket, connect, createServer } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { pino, type Logger } from "pino";
import { PeerTransport } from "../../src/raft/transport/transport.js";
import type { PeerTransportLimits } from "../../src/raft/transport/limits.js";
import { CLUSTER_ID_METADATA_KEY, peerServiceDefinition } from "../../src/raft/transport/service.js";
import { ForwardError, type ForwardFailure, type PeerHandlers } from "../../src/raft/node/ports.js";
import { freePort } from "../support/cluster.js";
import { encodeMessages } from "../../src/raft/codec.js";
import type { AppendRequest, HeartbeatRequest, Message, NodeId, SnapshotRequest } from "../../src/raft/core/types.js";

const CLUSTER = "cluster-test";
const WAIT_MS_MAX = 4000;
/** A hung test fails instead of hanging the run. */
const T = { timeout: 8000 };

/** Fast retries so reconnect tests take milliseconds, not seconds. */
const TEST_LIMITS: PeerTransportLimits = { backoffMinMs: 10, backoffMaxMs: 100, connectTimeoutMs: 2000, shutdownGraceMs: 500 };

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

const DEBUG = 20;
const WARN = 40;

function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino({ level: "debug" }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { logger, lines };
}

interface NodeOptions {
  readonly clusterId?: string;
  readonly listen?: string;
  readonly limits?: PeerTransportLimits;
  readonly onForward?: (request: Uint8Array) => Promise<Uint8Array>;
}

class TestNode {
  readonly batches: Message[][] = [];
  readonly unreachable: NodeId[] = [];
  readonly snapshotStatuses: { peer: NodeId; ok: boolean }[] = [];
  readonly lines: LogLine[];
  readonly transport: PeerTransport;
  readonly handlers: PeerHandlers;
  port = 0;

  constructor(
    readonly id: NodeId,
    opts: NodeOptions,
  ) {
    const { logger, lines } = captureLogger();
    this.lines = lines;
    this.transport = new PeerTransport({
      selfId: id,
      clusterId: opts.clusterId ?? CLUSTER,
      listen: opts.listen ?? "127.0.0.1:0",
      logger,
      limits: { ...TEST_LIMITS, ...opts.limits },
      random: () => 0.5,
    });
    this.handlers = {
      onMessages: (messages) => void this.batches.push(messages),
      onUnreachable: (peer) => void this.unreachable.push(peer),
      onSnapshotStatus: (peer, ok) => void this.snapshotStatuses.push({ peer, ok }),
      onForward: opts.onForward ?? (() => Promise.reject(new Error(`node ${id} serves no forwards in this test`))),
    };
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get received(): Message[] {
    return this.batches.flat();
  }

  logged(msg: string, level = WARN): LogLine[] {
    return this.lines.filter((l) => l.level === level && l.msg === msg);
  }
}

/** Creates nodes (and proxies) for one test and stops every one of them afterwards, pass or fail. */
class Harness {
  private readonly nodes: TestNode[] = [];
  private readonly proxies: HeldProxy[] = [];

  async start(id: NodeId, opts: NodeOptions = {}): Promise<TestNode> {
    const node = this.create(id, opts);
    node.port = await node.transport.start(node.handlers);
    return node;
  }

  /** A node that is not listening: its peers see it as down. */
  create(id: NodeId, opts: NodeOptions = {}): TestNode {
    const node = new TestNode(id, opts);
    this.nodes.push(node);
    return node;
  }

  async proxy(target: TestNode): Promise<HeldProxy> {
    const proxy = await HeldProxy.listen(target.address);
    this.proxies.push(proxy);
    return proxy;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.nodes.map((n) => n.transport.stop()), ...this.proxies.map((p) => p.close())]);
  }
}

/**
 * A TCP proxy on loopback that accepts connections but holds them, passing no byte either way,
 * until release(): a peer that is slow to come up, for as long as a test needs, without a sleep.
 */
class HeldProxy {
  private readonly sockets = new Set<Socket>();
  private readonly held: Socket[] = [];
  private released = false;

  private constructor(
    private readonly server: Server,
    private readonly target: string,
    readonly address: string,
  ) {
    server.on("connection", (socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      socket.on("error", () => socket.destroy());
      if (this.released) this.pipe(socket);
      else this.held.push(socket);
    });
  }

  static async listen(target: string): Promise<HeldProxy> {
    const server = createServer({ pauseOnConnect: true });
    const port = await freePort();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    return new HeldProxy(server, target, `127.0.0.1:${port}`);
  }

  /** Connections accepted and not yet passed on. */
  get heldConnections(): number {
    return this.held.length;
  }

  release(): void {
    this.released = true;
    for (const socket of this.held.splice(0)) this.pipe(socket);
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private pipe(socket: Socket): void {
    const [host, port] = this.target.split(":");
    const upstream = connect(Number(port), host);
    this.sockets.add(upstream);
    upstream.on("close", () => {
      this.sockets.delete(upstream);
      socket.destroy();
    });
    upstream.on("error", () => upstream.destroy());
    socket.on("close", () => upstream.destroy());
    socket.pipe(upstream).pipe(socket);
    socket.resume();
  }
}

/**
 * Runs a test body with a fresh harness and stops its nodes afterwards, pass or fail. If the test
 * times out, its nodes are stopped too: that settles whatever it awaits (stopping cancels calls)
 * and frees the ports, so a hung transport fails the test instead of hanging the run.
 */
async function withHarness(t: TestContext, body: (h: Harness) => Promise<void>): Promise<void> {
  const h = new Harness();
  const onAbort = (): void => void h.stop();
  t.signal.addEventListener("abort", onAbort, { once: true });
  try {
    await body(h);
  } finally {
    t.signal.removeEventListener("abort", onAbort);
    await h.stop();
  }
}

/** Waits on the condition itself, polling, and fails with `what` if it does not hold in time. */
async function waitFor(condition: () => boolean, what: string, timeoutMs = WAIT_MS_MAX): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Awaits a forward that must fail with a ForwardError of `failure` whose message matches, and returns the error. */
async function forwardFails(forward: Promise<Uint8Array>, failure: ForwardFailure, message: RegExp): Promise<ForwardError> {
  const err = await forward.then(
    () => assert.fail(`the forward succeeded; expected it to fail with ${failure}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ForwardError, `expected a ForwardError, got ${String(err)}`);
  assert.equal(err.failure, failure, err.message);
  assert.match(err.message, message);
  return err;
}

function heartbeat(from: NodeId, to: NodeId, commit: number): HeartbeatRequest {
  return { type: "heartbeat", from, to, term: 3, commit, readContext: "" };
}

function append(from: NodeId, to: NodeId, index: number, payloadBytes: number): AppendRequest {
  const data = new Uint8Array(payloadBytes).fill(index % 251);
  return { type: "append", from, to, term: 3, prevLogIndex: index - 1, prevLogTerm: 3, commit: 0, entries: [{ index, term: 3, type: "normal", data }] };
}

function snapshot(from: NodeId, to: NodeId, dataBytes: number, index = 500): SnapshotRequest {
  const data = new Uint8Array(dataBytes);
  for (let i = 0; i < dataBytes; i++) data[i] = (i * 31 + 7) & 0xff;
  return { type: "snapshot", from, to, term: 3, snapshot: { metadata: { index, term: 3, conf: { voters: ["a", "b", "c"], learners: ["d"] } }, data } };
}

function commits(messages: readonly Message[]): number[] {
  return messages.map((m) => (m.type === "heartbeat" ? m.commit : -1));
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

void describe("peer stream", () => {
  void test("messages sent in one tick reach the peer in one frame, in order, and replies flow back", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a");
      const b = await h.start("b");
      a.transport.setPeer("b", b.address);
      b.transport.setPeer("a", a.address);

      // Once the stream is up, so the batch is the tick's doing and not a reconnect's.
      a.transport.send([heartbeat("a", "b", 9999)]);
      await waitFor(() => b.received.length === 1, "a first heartbeat at b");
      assert.equal(a.transport.peerStats("b")?.connected, true);
      b.batches.length = 0;

      for (let i = 0; i < 500; i++) a.transport.send([heartbeat("a", "b", i)]);
      await waitFor(() => b.received.length >= 500, "500 heartbeats at b");
      assert.deepEqual(commits(b.received), range(0, 500));
      assert.equal(b.batches.length, 1, "one tick of sends is one frame, delivered as one batch");
      assert.deepEqual(b.received[7], heartbeat("a", "b", 7));

      b.transport.send([{ type: "heartbeatResp", from: "b", to: "a", term: 3, readContext: "r1" }]);
      await waitFor(() => a.received.length === 1, "the reply at a");
      assert.deepEqual(a.received[0], { type: "heartbeatResp", from: "b", to: "a", term: 3, readContext: "r1" });
      assert.deepEqual(a.unreachable, []);
      assert.deepEqual(b.unreachable, []);
    }));

  void test("a batch larger than one frame is split into frames within frameBytesMax and arrives in order", T, (t) =>
    withHarness(t, async (h) => {
      const limits = { frameBytesMax: 4096, snapshotChunkBytes: 1024 };
      const a = await h.start("a", { limits });
      const b = await h.start("b", { limits });
      a.transport.setPeer("b", b.address);

      const sent = range(1, 601).map((i) => append("a", "b", i, 200));
      a.transport.send(sent);
      await waitFor(() => b.received.length >= sent.length, "600 appends at b");
      assert.deepEqual(b.received, sent);
      // Had any frame been larger than 4 KiB, gRPC would have refused it and its appends would
      // be missing above; so the batch must have been split into at least this many frames.
      const framesMin = Math.ceil(encodeMessages(sent).byteLength / limits.frameBytesMax);
      assert.ok(framesMin >= 30 && b.batches.length >= framesMin, `expected at least ${framesMin} frames, got ${b.batches.length}`);
      // That many frames at once is more than gRPC buffers: the sender waited for 'drain'.
      assert.ok(a.logged("peer stream is full; waiting for it to drain", DEBUG).length > 0, "the backpressure path was taken");
      assert.deepEqual(a.unreachable, []);
    }));

  void test("a peer that is down gets the queued messages once it comes up, after one unreachable report", T, (t) =>
    withHarness(t, async (h) => {
      const port = await freePort();
      const a = await h.start("a");
      a.transport.setPeer("b", `127.0.0.1:${port}`);
      a.transport.send([heartbeat("a", "b", 1), heartbeat("a", "b", 2)]);
      a.transport.send([heartbeat("a", "b", 3)]);

      await waitFor(() => a.unreachable.length > 0, "a to report b unreachable");
      assert.equal(a.transport.peerStats("b")?.connected, false);
      // Let a few more reconnect attempts fail: they belong to the same outage.
      await waitFor(() => a.lines.filter((l) => l.msg === "peer stream still failing").length >= 3, "three more failed attempts");

      const b = await h.start("b", { listen: `127.0.0.1:${port}` });
      await waitFor(() => b.received.length >= 3, "the queued heartbeats at b");
      a.transport.send([heartbeat("a", "b", 4)]);
      await waitFor(() => b.received.length >= 4, "a heartbeat sent after the reconnect");

      assert.deepEqual(commits(b.received), [1, 2, 3, 4]);
      assert.deepEqual(a.unreachable, ["b"], "one outage is reported once, not per attempt or message");
      assert.equal(a.logged("peer stream failed; reconnecting with backoff").length, 1, "one warning per outage");
      assert.equal(a.transport.peerStats("b")?.connected, true);
    }));

  void test("a peer that restarts breaks the stream, is reported unreachable, and is reconnected to", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a");
      const b1 = await h.start("b");
      const bAddress = b1.address;
      a.transport.setPeer("b", bAddress);
      a.transport.send([heartbeat("a", "b", 1)]);
      await waitFor(() => b1.received.length === 1, "the first heartbeat at b");

      await b1.transport.stop();
      await waitFor(() => a.unreachable.length === 1, "a to notice the broken stream");
      const b2 = await h.start("b", { listen: bAddress });
      await waitFor(() => a.transport.peerStats("b")?.connected === true, "a to reconnect");
      a.transport.send([heartbeat("a", "b", 2)]);
      await waitFor(() => b2.received.length === 1, "a heartbeat at the restarted b");
      assert.deepEqual(commits(b2.received), [2]);
    }));

  void test("a peer of another cluster is refused: nothing is delivered, it logs both ids, the sender reports unreachable", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a", { clusterId: "alpha" });
      const b = await h.start("b", { clusterId: "beta", onForward: (req) => Promise.resolve(req) });
      a.transport.setPeer("b", b.address);
      a.transport.send([heartbeat("a", "b", 1)]);

      const refusals = (): LogLine[] => b.logged("refused a peer call from another cluster");
      await waitFor(() => refusals().length >= 2 && a.unreachable.length > 0, "two refused attempts and an unreachable report");
      assert.deepEqual(b.batches, [], "nothing from another cluster reaches the node");
      assert.equal(refusals()[0]?.["clusterId"], "beta");
      assert.equal(refusals()[0]?.["senderClusterId"], "alpha");
      assert.deepEqual(a.unreachable, ["b"]);
      assert.equal(a.transport.peerStats("b")?.connected, false);

      // The refused stream took the link down, so a forward is not even sent; it says why.
      const err = await forwardFails(a.transport.forward("b", new Uint8Array([1]), 1000), "notConnected", /FAILED_PRECONDITION/);
      assert.match(err.message, /"beta"/);
      assert.match(err.message, /"alpha"/);
    }));

  void test("a Forward call from another cluster is refused with FAILED_PRECONDITION and never reaches the handler", T, (t) =>
    withHarness(t, async (h) => {
      let handled = 0;
      const b = await h.start("b", { onForward: (req) => (handled++, Promise.resolve(req)) });
      const client = new grpc.Client(b.address, grpc.credentials.createInsecure());
      try {
        const md = new grpc.Metadata();
        md.set(CLUSTER_ID_METADATA_KEY, "another-cluster");
        const status = await new Promise<grpc.ServiceError | null>((resolve) => {
          client.makeUnaryRequest<Buffer, Buffer>(peerServiceDefinition.Forward.path, (x) => x, (x) => x, Buffer.from([1]), md, {}, (err) => resolve(err));
        });
        assert.equal(status?.code, grpc.status.FAILED_PRECONDITION);
        assert.match(status.details, /cluster id mismatch/);
      } finally {
        client.close();
      }
      assert.equal(handled, 0);
    }));

  void test("an undecodable frame ends that stream with INVALID_ARGUMENT and the node keeps serving", T, (t) =>
    withHarness(t, async (h) => {
      const b = await h.start("b");
      const client = new grpc.Client(b.address, grpc.credentials.createInsecure());
      try {
        const md = new grpc.Metadata();
        md.set(CLUSTER_ID_METADATA_KEY, CLUSTER);
        const status = await new Promise<grpc.ServiceError | null>((resolve) => {
          const call = client.makeClientStreamRequest<Buffer, Buffer>(
            peerServiceDefinition.Stream.path,
            (x) => x,
            (x) => x,
            md,
            {},
            (err) => resolve(err),
          );
          call.write(Buffer.from([0x05, 0xff, 0xff]));
        });
        assert.equal(status?.code, grpc.status.INVALID_ARGUMENT);
        assert.match(status.details, /could not decode a frame/);
      } finally {
        client.close();
      }
      assert.equal(b.logged("malformed frame from a peer; ending its stream").length, 1);
      assert.deepEqual(b.batches, []);

      const a = await h.start("a");
      a.transport.setPeer("b", b.address);
      a.transport.send([heartbeat("a", "b", 9)]);
      await waitFor(() => b.received.length === 1, "a valid heartbeat after the bad frame");
    }));

  void test("a message addressed to another node is dropped and logged by the receiver", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a");
      const b = await h.start("b");
      // A stale address book: a believes node c lives where b does.
      a.transport.setPeer("c", b.address);
      a.transport.setPeer("b", b.address);
      a.transport.send([heartbeat("a", "c", 1), heartbeat("a", "b", 2)]);

      const dropped = (): LogLine[] => b.logged("dropped a message addressed to another node; check the peer addresses");
      await waitFor(() => dropped().length === 1 && b.received.length === 1, "the drop to be logged and b's own heartbeat delivered");
      assert.deepEqual(commits(b.received), [2]);
      assert.equal(dropped()[0]?.["to"], "c");
    }));

  void test("an unreachable peer's queue stays bounded: the oldest are dropped, the newest arrive when it returns", T, (t) =>
    withHarness(t, async (h) => {
      const port = await freePort();
      const a = await h.start("a", { limits: { queueMessagesMax: 8 } });
      a.transport.setPeer("b", `127.0.0.1:${port}`);
      for (let i = 0; i < 100; i++) a.transport.send([heartbeat("a", "b", i)]);
      await waitFor(() => a.unreachable.length > 0 && a.logged("peer stream failed; reconnecting with backoff").length === 1, "the outage to be noticed");
      for (let i = 100; i < 200; i++) a.transport.send([heartbeat("a", "b", i)]);

      const stats = a.transport.peerStats("b");
      assert.equal(stats?.queuedMessages, 8);
      assert.equal(stats.droppedMessages, 192);
      assert.deepEqual(a.unreachable, ["b"], "reported once for the outage, not once per dropped message");

      const b = await h.start("b", { listen: `127.0.0.1:${port}` });
      await waitFor(() => b.received.length >= 8, "the surviving messages at b");
      assert.deepEqual(commits(b.received), range(192, 200));
      assert.equal(a.transport.peerStats("b")?.queuedMessages, 0);
    }));

  void test("messages to a peer with no known address are dropped and reported, without throwing", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a");
      a.transport.send([heartbeat("a", "x", 1), heartbeat("a", "x", 2), snapshot("a", "x", 10)]);
      await waitFor(() => a.snapshotStatuses.length === 1, "the snapshot to be reported failed");
      assert.deepEqual(a.snapshotStatuses, [{ peer: "x", ok: false }]);
      assert.deepEqual(a.unreachable, ["x"]);
      assert.equal(a.logged("no address is known for this peer; dropping messages to it").length, 1);
    }));
});

void describe("InstallSnapshot", () => {
  // 64 KiB frames and 16 KiB chunks: a 300 KB snapshot cannot travel as one message.
  const limits = { frameBytesMax: 64 * 1024, snapshotChunkBytes: 16 * 1024 };

  void test("a snapshot larger than several chunks arrives intact and reports success", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a", { limits });
      const b = await h.start("b", { limits });
      a.transport.setPeer("b", b.address);
      const sent = snapshot("a", "b", 300_000);
      a.transport.send([sent, heartbeat("a", "b", 1)]);

      await waitFor(() => a.snapshotStatuses.length === 1, "the snapshot status");
      assert.deepEqual(a.snapshotStatuses, [{ peer: "b", ok: true }]);
      const got = b.received.filter((m) => m.type === "snapshot");
      assert.equal(got.length, 1);
      assert.deepEqual(got[0], sent);
      await waitFor(() => b.received.some((m) => m.type === "heartbeat"), "the heartbeat sent alongside");
    }));

  void test("a snapshot to a dead peer reports failure", T, (t) =>
    withHarness(t, async (h) => {
      const port = await freePort();
      const a = await h.start("a", { limits });
      a.transport.setPeer("b", `127.0.0.1:${port}`);
      a.transport.send([snapshot("a", "b", 100_000)]);
      await waitFor(() => a.snapshotStatuses.length === 1, "the snapshot status");
      assert.deepEqual(a.snapshotStatuses, [{ peer: "b", ok: false }]);
    }));

  void test("a snapshot over the receiver's snapshotBytesMax is refused and reports failure", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a", { limits });
      const b = await h.start("b", { limits: { ...limits, snapshotBytesMax: 100_000 } });
      a.transport.setPeer("b", b.address);
      a.transport.send([snapshot("a", "b", 300_000)]);
      await waitFor(() => a.snapshotStatuses.length === 1, "the snapshot status");
      assert.deepEqual(a.snapshotStatuses, [{ peer: "b", ok: false }]);
      assert.deepEqual(b.batches, []);
      assert.match(String(b.logged("refused a snapshot transfer")[0]?.["details"]), /exceeds snapshotBytesMax/);
    }));

  void test("one snapshot transfer per peer at a time; the next may start once it finishes", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a", { limits });
      const b = await h.start("b", { limits });
      a.transport.setPeer("b", b.address);
      a.transport.send([snapshot("a", "b", 200_000, 500), snapshot("a", "b", 200_000, 600)]);
      assert.equal(a.transport.peerStats("b")?.snapshotInFlight, true);
      assert.equal(a.logged("a snapshot transfer to this peer is already in flight; dropped the newer snapshot").length, 1);

      await waitFor(() => a.snapshotStatuses.length === 1, "the first transfer's status");
      assert.equal(a.transport.peerStats("b")?.snapshotInFlight, false);
      a.transport.send([snapshot("a", "b", 1000, 700)]);
      await waitFor(() => a.snapshotStatuses.length === 2, "the third transfer's status");

      const indexes = b.received.flatMap((m) => (m.type === "snapshot" ? [m.snapshot.metadata.index] : []));
      assert.deepEqual(indexes, [500, 700]);
      assert.deepEqual(a.snapshotStatuses, [{ peer: "b", ok: true }, { peer: "b", ok: true }]);
    }));
});

void describe("Forward", () => {
  void test("forward() returns the leader's reply bytes", T, (t) =>
    withHarness(t, async (h) => {
      const b = await h.start("b", { onForward: (req) => Promise.resolve(Uint8Array.from([...req].reverse())) });
      const a = await h.start("a");
      a.transport.setPeer("b", b.address);
      const reply = await a.transport.forward("b", Uint8Array.from([1, 2, 3, 4]), 2000);
      assert.deepEqual(reply, Uint8Array.from([4, 3, 2, 1]));
    }));

  void test("forward() rejects with the remote handler's error message", T, (t) =>
    withHarness(t, async (h) => {
      const b = await h.start("b", { onForward: () => Promise.reject(new Error("node b is no longer the leader; try node c")) });
      const a = await h.start("a");
      a.transport.setPeer("b", b.address);
      const err = await forwardFails(a.transport.forward("b", new Uint8Array([1]), 2000), "remote", /node b is no longer the leader; try node c/);
      assert.equal(err.peer, "b");
    }));

  void test("forward() times out with a clear message when the leader does not answer", T, (t) =>
    withHarness(t, async (h) => {
      const b = await h.start("b", { onForward: () => new Promise<Uint8Array>(() => undefined) });
      const a = await h.start("a");
      a.transport.setPeer("b", b.address);
      const startedAt = Date.now();
      await forwardFails(a.transport.forward("b", new Uint8Array([1]), 150), "timeout", /timed out after 150 ms/);
      const elapsedMs = Date.now() - startedAt;
      assert.ok(elapsedMs >= 140 && elapsedMs < 2000, `timed out after ${elapsedMs} ms`);
    }));

  void test("forward() to an unknown peer rejects at once with unknownPeer", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a");
      const err = await forwardFails(a.transport.forward("zz", new Uint8Array([1]), 1000), "unknownPeer", /not a known peer/);
      assert.equal(err.neverDelivered, true);
    }));

  void test("forward() to a peer whose link is down rejects at once with notConnected, and the peer's handler never runs", T, (t) =>
    withHarness(t, async (h) => {
      const handled: number[] = [];
      const onForward = (req: Uint8Array): Promise<Uint8Array> => (handled.push(req[0]), Promise.resolve(req));
      const b1 = await h.start("b", { onForward });
      // A long backoff holds the link down for a while after b1 goes, with b2 already listening.
      const a = await h.start("a", { limits: { backoffMinMs: 1000, backoffMaxMs: 1000 } });
      a.transport.setPeer("b", b1.address);
      await a.transport.forward("b", Uint8Array.of(1), 2000);

      await b1.transport.stop();
      await waitFor(() => a.unreachable.length === 1, "a to see b's stream fail");
      await h.start("b", { listen: b1.address, onForward });
      const startedAt = Date.now();
      const err = await forwardFails(a.transport.forward("b", Uint8Array.of(2), 3000), "notConnected", /the link to it is down \(UNAVAILABLE: .*\), so nothing was sent/);
      assert.equal(err.neverDelivered, true);
      assert.equal(err.peer, "b");
      const elapsedMs = Date.now() - startedAt;
      assert.ok(elapsedMs < 500, `rejected after ${elapsedMs} ms; expected at once, not at the 3000 ms timeout`);

      // Once the link is back, forwards go again, and the one refused above never arrived.
      await waitFor(() => a.transport.peerStats("b")?.connected === true, "a to reconnect after its backoff");
      await a.transport.forward("b", Uint8Array.of(3), 2000);
      assert.deepEqual(handled, [1, 3]);
    }));

  void test("forward() to a new peer that is not listening rejects with notConnected when the first connection fails, before its timeout", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a");
      a.transport.setPeer("b", `127.0.0.1:${await freePort()}`);
      const startedAt = Date.now();
      const err = await forwardFails(a.transport.forward("b", new Uint8Array([1]), 3000), "notConnected", /UNAVAILABLE/);
      assert.equal(err.neverDelivered, true);
      const elapsedMs = Date.now() - startedAt;
      assert.ok(elapsedMs < 1500, `rejected after ${elapsedMs} ms; expected once the connection failed, not at the timeout`);
    }));

  void test("forward() to a freshly added peer waits while its link connects, and succeeds once the peer accepts", T, (t) =>
    withHarness(t, async (h) => {
      const b = await h.start("b", { onForward: (req) => Promise.resolve(Uint8Array.from([...req].reverse())) });
      const slow = await h.proxy(b);
      const a = await h.start("a");
      a.transport.setPeer("b", slow.address);
      let settled = false;
      const reply = a.transport.forward("b", Uint8Array.from([1, 2, 3]), 3000).finally(() => (settled = true));

      await waitFor(() => slow.heldConnections > 0, "a's link to reach the held proxy");
      assert.equal(a.transport.peerStats("b")?.connected, false, "the link is still connecting");
      assert.equal(settled, false, "the forward waits for the link instead of failing");
      slow.release();
      assert.deepEqual(await reply, Uint8Array.from([3, 2, 1]));
      assert.deepEqual(a.unreachable, []);
    }));

  void test("a forward waiting for a connecting link is refused with notConnected once its timeout passes, having sent nothing", T, (t) =>
    withHarness(t, async (h) => {
      let handled = 0;
      const b = await h.start("b", { onForward: (req) => (handled++, Promise.resolve(req)) });
      const slow = await h.proxy(b);
      const a = await h.start("a");
      a.transport.setPeer("b", slow.address);
      const err = await forwardFails(a.transport.forward("b", new Uint8Array([1]), 150), "notConnected", /did not connect within the forward's 150 ms, so nothing was sent/);
      assert.equal(err.neverDelivered, true);
      // Had it been sent, it would wait in the proxy with the stream and arrive on release.
      slow.release();
      await waitFor(() => a.transport.peerStats("b")?.connected === true, "the link to connect");
      await a.transport.forward("b", new Uint8Array([2]), 2000);
      assert.equal(handled, 1);
    }));

  void test("forwards waiting for a connecting link count towards forwardsInFlightMax", T, (t) =>
    withHarness(t, async (h) => {
      const b = await h.start("b", { onForward: (req) => Promise.resolve(req) });
      const slow = await h.proxy(b);
      const a = await h.start("a", { limits: { forwardsInFlightMax: 1 } });
      a.transport.setPeer("b", slow.address);
      const first = a.transport.forward("b", new Uint8Array([1]), 3000);
      const err = await forwardFails(a.transport.forward("b", new Uint8Array([2]), 3000), "overloaded", /forwardsInFlightMax/);
      assert.equal(err.neverDelivered, true);
      slow.release();
      assert.deepEqual(await first, new Uint8Array([1]));
    }));

  void test("a forward cut off in flight by removing the peer is a transport failure: the peer may have acted on it", T, (t) =>
    withHarness(t, async (h) => {
      let handled = 0;
      const b = await h.start("b", { onForward: () => (handled++, new Promise<Uint8Array>(() => undefined)) });
      const a = await h.start("a");
      a.transport.setPeer("b", b.address);
      const inFlight = a.transport.forward("b", new Uint8Array([1]), 3000);
      await waitFor(() => handled === 1, "b's handler to be running the forward");
      a.transport.removePeer("b");
      const err = await forwardFails(inFlight, "transport", /cut off in flight \(peer b was removed\); the peer may have acted on it/);
      assert.equal(err.neverDelivered, false);
    }));

  void test("a forward waiting for a connecting link is refused with stopped when the peer is removed", T, (t) =>
    withHarness(t, async (h) => {
      const b = await h.start("b", { onForward: (req) => Promise.resolve(req) });
      const slow = await h.proxy(b);
      const a = await h.start("a");
      a.transport.setPeer("b", slow.address);
      const waiting = a.transport.forward("b", new Uint8Array([1]), 3000);
      a.transport.removePeer("b");
      const err = await forwardFails(waiting, "stopped", /cancelled before it was sent: peer b was removed/);
      assert.equal(err.neverDelivered, true);
    }));
});

void describe("lifecycle", () => {
  void test("stop() ends inbound and outbound streams promptly, and later sends are ignored", T, (t) =>
    withHarness(t, async (h) => {
      const a = await h.start("a");
      const b = await h.start("b");
      a.transport.setPeer("b", b.address);
      b.transport.setPeer("a", a.address);
      a.transport.send([heartbeat("a", "b", 1)]);
      await waitFor(() => b.received.length === 1, "the heartbeat at b");

      const startedAt = Date.now();
      await b.transport.stop();
      assert.ok(Date.now() - startedAt < 400, "stop() does not wait out the grace period for a peer's stream");
      b.transport.send([heartbeat("b", "a", 1)]);
      await b.transport.stop();
      await assert.rejects(b.transport.forward("a", new Uint8Array([1]), 100), /stopped/);
      assert.deepEqual(b.unreachable, [], "no callback after stop()");
    }));


  void test("limits are validated when the transport is created", T, () => {
    const { logger } = captureLogger();
    const make = (limits: PeerTransportLimits): PeerTransport =>
      new PeerTransport({ selfId: "a", clusterId: CLUSTER, listen: "127.0.0.1:0", logger, limits });
    assert.throws(() => make({ queueMessagesMax: 0 }), /queueMessagesMax must be a positive integer/);
    assert.throws(() => make({ frameBytesMax: 1024, snapshotChunkBytes: 4096 }), /snapshotChunkBytes/);
    assert.throws(() => make({ backoffMinMs: 500, backoffMaxMs: 100 }), /backoffMinMs/);
  });
});
