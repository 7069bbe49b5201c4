// Real cairn server processes on loopback ports, for integration tests, fault injection and
// benchmarks. Every process started here is killed when the cluster is closed, even on failure.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { driverDefaults } from "../../src/raft/node/settings.js";
import { testPeerTlsFlags } from "./peer_tls.js";

const mainPath = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

/** The server's default election timeout: what failover is measured against. */
export const ELECTION_TIMEOUT_MS = driverDefaults.tickMs * driverDefaults.electionTimeoutTicks;

/** Write and signing rate limits far above any load one machine makes: for benchmarks, which measure the node, not its limits. */
export const UNLIMITED_RATE_ARGS: readonly string[] = ["--rate-limit-write-token", "100000000,100000000", "--rate-limit-write-address", "100000000,100000000",
  "--rate-limit-sign-token", "100000000,100000000", "--rate-limit-sign-address", "100000000,100000000"];

/**
 * Ports handed out below Linux's ephemeral range (32768-60999 by default): a port the kernel
 * picked with listen(0) can be taken by any outgoing connection's local end before the server
 * that was meant to listen on it starts, which failed a node's start now and then.
 */
const TEST_PORT_MIN = 20_000;
const TEST_PORT_SPAN = 12_000;
const FREE_PORT_ATTEMPTS_MAX = 50;
/**
 * node --test runs test files in parallel processes. Each draws from its own slice of the range,
 * chosen by its pid, so one cannot take a port another has handed out and briefly released (a
 * node restarting on its own ports, say); within a process no port is handed out twice.
 */
const PORT_SLICES = 12;
const PORT_SLICE_SPAN = TEST_PORT_SPAN / PORT_SLICES;
const portSliceMin = TEST_PORT_MIN + (process.pid % PORT_SLICES) * PORT_SLICE_SPAN;
const portsHandedOut = new Set<number>();

/** A loopback port that was free a moment ago, outside the ephemeral range, never handed out before here. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < FREE_PORT_ATTEMPTS_MAX; attempt++) {
    const port = portSliceMin + Math.floor(Math.random() * PORT_SLICE_SPAN);
    if (portsHandedOut.has(port)) continue;
    if (await canListen(port)) {
      portsHandedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port in ${portSliceMin}-${portSliceMin + PORT_SLICE_SPAN - 1} after ${FREE_PORT_ATTEMPTS_MAX} tries`);
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

export interface NodeInfo {
  readonly id: string;
  readonly http: string;
  readonly grpc: string;
  readonly peer: string;
  readonly dataDir: string;
}

export interface ClusterView {
  readonly id: string;
  readonly role: string;
  readonly leader: string;
  readonly term: number;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly members: { id: string; peerAddress: string; role: string; match: number | null }[];
}

export class ProcessNode {
  process: ChildProcess | undefined;
  stdout = "";
  stderr = "";
  exit: Promise<number | null> = Promise.resolve(null);
  /** The ACL token this harness presents on its own calls (cluster(), put(), get()), once a test has one. */
  token: string | undefined;

  constructor(readonly info: NodeInfo, private readonly args: string[]) {}

  start(extraArgs: string[] = []): void {
    this.stdout = "";
    this.stderr = "";
    // CAIRN_NODE_ARGS passes flags to each server's node, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile a run.
    const nodeArgs = (process.env.CAIRN_NODE_ARGS ?? "").split(" ").filter((a) => a !== "");
    const child = spawn(process.execPath, [...nodeArgs, mainPath, "server", ...this.args, ...extraArgs], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.on("data", (c: Buffer) => { this.stdout += c.toString(); });
    child.stderr.on("data", (c: Buffer) => { this.stderr += c.toString(); });
    this.exit = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
    this.process = child;
  }

  /** For a failure message: how the node ended, or that it runs, and the tail of its output. */
  lastWords(): string {
    const state = this.running ? "running" : `exited ${this.process?.exitCode ?? this.process?.signalCode ?? "?"}`;
    const tail = (text: string): string => text.trimEnd().split("\n").slice(-5).join("\n    ");
    return `\n  ${this.info.id} (${state}, http ${this.info.http}):\n    ${tail(this.stderr)}\n    ${tail(this.stdout)}`;
  }

  get running(): boolean {
    return this.process !== undefined && this.process.exitCode === null && this.process.signalCode === null;
  }

  /** kill -9: no chance to flush or hand over anything. */
  async kill9(): Promise<void> {
    if (!this.running) return;
    this.process?.kill("SIGKILL");
    await this.exit;
  }

  async stop(): Promise<number | null> {
    if (!this.running) return this.process?.exitCode ?? null;
    this.process?.kill("SIGTERM");
    return this.exit;
  }

  url(path: string): string {
    return `http://${this.info.http}${path}`;
  }

  /** The token header for the harness's own calls, if it holds a token. */
  headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.token === undefined ? extra : { ...extra, "x-consul-token": this.token };
  }

  async cluster(): Promise<ClusterView> {
    const res = await fetch(this.url("/v1/cluster"), { headers: this.headers() });
    return (await res.json()) as ClusterView;
  }

  async put(key: string, value: string): Promise<Response> {
    return fetch(this.url(`/v1/kv/${encodeURIComponent(key)}`), {
      method: "PUT",
      headers: this.headers({ "content-type": "application/json" }),
      body: JSON.stringify({ value }),
    });
  }

  async get(key: string, stale = false): Promise<Response> {
    return fetch(this.url(`/v1/kv/${encodeURIComponent(key)}${stale ? "?stale" : ""}`), { headers: this.headers() });
  }
}

export interface ProcessClusterOptions {
  /**
   * Start with ACLs on (default deny), as `cairn server` does by default; then call bootstrapAcl().
   * Off by default here, so tests of everything else need no tokens.
   */
  readonly acl?: boolean;
  /** Flags for one founding member only, after the shared ones (a later flag wins). */
  readonly nodeArgs?: (id: string) => readonly string[];
}

export class ProcessCluster {
  readonly nodes: ProcessNode[] = [];
  readonly root: string;
  /** The management token's SecretID, once bootstrapAcl() has made it. */
  managementToken: string | undefined;

  private constructor(private readonly acl: boolean) {
    this.root = mkdtempSync(join(tmpdir(), "cairn-test-"));
  }

  /** Starts `size` founding members with small timeouts. */
  static async start(size: number, extraArgs: string[] = [], options: ProcessClusterOptions = {}): Promise<ProcessCluster> {
    const cluster = new ProcessCluster(options.acl === true);
    const infos: NodeInfo[] = [];
    for (let i = 1; i <= size; i++) infos.push(await cluster.allocate(`n${i}`));
    const initial = infos.map((n) => `${n.id}=${n.peer}`).join(",");
    for (const info of infos) {
      const node = new ProcessNode(info, [...baseArgs(info, cluster.acl), "--initial-cluster", initial, ...extraArgs, ...(options.nodeArgs?.(info.id) ?? [])]);
      cluster.nodes.push(node);
      node.start();
    }
    return cluster;
  }

  async allocate(id: string): Promise<NodeInfo> {
    return {
      id,
      http: `127.0.0.1:${await freePort()}`,
      grpc: `127.0.0.1:${await freePort()}`,
      peer: `127.0.0.1:${await freePort()}`,
      dataDir: join(this.root, id),
    };
  }

  /** Starts a node that joins through `via`'s HTTP address. */
  async join(id: string, via: ProcessNode, extraArgs: string[] = []): Promise<ProcessNode> {
    const info = await this.allocate(id);
    const token = this.managementToken === undefined ? [] : ["--token", this.managementToken];
    const node = new ProcessNode(info, [...baseArgs(info, this.acl), "--join", `http://${via.info.http}`, ...token, ...extraArgs]);
    node.token = this.managementToken;
    this.nodes.push(node);
    node.start();
    return node;
  }

  node(id: string): ProcessNode {
    const n = this.nodes.find((x) => x.info.id === id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  running(): ProcessNode[] {
    return this.nodes.filter((n) => n.running);
  }

  /** Waits until every running node names the same leader, and returns it. */
  async agreedLeader(timeoutMs = 15_000, among: ProcessNode[] = this.running()): Promise<ProcessNode> {
    let last = "";
    const found = await waitFor(async () => {
      const views = await Promise.all(among.map((n) => n.cluster().catch(() => undefined)));
      const leaders = new Set(views.map((v) => v?.leader ?? ""));
      last = JSON.stringify(views.map((v) => v === undefined ? "down" : `${v.id}:${v.role}:${v.leader}:t${v.term}`));
      if (leaders.size !== 1 || leaders.has("")) return undefined;
      const leaderId = [...leaders][0];
      return this.nodes.find((n) => n.info.id === leaderId && n.running);
    }, timeoutMs, () => `no agreed leader: ${last}${among.map((n) => n.lastWords()).join("")}`);
    return found;
  }

  /**
   * With ACLs on: waits for a leader (through `via`, whose /v1/status/leader is open), bootstraps
   * the ACLs once, and hands the management token to every node's own calls. Returns its SecretID.
   */
  async bootstrapAcl(via: ProcessNode = this.nodes[0]): Promise<string> {
    const secret = await waitFor(async () => {
      const res = await fetch(via.url("/v1/acl/bootstrap"), { method: "PUT" }).catch(() => undefined);
      if (res === undefined) return undefined;
      if (res.status === 200) return ((await res.json()) as { SecretID: string }).SecretID;
      if (res.status === 403) throw new Error(`ACLs were bootstrapped already: ${await res.text()}`);
      return undefined;
    }, 15_000, () => `no bootstrap through ${via.info.id}${via.lastWords()}`);
    this.managementToken = secret;
    for (const n of this.nodes) n.token = secret;
    return secret;
  }

  async close(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.kill9()));
    rmSync(this.root, { recursive: true, force: true });
  }
}

function baseArgs(info: NodeInfo, acl: boolean): string[] {
  // Tests and benchmarks hold thousands of HTTP connections from loopback (parked blocking queries,
  // watchers), far past the per-client cap a server has by default; a test of the cap sets its own.
  // Tests register and read far faster from one loopback address than the default rate limits
  // allow (100,000 instances in seconds). A later flag wins, so a test of a cap or a limit, or of
  // ACLs (--acl on), sets its own in its extra arguments.
  return ["--id", info.id, "--data", info.dataDir, "--http", info.http, "--grpc", info.grpc, "--peer", info.peer, "--log-level", "info",
    "--acl", acl ? "on" : "off", "--http-max-conns-per-client", "0", ...UNLIMITED_RATE_ARGS, ...testPeerTlsFlags(info.id)];
}

/** Polls `probe` until it returns a value, or fails after `timeoutMs` with `describe()`. */
export async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number, describe: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${describe()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
