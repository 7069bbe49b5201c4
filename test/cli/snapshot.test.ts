// `cairn snapshot` in process: its usage errors and help, and the progress bar it draws, on a
// terminal and off one. The commands against a real cluster are in test/server/snapshot.test.ts.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Progress, formatBytes } from "../../src/cli/progress.js";
import { runSnapshot, summaryText } from "../../src/cli/snapshot.js";

function capture(isTTY = false): { readonly stream: { write(text: string): boolean; readonly isTTY: boolean }; text(): string } {
  let out = "";
  return { stream: { write: (t: string) => { out += t; return true; }, isTTY }, text: () => out };
}

async function run(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = capture();
  const stderr = capture();
  const code = await runSnapshot(argv, env, { stdout: stdout.stream, stderr: stderr.stream });
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

void describe("cairn snapshot's command line", () => {
  void test("--help and no command print the usage and succeed", async () => {
    for (const argv of [[], ["--help"], ["save", "--help"], ["help"]]) {
      const r = await run(argv);
      assert.equal(r.code, 0, argv.join(" "));
      assert.match(r.stdout, /cairn snapshot save FILE .*\n.*cairn snapshot restore FILE .*\n.*cairn snapshot inspect FILE/);
      assert.match(r.stdout, /--addr URL .*CAIRN_HTTP_ADDR/);
    }
  });

  void test("a usage mistake exits 2, saying what was wrong", async () => {
    const cases: [string[], RegExp][] = [
      [["backup", "f"], /unknown command "backup": use save, restore or inspect/],
      [["save"], /save takes one FILE, not none/],
      [["inspect", "a", "b"], /inspect takes one FILE, not a b/],
      [["save", "f", "--force"], /--force applies to restore only/],
      [["restore", "f", "--addr"], /--addr needs a value/],
      [["restore", "f", "--addr", "ftp://x"], /must be http:\/\/ or https:\/\//],
      [["restore", "f", "--bogus"], /unknown flag --bogus/],
    ];
    for (const [argv, message] of cases) {
      const r = await run(argv);
      assert.equal(r.code, 2, argv.join(" "));
      assert.match(r.stderr, message, argv.join(" "));
    }
  });

  void test("a file that cannot be read exits 1 naming it; a node that cannot be reached names the address and the flag", async () => {
    const missing = await run(["inspect", "/nonexistent/backup.snap"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^cairn snapshot inspect: cannot read \/nonexistent\/backup\.snap: ENOENT/);
    const unreachable = await run(["save", "/tmp/never-written.snap"], { CAIRN_HTTP_ADDR: "127.0.0.1:1" });
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /cannot reach http:\/\/127\.0\.0\.1:1: .*give --addr or CAIRN_HTTP_ADDR/);
  });

  void test("a section's summary reads as words, singular for one", () => {
    assert.equal(summaryText({ services: 1, instances: 2, policies: 1, trustDomain: "cairn.local" }), "1 service, 2 instances, 1 policy, trust domain cairn.local");
    assert.equal(formatBytes(512), "512 B");
    assert.equal(formatBytes(1536), "1.5 KiB");
    assert.equal(formatBytes(300 * 1024 * 1024), "300 MiB");
  });
});

void describe("the progress bar", () => {
  void test("off a terminal it writes a plain line at each quarter and at the end, and nothing in between", () => {
    const out = capture(false);
    const p = new Progress({ label: "saving snapshot", totalBytes: 1000, stream: out.stream });
    for (let done = 0; done <= 1000; done += 10) p.update(done);
    p.finish("then this");
    assert.deepEqual(out.text().split("\n"), [
      "saving snapshot: 0% of 1000 B",
      "saving snapshot: 25% (250 B of 1000 B)",
      "saving snapshot: 50% (500 B of 1000 B)",
      "saving snapshot: 75% (750 B of 1000 B)",
      "saving snapshot: 100% (1000 B)",
      "then this",
      "",
    ]);
  });

  void test("on a terminal it redraws one line in place, at most every 100 ms, and ends it when done", () => {
    const out = capture(true);
    let nowMs = 0;
    const p = new Progress({ label: "sending snapshot", totalBytes: 2048, stream: out.stream, nowMs: () => nowMs });
    p.update(512);
    nowMs = 50;
    p.update(1024);
    nowMs = 150;
    p.update(1024);
    p.finish();
    // The terminal's erase-to-end-of-line, shown as text so the patterns below can name it.
    const draws = out.text().replaceAll("\x1b[K", "<clear>").split("\r").filter((d) => d !== "");
    assert.equal(draws.length, 3, `the start, one redraw past 100 ms, the end: ${JSON.stringify(out.text())}`);
    assert.match(draws[0], /^sending snapshot \[-{30}\] 0% 0 B of 2\.0 KiB<clear>$/);
    assert.match(draws[1], /^sending snapshot \[#{15}-{15}\] 50% 1\.0 KiB of 2\.0 KiB<clear>$/);
    assert.match(draws[2], /^sending snapshot \[#{30}\] 100% 2\.0 KiB of 2\.0 KiB<clear>\n$/);
  });
});
