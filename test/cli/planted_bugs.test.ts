import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../../src/cli/config.js";
import { plantedBugFromEnv } from "../../src/cli/planted_bugs.js";

void test("no CAIRN_PLANTED_BUG plants nothing", () => {
  assert.equal(plantedBugFromEnv({}), undefined);
  assert.equal(plantedBugFromEnv({ CAIRN_PLANTED_BUG: "" }), undefined);
});

void test("a planted bug is routed to the part of the server it lives in", () => {
  assert.equal(plantedBugFromEnv({ CAIRN_PLANTED_BUG: "readWithoutReadIndex" })?.driver, "readWithoutReadIndex");
  assert.equal(plantedBugFromEnv({ CAIRN_PLANTED_BUG: "ackBeforeCommit" })?.driver, "ackBeforeCommit");
  assert.equal(plantedBugFromEnv({ CAIRN_PLANTED_BUG: "watchSkipsEvent" })?.watchHub, "watchSkipsEvent");
});

void test("an unknown planted bug is refused with the list of known ones", () => {
  assert.throws(() => plantedBugFromEnv({ CAIRN_PLANTED_BUG: "nope" }), (err: unknown) =>
    err instanceof ConfigError && err.message.includes("watchSkipsEvent") && err.message.includes("readWithoutReadIndex"));
});
