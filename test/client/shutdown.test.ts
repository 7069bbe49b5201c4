// deregisterAllOnShutdown in a real child process: SIGTERM deregisters, then the process dies of
// the signal as it would have without the client.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { FakeNode, registryHandler, until } from "./fake_node.js";

const clientModule = fileURLToPath(new URL("../../src/client/client.js", import.meta.url));

void describe("deregistration on shutdown", () => {
  const nodes: FakeNode[] = [];
  after(async () => {
    await Promise.all(nodes.map((n) => n.close()));
  });

  void test("SIGTERM deregisters every instance, then the process ends by SIGTERM", async () => {
    const node = await FakeNode.start(registryHandler());
    nodes.push(node);
    const script = `
      const { CairnClient } = await import(${JSON.stringify(clientModule)});
      const client = new CairnClient({ endpoints: [${JSON.stringify(node.url)}] });
      await client.register({ name: "web", id: "web-1", ttl: "30s" });
      await client.register({ name: "web", id: "web-2" });
      client.deregisterAllOnShutdown();
      client.deregisterAllOnShutdown(); // once
      setInterval(() => undefined, 1000); // the service's own work keeps it alive
      process.stdout.write("ready\\n");
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      let out = "";
      let err = "";
      child.stdout.on("data", (c: Buffer) => { out += c.toString(); });
      child.stderr.on("data", (c: Buffer) => { err += c.toString(); });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
      await until(() => out.includes("ready") || child.exitCode !== null, 10_000, "the child to register");
      assert.ok(out.includes("ready"), `child failed: ${err}`);
      child.kill("SIGTERM");
      const { code, signal } = await exited;
      assert.equal(signal, "SIGTERM", `exit code ${code}; stderr: ${err}`);
      assert.deepEqual(node.seen.filter((r) => r.method === "DELETE").map((r) => r.url).sort(), ["/v1/registry/instances/web-1", "/v1/registry/instances/web-2"]);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
