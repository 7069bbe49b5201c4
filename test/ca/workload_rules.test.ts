// The Workload API's rules and their authorizer, without a node: which caller holds which SPIFFE
// ID. workload_attest.test.ts proves the same against a real node and real users.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type Caller, workloadRuleAuthorizer } from "../../src/ca/authorizer.js";
import { parseSpiffeId } from "../../src/ca/spiffe.js";
import { WorkloadRuleError, everyCallerRules, parseWorkloadRules, ruleIdentities } from "../../src/ca/workload_rules.js";

const TD = "cairn.local";
const WEB = `spiffe://${TD}/ns/default/svc/web`;
const API = `spiffe://${TD}/ns/default/svc/api`;

const onSocket = (uid: number, gid: number): Caller => ({ token: undefined, origin: `workload socket uid ${uid}`, uid, gid });
const heldBy = (rules: ReturnType<typeof parseWorkloadRules>, caller: Caller): string[] => {
  const authorizer = workloadRuleAuthorizer(rules);
  return ruleIdentities(rules).filter((id) => authorizer.mayHold(caller, parseSpiffeId(id)));
};

void describe("Workload API rules", () => {
  void test("a caller holds the IDs of every rule its uid or its gid matches, and nothing else", () => {
    const rules = parseWorkloadRules(`uid:1000=${WEB}, gid:50=${API}`, TD);
    assert.deepEqual(heldBy(rules, onSocket(1000, 1000)), [WEB]);
    assert.deepEqual(heldBy(rules, onSocket(1001, 50)), [API]);
    assert.deepEqual(heldBy(rules, onSocket(1000, 50)), [WEB, API]);
    assert.deepEqual(heldBy(rules, onSocket(50, 1000)), [], "a uid rule does not match a gid of the same number, nor the reverse");
    assert.deepEqual(heldBy(rules, onSocket(0, 0)), [], "root is not special");
  });

  void test("a caller over the network (no uid) holds nothing, not even by --workload-identities' every-caller rules", () => {
    const rules = [...everyCallerRules([WEB], TD), ...parseWorkloadRules(`uid:0=${API}`, TD)];
    assert.deepEqual(heldBy(rules, onSocket(4242, 4242)), [WEB]);
    assert.deepEqual(heldBy(rules, { token: undefined, origin: "http 127.0.0.1" }), []);
    assert.deepEqual(heldBy(rules, { token: "secret", origin: "http 127.0.0.1", uid: 0 }), [], "a uid without a gid is not an attested caller");
  });

  void test("the authorizer's description names every rule, for the start-up log", () => {
    const rules = [...everyCallerRules([WEB], TD), ...parseWorkloadRules(`uid:7=${API}`, TD)];
    assert.match(workloadRuleAuthorizer(rules).description, new RegExp(`\\*=${WEB}, uid:7=${API}`));
    assert.match(workloadRuleAuthorizer([]).description, /none, so no caller holds any identity/);
  });

  void test("rules past the bound are refused", () => {
    const many = Array.from({ length: 1025 }, (_, i) => `uid:${i}=${WEB}`).join(",");
    assert.throws(() => parseWorkloadRules(many, TD), (err: unknown) => err instanceof WorkloadRuleError && /1025 rules given; a node takes at most 1024/.test(err.message));
    assert.equal(parseWorkloadRules(many.split(",").slice(0, 1024).join(","), TD).length, 1024);
  });
});
