// An etcd cluster of real processes on loopback, the peer the benchmarks measure Cairn against:
// Debian's etcd-server (`/usr/bin/etcd`, 3.4), fsync on (its default), a fresh data dir per
// cluster, killed and removed on any exit path (bench/support/processes.ts).

import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { freePort, waitFor } from "../../test/support/cluster.js";
import { removeTempDir, spawnTracked, tempDir, tracked } from "./processes.js";

const HOST = "127.0.0.1";
const READY_TIMEOUT_MS = 30_000;
/** The tail of the members' stderr kept for a failure message. */
const STDERR_KEPT_CHARS = 4000;

interface Member {
  readonly clientUrl: string;
  readonly process: ChildProcess;
}

export class EtcdCluster {
  private readonly members: Member[] = [];
  readonly clientUrls: string[] = [];
  private stderr = "";
  private readonly root = tempDir("cairn-bench-etcd-");
  /** Kills the members and removes their data; safe to call more than once. */
  readonly close = tracked(() => this.stop());

  static async start(size: number): Promise<EtcdCluster> {
    const c = new EtcdCluster();
    try {
      await c.launch(size);
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  private async launch(size: number): Promise<void> {
    const ports: { name: string; client: number; peer: number }[] = [];
    for (let i = 1; i <= size; i++) ports.push({ name: `e${i}`, client: await freePort(), peer: await freePort() });
    const initial = ports.map((m) => `${m.name}=http://${HOST}:${m.peer}`).join(",");
    const token = `bench-${process.pid}-${Date.now()}`;
    for (const m of ports) {
      const client = `http://${HOST}:${m.client}`;
      const peer = `http://${HOST}:${m.peer}`;
      const proc = spawnTracked("etcd", [
        "--name", m.name, "--data-dir", join(this.root, m.name),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", token,
        "--logger", "zap", "--log-level", "error",
      ]);
      proc.stderr?.on("data", (b: Buffer) => { this.stderr = (this.stderr + b.toString()).slice(-STDERR_KEPT_CHARS); });
      this.members.push({ clientUrl: client, process: proc });
      this.clientUrls.push(client);
    }
    await waitFor(async () => {
      const healthy = await Promise.all(this.clientUrls.map((u) => fetch(`${u}/health`).then(async (r) => ((await r.json()) as { health?: string }).health === "true", () => false)));
      return healthy.every(Boolean) ? true : undefined;
    }, READY_TIMEOUT_MS, () => `etcd did not become healthy: ${this.stderr}`);
  }

  /** The member that leads, from its own status: /v3/maintenance/status names the leader's id. */
  async leaderUrl(): Promise<string> {
    for (const u of this.clientUrls) {
      const s = await (await fetch(`${u}/v3/maintenance/status`, { method: "POST", body: "{}" })).json() as { header?: { member_id?: string }; leader?: string };
      if (s.header?.member_id !== undefined && s.header.member_id === s.leader) return u;
    }
    throw new Error("no etcd member reports itself as leader");
  }

  /** The process id of the member serving `clientUrl`, to read its memory. */
  pidOf(clientUrl: string): number {
    const pid = this.members.find((m) => m.clientUrl === clientUrl)?.process.pid;
    if (pid === undefined) throw new Error(`no running etcd member serves ${clientUrl}: give one of ${this.clientUrls.join(", ")}`);
    return pid;
  }

  /** Keys under `prefix`, counted by the cluster (a linearizable range, count only). */
  async countKeys(prefix: string): Promise<number> {
    const b64 = (x: string): string => Buffer.from(x).toString("base64");
    const res = await fetch(`${this.clientUrls[0]}/v3/kv/range`, { method: "POST", body: JSON.stringify({ key: b64(prefix), range_end: b64(prefixRangeEnd(prefix)), count_only: true }) });
    return Number(((await res.json()) as { count?: string }).count ?? 0);
  }

  private async stop(): Promise<void> {
    await Promise.all(this.members.map(({ process: p }) => p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => {
      p.on("exit", () => resolve());
      p.kill("SIGKILL");
    })));
    removeTempDir(this.root);
  }
}

/** The first line of `etcd --version`, e.g. "etcd Version: 3.4.23"; fails with the fix when etcd is missing. */
export function installedEtcdVersion(): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const p = spawnTracked("etcd", ["--version"]);
    let out = "";
    p.stdout?.on("data", (b: Buffer) => { out += b.toString(); });
    p.on("error", () => reject(new Error("etcd is not installed: apt-get install -y etcd-server")));
    p.on("close", () => resolve(out.split("\n")[0] ?? "etcd"));
  });
}

/** The end of etcd's key range for `prefix` (exclusive): the prefix with its last character incremented. */
export function prefixRangeEnd(prefix: string): string {
  if (prefix === "") throw new RangeError("an empty prefix has no range end here: etcd spells 'every key' as range_end \"\\0\"");
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}
