// Caller attestation on the SPIFFE Workload API: a real node with --workload-attest rules, called
// by real gRPC clients running as other users (child processes spawned with uid/gid; the tests
// run as root, as CI does). Each caller must receive exactly the SPIFFE IDs its uid or gid is
// granted, as SVIDs that openssl verifies against the bundle, and a caller no rule matches must
// be refused with a message that names its uid and the setting to change.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ProcessCluster, waitFor } from "../support/cluster.js";
import { DerReader, Tag, elementBytes, pemEncode } from "../../src/common/der.js";
import type { FetchOutcome, FetchedSvid } from "./workload_fetch_client.js";

const TD = "cairn.local";
const idOf = (svc: string): string => `spiffe://${TD}/ns/default/svc/${svc}`;
const WEB = idOf("web");
const API = idOf("api");
const DB = idOf("db");
/** uid 1000 holds web; uid 1001 holds api; anyone whose gid is 2000 holds db. */
const RULES = `uid:1000=${WEB},uid:1001=${API},gid:2000=${DB}`;
/** Bounds each client process: connect, the CA's first signing, one message. */
const FETCH_MS = 15_000;

const clientPath = fileURLToPath(new URL("./workload_fetch_client.js", import.meta.url));
const isRoot = process.getuid?.() === 0;

/** Runs the Workload API client as `uid`/`gid` and returns what it printed. */
function fetchAs(socket: string, uid: number, gid: number, method: "FetchX509SVID" | "FetchX509Bundles"): Promise<FetchOutcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [clientPath, socket, method, String(FETCH_MS)], {
      uid, gid, cwd: "/", env: { PATH: process.env.PATH ?? "/usr/bin:/bin" }, stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    // The client bounds itself; this backstop catches a client that hangs anyway.
    const backstop = setTimeout(() => child.kill("SIGKILL"), FETCH_MS + 5_000);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(backstop);
      if (code !== 0) return reject(new Error(`the client as uid ${uid} gid ${gid} exited ${code}: ${stderr}`));
      try {
        resolve(JSON.parse(stdout) as FetchOutcome);
      } catch {
        reject(new Error(`the client as uid ${uid} gid ${gid} printed no JSON: ${stdout} ${stderr}`));
      }
    });
  });
}

function splitDer(bytes: Uint8Array): X509Certificate[] {
  const reader = new DerReader(bytes);
  const out: X509Certificate[] = [];
  while (!reader.atEnd) out.push(new X509Certificate(elementBytes(bytes, reader.read("certificate", Tag.sequence))));
  return out;
}

/** An outcome for an assertion message: the IDs and statuses, never the keys. */
const summary = (o: FetchOutcome): string =>
  o.kind === "status" ? `uid ${o.uid} gid ${o.gid}: status ${o.code} ${o.details}` : `uid ${o.uid} gid ${o.gid}: SVIDs [${(o.svids ?? []).map((s) => s.spiffe_id).join(", ")}]${o.bundles === undefined ? "" : ` bundles for [${Object.keys(o.bundles).join(", ")}]`}`;

const pemOf = (certs: readonly X509Certificate[]): string => certs.map((c) => pemEncode("CERTIFICATE", c.raw)).join("");

void describe("Workload API caller attestation by uid and gid (SO_PEERCRED)", { skip: isRoot ? false : "needs root to run clients as other users" }, () => {
  let dir: string;
  let socket: string;
  let cluster: ProcessCluster;

  /** The SVIDs of a message, checked as a TLS peer would: key matches leaf, SAN is the ID, openssl verifies the chain against the bundle. */
  const verifiedIds = (svids: readonly FetchedSvid[]): string[] => {
    for (const svid of svids) {
      const chain = splitDer(Buffer.from(svid.x509_svid, "base64"));
      const roots = splitDer(Buffer.from(svid.bundle, "base64"));
      assert.ok(chain.length >= 2 && roots.length >= 1, `${svid.spiffe_id}: a leaf with its intermediate, and a bundle`);
      assert.equal(chain[0].subjectAltName, `URI:${svid.spiffe_id}`, "the leaf names exactly its SPIFFE ID");
      const key = createPrivateKey({ key: Buffer.from(svid.x509_svid_key, "base64"), format: "der", type: "pkcs8" });
      assert.ok(chain[0].checkPrivateKey(key), `${svid.spiffe_id}: x509_svid_key is the leaf's key`);
      const tag = `${svid.spiffe_id.split("/").pop()}-${Math.random().toString(16).slice(2)}`;
      writeFileSync(join(dir, `roots-${tag}.pem`), pemOf(roots));
      writeFileSync(join(dir, `chain-${tag}.pem`), pemOf(chain.slice(1)));
      writeFileSync(join(dir, `leaf-${tag}.pem`), pemOf(chain.slice(0, 1)));
      const r = spawnSync("openssl", ["verify", "-CAfile", join(dir, `roots-${tag}.pem`), "-untrusted", join(dir, `chain-${tag}.pem`), join(dir, `leaf-${tag}.pem`)], { encoding: "utf8" });
      assert.equal(r.status, 0, `openssl verify ${svid.spiffe_id}: ${r.stderr}${r.stdout}`);
    }
    return svids.map((s) => s.spiffe_id).sort();
  };

  const svidsOf = (outcome: FetchOutcome): readonly FetchedSvid[] => {
    assert.equal(outcome.kind, "message", `expected SVIDs, got ${summary(outcome)}`);
    return outcome.kind === "message" ? outcome.svids ?? [] : [];
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "cairn-attest-"));
    // mkdtemp makes the directory 0700: the other users must be able to reach the socket in it.
    chmodSync(dir, 0o755);
    socket = join(dir, "workload.sock");
    cluster = await ProcessCluster.start(1, ["--log-level", "warn", "--workload-socket", socket, "--workload-socket-mode", "0777", "--workload-attest", RULES]);
    await cluster.agreedLeader();
    await waitFor(() => Promise.resolve(existsSync(socket) ? true : undefined), 10_000, () => `no socket at ${socket}: ${cluster.nodes[0].stderr}`);
  });

  after(async () => {
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  void test("callers at once as four users: each receives exactly the SPIFFE IDs its uid or gid is granted, and no rule means PermissionDenied", async () => {
    const [web, apiAndDb, dbOnly, nobody] = await Promise.all([
      fetchAs(socket, 1000, 1000, "FetchX509SVID"),
      fetchAs(socket, 1001, 2000, "FetchX509SVID"),
      fetchAs(socket, 1002, 2000, "FetchX509SVID"),
      fetchAs(socket, 65534, 65534, "FetchX509SVID"),
    ]);
    assert.deepEqual([web.uid, apiAndDb.uid, dbOnly.uid, nobody.uid], [1000, 1001, 1002, 65534], "each client ran as the user it was given");
    assert.deepEqual(verifiedIds(svidsOf(web)), [WEB]);
    assert.deepEqual(verifiedIds(svidsOf(apiAndDb)), [API, DB].sort(), "uid 1001 holds api by its uid and db by its gid");
    assert.deepEqual(verifiedIds(svidsOf(dbOnly)), [DB], "uid 1002 holds db by its gid alone");
    // One SVID per identity serves every caller granted it.
    const dbOf = (o: FetchOutcome): FetchedSvid | undefined => svidsOf(o).find((s) => s.spiffe_id === DB);
    assert.equal(dbOf(apiAndDb)?.x509_svid, dbOf(dbOnly)?.x509_svid);

    assert.equal(nobody.kind, "status", summary(nobody));
    if (nobody.kind === "status") {
      assert.equal(nobody.code, grpc.status.PERMISSION_DENIED, nobody.details);
      assert.match(nobody.details, /granted to uid 65534 \(gid 65534\): to grant one, add uid:65534=<SPIFFE ID> or gid:65534=<SPIFFE ID> to --workload-attest/);
    }
  });

  void test("the test's own root user matches no rule and is refused too: root gets nothing it is not granted", async () => {
    const root = await fetchAs(socket, 0, 0, "FetchX509SVID");
    assert.equal(root.kind, "status", summary(root));
    if (root.kind === "status") {
      assert.equal(root.code, grpc.status.PERMISSION_DENIED);
      assert.match(root.details, /uid 0 \(gid 0\)/);
    }
  });

  void test("FetchX509Bundles serves the trust bundle to any caller, attested or not: roots are public", async () => {
    const [granted, unmatched] = await Promise.all([fetchAs(socket, 1000, 1000, "FetchX509Bundles"), fetchAs(socket, 65534, 65534, "FetchX509Bundles")]);
    for (const outcome of [granted, unmatched]) {
      assert.equal(outcome.kind, "message", summary(outcome));
      if (outcome.kind === "message") {
        assert.deepEqual(Object.keys(outcome.bundles ?? {}), [`spiffe://${TD}`]);
        assert.equal(splitDer(Buffer.from(outcome.bundles?.[`spiffe://${TD}`] ?? "", "base64")).length, 1);
      }
    }
  });

  void test("the socket mode is the one configured: a user the mode shuts out cannot connect at all", async () => {
    const strict = join(dir, "strict.sock");
    const node = await ProcessCluster.start(1, ["--log-level", "warn", "--workload-socket", strict, "--workload-attest", RULES]);
    try {
      await waitFor(() => Promise.resolve(existsSync(strict) ? true : undefined), 10_000, () => `no socket at ${strict}: ${node.nodes[0].stderr}`);
      // The default 0770 with root as owner and group: uid 1000 is neither, so connect() fails.
      const probe = `require("node:net").connect(process.argv[1]).on("connect", () => { console.log("connected"); process.exit(0); }).on("error", (e) => { console.log(e.code); process.exit(0); })`;
      const r = spawnSync(process.execPath, ["-e", probe, strict], { uid: 1000, gid: 1000, cwd: "/", encoding: "utf8", timeout: FETCH_MS });
      assert.equal(r.stdout.trim(), "EACCES", `uid 1000 on a 0770 root socket: ${r.stdout}${r.stderr}`);
    } finally {
      await node.close();
    }
  });
});
