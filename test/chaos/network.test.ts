import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { type Server, type Socket, connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, describe, test } from "node:test";
import { LinkProxy } from "../../chaos/net/link_proxy.js";
import { cleanupStale, probeNetns } from "../../chaos/net/netns.js";
import { type ChaosNetwork, NETWORK_KIND_ENV, createNetwork } from "../../chaos/net/network.js";
import { ProxyNetwork } from "../../chaos/net/proxy.js";
import { type ClusterView, waitFor } from "../support/cluster.js";
import { testPeerTlsFlags } from "../support/peer_tls.js";

const execFileAsync = promisify(execFile);
const netnsProbe = await probeNetns();
/** Why the netns tests are skipped here, or false when they run. */
const netnsSkip = netnsProbe.ok ? false : `netns mode needs root and ip netns: ${netnsProbe.reason}`;
const mainPath = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

/** How long a cut link is watched to prove nothing crosses it. */
const SILENCE_MS = 400;
/** Bound on waiting for something that should happen promptly. */
const PROMPT_MS = 5_000;

/** Everything a test opened, closed in reverse even when it fails. */
class Cleanup {
  private readonly steps: (() => Promise<void> | void)[] = [];
  add(step: () => Promise<void> | void): void {
    this.steps.push(step);
  }
  async run(): Promise<void> {
    for (const step of this.steps.reverse()) await step();
    this.steps.length = 0;
  }
}

/** A stand-in for a node's peer port: echoes what it receives and keeps a copy. */
async function echoServer(host: string, port: number): Promise<{ server: Server; port: number; received: () => string; close: () => Promise<void> }> {
  let received = "";
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString();
      socket.write(chunk);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return {
    server,
    port: typeof address === "object" && address !== null ? address.port : port,
    received: () => received,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A client connection that collects what comes back. */
async function dial(host: string, port: number): Promise<{ socket: Socket; echoed: () => string }> {
  let echoed = "";
  const socket = connect({ host, port });
  socket.on("data", (chunk: Buffer) => { echoed += chunk.toString(); });
  socket.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return { socket, echoed: () => echoed };
}

async function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGKILL");
  await exited;
}

async function until(condition: () => boolean, what: string, timeoutMs = PROMPT_MS): Promise<void> {
  await waitFor(() => Promise.resolve(condition() ? true : undefined), timeoutMs, () => what);
}

/** Watches for SILENCE_MS and fails if `condition` ever holds. */
async function never(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + SILENCE_MS;
  while (Date.now() < deadline) {
    assert.equal(condition(), false, what);
    await new Promise((r) => setTimeout(r, 20));
  }
}

void describe("LinkProxy", () => {
  const cleanup = new Cleanup();
  after(() => cleanup.run());

  async function proxied(): Promise<{ proxy: LinkProxy; echo: Awaited<ReturnType<typeof echoServer>> }> {
    const echo = await echoServer("127.0.0.1", 0);
    cleanup.add(() => echo.close());
    const proxy = await LinkProxy.start({ listenHost: "127.0.0.1", listenPort: 0, targetHost: "127.0.0.1", targetPort: echo.port, targetId: "b", dialerOf: () => "a", seed: 7 });
    cleanup.add(() => proxy.close());
    return { proxy, echo };
  }

  void test("forwards bytes both ways, in order", async () => {
    const { proxy } = await proxied();
    const client = await dial("127.0.0.1", proxy.port);
    cleanup.add(() => { client.socket.destroy(); });
    const text = "0123456789".repeat(10_000);
    client.socket.write(text);
    await until(() => client.echoed().length === text.length, "the echo of 100 kB");
    assert.equal(client.echoed(), text);
  });

  void test("a degraded direction delivers after its delay, and a lost chunk waits out a retransmission", async () => {
    const { proxy } = await proxied();
    const client = await dial("127.0.0.1", proxy.port);
    cleanup.add(() => { client.socket.destroy(); });
    const roundTripMs = async (text: string): Promise<number> => {
      const before = client.echoed().length;
      const startedMs = performance.now();
      client.socket.write(text);
      await until(() => client.echoed().length === before + text.length, `the echo of ${text}`);
      return performance.now() - startedMs;
    };
    assert.ok(await roundTripMs("fast") < 100, "an undegraded link is fast");
    proxy.degrade("a", "b", { delayMs: 150, jitterMs: 0, lossPercent: 0 });
    proxy.degrade("b", "a", { delayMs: 100, jitterMs: 0, lossPercent: 0 });
    const slowMs = await roundTripMs("slow");
    assert.ok(slowMs >= 245 && slowMs < 1_000, `both directions delayed (150 + 100 ms): took ${slowMs.toFixed(0)} ms`);
    proxy.heal();
    proxy.degrade("a", "b", { delayMs: 0, jitterMs: 0, lossPercent: 100 });
    const lossyMs = await roundTripMs("lost");
    assert.ok(lossyMs >= 195, `a lost chunk stalls a retransmission timeout: took ${lossyMs.toFixed(0)} ms`);
    proxy.heal();
    assert.ok(await roundTripMs("healed") < 100, "heal lifts the fault");
  });

  void test("a cut stalls existing and new connections without resetting them; heal delivers what was held", async () => {
    const { proxy, echo } = await proxied();
    const before = await dial("127.0.0.1", proxy.port);
    cleanup.add(() => { before.socket.destroy(); });
    before.socket.write("ping");
    await until(() => before.echoed() === "ping", "the first echo");
    proxy.cut("a", "b");
    before.socket.write("-held");
    const during = await dial("127.0.0.1", proxy.port);
    cleanup.add(() => { during.socket.destroy(); });
    during.socket.write("new");
    await never(() => echo.received().includes("held") || echo.received().includes("new"), "nothing crosses a cut link");
    assert.equal(before.socket.destroyed, false, "the connection stays open, as in a partition");
    proxy.heal();
    await until(() => before.echoed() === "ping-held" && during.echoed() === "new", "the held bytes, after heal");
  });

  void test("a cut one way leaves the other way of the same connection flowing", async () => {
    const { proxy, echo } = await proxied();
    const client = await dial("127.0.0.1", proxy.port);
    cleanup.add(() => { client.socket.destroy(); });
    proxy.cut("b", "a");
    client.socket.write("one-way");
    await until(() => echo.received() === "one-way", "a's bytes reach b");
    await never(() => client.echoed() !== "", "b's answer does not reach a");
    proxy.heal();
    await until(() => client.echoed() === "one-way", "b's answer after heal");
  });
});

void describe("proxy network", () => {
  void test("node a dials b through its own link, which a one-way cut stalls and heal restores; close stops every proxy", async () => {
    const cleanup = new Cleanup();
    try {
      const network = await ProxyNetwork.create({ ids: ["a", "b"], seed: 1, reason: "test" });
      cleanup.add(() => network.close());
      const port = (address: string): number => Number(address.slice(address.lastIndexOf(":") + 1));
      const servers = new Map<string, Awaited<ReturnType<typeof echoServer>>>();
      for (const id of network.ids) {
        const server = await echoServer("127.0.0.1", port(network.addresses(id).listenPeer));
        cleanup.add(() => server.close());
        servers.set(id, server);
      }
      // What --peer-via tells each server: where to dial the other.
      const via = (from: string, to: string): number => {
        const args = network.serverArgs(from);
        assert.equal(args[0], "--peer-via");
        const entry = args[1].split(",").find((e) => e.startsWith(`${to}=`));
        assert.ok(entry !== undefined, `--peer-via of ${from} names ${to}`);
        return port(entry);
      };
      const aToB = await dial("127.0.0.1", via("a", "b"));
      const bToA = await dial("127.0.0.1", via("b", "a"));
      cleanup.add(() => { aToB.socket.destroy(); bToA.socket.destroy(); });
      await network.cut("a", "b");
      aToB.socket.write("from-a");
      bToA.socket.write("from-b");
      await until(() => servers.get("a")?.received() === "from-b", "b still reaches a");
      await never(() => servers.get("b")?.received() !== "" || bToA.echoed() !== "", "a reaches b on neither connection");
      await network.heal();
      await until(() => servers.get("b")?.received() === "from-a" && bToA.echoed() === "from-b", "a reaches b again after heal");
      await network.close();
      await assert.rejects(dial("127.0.0.1", via("a", "b")), /ECONNREFUSED/, "a closed network's proxies no longer listen");
    } finally {
      await cleanup.run();
    }
  });
});

/** What `ip` lists with this prefix: namespaces and links a network must not leave behind. */
async function leftovers(prefixes: { namespace: string; link: string }): Promise<string[]> {
  const namespaces = (await execFileAsync("ip", ["netns", "list"])).stdout.split("\n").map((l) => l.split(" ")[0]).filter((n) => n.startsWith(prefixes.namespace));
  const links = (await execFileAsync("ip", ["-o", "link", "show"])).stdout.split("\n").map((l) => (l.split(": ")[1] ?? "").split("@")[0]).filter((n) => n.startsWith(prefixes.link));
  return [...namespaces, ...links];
}

/** A tiny node program for inside a namespace: a TCP echo on 9000 and a UDP listener on 9001 that prints what arrives. */
const NODE_STAND_IN = `
const [host] = process.argv.slice(1);
require("net").createServer((s) => { s.on("error", () => {}); s.pipe(s); }).listen(9000, host);
const udp = require("dgram").createSocket("udp4");
udp.on("message", (m) => process.stdout.write("udp " + m + "\\n"));
udp.bind(9001, host, () => process.stdout.write("ready\\n"));
`;
/** Exits 0 once 9000 at argv[1] echoes, 1 when it cannot within 1 s. Also sends one UDP datagram to 9001. */
const NODE_CLIENT = `
const [host, word] = process.argv.slice(1);
require("dgram").createSocket("udp4").send(word, 9001, host, (e, n) => {});
const s = require("net").connect(9000, host);
s.on("connect", () => s.write(word));
s.on("data", () => process.exit(0));
s.on("error", (e) => { process.stdout.write(e.code); process.exit(1); });
setTimeout(() => { process.stdout.write("timeout"); process.exit(1); }, 1000);
`;

void describe("choosing a network", () => {
  void test(`${NETWORK_KIND_ENV} forces the kind over prefer, and the reason says so; a bad value or bad ids are refused`, async () => {
    const saved = process.env[NETWORK_KIND_ENV];
    try {
      process.env[NETWORK_KIND_ENV] = "proxy";
      const network = await createNetwork({ ids: ["a"], prefer: "netns", runTag: "choice" });
      await network.close();
      assert.equal(network.kind, "proxy");
      assert.equal(network.reason, `proxy: forced by ${NETWORK_KIND_ENV}=proxy`);
      process.env[NETWORK_KIND_ENV] = "docker";
      await assert.rejects(createNetwork({ ids: ["a"], runTag: "choice" }), /CAIRN_CHAOS_NETWORK must be "netns" or "proxy"/);
      delete process.env[NETWORK_KIND_ENV];
      await assert.rejects(createNetwork({ ids: ["a", "a"], runTag: "choice" }), /node id a is given twice/);
      await assert.rejects(createNetwork({ ids: ["-a"], runTag: "choice" }), /node id "-a" must be/);
    } finally {
      if (saved === undefined) delete process.env[NETWORK_KIND_ENV];
      else process.env[NETWORK_KIND_ENV] = saved;
    }
  });

  void test("auto picks netns where namespaces work, and proxy where they do not", async () => {
    const saved = process.env[NETWORK_KIND_ENV];
    delete process.env[NETWORK_KIND_ENV];
    try {
      const network = await createNetwork({ ids: ["a"], runTag: "auto" });
      await network.close();
      assert.equal(network.kind, netnsProbe.ok ? "netns" : "proxy");
      assert.match(network.reason, netnsProbe.ok ? /^netns: root and ip netns work; / : /^proxy: /);
    } finally {
      if (saved !== undefined) process.env[NETWORK_KIND_ENV] = saved;
    }
  });
});

void describe("netns network", () => {
  void test("cleanupStale removes what a dead runner left (its namespaces and links) and keeps a live one's", { skip: netnsSkip }, async () => {
    const dead = spawn("true");
    const deadPid = await new Promise<number>((resolve) => dead.once("exit", () => resolve(dead.pid ?? 0)));
    const run = async (args: string[]): Promise<void> => { await execFileAsync("ip", args); };
    const made = [
      { tag: "zzdead", pid: deadPid },
      { tag: "zzlive", pid: process.pid },
    ];
    try {
      for (const { tag, pid } of made) {
        await run(["link", "add", `cb${tag}`, "type", "bridge"]);
        await run(["link", "set", `cb${tag}`, "alias", `cairn-chaos pid=${pid} tag=${tag}`]);
        await run(["netns", "add", `cairn-${tag}-n1`]);
      }
      const removed = await cleanupStale();
      assert.deepEqual(removed.filter((n) => n.includes("zz")).sort(), ["cairn-zzdead-n1", "cbzzdead"]);
      assert.deepEqual(await leftovers({ namespace: "cairn-zz", link: "cbzz" }), ["cairn-zzlive-n1", "cbzzlive"]);
    } finally {
      for (const { tag } of made) {
        await execFileAsync("ip", ["netns", "del", `cairn-${tag}-n1`]).catch(() => undefined);
        await execFileAsync("ip", ["link", "del", `cb${tag}`]).catch(() => undefined);
      }
    }
  });

  void test("each node has its own namespace; a one-way cut drops A's packets to B only; heal restores; close removes everything", { skip: netnsSkip }, async () => {
    const cleanup = new Cleanup();
    try {
      const network = await createNetwork({ ids: ["a", "b", "c"], prefer: "netns", runTag: "network-test" });
      cleanup.add(() => network.close());
      assert.equal(network.kind, "netns");
      const namespace = network.wrap("a", "true", []).args[2];
      const prefixes = { namespace: namespace.slice(0, namespace.length - "a".length), link: `cb${namespace.split("-")[1]}` };
      const hostOf = (id: string): string => network.addresses(id).http.split(":")[0];
      const standIns = new Map<string, { child: ChildProcess; output: () => string }>();
      for (const id of ["a", "b"]) {
        const { command, args } = network.wrap(id, process.execPath, ["-e", NODE_STAND_IN, hostOf(id)]);
        const child = spawn(command, args, { stdio: ["ignore", "pipe", "inherit"] });
        cleanup.add(() => killAndWait(child));
        let output = "";
        child.stdout.on("data", (c: Buffer) => { output += c.toString(); });
        standIns.set(id, { child, output: () => output });
        await until(() => output.includes("ready"), `the stand-in node in ${id}'s namespace`);
      }
      const runnerReaches = async (id: string): Promise<void> => {
        const client = await dial(hostOf(id), 9000);
        client.socket.write("hi");
        await until(() => client.echoed() === "hi", `the runner's echo from ${id}`);
        client.socket.destroy();
      };
      const reaches = async (from: string, to: string, word: string): Promise<boolean> => {
        const { command, args } = network.wrap(from, process.execPath, ["-e", NODE_CLIENT, hostOf(to), word]);
        return execFileAsync(command, args).then(() => true, () => false);
      };
      await runnerReaches("a");
      await runnerReaches("b");
      assert.equal(await reaches("a", "b", "before"), true, "a reaches b");
      await network.cut("a", "b");
      await network.cut("a", "b");
      assert.equal(await reaches("a", "b", "a-during"), false, "a cannot reach b");
      // B's datagram still arrives at A (one way), though no TCP handshake can complete without A's answers.
      await reaches("b", "a", "b-during");
      await until(() => standIns.get("a")?.output().includes("udp b-during") === true, "b's datagram reaches a");
      assert.equal(standIns.get("b")?.output().includes("udp a-during"), false, "a's datagram never reached b");
      await runnerReaches("a");
      await runnerReaches("b");
      await network.heal();
      assert.equal(await reaches("a", "b", "after"), true, "a reaches b after heal");
      await cleanup.run();
      assert.deepEqual(await leftovers(prefixes), [], "close leaves no namespace or link");
    } finally {
      await cleanup.run();
    }
  });
});

interface ServerProcess {
  readonly id: string;
  readonly child: ChildProcess;
  output: string;
}

async function cluster(network: ChaosNetwork, id: string): Promise<ClusterView | undefined> {
  try {
    const res = await fetch(`http://${network.addresses(id).http}/v1/cluster`, { signal: AbortSignal.timeout(1_000) });
    return (await res.json()) as ClusterView;
  } catch {
    return undefined;
  }
}

/** Waits until every node in `among` names one leader, other than `not`, and returns its view. */
async function agreedLeader(network: ChaosNetwork, among: readonly string[], servers: readonly ServerProcess[], not = ""): Promise<ClusterView> {
  let last = "";
  return waitFor(async () => {
    const views = await Promise.all(among.map((id) => cluster(network, id)));
    last = JSON.stringify(views.map((v) => (v === undefined ? "down" : `${v.id}:${v.role}:${v.leader}:t${v.term}`)));
    const leaders = new Set(views.map((v) => v?.leader ?? ""));
    if (leaders.size !== 1 || leaders.has("") || leaders.has(not)) return undefined;
    return views.find((v) => v !== undefined);
  }, 15_000, () => `no agreed leader among ${among.join(", ")}: ${last}\n${servers.map((s) => `${s.id}: ${s.output.slice(-600)}`).join("\n")}`);
}

for (const kind of ["proxy", "netns"] as const) {
  void describe(`a real cluster on a ${kind} network`, () => {
    const skip = kind === "netns" ? netnsSkip : false;
    void test("three cairn servers elect a leader; isolating it makes the other two elect another", { skip, timeout: 30_000 }, async () => {
      const cleanup = new Cleanup();
      try {
        const network = await createNetwork({ ids: ["n1", "n2", "n3"], prefer: kind, runTag: `cluster-${kind}` });
        cleanup.add(() => network.close());
        const root = mkdtempSync(join(tmpdir(), "cairn-chaos-net-"));
        cleanup.add(() => rmSync(root, { recursive: true, force: true }));
        const initialCluster = network.ids.map((id) => `${id}=${network.addresses(id).advertisePeer}`).join(",");
        const servers: ServerProcess[] = network.ids.map((id) => {
          const a = network.addresses(id);
          const { command, args } = network.wrap(id, process.execPath, [
            mainPath, "server", "--id", id, "--data", join(root, id), "--http", a.listenHttp, "--grpc", a.listenGrpc,
            "--peer", a.listenPeer, "--advertise-peer", a.advertisePeer, "--initial-cluster", initialCluster, "--log-level", "warn",
            "--acl", "off",
            ...testPeerTlsFlags(id), ...network.serverArgs(id),
          ]);
          const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
          const server: ServerProcess = { id, child, output: "" };
          child.stdout?.on("data", (c: Buffer) => { server.output += c.toString(); });
          child.stderr?.on("data", (c: Buffer) => { server.output += c.toString(); });
          cleanup.add(() => killAndWait(child));
          return server;
        });
        const first = await agreedLeader(network, network.ids, servers);
        const leader = first.leader;
        const others = network.ids.filter((id) => id !== leader);
        for (const other of others) {
          await network.cut(leader, other);
          await network.cut(other, leader);
        }
        const second = await agreedLeader(network, others, servers, leader);
        assert.notEqual(second.leader, leader);
        assert.ok(second.term > first.term, `the new leader's term ${second.term} is past ${first.term}`);
        await network.heal();
      } finally {
        await cleanup.run();
      }
    });
  });
}
