// One chaos run: a real cluster on a real (cuttable) network, a concurrent workload that records
// every operation, the nemesis injecting faults for the run's duration, then every fault healed,
// final reads on every node, and the checkers' verdicts on the whole history. Everything it made
// (namespaces, interfaces, processes) is removed at the end, also when the run fails.

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { errorMessage } from "../src/common/errors.js";
import { ChaosCluster } from "./cluster.js";
import { checkRun, summarize } from "./checkers/index.js";
import type { FaultRecord, RunHistory, RunSettings, Verdict } from "./history.js";
import { writeHistory } from "./history_file.js";
import { type NemesisName, type NemesisSchedule, Nemesis, nemesisScheduleDefaults } from "./nemesis.js";
import { createNetwork } from "./net/network.js";
import { renderTimeline } from "./report/timeline.js";
import { Recorder, Workload, type WorkloadOptions } from "./workload/workload.js";

/** The servers' --leader-wait: a write that meets an election waits this long for the next leader. */
const LEADER_WAIT_MS = 7_000;
/** Spare node ids for membership changes: the cluster grows by one and shrinks back, never reusing an id. */
const SPARE_NODES = 4;
/** After the last heal the workload runs this long against a healthy cluster before it stops. */
const RECOVERY_MS = 3_000;
const FINAL_READS_TIMEOUT_MS = 60_000;
const WATCHERS_SETTLE_TIMEOUT_MS = 30_000;
/** Healing one fault restarts or promotes a node at worst; past this the nemesis is stuck. */
const NEMESIS_STOP_TIMEOUT_MS = 90_000;
/** Stopping every process and removing the network; past this a run reports what it could not remove. */
const CLEANUP_TIMEOUT_MS = 30_000;

export const workloadDefaults: WorkloadOptions = {
  services: ["web", "api", "db"],
  writers: 6,
  linearizableReaders: 4,
  staleReaders: 2,
  heartbeatInstances: 4,
  ttlMs: 4_000,
  abandonedEvery: 15_000,
  watchers: { grpc: 2, sse: 2, xds: 1 },
  certClients: 1,
  // Past the leader wait, so a write held through an election is answered, not timed out here.
  opTimeoutMs: LEADER_WAIT_MS + 3_000,
  thinkMs: 20,
  seed: 1,
};

export interface ChaosOptions {
  /** How long the nemesis injects faults (a one-round schedule may end sooner), before the run heals and checks. */
  readonly durationMs: number;
  readonly nodes: number;
  readonly nemeses: readonly NemesisName[];
  readonly seed: number;
  readonly network: "auto" | "netns" | "proxy";
  /** The results folder for this run (created). */
  readonly dir: string;
  /** Test-only: a bug to plant in every server (CAIRN_PLANTED_BUG). */
  readonly plantedBug?: string;
  readonly workload?: Partial<WorkloadOptions>;
  /** Overrides of the nemesis's fault and gap lengths and of how often it aims at the leader. */
  readonly schedule?: Partial<NemesisSchedule>;
  readonly log: (line: string) => void;
}

export interface ChaosResult {
  readonly dir: string;
  readonly ops: number;
  readonly anomalies: number;
  readonly lost: number;
  readonly verdicts: readonly Verdict[];
  readonly faults: readonly FaultRecord[];
  /** Faults the nemesis could not inject or heal as planned (a join that timed out, say): reported, not anomalies. */
  readonly problems: readonly string[];
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosResult> {
  mkdirSync(opts.dir, { recursive: true });
  const founders = Array.from({ length: opts.nodes }, (_, i) => `n${i + 1}`);
  const spares = opts.nemeses.includes("membership") ? Array.from({ length: SPARE_NODES }, (_, i) => `n${opts.nodes + i + 1}`) : [];
  const network = await createNetwork({ ids: [...founders, ...spares], prefer: opts.network, runTag: `${process.pid % 10_000}` });
  opts.log(`chaos: network ${network.kind}: ${network.reason}`);
  const recorder = new Recorder();
  let cluster: ChaosCluster | undefined;
  let workload: Workload | undefined;
  const onSignal = (): void => { void cleanup().then(() => process.exit(130)); };
  const cleanup = async (): Promise<void> => {
    workload?.close();
    await within(CLEANUP_TIMEOUT_MS, "stopping the cluster", cluster?.close() ?? Promise.resolve())
      .catch((err: unknown) => opts.log(`chaos: stopping the cluster: ${errorMessage(err)}`));
    await within(CLEANUP_TIMEOUT_MS, "removing the network", network.close())
      .catch((err: unknown) => opts.log(`chaos: removing the network: ${errorMessage(err)}`));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const env: Record<string, string> = opts.plantedBug === undefined ? {} : { CAIRN_PLANTED_BUG: opts.plantedBug };
    cluster = await ChaosCluster.start({
      network, founders, dir: opts.dir, env,
      serverArgs: ["--leader-wait", `${LEADER_WAIT_MS}ms`],
      fakeClocks: opts.nemeses.includes("clock-jump"),
    }, () => recorder.now());
    const live = cluster;
    live.startMonitor();
    const workloadOptions: WorkloadOptions = { ...workloadDefaults, seed: opts.seed, ...opts.workload };
    const clients = new Workload(() => live.targets(), recorder, workloadOptions);
    workload = clients;
    const nemesis = new Nemesis(live, network, opts.nemeses, () => recorder.now(), opts.nodes, opts.seed, { ...nemesisScheduleDefaults, ...opts.schedule });
    clients.start();
    nemesis.start();
    const started = performance.now();
    const progress = setInterval(() => {
      const s = clients.stats();
      opts.log(`chaos: ${Math.round((performance.now() - started) / 1000)}s ${s.ops} ops (${s.failed} failed, ${s.unknown} unknown), ${nemesis.faults.length} faults`);
    }, 30_000);
    // A one-round schedule may end the fault phase before its duration; the history records how long it ran.
    const roundEnded = await sleepUnless(opts.durationMs, nemesis.roundDone);
    const faultPhaseMs = roundEnded ? Math.round(performance.now() - started) : opts.durationMs;
    clearInterval(progress);

    opts.log("chaos: healing every fault");
    await within(NEMESIS_STOP_TIMEOUT_MS, "stopping the nemesis", nemesis.stop());
    await nemesis.healEverything();
    opts.log("chaos: waiting for an agreed leader");
    await live.agreedLeader(60_000);
    await sleep(RECOVERY_MS);
    opts.log("chaos: stopping the workload");
    await clients.stop();
    opts.log("chaos: final reads");
    const finalReads = await clients.finalReads(FINAL_READS_TIMEOUT_MS);
    const finalRevision = Math.max(0, ...finalReads.map((r) => r.revision));
    opts.log(`chaos: waiting for the watchers to reach revision ${finalRevision}`);
    await clients.closeWatchers(finalRevision, WATCHERS_SETTLE_TIMEOUT_MS);
    live.stopMonitor();

    const settings: RunSettings = {
      nodes: opts.nodes, durationMs: faultPhaseMs, nemeses: opts.nemeses, leaderWaitMs: LEADER_WAIT_MS,
      ttlMs: workloadOptions.ttlMs, network: network.kind, seed: opts.seed,
    };
    const history: RunHistory = {
      settings, ops: recorder.ops, watches: clients.watchRecords(), faults: nemesis.faults,
      observations: live.observations, roleChanges: live.roleChanges(), finalReads,
      abandonedInstances: clients.abandonedInstances(),
    };
    await writeHistory(join(opts.dir, "history.jsonl"), history);
    const { anomalies, lost, verdicts } = await judge(opts.dir, history, nemesis.problems, opts.log);
    return { dir: opts.dir, ops: recorder.ops.length, anomalies, lost, verdicts, faults: nemesis.faults, problems: nemesis.problems };
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    opts.log("chaos: stopping the cluster and removing the network");
    await cleanup();
  }
}

/** Waits `ms`, or less if `early` settles first; says whether it did. */
async function sleepUnless(ms: number, early: Promise<void>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const elapsed = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), ms); });
  try {
    return await Promise.race([elapsed, early.then(() => true)]);
  } finally {
    clearTimeout(timer);
  }
}

/** `work`, or an error naming `what` once `ms` have passed: a stuck phase fails the run instead of hanging it. */
async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms); });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Checks a history, writes verdicts.json and timeline.html into `dir`, and logs each verdict. */
export async function judge(dir: string, history: RunHistory, problems: readonly string[], log: (line: string) => void):
  Promise<{ anomalies: number; lost: number; verdicts: Verdict[] }> {
  log("chaos: checking the history");
  const verdicts = await checkRun(history);
  const { anomalies, lost } = summarize(verdicts);
  writeFileSync(join(dir, "verdicts.json"), `${JSON.stringify({ settings: history.settings, problems, verdicts }, null, 2)}\n`);
  writeFileSync(join(dir, "timeline.html"), renderTimeline(history, verdicts));
  for (const v of verdicts) {
    log(`chaos: ${v.ok ? "ok  " : "FAIL"} ${v.checker}: ${v.anomalies.length} anomalies ${JSON.stringify(v.stats)}`);
    for (const a of v.anomalies.slice(0, 5)) log(`chaos:        ${a.message}`);
  }
  for (const p of problems) log(`chaos: nemesis problem: ${p}`);
  return { anomalies, lost, verdicts };
}
