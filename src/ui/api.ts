// The dashboard's calls to the HTTP API, with the user's ACL token. The token lives in this tab's
// sessionStorage only: it is gone when the tab closes, no other tab or site sees it, it is never a
// cookie (so no other page can make the browser send it) and never part of a URL (so it is in no
// history, log or Referer). It travels in the X-Consul-Token header, as Consul's own UI sends it.

const TOKEN_KEY = "cairn.token";

export const token = {
  get(): string | undefined {
    const stored = sessionStorage.getItem(TOKEN_KEY);
    return stored === null || stored === "" ? undefined : stored;
  },
  set(secret: string): void {
    sessionStorage.setItem(TOKEN_KEY, secret);
  },
  forget(): void {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** The server answered with an error status; `message` is what it said. */
export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly path: string) {
    super(message);
    this.name = "ApiError";
  }

  /** The presented token does not exist (Consul's words: "ACL not found"). */
  get badToken(): boolean {
    return this.status === 403 && this.message.startsWith("ACL not found");
  }

  get denied(): boolean {
    return this.status === 403;
  }
}

/** Longest error text kept from an answer: enough for any of Cairn's messages. */
const ERROR_CHARS_MAX = 500;

export function authHeaders(extra: Record<string, string> = {}): Record<string, string> {
  const secret = token.get();
  return secret === undefined ? extra : { ...extra, "X-Consul-Token": secret };
}

/** The error an answer carries: the `error` of Cairn's JSON bodies, or the plain text of Consul's. */
export async function errorOf(res: Response, path: string): Promise<ApiError> {
  const body = (await res.text().catch(() => "")).slice(0, ERROR_CHARS_MAX);
  let message = body === "" ? `${res.status} ${res.statusText}` : body;
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed !== null && typeof parsed === "object" && "error" in parsed && typeof parsed.error === "string") message = parsed.error;
  } catch {
    // Not JSON: the text is the message.
  }
  return new ApiError(res.status, message, path);
}

export async function getJson(path: string, signal?: AbortSignal): Promise<unknown> {
  const res = await fetch(path, { headers: authHeaders({ accept: "application/json" }), cache: "no-store", credentials: "omit", ...(signal === undefined ? {} : { signal }) });
  if (!res.ok) throw await errorOf(res, path);
  return (await res.json()) as unknown;
}
