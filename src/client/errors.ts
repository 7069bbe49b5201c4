// What a caller of CairnClient can catch: a request the cluster refused, or a cluster that could
// not be reached within the bounded attempts.

/** The body of every Cairn error answer. */
export interface CairnErrorBody {
  readonly error: string;
  /** The request field at fault, for a 400. */
  readonly field?: string;
  /** A 503 may name the leader (its peer address) when the node knows it. */
  readonly leader?: string;
}

/**
 * The cluster answered and refused the request (4xx, or a 5xx other than 503). Not retried: the
 * same request would be refused again. `body.error` says what was wrong.
 */
export class CairnRequestError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly endpoint: string,
    readonly status: number,
    readonly body: CairnErrorBody,
  ) {
    super(`${method} ${path} on ${endpoint} answered ${status}: ${body.error}`);
    this.name = "CairnRequestError";
  }
}

/** Every attempt failed with a network error, a timeout or a 503. `failures` lists each one. */
export class CairnUnavailableError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly failures: readonly string[],
  ) {
    super(`${method} ${path}: no node of the cluster answered after ${failures.length} attempt(s): ${failures.join("; ")}`);
    this.name = "CairnUnavailableError";
  }
}

/** The caller aborted the request (a stopped watch, a deregistration, close()). */
export class CairnAbortedError extends Error {
  constructor(method: string, path: string) {
    super(`${method} ${path} was aborted by the caller`);
    this.name = "CairnAbortedError";
  }
}
