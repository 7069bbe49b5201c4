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

/**
 * A node answered with something that is not Cairn's protocol: a malformed watch message, an
 * answer of the wrong shape. A watch moves to another node; a request fails with this.
 */
export class CairnProtocolError extends Error {
  constructor(readonly endpoint: string, readonly detail: string, options?: ErrorOptions) {
    super(`${endpoint} sent a malformed answer: ${detail}; is it a Cairn node of a compatible version?`, options);
    this.name = "CairnProtocolError";
  }
}

/** A bound of the client's own was exceeded. Final for what hit it: the same data would exceed it anywhere. */
export class CairnLimitError extends Error {
  constructor(readonly limit: string, readonly value: number, message: string) {
    super(message);
    this.name = "CairnLimitError";
  }
}
