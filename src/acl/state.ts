// ACL tokens and policies as a replicated state machine.
//
// A token is kept by its AccessorID with a SHA-256 hash of its SecretID: the secret itself never
// enters a command, the log, a snapshot or memory beyond the request that made it. Commands are
// decided by the proposer (ids, secrets, times), so apply() is deterministic; a command that lost
// a race (a second bootstrap, a name taken meanwhile) is ignored, and the proposer learns it by
// reading the state at the index its proposal committed at.

import { createHash } from "node:crypto";
import { type Chunks, CodecError, Reader, Writer } from "../common/codec.js";
import type { StateMachine } from "../raft/state_machine.js";

export const MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001";
export const MANAGEMENT_POLICY_NAME = "global-management";
export const ANONYMOUS_ACCESSOR_ID = "00000000-0000-0000-0000-000000000002";
/** Consul's anonymous token's SecretID: presenting it is the same as presenting none. */
export const ANONYMOUS_SECRET = "anonymous";
/** What the management policy's Rules show; the resolver grants everything to it by its ID, whatever the text. */
export const MANAGEMENT_RULES = JSON.stringify({ acl: "write", operator: "write", ca: "write", service_prefix: { "": { policy: "write" } }, node_prefix: { "": { policy: "write" } }, key_prefix: { "": { policy: "write" } } });

export const OP_BOOTSTRAP = 1;
export const OP_TOKEN_SET = 2;
export const OP_TOKEN_DELETE = 3;
export const OP_POLICY_SET = 4;
export const OP_POLICY_DELETE = 5;
const SNAPSHOT_VERSION = 1;

export interface AclToken {
  readonly accessorId: string;
  /** SHA-256 of the SecretID, hex. */
  readonly secretHash: string;
  readonly description: string;
  readonly policyIds: readonly string[];
  readonly local: boolean;
  readonly createTimeMs: number;
  readonly createIndex: number;
  readonly modifyIndex: number;
}

export interface AclPolicy {
  readonly id: string;
  readonly name: string;
  readonly description: string;
  /** Consul's JSON rules, as given; checked by the proposer before it is proposed. */
  readonly rules: string;
  readonly createIndex: number;
  readonly modifyIndex: number;
}

export type NewToken = Omit<AclToken, "createIndex" | "modifyIndex">;
export type NewPolicy = Omit<AclPolicy, "createIndex" | "modifyIndex">;

export type AclCommand =
  | { readonly op: typeof OP_BOOTSTRAP; readonly management: NewToken; readonly atMs: number }
  /** `create`: only if neither the accessor nor the secret exist yet. Otherwise an update of an existing token, which keeps its secret. */
  | { readonly op: typeof OP_TOKEN_SET; readonly token: NewToken; readonly create: boolean }
  | { readonly op: typeof OP_TOKEN_DELETE; readonly accessorId: string }
  | { readonly op: typeof OP_POLICY_SET; readonly policy: NewPolicy; readonly create: boolean }
  | { readonly op: typeof OP_POLICY_DELETE; readonly id: string };

export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex");
}

function writeToken(w: Writer, t: NewToken): void {
  w.string(t.accessorId);
  w.string(t.secretHash);
  w.string(t.description);
  w.strings(t.policyIds);
  w.u8(t.local ? 1 : 0);
  w.uint(t.createTimeMs);
}

function readToken(r: Reader): NewToken {
  const accessorId = r.string();
  const secretHash = r.string();
  if (!/^[0-9a-f]{64}$/.test(secretHash)) throw new CodecError(`token ${accessorId}: secret hash is not 64 hex digits`);
  return { accessorId, secretHash, description: r.string(), policyIds: r.strings(), local: r.bool(), createTimeMs: r.uint() };
}

function writePolicy(w: Writer, p: NewPolicy): void {
  w.string(p.id);
  w.string(p.name);
  w.string(p.description);
  w.string(p.rules);
}

function readPolicy(r: Reader): NewPolicy {
  return { id: r.string(), name: r.string(), description: r.string(), rules: r.string() };
}

export function encodeAclCommand(cmd: AclCommand): Uint8Array {
  const w = new Writer(256);
  w.u8(cmd.op);
  switch (cmd.op) {
    case OP_BOOTSTRAP:
      writeToken(w, cmd.management);
      w.uint(cmd.atMs);
      break;
    case OP_TOKEN_SET:
      writeToken(w, cmd.token);
      w.u8(cmd.create ? 1 : 0);
      break;
    case OP_TOKEN_DELETE:
      w.string(cmd.accessorId);
      break;
    case OP_POLICY_SET:
      writePolicy(w, cmd.policy);
      w.u8(cmd.create ? 1 : 0);
      break;
    case OP_POLICY_DELETE:
      w.string(cmd.id);
      break;
  }
  return w.finish();
}

/** Strict: an unknown op, a malformed field or trailing bytes raise CodecError. */
export function decodeAclCommand(data: Uint8Array): AclCommand {
  const r = new Reader(data);
  const op = r.u8();
  let cmd: AclCommand;
  switch (op) {
    case OP_BOOTSTRAP:
      cmd = { op, management: readToken(r), atMs: r.uint() };
      break;
    case OP_TOKEN_SET:
      cmd = { op, token: readToken(r), create: r.bool() };
      break;
    case OP_TOKEN_DELETE:
      cmd = { op, accessorId: r.string() };
      break;
    case OP_POLICY_SET:
      cmd = { op, policy: readPolicy(r), create: r.bool() };
      break;
    case OP_POLICY_DELETE:
      cmd = { op, id: r.string() };
      break;
    default:
      throw new CodecError(`unknown ACL command op ${op}`);
  }
  r.done();
  return cmd;
}

export class AclState implements StateMachine {
  private tokens = new Map<string, AclToken>();
  private byHash = new Map<string, string>();
  private policies = new Map<string, AclPolicy>();
  private byName = new Map<string, string>();
  private bootstrapIndexValue = 0;
  private revisionValue = 0;
  private readonly listeners: (() => void)[] = [];

  /** Called after every apply or restore that changed tokens or policies. */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** The index bootstrap committed at; 0 before. */
  get bootstrapIndex(): number {
    return this.bootstrapIndexValue;
  }

  /** The index of the last change; 0 before any. */
  get revision(): number {
    return this.revisionValue;
  }

  token(accessorId: string): AclToken | undefined {
    return this.tokens.get(accessorId);
  }

  tokenBySecret(secret: string): AclToken | undefined {
    const accessor = this.byHash.get(hashSecret(secret));
    return accessor === undefined ? undefined : this.tokens.get(accessor);
  }

  allTokens(): Iterable<AclToken> {
    return this.tokens.values();
  }

  policy(id: string): AclPolicy | undefined {
    return this.policies.get(id);
  }

  policyByName(name: string): AclPolicy | undefined {
    const id = this.byName.get(name);
    return id === undefined ? undefined : this.policies.get(id);
  }

  allPolicies(): Iterable<AclPolicy> {
    return this.policies.values();
  }

  apply(index: number, data: Uint8Array): void {
    const cmd = decodeAclCommand(data);
    if (this.applyCommand(index, cmd)) this.changed(index);
  }

  /** True when the state changed. */
  private applyCommand(index: number, cmd: AclCommand): boolean {
    switch (cmd.op) {
      case OP_BOOTSTRAP: {
        if (this.bootstrapIndexValue !== 0) return false;
        this.bootstrapIndexValue = index;
        this.putPolicy({ id: MANAGEMENT_POLICY_ID, name: MANAGEMENT_POLICY_NAME, description: "Builtin Policy that grants unlimited access", rules: MANAGEMENT_RULES, createIndex: index, modifyIndex: index });
        this.putToken({ ...cmd.management, policyIds: [MANAGEMENT_POLICY_ID], createIndex: index, modifyIndex: index });
        if (!this.tokens.has(ANONYMOUS_ACCESSOR_ID)) {
          this.putToken({ accessorId: ANONYMOUS_ACCESSOR_ID, secretHash: hashSecret(ANONYMOUS_SECRET), description: "Anonymous Token", policyIds: [], local: false, createTimeMs: cmd.atMs, createIndex: index, modifyIndex: index });
        }
        return true;
      }
      case OP_TOKEN_SET: {
        const existing = this.tokens.get(cmd.token.accessorId);
        if (cmd.create) {
          if (existing !== undefined || this.byHash.has(cmd.token.secretHash)) return false;
          this.putToken({ ...cmd.token, createIndex: index, modifyIndex: index });
        } else {
          if (existing === undefined) return false;
          this.putToken({ ...cmd.token, secretHash: existing.secretHash, createTimeMs: existing.createTimeMs, createIndex: existing.createIndex, modifyIndex: index });
        }
        return true;
      }
      case OP_TOKEN_DELETE: {
        const existing = this.tokens.get(cmd.accessorId);
        if (existing === undefined) return false;
        this.tokens.delete(existing.accessorId);
        this.byHash.delete(existing.secretHash);
        return true;
      }
      case OP_POLICY_SET: {
        const existing = this.policies.get(cmd.policy.id);
        const holder = this.byName.get(cmd.policy.name);
        if (holder !== undefined && holder !== cmd.policy.id) return false;
        if (cmd.create ? existing !== undefined : existing === undefined) return false;
        if (existing !== undefined) this.byName.delete(existing.name);
        this.putPolicy({ ...cmd.policy, createIndex: existing?.createIndex ?? index, modifyIndex: index });
        return true;
      }
      case OP_POLICY_DELETE: {
        const existing = this.policies.get(cmd.id);
        if (existing === undefined || existing.id === MANAGEMENT_POLICY_ID) return false;
        this.policies.delete(existing.id);
        this.byName.delete(existing.name);
        return true;
      }
    }
  }

  private putToken(t: AclToken): void {
    const previous = this.tokens.get(t.accessorId);
    if (previous !== undefined) this.byHash.delete(previous.secretHash);
    this.tokens.set(t.accessorId, t);
    this.byHash.set(t.secretHash, t.accessorId);
  }

  private putPolicy(p: AclPolicy): void {
    this.policies.set(p.id, p);
    this.byName.set(p.name, p.id);
  }

  snapshot(): Chunks {
    const w = new Writer(1024);
    w.u8(SNAPSHOT_VERSION);
    w.uint(this.revisionValue);
    w.uint(this.bootstrapIndexValue);
    w.uint(this.policies.size);
    for (const p of this.policies.values()) {
      writePolicy(w, p);
      w.uint(p.createIndex);
      w.uint(p.modifyIndex);
    }
    w.uint(this.tokens.size);
    for (const t of this.tokens.values()) {
      writeToken(w, t);
      w.uint(t.createIndex);
      w.uint(t.modifyIndex);
    }
    return [w.finish()];
  }

  restore(data: Uint8Array): void {
    this.tokens = new Map();
    this.byHash = new Map();
    this.policies = new Map();
    this.byName = new Map();
    this.bootstrapIndexValue = 0;
    if (data.byteLength === 0) {
      this.changed(0);
      return;
    }
    const r = new Reader(data);
    const version = r.u8();
    if (version !== SNAPSHOT_VERSION) throw new CodecError(`ACL snapshot version ${version} is not one this build understands (${SNAPSHOT_VERSION})`);
    const revision = r.uint();
    this.bootstrapIndexValue = r.uint();
    const policies = r.uint();
    for (let i = 0; i < policies; i++) this.putPolicy({ ...readPolicy(r), createIndex: r.uint(), modifyIndex: r.uint() });
    const tokens = r.uint();
    for (let i = 0; i < tokens; i++) this.putToken({ ...readToken(r), createIndex: r.uint(), modifyIndex: r.uint() });
    r.done();
    this.changed(revision);
  }

  /**
   * Replaces the state with a backup's (snapshot() bytes, from this cluster or another), as if
   * every token and policy in it were written at `revision`, which also becomes the ACL state's
   * revision (and its bootstrap index, if the backup's ACLs were bootstrapped). Token secrets are
   * hashes in the backup as they are here, so every token in it is accepted again as it was.
   * Strict: a backup that does not decode, or names a token or policy twice, throws CodecError
   * and changes nothing.
   */
  restoreBackup(data: Uint8Array, revision: number): void {
    const r = new Reader(data);
    const version = r.u8();
    if (version !== SNAPSHOT_VERSION) throw new CodecError(`ACL section version ${version} is not one this build understands (${SNAPSHOT_VERSION})`);
    r.uint();
    const bootstrapped = r.uint() !== 0;
    const policies = new Map<string, AclPolicy>();
    const names = new Set<string>();
    for (let i = r.uint(); i > 0; i--) {
      const p = readPolicy(r);
      r.uint();
      r.uint();
      if (policies.has(p.id) || names.has(p.name)) throw new CodecError(`ACL section holds policy ${p.id} (${p.name}) twice`);
      policies.set(p.id, { ...p, createIndex: revision, modifyIndex: revision });
      names.add(p.name);
    }
    const tokens = new Map<string, AclToken>();
    const hashes = new Set<string>();
    for (let i = r.uint(); i > 0; i--) {
      const t = readToken(r);
      r.uint();
      r.uint();
      if (tokens.has(t.accessorId) || hashes.has(t.secretHash)) throw new CodecError(`ACL section holds token ${t.accessorId} (or its secret) twice`);
      tokens.set(t.accessorId, { ...t, createIndex: revision, modifyIndex: revision });
      hashes.add(t.secretHash);
    }
    r.done();
    this.tokens = new Map();
    this.byHash = new Map();
    this.policies = new Map();
    this.byName = new Map();
    for (const p of policies.values()) this.putPolicy(p);
    for (const t of tokens.values()) this.putToken(t);
    this.bootstrapIndexValue = bootstrapped ? revision : 0;
    this.changed(revision);
  }

  private changed(revision: number): void {
    this.revisionValue = revision;
    for (const l of this.listeners) l();
  }
}
