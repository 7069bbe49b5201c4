import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffDelayMs } from "../../src/common/backoff.js";

test("backoff doubles per retry up to its cap, and its jitter stays in [d/2, d)", () => {
  assert.equal(backoffDelayMs(1, 50, 1000, () => 0), 25);
  assert.equal(backoffDelayMs(2, 50, 1000, () => 0), 50);
  assert.ok(backoffDelayMs(3, 50, 1000, () => 0.999_999) < 200);
  assert.equal(backoffDelayMs(10, 50, 1000, () => 0), 500);
  assert.ok(backoffDelayMs(10, 50, 1000, () => 0.999_999) < 1000);
});

test("a long outage does not overflow the backoff ceiling", () => {
  assert.equal(backoffDelayMs(1_000_000, 50, 2000, () => 0.5), 1500);
});
