import assert from "node:assert/strict";
import { test } from "node:test";
import { DeadlineQueue } from "../../src/raft/node/deadlines.js";

interface Waiter {
  readonly id: number;
  readonly deadlineMs: number;
  settled: boolean;
}

test("expiry returns the waiters that are due and unanswered, in order, and skips answered ones", () => {
  const q = new DeadlineQueue<Waiter>();
  const ws: Waiter[] = [0, 1, 2, 3].map((id) => ({ id, deadlineMs: 10 * (id + 1), settled: false }));
  for (const w of ws) q.push(w);
  ws[1].settled = true;
  assert.deepEqual(q.takeExpired(25).map((w) => w.id), [0], "20 is answered, 30 and 40 are not due");
  assert.deepEqual(q.takeExpired(100).map((w) => w.id), [2, 3]);
  assert.deepEqual(q.takeExpired(1_000), []);
});

test("one old waiter holding the front up does not make the drain behind it quadratic", () => {
  const q = new DeadlineQueue<Waiter>();
  const blocker: Waiter = { id: -1, deadlineMs: 5_000, settled: false };
  q.push(blocker);
  const count = 200_000;
  for (let i = 0; i < count; i++) q.push({ id: i, deadlineMs: 5_000 + i, settled: true });
  assert.deepEqual(q.takeExpired(4_999), [], "nothing is due while the front is not");
  const started = performance.now();
  assert.deepEqual(q.takeExpired(10_000_000).map((w) => w.id), [-1]);
  // Array.shift per waiter would move ~2e10 slots here; a head index moves none.
  assert.ok(performance.now() - started < 500, `took ${(performance.now() - started).toFixed(0)} ms`);
});
