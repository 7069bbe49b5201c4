// The cluster under test: real `cairn server` processes, each run as its node on the chaos
// network (inside its own namespace where there are namespaces), each with its own data
// directory that survives kill -9, and optionally its own fake clock. The nemesis acts on it
// through these methods; the checkers read the nodes' logs and what the monitor saw.

import { type ChildProcess, spawn } from "node:child_process";
import { type WriteStream, createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { errorMessage } from "../src/common/errors.js";
import { type PeerCredentialPaths, ensurePeerCredentials, peerCredentialFlags } from "../src/tls/files.js";
import type { ClusterObservation, RoleChange } from "./history.js";
import type { ChaosNetwork, NodeAddresses } from "./net/network.js";
import type { NodeTarget } from "./workload/workload.js";

const mainPath = fileURLToPath(new URL("../src/cli/main.js", import.meta.url));

/** libfaketime from Debian's `faketime`: a clock jump is a new offset written to the node's file. */
const LIBFAKETIME_PATH = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/** libfaketime reads the offset file again after this many seconds: a jump lands within a second. */
const FAKETIME_CACHE_SECONDS = 1;

/** A request to a node that takes longer than this is a node that is down, paused or cut off. */
const PROBE_TIMEOUT_MS = 1_000;
const MONITOR_INTERVAL_MS = 250;
/** How long a joining node may take to be a voter before the membership change is called failed. */
const PROMOTION_TIMEOUT_MS = 30_000;
/** How long a membership change whose answer was lost may take to show in a member's configuration. */
const MEMBERSHIP_SETTLE_MS = 10_000;

export interface ChaosClusterOptions {
  readonly network: ChaosNetwork;
  /** The founding members; the network's other ids are spares for membership changes. */
  readonly founders: readonly string[];
  /** The run's folder: node data under data/, node logs under nodes/. */
  readonly dir: string;
  /** Extra flags for every server. */
  readonly serverArgs: readonly string[];
  /** Extra environment for every server (e.g. CAIRN_PLANTED_BUG). */
  readonly env: Readonly<Record<string, string>>;
  /** Run every node under libfaketime, so the clock nemesis can move its wall clock. */
  readonly fakeClocks: boolean;
}

type NodeState = "running" | "paused" | "stopped";

class ChaosNode {
  process: ChildProcess | undefined;
  state: NodeState = "stopped";
  exit: Promise<void> = Promise.resolve();
  private log: WriteStream | undefined;

  constructor(readonly id: string, readonly addresses: NodeAddresses, readonly dataDir: string,
    readonly logPath: string, readonly clockPath: string) {}

  start(command: { command: string; args: string[] }, env: NodeJS.ProcessEnv): void {
    if (this.log === undefined) this.log = createWriteStream(this.logPath, { flags: "a" });
    const log = this.log;
    const child = spawn(command.command, command.args, { stdio: ["ignore", "pipe", "pipe"], env });
    child.stdout?.pipe(log, { end: false });
    child.stderr?.pipe(log, { end: false });
    this.exit = new Promise((resolve) => child.once("exit", () => resolve()));
    child.once("exit", () => { if (this.process === child) this.state = "stopped"; });
    this.process = child;
    this.state = "running";
  }

  signal(sig: NodeJS.Signals): void {
    if (this.process !== undefined && this.process.exitCode === null && this.process.signalCode === null) this.process.kill(sig);
  }

  closeLog(): Promise<void> {
    const log = this.log;
    this.log = undefined;
    return new Promise((resolve) => { if (log === undefined) resolve(); else log.end(() => resolve()); });
  }
}

interface ClusterAnswer {
  readonly role: string;
  readonly leader: string;
  readonly term: number;
  readonly commitIndex: number;
  readonly members: readonly { readonly id: string; readonly role: string }[];
}

export class ChaosCluster {
  readonly observations: ClusterObservation[] = [];
  private readonly nodes = new Map<string, ChaosNode>();
  /** Current members, as the runner believes: founders, plus joined spares, minus removed ones. */
  private readonly memberIds: string[];
  private monitorTimer: NodeJS.Timeout | undefined;

  private constructor(private readonly opts: ChaosClusterOptions, private readonly now: () => number) {
    this.memberIds = [...opts.founders];
    mkdirSync(join(opts.dir, "nodes"), { recursive: true });
    mkdirSync(join(opts.dir, "data"), { recursive: true });
    for (const id of opts.network.ids) {
      this.nodes.set(id, new ChaosNode(id, opts.network.addresses(id), join(opts.dir, "data", id),
        join(opts.dir, "nodes", `${id}.log`), join(opts.dir, "nodes", `${id}.faketime`)));
    }
  }

  /** Starts the founders; resolves once they agree on a leader. `now` is the history's clock. */
  static async start(opts: ChaosClusterOptions, now: () => number): Promise<ChaosCluster> {
    const cluster = new ChaosCluster(opts, now);
    const initial = opts.founders.map((id) => `${id}=${cluster.node(id).addresses.advertisePeer}`).join(",");
    for (const id of opts.founders) cluster.launch(id, ["--initial-cluster", initial]);
    await cluster.agreedLeader(30_000);
    return cluster;
  }

  /** The members clients may talk to (down ones included: a client finds out as a user would). */
  targets(): NodeTarget[] {
    return this.memberIds.map((id) => {
      const a = this.node(id).addresses;
      return { id, http: a.http, grpc: a.grpc };
    });
  }

  members(): readonly string[] {
    return this.memberIds;
  }

  spares(): string[] {
    return this.opts.network.ids.filter((id) => !this.memberIds.includes(id) && !existsSync(this.node(id).dataDir));
  }

  /** kill -9: nothing is flushed, nothing handed over. */
  async kill9(id: string): Promise<void> {
    const n = this.node(id);
    n.signal("SIGCONT");
    n.signal("SIGKILL");
    await n.exit;
  }

  /** Restarts a stopped member from its data directory. */
  restart(id: string): void {
    if (this.node(id).state !== "stopped") return;
    this.launch(id, []);
  }

  pause(id: string): void {
    const n = this.node(id);
    if (n.state !== "running") return;
    n.signal("SIGSTOP");
    n.state = "paused";
  }

  resume(id: string): void {
    const n = this.node(id);
    if (n.state !== "paused") return;
    n.signal("SIGCONT");
    n.state = "running";
  }

  /** Moves node id's wall clock to `offsetSeconds` from true time (monotonic time is left alone). */
  setClockOffset(id: string, offsetSeconds: number): void {
    if (!this.opts.fakeClocks) throw new Error("the cluster was started without fake clocks");
    writeFileSync(this.node(id).clockPath, `${offsetSeconds >= 0 ? "+" : ""}${offsetSeconds}\n`);
  }

  /**
   * Adds a spare: it asks a live member to add it as a learner (--join) and is promoted to voter
   * once caught up. Resolves when it is a voter.
   */
  async addMember(id: string): Promise<void> {
    const via = await this.liveMember();
    this.launch(id, ["--join", `http://${this.node(via).addresses.http}`]);
    this.memberIds.push(id);
    const deadline = performance.now() + PROMOTION_TIMEOUT_MS;
    while (performance.now() < deadline) {
      const view = await this.ask(via).catch(() => undefined);
      if (view?.members.some((m) => m.id === id && m.role !== "learner") === true) return;
      await sleep(200);
    }
    throw new Error(`${id} did not become a voter within ${PROMOTION_TIMEOUT_MS} ms`);
  }

  /** Removes a member through Raft, then stops its process. Its data directory stays, so its id is never reused. */
  async removeMember(id: string): Promise<void> {
    const via = await this.liveMember(id);
    const res = await fetch(`http://${this.node(via).addresses.http}/v1/cluster/members/${id}`, {
      method: "DELETE", signal: AbortSignal.timeout(15_000),
    }).catch((err: unknown) => new Error(errorMessage(err)));
    if (res instanceof Error || (!res.ok && res.status !== 404)) {
      // The answer may say the outcome is unknown: ask the cluster whether the change committed.
      const why = res instanceof Error ? res.message : `${res.status} ${await res.text()}`;
      if (await this.stillMember(id, via)) throw new Error(`removing ${id} via ${via}: ${why}; it is still a member`);
    }
    this.memberIds.splice(this.memberIds.indexOf(id), 1);
    await this.kill9(id);
  }

  /** Whether `id` is in the configuration `via` has applied, once `via` answers (bounded). */
  private async stillMember(id: string, via: string): Promise<boolean> {
    const deadline = performance.now() + MEMBERSHIP_SETTLE_MS;
    while (performance.now() < deadline) {
      const view = await this.ask(via).catch(() => undefined);
      if (view !== undefined && !view.members.some((m) => m.id === id)) return false;
      await sleep(200);
    }
    return true;
  }

  /** The leader every live member names, within the timeout. */
  async agreedLeader(timeoutMs: number): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    let last = "";
    while (performance.now() < deadline) {
      const live = this.memberIds.filter((id) => this.node(id).state === "running");
      const views = await Promise.all(live.map((id) => this.ask(id).catch(() => undefined)));
      const leaders = new Set(views.map((v) => v?.leader ?? ""));
      last = live.map((id, i) => `${id}:${views[i]?.role ?? "down"}:${views[i]?.leader ?? ""}`).join(" ");
      const [leader] = [...leaders];
      if (leaders.size === 1 && leader !== "" && this.memberIds.includes(leader)) return leader;
      await sleep(100);
    }
    throw new Error(`no agreed leader within ${timeoutMs} ms: ${last}`);
  }

  /** The leader some live member names right now, if any. */
  async currentLeader(): Promise<string | undefined> {
    for (const id of this.memberIds) {
      if (this.node(id).state !== "running") continue;
      const view = await this.ask(id).catch(() => undefined);
      if (view !== undefined && view.leader !== "") return view.leader;
    }
    return undefined;
  }

  /** Polls every member's own view of the cluster, for the leaders checker and the timeline. */
  startMonitor(): void {
    const poll = async (): Promise<void> => {
      await Promise.all(this.memberIds.map(async (id) => {
        if (this.node(id).state !== "running") return;
        const view = await this.ask(id).catch(() => undefined);
        if (view === undefined) return;
        this.observations.push({ atMs: this.now(), node: id, role: view.role, term: view.term, leader: view.leader, commitIndex: view.commitIndex });
      }));
      if (this.monitorTimer !== undefined) this.monitorTimer = setTimeout(() => void poll(), MONITOR_INTERVAL_MS);
    };
    this.monitorTimer = setTimeout(() => void poll(), MONITOR_INTERVAL_MS);
  }

  stopMonitor(): void {
    if (this.monitorTimer !== undefined) clearTimeout(this.monitorTimer);
    this.monitorTimer = undefined;
  }

  /** Every role change the nodes logged ("raft role changed"), from their log files. */
  roleChanges(): RoleChange[] {
    const changes: RoleChange[] = [];
    for (const n of this.nodes.values()) {
      if (!existsSync(n.logPath)) continue;
      for (const line of readFileSync(n.logPath, "utf8").split("\n")) {
        if (!line.includes("raft role changed")) continue;
        const parsed = parseRoleChange(line, n.id);
        if (parsed !== undefined) changes.push(parsed);
      }
    }
    return changes;
  }

  /** Stops every process (paused ones too) and closes their logs; the network is the caller's. */
  async close(): Promise<void> {
    this.stopMonitor();
    await Promise.all([...this.nodes.keys()].map((id) => this.kill9(id)));
    await Promise.all([...this.nodes.values()].map((n) => n.closeLog()));
  }

  private launch(id: string, extra: readonly string[]): void {
    const n = this.node(id);
    const a = n.addresses;
    const args = [mainPath, "server", "--id", id, "--data", n.dataDir, "--http", a.listenHttp, "--grpc", a.listenGrpc,
      "--peer", a.listenPeer, "--advertise-peer", a.advertisePeer, "--log-level", "info",
      // Peer mTLS as in production: one peer CA per run, under the run's folder.
      ...peerCredentialFlags(ensurePeerCredentials(join(this.opts.dir, "tls"), [id]).get(id) as PeerCredentialPaths),
      // The workload presents no tokens: chaos tests the replication, not ACLs (a later flag wins, so serverArgs may turn them on).
      "--acl", "off",
      ...this.opts.network.serverArgs(id), ...this.opts.serverArgs, ...extra];
    const env: NodeJS.ProcessEnv = { ...process.env, ...this.opts.env };
    if (this.opts.fakeClocks) {
      if (!existsSync(n.clockPath)) writeFileSync(n.clockPath, "+0\n");
      Object.assign(env, {
        LD_PRELOAD: LIBFAKETIME_PATH,
        FAKETIME_TIMESTAMP_FILE: n.clockPath,
        FAKETIME_CACHE_DURATION: String(FAKETIME_CACHE_SECONDS),
        // Timers run on the monotonic clock, which a wall-clock jump must not move.
        FAKETIME_DONT_FAKE_MONOTONIC: "1",
      });
    }
    n.start(this.opts.network.wrap(id, process.execPath, args), env);
  }

  private async liveMember(except?: string): Promise<string> {
    const leader = await this.currentLeader();
    if (leader !== undefined && leader !== except && this.node(leader).state === "running") return leader;
    const live = this.memberIds.find((id) => id !== except && this.node(id).state === "running");
    if (live === undefined) throw new Error("no live member to ask");
    return live;
  }

  private async ask(id: string): Promise<ClusterAnswer> {
    const res = await fetch(`http://${this.node(id).addresses.http}/v1/cluster`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    if (!res.ok) throw new Error(`${id}: /v1/cluster answered ${res.status}`);
    return (await res.json()) as ClusterAnswer;
  }

  private node(id: string): ChaosNode {
    const n = this.nodes.get(id);
    if (n === undefined) throw new Error(`no node ${id} on this network`);
    return n;
  }
}

function parseRoleChange(line: string, node: string): RoleChange | undefined {
  try {
    const record: unknown = JSON.parse(line);
    if (typeof record !== "object" || record === null) return undefined;
    const r = record as Record<string, unknown>;
    if (typeof r.role !== "string" || typeof r.term !== "number") return undefined;
    return { node, role: r.role, term: r.term, leader: typeof r.leader === "string" ? r.leader : "" };
  } catch (err) {
    // A line cut short by kill -9 is expected; anything else is worth a look, not a crash.
    if (!(err instanceof SyntaxError)) process.stderr.write(`chaos: reading ${node}'s log: ${errorMessage(err)}\n`);
    return undefined;
  }
}
