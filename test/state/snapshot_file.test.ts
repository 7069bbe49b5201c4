// Backups in process, without a cluster: the snapshot file's format and its refusals (every
// truncation and every flipped byte), each section decoded strictly, and a restore applied
// through the log as Raft applies it: staged in chunks, committed at one index on every machine,
// the same on a node that installed a compaction snapshot half way through it.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { AclState, OP_BOOTSTRAP, OP_POLICY_SET, OP_TOKEN_SET, encodeAclCommand, hashSecret } from "../../src/acl/state.js";
import { CaState, encodeCaCommand } from "../../src/ca/state.js";
import { concatChunks } from "../../src/common/codec.js";
import { KvStateMachine, encodeKvCommand } from "../../src/kv/kv.js";
import { IntentionsState, OP_UPSERT, encodeIntentionCommand } from "../../src/intentions/state.js";
import type { InstanceDefinition } from "../../src/registry/model.js";
import { RegistryState, encodeRegistryCommand } from "../../src/registry/state.js";
import { ClusterStateMachine } from "../../src/state/cluster.js";
import {
  OP_RESTORE_ABORT, OP_RESTORE_BEGIN, OP_RESTORE_CHUNK, OP_RESTORE_COMMIT, type RestoreCommand, encodeRestoreCommand, sha256,
} from "../../src/state/restore.js";
import { SnapshotFileError, checkSnapshotFile, decodeSnapshotFile, encodeSnapshotFile } from "../../src/state/snapshot_file.js";
import { STATE_TAG_ACL, STATE_TAG_CA, STATE_TAG_INTENTIONS, STATE_TAG_KV, STATE_TAG_REGISTRY, STATE_TAG_RESTORE, withTag } from "../../src/state/tags.js";
import { encodeSections } from "../../src/state/sections.js";

const SECRET = "11111111-2222-3333-4444-555555555555";

interface Node {
  readonly cluster: ClusterStateMachine;
  readonly kv: KvStateMachine;
  readonly registry: RegistryState;
  readonly ca: CaState;
  readonly acl: AclState;
  readonly intentions: IntentionsState;
}

function node(): Node {
  const kv = new KvStateMachine();
  const registry = new RegistryState();
  const ca = new CaState();
  const acl = new AclState();
  const intentions = new IntentionsState();
  return { cluster: new ClusterStateMachine({ kv, registry, ca, acl, intentions }), kv, registry, ca, acl, intentions };
}

function inst(id: string, service: string): InstanceDefinition {
  return { id, service, address: "10.0.0.1", port: 80, tags: ["v1"], meta: {}, weights: { passing: 1, warning: 1 }, zone: "", node: "n1", nodeAddress: "127.0.0.1" };
}

/** A node holding some of everything, as a cluster that ran a while would. */
function populated(): Node {
  const n = node();
  let index = 10;
  const apply = (tag: number, data: Uint8Array): void => n.cluster.apply(++index, withTag(tag, data));
  apply(STATE_TAG_CA, encodeCaCommand({
    op: "activateRoot", replaces: null, trustDomain: "cairn.local", atMs: 1, oldLeavesValidForMs: 0,
    root: { id: "aa:bb", name: "root", keyType: "ec-p256", rootCertificatePem: "root pem", rootKeySealed: "plain:x", intermediateCertificatePem: "int pem", intermediateKeySealed: "plain:y", crossSignedCertificatePem: null, notBeforeMs: 0, notAfterMs: 1e12 },
  }));
  apply(STATE_TAG_ACL, encodeAclCommand({ op: OP_BOOTSTRAP, management: { accessorId: "acc-mgmt", secretHash: hashSecret(SECRET), description: "m", policyIds: [], local: false, createTimeMs: 1 }, atMs: 1 }));
  apply(STATE_TAG_ACL, encodeAclCommand({ op: OP_POLICY_SET, policy: { id: "p-web", name: "web", description: "", rules: "{}" }, create: true }));
  apply(STATE_TAG_ACL, encodeAclCommand({ op: OP_TOKEN_SET, token: { accessorId: "acc-web", secretHash: hashSecret("web-secret"), description: "w", policyIds: ["p-web"], local: false, createTimeMs: 2 }, create: true }));
  for (const [id, service] of [["web-1", "web"], ["web-2", "web"], ["db-1", "db"]]) {
    apply(STATE_TAG_REGISTRY, encodeRegistryCommand({ op: "register", instance: inst(id, service), checks: [], atMs: 3 }));
  }
  apply(STATE_TAG_KV, encodeKvCommand({ op: "put", key: "k", value: "v" }));
  apply(STATE_TAG_INTENTIONS, encodeIntentionCommand({ op: OP_UPSERT, intention: { id: "00000000-0000-4000-8000-000000000001", source: "web", destination: "db", action: "allow", description: "web reads" } }));
  apply(STATE_TAG_INTENTIONS, encodeIntentionCommand({ op: OP_UPSERT, intention: { id: "00000000-0000-4000-8000-000000000002", source: "*", destination: "db", action: "deny", description: "" } }));
  return n;
}

async function fileOf(n: Node, clusterId = "c1"): Promise<Buffer> {
  const saved = encodeSnapshotFile({ clusterId, nodeId: "n2", index: 20, term: 3, takenAtMs: 1_700_000_000_000 }, await n.cluster.backup());
  return Buffer.concat(saved.chunks);
}

function restoreCommands(body: Uint8Array, chunkBytes: number, restoreId = "r-1"): RestoreCommand[] {
  const cmds: RestoreCommand[] = [{ op: OP_RESTORE_BEGIN, restoreId, bodyBytes: body.byteLength, bodySha256: sha256([body]) }];
  for (let offset = 0; offset < body.byteLength; offset += chunkBytes) {
    cmds.push({ op: OP_RESTORE_CHUNK, restoreId, offset, data: body.subarray(offset, offset + chunkBytes) });
  }
  cmds.push({ op: OP_RESTORE_COMMIT, restoreId });
  return cmds;
}

function applyRestore(n: Node, index: number, cmd: RestoreCommand): void {
  n.cluster.apply(index, withTag(STATE_TAG_RESTORE, encodeRestoreCommand(cmd)));
}

/** Why `n` refused restore `restoreId`'s commit; fails if it did not refuse it. */
function refusalOf(n: Node, restoreId: string): string {
  const verdict = n.cluster.restoreVerdict(restoreId);
  assert.ok(verdict !== undefined && !verdict.restored, `restore ${restoreId} was not refused: ${JSON.stringify(verdict)}`);
  return verdict.reason;
}

/** What a node holds, in a form two nodes can be compared by. */
async function stateOf(n: Node): Promise<Buffer> {
  return Buffer.from(concatChunks(await n.cluster.backup()));
}

void describe("the snapshot file", () => {
  void test("a file round-trips its header, and every section is decoded and counted", async () => {
    const file = await fileOf(populated());
    const { header, sections } = checkSnapshotFile(file);
    assert.deepEqual({ ...header, bodySha256Hex: header.bodySha256Hex.length }, {
      formatVersion: 1, clusterId: "c1", nodeId: "n2", index: 20, term: 3, takenAtMs: 1_700_000_000_000, bodyBytes: header.bodyBytes, bodySha256Hex: 64,
    });
    assert.deepEqual(Object.fromEntries(sections.map((s) => [s.name, s.summary])), {
      kv: { keys: 1 },
      registry: { services: 2, instances: 3, checks: 0 },
      ca: { roots: 1, trustDomain: "cairn.local", activeRoot: "aa:bb" },
      acl: { tokens: 3, policies: 2, bootstrapped: "yes" },
      intentions: { intentions: 2, denies: 1 },
    });
  });

  void test("every truncation of a file is refused, as truncated or as not a snapshot at all", async () => {
    const file = await fileOf(populated());
    for (let length = 0; length < file.byteLength; length++) {
      assert.throws(() => decodeSnapshotFile(file.subarray(0, length)), (err: unknown) => {
        assert.ok(err instanceof SnapshotFileError, `cut at ${length}: ${String(err)}`);
        assert.equal(err.problem, length < 8 ? "notSnapshot" : "truncated", `cut at ${length}: ${err.message}`);
        return true;
      });
    }
  });

  void test("every flipped byte of a file is refused, and a flip in the body is named as a checksum mismatch", async () => {
    const file = await fileOf(populated());
    const { headerBytes } = decodeSnapshotFile(file);
    for (let at = 0; at < file.byteLength; at++) {
      const damaged = Buffer.from(file);
      damaged[at] ^= 0x20;
      assert.throws(() => checkSnapshotFile(damaged), (err: unknown) => {
        assert.ok(err instanceof SnapshotFileError, `flip at ${at}: ${String(err)}`);
        if (at >= headerBytes) assert.match(err.message, /corrupt: its body's SHA-256 is [0-9a-f]{64}, but its header says/);
        return true;
      }, `a flip at byte ${at} of ${file.byteLength} was accepted`);
    }
  });

  void test("a sound file whose sections do not decode is refused, naming the section", () => {
    const badRegistry = encodeSections([[STATE_TAG_KV, [Buffer.from("[]")]], [STATE_TAG_REGISTRY, [Uint8Array.of(2, 0, 0, 0, 5)]], [STATE_TAG_CA, [Buffer.from("{}")]], [STATE_TAG_ACL, [Uint8Array.of(1, 0, 0, 0, 0)]]]);
    const file = Buffer.concat(encodeSnapshotFile({ clusterId: "c", nodeId: "n", index: 1, term: 1, takenAtMs: 0 }, badRegistry).chunks);
    assert.throws(() => checkSnapshotFile(file), /registry section does not decode: truncated/);
    const missingAcl = encodeSections([[STATE_TAG_KV, [Buffer.from("[]")]]]);
    assert.throws(() => checkSnapshotFile(Buffer.concat(encodeSnapshotFile({ clusterId: "c", nodeId: "n", index: 1, term: 1, takenAtMs: 0 }, missingAcl).chunks)), /no registry section/);
    const kvWithExtraField = encodeSections([[STATE_TAG_KV, [Buffer.from('[["k",{"value":"v","createIndex":1,"modifyIndex":1,"owner":"x"}]]')]]]);
    assert.throws(() => checkSnapshotFile(Buffer.concat(encodeSnapshotFile({ clusterId: "c", nodeId: "n", index: 1, term: 1, takenAtMs: 0 }, kvWithExtraField).chunks)), /kv\[0\]\[1\]\.owner: not a field/);
  });
});

void describe("a restore applied through the log", () => {
  void test("chunks staged in order, then the commit replaces every machine at its index, and everything in it is rebased there", async () => {
    const source = populated();
    const { body } = decodeSnapshotFile(await fileOf(source));
    const target = node();
    target.cluster.apply(1, withTag(STATE_TAG_REGISTRY, encodeRegistryCommand({ op: "register", instance: inst("old-1", "old"), checks: [], atMs: 1 })));
    const woken: string[][] = [];
    target.registry.onChange((_rev, services) => woken.push([...services].sort()));
    const caRevisions: number[] = [];
    target.ca.onChange((rev) => caRevisions.push(rev));
    const cmds = restoreCommands(body, 100);
    assert.ok(cmds.length > 5, "the body is sent in several chunks");
    let index = 100;
    for (const cmd of cmds) applyRestore(target, ++index, cmd);
    const commitIndex = index;
    assert.equal(target.cluster.restoreVerdict("r-1")?.restored, true);
    assert.equal(target.cluster.stagedRestore, undefined, "nothing stays staged after the commit");
    assert.equal(target.registry.instance("old-1"), undefined, "the old state is gone");
    assert.deepEqual(target.registry.instancesOf("web").map((i) => [i.id, i.createIndex, i.modifyIndex]), [["web-1", commitIndex, commitIndex], ["web-2", commitIndex, commitIndex]]);
    assert.equal(target.registry.serviceIndex("old"), commitIndex, "a service the backup lacks moves to the restore's index, so its blocking queries see it empty");
    assert.equal(target.registry.catalogIndex, commitIndex);
    assert.deepEqual(woken, [["db", "old", "web"]], "watchers of every service, old and new, are woken once");
    assert.deepEqual(caRevisions, [commitIndex], "the CA moves to the restore's index, so the signer reloads its roots");
    assert.equal(target.ca.activeRoot?.id, "aa:bb");
    assert.equal(target.acl.tokenBySecret(SECRET)?.accessorId, "acc-mgmt", "a token of the backup is accepted by its secret");
    assert.equal(target.acl.bootstrapIndex, commitIndex);
    assert.deepEqual(target.kv.get("k"), { value: "v", createIndex: commitIndex, modifyIndex: commitIndex });
    assert.deepEqual(target.intentions.all().map((i) => [i.source, i.destination, i.action, i.id, i.createIndex, i.modifyIndex]), [
      ["web", "db", "allow", "00000000-0000-4000-8000-000000000001", commitIndex, commitIndex],
      ["*", "db", "deny", "00000000-0000-4000-8000-000000000002", commitIndex, commitIndex],
    ], "intentions come back with their IDs, in evaluation order, rebased at the restore's index");
    assert.equal(target.intentions.destinationIndex("db"), commitIndex);
    // What the machines hold is the source's, revisions aside: a backup of the target restores the same again.
    const again = node();
    index = 500;
    for (const cmd of restoreCommands(concatChunks(await target.cluster.backup()), 1 << 20, "r-2")) applyRestore(again, ++index, cmd);
    assert.equal(again.registry.instanceCount, 3);
  });

  void test("a chunk sent twice is taken once, a commit with a chunk missing or superseded is refused, and either changes nothing", async () => {
    const { body } = decodeSnapshotFile(await fileOf(populated()));
    const cmds = restoreCommands(body, 64);
    const target = node();
    target.cluster.apply(1, withTag(STATE_TAG_KV, encodeKvCommand({ op: "put", key: "mine", value: "kept" })));
    const before = await stateOf(target);
    let index = 10;
    // A chunk missing: the commit is refused.
    for (const cmd of cmds.filter((_, i) => i !== 2)) applyRestore(target, ++index, cmd);
    assert.match(refusalOf(target, "r-1"), /only \d+ of the snapshot's \d+ bytes arrived; nothing was restored/);
    assert.deepEqual(await stateOf(target), before, "a refused restore changes nothing");
    // Superseded: another begin replaces the staging, so the first restore's commit is refused.
    const first = restoreCommands(body, 64, "first");
    for (const cmd of first.slice(0, -1)) applyRestore(target, ++index, cmd);
    applyRestore(target, ++index, { op: OP_RESTORE_BEGIN, restoreId: "second", bodyBytes: body.byteLength, bodySha256: sha256([body]) });
    applyRestore(target, ++index, first[first.length - 1]);
    assert.match(refusalOf(target, "first"), /another restore began after this one/);
    assert.deepEqual(await stateOf(target), before);
    applyRestore(target, ++index, { op: OP_RESTORE_ABORT, restoreId: "second" });
    assert.equal(target.cluster.stagedRestore, undefined, "an abort drops the staging");
    // Every chunk twice (a retry whose first try did commit): taken once, and the restore commits.
    for (const cmd of restoreCommands(body, 64, "dup").flatMap((c): RestoreCommand[] => (c.op === OP_RESTORE_CHUNK ? [c, c] : [c]))) applyRestore(target, ++index, cmd);
    assert.equal(target.cluster.restoreVerdict("dup")?.restored, true);
    assert.equal(target.registry.instanceCount, 3);
  });

  void test("a node that installs a compaction snapshot taken half way through a restore ends in the same state as one that applied every entry", async () => {
    const { body } = decodeSnapshotFile(await fileOf(populated()));
    const cmds = restoreCommands(body, 80);
    const straight = node();
    const caughtUp = node();
    const half = Math.floor(cmds.length / 2);
    for (let i = 0; i < half; i++) applyRestore(straight, 100 + i, cmds[i]);
    caughtUp.cluster.restore(concatChunks(await straight.cluster.snapshot()));
    assert.deepEqual(caughtUp.cluster.stagedRestore, straight.cluster.stagedRestore, "the staged chunks travel in the compaction snapshot");
    for (let i = half; i < cmds.length; i++) {
      applyRestore(straight, 100 + i, cmds[i]);
      applyRestore(caughtUp, 100 + i, cmds[i]);
    }
    assert.equal(caughtUp.cluster.restoreVerdict("r-1")?.restored, true);
    assert.deepEqual(await stateOf(caughtUp), await stateOf(straight));
    assert.equal(caughtUp.registry.instanceCount, 3);
  });
});
