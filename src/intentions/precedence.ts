// The order intentions are evaluated in, and the decision they make: Consul's rules, so that a
// set of intentions written for Consul decides the same here.
//
// Precedence (higher is evaluated first):
//   source   destination   precedence
//   exact    exact         9
//   *        exact         8
//   exact    *             6
//   *        *             5
// An exact destination counts for more than an exact source. Among equal precedences the order is
// by destination name, then source name, so that `match` answers the same on every node.

/** The name that matches every service, on either side. */
export const WILDCARD = "*";

export type IntentionAction = "allow" | "deny";

/** What precedence and a decision need of an intention. */
export interface IntentionRule {
  readonly source: string;
  readonly destination: string;
  readonly action: IntentionAction;
}

const PRECEDENCE_EXACT_EXACT = 9;
const PRECEDENCE_WILDCARD_EXACT = 8;
const PRECEDENCE_EXACT_WILDCARD = 6;
const PRECEDENCE_WILDCARD_WILDCARD = 5;

export function precedenceOf(source: string, destination: string): number {
  if (destination === WILDCARD) return source === WILDCARD ? PRECEDENCE_WILDCARD_WILDCARD : PRECEDENCE_EXACT_WILDCARD;
  return source === WILDCARD ? PRECEDENCE_WILDCARD_EXACT : PRECEDENCE_EXACT_EXACT;
}

/** Evaluation order: higher precedence first, then by destination, then by source. */
export function compareIntentions(a: IntentionRule, b: IntentionRule): number {
  const byPrecedence = precedenceOf(b.source, b.destination) - precedenceOf(a.source, a.destination);
  if (byPrecedence !== 0) return byPrecedence;
  if (a.destination !== b.destination) return a.destination < b.destination ? -1 : 1;
  if (a.source !== b.source) return a.source < b.source ? -1 : 1;
  return 0;
}

/** Whether an intention's name (exact or `*`) covers `name`. */
export function nameMatches(pattern: string, name: string): boolean {
  return pattern === WILDCARD || pattern === name;
}

export interface Decision<T extends IntentionRule> {
  readonly allowed: boolean;
  /** The intention that decided; undefined when none matched and the default action did. */
  readonly by?: T;
}

/**
 * The decision for `source` calling `destination`: the first intention, in evaluation order, that
 * covers both names; if none does, `defaultAllow`. `candidates` are any intentions (those that
 * do not cover the pair are skipped), in any order.
 */
export function decide<T extends IntentionRule>(candidates: Iterable<T>, source: string, destination: string, defaultAllow: boolean): Decision<T> {
  let best: T | undefined;
  for (const i of candidates) {
    if (!nameMatches(i.source, source) || !nameMatches(i.destination, destination)) continue;
    if (best === undefined || compareIntentions(i, best) < 0) best = i;
  }
  return best === undefined ? { allowed: defaultAllow } : { allowed: best.action === "allow", by: best };
}
