// Who may hold which SPIFFE ID: decided here, in one function, for every path that issues a
// certificate (the HTTP sign route, Consul's leaf route, the Workload API socket). ACL tokens
// will plug in here; until then the HTTP paths are open, and the node says so at start.

import type { SpiffeId } from "./spiffe.js";
import { type WorkloadRule, formatSelector, selectorMatches } from "./workload_rules.js";

/** What is known about whoever asks for a certificate. */
export interface Caller {
  /** The token the request carried (X-Consul-Token or Authorization: Bearer), if any. */
  readonly token: string | undefined;
  /** Where the request came from, for logs and errors: "http 127.0.0.1", "workload socket". */
  readonly origin: string;
  /**
   * The effective uid and gid of a process calling on the Workload API's Unix socket, as the
   * kernel recorded them at connect() (SO_PEERCRED); undefined for callers over the network.
   */
  readonly uid?: number;
  readonly gid?: number;
}

export interface Authorizer {
  /** True when `caller` may hold `id`. Must not throw for an unknown caller: answer false. */
  mayHold(caller: Caller, id: SpiffeId): boolean;
  /** One line for the start-up log: what this authorizer lets through. */
  readonly description: string;
}

/** Lets anyone hold any identity in the trust domain: the stance until ACL tokens exist. */
export const openAuthorizer: Authorizer = {
  mayHold: () => true,
  description: "open: any caller may obtain any SPIFFE ID in the trust domain (ACL tokens are not implemented yet)",
};

/**
 * The Workload API socket's rules (src/ca/workload_rules.ts): a caller whose uid or gid a rule
 * selects may hold that rule's SPIFFE ID. Callers without a uid (over the network) hold nothing
 * by these rules, not even by a rule that selects every caller of the socket.
 */
export function workloadRuleAuthorizer(rules: readonly WorkloadRule[]): Authorizer {
  const described = rules.map((r) => `${formatSelector(r.selector)}=${r.spiffeId}`);
  return {
    mayHold: (caller, id) => {
      const { uid, gid } = caller;
      if (uid === undefined || gid === undefined) return false;
      return rules.some((r) => r.spiffeId === id.uri && selectorMatches(r.selector, { uid, gid }));
    },
    description: rules.length === 0 ? "workload rules: none, so no caller holds any identity" : `workload rules by the caller's uid/gid (SO_PEERCRED): ${described.join(", ")}`,
  };
}
