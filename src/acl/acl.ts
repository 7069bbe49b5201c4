// ACLs on one node: resolving the token a request presents to what it may do, and deciding the
// commands that change tokens and policies before they are proposed (ids, secrets and times are
// made here, never in apply).

import { randomUUID } from "node:crypto";
import { STATE_TAG_ACL, withTag } from "../state/tags.js";
import { type DefaultPolicy, Permissions, parseRules, type Rules, RulesError } from "./rules.js";
import {
  ANONYMOUS_ACCESSOR_ID, type AclPolicy, type AclState, type AclToken, MANAGEMENT_POLICY_ID, OP_BOOTSTRAP, OP_POLICY_DELETE,
  OP_POLICY_SET, OP_TOKEN_DELETE, OP_TOKEN_SET, encodeAclCommand, hashSecret, type AclCommand,
} from "./state.js";

/** What proposing takes: the Raft driver's propose. */
export interface AclProposer {
  propose(data: Uint8Array): Promise<number>;
}

export interface AclSettings {
  /** Off: every request is allowed, as before ACLs. */
  readonly enabled: boolean;
  /** What a token may do where none of its rules say. */
  readonly defaultPolicy: DefaultPolicy;
}

/** Tokens whose permissions are kept compiled; past it the cache starts over (it is rebuilt per request cheaply). */
export const PERMISSIONS_CACHED_MAX = 10_000;
/** Policies one token may name. */
export const TOKEN_POLICIES_MAX = 64;
/** Descriptions and names longer than these are refused. */
export const DESCRIPTION_CHARS_MAX = 1024;
export const POLICY_NAME_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The presented secret names no token: Consul answers every such request 403 "ACL not found". */
export class AclNotFoundError extends Error {
  constructor() {
    super("ACL not found");
    this.name = "AclNotFoundError";
  }
}

/** A refusal: answered 403 with Consul's wording. */
export class AclPermissionError extends Error {
  constructor(message: string) {
    super(message.startsWith("Permission denied") || message.startsWith("ACL bootstrap") ? message : `Permission denied: ${message}`);
    this.name = "AclPermissionError";
  }
}

/** Bad input: answered 400, naming the field. */
export class AclInputError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "AclInputError";
  }
}

/** The named token or policy does not exist: 404 (Consul answers a missing token 404 "ACL not found"). */
export class AclMissingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AclMissingError";
  }
}

/**
 * What a stream opened under a token hears after an ACL change that touches that token (the token
 * or one of its policies was written or deleted): the token as it resolves now, or undefined once
 * its secret names no token. The stream decides whether it may go on.
 */
export type TokenRecheck = (token: ResolvedToken | undefined) => void;

/** A stream's token: its secret, and the version of the token and policies it was last checked at. */
interface HeldToken {
  readonly secret: string | undefined;
  version: string | undefined;
  readonly recheck: TokenRecheck;
}

/** Who a request is, once its token is resolved. */
export interface ResolvedToken {
  /** Undefined when ACLs are off. */
  readonly accessorId: string | undefined;
  readonly permissions: Permissions;
}

export interface TokenInput {
  readonly accessorId?: string;
  readonly secretId?: string;
  readonly description: string;
  /** Policies by ID or by name. */
  readonly policies: readonly { readonly id?: string; readonly name?: string }[];
  readonly local: boolean;
}

export interface PolicyInput {
  readonly name: string;
  readonly description: string;
  readonly rules: string;
}

export class AclService {
  private readonly compiled = new Map<string, Permissions>();
  private readonly rulesCache = new Map<string, { readonly modifyIndex: number; readonly rules: Rules }>();

  /** Open streams and their tokens; as many as the streams' own bounds allow (watch and xDS stream caps). */
  private readonly held = new Set<HeldToken>();
  private recheckScheduled = false;

  constructor(
    readonly state: AclState,
    private readonly proposer: AclProposer,
    readonly settings: AclSettings,
  ) {
    state.onChange(() => {
      this.compiled.clear();
      if (this.held.size === 0 || this.recheckScheduled) return;
      // After the apply that changed them: a burst of ACL writes is one pass over the streams.
      this.recheckScheduled = true;
      setImmediate(() => this.recheckHeld());
    });
  }

  /**
   * Ties a long-lived answer (a watch stream, an xDS stream) to the token it was opened with, so
   * that deleting the token or narrowing its policies reaches streams already open, not only new
   * requests. Returns the release, to call when the stream ends. With ACLs off, nothing is held.
   */
  holdToken(secret: string | undefined, recheck: TokenRecheck): () => void {
    if (!this.settings.enabled) return () => undefined;
    const hold: HeldToken = { secret, version: this.versionOf(secret), recheck };
    this.held.add(hold);
    return () => this.held.delete(hold);
  }

  private recheckHeld(): void {
    this.recheckScheduled = false;
    for (const hold of [...this.held]) {
      const version = this.versionOf(hold.secret);
      if (version === hold.version) continue;
      hold.version = version;
      hold.recheck(this.tryResolve(hold.secret));
    }
  }

  /** Changes whenever what the token may do can have changed: the token itself or any policy it names. */
  private versionOf(secret: string | undefined): string | undefined {
    const token = secret === undefined ? this.state.token(ANONYMOUS_ACCESSOR_ID) : this.state.tokenBySecret(secret);
    if (token === undefined) return secret === undefined ? "anonymous, not stored yet" : undefined;
    return `${token.modifyIndex}:${token.policyIds.map((id) => this.state.policy(id)?.modifyIndex ?? "gone").join(",")}`;
  }

  get enabled(): boolean {
    return this.settings.enabled;
  }

  /** The token behind a presented secret (none: the anonymous token). Throws AclNotFoundError for a secret no token has. */
  resolve(secret: string | undefined): ResolvedToken {
    if (!this.settings.enabled) return { accessorId: undefined, permissions: Permissions.allowAll() };
    const token = secret === undefined ? this.state.token(ANONYMOUS_ACCESSOR_ID) : this.state.tokenBySecret(secret);
    if (token === undefined) {
      if (secret !== undefined) throw new AclNotFoundError();
      // Before bootstrap the anonymous token is not stored yet; it has no policies either way.
      return { accessorId: ANONYMOUS_ACCESSOR_ID, permissions: Permissions.of([], this.settings.defaultPolicy) };
    }
    return { accessorId: token.accessorId, permissions: this.permissionsOf(token) };
  }

  /** resolve() that answers undefined instead of throwing, for the CA authorizer. */
  tryResolve(secret: string | undefined): ResolvedToken | undefined {
    try {
      return this.resolve(secret);
    } catch (err) {
      if (err instanceof AclNotFoundError) return undefined;
      throw err;
    }
  }

  private permissionsOf(token: AclToken): Permissions {
    let p = this.compiled.get(token.accessorId);
    if (p !== undefined) return p;
    if (token.policyIds.includes(MANAGEMENT_POLICY_ID)) p = Permissions.management();
    else {
      const rules: Rules[] = [];
      for (const id of token.policyIds) {
        const policy = this.state.policy(id);
        if (policy !== undefined) rules.push(this.rulesOf(policy));
      }
      p = Permissions.of(rules, this.settings.defaultPolicy);
    }
    if (this.compiled.size >= PERMISSIONS_CACHED_MAX) this.compiled.clear();
    this.compiled.set(token.accessorId, p);
    return p;
  }

  private rulesOf(policy: AclPolicy): Rules {
    const hit = this.rulesCache.get(policy.id);
    if (hit !== undefined && hit.modifyIndex === policy.modifyIndex) return hit.rules;
    let rules: Rules;
    try {
      rules = parseRules(policy.rules);
    } catch {
      // Checked before it was proposed; a text this build cannot read grants nothing rather than everything.
      rules = parseRules("");
    }
    if (this.rulesCache.size >= PERMISSIONS_CACHED_MAX) this.rulesCache.clear();
    this.rulesCache.set(policy.id, { modifyIndex: policy.modifyIndex, rules });
    return rules;
  }

  // ---------------------------------------------------------------- changes

  /** Makes the first management token, once. The secret is returned here and never again. */
  async bootstrap(): Promise<{ token: AclToken; secretId: string }> {
    if (this.state.bootstrapIndex !== 0) throw bootstrapDone(this.state.bootstrapIndex);
    const secretId = randomUUID();
    const now = Date.now();
    const index = await this.propose({
      op: OP_BOOTSTRAP,
      management: { accessorId: randomUUID(), secretHash: hashSecret(secretId), description: "Bootstrap Token (Global Management)", policyIds: [MANAGEMENT_POLICY_ID], local: false, createTimeMs: now },
      atMs: now,
    });
    // Another node's bootstrap may have committed first: then ours was ignored.
    if (this.state.bootstrapIndex !== index) throw bootstrapDone(this.state.bootstrapIndex);
    const token = this.state.tokenBySecret(secretId);
    if (token === undefined) throw new Error(`bootstrap committed at ${index} but its token is not in the state`);
    return { token, secretId };
  }

  async createToken(input: TokenInput): Promise<{ token: AclToken; secretId: string }> {
    const accessorId = input.accessorId ?? randomUUID();
    const secretId = input.secretId ?? randomUUID();
    if (!UUID.test(accessorId)) throw new AclInputError("AccessorID", "must be a UUID");
    if (!UUID.test(secretId)) throw new AclInputError("SecretID", "must be a UUID");
    if (this.state.token(accessorId) !== undefined) throw new AclInputError("AccessorID", `a token with AccessorID ${accessorId} already exists`);
    if (this.state.tokenBySecret(secretId) !== undefined) throw new AclInputError("SecretID", "a token with this SecretID already exists");
    const policyIds = this.policyIdsOf(input.policies);
    checkDescription(input.description);
    const index = await this.propose({
      op: OP_TOKEN_SET,
      token: { accessorId, secretHash: hashSecret(secretId), description: input.description, policyIds, local: input.local, createTimeMs: Date.now() },
      create: true,
    });
    const token = this.state.token(accessorId);
    if (token === undefined || token.createIndex !== index) throw new AclInputError("AccessorID", "another token took this AccessorID or SecretID at the same moment; retry");
    return { token, secretId };
  }

  async updateToken(accessorId: string, input: TokenInput): Promise<AclToken> {
    const existing = this.state.token(accessorId);
    if (existing === undefined) throw new AclMissingError(`ACL not found: no token with AccessorID ${accessorId}`);
    if (input.accessorId !== undefined && input.accessorId !== accessorId) throw new AclInputError("AccessorID", `names ${input.accessorId}, but the path names ${accessorId}`);
    if (input.secretId !== undefined && hashSecret(input.secretId) !== existing.secretHash) throw new AclInputError("SecretID", "a token's SecretID cannot be changed; make a new token and delete this one");
    checkDescription(input.description);
    const policyIds = this.policyIdsOf(input.policies);
    const index = await this.propose({
      op: OP_TOKEN_SET,
      token: { ...existing, description: input.description, policyIds, local: input.local },
      create: false,
    });
    const token = this.state.token(accessorId);
    if (token === undefined || token.modifyIndex !== index) throw new AclMissingError(`ACL not found: token ${accessorId} was deleted meanwhile`);
    return token;
  }

  async deleteToken(accessorId: string): Promise<void> {
    if (accessorId === ANONYMOUS_ACCESSOR_ID) throw new AclPermissionError("Permission denied: the anonymous token cannot be deleted");
    if (this.state.token(accessorId) === undefined) throw new AclMissingError(`ACL not found: no token with AccessorID ${accessorId}`);
    await this.propose({ op: OP_TOKEN_DELETE, accessorId });
  }

  async createPolicy(input: PolicyInput): Promise<AclPolicy> {
    checkPolicy(input);
    if (this.state.policyByName(input.name) !== undefined) throw new AclInputError("Name", `a policy named "${input.name}" already exists`);
    const id = randomUUID();
    const index = await this.propose({ op: OP_POLICY_SET, policy: { id, ...input }, create: true });
    const policy = this.state.policy(id);
    if (policy === undefined || policy.modifyIndex !== index) throw new AclInputError("Name", `another policy took the name "${input.name}" at the same moment`);
    return policy;
  }

  async updatePolicy(id: string, input: PolicyInput): Promise<AclPolicy> {
    const existing = this.state.policy(id);
    if (existing === undefined) throw new AclMissingError(`ACL not found: no policy with ID ${id}`);
    if (id === MANAGEMENT_POLICY_ID && (input.rules !== existing.rules || input.name !== existing.name)) {
      throw new AclInputError("Rules", "the global-management policy's name and rules cannot be changed");
    }
    checkPolicy(input);
    const holder = this.state.policyByName(input.name);
    if (holder !== undefined && holder.id !== id) throw new AclInputError("Name", `a policy named "${input.name}" already exists`);
    const index = await this.propose({ op: OP_POLICY_SET, policy: { id, ...input }, create: false });
    const policy = this.state.policy(id);
    if (policy === undefined || policy.modifyIndex !== index) throw new AclInputError("Name", `the policy was deleted or its name taken meanwhile; read it again`);
    return policy;
  }

  async deletePolicy(id: string): Promise<void> {
    if (id === MANAGEMENT_POLICY_ID) throw new AclPermissionError("Permission denied: the global-management policy cannot be deleted");
    if (this.state.policy(id) === undefined) throw new AclMissingError(`ACL not found: no policy with ID ${id}`);
    await this.propose({ op: OP_POLICY_DELETE, id });
  }

  private policyIdsOf(links: TokenInput["policies"]): string[] {
    if (links.length > TOKEN_POLICIES_MAX) throw new AclInputError("Policies", `names ${links.length} policies; at most ${TOKEN_POLICIES_MAX}`);
    const ids: string[] = [];
    links.forEach((link, i) => {
      const policy = link.id !== undefined ? this.state.policy(link.id) : link.name !== undefined ? this.state.policyByName(link.name) : undefined;
      if (link.id === undefined && link.name === undefined) throw new AclInputError(`Policies[${i}]`, "needs an ID or a Name");
      if (policy === undefined) throw new AclInputError(`Policies[${i}]`, `no policy with ${link.id !== undefined ? `ID ${link.id}` : `Name "${link.name}"`}`);
      if (!ids.includes(policy.id)) ids.push(policy.id);
    });
    return ids;
  }

  private propose(cmd: AclCommand): Promise<number> {
    return this.proposer.propose(withTag(STATE_TAG_ACL, encodeAclCommand(cmd)));
  }
}

function bootstrapDone(index: number): AclPermissionError {
  // Consul's words, which its tooling matches on.
  return new AclPermissionError(`ACL bootstrap no longer allowed (reset index: ${index})`);
}

function checkDescription(description: string): void {
  if (description.length > DESCRIPTION_CHARS_MAX) throw new AclInputError("Description", `is ${description.length} characters; at most ${DESCRIPTION_CHARS_MAX}`);
}

function checkPolicy(input: PolicyInput): void {
  if (!POLICY_NAME_PATTERN.test(input.name)) throw new AclInputError("Name", "must be 1-128 letters, digits, '_' or '-'");
  checkDescription(input.description);
  try {
    parseRules(input.rules);
  } catch (err) {
    if (err instanceof RulesError) throw new AclInputError(err.field === "Rules" ? "Rules" : `Rules.${err.field}`, err.message.replace(/^Rules: [^:]*: /, ""));
    throw err;
  }
}
