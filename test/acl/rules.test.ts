// Consul's rule resolution, as its docs state it: exact beats prefix, longer prefix beats shorter,
// and deny wins when policies give the same name; the default applies where no rule speaks.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Permissions, RulesError, parseRules } from "../../src/acl/rules.js";
import { AclState, OP_BOOTSTRAP, OP_POLICY_SET, OP_TOKEN_SET, decodeAclCommand, encodeAclCommand, hashSecret } from "../../src/acl/state.js";

const rules = (r: object): ReturnType<typeof parseRules> => parseRules(JSON.stringify(r));

test("the most specific rule wins: an exact name beats any prefix, a longer prefix beats a shorter one", () => {
  const p = Permissions.of([rules({ service_prefix: { "": { policy: "read" }, "web-": { policy: "deny" }, "web-api": { policy: "write" } }, service: { "web-admin": { policy: "write" } } })], "deny");
  assert.equal(p.allows("service", "read", "db"), true);
  assert.equal(p.allows("service", "write", "db"), false);
  assert.equal(p.allows("service", "read", "web-x"), false, "web- denies");
  assert.equal(p.allows("service", "write", "web-api-2"), true, "the longer prefix web-api beats web-");
  assert.equal(p.allows("service", "write", "web-admin"), true, "the exact rule beats the web- prefix");
  assert.equal(p.readsAll("service"), false, "a deny somewhere means not every service is readable");
});

test("deny in the winning rule wins when two policies name the same service", () => {
  const p = Permissions.of([rules({ service: { web: { policy: "write" } } }), rules({ service: { web: { policy: "deny" } } })], "allow");
  assert.equal(p.allows("service", "read", "web"), false);
  assert.equal(Permissions.of([rules({ service: { web: { policy: "read" } } }), rules({ service: { web: { policy: "write" } } })], "deny").allows("service", "write", "web"), true);
});

test("the default policy applies where no rule speaks, and allow never grants ACL management", () => {
  const none = Permissions.of([], "allow");
  assert.equal(none.allows("service", "write", "x"), true);
  assert.equal(none.allows("operator", "write"), true);
  assert.equal(none.allows("acl", "read"), false);
  assert.equal(Permissions.of([], "deny").allows("service", "read", "x"), false);
  assert.equal(Permissions.of([rules({ operator: "read", ca: "write" })], "deny").allows("operator", "write"), false);
  assert.equal(Permissions.of([rules({ operator: "read", ca: "write" })], "deny").allows("ca", "write"), true);
  assert.equal(Permissions.management().allows("acl", "write"), true);
});

test("HCL, unknown rules and bad levels are refused, naming where", () => {
  assert.throws(() => parseRules('service "web" { policy = "read" }'), (e: unknown) => e instanceof RulesError && /HCL/.test(e.message));
  assert.throws(() => parseRules(JSON.stringify({ servce: {} })), /servce/);
  assert.throws(() => parseRules(JSON.stringify({ service: { web: { policy: "own" } } })), /service\."web"\.policy/);
  assert.throws(() => parseRules(JSON.stringify({ operator: "list" })), /operator/);
  assert.doesNotThrow(() => parseRules(JSON.stringify({ key_prefix: { "": { policy: "list" } }, agent_prefix: { "": { policy: "read" } }, service: { web: { policy: "write", intentions: "read" } } })));
});

test("ACL commands decode strictly, and the state keeps the secret's hash, never the secret", () => {
  const secret = "11111111-2222-3333-4444-555555555555";
  const token = { accessorId: "aaaaaaaa-0000-0000-0000-000000000000", secretHash: hashSecret(secret), description: "t", policyIds: [], local: false, createTimeMs: 1 };
  const bytes = encodeAclCommand({ op: OP_BOOTSTRAP, management: token, atMs: 1 });
  assert.deepEqual(decodeAclCommand(bytes), { op: OP_BOOTSTRAP, management: token, atMs: 1 });
  assert.throws(() => decodeAclCommand(new Uint8Array([...bytes, 0])), /trailing/);
  assert.throws(() => decodeAclCommand(new Uint8Array([99])), /unknown ACL command/);
  const state = new AclState();
  state.apply(5, bytes);
  state.apply(6, encodeAclCommand({ op: OP_BOOTSTRAP, management: { ...token, accessorId: "bbbbbbbb-0000-0000-0000-000000000000" }, atMs: 2 }));
  assert.equal(state.bootstrapIndex, 5, "a second bootstrap is ignored");
  assert.equal(state.tokenBySecret(secret)?.accessorId, token.accessorId);
  state.apply(7, encodeAclCommand({ op: OP_POLICY_SET, policy: { id: "p1", name: "web", description: "", rules: "{}" }, create: true }));
  state.apply(8, encodeAclCommand({ op: OP_POLICY_SET, policy: { id: "p2", name: "web", description: "", rules: "{}" }, create: true }));
  assert.equal(state.policy("p2"), undefined, "a name taken meanwhile loses");
  state.apply(9, encodeAclCommand({ op: OP_TOKEN_SET, token: { ...token, secretHash: hashSecret("other"), description: "renamed" }, create: false }));
  assert.equal(state.tokenBySecret(secret)?.description, "renamed", "an update keeps the secret");
  const snapshot = Buffer.concat(state.snapshot());
  assert.ok(!snapshot.includes(Buffer.from(secret)));
  assert.ok(snapshot.includes(Buffer.from(hashSecret(secret))));
  const restored = new AclState();
  restored.restore(snapshot);
  assert.equal(restored.tokenBySecret(secret)?.description, "renamed");
  assert.equal(restored.bootstrapIndex, 5);
});

test("intentions follow a service rule's intentions field, else its policy: service:write may write them, service:read read them", () => {
  const p = Permissions.of([rules({
    service: { db: { policy: "read", intentions: "write" }, web: { policy: "write" }, api: { policy: "read" }, secret: { policy: "write", intentions: "deny" } },
    service_prefix: { "pay-": { policy: "deny", intentions: "read" } },
  })], "deny");
  assert.equal(p.allows("intention", "write", "db"), true, "intentions = write on a read service");
  assert.equal(p.allows("service", "write", "db"), false, "the intentions field grants nothing on the service itself");
  assert.equal(p.allows("intention", "write", "web"), true, "service:write grants intentions:write");
  assert.equal(p.allows("intention", "read", "api"), true, "service:read grants intentions:read");
  assert.equal(p.allows("intention", "write", "api"), false);
  assert.equal(p.allows("intention", "read", "secret"), false, "an explicit intentions deny beats the policy");
  assert.equal(p.allows("intention", "read", "pay-eu"), true, "prefix rules carry intentions too");
  assert.equal(p.allows("intention", "write", "pay-eu"), false);
  assert.equal(p.allows("intention", "read", "other"), false, "the default where no rule speaks");
  assert.equal(Permissions.of([], "allow").allows("intention", "write", "other"), true);
  assert.throws(() => rules({ node: { n1: { policy: "read", intentions: "read" } } }), /node\."n1"\.intentions: only service rules take intentions/);
  assert.throws(() => rules({ service: { db: { policy: "read", intentions: "list" } } }), /intentions: must be "read", "write" or "deny"/);
  assert.throws(() => rules({ intention: { db: { policy: "read" } } }), /intention: is not a rule Cairn knows/);
});
