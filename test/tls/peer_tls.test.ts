// Peer mTLS with real processes: cairn tls makes certificates openssl accepts; a cluster of
// cairn servers elects and replicates over mutual TLS; a caller without the peer CA's
// certificate (none at all, or one from another CA) cannot vote, append, propose, join or snapshot
// through the peer port, and the cluster's term and membership do not move; a node's certificate
// must name the node it claims to be; a server without credentials refuses to start.

import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { encodeForwardRequest } from "../../src/raft/node/forwarding.js";
import {
  callMetadata,
  channelCredentials,
  encodeFrameCount,
  encodeFrameMessage,
  peerServiceDefinition,
  type PeerTlsCredentials,
} from "../../src/raft/transport/service.js";
import { caPaths, ensurePeerCredentials, readPeerCredentials, writeNodeCertificate, writePeerCa } from "../../src/tls/files.js";
import { ProcessCluster, ProcessNode, freePort, waitFor } from "../support/cluster.js";
import { testPeerCredentials } from "../support/peer_tls.js";

const cairn = fileURLToPath(new URL("../../../bin/cairn", import.meta.url));
const run = promisify(execFile);
const scratch = mkdtempSync(join(tmpdir(), "cairn-peer-tls-test-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

function openssl(args: string[]): { status: number | null; out: string } {
  const r = spawnSync("openssl", args, { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

function credentials(dir: string, nodeId: string): PeerTlsCredentials {
  return readPeerCredentials(ensurePeerCredentials(dir, [nodeId]).get(nodeId)!, nodeId);
}

void describe("cairn tls", () => {
  void test("ca create and cert create write a CA and a node certificate that openssl verifies, with server and client EKU", async () => {
    const dir = join(scratch, "cli");
    await run(process.execPath, [cairn, "tls", "ca", "create", "--dir", dir]);
    const { stdout } = await run(process.execPath, [cairn, "tls", "cert", "create", "--dir", dir, "--node", "n1", "--ip", "127.0.0.1,10.0.0.7", "--dns", "n1.cairn.internal"]);
    assert.match(stdout, /--peer-cert-file .*n1\.pem --peer-key-file .*n1-key\.pem --peer-ca-file .*ca\.pem/);
    assert.equal(statSync(join(dir, "ca-key.pem")).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, "n1-key.pem")).mode & 0o777, 0o600);

    const verified = openssl(["verify", "-CAfile", join(dir, "ca.pem"), join(dir, "n1.pem")]);
    assert.equal(verified.status, 0, verified.out);
    for (const purpose of ["sslserver", "sslclient"]) {
      const r = openssl(["verify", "-purpose", purpose, "-CAfile", join(dir, "ca.pem"), join(dir, "n1.pem")]);
      assert.equal(r.status, 0, `${purpose}: ${r.out}`);
    }
    const text = openssl(["x509", "-in", join(dir, "n1.pem"), "-noout", "-text"]).out;
    assert.match(text, /Key Usage: critical\s+Digital Signature\n/);
    assert.match(text, /Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/);
    assert.match(text, /CA:FALSE/);
    assert.match(text, /URI:urn:cairn:node:n1, DNS:n1\.cairn\.internal, IP Address:127\.0\.0\.1, IP Address:10\.0\.0\.7/);
    const caText = openssl(["x509", "-in", join(dir, "ca.pem"), "-noout", "-text"]).out;
    assert.match(caText, /CA:TRUE, pathlen:0/);
    assert.match(caText, /Certificate Sign, CRL Sign/);

    // A certificate from another CA does not verify against this one.
    const other = join(scratch, "cli-other");
    writePeerCa(other);
    writeNodeCertificate(other, "n1");
    const foreign = openssl(["verify", "-CAfile", join(dir, "ca.pem"), join(other, "n1.pem")]);
    assert.notEqual(foreign.status, 0, "a certificate from another CA must not verify");
  });

  void test("refuses to overwrite a CA or certificate unless --force, and says so", async () => {
    const dir = join(scratch, "overwrite");
    await run(process.execPath, [cairn, "tls", "ca", "create", "--dir", dir]);
    const before = readFileSync(caPaths(dir).certFile, "utf8");
    await assert.rejects(run(process.execPath, [cairn, "tls", "ca", "create", "--dir", dir]), (err: { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr ?? "", /ca\.pem and .*ca-key\.pem already exist; remove them or give --force/);
      return true;
    });
    assert.equal(readFileSync(caPaths(dir).certFile, "utf8"), before);
    await run(process.execPath, [cairn, "tls", "ca", "create", "--dir", dir, "--force"]);
    assert.notEqual(readFileSync(caPaths(dir).certFile, "utf8"), before);
    await assert.rejects(run(process.execPath, [cairn, "tls", "cert", "create", "--dir", join(scratch, "no-ca"), "--node", "n1"]), (err: { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr ?? "", /cannot read the peer CA .*make one with: cairn tls ca create --dir/);
      return true;
    });
    await assert.rejects(run(process.execPath, [cairn, "tls", "cert", "create", "--dir", dir, "--node", "n1", "--ip", "not-an-ip"]), /--ip "not-an-ip" is not an IPv4 or IPv6 address/);
  });
});

void describe("cairn server without peer credentials", () => {
  const baseArgs = async (id: string): Promise<string[]> => [
    "server", "--id", id, "--data", join(scratch, `data-${id}`), "--http", `127.0.0.1:${await freePort()}`,
    "--grpc", `127.0.0.1:${await freePort()}`, "--peer", `127.0.0.1:${await freePort()}`, "--initial-cluster", `${id}=127.0.0.1:1`,
  ];

  void test("refuses to start (exit 2) and says how to make them", async () => {
    await assert.rejects(run(process.execPath, [cairn, ...(await baseArgs("lone"))]), (err: { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr ?? "", /needs peer TLS credentials/);
      assert.match(err.stderr ?? "", /cairn tls ca create --dir tls/);
      assert.match(err.stderr ?? "", /cairn tls cert create --dir tls --node lone/);
      assert.match(err.stderr ?? "", /--peer-cert-file tls\/lone\.pem --peer-key-file tls\/lone-key\.pem --peer-ca-file tls\/ca\.pem/);
      assert.match(err.stderr ?? "", /--peer-insecure/);
      return true;
    });
  });

  void test("refuses another node's certificate, naming both nodes", async () => {
    const paths = testPeerCredentials("someone-else");
    const args = [...(await baseArgs("me")), "--peer-cert-file", paths.certFile, "--peer-key-file", paths.keyFile, "--peer-ca-file", paths.caFile];
    await assert.rejects(run(process.execPath, [cairn, ...args]), (err: { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr ?? "", /names node someone-else, not this node \(me\); make its own with cairn tls cert create --node me/);
      return true;
    });
  });

  void test("with --peer-insecure starts and logs a loud warning at warn level", async () => {
    const cluster = await ProcessCluster.start(0);
    try {
      const info = await cluster.allocate("open");
      const node = new ProcessNode(info, ["--id", "open", "--data", info.dataDir, "--http", info.http, "--grpc", info.grpc, "--peer", info.peer, "--initial-cluster", `open=${info.peer}`, "--peer-insecure", "--acl", "off"]);
      cluster.nodes.push(node);
      node.start();
      const warning = await waitFor(() => {
        const line = node.stdout.split("\n").find((l) => l.includes("INSECURE"));
        return Promise.resolve(line === undefined ? undefined : (JSON.parse(line) as { level: number; msg: string }));
      }, 10_000, () => `no INSECURE warning: ${node.lastWords()}`);
      assert.equal(warning.level, 40, "the warning is logged at warn level");
      assert.match(warning.msg, /ANYONE who reaches its peer port/);
      await cluster.agreedLeader(10_000);
    } finally {
      await cluster.close();
    }
  });
});

interface Observed {
  readonly term: number;
  readonly members: string[];
}

async function observe(node: ProcessNode): Promise<Observed> {
  const v = await node.cluster();
  return { term: v.term, members: v.members.map((m) => m.id).sort() };
}

/** A peer client as an intruder would build it: our own service definition and any credentials. */
function peerClient(address: string, creds: grpc.ChannelCredentials): grpc.Client {
  return new grpc.Client(address, creds, { "grpc.enable_retries": 0 });
}

const CALL_DEADLINE_MS = 3_000;

function forward(client: grpc.Client, md: grpc.Metadata, request: Uint8Array): Promise<grpc.ServiceError | Buffer> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(peerServiceDefinition.Forward.path, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(request), md, { deadline: Date.now() + CALL_DEADLINE_MS },
      (err, reply) => resolve(err ?? (reply as Buffer)));
  });
}

/** Opens a Stream, writes one frame of a vote request, and ends it; resolves with the call's outcome. */
function streamVote(client: grpc.Client, md: grpc.Metadata, from: string, to: string, term: number): Promise<grpc.ServiceError | Buffer> {
  return new Promise((resolve) => {
    const call = client.makeClientStreamRequest(peerServiceDefinition.Stream.path, (b: Buffer) => b, (b: Buffer) => b, md, { deadline: Date.now() + CALL_DEADLINE_MS },
      (err, reply) => resolve(err ?? (reply as Buffer)));
    const message = encodeFrameMessage({ type: "vote", from, to, term, lastLogIndex: 1_000_000, lastLogTerm: term, transfer: true });
    call.write(Buffer.concat([encodeFrameCount(1), message]));
    call.end();
  });
}

function snapshotHeader(client: grpc.Client, md: grpc.Metadata): Promise<grpc.ServiceError | Buffer> {
  return new Promise((resolve) => {
    const call = client.makeClientStreamRequest(peerServiceDefinition.InstallSnapshot.path, (b: Buffer) => b, (b: Buffer) => b, md, { deadline: Date.now() + CALL_DEADLINE_MS },
      (err, reply) => resolve(err ?? (reply as Buffer)));
    call.write(Buffer.from([1, 2, 3]));
    call.end();
  });
}

function failed(outcome: grpc.ServiceError | Buffer): outcome is grpc.ServiceError {
  return !Buffer.isBuffer(outcome);
}

function isStatus(outcome: grpc.ServiceError | Buffer, code: grpc.status): boolean {
  return failed(outcome) && outcome.code === code;
}

function describeOutcome(outcome: grpc.ServiceError | Buffer): string {
  return failed(outcome) ? `${grpc.status[outcome.code] ?? outcome.code}: ${outcome.details}` : `answered ${outcome.byteLength} bytes`;
}

void describe("a cluster with peer mTLS", () => {
  void test("elects, replicates, and refuses every peer call without a certificate from its peer CA", { timeout: 120_000 }, async () => {
    const cluster = await ProcessCluster.start(3);
    const clients: grpc.Client[] = [];
    try {
      const leader = await cluster.agreedLeader();
      for (const n of cluster.nodes) assert.match(n.stdout, /peer traffic is mutually authenticated with TLS/);
      assert.equal((await leader.put("greeting", "hello over mTLS")).status, 200);
      const follower = cluster.nodes.find((n) => n !== leader)!;
      await waitFor(async () => ((await follower.get("greeting", true)).status === 200 ? true : undefined), 10_000, () => "the write did not replicate to a follower");
      assert.match(await (await follower.get("greeting", true)).text(), /hello over mTLS/);

      const clusterId = /"clusterId":"([0-9a-f]+)"/.exec(leader.stdout)?.[1];
      assert.ok(clusterId !== undefined, "the node logs its cluster id when ready");
      const before = await observe(leader);
      const otherCa = join(scratch, "intruder-ca");
      const intruders: [string, grpc.ChannelCredentials][] = [
        ["plaintext, no TLS", grpc.credentials.createInsecure()],
        // A well-formed node certificate for a member's id, from a CA the cluster never trusted.
        ["a certificate for n2 from another CA", channelCredentials(credentials(otherCa, "n2"), leader.info.id)],
        // The cluster's own CA, so the server's certificate is trusted, but no client certificate: the server requires one.
        ["TLS trusting the peer CA but with no client certificate", grpc.credentials.createSsl(readFileSync(testPeerCredentials("n1").caFile))],
      ];
      for (const [what, creds] of intruders) {
        for (const target of cluster.nodes) {
          const client = peerClient(target.info.peer, creds);
          clients.push(client);
          const md = (): grpc.Metadata => callMetadata(clusterId, "n2");
          const outcomes = {
            vote: await streamVote(client, md(), "n2", target.info.id, before.term + 100),
            join: await forward(client, md(), encodeForwardRequest({ kind: "confChange", change: { type: "addLearner", node: "intruder", context: "127.0.0.1:1" } })),
            propose: await forward(client, md(), encodeForwardRequest({ kind: "propose", data: [new Uint8Array([1, 2, 3])] })),
            read: await forward(client, md(), encodeForwardRequest({ kind: "app", data: new Uint8Array([0]) })),
            snapshot: await snapshotHeader(client, md()),
          };
          for (const [call, outcome] of Object.entries(outcomes)) {
            assert.ok(isStatus(outcome, grpc.status.UNAVAILABLE), `${what}: ${call} on ${target.info.id} must fail in the handshake, but ${describeOutcome(outcome)}`);
          }
        }
      }
      const afterwards = await observe(leader);
      assert.deepEqual(afterwards, before, "the intruders moved neither the term nor the membership");
      assert.equal((await cluster.agreedLeader()).info.id, leader.info.id, "the leader kept its leadership");

      // The check can fail: n2's own certificate passes the handshake, and then its metadata must
      // name n2. Claiming to be n3 over n2's certificate is refused.
      const n2 = readPeerCredentials(testPeerCredentials("n2"), "n2");
      const genuine = peerClient(leader.info.peer, channelCredentials(n2, leader.info.id));
      clients.push(genuine);
      const impersonation = await forward(genuine, callMetadata(clusterId, "n3"), encodeForwardRequest({ kind: "app", data: new Uint8Array([0]) }));
      assert.ok(isStatus(impersonation, grpc.status.PERMISSION_DENIED), `claiming n3 over n2's certificate: ${describeOutcome(impersonation)}`);
      assert.match((impersonation as grpc.ServiceError).details, /claims to come from node n3 but its certificate names n2/);
      const admitted = await forward(genuine, callMetadata(clusterId, "n2"), encodeForwardRequest({ kind: "app", data: new Uint8Array([0]) }));
      assert.ok(!isStatus(admitted, grpc.status.UNAVAILABLE) && !isStatus(admitted, grpc.status.PERMISSION_DENIED),
        `n2's own certificate and id reach the node's forward handler: ${describeOutcome(admitted)}`);

      // The client checks the server's identity too: dialling the leader while expecting another node fails.
      const wrongServer = peerClient(leader.info.peer, channelCredentials(n2, "not-the-leader"));
      clients.push(wrongServer);
      const mismatch = await forward(wrongServer, callMetadata(clusterId, "n2"), encodeForwardRequest({ kind: "app", data: new Uint8Array([0]) }));
      assert.ok(isStatus(mismatch, grpc.status.UNAVAILABLE), `a server that is not the expected node: ${describeOutcome(mismatch)}`);
    } finally {
      for (const c of clients) c.close();
      await cluster.close();
    }
  });
});

void describe("rotating the peer CA", () => {
  void test("with old and new CAs overlapping in every node's CA file, a node on the new CA keeps replicating; one on a CA nobody trusts cannot", { timeout: 120_000 }, async () => {
    const cluster = await ProcessCluster.start(3);
    try {
      await cluster.agreedLeader();
      const oldCa = testPeerCredentials("n1").caFile;
      const newDir = join(scratch, "rotation-new-ca");
      const n1New = ensurePeerCredentials(newDir, ["n1"]).get("n1")!;
      const bundle = join(scratch, "rotation-both.pem");
      writeFileSync(bundle, `${readFileSync(oldCa, "utf8")}${readFileSync(n1New.caFile, "utf8")}`);
      // A node certificate from the second CA in the file is accepted at start.
      assert.doesNotThrow(() => readPeerCredentials({ ...n1New, caFile: bundle }, "n1"));
      assert.throws(() => readPeerCredentials({ ...n1New, caFile: oldCa }, "n1"), /was not issued by --peer-ca-file/);

      // Step 1: every node trusts both CAs (a rolling restart with the bundle).
      for (const node of cluster.nodes) {
        await node.stop();
        node.start(["--peer-ca-file", bundle]);
        await cluster.agreedLeader(20_000);
      }
      // Step 2: n1 moves to a certificate from the new CA; its peers still hold old-CA certificates.
      const n1 = cluster.node("n1");
      await n1.stop();
      n1.start(["--peer-cert-file", n1New.certFile, "--peer-key-file", n1New.keyFile, "--peer-ca-file", bundle]);
      const leader = await cluster.agreedLeader(20_000);
      assert.equal((await leader.put("rotated", "yes")).status, 200);
      await waitFor(async () => ((await n1.get("rotated", true)).status === 200 ? true : undefined), 10_000, () => `n1 on the new CA did not catch up: ${n1.lastWords()}`);

      // The check can fail: n1 on the new CA while n2 and n3 trust only the old one is cut off.
      await n1.stop();
      n1.start(["--peer-cert-file", n1New.certFile, "--peer-key-file", n1New.keyFile, "--peer-ca-file", n1New.caFile]);
      const others = cluster.nodes.filter((n) => n !== n1);
      for (const n of others) {
        await n.stop();
        n.start(["--peer-ca-file", oldCa]);
      }
      const rest = await cluster.agreedLeader(20_000, others);
      assert.equal((await rest.put("after-split", "yes")).status, 200);
      // Absence can only be observed for a while: long enough for many heartbeats (50 ms ticks).
      await new Promise((r) => setTimeout(r, 2_000));
      assert.equal((await n1.get("after-split", true)).status, 404, "a node whose CA its peers do not trust receives nothing");
    } finally {
      await cluster.close();
    }
  });
});
