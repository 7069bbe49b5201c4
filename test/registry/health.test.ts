import assert from "node:assert/strict";
import { createServer as createHttpServer, type Server } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { describe, test } from "node:test";
import { pino } from "pino";
import { startPublicGrpc } from "../../src/api/grpc.js";
import { HealthManager, UnknownCheckError, probe } from "../../src/registry/health.js";
import type { Check, CheckKind } from "../../src/registry/model.js";
import { type RegistryCommand, RegistryState, encodeRegistryCommand } from "../../src/registry/state.js";

const silent = pino({ level: "silent" });

/** A registry whose proposals apply at once, and a clock the test moves. */
function harness(opts: { leader?: boolean } = {}) {
  const state = new RegistryState();
  let index = 1;
  let nowMs = 1_000_000;
  /** The wall clock's distance from elapsed time: a jump moves it, and only it. */
  let wallOffsetMs = 0;
  const proposed: RegistryCommand[] = [];
  let leader = opts.leader ?? true;
  const applyNow = (cmd: RegistryCommand): void => state.apply(++index, encodeRegistryCommand(cmd));
  const health = new HealthManager({
    state, logger: silent, now: () => nowMs + wallOffsetMs, elapsedNow: () => nowMs, isLeader: () => leader,
    propose: (cmd) => { proposed.push(cmd); applyNow(cmd); return Promise.resolve(index); },
  });
  return {
    state, health, proposed, applyNow,
    advance: (ms: number) => { nowMs += ms; },
    jumpWallClock: (ms: number) => { wallOffsetMs += ms; },
    now: () => nowMs + wallOffsetMs,
    setLeader: (v: boolean) => { leader = v; },
  };
}

function register(h: ReturnType<typeof harness>, id: string, check: Partial<Check> & { kind: CheckKind }): void {
  h.applyNow({
    op: "register",
    instance: { id, service: "web", address: "", port: 1, tags: [], meta: {}, weights: { passing: 1, warning: 1 }, zone: "", node: "n1", nodeAddress: "127.0.0.1" },
    checks: [{
      checkId: `service:${id}`, name: "c", notes: "", ttlMs: 1000, target: "", intervalMs: 1000, timeoutMs: 500,
      deregisterCriticalAfterMs: 0, status: "passing", output: "", ...check,
    }],
    atMs: h.now(),
  });
}

void describe("health decided by the leader", () => {
  void test("a TTL that lapses is committed as critical once, not on every scan", async () => {
    const h = harness();
    register(h, "a", { kind: "ttl", ttlMs: 1000 });
    h.health.scan();
    h.advance(900);
    h.health.scan();
    assert.equal(h.proposed.length, 0);
    h.advance(200);
    h.health.scan();
    h.health.scan();
    await Promise.resolve();
    assert.equal(h.proposed.length, 1);
    assert.equal(h.state.checkById("service:a")?.check.status, "critical");
    assert.match(h.state.checkById("service:a")?.check.output ?? "", /TTL expired/);
  });

  void test("a wall clock jump on the leader neither expires a TTL early nor holds it off", async () => {
    const h = harness();
    register(h, "a", { kind: "ttl", ttlMs: 1000 });
    h.health.scan();
    h.jumpWallClock(60_000);
    h.advance(500);
    h.health.scan();
    await Promise.resolve();
    assert.equal(h.proposed.length, 0, "a jump forward is not time passing");
    h.jumpWallClock(-120_000);
    h.advance(600);
    h.health.scan();
    await Promise.resolve();
    assert.equal(h.state.checkById("service:a")?.check.status, "critical", "nor does a jump back stop it");
  });

  void test("a heartbeat resets the TTL clock and writes nothing while the status holds", async () => {
    const h = harness();
    register(h, "a", { kind: "ttl", ttlMs: 1000 });
    h.health.scan();
    for (let i = 0; i < 10; i++) {
      h.advance(600);
      await h.health.heartbeat("service:a", "passing", "");
      h.health.scan();
    }
    assert.equal(h.proposed.length, 0, "heartbeats are not Raft writes");
    await h.health.heartbeat("service:a", "warning", "disk 91%");
    assert.equal(h.proposed.length, 1, "a change of status is");
    await assert.rejects(h.health.heartbeat("nope", "passing", ""), UnknownCheckError);
  });

  void test("a new leader gives every TTL a full grace period", () => {
    const h = harness({ leader: false });
    register(h, "a", { kind: "ttl", ttlMs: 1000 });
    h.advance(60_000);
    h.health.scan();
    h.setLeader(true);
    h.health.scan();
    h.advance(999);
    h.health.scan();
    assert.equal(h.proposed.length, 0, "not expired at once although no heartbeat was seen for a minute");
    h.advance(2);
    h.health.scan();
    assert.equal(h.proposed.length, 1);
  });

  void test("an instance critical for longer than its deregister-after is removed by a command", async () => {
    const h = harness();
    register(h, "a", { kind: "ttl", ttlMs: 100, deregisterCriticalAfterMs: 5000, status: "critical" });
    h.health.scan();
    h.advance(4000);
    h.health.scan();
    assert.ok(h.state.instance("a") !== undefined);
    h.advance(1500);
    h.health.scan();
    await Promise.resolve();
    assert.equal(h.state.instance("a"), undefined);
    assert.ok(h.proposed.some((c) => c.op === "deregister"));
  });

  void test("a follower decides nothing", () => {
    const h = harness({ leader: false });
    register(h, "a", { kind: "ttl", ttlMs: 10, status: "passing" });
    h.advance(10_000);
    h.health.scan();
    assert.equal(h.proposed.length, 0);
  });
});

void describe("probes", () => {
  async function httpServer(status: number): Promise<{ url: string; server: Server }> {
    const server = createHttpServer((_req, res) => { res.statusCode = status; res.end("x"); });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const addr = server.address();
    return { url: `http://127.0.0.1:${typeof addr === "object" && addr !== null ? addr.port : 0}/health`, server };
  }

  const base: Check = {
    checkId: "c", name: "c", kind: "http", notes: "", ttlMs: 0, target: "", intervalMs: 1000, timeoutMs: 1000,
    deregisterCriticalAfterMs: 0, status: "critical", output: "", statusSinceMs: 0,
  };

  for (const [code, expected] of [[200, "passing"], [204, "passing"], [429, "warning"], [500, "critical"], [404, "critical"]] as const) {
    void test(`HTTP ${code} is ${expected}`, async () => {
      const { url, server } = await httpServer(code);
      try {
        const r = await probe({ ...base, kind: "http", target: url });
        assert.equal(r.status, expected);
        assert.match(r.output, new RegExp(String(code)));
      } finally {
        server.close();
      }
    });
  }

  void test("TCP passes when something listens and fails when nothing does", async () => {
    const server = createTcpServer((s) => s.end());
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const addr = server.address();
    const port = typeof addr === "object" && addr !== null ? addr.port : 0;
    try {
      assert.equal((await probe({ ...base, kind: "tcp", target: `127.0.0.1:${port}` })).status, "passing");
    } finally {
      server.close();
    }
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((await probe({ ...base, kind: "tcp", target: `127.0.0.1:${port}` })).status, "critical");
  });

  void test("gRPC health: SERVING is passing, NOT_SERVING is critical", async () => {
    let serving = true;
    const grpcServer = await startPublicGrpc("127.0.0.1:0", () => serving, silent);
    try {
      const target = `127.0.0.1:${grpcServer.port}`;
      assert.equal((await probe({ ...base, kind: "grpc", target })).status, "passing");
      serving = false;
      assert.equal((await probe({ ...base, kind: "grpc", target })).status, "critical");
    } finally {
      await grpcServer.stop();
    }
  });
});
