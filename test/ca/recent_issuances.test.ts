// The ring of a node's recent issuances: bounded, newest first, and holding only what a
// certificate says publicly.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type IssuedEvent, RECENT_ISSUANCES_MAX, RecentIssuances } from "../../src/ca/recent_issuances.js";

function issued(n: number, caller?: IssuedEvent["caller"]): IssuedEvent {
  return {
    source: "csr",
    durationSeconds: 0.001,
    spiffeId: `spiffe://cairn.local/ns/default/svc/s${n}`,
    serialHex: n.toString(16).padStart(4, "0"),
    notBeforeMs: 1000 * n - 60_000,
    notAfterMs: 1000 * n + 3_600_000,
    issuedAtMs: 1000 * n,
    rootId: "aa:bb",
    caller,
  };
}

void describe("recent issuances", () => {
  void test("past its capacity the oldest goes: it lists the newest `capacity`, newest first", () => {
    const ring = new RecentIssuances(3);
    assert.deepEqual(ring.list(), []);
    ring.record(issued(1));
    assert.deepEqual(ring.list().map((c) => c.serialHex), ["0001"]);
    for (let n = 2; n <= 7; n++) ring.record(issued(n));
    assert.deepEqual(ring.list().map((c) => c.serialHex), ["0007", "0006", "0005"]);
  });

  void test("keeps serial, SPIFFE ID, validity, root and origin, never the caller's token", () => {
    const ring = new RecentIssuances();
    assert.equal(ring.capacity, RECENT_ISSUANCES_MAX);
    ring.record(issued(9, { token: "secret-token-value", origin: "http 10.0.0.9" }));
    ring.record(issued(10));
    const [newest, older] = ring.list();
    assert.deepEqual(older, {
      serialHex: "0009", spiffeId: "spiffe://cairn.local/ns/default/svc/s9", notBeforeMs: -51_000, notAfterMs: 3_609_000, issuedAtMs: 9000, rootId: "aa:bb", origin: "http 10.0.0.9",
    });
    assert.equal(newest.origin, "workload api", "a certificate the node signed for the Workload API's cache names it");
    assert.ok(!JSON.stringify(ring.list()).includes("secret-token-value"));
  });

  void test("a capacity that is not a positive integer is refused", () => {
    assert.throws(() => new RecentIssuances(0), /positive integer/);
    assert.throws(() => new RecentIssuances(1.5), /positive integer/);
  });
});
