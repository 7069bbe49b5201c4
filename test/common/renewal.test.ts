import assert from "node:assert/strict";
import { test } from "node:test";
import { renewalAtMs, renewalWindowAround } from "../../src/common/renewal.js";

test("a renewal falls in its window of the lifetime left, spread by the random draw", () => {
  const consul = { fractionMin: 0.6, fractionMax: 0.9 };
  assert.equal(renewalAtMs(1_000, 11_000, consul, 0), 7_000);
  assert.equal(renewalAtMs(1_000, 11_000, consul, 0.5), 8_500);
  assert.ok(renewalAtMs(1_000, 11_000, consul, 0.999_999) < 10_000);
});

test("SPIRE's half the lifetime, ±10%, is the window from 45% to 55%", () => {
  const spire = renewalWindowAround(0.5, 0.1);
  assert.ok(Math.abs(spire.fractionMin - 0.45) < 1e-12 && Math.abs(spire.fractionMax - 0.55) < 1e-12);
  assert.ok(Math.abs(renewalAtMs(0, 3_600_000, spire, 0.5) - 1_800_000) < 1e-6);
  assert.equal(renewalAtMs(0, 3_600_000, renewalWindowAround(0.05, 0), 0.7), 180_000);
});

test("a certificate received already expired is due at once", () => {
  assert.equal(renewalAtMs(5_000, 4_000, { fractionMin: 0.6, fractionMax: 0.9 }, 0.5), 5_000);
});
