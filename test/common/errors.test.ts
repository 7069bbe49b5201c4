import assert from "node:assert/strict";
import { test } from "node:test";
import { asError, errorMessage } from "../../src/common/errors.js";

test("a thrown value that is not an Error still has a message, and becomes an Error", () => {
  const thrown = new RangeError("out of range");
  assert.equal(errorMessage(thrown), "out of range");
  assert.equal(errorMessage("disk full"), "disk full");
  assert.equal(errorMessage(undefined), "undefined");
  assert.equal(asError(thrown), thrown, "an Error is passed through, with its class and stack");
  const wrapped = asError(42);
  assert.ok(wrapped instanceof Error);
  assert.equal(wrapped.message, "42");
});
