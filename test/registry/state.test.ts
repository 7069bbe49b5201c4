import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { InstanceDefinition } from "../../src/registry/model.js";
import { type RegistryCommand, RegistryState, decodeRegistryCommand, encodeRegistryCommand } from "../../src/registry/state.js";
import { concatChunks } from "../../src/common/codec.js";

function inst(id: string, service: string, tags: string[] = []): InstanceDefinition {
  return { id, service, address: "10.0.0.1", port: 80, tags, meta: {}, weights: { passing: 1, warning: 1 }, zone: "", node: "n1", nodeAddress: "127.0.0.1" };
}

const ttlCheck = (checkId: string) => ({
  checkId, name: checkId, kind: "ttl" as const, notes: "", ttlMs: 1000, target: "", intervalMs: 0, timeoutMs: 0,
  deregisterCriticalAfterMs: 0, status: "critical" as const, output: "",
});

function apply(state: RegistryState, index: number, cmd: RegistryCommand): void {
  state.apply(index, encodeRegistryCommand(cmd));
}

void describe("registry state machine", () => {
  void test("register, re-register and deregister keep create and modify revisions and per-service indexes", () => {
    const s = new RegistryState();
    apply(s, 5, { op: "register", instance: inst("web-1", "web"), checks: [ttlCheck("service:web-1")], atMs: 1 });
    apply(s, 6, { op: "register", instance: inst("db-1", "db"), checks: [], atMs: 2 });
    apply(s, 7, { op: "register", instance: inst("web-1", "web", ["v2"]), checks: [ttlCheck("service:web-1")], atMs: 3 });
    const web = s.instance("web-1");
    assert.equal(web?.createIndex, 5);
    assert.equal(web?.modifyIndex, 7);
    assert.equal(s.serviceIndex("web"), 7);
    assert.equal(s.serviceIndex("db"), 6, "a write to web does not move db's index");
    assert.deepEqual(s.services(), new Map([["db", []], ["web", ["v2"]]]));
    apply(s, 8, { op: "deregister", id: "web-1" });
    assert.equal(s.instance("web-1"), undefined);
    assert.equal(s.checkById("service:web-1"), undefined, "deregistering removes the instance's checks");
    assert.equal(s.serviceIndex("web"), 8, "a deleted service keeps an index that moved forward");
    assert.deepEqual(s.instancesOf("web"), []);
  });

  void test("a health change moves the service's index but not the catalog's", () => {
    const s = new RegistryState();
    apply(s, 3, { op: "register", instance: inst("web-1", "web"), checks: [ttlCheck("c1")], atMs: 1 });
    apply(s, 4, { op: "setCheckStatus", checkId: "c1", status: "passing", output: "ok", atMs: 50 });
    assert.equal(s.catalogIndex, 3);
    assert.equal(s.serviceIndex("web"), 4);
    const check = s.checkById("c1")?.check;
    assert.equal(check?.status, "passing");
    assert.equal(check?.statusSinceMs, 50);
    apply(s, 5, { op: "setCheckStatus", checkId: "c1", status: "passing", output: "still ok", atMs: 90 });
    assert.equal(s.checkById("c1")?.check.statusSinceMs, 50, "statusSince only moves when the status changes");
  });

  void test("a status change for an instance deregistered in the meantime is a no-op on every node", () => {
    const s = new RegistryState();
    apply(s, 3, { op: "setCheckStatus", checkId: "gone", status: "critical", output: "", atMs: 1 });
    assert.equal(s.revision, 3);
    assert.equal(s.instanceCount, 0);
  });

  void test("a check id claimed by a later registration moves to it", () => {
    const s = new RegistryState();
    apply(s, 3, { op: "register", instance: inst("a", "web"), checks: [ttlCheck("shared")], atMs: 1 });
    apply(s, 4, { op: "register", instance: inst("b", "web"), checks: [ttlCheck("shared")], atMs: 1 });
    assert.equal(s.checkById("shared")?.instance.id, "b");
    assert.deepEqual(s.instance("a")?.checks, []);
  });

  void test("every revision reports its instance changes in order: upsert, health and delete; a restore reports no deltas", () => {
    const s = new RegistryState();
    const heard: string[] = [];
    s.onChange((revision, _services, _catalog, delta) => {
      if (delta.kind === "restored") heard.push(`${revision}:restored`);
      else for (const c of delta.changes) heard.push(`${revision}:${c.kind}:${c.kind === "delete" ? c.id : `${c.instance.id}@${c.instance.modifyIndex}`}`);
    });
    apply(s, 3, { op: "register", instance: inst("a", "web"), checks: [ttlCheck("shared")], atMs: 1 });
    apply(s, 4, { op: "setCheckStatus", checkId: "shared", status: "passing", output: "", atMs: 2 });
    apply(s, 5, { op: "register", instance: inst("b", "web"), checks: [ttlCheck("shared")], atMs: 3 });
    apply(s, 6, { op: "register", instance: inst("b", "db"), checks: [], atMs: 4 });
    apply(s, 7, { op: "deregister", id: "a" });
    apply(s, 8, { op: "deregister", id: "missing" });
    s.restore(new Uint8Array(0));
    assert.deepEqual(heard, [
      "3:upsert:a@3", "4:health:a@4",
      "5:upsert:a@4", "5:upsert:b@5",
      "6:delete:b", "6:upsert:b@6",
      "7:delete:a",
      "0:restored",
    ]);
  });

  void test("snapshot and restore reproduce the state and its indexes exactly", async () => {
    const s = new RegistryState();
    apply(s, 3, { op: "register", instance: inst("web-1", "web", ["x"]), checks: [ttlCheck("c1")], atMs: 1 });
    apply(s, 4, { op: "register", instance: inst("db-1", "db"), checks: [], atMs: 1 });
    apply(s, 5, { op: "setCheckStatus", checkId: "c1", status: "warning", output: "slow", atMs: 9 });
    const copy = new RegistryState();
    let woken = 0;
    copy.onChange(() => woken++);
    copy.restore(concatChunks(await s.snapshot()));
    assert.deepEqual(concatChunks(await copy.snapshot()), concatChunks(await s.snapshot()));
    assert.equal(copy.serviceIndex("web"), 5);
    assert.equal(copy.checkById("c1")?.check.output, "slow");
    assert.equal(woken, 1, "a restore wakes watchers, since indexes may move");
  });

  void test("a snapshot describes the revision it was taken at, even if commands apply while it is written", async () => {
    const s = new RegistryState();
    for (let i = 0; i < 5000; i++) apply(s, i + 2, { op: "register", instance: inst(`i${i}`, "big"), checks: [], atMs: 1 });
    const pending = s.snapshot();
    apply(s, 6000, { op: "deregister", id: "i0" });
    apply(s, 6001, { op: "register", instance: inst("late", "big"), checks: [], atMs: 1 });
    const copy = new RegistryState();
    copy.restore(concatChunks(await pending));
    assert.equal(copy.instanceCount, 5000);
    assert.ok(copy.instance("i0") !== undefined);
    assert.equal(copy.instance("late"), undefined);
    assert.equal(copy.revision, 5001);
  });

  void test("two replicas applying the same commands end identical (deterministic apply)", async () => {
    const cmds: RegistryCommand[] = [];
    for (let i = 0; i < 50; i++) {
      cmds.push({ op: "register", instance: inst(`i${i % 7}`, `s${i % 3}`, [`t${i % 4}`]), checks: [ttlCheck(`c${i % 7}`)], atMs: i });
      if (i % 5 === 0) cmds.push({ op: "setCheckStatus", checkId: `c${i % 7}`, status: "passing", output: String(i), atMs: i });
      if (i % 11 === 0) cmds.push({ op: "deregister", id: `i${i % 7}` });
    }
    const a = new RegistryState();
    const b = new RegistryState();
    cmds.forEach((c, i) => { apply(a, i + 2, c); apply(b, i + 2, c); });
    assert.deepEqual(concatChunks(await a.snapshot()), concatChunks(await b.snapshot()));
  });
});

void describe("registry commands, binary format", () => {
  const commands: RegistryCommand[] = [
    { op: "register", instance: inst("web-1", "web"), checks: [], atMs: 1_764_000_000_123 },
    {
      op: "register",
      instance: { ...inst("web-2", "web", ["a", "b"]), meta: { v: "1", "7": "seven", ["__proto__"]: "kept" }, weights: { passing: 5, warning: 2 }, zone: "z" },
      checks: [ttlCheck("c1"), { ...ttlCheck("c2"), kind: "grpc" as const, ttlMs: 0, target: "10.0.0.1:9000/svc", intervalMs: 2.5, timeoutMs: 1e-6, status: "passing" as const, output: "ok \u6f22" }],
      atMs: 0.5,
    },
    { op: "deregister", id: "web-1" },
    { op: "setCheckStatus", checkId: "c1", status: "warning", output: "", atMs: 99 },
  ];

  void test("each command decodes to what was encoded", () => {
    for (const cmd of commands) assert.deepEqual(decodeRegistryCommand(encodeRegistryCommand(cmd)), cmd);
  });

  void test("a JSON command logged by an earlier build applies as its binary form does", async () => {
    const a = new RegistryState();
    const b = new RegistryState();
    commands.forEach((cmd, i) => {
      a.apply(i + 2, new TextEncoder().encode(JSON.stringify(cmd)));
      b.apply(i + 2, encodeRegistryCommand(cmd));
    });
    assert.deepEqual(concatChunks(await a.snapshot()), concatChunks(await b.snapshot()));
  });

  void test("a damaged command is refused, never applied as something else", () => {
    const bytes = encodeRegistryCommand(commands[1]);
    assert.throws(() => decodeRegistryCommand(bytes.subarray(0, bytes.byteLength - 1)), /truncated/);
    const unknownOp = bytes.slice();
    unknownOp[1] = 9;
    assert.throws(() => decodeRegistryCommand(unknownOp), /unknown registry command 9/);
    const unknownFormat = bytes.slice();
    unknownFormat[0] = 7;
    assert.throws(() => decodeRegistryCommand(unknownFormat), /format 7/);
  });

  void test("a registration like the benchmark's is a third of its JSON or less", () => {
    const cmd: RegistryCommand = { op: "register", instance: { ...inst("bench-w1n0-0-12345", "bench", ["bench"]), address: "10.0.48.57", port: 13369 }, checks: [], atMs: Date.now() };
    const bytes = encodeRegistryCommand(cmd).byteLength;
    assert.ok(bytes * 3 <= JSON.stringify(cmd).length, `${bytes} bytes against ${JSON.stringify(cmd).length} as JSON`);
  });
});

void describe("registry snapshots, binary format", () => {
  const everything = (): RegistryState => {
    const s = new RegistryState();
    apply(s, 3, {
      op: "register",
      instance: { ...inst("web-1", "web", ["v1", "canary"]), meta: { version: "1.2", __proto__key: "x", "10": "ten" }, weights: { passing: 3, warning: 0 }, zone: "z1" },
      checks: [
        ttlCheck("c-ttl"),
        { ...ttlCheck("c-http"), kind: "http" as const, ttlMs: 0, target: "http://10.0.0.1/health", intervalMs: 1.5, timeoutMs: 0.000001, deregisterCriticalAfterMs: 60_000 },
      ],
      atMs: 1_764_000_000_123,
    });
    // A meta key JSON.parse keeps as an own property; it must survive the round trip as one.
    apply(s, 4, { op: "register", instance: { ...inst("odd", "db"), meta: JSON.parse('{"__proto__":"p"}') as Record<string, string> }, checks: [], atMs: 2 });
    apply(s, 5, { op: "setCheckStatus", checkId: "c-http", status: "warning", output: "slow \u00e9\u6f22", atMs: 9 });
    for (let i = 0; i < 3000; i++) apply(s, 6 + i, { op: "register", instance: inst(`bulk-${i}`, `svc${i % 3}`, ["bench"]), checks: [], atMs: 10 });
    apply(s, 4000, { op: "deregister", id: "bulk-7" });
    return s;
  };

  void test("a restored registry equals the original: instances, checks, indexes and services", async () => {
    const s = everything();
    const copy = new RegistryState();
    copy.restore(concatChunks(await s.snapshot()));
    assert.deepEqual([...copy.allInstances()], [...s.allInstances()]);
    assert.equal(Object.getOwnPropertyDescriptor(copy.instance("odd")?.meta, "__proto__")?.value, "p");
    assert.deepEqual(copy.services(), s.services());
    for (const svc of ["web", "db", "svc0", "svc1", "svc2"]) {
      assert.equal(copy.serviceIndex(svc), s.serviceIndex(svc));
      assert.deepEqual(copy.instancesOf(svc), s.instancesOf(svc));
    }
    assert.equal(copy.revision, 4000);
    assert.equal(copy.catalogIndex, s.catalogIndex);
    assert.equal(copy.checkById("c-http")?.check.timeoutMs, 0.000001);
    assert.equal(copy.checkById("c-http")?.instance.id, "web-1", "check ownership is rebuilt");
    assert.deepEqual(concatChunks(await copy.snapshot()), concatChunks(await s.snapshot()));
  });

  void test("a restored registry applies later commands as the original does", async () => {
    const s = everything();
    const copy = new RegistryState();
    copy.restore(concatChunks(await s.snapshot()));
    const later: RegistryCommand[] = [
      { op: "register", instance: inst("web-1", "web", ["v2"]), checks: [ttlCheck("c-ttl")], atMs: 20 },
      { op: "setCheckStatus", checkId: "c-ttl", status: "passing", output: "ok", atMs: 21 },
      { op: "register", instance: inst("thief", "db"), checks: [ttlCheck("c-http")], atMs: 22 },
      { op: "deregister", id: "bulk-9" },
    ];
    later.forEach((c, i) => { apply(s, 5000 + i, c); apply(copy, 5000 + i, c); });
    assert.deepEqual(concatChunks(await copy.snapshot()), concatChunks(await s.snapshot()));
  });

  void test("a JSON snapshot written by an earlier build still restores", () => {
    const web = { ...inst("web-1", "web", ["x"]), checks: [{ ...ttlCheck("c1"), statusSinceMs: 4 }], createIndex: 3, modifyIndex: 5 };
    const legacy = { version: 1, revision: 5, catalogIndex: 3, serviceIndex: [["web", 5]], instances: [web] };
    const s = new RegistryState();
    s.restore(new TextEncoder().encode(JSON.stringify(legacy)));
    assert.deepEqual(s.instance("web-1"), web);
    assert.equal(s.serviceIndex("web"), 5);
    assert.equal(s.checkById("c1")?.instance.id, "web-1");
  });

  void test("a damaged snapshot is refused rather than half restored", async () => {
    const bytes = concatChunks(await everything().snapshot());
    const s = new RegistryState();
    assert.throws(() => s.restore(bytes.subarray(0, bytes.byteLength - 3)), /truncated|trailing|not/);
    const extra = new Uint8Array(bytes.byteLength + 1);
    extra.set(bytes);
    assert.throws(() => s.restore(extra), /trailing/);
    const wrongFormat = bytes.slice();
    wrongFormat[0] = 9;
    assert.throws(() => s.restore(wrongFormat), /format 9/);
  });

  void test("instances share repeated strings and tag lists, and snapshots stay small", async () => {
    const s = new RegistryState();
    const n = 10_000;
    for (let i = 0; i < n; i++) {
      const def = { ...inst(`mem-${i}`, "bench", ["bench"]), address: `10.0.${(i >> 8) & 255}.${i & 255}`, port: 1024 + i };
      apply(s, i + 2, { op: "register", instance: def, checks: [], atMs: 1 });
    }
    const a = s.instance("mem-1");
    const b = s.instance("mem-2");
    assert.ok(a !== undefined && b !== undefined);
    assert.equal(a.tags, b.tags, "one tag list for all");
    assert.ok(Object.isFrozen(a.tags), "a shared list cannot be changed through one instance");
    assert.equal(a.meta, b.meta);
    assert.equal(a.weights, b.weights);
    const bytes = concatChunks(await s.snapshot()).byteLength;
    // An instance like the benchmark's takes ~240 bytes as JSON; the binary format stays under 48.
    assert.ok(bytes / n < 48, `${(bytes / n).toFixed(1)} bytes per instance`);
  });
});
