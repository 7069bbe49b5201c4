// `cairn dev` (what `npm start` runs): a three-node cluster on loopback, data under ./data.
// Each node is a real `cairn server` process; Ctrl-C stops all three cleanly, and running the
// command again resumes from their data. The CA's keys are sealed with a KEK made once and kept
// in ./data/ca-kek (owner-only), as an operator would provide one. Peer traffic is mutual TLS with
// a peer CA and node certificates made on the first run under ./data/tls and reused after, just as
// `cairn tls` would make them; the public ports stay plaintext on loopback.
//
// ACLs are off unless `cairn dev --acl`: then the cluster bootstraps itself once and keeps the
// management token's SecretID in ./data/bootstrap-token (owner-only). The secret is never printed.

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { errorMessage } from "../common/errors.js";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type PeerCredentialPaths, ensurePeerCredentials, peerCredentialFlags } from "../tls/files.js";

interface DevNode {
  readonly id: string;
  readonly http: string;
  readonly grpc: string;
  readonly peer: string;
  readonly data: string;
}

const NODES: readonly DevNode[] = [1, 2, 3].map((n) => ({
  id: `node${n}`,
  http: `127.0.0.1:${8500 + n}`,
  grpc: `127.0.0.1:${8600 + n}`,
  peer: `127.0.0.1:${8700 + n}`,
  data: join("data", `node${n}`),
}));

const LEADER_WAIT_MS = 30_000;
const KEK_PATH = join("data", "ca-kek");
const TLS_DIR = join("data", "tls");
const BOOTSTRAP_TOKEN_PATH = join("data", "bootstrap-token");
/** How long `cairn dev --acl` keeps trying to bootstrap once a leader is known. */
const BOOTSTRAP_WAIT_MS = 15_000;

/** The dev cluster's KEK: made on the first run, reused after, readable by its owner only. */
function devKekPath(): string {
  mkdirSync("data", { recursive: true });
  if (!existsSync(KEK_PATH)) writeFileSync(KEK_PATH, `${randomBytes(32).toString("base64")}\n`, { mode: 0o600 });
  return KEK_PATH;
}

export async function runDev(args: readonly string[]): Promise<void> {
  const acl = args.length === 1 && args[0] === "--acl";
  if (args.length > 0 && !acl) {
    process.stderr.write(`cairn dev takes only --acl (got ${args.join(" ")}); it always runs the three nodes in the README\n`);
    process.exit(2);
  }
  const mainPath = fileURLToPath(new URL("./main.js", import.meta.url));
  const initialCluster = NODES.map((n) => `${n.id}=${n.peer}`).join(",");
  const children: ChildProcess[] = [];
  const kekPath = devKekPath();
  const peerCredentials = ensurePeerCredentials(TLS_DIR, NODES.map((n) => n.id));
  for (const node of NODES) {
    mkdirSync(node.data, { recursive: true });
    const logPath = join(node.data, "cairn.log");
    const log = createWriteStream(logPath, { flags: "a" });
    const child = spawn(process.execPath, [mainPath, "server",
      "--id", node.id, "--data", node.data, "--http", node.http, "--grpc", node.grpc, "--peer", node.peer,
      "--initial-cluster", initialCluster, "--ca-kek-file", kekPath, "--acl", acl ? "on" : "off",
      ...peerCredentialFlags(peerCredentials.get(node.id) as PeerCredentialPaths)], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout?.pipe(log);
    child.stderr?.on("data", (chunk: Buffer) => process.stderr.write(`[${node.id}] ${chunk.toString()}`));
    child.on("exit", (code, signal) => {
      if (!stopping) process.stderr.write(`[${node.id}] exited unexpectedly (code ${code ?? "none"}, signal ${signal ?? "none"}); its log is ${resolve(logPath)}\n`);
    });
    children.push(child);
    process.stdout.write(`${node.id}: http ${node.http}  grpc ${node.grpc}  peer ${node.peer}  data ${resolve(node.data)}  log ${resolve(logPath)}\n`);
  }

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    process.stdout.write("stopping the cluster...\n");
    let alive = children.filter((c) => c.exitCode === null && c.signalCode === null).length;
    if (alive === 0) process.exit(0);
    for (const c of children) {
      c.once("exit", () => {
        if (--alive === 0) process.exit(0);
      });
      c.kill("SIGTERM");
    }
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);

  const leader = await waitForLeader();
  if (leader === undefined) {
    process.stdout.write(`no leader after ${LEADER_WAIT_MS / 1000}s; check the logs above\n`);
  } else {
    const node = NODES.find((n) => n.peer === leader);
    if (acl) {
      await bootstrapOnce();
      process.stdout.write(`leader: ${node?.id ?? "?"} (peer ${leader}); try: curl -X PUT -H "X-Consul-Token: $(cat ${BOOTSTRAP_TOKEN_PATH})" -d '{"Name":"web","Port":8080}' http://${NODES[0]?.http}/v1/agent/service/register\n`);
    } else {
      process.stdout.write(`leader: ${node?.id ?? "?"} (peer ${leader}); try: curl -X PUT -d '{"Name":"web","Port":8080}' http://${NODES[0]?.http}/v1/agent/service/register\n`);
    }
  }
  process.stdout.write(`dashboard: http://${NODES[0]?.http}/ui/ (every node serves it)\n`);
  process.stdout.write("Ctrl-C stops all three nodes.\n");
}

/**
 * Makes the management token on the first run and keeps its SecretID in data/bootstrap-token
 * (mode 0600); later runs find the file and leave it. Only the path is printed, never the secret.
 */
async function bootstrapOnce(): Promise<void> {
  if (existsSync(BOOTSTRAP_TOKEN_PATH)) {
    process.stdout.write(`ACLs on; the management token is in ${resolve(BOOTSTRAP_TOKEN_PATH)}\n`);
    return;
  }
  const deadline = Date.now() + BOOTSTRAP_WAIT_MS;
  let problem = "";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`http://${NODES[0]?.http}/v1/acl/bootstrap`, { method: "PUT" });
      if (res.ok) {
        const body = (await res.json()) as { SecretID?: unknown };
        if (typeof body.SecretID !== "string") throw new Error("the bootstrap answer has no SecretID");
        writeFileSync(BOOTSTRAP_TOKEN_PATH, `${body.SecretID}\n`, { mode: 0o600 });
        process.stdout.write(`ACLs on and bootstrapped; the management token is in ${resolve(BOOTSTRAP_TOKEN_PATH)} (owner-only)\n`);
        return;
      }
      problem = `${res.status} ${await res.text()}`;
      if (res.status === 403) break;
    } catch (err) {
      problem = errorMessage(err);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  process.stdout.write(`ACLs on, but the cluster could not be bootstrapped (${problem}); if it was bootstrapped before without ${BOOTSTRAP_TOKEN_PATH}, remove ./data to start over\n`);
}

async function waitForLeader(): Promise<string | undefined> {
  const deadline = Date.now() + LEADER_WAIT_MS;
  while (Date.now() < deadline) {
    for (const node of NODES) {
      try {
        const res = await fetch(`http://${node.http}/v1/status/leader`);
        const leader = (await res.json()) as string;
        if (leader !== "") return leader;
      } catch {
        // not listening yet
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return undefined;
}
