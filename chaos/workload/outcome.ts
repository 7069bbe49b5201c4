// What an answer means for the history: ok, fail (certainly had no effect) or unknown. A write is
// failed only when the client is certain it did not happen; anything else that is not a 2xx is
// unknown, because calling a write that did commit "failed" would make the checkers blame the
// cluster for a lost write it never lost.

import type { Outcome } from "../history.js";
import { type HttpResult, errorField } from "./http.js";

export interface Settled {
  readonly outcome: Outcome;
  readonly status?: number;
  readonly error?: string;
}

/**
 * A 503 says in `neverApplied` whether the write certainly had no effect. Other 5xx answers (and
 * any server that omits the flag) fall back to these messages of errors that certainly had no
 * effect: each comes from a NotAvailableError built with neverApplied = true (src/raft/node) or
 * from a refusal of the Raft core, which never touches the log. A message not listed here (or
 * one whose text changes) reads as unknown, which is the safe side.
 */
const NEVER_APPLIED_MESSAGES: readonly RegExp[] = [
  /^node \S+ is shutting down$/,
  /^node \S+ is no longer the leader$/,
  /^no leader is known; retry after the election$/,
  /^no leader is known; retry after an election$/,
  /^no leader was elected within \d+ ms /,
  /^\d+ proposals are already (queued on the leader|waiting to be forwarded to the leader); retry shortly$/,
  /^the proposal was lost to a leader change before it committed; retry$/,
  /^could not reach leader \S+: /,
  /^node \S+ is not the leader; \S+ is$/,
  /^node \S+ was removed from the cluster and is handing leadership over; retry shortly$/,
  /^leadership is moving to \S+; retry there shortly$/,
  /^the leader already holds \d+ uncommitted bytes /,
];

/** A forwarded refusal repeats the leader's own message after this prefix. */
const FORWARDED_PREFIX = /^leader \S+ refused: /;

export function neverApplied(message: string): boolean {
  let inner = message;
  while (FORWARDED_PREFIX.test(inner)) inner = inner.replace(FORWARDED_PREFIX, "");
  return NEVER_APPLIED_MESSAGES.some((re) => re.test(inner));
}

function neverAppliedField(body: unknown): boolean | undefined {
  return typeof body === "object" && body !== null && "neverApplied" in body && typeof body.neverApplied === "boolean" ? body.neverApplied : undefined;
}

/** HTTP 408 is the only 4xx that says nothing about whether the request was acted on. */
const REQUEST_TIMEOUT_STATUS = 408;

/** For a register, deregister or heartbeat. */
export function writeOutcome(r: HttpResult): Settled {
  if (r.kind === "refused") return { outcome: "fail", error: r.error };
  if (r.kind === "lost") return { outcome: "unknown", error: r.error };
  if (r.status >= 200 && r.status < 300) return { outcome: "ok", status: r.status };
  const error = errorField(r.body) ?? r.text.slice(0, 200);
  // A 4xx is the node's validation, or its local state lacking the instance or check: nothing was proposed.
  if (r.status >= 400 && r.status < 500 && r.status !== REQUEST_TIMEOUT_STATUS) return { outcome: "fail", status: r.status, error };
  const flag = neverAppliedField(r.body);
  if (r.status >= 500 && (flag ?? neverApplied(error))) return { outcome: "fail", status: r.status, error };
  return { outcome: "unknown", status: r.status, error };
}

/** For a read or a certificate: nothing to take effect, so anything but a 2xx is a failure. */
export function readOutcome(r: HttpResult): Settled {
  if (r.kind !== "answer") return { outcome: "fail", error: r.error };
  if (r.status >= 200 && r.status < 300) return { outcome: "ok", status: r.status };
  return { outcome: "fail", status: r.status, error: errorField(r.body) ?? r.text.slice(0, 200) };
}
