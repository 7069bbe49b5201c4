import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkRegistryLinearizability } from "../../../chaos/checkers/registry_linearizability.js";
import { ANOMALIES_LISTED_MAX } from "../../../chaos/checkers/verdicts.js";
import type { Operation, RunHistory } from "../../../chaos/history.js";
import { SeededRandom } from "../../../src/raft/core/random.js";
import { DEFAULT_SETTINGS, HistoryBuilder } from "./history_builder.js";

describe("registry linearizability checker", () => {
  test("accepts reads that overlap a register and a deregister and see either side", () => {
    const h = new HistoryBuilder();
    h.register("a", [10, 20]);
    h.read([], [12, 14], { client: "r1" });
    h.read(["a"], [15, 25], { client: "r2" });
    h.read(["a"], [30, 40], { client: "r1" });
    h.deregister("a", [50, 60]);
    h.read(["a"], [52, 54], { client: "r1" });
    h.read([], [55, 70], { client: "r2" });
    h.read([], [80, 90], { client: "r1" });
    const v = checkRegistryLinearizability(h.build());
    assert.equal(v.ok, true, JSON.stringify(v.anomalies));
    assert.equal(v.stats.instancesChecked, 1);
    assert.equal(v.stats.undecided, 0);
  });

  test("flags a read that misses a register acknowledged before it began, naming both", () => {
    const h = new HistoryBuilder();
    const reg = h.register("a", [10, 20]);
    const read = h.read([], [30, 40], { client: "r1" });
    const v = checkRegistryLinearizability(h.build());
    assert.equal(v.ok, false);
    assert.match(v.anomalies[0].message, /instance a of service web/);
    assert.match(v.anomalies[0].message, /saw it absent/);
    assert.deepEqual(v.anomalies[0].opIds, [read.id, reg.id]);
  });

  test("flags a read that lists an instance before its register was invoked", () => {
    const h = new HistoryBuilder();
    h.read(["a"], [1, 5], { client: "r1" });
    h.register("a", [10, 20]);
    const v = checkRegistryLinearizability(h.build());
    assert.equal(v.ok, false);
    assert.match(v.anomalies[0].message, /saw it present, but no register can have taken effect/);
  });

  test("flags a read that lists an instance after its deregister was acknowledged", () => {
    const h = new HistoryBuilder();
    h.register("a", [10, 20]);
    h.deregister("a", [30, 40]);
    h.read(["a"], [50, 60], { client: "r1" });
    assert.equal(checkRegistryLinearizability(h.build()).ok, false);
  });

  test("flags an instance that disappears and comes back without a deregister", () => {
    const h = new HistoryBuilder();
    h.register("a", [10, 20]);
    h.read(["a"], [30, 40], { client: "r1" });
    h.read([], [50, 60], { client: "r1" });
    h.read(["a"], [70, 80], { client: "r1" });
    assert.equal(checkRegistryLinearizability(h.build()).ok, false);
  });

  test("flags a read that, after another read saw a deregister take effect, sees the instance again", () => {
    const h = new HistoryBuilder();
    h.register("a", [10, 20]);
    h.deregister("a", [30, 100]);
    h.read([], [40, 50], { client: "r1" });
    h.read(["a"], [60, 70], { client: "r2" });
    assert.equal(checkRegistryLinearizability(h.build()).ok, false);
  });

  test("lets a register whose outcome is unknown take effect late, or never", () => {
    const late = new HistoryBuilder();
    late.register("a", [10]);
    late.read([], [100, 110], { client: "r1" });
    late.read(["a"], [200, 210], { client: "r1" });
    assert.equal(checkRegistryLinearizability(late.build()).ok, true);
    const never = new HistoryBuilder();
    never.register("a", [10]);
    never.read([], [100, 110], { client: "r1" });
    assert.equal(checkRegistryLinearizability(never.build()).ok, true);
  });

  test("a deregister whose outcome is unknown may leave the instance present", () => {
    const h = new HistoryBuilder();
    h.register("a", [10, 20]);
    h.deregister("a", [30]);
    h.read(["a"], [100, 110], { client: "r1" });
    h.read([], [200, 210], { client: "r1" });
    assert.equal(checkRegistryLinearizability(h.build()).ok, true);
  });

  test("flags a read that lists an instance whose register failed", () => {
    const h = new HistoryBuilder();
    h.register("a", [10, 20], { outcome: "fail", status: 503 });
    h.read(["a"], [30, 40], { client: "r1" });
    const v = checkRegistryLinearizability(h.build());
    assert.equal(v.ok, false);
    assert.equal(v.stats.opsChecked, 1);
  });

  test("a read speaks only for its own service: listing another service's instance is an anomaly, not listing it is not", () => {
    const h = new HistoryBuilder();
    h.register("a", [10, 20], { service: "web" });
    h.read([], [30, 40], { client: "r1", service: "db" });
    assert.equal(checkRegistryLinearizability(h.build()).ok, true);
    h.read(["a"], [50, 60], { client: "r1", service: "db" });
    const v = checkRegistryLinearizability(h.build());
    assert.equal(v.ok, false);
    assert.match(v.anomalies[0].message, /service db/);
  });

  test("ignores stale reads and reads that did not succeed", () => {
    const h = new HistoryBuilder();
    h.register("a", [10, 20]);
    h.read([], [30, 40], { client: "r1", consistency: "stale" });
    h.read([], [30, 40], { client: "r2", outcome: "fail" });
    assert.equal(checkRegistryLinearizability(h.build()).ok, true);
  });

  test("an instance the search cannot decide within its bound is counted as undecided, not passed", () => {
    const h = new HistoryBuilder();
    h.register("a", [10, 20]);
    for (let i = 0; i < 5; i++) h.read(["a"], [30 + i, 40 + i], { client: `r${i}` });
    const v = checkRegistryLinearizability(h.build(), { statesMaxPerInstance: 2 });
    assert.equal(v.stats.undecided, 1);
    assert.equal(v.stats.anomaliesFound, 0);
  });

  test("lists at most the first anomalies but counts them all", () => {
    const h = new HistoryBuilder();
    const bad = ANOMALIES_LISTED_MAX + 10;
    for (let i = 0; i < bad; i++) h.read([`ghost-${i}`], [i, i + 1], { client: "r1" });
    const v = checkRegistryLinearizability(h.build());
    assert.equal(v.anomalies.length, ANOMALIES_LISTED_MAX);
    assert.equal(v.stats.anomaliesFound, bad);
  });

  test("checks 100k operations with 50k reads within a loose time bound", () => {
    const history = syntheticHistory(new SeededRandom(7), { writes: 50_000, reads: 50_000, services: 20 });
    const startedMs = performance.now();
    const v = checkRegistryLinearizability(history);
    const tookMs = performance.now() - startedMs;
    assert.equal(v.ok, true, JSON.stringify(v.anomalies.slice(0, 3)));
    assert.equal(v.stats.undecided, 0);
    assert.ok(Number(v.stats.observations) > 100_000, `observations ${v.stats.observations}`);
    assert.ok(tookMs < 10_000, `took ${tookMs.toFixed(0)} ms`);

    // One read of that history made to miss a listed instance must fail (checked on its service alone, to stay quick).
    const victim = history.ops.find((op) => op.kind === "read" && (op.instances?.length ?? 0) > 2 && op.invokedAtMs > 5_000);
    assert.ok(victim?.kind === "read");
    const ops = history.ops.filter((op) => "service" in op && op.service === victim.service)
      .map((op) => (op === victim ? { ...victim, instances: victim.instances?.slice(1) } : op));
    assert.equal(checkRegistryLinearizability({ ...history, ops }).ok, false);
  });
});

/**
 * A correct history: every operation takes effect at a random point inside its interval and reads
 * report the state at theirs. Each writer keeps a few live instances and deregisters its oldest;
 * every service also has long-lived instances that every read lists; 1% of writes are unknown.
 */
function syntheticHistory(random: SeededRandom, size: { writes: number; reads: number; services: number }): RunHistory {
  const writers = 30;
  const readers = 20;
  const liveMaxPerWriter = 5;
  const ops: Operation[] = [];
  let id = 1;
  type Effect = { atMs: number; apply: () => void };
  const effects: Effect[] = [];
  const present = new Map<string, Set<string>>();
  const services = Array.from({ length: size.services }, (_, s) => `svc-${s}`);
  for (const s of services) present.set(s, new Set());
  const span = (startMs: number): [number, number, number] => {
    const endMs = startMs + 1 + random.nextInt(20);
    return [startMs, endMs, startMs + random.nextFloat() * (endMs - startMs)];
  };
  for (const service of services) {
    for (let k = 0; k < 5; k++) {
      const instance = `${service}-forever-${k}`;
      ops.push({ id: id++, kind: "register", client: "setup", node: "n1", invokedAtMs: 0, completedAtMs: 0, outcome: "ok",
        service, instance, address: "10.0.0.1", port: 80 });
      effects.push({ atMs: 0, apply: () => present.get(service)?.add(instance) });
    }
  }
  for (let w = 0; w < writers; w++) {
    let clockMs = 1;
    const live: { service: string; instance: string }[] = [];
    for (let n = 0; n < size.writes / writers; n++) {
      const [startMs, endMs, atMs] = span(clockMs);
      clockMs = endMs + random.nextInt(5);
      const unknown = random.chance(0.01);
      const base = { id: id++, client: `w${w}`, node: "n1", invokedAtMs: startMs, completedAtMs: unknown ? undefined : endMs,
        outcome: unknown ? "unknown" as const : "ok" as const };
      const takesEffect = !unknown || random.chance(0.5);
      if (live.length >= liveMaxPerWriter) {
        const { service, instance } = live.shift() as { service: string; instance: string };
        ops.push({ ...base, kind: "deregister", service, instance });
        if (takesEffect) effects.push({ atMs, apply: () => present.get(service)?.delete(instance) });
      } else {
        const service = random.pick(services);
        const instance = `w${w}-${n}`;
        ops.push({ ...base, kind: "register", service, instance, address: "10.0.0.1", port: 80 });
        if (takesEffect) effects.push({ atMs, apply: () => present.get(service)?.add(instance) });
        if (!unknown) live.push({ service, instance });
      }
    }
  }
  for (let r = 0; r < readers; r++) {
    let clockMs = 1;
    for (let n = 0; n < size.reads / readers; n++) {
      const [startMs, endMs, atMs] = span(clockMs);
      clockMs = endMs + random.nextInt(5);
      const service = random.pick(services);
      const read = { id: id++, kind: "read" as const, client: `r${r}`, node: "n1", invokedAtMs: startMs, completedAtMs: endMs,
        outcome: "ok" as const, service, consistency: "linearizable" as const, instances: [] as string[], revision: 1 };
      ops.push(read);
      effects.push({ atMs, apply: () => { read.instances = [...(present.get(service) ?? [])]; } });
    }
  }
  effects.sort((a, b) => a.atMs - b.atMs);
  for (const e of effects) e.apply();
  return { settings: DEFAULT_SETTINGS, ops, watches: [], faults: [], observations: [], roleChanges: [], finalReads: [], abandonedInstances: [] };
}
