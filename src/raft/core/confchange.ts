// Membership changes, one node at a time.
//
// Why one at a time is safe: any majority of the old voters and any majority of the new voters
// share a node when the two sets differ by one member, so two leaders cannot be elected in one
// term across the change. A change takes effect when it is applied, and the leader refuses a new
// change while an earlier one is unapplied, so no node can skip from C to C'' (which differ by two).
// New nodes enter as learners (non-voting) and are promoted once caught up, so adding a node never
// shrinks the margin of available voters while the newcomer copies the log.

import type { ConfChange, ConfState, NodeId } from "./types.js";

export function emptyConf(): ConfState {
  return { voters: [], learners: [] };
}

export function isVoter(conf: ConfState, id: NodeId): boolean {
  return conf.voters.includes(id);
}

export function isMember(conf: ConfState, id: NodeId): boolean {
  return conf.voters.includes(id) || conf.learners.includes(id);
}

/** Why `change` cannot apply to `conf`, or undefined when it can. */
export function confChangeProblem(conf: ConfState, change: ConfChange): string | undefined {
  switch (change.type) {
    case "addLearner":
      if (change.node === "") return "a node id must not be empty";
      if (isMember(conf, change.node)) return `node ${change.node} is already a member`;
      return undefined;
    case "promote":
      if (!conf.learners.includes(change.node)) return `node ${change.node} is not a learner, so it cannot be promoted`;
      return undefined;
    case "remove":
      if (!isMember(conf, change.node)) return `node ${change.node} is not a member`;
      if (conf.voters.length === 1 && conf.voters[0] === change.node) return `node ${change.node} is the last voter`;
      return undefined;
  }
}

/** The configuration after `change`. An invalid change leaves it as it was, identically on every node. */
export function applyConfChange(conf: ConfState, change: ConfChange): ConfState {
  if (confChangeProblem(conf, change) !== undefined) return conf;
  const sorted = (ids: NodeId[]): NodeId[] => ids.sort();
  switch (change.type) {
    case "addLearner":
      return { voters: conf.voters, learners: sorted([...conf.learners, change.node]) };
    case "promote":
      return {
        voters: sorted([...conf.voters, change.node]),
        learners: conf.learners.filter((id) => id !== change.node),
      };
    case "remove":
      return {
        voters: conf.voters.filter((id) => id !== change.node),
        learners: conf.learners.filter((id) => id !== change.node),
      };
  }
}
