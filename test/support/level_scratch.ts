// One test's LevelDB directory, and everything opened in it, so that cleanup can close it all and
// remove the directory even when the test fails.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Level } from "level";
import { LevelLogStorage } from "../../src/raft/storage/leveldb.js";
import type { PersistedState } from "../../src/raft/storage/log_storage.js";

export type RawDb = Level<string, Uint8Array>;

export class Scratch {
  private readonly opened: { close(): Promise<void> }[] = [];

  constructor(readonly dir: string) {}

  async open(): Promise<LevelLogStorage> {
    const storage = await LevelLogStorage.open(this.dir);
    this.opened.push(storage);
    return storage;
  }

  /** Opens storage and loads it, as a restarting node does. */
  async restart(previous?: LevelLogStorage): Promise<{ storage: LevelLogStorage; state: PersistedState }> {
    if (previous !== undefined) await previous.close();
    const storage = await this.open();
    return { storage, state: await storage.load() };
  }

  /** Raw access to the same LevelDB, for what a crash or a bad disk would leave behind. */
  async raw<T>(fn: (db: RawDb) => Promise<T>): Promise<T> {
    const db = new Level<string, Uint8Array>(this.dir, { keyEncoding: "utf8", valueEncoding: "view" });
    this.opened.push(db);
    await db.open();
    try {
      return await fn(db);
    } finally {
      await db.close();
    }
  }

  async rawEntryKeys(): Promise<string[]> {
    return this.raw(async (db) => db.keys({ gte: "e/", lt: "e0" }).all());
  }

  async rawGet(key: string): Promise<Uint8Array> {
    const value = await this.raw(async (db) => db.get(key));
    assert.ok(value !== undefined, `expected a value under ${key}`);
    return new Uint8Array(value);
  }

  async rawPut(key: string, value: Uint8Array): Promise<void> {
    await this.raw(async (db) => db.put(key, value));
  }

  async closeAll(): Promise<void> {
    for (const handle of this.opened.splice(0)) {
      try {
        await handle.close();
      } catch {
        // Already closed or never opened: nothing left to release.
      }
    }
  }
}

export async function makeScratch(): Promise<Scratch> {
  return new Scratch(await mkdtemp(join(tmpdir(), "cairn-storage-")));
}

/** Closes everything opened in the scratch directory, then removes it. */
export async function removeScratch(scratch: Scratch): Promise<void> {
  await scratch.closeAll();
  await rm(scratch.dir, { recursive: true, force: true });
}

export async function withScratch(fn: (s: Scratch) => Promise<void>): Promise<void> {
  const scratch = await makeScratch();
  try {
    await fn(scratch);
  } finally {
    await removeScratch(scratch);
  }
}
