// Consul's ACL rules in their JSON form, and what a set of them permits.
//
// A policy's Rules is a JSON object such as
//   {"service":{"web":{"policy":"write"}},"service_prefix":{"":{"policy":"read"}},"operator":"read"}
// Named resources (service, node, key) have exact and prefix rules; the most specific rule wins:
// an exact name beats any prefix, and a longer prefix beats a shorter one. When several policies
// give the same name or prefix, they are merged as Consul merges them: deny beats write beats read.
// Unnamed resources (operator, acl, ca) take one level each, merged the same way.
//
// Intentions are guarded per destination by a service rule's "intentions" field:
//   {"service":{"db":{"policy":"read","intentions":"write"}}}
// A service rule without the field gives intentions the level of its policy (service:write may
// write the service's intentions, service:read may read them, deny denies both), so "intention"
// is a named resource of its own that only service rules fill.

export type Access = "read" | "write";
export type Level = "deny" | "read" | "write";
export const NAMED_RESOURCES = ["service", "node", "key", "intention"] as const;
/** The named resources a rule key may name (with or without _prefix); intention is a field of service rules. */
const RULE_RESOURCES = ["service", "node", "key"] as const;
export const UNNAMED_RESOURCES = ["operator", "acl", "ca"] as const;
export type NamedResource = (typeof NAMED_RESOURCES)[number];
export type UnnamedResource = (typeof UNNAMED_RESOURCES)[number];
export type Resource = NamedResource | UnnamedResource;

/**
 * Consul rule keys Cairn accepts so that policies written for Consul load, but that guard nothing
 * here (Cairn has no agents' own endpoints, events, prepared queries, sessions, keyring, mesh or peering).
 */
const ACCEPTED_UNUSED = new Set(["agent", "agent_prefix", "event", "event_prefix", "query", "query_prefix", "session", "session_prefix", "keyring", "mesh", "peering"]);

/** A policy's rules larger than this are refused: thousands of rules fit. */
export const RULES_BYTES_MAX = 128 * 1024;
/** Names and prefixes in one policy's rules, at most. */
export const RULE_ENTRIES_MAX = 4096;

/** A rule text that is not valid: `field` names where, for the 400. */
export class RulesError extends Error {
  constructor(readonly field: string, message: string) {
    super(`Rules: ${field}: ${message}`);
    this.name = "RulesError";
  }
}

/** One policy's rules, decoded. */
export interface Rules {
  readonly exact: Readonly<Record<NamedResource, ReadonlyMap<string, Level>>>;
  readonly prefix: Readonly<Record<NamedResource, ReadonlyMap<string, Level>>>;
  readonly unnamed: Readonly<Partial<Record<UnnamedResource, Level>>>;
}

const RANK: Readonly<Record<Level, number>> = { read: 1, write: 2, deny: 3 };

/** Consul's merge: the level that takes precedence when two rules name the same thing. */
function merge(a: Level | undefined, b: Level): Level {
  return a === undefined || RANK[b] > RANK[a] ? b : a;
}

function emptyNamed(): Record<NamedResource, Map<string, Level>> {
  return { service: new Map(), node: new Map(), key: new Map(), intention: new Map() };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function level(field: string, v: unknown, allowList: boolean): Level {
  if (v === "read" || v === "write" || v === "deny") return v;
  // Consul's key rules have "list" (list keys under a prefix); Cairn's KV reads one key at a time, so it reads as read.
  if (allowList && v === "list") return "read";
  throw new RulesError(field, `must be "read", "write" or "deny"${allowList ? ' (or "list")' : ""}, not ${JSON.stringify(v)?.slice(0, 40) ?? String(v)}`);
}

/**
 * Decodes Consul's JSON rules. HCL is refused with what to do about it; unknown keys are refused,
 * so a typo cannot silently grant or withhold.
 */
export function parseRules(text: string): Rules {
  if (Buffer.byteLength(text) > RULES_BYTES_MAX) throw new RulesError("Rules", `is ${Buffer.byteLength(text)} bytes; at most ${RULES_BYTES_MAX} are accepted`);
  const exact = emptyNamed();
  const prefix = emptyNamed();
  const unnamed: Partial<Record<UnnamedResource, Level>> = {};
  if (text.trim() === "") return { exact, prefix, unnamed };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new RulesError("Rules", 'is not JSON. Cairn reads Consul\'s JSON rule syntax only, not HCL: write service "web" { policy = "write" } as {"service":{"web":{"policy":"write"}}}');
  }
  if (!isObject(parsed)) throw new RulesError("Rules", "must be a JSON object such as {\"service_prefix\":{\"\":{\"policy\":\"read\"}}}");
  let entries = 0;
  for (const [key, value] of Object.entries(parsed)) {
    if ((UNNAMED_RESOURCES as readonly string[]).includes(key)) {
      unnamed[key as UnnamedResource] = level(key, value, false);
      continue;
    }
    const isPrefix = key.endsWith("_prefix");
    const base = isPrefix ? key.slice(0, -"_prefix".length) : key;
    const named = (RULE_RESOURCES as readonly string[]).includes(base) ? (base as NamedResource) : undefined;
    if (named === undefined && !ACCEPTED_UNUSED.has(key)) {
      throw new RulesError(key, `is not a rule Cairn knows; use service, service_prefix, node, node_prefix, key, key_prefix, operator, acl or ca`);
    }
    if (!isObject(value)) throw new RulesError(key, `must map names to {"policy": ...}, as {"${key}":{"web":{"policy":"read"}}}`);
    for (const [name, rule] of Object.entries(value)) {
      if (++entries > RULE_ENTRIES_MAX) throw new RulesError(key, `the rules name more than ${RULE_ENTRIES_MAX} names and prefixes`);
      const where = `${key}.${JSON.stringify(name)}`;
      if (!isObject(rule)) throw new RulesError(where, 'must be an object such as {"policy":"read"}');
      for (const field of Object.keys(rule)) {
        if (field !== "policy" && field !== "intentions") throw new RulesError(`${where}.${field}`, 'is not a rule field; use "policy" (and, for services, "intentions")');
      }
      if (rule.intentions !== undefined && base !== "service") throw new RulesError(`${where}.intentions`, "only service rules take intentions");
      const intentions = rule.intentions === undefined ? undefined : level(`${where}.intentions`, rule.intentions, false);
      if (rule.policy === undefined) throw new RulesError(`${where}.policy`, "is required");
      const lvl = level(`${where}.policy`, rule.policy, base === "key");
      if (named === undefined) continue;
      const into = isPrefix ? prefix : exact;
      into[named].set(name, merge(into[named].get(name), lvl));
      if (named === "service") into.intention.set(name, merge(into.intention.get(name), intentions ?? lvl));
    }
  }
  return { exact, prefix, unnamed };
}

export type DefaultPolicy = "allow" | "deny";

/** What a token may do: its policies' rules merged, with the cluster's default for what no rule names. */
export class Permissions {
  private constructor(
    private readonly rules: Rules | "management",
    private readonly fallback: DefaultPolicy,
  ) {}

  /** The global-management policy: everything. */
  static management(): Permissions {
    return new Permissions("management", "allow");
  }

  /** ACLs off: everything, as before ACLs existed. */
  static allowAll(): Permissions {
    return new Permissions("management", "allow");
  }

  static of(policies: readonly Rules[], fallback: DefaultPolicy): Permissions {
    const exact = emptyNamed();
    const prefix = emptyNamed();
    const unnamed: Partial<Record<UnnamedResource, Level>> = {};
    for (const p of policies) {
      for (const r of NAMED_RESOURCES) {
        for (const [name, l] of p.exact[r]) exact[r].set(name, merge(exact[r].get(name), l));
        for (const [name, l] of p.prefix[r]) prefix[r].set(name, merge(prefix[r].get(name), l));
      }
      for (const r of UNNAMED_RESOURCES) {
        const l = p.unnamed[r];
        if (l !== undefined) unnamed[r] = merge(unnamed[r], l);
      }
    }
    return new Permissions({ exact, prefix, unnamed }, fallback);
  }

  get isManagement(): boolean {
    return this.rules === "management";
  }

  /** Whether `access` to `resource` (named `name`, for service, node, key and intention: the destination's) is allowed. */
  allows(resource: Resource, access: Access, name = ""): boolean {
    if (this.rules === "management") return true;
    const l = this.levelOf(resource, name);
    if (l === undefined) return this.defaultAllows(resource);
    return l === "write" || (l === "read" && access === "read");
  }

  /** Whether every name of `resource` may be read: no rule denies any, and the default or an empty prefix grants read. */
  readsAll(resource: NamedResource): boolean {
    if (this.rules === "management") return true;
    const { exact, prefix } = this.rules;
    for (const l of exact[resource].values()) if (l === "deny") return false;
    for (const l of prefix[resource].values()) if (l === "deny") return false;
    const root = prefix[resource].get("");
    return root !== undefined || this.defaultAllows(resource);
  }

  private defaultAllows(resource: Resource): boolean {
    // As Consul's allow-all authorizer: a default of allow never grants ACL management.
    return this.fallback === "allow" && resource !== "acl";
  }

  private levelOf(resource: Resource, name: string): Level | undefined {
    if (this.rules === "management") return "write";
    if ((UNNAMED_RESOURCES as readonly string[]).includes(resource)) return this.rules.unnamed[resource as UnnamedResource];
    const r = resource as NamedResource;
    const hit = this.rules.exact[r].get(name);
    if (hit !== undefined) return hit;
    let best: Level | undefined;
    let bestLength = -1;
    for (const [p, l] of this.rules.prefix[r]) {
      if (p.length > bestLength && name.startsWith(p)) {
        best = l;
        bestLength = p.length;
      }
    }
    return best;
  }
}
