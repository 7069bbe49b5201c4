// ACL enforcement on every public gRPC method. A service is added through the guard with one rule
// per method (the type requires one for each); the guard resolves the token in the call's metadata
// (x-consul-token or authorization: Bearer) before the method's handler runs. Once attached, the
// server refuses any service added around the guard, so no method can be left open by forgetting.

import * as grpc from "@grpc/grpc-js";
import { AclNotFoundError, type AclService, type ResolvedToken } from "../../acl/acl.js";
import { presentedGrpcToken } from "../../acl/presented.js";
import { type Access, type NamedResource, Permissions, type Resource } from "../../acl/rules.js";
import { STREAM_TOKEN_DELETED, permissionDenied } from "./enforce.js";

export type GrpcRule =
  | { readonly open: string }
  /** The method shows only what the token may read (see permissionsOfCall). */
  | { readonly filtered: NamedResource }
  | { readonly need: Resource; readonly access: Access };

export function describeGrpcRule(rule: GrpcRule): string {
  if ("open" in rule) return `open: ${rule.open}`;
  if ("filtered" in rule) return `filtered: streams only what ${rule.filtered}:read allows`;
  return `${rule.need}:${rule.access}`;
}

/** Calls that passed the guard, with their token as it resolves now; a call ACLs never saw (ACLs off) has none. */
const tokens = new WeakMap<object, ResolvedToken>();
/** Streaming calls that want to hear when their token's permissions change (it is still valid). */
const tokenListeners = new WeakMap<object, (token: ResolvedToken) => void>();

/**
 * Tells a streaming call's handler when an ACL change narrows or widens its token while it is
 * open; permissionsOfCall answers the new permissions from then on. A deleted token needs no
 * listener: the guard ends the call with PERMISSION_DENIED.
 */
export function onCallTokenChange(call: object, listener: (token: ResolvedToken) => void): void {
  tokenListeners.set(call, listener);
}

export function permissionsOfCall(call: object): Permissions {
  return tokens.get(call)?.permissions ?? Permissions.allowAll();
}

/** The AccessorID of the token a call presented, for audit logs and rate limits; undefined with ACLs off. */
export function accessorOfCall(call: object): string | undefined {
  return tokens.get(call)?.accessorId;
}

/** What every kind of server call has: its metadata, and emit() to end it with a status. */
interface AnyCall {
  readonly metadata: grpc.Metadata;
  emit(event: "error", error: object): boolean;
  once(event: "cancelled" | "close" | "finish" | "error", listener: () => void): unknown;
}

type AnyHandler = (call: AnyCall, callback?: grpc.sendUnaryData<unknown>) => void;

/** What a public gRPC service is added through: a method cannot be added without its rule. */
export interface GuardedRegistrar {
  addService<D extends grpc.ServiceDefinition>(definition: D, impl: { readonly [K in keyof D]: grpc.UntypedHandleCall }, rules: { readonly [K in keyof D]: GrpcRule }): void;
}

/** For in-process harnesses that serve one service with no ACLs: the rules are declared but not applied. */
export function unguarded(server: grpc.Server): GuardedRegistrar {
  return { addService: (definition, impl) => server.addService(definition, impl) };
}

export class GrpcAclGuard implements GuardedRegistrar {
  private readonly rules = new Map<string, string>();
  private addToServer: ((definition: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation) => void) | undefined;

  /** Undefined: ACLs are not in play (an in-process server); every call is let through. */
  constructor(private readonly acl: AclService | undefined) {}

  /** Every method added through the guard, by path, with its rule as one line. */
  get methods(): ReadonlyMap<string, string> {
    return this.rules;
  }

  /** From now on, `server` takes services only through addService here. */
  attach(server: grpc.Server): void {
    const original = server.addService.bind(server);
    this.addToServer = original;
    server.addService = (definition: grpc.ServiceDefinition): void => {
      const paths = Object.values(definition).map((m) => m.path).join(", ");
      throw new Error(`gRPC methods ${paths} were added without ACL rules: add them with GrpcAclGuard.addService (src/api/acl/grpc.ts)`);
    };
  }

  addService<D extends grpc.ServiceDefinition>(definition: D, impl: { readonly [K in keyof D]: grpc.UntypedHandleCall }, rules: { readonly [K in keyof D]: GrpcRule }): void {
    if (this.addToServer === undefined) throw new Error("GrpcAclGuard.addService before attach()");
    const guarded: grpc.UntypedServiceImplementation = {};
    for (const name of Object.keys(definition) as (keyof D & string)[]) {
      const rule = rules[name];
      this.rules.set(definition[name].path, describeGrpcRule(rule));
      guarded[name] = this.guard(rule, impl[name] as unknown as AnyHandler, definition[name].responseStream);
    }
    this.addToServer(definition, guarded);
  }

  private guard(rule: GrpcRule, handler: AnyHandler, streaming: boolean): AnyHandler {
    if ("open" in rule) return handler;
    return (call, callback) => {
      const acl = this.acl;
      if (acl?.enabled !== true) return handler(call, callback);
      const secret = presentedGrpcToken(call.metadata);
      let token: ResolvedToken;
      try {
        token = acl.resolve(secret);
      } catch (err) {
        if (err instanceof AclNotFoundError) return refuse(call, callback, "ACL not found: the token in x-consul-token (or authorization: Bearer) names no token");
        throw err;
      }
      tokens.set(call, token);
      if ("need" in rule && !token.permissions.allows(rule.need, rule.access)) {
        return refuse(call, callback, permissionDenied(token.accessorId, rule.need, rule.access));
      }
      if (streaming) holdCallToken(acl, secret, call, rule);
      handler(call, callback);
    };
  }
}

/** A stream outlives the check that let it in: an ACL change that deletes or narrows its token reaches it too. */
function holdCallToken(acl: AclService, secret: string | undefined, call: AnyCall, rule: Exclude<GrpcRule, { readonly open: string }>): void {
  let ended = false;
  const release = acl.holdToken(secret, (now) => {
    if (ended) return;
    const refusal = now === undefined ? STREAM_TOKEN_DELETED
      : "need" in rule && !now.permissions.allows(rule.need, rule.access) ? permissionDenied(now.accessorId, rule.need, rule.access) : undefined;
    if (now === undefined || refusal !== undefined) {
      ended = true;
      release();
      refuse(call, undefined, refusal ?? STREAM_TOKEN_DELETED);
      return;
    }
    tokens.set(call, now);
    tokenListeners.get(call)?.(now);
  });
  const end = (): void => {
    ended = true;
    release();
  };
  for (const event of ["cancelled", "close", "finish", "error"] as const) call.once(event, end);
}

function refuse(call: AnyCall, callback: grpc.sendUnaryData<unknown> | undefined, details: string): void {
  const error = { code: grpc.status.PERMISSION_DENIED, details, name: "PermissionDenied", message: details };
  if (callback !== undefined) callback(error, null);
  else call.emit("error", error);
}
