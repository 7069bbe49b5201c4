// The chaos workload against a real three-node cluster, with one follower killed (kill -9) and
// restarted, then another paused (SIGSTOP) past the watchers' stall timeout: every kind of operation is recorded with ok outcomes, the final reads agree
// on every node, and every watcher converges on the final state.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Recorder, Workload, type NodeTarget } from "../../chaos/workload/workload.js";
import type { Operation, RegisterOp, WatchMessage } from "../../chaos/history.js";
import { ResumingWatcher } from "../../chaos/workload/watcher.js";
import { grpcTransport, sseTransport } from "../../chaos/workload/watch_transports.js";
import { SeededRandom } from "../../src/raft/core/random.js";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

const RUN_MS = 10_000;
const KILL_AT_MS = 2000;
const RESTART_AFTER_MS = 1500;
/** Longer than the watchers' stall timeout, so a watcher on the paused node must move. */
const PAUSE_MS = 4000;
const SETTLE_TIMEOUT_MS = 15_000;
const SERVICES = ["svc-a", "svc-b", "svc-c"];

/** Registers a check-less instance of "resume-svc" through `node`; resolves with its revision. */
async function registerVia(node: ProcessNode, id: string): Promise<number> {
  const res = await fetch(node.url("/v1/registry/instances"), {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id, name: "resume-svc", address: "10.200.0.1", port: 9000 }),
  });
  assert.equal(res.status, 200, `registering ${id}: ${await res.clone().text()}`);
  return ((await res.json()) as { index: number }).index;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

void describe("chaos workload on a real cluster", () => {
  let cluster: ProcessCluster;
  let workload: Workload | undefined;

  before(async () => {
    cluster = await ProcessCluster.start(3);
    await cluster.agreedLeader();
  });

  after(async () => {
    workload?.close();
    await cluster.close();
  });

  void test("every kind of operation is recorded, final reads agree, and every watcher converges, across a follower's kill -9 and restart", async () => {
    const targets: NodeTarget[] = cluster.nodes.map((n) => ({ id: n.info.id, http: n.info.http, grpc: n.info.grpc }));
    const recorder = new Recorder();
    workload = new Workload(() => targets, recorder, {
      services: SERVICES, writers: 3, linearizableReaders: 2, staleReaders: 1, heartbeatInstances: 2, ttlMs: 2000, abandonedEvery: 1500,
      watchers: { grpc: 2, sse: 2, xds: 1 }, certClients: 1, opTimeoutMs: 2000, thinkMs: 20, seed: 11,
    });
    workload.start();
    const watchersOn = (node: string): number => (workload?.watchRecords() ?? [])
      .filter((w) => w.messages.findLast((m) => m.kind === "connected")?.kind === "connected" &&
        (w.messages.findLast((m) => m.kind === "connected") as { node: string }).node === node).length;
    await sleep(KILL_AT_MS);
    // The faults go to the followers most watchers are on, so the watchers' resume is exercised.
    const leader = await cluster.agreedLeader();
    const [killed, paused] = cluster.nodes.filter((n) => n !== leader).sort((a, b) => watchersOn(b.info.id) - watchersOn(a.info.id));
    await killed.kill9();
    await sleep(RESTART_AFTER_MS);
    killed.start();
    await cluster.agreedLeader();
    const pausedProcess = paused.process;
    assert.ok(pausedProcess !== undefined);
    pausedProcess.kill("SIGSTOP");
    try {
      await sleep(PAUSE_MS);
    } finally {
      pausedProcess.kill("SIGCONT");
    }
    await sleep(Math.max(0, RUN_MS - KILL_AT_MS - RESTART_AFTER_MS - PAUSE_MS));
    await workload.stop();
    await cluster.agreedLeader();

    const finals = await workload.finalReads(SETTLE_TIMEOUT_MS);
    const finalRevision = Math.max(...finals.map((f) => f.revision));
    await workload.closeWatchers(finalRevision, SETTLE_TIMEOUT_MS);
    const ops = recorder.ops;
    const watches = workload.watchRecords();

    const tally = new Map<string, Record<Operation["outcome"], number>>();
    for (const op of ops) {
      const key = op.kind === "read" ? `read-${op.consistency}` : op.kind;
      const t = tally.get(key) ?? { ok: 0, fail: 0, unknown: 0 };
      t[op.outcome]++;
      tally.set(key, t);
    }
    console.log(`workload: ${JSON.stringify(workload.stats())}; by kind ${JSON.stringify(Object.fromEntries(tally))}`);
    const reasons = new Map<string, number>();
    for (const op of ops) {
      if (op.outcome === "ok") continue;
      const reason = `${op.outcome} ${op.kind} ${op.status ?? ""} ${(op.error ?? "").replace(/^n\d+: /, "").slice(0, 80)}`;
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    }
    console.log(`not ok:\n${[...reasons].map(([reason, n]) => `  ${n} x ${reason}`).join("\n")}`);
    console.log(`watchers: ${watches.map((w) => `${w.watcher} ${w.messages.length} msgs, ${w.messages.filter((m) => m.kind === "disconnected").length} disconnects`).join("; ")}`);
    const breaks = watches.flatMap((w) => w.messages.flatMap((m) => (m.kind === "disconnected" ? [`  ${w.watcher} at ${Math.round(m.atMs)} ms: ${m.error}`] : [])));
    console.log(`watch breaks:\n${breaks.join("\n")}`);
    for (const kind of ["register", "deregister", "read-linearizable", "read-stale", "heartbeat", "health", "cert"]) {
      assert.ok((tally.get(kind)?.ok ?? 0) > 0, `no ok ${kind} operation was recorded: ${JSON.stringify(Object.fromEntries(tally))}`);
    }
    const cert = ops.find((o) => o.kind === "cert" && o.outcome === "ok");
    assert.ok(cert?.kind === "cert" && cert.chainPem?.includes("BEGIN CERTIFICATE") === true && cert.bundlePem?.includes("BEGIN CERTIFICATE") === true);
    assert.ok(workload.abandonedInstances().length > 0, "abandoned instances were registered");
    for (const instance of workload.abandonedInstances()) {
      assert.ok(ops.some((o) => o.kind === "health" && o.instance === instance && o.outcome === "ok"), `a final health read of ${instance}`);
    }

    // Final reads: every node lists the same instances of each service at the same revision.
    // Every writer service, and the TTL instances' service, on every node.
    assert.equal(finals.length, (SERVICES.length + 1) * targets.length);
    for (const service of SERVICES) {
      const views = finals.filter((f) => f.service === service).map((f) => JSON.stringify({ revision: f.revision, instances: [...f.instances].sort() }));
      assert.equal(new Set(views).size, 1, `nodes disagree on ${service}: ${views.join(" | ")}`);
    }
    // A sanity check of the records (the checkers do it properly): acknowledged and never deregistered means present.
    const finalIds = new Set(finals.flatMap((f) => f.instances));
    const touched = new Set(ops.filter((o) => o.kind === "deregister" && o.outcome !== "fail").map((o) => o.kind === "deregister" ? o.instance : ""));
    const registers = ops.filter((o): o is RegisterOp => o.kind === "register");
    for (const r of registers) {
      if (r.outcome === "ok" && SERVICES.includes(r.service) && !touched.has(r.instance)) assert.ok(finalIds.has(r.instance), `acknowledged ${r.instance} is missing`);
    }

    const resumed = watches.filter((w) => w.transport !== "xds" && w.messages.some((m) => m.kind === "connected" && m.sinceRevision > 0));
    assert.ok(resumed.length > 0, "some gRPC or SSE watcher lost its node and resumed on another from a revision it held");
    // Watchers: gRPC and SSE reached the final revision; xDS holds the final endpoints of its service.
    const endpointOf = new Map(registers.map((r) => [r.instance, `${r.address}:${r.port}`]));
    for (const w of watches) {
      if (w.transport === "xds") {
        const last = w.messages.filter((m): m is Extract<WatchMessage, { kind: "xds" }> => m.kind === "xds").at(-1);
        const final = finals.find((f) => f.service === w.services[0]);
        assert.ok(last !== undefined && final !== undefined, `${w.watcher} recorded an assignment`);
        assert.deepEqual([...last.endpoints].sort(), final.instances.map((id) => endpointOf.get(id) ?? id).sort(), `${w.watcher}'s last endpoints`);
      } else {
        const revisions = w.messages.flatMap((m) => (m.kind === "events" || m.kind === "reset" || m.kind === "progress" ? [m.revision] : []));
        assert.ok(Math.max(0, ...revisions) >= finalRevision, `${w.watcher} reached revision ${Math.max(0, ...revisions)}, not ${finalRevision}`);
      }
    }
  });
  void test("a gRPC and an SSE watcher whose node is killed resume on another node from the last revision they held, missing nothing", async () => {
    const leader = await cluster.agreedLeader();
    const follower = cluster.nodes.find((n) => n !== leader && n.running);
    assert.ok(follower !== undefined);
    const all: NodeTarget[] = cluster.nodes.map((n) => ({ id: n.info.id, http: n.info.http, grpc: n.info.grpc }));
    // Both start on the follower; once it dies they may go to any other node.
    let targets: NodeTarget[] = all.filter((t) => t.id === follower.info.id);
    const startMs = performance.now();
    const watchers = [grpcTransport, sseTransport].map((transport, i) =>
      new ResumingWatcher(`resume-${transport.kind}`, transport, ["resume-svc"], () => targets, new SeededRandom(i + 1), () => performance.now() - startMs));
    try {
      for (const w of watchers) w.start();
      targets = all;
      const before = await registerVia(leader, "resume-1");
      await waitFor(() => Promise.resolve(watchers.every((w) => w.revision >= before) ? true : undefined), SETTLE_TIMEOUT_MS, () => "watchers saw resume-1");
      await follower.kill9();
      const afterKill = await registerVia(leader, "resume-2");
      await waitFor(() => Promise.resolve(watchers.every((w) => w.revision >= afterKill) ? true : undefined), SETTLE_TIMEOUT_MS,
        () => `watchers resumed: ${watchers.map((w) => `${w.name} at ${w.revision} on ${w.nodeId ?? "-"}`).join(", ")}`);
      for (const w of watchers) {
        const messages = w.record().messages;
        const broke = messages.findIndex((m) => m.kind === "disconnected");
        assert.ok(broke > 0, `${w.name} noticed its node died`);
        const resumedAt = messages.slice(broke).find((m) => m.kind === "connected");
        assert.ok(resumedAt?.kind === "connected" && resumedAt.node !== follower.info.id && resumedAt.sinceRevision >= before, `${w.name} resumed elsewhere from ${before}`);
        const seen = messages.flatMap((m) => (m.kind === "events" ? m.events.map((e) => e.instance) : m.kind === "reset" ? m.instances : []));
        assert.ok(seen.includes("resume-1") && seen.includes("resume-2"), `${w.name} saw both instances: ${seen.join(",")}`);
      }
    } finally {
      for (const w of watchers) w.close();
      if (!follower.running) follower.start();
    }
  });
});
