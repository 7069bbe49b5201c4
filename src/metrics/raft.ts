// Raft's figures. Events (fsyncs, acknowledged appends, elections, snapshots, proposals) arrive
// through the RaftObserver the driver is given; state (term, role, indexes, follower lag) is read
// from the driver at scrape time, so it is never stale and costs nothing between scrapes.

import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { Role } from "../raft/core/types.js";
import type { RaftDriver } from "../raft/node/driver.js";
import type { RaftObserver, SnapshotEvent } from "../raft/node/observer.js";
import { DISK_SECONDS_BUCKETS } from "./buckets.js";

/** What is read from the node at scrape time. */
export type RaftSource = Pick<RaftDriver, "isStarted" | "status" | "followerLagEntries" | "applyLagEntries">;

/** Role names as label values, in Prometheus's snake case. */
const ROLE_LABELS: Readonly<Record<Role, string>> = { follower: "follower", preCandidate: "pre_candidate", candidate: "candidate", leader: "leader" };
const SNAPSHOT_EVENTS: readonly SnapshotEvent[] = ["compacted", "installed", "sent"];

export class RaftMetrics implements RaftObserver {
  private readonly fsyncSeconds: Histogram;
  private readonly appendSeconds: Histogram<"follower">;
  private readonly leaderChanges: Counter;
  private readonly elections: Counter;
  private readonly snapshots: Counter<"event">;
  private readonly proposals: Counter<"result">;

  constructor(private readonly registry: Registry) {
    const registers = [registry];
    this.fsyncSeconds = new Histogram({
      name: "cairn_raft_fsync_duration_seconds",
      help: "Time to write one batch of the Raft log (entries, a new term or vote) and fsync it",
      buckets: [...DISK_SECONDS_BUCKETS],
      registers,
    });
    this.appendSeconds = new Histogram({
      name: "cairn_raft_append_duration_seconds",
      help: "On the leader: time from sending entries to a follower to its acknowledgement (network both ways and the follower's fsync)",
      labelNames: ["follower"],
      buckets: [...DISK_SECONDS_BUCKETS],
      registers,
    });
    this.leaderChanges = new Counter({ name: "cairn_raft_leader_changes_total", help: "Times this node learned of a new leader (its own election included)", registers });
    this.elections = new Counter({ name: "cairn_raft_elections_total", help: "Elections this node started: times it became a candidate in a new term", registers });
    this.snapshots = new Counter({
      name: "cairn_raft_snapshots_total",
      help: "Snapshots: compacted (this node compacted its log), installed (received from the leader), sent (to a follower too far behind)",
      labelNames: ["event"],
      registers,
    });
    for (const event of SNAPSHOT_EVENTS) this.snapshots.inc({ event }, 0);
    this.proposals = new Counter({
      name: "cairn_raft_proposals_total",
      help: "Writes proposed through this node, by result: applied, or failed (refused, timed out, lost to a leader change)",
      labelNames: ["result"],
      registers,
    });
    for (const result of ["applied", "failed"]) this.proposals.inc({ result }, 0);
  }

  logSynced(durationSeconds: number): void {
    this.fsyncSeconds.observe(durationSeconds);
  }

  appendAcknowledged(follower: string, durationSeconds: number): void {
    this.appendSeconds.observe({ follower }, durationSeconds);
  }

  leaderChanged(): void {
    this.leaderChanges.inc();
  }

  electionStarted(): void {
    this.elections.inc();
  }

  snapshot(event: SnapshotEvent): void {
    this.snapshots.inc({ event });
  }

  proposalSettled(applied: boolean): void {
    this.proposals.inc({ result: applied ? "applied" : "failed" });
  }

  /** Registers the state read from `driver` at every scrape. Call once, when the driver exists. */
  read(driver: RaftSource): void {
    const registers = [this.registry];
    // Cheap (the core's fields and the member list), so each gauge takes its own.
    const status = (): ReturnType<RaftSource["status"]> | undefined => (driver.isStarted ? driver.status() : undefined);
    const single = (name: string, help: string, value: (s: ReturnType<RaftSource["status"]>) => number | undefined): void => {
      new Gauge({
        name, help, registers,
        collect() {
          this.reset();
          const s = status();
          const v = s === undefined ? undefined : value(s);
          if (v !== undefined) this.set(v);
        },
      });
    };
    single("cairn_raft_term", "The current Raft term on this node", (s) => s.term);
    single("cairn_raft_commit_index", "The highest log index this node knows is committed", (s) => s.commitIndex);
    single("cairn_raft_applied_index", "The highest log index this node has applied (its revision)", (s) => s.appliedIndex);
    single("cairn_raft_has_leader", "1 when this node knows a leader, else 0", (s) => (s.leader === "" ? 0 : 1));
    single("cairn_raft_last_contact_seconds", "Seconds since this node last heard from the leader (0 on the leader); absent before it ever has",
      (s) => (s.lastContactMs === undefined ? undefined : s.lastContactMs / 1000));
    single("cairn_raft_apply_lag_entries", "Committed entries (as far as any leader has told this node) that it has yet to apply", () => driver.applyLagEntries);
    new Gauge({
      name: "cairn_raft_role",
      help: "1 for this node's current Raft role, 0 for the others",
      labelNames: ["role"],
      registers,
      collect() {
        const role = status()?.role;
        for (const [r, label] of Object.entries(ROLE_LABELS)) this.set({ role: label }, r === role ? 1 : 0);
      },
    });
    new Gauge({
      name: "cairn_raft_follower_match_lag_entries",
      help: "On the leader: how many entries each follower's log trails the leader's last index (exported by the leader only)",
      labelNames: ["follower"],
      registers,
      collect() {
        this.reset();
        if (!driver.isStarted) return;
        for (const [follower, lag] of driver.followerLagEntries()) this.set({ follower }, lag);
      },
    });
  }
}
