// Who may hold which SPIFFE ID: decided here, in one function, for every path that issues a
// certificate (the HTTP sign route, Consul's leaf route, the Workload API socket). With ACLs on,
// the HTTP paths use tokenAuthorizer: a token may hold the SPIFFE ID of a service it has
// service:write on, and no other. With ACLs off they are open, and the node says so at start.

import { type SpiffeId, workloadOf } from "./spiffe.js";

/** What is known about whoever asks for a certificate. */
export interface Caller {
  /** The token the request carried (X-Consul-Token or Authorization: Bearer), if any. */
  readonly token: string | undefined;
  /** Where the request came from, for logs and errors: "http 127.0.0.1", "workload socket". */
  readonly origin: string;
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

/** Allows exactly the listed identities, whoever asks: for a socket configured with what it may hand out. */
export function listAuthorizer(ids: readonly string[]): Authorizer {
  const allowed = new Set(ids);
  return {
    mayHold: (_caller, id) => allowed.has(id.uri),
    description: `only these identities: ${[...allowed].join(", ")}`,
  };
}
