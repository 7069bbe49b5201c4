// Who may hold which SPIFFE ID: decided here, in one function, for every path that issues a
// certificate (the HTTP sign route, Consul's leaf route, the Workload API socket). ACL tokens
// will plug in here; until then the HTTP paths are open, and the node says so at start.

import type { SpiffeId } from "./spiffe.js";

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

/** Lets anyone hold any identity in the trust domain: the stance until ACL tokens exist. */
export const openAuthorizer: Authorizer = {
  mayHold: () => true,
  description: "open: any caller may obtain any SPIFFE ID in the trust domain (ACL tokens are not implemented yet)",
};

/** Allows exactly the listed identities, whoever asks: for a socket configured with what it may hand out. */
export function listAuthorizer(ids: readonly string[]): Authorizer {
  const allowed = new Set(ids);
  return {
    mayHold: (_caller, id) => allowed.has(id.uri),
    description: `only these identities: ${[...allowed].join(", ")}`,
  };
}
