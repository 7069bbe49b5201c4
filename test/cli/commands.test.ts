// The cairn CLI's client commands, each spawned as a real process (`node bin/cairn ...`) against
// one real three-node cluster with ACLs on, whose n3 serves HTTPS from a private CA: tables and
// --json, the global flags and their environment variables, refusals that say what to do, exit
// codes, a live watch, and certificate files kept fresh through a root rotation.

import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { type KeyObject, X509Certificate, createPrivateKey } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { type ProcessNode, ProcessCluster, waitFor } from "../support/cluster.js";
import { testPeerCredentials } from "../support/peer_tls.js";

const cairnBin = fileURLToPath(new URL("../../../bin/cairn", import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), "cairn-cli-test-"));
/** One CLI run; far more than any command here takes, so a hang fails the test instead of the suite. */
const RUN_TIMEOUT_MS = 30_000;
/** How long a live command's output may take to show a change. */
const CHANGE_WAIT_MS = 15_000;

/** The parent's environment without CAIRN_* settings, so each run sees only what the test gives it. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("CAIRN_")) env[k] = v;
  return { ...env, ...extra };
}

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** `cairn args...` to completion. */
function cairn(args: readonly string[], extraEnv: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cairnBin, ...args], { env: cleanEnv(extraEnv), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`cairn ${args.join(" ")} did not finish within ${RUN_TIMEOUT_MS} ms:\n${stdout}\n${stderr}`));
    }, RUN_TIMEOUT_MS);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A command that runs until stopped, with its output so far. */
interface Live {
  readonly child: ChildProcess;
  stdout: string;
  stderr: string;
  readonly exited: Promise<number | null>;
}

const live: Live[] = [];

function startCairn(args: readonly string[], extraEnv: Record<string, string> = {}): Live {
  const child = spawn(process.execPath, [cairnBin, ...args], { env: cleanEnv(extraEnv), stdio: ["ignore", "pipe", "pipe"] });
  const run: Live = {
    child,
    stdout: "",
    stderr: "",
    exited: new Promise((resolve) => child.on("exit", (code) => resolve(code))),
  };
  child.stdout?.on("data", (c: Buffer) => (run.stdout += c.toString()));
  child.stderr?.on("data", (c: Buffer) => (run.stderr += c.toString()));
  live.push(run);
  return run;
}

async function stop(run: Live, signal: NodeJS.Signals): Promise<number | null> {
  run.child.kill(signal);
  return run.exited;
}

function until(condition: () => boolean, what: () => string): Promise<true> {
  return waitFor(() => Promise.resolve(condition() ? true : undefined), CHANGE_WAIT_MS, what);
}

function expectOk(run: Run, what: string): Run {
  assert.equal(run.code, 0, `${what} exits 0:\n${run.stdout}\n${run.stderr}`);
  return run;
}

function json<T>(run: Run, what: string): T {
  return JSON.parse(expectOk(run, what).stdout) as T;
}

function certificatesIn(pem: string): X509Certificate[] {
  return pem.split(/(?<=-----END CERTIFICATE-----\n?)/).filter((p) => p.includes("BEGIN CERTIFICATE")).map((p) => new X509Certificate(p));
}

function openSslVerify(dir: string): void {
  // openssl verify checks the first certificate of a file: the intermediates come from svid.pem as untrusted.
  execFileSync("openssl", ["verify", "-CAfile", join(dir, "bundle.pem"), "-untrusted", join(dir, "svid.pem"), join(dir, "svid.pem")], { stdio: "pipe" });
}

void describe("the cairn CLI against a three-node cluster with ACLs on (n3 over HTTPS)", { timeout: 180_000 }, () => {
  let cluster: ProcessCluster;
  let token: string;
  let n1: string;
  let follower: ProcessNode;
  let httpsAddr: string;
  const caFile = testPeerCredentials("n3").caFile;
  /** The management token's flags, against n1. */
  let asAdmin: string[];

  before(async () => {
    const n3 = testPeerCredentials("n3");
    cluster = await ProcessCluster.start(3, [], {
      acl: true,
      nodeArgs: (id) => (id === "n3" ? ["--tls-cert-file", n3.certFile, "--tls-key-file", n3.keyFile] : []),
    });
    token = await cluster.bootstrapAcl(cluster.nodes[0]);
    // n3 speaks HTTPS only, which the harness's own calls do not: agree on a leader among the other two.
    const leader = await cluster.agreedLeader(20_000, cluster.nodes.slice(0, 2));
    follower = cluster.nodes.slice(0, 2).find((n) => n !== leader) ?? cluster.nodes[1];
    n1 = cluster.nodes[0].info.http;
    httpsAddr = `https://${cluster.nodes[2].info.http}`;
    asAdmin = ["--addr", n1, "--token", token];
  });

  after(async () => {
    await Promise.all(live.filter((r) => r.child.exitCode === null && r.child.signalCode === null).map((r) => stop(r, "SIGKILL")));
    await cluster?.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  void test("a usage error exits 2 with the command's help; --help exits 0 with an example", async () => {
    const [badFlag, noCommand, noName, help, unknownAddr] = await Promise.all([
      cairn(["members", "list", "--bogus"]),
      cairn(["members"]),
      cairn(["register", "--port", "80"]),
      cairn(["cert", "watch", "--help"]),
      cairn(["services", "list", "--addr", "ftp://x:1"]),
    ]);
    assert.equal(badFlag.code, 2);
    assert.match(badFlag.stderr, /cairn members list: unknown flag --bogus/);
    assert.match(badFlag.stderr, /usage: cairn members list/);
    assert.equal(noCommand.code, 2);
    assert.match(noCommand.stderr, /cairn members: no command[\s\S]*cairn members transfer-leader/);
    assert.equal(noName.code, 2);
    assert.match(noName.stderr, /--name is required/);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /usage: cairn cert watch[\s\S]*--out DIR[\s\S]*example:\n {2}cairn cert watch --service web/);
    assert.equal(unknownAddr.code, 2);
    assert.match(unknownAddr.stderr, /--addr "ftp:\/\/x:1" is not a node address/);
  });

  void test("without a token a command is refused with 403 and told to pass one; exit 1", async () => {
    const [run, watch] = await Promise.all([cairn(["members", "list", "--addr", n1]), cairn(["watch", "web", "--addr", n1])]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^cairn: could not list the cluster's members \(HTTP 403: Permission denied: .*operator:read.*\); no token was given: pass one that has operator:read with --token/);
    assert.equal(watch.code, 1, "a refused watch ends rather than retrying");
    assert.match(watch.stderr, /^cairn: could not watch the registry \(HTTP 403: Permission denied: .*service:read.*\); no token was given: pass one that has service:read on the services it watches/);
  });

  void test("members list: a table, and --json, by --addr and by CAIRN_HTTP_ADDR and CAIRN_TOKEN against a follower", async () => {
    const tokenFile = join(scratch, "token");
    writeFileSync(tokenFile, `${token}\n`);
    const [table, asJson, viaEnv, viaTokenFile] = await Promise.all([
      cairn(["members", "list", ...asAdmin]),
      cairn(["members", "list", "--json", ...asAdmin]),
      cairn(["members", "list", "--json"], { CAIRN_HTTP_ADDR: follower.info.http, CAIRN_TOKEN: token }),
      cairn(["members", "list", "--json", "--addr", `http://${follower.info.http}`], { CAIRN_TOKEN_FILE: tokenFile }),
    ]);
    expectOk(table, "members list");
    assert.match(table.stdout, /^leader n\d, term \d+, commit index \d+/);
    assert.match(table.stdout, /\nID +PEER ADDRESS +ROLE +MATCH\n/);
    for (const n of cluster.nodes) assert.match(table.stdout, new RegExp(`\\n${n.info.id} +${n.info.peer.replace(/\./g, "\\.")} +(leader|follower)`));
    const status = json<{ id: string; leader: string; members: { id: string }[] }>(asJson, "members list --json");
    assert.equal(status.id, "n1");
    assert.deepEqual(status.members.map((m) => m.id).sort(), ["n1", "n2", "n3"]);
    const fromFollower = json<{ id: string; role: string; leader: string }>(viaEnv, "members list via CAIRN_HTTP_ADDR");
    assert.equal(fromFollower.id, follower.info.id, "the node CAIRN_HTTP_ADDR names answered");
    assert.equal(fromFollower.role, "follower");
    assert.equal(fromFollower.leader, status.leader);
    assert.equal(json<{ id: string }>(viaTokenFile, "members list via CAIRN_TOKEN_FILE").id, follower.info.id);
  });

  void test("over HTTPS the node's CA comes from --ca-file or CAIRN_CACERT; without it the message says to pass one", async () => {
    const [withFlag, withEnv, untrusted] = await Promise.all([
      cairn(["members", "list", "--json", "--addr", httpsAddr, "--token", token, "--ca-file", caFile]),
      cairn(["services", "list", "--json"], { CAIRN_HTTP_ADDR: httpsAddr, CAIRN_TOKEN: token, CAIRN_CACERT: caFile }),
      cairn(["members", "list", "--addr", httpsAddr, "--token", token]),
    ]);
    assert.equal(json<{ id: string }>(withFlag, "members list over HTTPS").id, "n3");
    assert.ok(Array.isArray(json<unknown>(withEnv, "services list over HTTPS")));
    assert.equal(untrusted.code, 1);
    assert.match(untrusted.stderr, /could not list the cluster's members \(no node answered; .*\); the node's HTTPS certificate is not trusted: pass the CA .* --ca-file or CAIRN_CACERT/);
  });

  void test("acl policy create and token create make a token that may register web and nothing more; a second bootstrap is refused", async () => {
    const rules = JSON.stringify({ service: { web: { policy: "write" } }, service_prefix: { "": { policy: "read" } } });
    const policy = json<{ id: string; name: string; rules: string }>(await cairn(["acl", "policy", "create", "--name", "web-writer", "--rules", rules, "--json", ...asAdmin]), "acl policy create");
    assert.equal(policy.name, "web-writer");
    assert.equal(policy.rules, rules);
    const table = expectOk(await cairn(["acl", "token", "create", "--description", "web", "--policy", "web-writer", ...asAdmin]), "acl token create");
    assert.match(table.stdout, /^AccessorID: +[0-9a-f-]{36}\nSecretID: +[0-9a-f-]{36}\nDescription: +web\nPolicies: +web-writer\n/);
    const webToken = /SecretID: +(\S+)/.exec(table.stdout)?.[1] ?? "";

    const [registered, refused, secondBootstrap] = await Promise.all([
      cairn(["register", "--name", "web", "--id", "web-acl", "--addr", n1, "--token", webToken]),
      cairn(["members", "list", "--addr", n1, "--token", webToken]),
      cairn(["acl", "bootstrap", "--addr", n1]),
    ]);
    expectOk(registered, "register with the web token");
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /HTTP 403: Permission denied.*\); the token from --token lacks operator:read: use one whose policy grants it/);
    assert.equal(secondBootstrap.code, 1);
    assert.match(secondBootstrap.stderr, /could not bootstrap the ACL system \(HTTP 403: .*\); the ACL system was bootstrapped already/);
    expectOk(await cairn(["deregister", "web-acl", ...asAdmin]), "deregister web-acl");
  });

  void test("register, services list and show, instances and deregister: tables and --json", async () => {
    const web1 = json<{ id: string; service: string; checkIds: string[] }>(
      await cairn(["register", "--name", "web", "--id", "web-1", "--address", "10.0.0.1", "--port", "8080", "--tag", "v1", "--meta", "team=edge", "--ttl", "30s", "--json", ...asAdmin]),
      "register web-1");
    assert.deepEqual(web1, { id: "web-1", service: "web", checkIds: ["service:web-1"] });
    const web2 = expectOk(await cairn(["register", "--name", "web", "--id", "web-2", "--address", "10.0.0.2", "--port", "8081", "--tcp", "127.0.0.1:9", "--interval", "1h", ...asAdmin]), "register web-2");
    assert.match(web2.stdout, /^registered instance web-2 of service web \(checks service:web-2\)\n$/);

    const [list, listJson, show, showJson, instances, passing] = await Promise.all([
      cairn(["services", "list", ...asAdmin]),
      cairn(["services", "list", "--json", ...asAdmin]),
      cairn(["services", "show", "web", ...asAdmin]),
      cairn(["services", "show", "web", "--json", ...asAdmin]),
      cairn(["instances", "web", ...asAdmin]),
      cairn(["instances", "web", "--health", "passing", "--json", ...asAdmin]),
    ]);
    assert.match(expectOk(list, "services list").stdout, /^NAME +INSTANCES +TAGS\nweb +2 +v1\n$/);
    assert.deepEqual(json<unknown[]>(listJson, "services list --json"), [{ name: "web", tags: ["v1"], instances: 2 }]);
    assert.match(expectOk(show, "services show").stdout, /^service web: 2 instance\(s\), 1 passing, 0 warning, 1 critical; tags: v1\n/);
    assert.match(show.stdout, /\nweb-1 +10\.0\.0\.1:8080 +service:web-1 +ttl +passing/);
    assert.match(show.stdout, /\nweb-2 +10\.0\.0\.2:8081 +service:web-2 +tcp +critical/);
    const shown = json<{ health: Record<string, number>; instances: { id: string; meta: Record<string, string> }[] }>(showJson, "services show --json");
    assert.deepEqual(shown.health, { passing: 1, warning: 0, critical: 1 });
    assert.deepEqual(shown.instances.find((i) => i.id === "web-1")?.meta, { team: "edge" });
    assert.match(expectOk(instances, "instances").stdout, /^ID +ADDRESS +STATUS +NODE +ZONE +TAGS\nweb-1 +10\.0\.0\.1:8080 +passing +n\d +- +v1\nweb-2 +10\.0\.0\.2:8081 +critical /);
    assert.deepEqual(json<{ id: string }[]>(passing, "instances --health passing").map((i) => i.id), ["web-1"]);

    expectOk(await cairn(["deregister", "web-2", ...asAdmin]), "deregister web-2");
    const [again, unknownService] = await Promise.all([cairn(["deregister", "web-2", ...asAdmin]), cairn(["services", "show", "nosuch", ...asAdmin])]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /could not deregister the instance \(HTTP 404: instance web-2 is not registered\); cairn instances SERVICE lists/);
    assert.equal(unknownService.code, 1);
    assert.match(unknownService.stderr, /service nosuch has no instances/);
  });

  void test("register --heartbeat keeps its TTL check passing while one registered without it lapses, and Ctrl-C deregisters it", async () => {
    const kept = startCairn(["register", "--name", "hb", "--id", "hb-kept", "--ttl", "1s", "--heartbeat", ...asAdmin]);
    expectOk(await cairn(["register", "--name", "hb", "--id", "hb-lapsed", "--ttl", "1s", ...asAdmin]), "register without --heartbeat");
    await until(() => /heartbeating service:hb-kept/.test(kept.stderr), () => kept.stdout + kept.stderr);
    const statuses = async (): Promise<Record<string, string>> => {
      const found = json<{ id: string; status: string }[]>(await cairn(["instances", "hb", "--json", ...asAdmin]), "instances hb");
      return Object.fromEntries(found.map((i) => [i.id, i.status]));
    };
    let seen: Record<string, string> = {};
    // Once the unheartbeated check has lapsed, more than a TTL has passed for the other too.
    await waitFor(async () => ((seen = await statuses())["hb-lapsed"] === "critical" ? true : undefined), CHANGE_WAIT_MS, () => JSON.stringify(seen));
    assert.equal(seen["hb-kept"], "passing", "the heartbeated check stays passing");
    assert.equal(await stop(kept, "SIGINT"), 0, kept.stderr);
    assert.match(kept.stderr, /deregistered hb-kept/);
    assert.deepEqual(Object.keys(await statuses()), ["hb-lapsed"]);
  });

  void test("watch prints a registration made meanwhile (a line, or a JSON object with --json, also over HTTPS), and Ctrl-C ends it with 0", async () => {
    const lines = startCairn(["watch", "web", "--addr", follower.info.http, "--token", token]);
    // Every service, streamed over HTTPS from n3.
    const objects = startCairn(["watch", "--json", "--addr", httpsAddr, "--ca-file", caFile, "--token", token]);
    await until(() => /watching web from revision \d+/.test(lines.stderr) && /watching every service/.test(objects.stderr), () => `${lines.stderr}\n${objects.stderr}`);
    expectOk(await cairn(["register", "--name", "web", "--id", "web-3", "--address", "10.0.0.3", "--port", "8083", ...asAdmin]), "register web-3");
    await until(() => /^\d+ +upsert +web +web-3 +10\.0\.0\.3:8083 +passing$/m.test(lines.stdout), () => lines.stdout + lines.stderr);
    await until(() => objects.stdout.includes('"id":"web-3"'), () => objects.stdout + objects.stderr);
    const event = objects.stdout.split("\n").filter((l) => l.includes('"id":"web-3"')).map((l) => JSON.parse(l) as { type: string; service: string; instance: { port: number } })[0];
    assert.equal(event.type, "upsert");
    assert.equal(event.instance.port, 8083);
    assert.equal(await stop(lines, "SIGINT"), 0, lines.stderr);
    assert.equal(await stop(objects, "SIGINT"), 0, objects.stderr);
  });

  void test("cert issue writes a verifiable SVID for a generated key, signs a CSR of the caller's, and a forbidden identity is a clear 403", async () => {
    const out = join(scratch, "issued");
    const csrDir = join(scratch, "csr");
    mkdirSync(csrDir, { recursive: true });
    execFileSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", join(csrDir, "web.key"), "-subj", "/",
      "-addext", "subjectAltName=URI:spiffe://cairn.local/ns/default/svc/web", "-out", join(csrDir, "web.csr")], { stdio: "pipe" });
    const webToken = json<{ secretId: string }>(await cairn(["acl", "token", "create", "--policy", "web-writer", "--json", ...asAdmin]), "token for web").secretId;
    const [written, fromCsr, printed, forbidden] = await Promise.all([
      cairn(["cert", "issue", "--service", "web", "--out", out, "--ttl", "10m", ...asAdmin]),
      cairn(["cert", "issue", "--csr", join(csrDir, "web.csr"), "--json", ...asAdmin]),
      cairn(["cert", "issue", "--service", "web", ...asAdmin]),
      cairn(["cert", "issue", "--service", "api", "--addr", n1, "--token", webToken]),
    ]);
    assert.match(expectOk(written, "cert issue --out").stdout, /^issued spiffe:\/\/cairn\.local\/ns\/default\/svc\/web, serial \w+, valid until /);
    assert.equal(statSync(join(out, "svid-key.pem")).mode & 0o777, 0o600, "the key is the owner's alone");
    openSslVerify(out);
    const leaf = certificatesIn(readFileSync(join(out, "svid.pem"), "utf8"))[0];
    assert.equal(leaf.subjectAltName, "URI:spiffe://cairn.local/ns/default/svc/web");
    assert.ok(leaf.checkPrivateKey(createPrivateKeyFrom(join(out, "svid-key.pem"))), "svid-key.pem is the key of svid.pem");

    const signed = json<{ spiffeId: string; certificate: string; privateKey?: string; bundle: string }>(fromCsr, "cert issue --csr");
    assert.equal(signed.spiffeId, "spiffe://cairn.local/ns/default/svc/web");
    assert.equal(signed.privateKey, undefined, "the caller's CSR keeps its key");
    assert.ok(certificatesIn(signed.certificate)[0].checkPrivateKey(createPrivateKeyFrom(join(csrDir, "web.key"))), "the certificate is for the CSR's key");
    assert.match(expectOk(printed, "cert issue to stdout").stdout, /^-----BEGIN CERTIFICATE-----[\s\S]*-----BEGIN PRIVATE KEY-----/);
    assert.equal(forbidden.code, 1);
    assert.match(forbidden.stderr, /could not issue the certificate \(HTTP 403: .*\); the token from --token lacks service:write on the service whose identity it asks for/);
  });

  void test("cert watch keeps svid.pem, svid-key.pem and bundle.pem in --out, and after ca rotate bundle.pem holds the new root", async () => {
    const out = join(scratch, "watched");
    const watcher = startCairn(["cert", "watch", "--service", "web", "--out", out, "--json", ...asAdmin]);
    await until(() => watcher.stdout.includes('"event":"issued"'), () => watcher.stdout + watcher.stderr);
    for (const f of ["svid.pem", "svid-key.pem", "bundle.pem"]) assert.ok(existsSync(join(out, f)), `${f} is written`);
    assert.equal(statSync(join(out, "svid-key.pem")).mode & 0o777, 0o600);
    openSslVerify(out);
    const before = json<{ roots: { id: string; active: boolean }[] }>(await cairn(["ca", "roots", "--json", ...asAdmin]), "ca roots");
    assert.equal(before.roots.length, 1);

    const rotated = json<{ id: string; certificate: string; active: boolean }>(await cairn(["ca", "rotate", "--json", ...asAdmin]), "ca rotate");
    assert.ok(rotated.active && rotated.id !== before.roots[0].id);
    const newRoot = new X509Certificate(rotated.certificate);
    await until(() => certificatesIn(readFileSync(join(out, "bundle.pem"), "utf8")).some((c) => c.fingerprint256 === newRoot.fingerprint256),
      () => `bundle.pem without the new root; the watch said:\n${watcher.stdout}${watcher.stderr}`);
    assert.equal(certificatesIn(readFileSync(join(out, "bundle.pem"), "utf8")).length, 2, "old and new roots are both trusted during the rotation");
    assert.match(watcher.stdout, /"event":"bundle".*"roots":2/);
    openSslVerify(out);

    const table = expectOk(await cairn(["ca", "roots", ...asAdmin]), "ca roots table");
    assert.match(table.stdout, /^trust domain cairn\.local, CA revision \d+\nID +NAME +KEY +ACTIVE +NOT AFTER +RETIRES AFTER\n/);
    assert.match(table.stdout, new RegExp(`\\n${rotated.id} +CN=.+ +ec-p256 +yes +\\S+ +-\\n`));
    assert.equal(await stop(watcher, "SIGTERM"), 0, watcher.stderr);
  });

  void test("members add, remove and transfer-leader change the membership and the leader", async () => {
    // A learner that never answers: it is no voter, so the quorum is untouched while it is a member.
    const added = expectOk(await cairn(["members", "add", "n4", "127.0.0.1:9", ...asAdmin]), "members add");
    assert.match(added.stdout, /^added n4 \(127\.0\.0\.1:9\) as a learner/);
    const twice = await cairn(["members", "add", "n4", "127.0.0.1:9", ...asAdmin]);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /HTTP 409: node n4 is already a member/);
    const withLearner = json<{ members: { id: string; role: string }[] }>(await cairn(["members", "list", "--json", ...asAdmin]), "members list");
    assert.equal(withLearner.members.find((m) => m.id === "n4")?.role, "learner");
    expectOk(await cairn(["members", "remove", "n4", ...asAdmin]), "members remove");
    const after = json<{ leader: string; members: { id: string }[] }>(await cairn(["members", "list", "--json", ...asAdmin]), "members list");
    assert.deepEqual(after.members.map((m) => m.id).sort(), ["n1", "n2", "n3"]);

    const target = ["n1", "n2", "n3"].find((id) => id !== after.leader) as string;
    const moved = expectOk(await cairn(["members", "transfer-leader", target, "--addr", follower.info.http, "--token", token]), "transfer-leader");
    assert.match(moved.stdout, new RegExp(`^${target} leads now \\(term \\d+\\)\\n$`));
    const notVoter = await cairn(["members", "transfer-leader", "nobody", ...asAdmin]);
    assert.equal(notVoter.code, 1);
    assert.match(notVoter.stderr, /HTTP 400: node nobody is not a voter.*; only a voter can lead/);
  });
});

function createPrivateKeyFrom(path: string): KeyObject {
  return createPrivateKey(readFileSync(path));
}
