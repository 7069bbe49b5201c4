// What a node reports about itself and the cluster: GET /v1/cluster shows it, and a follower asks
// the leader for the leader's (the only view that knows every member's progress and contact).

import type { NodeId, Role } from "../core/types.js";

export type MemberRole = "leader" | "follower" | "learner";

export const MEMBER_ROLES: readonly MemberRole[] = ["leader", "follower", "learner"];
export const ROLES: readonly Role[] = ["follower", "preCandidate", "candidate", "leader"];

export interface MemberStatus {
  readonly id: NodeId;
  readonly peerAddress: string;
  readonly role: MemberRole;
  /** Known on the leader only: the highest log index the member is known to hold. */
  readonly match: number | undefined;
  /** Known on the leader only: milliseconds since the leader last heard from the member (0 for itself; undefined if never). */
  readonly lastContactMs: number | undefined;
  /**
   * Known on the leader only: heard from within an election timeout. Undefined also while the
   * leader has led for less than that and not yet heard from the member.
   */
  readonly reachable: boolean | undefined;
}

export interface NodeStatus {
  readonly id: NodeId;
  readonly role: Role;
  readonly leader: NodeId;
  readonly term: number;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  /** Milliseconds since this node last heard from the leader (0 on the leader itself). */
  readonly lastContactMs: number | undefined;
  readonly members: MemberStatus[];
}

/** A member as the leader sees it, with how far its log trails the commit index. */
export interface MemberHealth extends MemberStatus {
  /** Committed entries the member is not known to hold; undefined when its match is unknown. */
  readonly lagEntries: number | undefined;
}

/** The cluster's health from the leader's status, as Consul's autopilot reports it. */
export interface ClusterHealth {
  readonly leader: NodeId;
  readonly term: number;
  readonly commitIndex: number;
  /** Every voter is reachable. */
  readonly healthy: boolean;
  /** Voters that may fail, beyond those already unreachable, before the cluster loses its quorum (negative: it has lost it). */
  readonly failureTolerance: number;
  readonly members: MemberHealth[];
}

/** Health from a leader's status (see RaftDriver.leaderStatus). */
export function clusterHealth(leaderStatus: NodeStatus): ClusterHealth {
  const voters = leaderStatus.members.filter((m) => m.role !== "learner");
  const reachableVoters = voters.filter((m) => m.reachable === true).length;
  const quorum = Math.floor(voters.length / 2) + 1;
  return {
    leader: leaderStatus.leader,
    term: leaderStatus.term,
    commitIndex: leaderStatus.commitIndex,
    healthy: reachableVoters === voters.length,
    failureTolerance: reachableVoters - quorum,
    members: leaderStatus.members.map((m) => ({
      ...m,
      lagEntries: m.match === undefined ? undefined : Math.max(0, leaderStatus.commitIndex - m.match),
    })),
  };
}
