// The errors a node's clients see. Each says whether the request certainly had no effect, because
// only then may it be sent again without risk of applying it twice.

import { NONE, type NodeId, RaftRefusal } from "../core/types.js";
import { ForwardError } from "./ports.js";

/** Try again (the API answers 503 with Retry-After), on `leaderHint` when one is known. */
export class NotAvailableError extends Error {
  constructor(
    message: string,
    readonly leaderHint: NodeId = NONE,
    /** True when the request certainly had no effect, so retrying it is safe; false when its outcome is unknown. */
    readonly neverApplied = false,
  ) {
    super(message);
    this.name = "NotAvailableError";
  }
}

/** The core's refusals never touch the log, so every one of them is safe to retry. */
export function refusalError(err: RaftRefusal): NotAvailableError {
  return new NotAvailableError(err.message, err.leaderHint, true);
}

/** A forward that failed, as the caller of the node sees it: retryable when nothing reached the peer. */
export function forwardFailure(err: unknown, leader: NodeId): Error {
  if (err instanceof NotAvailableError) return err;
  if (err instanceof ForwardError) {
    if (err.neverDelivered) return new NotAvailableError(`could not reach leader ${leader}: ${err.message}`, leader, true);
    return new NotAvailableError(
      `leader ${leader} did not answer (${err.message}); the request may or may not have been applied`, leader, false);
  }
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * Any error from the core or a forward, as a client should see it. A membership change the
 * configuration cannot take (removing the last voter, adding a member twice) stays a refusal:
 * sending it again cannot succeed, so it is answered at once (400), not retried until the
 * leader wait is over and answered 503 (the fuzzer found that).
 */
export function toAvailabilityError(err: unknown): Error {
  if (err instanceof RaftRefusal) return err.reason === "invalidConfChange" ? err : refusalError(err);
  return err instanceof Error ? err : new Error(String(err));
}
