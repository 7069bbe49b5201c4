// The leader's append timer, on a hand-driven clock: an acknowledgement settles every append it
// covers with the time since that append was sent, a resend keeps the first send's time, a
// rejection or a change of leader forgets what was pending, and the queue per follower is bounded.

import assert from "node:assert/strict";
import { test } from "node:test";
import type { AppendRequest, AppendResponse, Entry } from "../../src/raft/core/types.js";
import { AppendTimer, PENDING_APPENDS_PER_FOLLOWER_MAX, type RaftObserver, silentRaftObserver } from "../../src/raft/node/observer.js";
import type { Clock } from "../../src/raft/node/ports.js";

class HandClock implements Clock {
  ms = 0;
  nowMs(): number {
    return this.ms;
  }
  setTimer(): { cancel(): void } {
    throw new Error("the append timer sets no timers");
  }
  soon(): void {
    throw new Error("the append timer schedules nothing");
  }
}

function setup(): { clock: HandClock; timer: AppendTimer; seen: [string, number][] } {
  const clock = new HandClock();
  const seen: [string, number][] = [];
  const observer: RaftObserver = { ...silentRaftObserver, appendAcknowledged: (follower, seconds) => seen.push([follower, seconds]) };
  return { clock, timer: new AppendTimer(clock, observer), seen };
}

const entries = (from: number, count: number): Entry[] =>
  Array.from({ length: count }, (_, i) => ({ type: "normal", index: from + i, term: 2, data: new Uint8Array(0) }));

function append(to: string, prevLogIndex: number, count: number): AppendRequest {
  return { type: "append", from: "n1", to, term: 2, prevLogIndex, prevLogTerm: 2, entries: entries(prevLogIndex + 1, count), commit: prevLogIndex };
}

function ack(from: string, index: number, reject = false): AppendResponse {
  return { type: "appendResp", from, to: "n1", term: 2, reject, index, rejectHintIndex: 0, rejectHintTerm: 0 };
}

test("an acknowledgement settles every append it covers, each timed from its own send", () => {
  const { clock, timer, seen } = setup();
  timer.sent([append("n2", 10, 2)]);
  clock.ms = 5;
  timer.sent([append("n2", 12, 3), append("n3", 10, 5)]);
  clock.ms = 20;
  timer.received(ack("n2", 12));
  assert.deepEqual(seen, [["n2", 0.02]], "the first append (11-12) is covered, the second (13-15) not yet");
  timer.received(ack("n2", 15));
  assert.deepEqual(seen, [["n2", 0.02], ["n2", 0.015]]);
  timer.received(ack("n2", 15));
  assert.equal(seen.length, 2, "a second acknowledgement of the same index settles nothing more");
  clock.ms = 30;
  timer.received(ack("n3", 12));
  assert.equal(seen.length, 2, "an acknowledgement short of an append's last entry does not settle it");
  timer.received(ack("n3", 15));
  assert.deepEqual(seen[2], ["n3", 0.025]);
});

test("a resend of entries already pending keeps the first send's time; heartbeats and empty appends are not timed", () => {
  const { clock, timer, seen } = setup();
  timer.sent([append("n2", 10, 2)]);
  clock.ms = 40;
  timer.sent([append("n2", 10, 2), append("n2", 12, 0), { type: "heartbeat", from: "n1", to: "n2", term: 2, commit: 10, readContext: "" }]);
  clock.ms = 50;
  timer.received(ack("n2", 12));
  assert.deepEqual(seen, [["n2", 0.05]]);
});

test("a rejection, and a change of leader, forget what was pending", () => {
  const { clock, timer, seen } = setup();
  timer.sent([append("n2", 10, 2), append("n3", 10, 2)]);
  timer.received(ack("n2", 11, true));
  clock.ms = 10;
  timer.received(ack("n2", 12));
  assert.equal(seen.length, 0, "the rejected follower's appends are probed afresh");
  timer.clear();
  timer.received(ack("n3", 12));
  assert.equal(seen.length, 0, "appends of an earlier leadership are not timed");
});

test(`at most ${PENDING_APPENDS_PER_FOLLOWER_MAX} appends wait per follower; past it the oldest is forgotten unmeasured`, () => {
  const { timer, seen } = setup();
  for (let i = 0; i <= PENDING_APPENDS_PER_FOLLOWER_MAX; i++) timer.sent([append("n2", i, 1)]);
  timer.received(ack("n2", PENDING_APPENDS_PER_FOLLOWER_MAX + 1));
  assert.equal(seen.length, PENDING_APPENDS_PER_FOLLOWER_MAX);
});
