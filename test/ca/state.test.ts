import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { concatChunks } from "../../src/common/codec.js";
import { type CaCommand, CaState, type NewCaRoot, encodeCaCommand } from "../../src/ca/state.js";

function root(id: string): NewCaRoot {
  return {
    id, name: `root ${id}`, keyType: "ec-p256", rootCertificatePem: `cert ${id}`, rootKeySealed: `key ${id}`,
    intermediateCertificatePem: `int ${id}`, intermediateKeySealed: `ikey ${id}`, crossSignedCertificatePem: null,
    notBeforeMs: 0, notAfterMs: 1e12,
  };
}

function activate(replaces: string | null, id: string, atMs = 1000, trustDomain = "cairn.local"): Uint8Array {
  const cmd: CaCommand = { op: "activateRoot", replaces, trustDomain, root: root(id), atMs, oldLeavesValidForMs: 500 };
  return encodeCaCommand(cmd);
}

void describe("the CA state machine", () => {
  void test("bootstrap creates the first root; a second bootstrap, as from a racing leader, is ignored", () => {
    const s = new CaState();
    s.apply(5, activate(null, "A"));
    s.apply(6, activate(null, "B"));
    assert.deepEqual(s.roots.map((r) => [r.id, r.active]), [["A", true]]);
    assert.equal(s.revision, 5);
    assert.equal(s.trustDomain, "cairn.local");
  });

  void test("rotation is compare-and-set: the first rotation of the active root wins, the stale one is ignored", () => {
    const s = new CaState();
    s.apply(1, activate(null, "A"));
    s.apply(2, activate("A", "B", 10_000));
    s.apply(3, activate("A", "C"));
    assert.deepEqual(s.roots.map((r) => [r.id, r.active, r.retireAfterMs]), [["A", false, 10_500], ["B", true, null]]);
    assert.equal(s.revision, 2, "an ignored command does not advance the CA's revision");
  });

  void test("a rotation into another trust domain is ignored", () => {
    const s = new CaState();
    s.apply(1, activate(null, "A"));
    s.apply(2, activate("A", "B", 1000, "other.domain"));
    assert.equal(s.activeRoot?.id, "A");
  });

  void test("a replaced root can be retired, the active one never", () => {
    const s = new CaState();
    s.apply(1, activate(null, "A"));
    s.apply(2, activate("A", "B"));
    s.apply(3, encodeCaCommand({ op: "retireRoot", id: "B" }));
    assert.equal(s.roots.length, 2);
    s.apply(4, encodeCaCommand({ op: "retireRoot", id: "A" }));
    assert.deepEqual(s.roots.map((r) => r.id), ["B"]);
    assert.equal(s.revision, 4);
  });

  void test("a snapshot restores the same roots and revision, and listeners hear of it", () => {
    const s = new CaState();
    s.apply(1, activate(null, "A"));
    s.apply(2, activate("A", "B"));
    const copy = new CaState();
    const heard: number[] = [];
    copy.onChange((rev) => heard.push(rev));
    copy.restore(concatChunks(s.snapshot()));
    assert.deepEqual(copy.roots, s.roots);
    assert.equal(copy.revision, 2);
    assert.deepEqual(heard, [2]);
    copy.restore(new Uint8Array(0));
    assert.equal(copy.roots.length, 0);
  });
});
