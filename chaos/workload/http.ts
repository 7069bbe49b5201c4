// One HTTP request from a chaos client to one node, bounded in time, with what the client can
// know about its fate: answered, never sent, or lost on the way (sent, then no answer).

import { errorMessage } from "../../src/common/errors.js";

/** A node as the workload reaches it; HOST:PORT each. */
export interface NodeTarget {
  readonly id: string;
  readonly http: string;
  readonly grpc: string;
}

export type HttpResult =
  | { readonly kind: "answer"; readonly status: number; readonly body: unknown; readonly text: string }
  /** The connection was refused: nothing was sent, so nothing happened. */
  | { readonly kind: "refused"; readonly error: string }
  /** A timeout, a reset, a broken answer: the node may have acted on the request. */
  | { readonly kind: "lost"; readonly error: string };

export async function callNode(node: NodeTarget, method: "GET" | "POST" | "PUT" | "DELETE", path: string,
  body: object | undefined, timeoutMs: number): Promise<HttpResult> {
  try {
    const res = await fetch(`http://${node.http}${path}`, {
      method,
      signal: AbortSignal.timeout(timeoutMs),
      ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { kind: "answer", status: res.status, body: parseJson(text), text };
  } catch (err) {
    if (connectionRefused(err)) return { kind: "refused", error: `${node.id}: connection refused` };
    const timedOut = err instanceof Error && err.name === "TimeoutError";
    return { kind: "lost", error: timedOut ? `${node.id}: no answer within ${timeoutMs} ms` : `${node.id}: ${describe(err)}` };
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** fetch reports a refused connect as a TypeError whose cause (or each of whose causes) is ECONNREFUSED. */
function connectionRefused(err: unknown): boolean {
  const cause = err instanceof Error ? err.cause : undefined;
  if (cause instanceof AggregateError) return cause.errors.length > 0 && cause.errors.every((e) => codeOf(e) === "ECONNREFUSED");
  return codeOf(cause) === "ECONNREFUSED";
}

function codeOf(err: unknown): unknown {
  return typeof err === "object" && err !== null && "code" in err ? err.code : undefined;
}

function describe(err: unknown): string {
  const cause = err instanceof Error ? err.cause : undefined;
  return cause === undefined ? errorMessage(err) : `${errorMessage(err)} (${errorMessage(cause)})`;
}

/** The `error` field of a Cairn error body, if it has one. */
export function errorField(body: unknown): string | undefined {
  return typeof body === "object" && body !== null && "error" in body && typeof body.error === "string" ? body.error : undefined;
}
