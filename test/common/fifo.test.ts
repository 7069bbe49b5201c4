import assert from "node:assert/strict";
import { test } from "node:test";
import { Fifo } from "../../src/common/fifo.js";

test("a fifo gives items back in order, peeks behind the front, and is empty after clear", () => {
  const q = new Fifo<string>();
  assert.equal(q.shift(), undefined);
  for (const s of ["a", "b", "c"]) q.push(s);
  assert.equal(q.length, 3);
  assert.equal(q.peek(), "a");
  assert.equal(q.peek(2), "c");
  assert.equal(q.peek(3), undefined);
  assert.equal(q.shift(), "a");
  assert.equal(q.peek(1), "c");
  q.clear();
  assert.equal(q.length, 0);
  assert.equal(q.peek(), undefined);
});

test("order survives compaction, with pushes between shifts", () => {
  const q = new Fifo<number>();
  let next = 0;
  const taken: number[] = [];
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 100; i++) q.push(next++);
    for (let i = 0; i < 90; i++) taken.push(q.shift() as number);
  }
  while (q.length > 0) taken.push(q.shift() as number);
  assert.deepEqual(taken, Array.from({ length: next }, (_, i) => i));
});
