// Monotonic reads per client. A client runs one operation at a time, so its reads are ordered;
// per (client, service) and per consistency, the revisions of its ok reads must never go down:
//   - stale reads (answered from whichever node's applied state, at once) may lag, but a client
//     must not see the service's index move backwards;
//   - linearizable reads must not either (their order is also checked, more strictly, by the
//     linearizability checker; this one catches a regressed index even when the lists agree).
// The revision is the service's index, so revisions of different services are not compared.
// Cairn promises nothing across nodes for stale reads, so they are compared per (client, node):
// the workload keeps each stale-reading client on one node until that node leaves the cluster.

import type { ReadOp, RunHistory, Verdict } from "../history.js";
import { AnomalyLog, describeOp } from "./verdicts.js";

export function checkStaleReads(history: RunHistory): Verdict {
  const anomalies = new AnomalyLog();
  const lastRead = new Map<string, ReadOp>();
  const reads = history.ops
    .filter((op): op is ReadOp => op.kind === "read" && op.outcome === "ok" && op.revision !== undefined)
    .sort((a, b) => a.invokedAtMs - b.invokedAtMs || a.id - b.id);
  let staleReads = 0;
  let linearizableReads = 0;
  for (const read of reads) {
    if (read.consistency === "stale") staleReads++;
    else linearizableReads++;
    const key = read.consistency === "stale"
      ? `${read.client}\u0000${read.service}\u0000stale\u0000${read.node}`
      : `${read.client}\u0000${read.service}\u0000linearizable`;
    const before = lastRead.get(key);
    lastRead.set(key, read);
    if (before === undefined || (read.revision ?? 0) >= (before.revision ?? 0)) continue;
    anomalies.add({
      message: `client ${read.client}: ${read.consistency} read ${describeOp(read)} of service ${read.service} on ${read.node} ` +
        `returned revision ${read.revision}, below revision ${before.revision} of its earlier read ${describeOp(before)} on ${before.node}`,
      opIds: [before.id, read.id],
      atMs: read.invokedAtMs,
    });
  }
  return anomalies.verdict("stale-reads", { staleReads, linearizableReads, clients: new Set(reads.map((r) => r.client)).size });
}
