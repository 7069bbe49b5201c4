// The peer-credentials addon on real Unix sockets: the kernel's record of who connected, for the
// test process itself and for a child running as another user.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, chmodSync } from "node:fs";
import { type Server, type Socket, connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type PeerCredentials, peerCredentials } from "../../src/common/peer_credentials.js";

const CONNECT_MS = 10_000;

void describe("peerCredentials (SO_PEERCRED)", () => {
  let dir: string;
  let path: string;
  let server: Server;
  /** Each accepted connection's credentials, read as it is accepted, or the error reading them. */
  const accepted: ((creds: PeerCredentials | Error, socket: Socket) => void)[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "cairn-peercred-"));
    chmodSync(dir, 0o755);
    path = join(dir, "s.sock");
    server = createServer((socket) => {
      let creds: PeerCredentials | Error;
      try {
        creds = peerCredentials(socket);
      } catch (err) {
        creds = err as Error;
      }
      accepted.shift()?.(creds, socket);
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    chmodSync(path, 0o777);
  });

  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  const nextAccepted = (): Promise<{ creds: PeerCredentials | Error; socket: Socket }> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no connection within ${CONNECT_MS} ms`)), CONNECT_MS);
      accepted.push((creds, socket) => {
        clearTimeout(timer);
        resolve({ creds, socket });
      });
    });

  void test("a connection from this process reports this process's pid, uid and gid", async () => {
    const got = nextAccepted();
    const client = connect(path);
    const { creds, socket } = await got;
    socket.destroy();
    client.destroy();
    assert.deepEqual(creds, { pid: process.pid, uid: process.getuid?.(), gid: process.getgid?.() });
  });

  void test("a connection from a child running as nobody reports the child's pid and uid 65534", { skip: process.getuid?.() === 0 ? false : "needs root to run a child as another user" }, async () => {
    const got = nextAccepted();
    const child = spawn(process.execPath, ["-e", "const s = require('node:net').connect(process.argv[1]); s.on('connect', () => setTimeout(() => s.end(), 200)); s.on('error', (e) => { console.error(e.message); process.exit(1); })", path], {
      uid: 65534, gid: 65534, cwd: "/", stdio: ["ignore", "ignore", "inherit"],
    });
    try {
      const { creds, socket } = await got;
      socket.destroy();
      assert.deepEqual(creds, { pid: child.pid, uid: 65534, gid: 65534 });
    } finally {
      child.kill();
    }
  });

  void test("a socket that is already closed has no descriptor: a clear error, not a crash", async () => {
    const got = nextAccepted();
    const client = connect(path);
    const { socket } = await got;
    client.destroy();
    socket.destroy();
    assert.throws(() => peerCredentials(socket), /the connection has no file descriptor \(got undefined\); it is closed or is not a Unix socket/);
  });
});
