// The fuzzer's own generators: the DER walk finds a CSR's structure, mutations change it, and
// the ACL rules it calls valid are Consul's JSON rule syntax.

import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { aclRules } from "./acl_rules.js";
import { csrCases, derElements, makeSeedCsrs } from "./csr.js";

const DER_SEQUENCE = 0x30;
const GENERATOR_SAMPLES = 200;

void test("the DER walk finds a CSR's outer SEQUENCE spanning all of it, and the elements inside", () => {
  for (const seed of makeSeedCsrs()) {
    const elements = derElements(seed.der);
    assert.equal(seed.der[elements[0].tagAt], DER_SEQUENCE, seed.label);
    assert.equal(elements[0].contentAt + elements[0].contentLength, seed.der.length, seed.label);
    // certificationRequestInfo, the signature algorithm, the signature, and what they hold.
    assert.ok(elements.length > 10, `${seed.label}: only ${elements.length} elements`);
  }
});

void test("every CSR mutation but 'unchanged' changes the DER it sends", () => {
  const seeds = makeSeedCsrs();
  const byLabel = new Map(seeds.map((s) => [s.label, s.der]));
  for (const c of fc.sample(csrCases(seeds), { numRuns: GENERATOR_SAMPLES, seed: 7 })) {
    if (c.mutation.how.startsWith("unchanged")) continue;
    assert.notDeepEqual(c.mutation.der, byLabel.get(c.mutation.seed), c.mutation.how);
  }
});

void test("valid ACL rules use only Consul's rule kinds and policies", () => {
  const kinds = /^(service|node|key|agent|session|query|event)(_prefix)?$|^(operator|acl|ca|keyring|mesh|peering)$/;
  for (const rules of fc.sample(aclRules, { numRuns: GENERATOR_SAMPLES, seed: 7 })) {
    assert.ok(rules !== null && typeof rules === "object" && !Array.isArray(rules));
    for (const [kind, value] of Object.entries(rules)) {
      assert.match(kind, kinds);
      if (typeof value === "string") assert.match(value, /^(read|write|deny)$/);
      else for (const rule of Object.values(value as Record<string, { policy: string }>)) assert.match(rule.policy, /^(read|write|deny)$/);
    }
  }
});
