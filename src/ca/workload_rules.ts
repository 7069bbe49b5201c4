// Which caller of the SPIFFE Workload API may hold which SPIFFE ID. A rule pairs one selector
// with one SPIFFE ID, as a SPIRE registration entry pairs the unix workload attestor's
// `unix:uid:<n>` / `unix:gid:<n>` selectors with an ID. The selectors are matched against the uid
// and gid the kernel recorded for the caller's connection (SO_PEERCRED): its effective uid and
// gid when it called connect(), which the caller cannot forge. A caller holds every ID of every
// rule that matches it; a caller that no rule matches holds nothing.
//
// Text form (--workload-attest): `uid:1000=spiffe://td/ns/default/svc/web,gid:50=spiffe://...`.
// `--workload-identities ID,...` is the older, unattested form: rules that match every caller.

import { parseSpiffeId } from "./spiffe.js";
import { errorMessage } from "../common/errors.js";

export const workloadRuleLimits = {
  /** Rules per node: a bound on configuration, far past any one node's workloads. */
  rulesMax: 1024,
  /** uid_t and gid_t are 32 bits; (uid_t)-1 means "no change" to chown and is no one's id. */
  unixIdMax: 0xffff_fffe,
} as const;

export type WorkloadSelector =
  | { readonly kind: "uid"; readonly uid: number }
  | { readonly kind: "gid"; readonly gid: number }
  /** Every caller of the socket: what --workload-identities grants. */
  | { readonly kind: "any" };

export interface WorkloadRule {
  readonly selector: WorkloadSelector;
  readonly spiffeId: string;
}

/** What the kernel says about a caller of the socket. */
export interface WorkloadPeer {
  readonly uid: number;
  readonly gid: number;
}

export class WorkloadRuleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WorkloadRuleError";
  }
}

const RULE_FORM = "uid:<number>=<SPIFFE ID> or gid:<number>=<SPIFFE ID>";

/**
 * The rules in `text` (comma-separated), each naming a SPIFFE ID in `trustDomain`. Throws a
 * WorkloadRuleError naming the rule at fault and the form it must take.
 */
export function parseWorkloadRules(text: string, trustDomain: string): WorkloadRule[] {
  const rules: WorkloadRule[] = [];
  const seen = new Set<string>();
  for (const part of text.split(",").map((p) => p.trim()).filter((p) => p !== "")) {
    const eq = part.indexOf("=");
    const selectorText = eq < 0 ? part : part.slice(0, eq);
    const match = /^(uid|gid):(\d{1,10})$/.exec(selectorText);
    if (eq < 0 || match === null) throw new WorkloadRuleError(`rule "${part}" must be ${RULE_FORM}`);
    const n = Number(match[2]);
    if (n > workloadRuleLimits.unixIdMax) throw new WorkloadRuleError(`rule "${part}": ${match[1]} ${match[2]} is past the largest ${match[1]}, ${workloadRuleLimits.unixIdMax}`);
    const spiffeId = part.slice(eq + 1);
    checkIdentity(spiffeId, trustDomain, `rule "${part}"`);
    const selector: WorkloadSelector = match[1] === "uid" ? { kind: "uid", uid: n } : { kind: "gid", gid: n };
    const key = `${formatSelector(selector)}=${spiffeId}`;
    if (seen.has(key)) throw new WorkloadRuleError(`rule "${part}" is given twice; remove one`);
    seen.add(key);
    rules.push({ selector, spiffeId });
  }
  if (rules.length > workloadRuleLimits.rulesMax) throw new WorkloadRuleError(`${rules.length} rules given; a node takes at most ${workloadRuleLimits.rulesMax}`);
  return rules;
}

/** Rules that grant each of `ids` to every caller: the meaning of --workload-identities. */
export function everyCallerRules(ids: readonly string[], trustDomain: string): WorkloadRule[] {
  for (const id of ids) checkIdentity(id, trustDomain, `"${id}"`);
  return [...new Set(ids)].map((spiffeId) => ({ selector: { kind: "any" }, spiffeId }));
}

function checkIdentity(spiffeId: string, trustDomain: string, what: string): void {
  let idTrustDomain: string;
  try {
    idTrustDomain = parseSpiffeId(spiffeId).trustDomain;
  } catch (err) {
    throw new WorkloadRuleError(`${what}: ${errorMessage(err)}`);
  }
  if (idTrustDomain !== trustDomain) throw new WorkloadRuleError(`${what}: ${spiffeId} is not in trust domain ${trustDomain}`);
}

export function selectorMatches(selector: WorkloadSelector, peer: WorkloadPeer): boolean {
  switch (selector.kind) {
    case "uid":
      return selector.uid === peer.uid;
    case "gid":
      return selector.gid === peer.gid;
    case "any":
      return true;
  }
}

export function formatSelector(selector: WorkloadSelector): string {
  switch (selector.kind) {
    case "uid":
      return `uid:${selector.uid}`;
    case "gid":
      return `gid:${selector.gid}`;
    case "any":
      return "*";
  }
}

/** Every SPIFFE ID some rule grants, once each, in the order the rules give them. */
export function ruleIdentities(rules: readonly WorkloadRule[]): string[] {
  return [...new Set(rules.map((r) => r.spiffeId))];
}
