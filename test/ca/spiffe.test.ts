import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SpiffeIdError, consulServiceSpiffeId, parseSpiffeId, workloadOf } from "../../src/ca/spiffe.js";

void describe("SPIFFE IDs", () => {
  void test("Cairn's and Consul's workload shapes name their namespace and service", () => {
    assert.deepEqual(workloadOf(parseSpiffeId("spiffe://cairn.local/ns/prod/svc/web")), { namespace: "prod", service: "web" });
    assert.deepEqual(workloadOf(parseSpiffeId(consulServiceSpiffeId("cairn.local", "dc1", "api"))), { namespace: "default", datacenter: "dc1", service: "api" });
    assert.equal(workloadOf(parseSpiffeId("spiffe://cairn.local/other/path")), undefined);
    assert.equal(workloadOf(parseSpiffeId("spiffe://cairn.local")), undefined);
  });

  void test("malformed IDs are refused with the reason", () => {
    for (const [bad, reason] of [
      ["https://cairn.local/ns/a/svc/b", /must start with spiffe:\/\//],
      ["spiffe://Cairn.Local/ns/a/svc/b", /lowercase/],
      ["spiffe://cairn.local/ns/../svc/b", /not "\." or "\.\."/],
      ["spiffe://cairn.local/ns//svc/b", /path segment ""/],
      ["spiffe://cairn.local/ns/a/svc/b?x=1", /path segment/],
      [`spiffe://cairn.local/${"a".repeat(2100)}`, /longer than 2048/],
    ] as const) {
      assert.throws(() => parseSpiffeId(bad), (err: Error) => err instanceof SpiffeIdError && reason.test(err.message), bad);
    }
  });
});
