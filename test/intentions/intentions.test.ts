// Intentions in process, without a cluster: Consul's precedence and the decision it makes, the
// strict command codec, the state machine's revisions and per-name indexes, its snapshot and
// backup round trips, and the service's validation and per-destination wake-ups.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CodecError, concatChunks } from "../../src/common/codec.js";
import { IntentionsInputError, IntentionsService } from "../../src/intentions/intentions.js";
import { compareIntentions, decide, precedenceOf } from "../../src/intentions/precedence.js";
import {
  type IntentionCommand, IntentionsState, OP_DELETE, OP_UPSERT, decodeIntentionCommand, encodeIntentionCommand,
} from "../../src/intentions/state.js";
import { ClusterStateMachine } from "../../src/state/cluster.js";
import { checkBackupBody } from "../../src/state/sections.js";
import { AclState } from "../../src/acl/state.js";
import { CaState } from "../../src/ca/state.js";
import { KvStateMachine } from "../../src/kv/kv.js";
import { RegistryState } from "../../src/registry/state.js";

let uuidSeq = 0;
function uuid(): string {
  return `00000000-0000-4000-8000-${String(++uuidSeq).padStart(12, "0")}`;
}

function upsert(source: string, destination: string, action: "allow" | "deny", description = ""): IntentionCommand {
  return { op: OP_UPSERT, intention: { id: uuid(), source, destination, action, description } };
}

/** A state with the commands applied from index 1 on, and the index of the last. */
function stateWith(cmds: readonly IntentionCommand[], state = new IntentionsState(), from = 1): IntentionsState {
  cmds.forEach((c, i) => state.apply(from + i, encodeIntentionCommand(c)));
  return state;
}

/** A service over `state` whose proposals apply at once, at the next index, as a one-node cluster would. */
function localService(state: IntentionsState, defaultAllow: boolean, waitersMax = 100): IntentionsService {
  let index = state.revision;
  return new IntentionsService(state, {
    propose: (data) => {
      // The tag byte is the cluster state machine's to strip.
      state.apply(++index, data.subarray(1));
      return Promise.resolve(index);
    },
    readBarrier: () => Promise.resolve(),
  }, { defaultAllow }, { waitersMax });
}

void describe("precedence", () => {
  void test("Consul's precedence: exact/exact 9, */exact 8, exact/* 6, */* 5", () => {
    assert.deepEqual([precedenceOf("web", "db"), precedenceOf("*", "db"), precedenceOf("web", "*"), precedenceOf("*", "*")], [9, 8, 6, 5]);
  });

  void test("the most specific intention decides: an exact destination counts for more than an exact source", () => {
    const all = [
      { source: "*", destination: "*", action: "allow" as const },
      { source: "web", destination: "*", action: "allow" as const },
      { source: "*", destination: "db", action: "deny" as const },
    ];
    // web -> db: */db (8) beats web/* (6), though web/* names the source exactly.
    assert.deepEqual(decide(all, "web", "db", true), { allowed: false, by: all[2] });
    assert.deepEqual(decide(all, "web", "cache", false), { allowed: true, by: all[1] });
    assert.deepEqual(decide(all, "api", "cache", false), { allowed: true, by: all[0] });
    const exact = { source: "web", destination: "db", action: "allow" as const };
    assert.deepEqual(decide([...all, exact], "web", "db", false), { allowed: true, by: exact });
  });

  void test("with nothing matching, the default action decides, and no intention is named", () => {
    const all = [{ source: "web", destination: "db", action: "allow" as const }];
    assert.deepEqual(decide(all, "api", "db", false), { allowed: false });
    assert.deepEqual(decide(all, "api", "db", true), { allowed: true });
    assert.deepEqual(decide([], "web", "db", false), { allowed: false });
  });

  void test("evaluation order: precedence first, then destination, then source, so every node lists the same", () => {
    const list = [["*", "*"], ["b", "*"], ["*", "db"], ["a", "db"], ["a", "cache"], ["a", "*"]].map(([source, destination]) => ({ source, destination, action: "allow" as const }));
    assert.deepEqual(list.sort(compareIntentions).map((i) => `${i.source}/${i.destination}`), ["a/cache", "a/db", "*/db", "a/*", "b/*", "*/*"]);
  });
});

void describe("the command codec", () => {
  void test("every command round-trips", () => {
    for (const cmd of [upsert("web", "db", "allow", "web reads db"), upsert("*", "*", "deny"), { op: OP_DELETE, source: "web", destination: "*" } as const]) {
      assert.deepEqual(decodeIntentionCommand(encodeIntentionCommand(cmd)), cmd);
    }
  });

  void test("decoding is strict: an unknown op or action, a bad name or ID, trailing bytes and every truncation are refused", () => {
    const good = encodeIntentionCommand(upsert("web", "db", "allow", "d"));
    assert.throws(() => decodeIntentionCommand(Uint8Array.of(9)), /unknown intention command op 9/);
    assert.throws(() => decodeIntentionCommand(Uint8Array.from([...good, 0])), CodecError);
    for (let n = 0; n < good.byteLength; n++) assert.throws(() => decodeIntentionCommand(good.subarray(0, n)), CodecError, `truncated at ${n}`);
    assert.throws(() => decodeIntentionCommand(encodeIntentionCommand(upsert("web_1", "db", "allow"))), /source "web_1" is not a service name or \*/);
    assert.throws(() => decodeIntentionCommand(encodeIntentionCommand({ op: OP_UPSERT, intention: { id: "not-a-uuid", source: "a", destination: "b", action: "allow", description: "" } })), /not a lowercase UUID/);
    const actionAt = good.indexOf(1, 1 + 1 + 36 + 1 + 3 + 1 + 2);
    const badAction = Uint8Array.from(good);
    badAction[actionAt] = 7;
    assert.throws(() => decodeIntentionCommand(badAction), /unknown action 7/);
  });
});

void describe("the state machine", () => {
  void test("an upsert of an existing pair replaces it in place: same ID and CreateIndex, new ModifyIndex", () => {
    const first = upsert("web", "db", "allow", "first");
    const state = stateWith([first, upsert("web", "db", "deny", "second")]);
    assert.equal(state.count, 1);
    assert.deepEqual(state.get("web", "db"), { id: first.op === OP_UPSERT ? first.intention.id : "", source: "web", destination: "db", action: "deny", description: "second", createIndex: 1, modifyIndex: 2 });
    assert.equal(state.revision, 2);
  });

  void test("a change names the destination and source it touched; a delete of nothing changes nothing", () => {
    const state = new IntentionsState();
    const changes: string[] = [];
    state.onChange((rev, c) => changes.push(c.kind === "names" ? `${rev}:${[...c.destinations].join()}<-${[...c.sources].join()}` : `${rev}:restored`));
    stateWith([upsert("web", "db", "allow"), upsert("api", "cache", "deny"), { op: OP_DELETE, source: "nobody", destination: "db" }, { op: OP_DELETE, source: "web", destination: "db" }], state);
    assert.deepEqual(changes, ["1:db<-web", "2:cache<-api", "4:db<-web"]);
    assert.equal(state.revision, 4);
    assert.equal(state.get("web", "db"), undefined);
  });

  void test("each name's index is its own last change, never goes back, and a forgotten name answers the floor", () => {
    const state = stateWith([upsert("web", "db", "allow"), upsert("api", "cache", "allow"), upsert("web", "cache", "deny")]);
    assert.deepEqual([state.destinationIndex("db"), state.destinationIndex("cache"), state.sourceIndex("web"), state.sourceIndex("api")], [1, 3, 3, 2]);
    assert.equal(state.destinationIndex("never"), 0);
    stateWith([{ op: OP_DELETE, source: "web", destination: "db" }], state, 4);
    assert.equal(state.destinationIndex("db"), 4, "db no longer held: it answers the floor, the deletion's revision");
    assert.equal(state.destinationIndex("cache"), 3, "cache is untouched by db's deletion");
    stateWith([upsert("x", "db", "allow")], state, 5);
    assert.equal(state.destinationIndex("db"), 5);
  });

  void test("a snapshot restores exactly, and a backup restores with its IDs at the given revision", () => {
    const source = stateWith([upsert("web", "db", "allow", "a"), upsert("*", "db", "deny"), upsert("web", "*", "allow"), upsert("*", "*", "deny")]);
    const bytes = concatChunks(source.snapshot());
    const copy = new IntentionsState();
    copy.restore(bytes);
    assert.deepEqual(copy.all(), source.all());
    assert.equal(copy.revision, 4);
    const rebased = new IntentionsState();
    const changes: string[] = [];
    rebased.onChange((rev, c) => changes.push(`${rev}:${c.kind}`));
    rebased.restoreBackup(bytes, 90);
    assert.deepEqual(rebased.all().map((i) => [i.id, i.source, i.destination, i.createIndex, i.modifyIndex]), source.all().map((i) => [i.id, i.source, i.destination, 90, 90]));
    assert.deepEqual(changes, ["90:restored"]);
    assert.equal(rebased.destinationIndex("db"), 90);
    // Strict: a truncated or doubled backup changes nothing.
    for (let n = 0; n < bytes.byteLength; n += 7) assert.throws(() => rebased.restoreBackup(bytes.subarray(0, n), 91), CodecError);
    const doubled = stateWith([upsert("a", "b", "allow")]);
    const one = concatChunks(doubled.snapshot());
    // version, revision 1, count 1, then the record: count it twice and repeat the record.
    const twice = Uint8Array.from([one[0], one[1], 2, ...one.subarray(3), ...one.subarray(3)]);
    assert.throws(() => rebased.restoreBackup(twice, 92), /holds the intention a -> b twice/);
    assert.equal(rebased.revision, 90);
  });

  void test("a backup's intentions section is checked and counted, and a backup from before intentions existed restores with none", async () => {
    const intentions = stateWith([upsert("web", "db", "allow"), upsert("*", "db", "deny")]);
    const parts = { kv: new KvStateMachine(), registry: new RegistryState(), ca: new CaState(), acl: new AclState() };
    const withIntentions = checkBackupBody(concatChunks(await new ClusterStateMachine({ ...parts, intentions }).backup()));
    assert.deepEqual(withIntentions.find((s) => s.name === "intentions")?.summary, { intentions: 2, denies: 1 });
    // A build without intentions wrote no such section.
    const older = checkBackupBody(concatChunks(await new ClusterStateMachine(parts).backup()));
    assert.deepEqual(older.find((s) => s.name === "intentions")?.summary, { intentions: 0, denies: 0 });
  });
});

void describe("the service", () => {
  void test("names must be service names or *, actions allow or deny; unregistered names are accepted", async () => {
    const svc = localService(new IntentionsState(), false);
    await svc.upsert({ source: "not-registered-yet", destination: "db", action: "allow", description: "" });
    assert.equal(svc.state.count, 1);
    for (const [input, pattern] of [
      [{ source: "web_1", destination: "db", action: "allow" }, /^source: "web_1" is not a service name/],
      [{ source: "web", destination: "-db", action: "allow" }, /^destination: "-db" is not a service name/],
      [{ source: "", destination: "db", action: "allow" }, /^source: is required/],
      [{ source: "web", destination: "db", action: "permit" }, /^Action: must be "allow" or "deny", not "permit"/],
      [{ source: "web", destination: "db", action: "allow", description: "x".repeat(1025) }, /^Description: is 1025 characters; at most 1024/],
    ] as const) {
      assert.throws(() => svc.upsert({ description: "", ...input }), (err: unknown) => err instanceof IntentionsInputError && pattern.test(err.message));
    }
  });

  void test("match lists in evaluation order, with the * intentions of that side; check uses them and the default", async () => {
    const svc = localService(new IntentionsState(), false);
    for (const [source, destination, action] of [["*", "*", "allow"], ["web", "db", "allow"], ["*", "db", "deny"], ["web", "*", "deny"], ["api", "cache", "allow"]] as const) {
      await svc.upsert({ source, destination, action, description: "" });
    }
    assert.deepEqual(svc.match("destination", "db").map((i) => `${i.source}/${i.destination}`), ["web/db", "*/db", "web/*", "*/*"]);
    assert.deepEqual(svc.match("source", "web").map((i) => `${i.source}/${i.destination}`), ["web/db", "*/db", "web/*", "*/*"]);
    assert.equal(svc.check("web", "db").allowed, true);
    assert.equal(svc.check("api", "db").allowed, false, "*/db denies");
    assert.equal(svc.check("web", "cache").allowed, false, "web/* denies");
    assert.equal(svc.check("other", "cache").allowed, true, "*/* allows");
    const closed = localService(stateWith([upsert("web", "db", "allow")]), false);
    assert.deepEqual(closed.check("api", "db"), { allowed: false });
    assert.deepEqual(localService(stateWith([upsert("web", "db", "allow")]), true).check("api", "db"), { allowed: true });
  });

  void test("a blocking wait on one destination wakes on its change and not another's; a * destination wakes every one", async () => {
    const svc = localService(new IntentionsState(), false);
    await svc.upsert({ source: "web", destination: "db", action: "allow", description: "" });
    const since = svc.matchIndex("destination", "db");
    let woken = false;
    const waiting = svc.wait({ by: "destination", name: "db" }, since, 10_000, new AbortController().signal).then(() => { woken = true; });
    await svc.upsert({ source: "web", destination: "cache", action: "allow", description: "" });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(woken, false, "a change to cache does not wake a watcher of db");
    assert.equal(svc.matchIndex("destination", "db"), since);
    await svc.upsert({ source: "api", destination: "*", action: "deny", description: "" });
    await waiting;
    assert.ok(svc.matchIndex("destination", "db") > since, "the * change moved db's index");
    assert.equal(svc.waitingCount, 0);
  });

  void test("a wait ends at its timeout or abort, and past waitersMax a new one is refused", async () => {
    const svc = localService(new IntentionsState(), false, 1);
    const abort = new AbortController();
    const parked = svc.wait(undefined, 5, 10_000, abort.signal);
    assert.throws(() => svc.wait({ by: "source", name: "web" }, 5, 10, new AbortController().signal), /1 blocking queries are already waiting/);
    abort.abort();
    await parked;
    const started = performance.now();
    await svc.wait(undefined, 5, 30, new AbortController().signal);
    assert.ok(performance.now() - started >= 25);
    assert.equal(svc.waitingCount, 0);
  });

  void test("the view for xDS: a destination's intentions in order with the default, and which destinations changed", async () => {
    const svc = localService(new IntentionsState(), false);
    const heard: string[] = [];
    svc.onChange((d, rev) => heard.push(`${rev}:${d === "all" ? "all" : [...d].join()}`));
    await svc.upsert({ source: "web", destination: "db", action: "allow", description: "" });
    await svc.upsert({ source: "*", destination: "*", action: "deny", description: "" });
    assert.deepEqual(heard, ["1:db", "2:all"]);
    const view = svc.forDestination("db");
    assert.equal(view.defaultAllow, false);
    assert.deepEqual(view.intentions.map((i) => `${i.source}/${i.destination}/${i.action}`), ["web/db/allow", "*/*/deny"]);
  });
});
