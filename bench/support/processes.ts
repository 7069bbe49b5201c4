// What a benchmark starts (child processes, temp dirs, Cairn clusters, anything with an async
// close), tracked so that every exit path kills and removes it: a normal end (`cleanup()`), a
// thrown error, and SIGINT or SIGTERM. The exit and signal hooks are installed when this module is
// first imported, so a benchmark that imports it needs no hooks of its own.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ProcessCluster } from "../../test/support/cluster.js";

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
const cairnClusters = new Set<ProcessCluster>();
const closers = new Set<() => Promise<void>>();

/** Registers an async close for the failure path; the returned function closes once and forgets it. */
export function tracked(close: () => Promise<void>): () => Promise<void> {
  closers.add(close);
  return async () => {
    closers.delete(close);
    await close();
  };
}

/** A child process with piped output, killed on any exit path while it runs. */
export function spawnTracked(cmd: string, args: string[]): ChildProcess {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** A new temp dir, removed on any exit path (or earlier, by `removeTempDir`). */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/** Removes `dir` now, and from the list removed at exit. */
export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** A fresh Cairn cluster of real processes with an agreed leader, and the function that closes it. */
export async function startCairnCluster(size: number, args: string[], readyTimeoutMs: number): Promise<{ cluster: ProcessCluster; close: () => Promise<void> }> {
  const cluster = await ProcessCluster.start(size, args);
  cairnClusters.add(cluster);
  const close = tracked(async () => {
    await cluster.close();
    cairnClusters.delete(cluster);
  });
  try {
    await cluster.agreedLeader(readyTimeoutMs);
  } catch (err) {
    await close();
    throw err;
  }
  return { cluster, close };
}

/** Closes everything still open: the tracked closes first, then a kill of whatever is left. */
export async function cleanup(): Promise<void> {
  await Promise.allSettled([...closers].map((c) => c()));
  closers.clear();
  killAllSync();
}

/** Synchronous, so it also runs from process.on("exit"). */
function killAllSync(): void {
  for (const c of children) c.kill("SIGKILL");
  for (const cluster of cairnClusters) {
    for (const n of cluster.nodes) n.process?.kill("SIGKILL");
    rmSync(cluster.root, { recursive: true, force: true });
  }
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

process.on("exit", killAllSync);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    process.stderr.write(`\n${signal}: cleaning up\n`);
    void cleanup().finally(() => process.exit(130));
  });
}
