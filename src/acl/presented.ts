// The token a request presents, read the same way on every path: Consul's `X-Consul-Token`
// header, `Authorization: Bearer <token>`, or the same names in gRPC metadata (`x-consul-token`,
// `authorization`). Absent means the anonymous token.

import type { Metadata } from "@grpc/grpc-js";

/** HTTP headers as node and fastify give them: lower-case names, a string or repeated strings. */
export type PresentedHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

const BEARER = /^Bearer\s+(\S+)\s*$/i;

/** The secret a request carries, or undefined for none. X-Consul-Token wins over Authorization, as in Consul. */
export function presentedToken(headers: PresentedHeaders): string | undefined {
  return fromValues(first(headers["x-consul-token"]), first(headers.authorization));
}

/** The same rule for gRPC metadata. */
export function presentedGrpcToken(metadata: Metadata): string | undefined {
  const text = (key: string): string | undefined => {
    const value = metadata.get(key)[0];
    return typeof value === "string" ? value : undefined;
  };
  return fromValues(text("x-consul-token"), text("authorization"));
}

function fromValues(consulToken: string | undefined, authorization: string | undefined): string | undefined {
  const direct = consulToken?.trim();
  if (direct !== undefined && direct !== "") return direct;
  if (authorization === undefined) return undefined;
  return BEARER.exec(authorization)?.[1];
}

function first(value: string | readonly string[] | undefined): string | undefined {
  return typeof value === "string" ? value : value?.[0];
}
