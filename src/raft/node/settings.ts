// A node's options, resolved once into one object and checked against each other.

import { randomInt } from "node:crypto";
import type { Logger } from "pino";
import type { StateMachine } from "../state_machine.js";
import type { LogStorage } from "../storage/log_storage.js";
import type { RaftConfig } from "../core/raft.js";
import type { RandomSource } from "../core/random.js";
import type { NodeId } from "../core/types.js";
import { type RaftObserver, silentRaftObserver } from "./observer.js";
import { type Clock, type PeerNetwork, systemClock } from "./ports.js";

/** Bugs planted in the driver, as PLANTED_BUGS plants them in the core, for the mutation run. */
export const DRIVER_PLANTED_BUGS = {
  ackBeforeFsync: "send a Ready's messages (votes, acknowledgements) before its write is durable",
  readWithoutReadIndex: "answer linearizable reads from this node's applied state, without confirming leadership by ReadIndex",
  ackBeforeCommit: "answer a write once the leader has appended it, before a majority holds it or anyone applied it",
} as const;

export type DriverPlantedBug = keyof typeof DRIVER_PLANTED_BUGS;

export interface RaftDriverOptions {
  readonly id: NodeId;
  /** Founding members (id -> peer address) when forming a new cluster; omit when joining. */
  readonly initialCluster?: ReadonlyMap<NodeId, string>;
  /** Known members to contact when joining an existing cluster. */
  readonly joinPeers?: ReadonlyMap<NodeId, string>;
  readonly storage: LogStorage;
  readonly stateMachine: StateMachine;
  readonly network: PeerNetwork;
  readonly logger: Logger;
  /** Defaults to the process's own clock; the simulator passes virtual time. */
  readonly clock?: Clock;
  /** Defaults to node:crypto; the simulator passes a seeded source. */
  readonly random?: RandomSource;
  readonly tickMs?: number;
  readonly electionTimeoutTicks?: number;
  readonly heartbeatIntervalTicks?: number;
  /** Compact the log once this many entries have been applied since the last snapshot. */
  readonly snapshotEntries?: number;
  /** Proposals queued on the leader, and proposals queued on a follower for forwarding, each at most. */
  readonly proposalQueueMax?: number;
  /** How long a request waits for its commit, its read confirmation or a forwarded reply. */
  readonly requestTimeoutMs?: number;
  /**
   * How long a write or a linearizable read that meets an election waits for a leader before it
   * is refused (Consul's rpc_hold_timeout), so a failover is a pause, not an error.
   */
  readonly leaderWaitMs?: number;
  /** Core settings to override (message and window sizes, the catch-up margin, planted bugs). */
  readonly raft?: Partial<Omit<RaftConfig, "id" | "random">>;
  readonly plantedBug?: DriverPlantedBug;
  /** Told of fsyncs, acknowledged appends, elections and snapshots (the server's metrics); none by default. */
  readonly observer?: RaftObserver;
}

export const driverDefaults = {
  // 50 ms ticks: heartbeats every 50 ms and an election timeout of 600 ms, randomized to
  // [600, 1200) ms. Failover then takes at most ~1.2 s plus an election round trip (p99 <= 1.5 s),
  // while pre-vote and check-quorum keep a node stalled for a few hundred ms from forcing elections.
  tickMs: 50,
  electionTimeoutTicks: 12,
  heartbeatIntervalTicks: 1,
  snapshotEntries: 50_000,
  proposalQueueMax: 65_536,
  requestTimeoutMs: 5_000,
  leaderWaitMs: 7_000,
} as const;

export interface DriverSettings {
  readonly id: NodeId;
  readonly clock: Clock;
  readonly random: RandomSource;
  readonly tickMs: number;
  readonly electionTimeoutTicks: number;
  readonly heartbeatIntervalTicks: number;
  readonly snapshotEntries: number;
  readonly proposalQueueMax: number;
  readonly requestTimeoutMs: number;
  readonly leaderWaitMs: number;
  readonly raft: Partial<Omit<RaftConfig, "id" | "random">>;
  readonly plantedBug: DriverPlantedBug | undefined;
  readonly observer: RaftObserver;
}

const cryptoRandom: RandomSource = { nextInt: (bound) => randomInt(bound) };

export function resolveDriverSettings(opts: RaftDriverOptions): DriverSettings {
  const positive = (name: keyof typeof driverDefaults): number => {
    const value = opts[name] ?? driverDefaults[name];
    if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive whole number, not ${value}`);
    return value;
  };
  const settings: DriverSettings = {
    id: opts.id,
    clock: opts.clock ?? systemClock,
    random: opts.random ?? cryptoRandom,
    tickMs: positive("tickMs"),
    electionTimeoutTicks: positive("electionTimeoutTicks"),
    heartbeatIntervalTicks: positive("heartbeatIntervalTicks"),
    snapshotEntries: positive("snapshotEntries"),
    proposalQueueMax: positive("proposalQueueMax"),
    requestTimeoutMs: positive("requestTimeoutMs"),
    leaderWaitMs: positive("leaderWaitMs"),
    raft: opts.raft ?? {},
    plantedBug: opts.plantedBug,
    observer: opts.observer ?? silentRaftObserver,
  };
  if (settings.electionTimeoutTicks <= settings.heartbeatIntervalTicks) {
    throw new RangeError(`electionTimeoutTicks (${settings.electionTimeoutTicks}) must exceed heartbeatIntervalTicks (${settings.heartbeatIntervalTicks})`);
  }
  return settings;
}
