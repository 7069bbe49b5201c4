// A process for crash tests to kill: it replays a storage history (storage_history.ts) into a new
// LevelLogStorage and never closes it. It prints one line per event, each before the next step
// begins (stdout to a pipe is synchronous on Linux), so what the test reads bounds what it may
// find on disk:
//   loaded        the store is open and empty; step 1 begins next
//   begin <n>     step n is called
//   done <n>      step n's call returned
//   finished      every step is done; the process waits to be killed
// Usage: node crash_writer.js <dir> <HistorySpec as JSON>. It exits by itself only when its stdin
// closes, so it does not outlive a test runner that died.

import { LevelLogStorage } from "../../src/raft/storage/leveldb.js";
import { type HistorySpec, applyOp, storageHistory } from "./storage_history.js";

function decodeSpec(text: string): HistorySpec {
  const refuse = (what: string): never => {
    throw new Error(`crash writer: ${what} in the history spec ${text}`);
  };
  const spec: unknown = JSON.parse(text);
  if (typeof spec !== "object" || spec === null) return refuse("not an object");
  const { seed, steps, options } = spec as Record<string, unknown>;
  if (!Number.isSafeInteger(seed)) refuse("seed is not an integer");
  if (!Number.isSafeInteger(steps) || (steps as number) < 0) refuse("steps is not a count");
  if (typeof options !== "object" || options === null) return refuse("options is not an object");
  const { entryBytes, compactions } = options as Record<string, unknown>;
  if (entryBytes !== undefined && (!Number.isSafeInteger(entryBytes) || (entryBytes as number) < 0)) refuse("options.entryBytes is not a size");
  if (compactions !== undefined && typeof compactions !== "boolean") refuse("options.compactions is not a boolean");
  return { seed: seed as number, steps: steps as number, options: { entryBytes: entryBytes as number | undefined, compactions: compactions as boolean | undefined } };
}

async function main(): Promise<void> {
  const [dir, specText] = process.argv.slice(2);
  if (dir === undefined || specText === undefined) throw new Error("usage: crash_writer.js <dir> <history spec as JSON>");
  const history = storageHistory(decodeSpec(specText));
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();

  const store = await LevelLogStorage.open(dir);
  const state = await store.load();
  if (state.hardState !== undefined || state.snapshot !== undefined || state.entries.length > 0) {
    throw new Error(`crash writer: ${dir} is not empty, but the history starts from an empty store`);
  }
  process.stdout.write("loaded\n");
  for (const [i, step] of history.entries()) {
    process.stdout.write(`begin ${i + 1}\n`);
    await applyOp(store, step.op);
    process.stdout.write(`done ${i + 1}\n`);
  }
  process.stdout.write("finished\n");
}

await main();
