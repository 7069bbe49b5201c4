// Every checker of a chaos run's history, run in one call. Each is pure over the RunHistory
// except the certificate checker, which runs openssl (hence the promise).
//
// The Raft simulator's KV checker (./linearizability.ts) is not one of these: it judges the
// simulator's histories, not a run's.

import type { RunHistory, Verdict } from "../history.js";
import { checkAvailability } from "./availability.js";
import { type CertificateCheckOptions, checkCertificates } from "./certificates.js";
import { checkLeaders } from "./leaders.js";
import { checkLostWrites } from "./lost_writes.js";
import { type RegistryLinearizabilityOptions, checkRegistryLinearizability } from "./registry_linearizability.js";
import { checkStaleReads } from "./stale_reads.js";
import { checkTtl } from "./ttl.js";
import { checkWatches } from "./watches.js";

export { checkAvailability } from "./availability.js";
export { checkCertificates, type CertificateCheckOptions } from "./certificates.js";
export { checkLeaders } from "./leaders.js";
export { checkLostWrites } from "./lost_writes.js";
export { checkRegistryLinearizability, type RegistryLinearizabilityOptions } from "./registry_linearizability.js";
export { checkStaleReads } from "./stale_reads.js";
export { checkTtl } from "./ttl.js";
export { checkWatches } from "./watches.js";

export interface CheckRunOptions {
  readonly linearizable?: RegistryLinearizabilityOptions;
  readonly certificates?: CertificateCheckOptions;
}

/** The verdicts, in a fixed order: linearizable, stale-reads, lost-writes, watches, certificates, leaders, availability, ttl. */
export async function checkRun(history: RunHistory, opts: CheckRunOptions = {}): Promise<Verdict[]> {
  // Started first so openssl works while the pure checkers run.
  const certificates = checkCertificates(history, opts.certificates);
  const pure = [
    checkRegistryLinearizability(history, opts.linearizable),
    checkStaleReads(history),
    checkLostWrites(history),
    checkWatches(history),
  ];
  const rest = [checkLeaders(history), checkAvailability(history), checkTtl(history)];
  return [...pure, await certificates, ...rest];
}

/** For the run's last line: anomalies over every verdict, and the instances the lost-writes checker counted lost. */
export function summarize(verdicts: readonly Verdict[]): { anomalies: number; lost: number } {
  let anomalies = 0;
  let lost = 0;
  for (const v of verdicts) {
    const found = v.stats.anomaliesFound;
    anomalies += typeof found === "number" ? found : v.anomalies.length;
    if (v.checker === "lost-writes" && typeof v.stats.lost === "number") lost += v.stats.lost;
  }
  return { anomalies, lost };
}
