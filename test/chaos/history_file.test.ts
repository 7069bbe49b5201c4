import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { readHistory, writeHistory } from "../../chaos/history_file.js";
import { HistoryBuilder } from "./checkers/history_builder.js";

void test("a history written to history.jsonl reads back the same", async () => {
  const dir = mkdtempSync(join(tmpdir(), "cairn-history-"));
  try {
    const h = new HistoryBuilder();
    h.read([], [1, 2], { revision: 3 });
    h.fault("crash", 5, 9);
    const history = h.build();
    await writeHistory(join(dir, "history.jsonl"), history);
    assert.deepEqual(await readHistory(join(dir, "history.jsonl")), history);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

void test("a line that is not a history record is refused with its line number", async () => {
  const dir = mkdtempSync(join(tmpdir(), "cairn-history-"));
  try {
    writeFileSync(join(dir, "h.jsonl"), `{"type":"settings","nodes":3}\n{"type":"mystery"}\n`);
    await assert.rejects(readHistory(join(dir, "h.jsonl")), /h\.jsonl:2: unknown record type "mystery"/);
    writeFileSync(join(dir, "empty.jsonl"), "");
    await assert.rejects(readHistory(join(dir, "empty.jsonl")), /no settings record/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
