// LevelLogStorage keeps the LogStorage contract on a real LevelDB. A restart closes the store and
// opens its directory again. A crash is real: a child process (test/support/crash_writer.ts)
// replays the crash history into a directory and is killed with SIGKILL once it has acknowledged a
// chosen number of steps, often with the next write in flight; the directory is then loaded here.
// A process kill loses nothing the kernel already holds, so these crashes test atomicity, order
// and recovery, not fsync; storage.test.ts checks which batches are synced.

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { LevelLogStorage } from "../../src/raft/storage/leveldb.js";
import type { HistorySpec } from "../support/storage_history.js";
import { makeScratch, removeScratch } from "../support/level_scratch.js";
import { type CrashOutcome, type StoreUnderContract, loadAfterCrash, logStorageContract } from "./storage_contract.js";

const writerPath = fileURLToPath(new URL("../support/crash_writer.js", import.meta.url));

/**
 * Steps acknowledged before each kill: before the first write, then spread over the history. The
 * writer runs on meanwhile, so a kill lands at or after its point, at a moment the scheduler picks.
 */
const KILL_POINTS = [0, 1, 2, 3, 5, 7, 10, 13, 16, 20, 24, 28, 32, 36];
/** Writers killed at once: each is a Node process, and the test should take a few seconds at most. */
const WRITERS_IN_PARALLEL = 4;
/** A writer that has not reached its kill point by then is stuck; its output goes in the failure. */
const WRITER_DEADLINE_MS = 20_000;

/** What the writer said, line by line (see crash_writer.ts). */
interface WriterProgress {
  loaded: boolean;
  begun: number;
  done: number;
}

function readProgress(progress: WriterProgress, line: string): void {
  const match = /^(begin|done) (\d+)$/.exec(line);
  if (line === "loaded") progress.loaded = true;
  else if (match?.[1] === "begin") progress.begun = Number(match[2]);
  else if (match?.[1] === "done") progress.done = Number(match[2]);
}

/** Resolves once the child has exited and its output is read to the end. */
function closed(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("close", () => resolve());
  });
}

/** Runs one writer into `dir`, kills it with SIGKILL once it has acknowledged `killAt` steps, and loads what it left. */
async function killWriter(dir: string, spec: HistorySpec, killAt: number): Promise<CrashOutcome> {
  const child = spawn(process.execPath, [writerPath, dir, JSON.stringify(spec)], { stdio: ["pipe", "pipe", "pipe"] });
  const ended = closed(child);
  const progress: WriterProgress = { loaded: false, begun: 0, done: 0 };
  let output = "";
  try {
    const acknowledged = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the crash writer did not acknowledge ${killAt} steps within ${WRITER_DEADLINE_MS} ms:\n${output}`)),
        WRITER_DEADLINE_MS);
      let partial = "";
      let killed = false;
      child.stdout?.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        const lines = (partial + chunk.toString()).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) {
          readProgress(progress, line);
          if (!killed && progress.loaded && progress.done >= killAt) {
            killed = child.kill("SIGKILL");
            clearTimeout(timer);
            resolve(progress.done);
          }
        }
      });
      child.stderr?.on("data", (chunk: Buffer) => { output += chunk.toString(); });
      child.once("error", reject);
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        if (!killed) reject(new Error(`the crash writer exited (${code ?? signal}) before acknowledging ${killAt} steps:\n${output}`));
      });
    });
    await ended;
    const inFlight = progress.begun > progress.done;
    return {
      label: `kill -9 after ${acknowledged} acknowledged steps${inFlight ? `, step ${progress.begun} in flight` : ""} (aimed at ${killAt})`,
      acknowledged,
      begunMax: progress.begun,
      inFlight,
      loaded: await loadAfterCrash(await LevelLogStorage.open(dir)),
    };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await ended;
  }
}

const level: StoreUnderContract<LevelLogStorage> = {
  name: "LevelLogStorage",
  harness: async () => {
    const scratch = await makeScratch();
    return {
      create: () => scratch.open(),
      reopen: async (store) => {
        await store.close();
        return scratch.open();
      },
      dispose: () => removeScratch(scratch),
    };
  },
  crashes: async (spec) => {
    const root = await mkdtemp(join(tmpdir(), "cairn-crash-"));
    try {
      const outcomes: CrashOutcome[] = [];
      for (let i = 0; i < KILL_POINTS.length; i += WRITERS_IN_PARALLEL) {
        const wave = KILL_POINTS.slice(i, i + WRITERS_IN_PARALLEL);
        // allSettled: every writer of the wave is dead before a failure leaves this loop and removes the directories.
        for (const result of await Promise.allSettled(wave.map((killAt) => killWriter(join(root, `kill-at-${killAt}`), spec, killAt)))) {
          if (result.status === "rejected") throw result.reason;
          outcomes.push(result.value);
        }
      }
      return outcomes;
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  },
};

logStorageContract(level);
