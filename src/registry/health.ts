// Health, decided by the leader. TTL heartbeats are kept in the leader's memory, never written to
// the log (like etcd's lease keep-alives); HTTP, TCP and gRPC checks are probed by the leader on
// their interval. Only a change of status (or of output) becomes a Raft command, and so does
// removing an instance that has been critical longer than its deregister-after.

import { connect } from "node:net";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Check, HealthStatus } from "./model.js";
import type { RegistryCommand, RegistryState } from "./state.js";
import { errorMessage } from "../common/errors.js";

export interface HealthManagerDeps {
  readonly state: RegistryState;
  readonly isLeader: () => boolean;
  readonly propose: (cmd: RegistryCommand) => Promise<number>;
  readonly logger: Logger;
  /** Wall clock in ms, for the times written into commands (a status's "since"); injectable for tests. */
  readonly now?: () => number;
  /**
   * A clock that only moves forward at the rate time passes (performance.now()), for every
   * duration: a TTL, a deregister-after. The wall clock may jump (NTP, an operator, a VM resumed),
   * and a TTL measured on it would expire early or never.
   */
  readonly elapsedNow?: () => number;
  readonly scanIntervalMs?: number;
  /** Probes running at once, at most: a bound on sockets and memory. */
  readonly probesInFlightMax?: number;
}

export class UnknownCheckError extends Error {
  constructor(readonly checkId: string) {
    super(`check ${checkId} is not registered`);
    this.name = "UnknownCheckError";
  }
}

/** When this leader first saw a check in its current status, on the elapsed clock. */
interface StatusSeen {
  /** The replicated statusSinceMs it was seen with: a new value means a new status. */
  readonly statusSinceMs: number;
  readonly seenAtMs: number;
  scan: number;
}

export class HealthManager {
  /** Elapsed-clock times of each check's last heartbeat to this leader. */
  private readonly lastHeartbeatMs = new Map<string, number>();
  private readonly statusSeen = new Map<string, StatusSeen>();
  private scans = 0;
  private readonly nextProbeMs = new Map<string, number>();
  /** Transitions proposed and not yet applied, so a scan does not propose them twice. */
  private readonly pending = new Set<string>();
  private probesInFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  /** On the elapsed clock. */
  private leaderSinceMs: number | undefined;
  private readonly now: () => number;
  private readonly elapsedNow: () => number;

  constructor(private readonly deps: HealthManagerDeps) {
    this.now = deps.now ?? Date.now;
    this.elapsedNow = deps.elapsedNow ?? (() => performance.now());
  }

  start(): void {
    this.timer = setInterval(() => this.scan(), this.deps.scanIntervalMs ?? 250);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * A TTL check's heartbeat, on the leader. Resets the TTL clock in memory; proposes a command
   * only when the status or output changes.
   */
  async heartbeat(checkId: string, status: HealthStatus, output: string): Promise<void> {
    const found = this.deps.state.checkById(checkId);
    if (found === undefined) throw new UnknownCheckError(checkId);
    this.lastHeartbeatMs.set(checkId, this.elapsedNow());
    if (found.check.status === status && found.check.output === output) return;
    await this.deps.propose({ op: "setCheckStatus", checkId, status, output, atMs: this.now() });
  }

  /** Called on every scan; public so tests can drive it with an injected clock. */
  scan(): void {
    if (!this.deps.isLeader()) {
      this.leaderSinceMs = undefined;
      return;
    }
    const now = this.elapsedNow();
    const scan = ++this.scans;
    if (this.leaderSinceMs === undefined) {
      // A new leader never saw the heartbeats the old one did: give every TTL a full grace period.
      this.leaderSinceMs = now;
      this.lastHeartbeatMs.clear();
      this.nextProbeMs.clear();
      this.statusSeen.clear();
    }
    let checks = 0;
    for (const inst of this.deps.state.instancesWithChecks()) {
      for (const check of inst.checks) {
        checks++;
        // Durations run from when this leader saw the status, never from the replicated
        // statusSinceMs: that is another node's wall clock, and comparing clocks is how a jump
        // on one node expires every TTL at once.
        const statusSinceMs = Math.max(this.seenSince(check, now, scan), this.leaderSinceMs);
        if (check.kind === "ttl") this.checkTtl(check, now, statusSinceMs);
        else this.maybeProbe(check, now);
        if (check.status === "critical" && check.deregisterCriticalAfterMs > 0 && now - statusSinceMs > check.deregisterCriticalAfterMs) {
          this.proposeOnce(`deregister:${inst.id}`, { op: "deregister", id: inst.id });
        }
      }
    }
    if (this.statusSeen.size > checks) this.forgetRemovedChecks(scan);
  }

  /** When this leader first saw `check` in its current status. */
  private seenSince(check: Check, now: number, scan: number): number {
    const seen = this.statusSeen.get(check.checkId);
    if (seen !== undefined && seen.statusSinceMs === check.statusSinceMs) {
      seen.scan = scan;
      return seen.seenAtMs;
    }
    this.statusSeen.set(check.checkId, { statusSinceMs: check.statusSinceMs, seenAtMs: now, scan });
    return now;
  }

  private forgetRemovedChecks(scan: number): void {
    for (const [checkId, seen] of this.statusSeen) {
      if (seen.scan === scan) continue;
      this.statusSeen.delete(checkId);
      this.lastHeartbeatMs.delete(checkId);
      this.nextProbeMs.delete(checkId);
    }
  }

  private checkTtl(check: Check, now: number, statusSinceMs: number): void {
    // The TTL runs from the latest of: the last heartbeat, the last status change (a registration
    // counts), and this node becoming leader.
    const last = Math.max(this.lastHeartbeatMs.get(check.checkId) ?? 0, statusSinceMs);
    if (check.status === "critical" || now - last <= check.ttlMs) return;
    this.proposeOnce(`status:${check.checkId}`, {
      op: "setCheckStatus", checkId: check.checkId, status: "critical",
      output: `TTL expired (last heartbeat ${Math.round(now - last)} ms ago, TTL ${check.ttlMs} ms)`, atMs: this.now(),
    });
  }

  private maybeProbe(check: Check, now: number): void {
    const due = this.nextProbeMs.get(check.checkId) ?? now;
    if (now < due || this.probesInFlight >= (this.deps.probesInFlightMax ?? 256)) return;
    this.nextProbeMs.set(check.checkId, now + check.intervalMs);
    this.probesInFlight++;
    void probe(check).then((result) => {
      this.probesInFlight--;
      const current = this.deps.state.checkById(check.checkId)?.check;
      if (current === undefined || !this.deps.isLeader()) return;
      if (current.status === result.status && current.output === result.output) return;
      this.proposeOnce(`status:${check.checkId}`, { op: "setCheckStatus", checkId: check.checkId, ...result, atMs: this.now() });
    });
  }

  private proposeOnce(key: string, cmd: RegistryCommand): void {
    if (this.pending.has(key)) return;
    this.pending.add(key);
    this.deps.propose(cmd).then(
      () => this.pending.delete(key),
      (err: unknown) => {
        this.pending.delete(key);
        this.deps.logger.warn({ err: errorMessage(err), key }, "health transition not committed; will retry");
      },
    );
  }
}

interface ProbeResult {
  readonly status: HealthStatus;
  readonly output: string;
}

/** Runs one probe. HTTP: 2xx passing, 429 warning, else critical. TCP: connects. gRPC: SERVING. */
export async function probe(check: Check): Promise<ProbeResult> {
  try {
    switch (check.kind) {
      case "http": {
        const res = await fetch(check.target, { signal: AbortSignal.timeout(check.timeoutMs) });
        await res.body?.cancel();
        const status: HealthStatus = res.status >= 200 && res.status < 300 ? "passing" : res.status === 429 ? "warning" : "critical";
        return { status, output: `HTTP GET ${check.target}: ${res.status} ${res.statusText}` };
      }
      case "tcp":
        await tcpConnect(check.target, check.timeoutMs);
        return { status: "passing", output: `TCP connect ${check.target}: Success` };
      case "grpc": {
        const serving = await grpcHealth(check.target, check.timeoutMs);
        return serving
          ? { status: "passing", output: `gRPC check ${check.target}: success` }
          : { status: "critical", output: `gRPC check ${check.target}: not serving` };
      }
      case "ttl":
        return { status: check.status, output: check.output };
    }
  } catch (err) {
    return { status: "critical", output: `${check.kind.toUpperCase()} check ${check.target} failed: ${errorMessage(err)}` };
  }
}

function tcpConnect(target: string, timeoutMs: number): Promise<void> {
  const at = target.lastIndexOf(":");
  const host = target.slice(0, at).replace(/^\[(.*)\]$/, "$1");
  const port = Number(target.slice(at + 1));
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, timeout: timeoutMs });
    socket.once("connect", () => { socket.destroy(); resolve(); });
    socket.once("timeout", () => { socket.destroy(); reject(new Error(`timed out after ${timeoutMs} ms`)); });
    socket.once("error", (err) => { socket.destroy(); reject(err); });
  });
}

const identity = (b: Buffer): Buffer => b;

/** grpc.health.v1.Health/Check against "host:port" or "host:port/service". */
function grpcHealth(target: string, timeoutMs: number): Promise<boolean> {
  const slash = target.indexOf("/");
  const address = slash < 0 ? target : target.slice(0, slash);
  const service = slash < 0 ? "" : target.slice(slash + 1);
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  // HealthCheckRequest { string service = 1; }
  const serviceBytes = Buffer.from(service);
  const request = service === "" ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, serviceBytes.length]), serviceBytes]);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest("/grpc.health.v1.Health/Check", identity, identity, request, { deadline: Date.now() + timeoutMs },
      (err, response) => {
        client.close();
        if (err !== null) reject(new Error(err.details || err.message));
        // HealthCheckResponse { ServingStatus status = 1; } with SERVING = 1.
        else resolve(response !== undefined && response.length >= 2 && response[0] === 0x08 && response[1] === 0x01);
      });
  });
}
