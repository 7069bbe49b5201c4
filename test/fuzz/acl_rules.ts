// Consul's JSON rule syntax, generated and mutated, for PUT /v1/acl/policy; and random tokens.
// `{"service":{"web":{"policy":"write"}},"service_prefix":{"":{"policy":"read"}},"operator":"read"}`

import fc from "fast-check";
import { type Json, mutated } from "./schema.js";

const POLICIES = ["read", "write", "deny"] as const;
/** Resource kinds whose rules are keyed by a name or a prefix. */
const NAMED_KINDS = ["service", "service_prefix", "node", "node_prefix", "key", "key_prefix", "agent", "agent_prefix", "session", "session_prefix", "query", "query_prefix", "event", "event_prefix"] as const;
/** Resource kinds that take one policy for everything. */
const SINGLE_KINDS = ["operator", "acl", "ca", "keyring", "mesh", "peering"] as const;

const ruleName = fc.oneof(fc.constantFrom("", "web", "api", "db", "web-", "*", "n1"), fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/), fc.string({ maxLength: 20 }));

/** A rule set as Consul's JSON syntax writes it. */
export const aclRules: fc.Arbitrary<Json> = fc.record({
  named: fc.dictionary(fc.constantFrom(...NAMED_KINDS), fc.dictionary(ruleName, fc.record({ policy: fc.constantFrom(...POLICIES) }), { minKeys: 1, maxKeys: 3 }), { maxKeys: 4 }),
  single: fc.dictionary(fc.constantFrom(...SINGLE_KINDS), fc.constantFrom(...POLICIES), { maxKeys: 3 }),
}).map(({ named, single }) => ({ ...named, ...single }));

export interface RulesText {
  readonly how: string;
  readonly text: string;
}

/** The Rules string of a policy: valid JSON rules, mutated rules, HCL, or broken text. */
export const rulesTexts: fc.Arbitrary<RulesText> = fc.oneof(
  { weight: 4, arbitrary: aclRules.map((r) => ({ how: "valid", text: JSON.stringify(r) })) },
  { weight: 4, arbitrary: aclRules.chain(mutated).map((r) => ({ how: "mutated", text: JSON.stringify(r) })) },
  { weight: 1, arbitrary: aclRules.chain((r) => fc.nat({ max: JSON.stringify(r).length }).map((n) => ({ how: `cut at ${n}`, text: JSON.stringify(r).slice(0, n) }))) },
  { weight: 1, arbitrary: fc.constantFrom(
    { how: "hcl", text: 'service "web" { policy = "write" }' },
    { how: "hcl prefix", text: 'service_prefix "" { policy = "read" }\noperator = "read"' },
    { how: "empty", text: "" },
    { how: "json null", text: "null" },
    { how: "json array", text: "[]" },
    { how: "unknown policy", text: '{"service":{"web":{"policy":"admin"}}}' },
    { how: "policy not a string", text: '{"service":{"web":{"policy":1}}}' },
    { how: "operator as object", text: '{"operator":{"policy":"read"}}' },
    { how: "deep", text: '{"service":'.repeat(2000) + "1" + "}".repeat(2000) },
    { how: "proto key", text: '{"__proto__":{"policy":"write"},"service":{"__proto__":{"policy":"write"}}}' },
  ) },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }).map((s) => ({ how: "random text", text: s })) },
);

/** A PUT /v1/acl/policy body around some rules, with Consul's fields, sometimes wrong. */
export const policyBodies: fc.Arbitrary<{ how: string; body: Json }> = fc.tuple(
  rulesTexts,
  fc.oneof(fc.stringMatching(/^fuzz-[a-z0-9-]{1,20}$/), fc.constantFrom("", "global-management", "a b", "x".repeat(300)), fc.string({ maxLength: 30 })),
  fc.option(fc.string({ maxLength: 60 }), { nil: undefined }),
  fc.option(fc.array(fc.constantFrom("dc1", "dc2", ""), { maxLength: 2 }), { nil: undefined }),
).chain(([rules, name, description, datacenters]) => {
  const body: Record<string, Json> = { Name: name, Rules: rules.text };
  if (description !== undefined) body.Description = description;
  if (datacenters !== undefined) body.Datacenters = datacenters;
  return fc.oneof(
    { weight: 4, arbitrary: fc.constant({ how: `rules ${rules.how}`, body: body }) },
    { weight: 1, arbitrary: mutated(body).map((b) => ({ how: `rules ${rules.how}, body mutated`, body: b })) },
  );
});

/** Tokens a client might present: well-formed secrets nobody issued, and junk. */
export const randomTokens: fc.Arbitrary<string> = fc.oneof(
  fc.uuid(),
  fc.constantFrom("", "anonymous", "00000000-0000-0000-0000-000000000002", "root", "null"),
  fc.stringMatching(/^[0-9a-f-]{1,64}$/),
);
