// Election safety: at most one leader per term. Two sources say who led: the nodes' own logs
// (roleChanges, role "leader") and what each node answered when polled (observations). Only a
// node's claim about itself counts; its "leader" field about others is second-hand and may lag a
// term change, so it is not evidence.

import type { RunHistory, Verdict } from "../history.js";
import { AnomalyLog } from "./verdicts.js";

const LEADER_ROLE = "leader";

export function checkLeaders(history: RunHistory): Verdict {
  const anomalies = new AnomalyLog();
  /** term -> leader node -> where it was seen ("log", "poll at 1234 ms"). */
  const leadersByTerm = new Map<number, Map<string, string>>();
  const terms = new Set<number>();
  const claim = (term: number, node: string, source: string): void => {
    let leaders = leadersByTerm.get(term);
    if (leaders === undefined) leadersByTerm.set(term, (leaders = new Map<string, string>()));
    if (!leaders.has(node)) leaders.set(node, source);
  };
  for (const c of history.roleChanges) {
    terms.add(c.term);
    if (c.role.toLowerCase() === LEADER_ROLE) claim(c.term, c.node, "its log");
  }
  for (const o of history.observations) {
    terms.add(o.term);
    if (o.role.toLowerCase() === LEADER_ROLE) claim(o.term, o.node, `a poll at ${o.atMs} ms`);
  }
  const termsInOrder = [...leadersByTerm.keys()].sort((a, b) => a - b);
  let leaderChanges = 0;
  let previousLeader: string | undefined;
  for (const term of termsInOrder) {
    const leaders = [...(leadersByTerm.get(term) ?? new Map<string, string>())];
    if (leaders.length > 1) {
      const named = leaders.map(([node, source]) => `${node} (by ${source})`).join(" and ");
      anomalies.add({ message: `term ${term} had ${leaders.length} leaders: ${named}` });
    }
    const leader = leaders[0][0];
    if (previousLeader !== undefined && leader !== previousLeader) leaderChanges++;
    previousLeader = leader;
  }
  return anomalies.verdict("leaders", { termsSeen: terms.size, termsWithLeader: termsInOrder.length, leaderChanges });
}
