// Who may hold which SPIFFE ID: decided here, in one function, for every path that issues a
// certificate (the HTTP sign route, Consul's leaf route, the Workload API socket). With ACLs on,
// the HTTP paths use tokenAuthorizer: a token may hold the SPIFFE ID of a service it has
// service:write on, and no other. With ACLs off they are open, and the node says so at start.

import { type SpiffeId, workloadOf } from "./spiffe.js";
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

/** Lets anyone hold any identity in the trust domain: the stance with ACLs off. */
export const openAuthorizer: Authorizer = {
  mayHold: () => true,
  description: "open: any caller may obtain any SPIFFE ID in the trust domain (ACLs are off)",
};

/**
 * What the CA asks of ACLs, declared here so that the CA imports no other state machine: may the
 * holder of `token` (undefined: the anonymous token) write `service`? An unknown token may not.
 */
export interface ServiceWriteCheck {
  mayWriteService(token: string | undefined, service: string): boolean;
}

/**
 * A token may hold `spiffe://<td>/ns/<ns>/svc/<service>` and Consul's
 * `spiffe://<td>/ns/<ns>/dc/<dc>/svc/<service>` when it has service:write on <service>; no other
 * shape of ID is ever allowed through it.
 */
export function tokenAuthorizer(check: ServiceWriteCheck): Authorizer {
  return {
    mayHold: (caller, id) => {
      const workload = workloadOf(id);
      return workload !== undefined && check.mayWriteService(caller.token, workload.service);
    },
    description: "ACL tokens: a token may obtain the SPIFFE ID of a service it has service:write on, and nothing else",
  };
}

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
