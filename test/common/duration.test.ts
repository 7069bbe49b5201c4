import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseGoDuration } from "../../src/common/duration.js";

void describe("Go durations", () => {
  for (const [text, ms] of [["10s", 10_000], ["1m30s", 90_000], ["500ms", 500], ["1.5h", 5_400_000], ["0", 0], ["120000ms", 120_000]] as const) {
    void test(`"${text}" is ${ms} ms`, () => assert.equal(parseGoDuration(text), ms));
  }
  for (const bad of ["", "10", "s", "10x", "1m 30s", "-5s", "abc"]) {
    void test(`"${bad}" is refused`, () => assert.equal(parseGoDuration(bad), undefined));
  }
});
