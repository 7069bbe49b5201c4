// The README's contract: `npm start` (cairn dev) runs a three-node cluster, Ctrl-C stops all
// three cleanly, and running it again resumes from the data.

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";

const cairn = fileURLToPath(new URL("../../../bin/cairn", import.meta.url));
const cwd = mkdtempSync(join(tmpdir(), "cairn-dev-"));

function startDev(): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [cairn, "dev"], { cwd, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (c: Buffer) => { out += c.toString(); });
  child.stderr.on("data", (c: Buffer) => { out += c.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, output: () => out, exited };
}

async function until(condition: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function portsClosed(): Promise<boolean> {
  const probes = [8501, 8502, 8503].map((port) => fetch(`http://127.0.0.1:${port}/v1/status/leader`).then(() => false, () => true));
  return (await Promise.all(probes)).every(Boolean);
}

void describe("cairn dev (npm start)", () => {
  after(() => rmSync(cwd, { recursive: true, force: true }));

  void test("starts three nodes, names the leader, stops cleanly on Ctrl-C, and resumes from its data", async () => {
    const first = startDev();
    try {
      await until(() => /leader: node\d/.test(first.output()), 30_000, first.output);
      for (const n of [1, 2, 3]) assert.match(first.output(), new RegExp(`node${n}: http 127\\.0\\.0\\.1:850${n}`));
      const put = await fetch("http://127.0.0.1:8502/v1/kv/kept", {
        method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ value: "across restarts" }),
      });
      assert.equal(put.status, 200);
    } finally {
      first.child.kill("SIGINT");
    }
    assert.equal(await first.exited, 0, first.output());
    assert.ok(await portsClosed(), "every node stopped");

    const second = startDev();
    try {
      await until(() => /leader: node\d/.test(second.output()), 30_000, second.output);
      const res = await fetch("http://127.0.0.1:8503/v1/kv/kept");
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { value: string }).value, "across restarts");
    } finally {
      second.child.kill("SIGINT");
    }
    assert.equal(await second.exited, 0, second.output());
  });
});
