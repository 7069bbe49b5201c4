// Majority arithmetic. Only voters count; learners never do.

import type { NodeId } from "./types.js";

export type VoteResult = "won" | "lost" | "pending";

/** The highest index that a majority of voters has acknowledged. */
export function quorumMatchIndex(voters: readonly NodeId[], matchOf: (id: NodeId) => number): number {
  if (voters.length === 0) return Number.MAX_SAFE_INTEGER;
  const matches = voters.map(matchOf).sort((a, b) => b - a);
  return matches[majority(voters.length) - 1];
}

export function majority(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

export function voteResult(voters: readonly NodeId[], votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  let granted = 0;
  let rejected = 0;
  for (const id of voters) {
    const v = votes.get(id);
    if (v === true) granted++;
    else if (v === false) rejected++;
  }
  const need = majority(voters.length);
  if (granted >= need) return "won";
  if (rejected > voters.length - need) return "lost";
  return "pending";
}

export function hasQuorum(voters: readonly NodeId[], isIn: (id: NodeId) => boolean): boolean {
  let count = 0;
  for (const id of voters) if (isIn(id)) count++;
  return count >= majority(voters.length);
}
