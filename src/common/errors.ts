// Errors with no domain: what more than one module throws, and how to read what was thrown.

/**
 * A blocking read refused because the node already holds its bound of waiting readers. The
 * registry's blocking queries and the CA's share it, so the API answers both with 429.
 */
export class TooManyWatchersError extends Error {
  constructor(limit: number) {
    super(`${limit} blocking queries are already waiting on this node; retry shortly or without ?index`);
    this.name = "TooManyWatchersError";
  }
}

/** The message of a thrown value: JavaScript may throw anything, not only an Error. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A thrown value as an Error, for a callback or a field that takes one. An Error is returned as is. */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
