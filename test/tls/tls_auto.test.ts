// --tls auto with real cairn server processes: each node serves HTTPS and gRPC over TLS with a
// certificate from the cluster's own CA that chains to the trust bundle and names the node; a
// root rotation reaches both ports of every node without a restart; and with --tls-verify-client
// the trust bundle is the client CA, so a client without an SVID is refused and one with an SVID
// from POST /v1/ca/sign (before or after the rotation) is served.

import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { publicNamesOf } from "../../src/api/tls_auto.js";
import { ensurePeerCredentials } from "../../src/tls/files.js";
import { csrKeys, csrPem } from "../support/fast_csr.js";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

const TRUST_DOMAIN = "cairn.local";
const WEB_ID = `spiffe://${TRUST_DOMAIN}/ns/default/svc/web`;
/** Every node serves TLS this soon after start: an election, the CA's creation, one signature. */
const FIRST_CERTIFICATE_BOUND_MS = 30_000;
/** After POST /v1/ca/rotate, every port of every node serves a leaf of the new root within this. */
const ROTATION_BOUND_MS = 10_000;
const REQUEST_TIMEOUT_MS = 5_000;

const scratch = mkdtempSync(join(tmpdir(), "cairn-tls-auto-test-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

interface ClientPair {
  readonly cert: string;
  readonly key: string;
}

/** An HTTPS request; `ca` undefined means the server is not verified (only to read the bundle a first time). */
function httpsCall(address: string, method: string, path: string, ca: string | undefined, client?: ClientPair, body?: string): Promise<{ status: number; body: string }> {
  const [host, port] = address.split(":");
  return new Promise((resolve, reject) => {
    const req = request({
      host, port: Number(port), path, method, timeout: REQUEST_TIMEOUT_MS,
      ...(ca === undefined ? { rejectUnauthorized: false } : { ca }),
      ...(client ?? {}),
      headers: body === undefined ? {} : { "content-type": "application/json" },
    }, (res) => {
      let text = "";
      res.on("data", (c: Buffer) => { text += c.toString(); });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.end(body);
  });
}

/** The leaf a port presents in a handshake verified against `ca` (it rejects when it does not chain, or names another host). */
function presentedLeaf(address: string, ca: string, alpn: string, client?: ClientPair): Promise<X509Certificate> {
  const [host, port] = address.split(":");
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port: Number(port), ca, ALPNProtocols: [alpn], timeout: REQUEST_TIMEOUT_MS, ...(client ?? {}) }, () => {
      const leaf = socket.getPeerX509Certificate();
      socket.destroy();
      if (leaf === undefined) reject(new Error(`${address} presented no certificate`));
      else resolve(leaf);
    });
    socket.on("error", reject);
    socket.on("timeout", () => socket.destroy(new Error("timed out")));
  });
}

function healthCheck(address: string, creds: grpc.ChannelCredentials): Promise<grpc.ServiceError | Buffer> {
  const client = new grpc.Client(address, creds);
  return new Promise<grpc.ServiceError | Buffer>((resolve) => {
    client.makeUnaryRequest("/grpc.health.v1.Health/Check", (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), new grpc.Metadata(), { deadline: Date.now() + REQUEST_TIMEOUT_MS },
      (err, reply) => resolve(err ?? (reply as Buffer)));
  }).finally(() => client.close());
}

const SERVING = [0x08, 0x01];

/**
 * An SVID for `spiffeId` from POST /v1/ca/sign on `node`, as a TLS client pair (leaf and chain,
 * key), and `direct`: the same with the leaf and its intermediate alone, without the cross-signed
 * root a chain carries during a rotation, so it verifies only where its own root is trusted.
 */
async function signSvid(node: ProcessNode, ca: string, spiffeId: string): Promise<ClientPair & { serial: string; direct: ClientPair }> {
  const [key] = csrKeys(1);
  const res = await httpsCall(node.info.http, "POST", "/v1/ca/sign", ca, undefined, JSON.stringify({ csr: csrPem(key, spiffeId) }));
  assert.equal(res.status, 200, `POST /v1/ca/sign: ${res.body}`);
  const signed = JSON.parse(res.body) as { certificate: string; chain: string[]; serial: string };
  const keyPem = key.privateKey.export({ format: "pem", type: "pkcs8" }).toString();
  return { cert: [signed.certificate, ...signed.chain].join(""), key: keyPem, serial: signed.serial, direct: { cert: signed.certificate + signed.chain[0], key: keyPem } };
}

void test("the public certificate names loopback, the hosts the node listens on and is reached at, and for a wildcard its own addresses", () => {
  const local = { hostname: "box1", interfaceAddresses: ["127.0.0.1", "10.1.2.3", "fe80::1%eth0"] };
  assert.deepEqual(publicNamesOf(["127.0.0.1", "127.0.0.1", "10.0.0.5"], local), { dnsNames: ["localhost"], ips: ["127.0.0.1", "::1", "10.0.0.5"] });
  assert.deepEqual(publicNamesOf(["api.example.com", "127.0.0.1", "node1.internal"], local), { dnsNames: ["localhost", "api.example.com", "node1.internal"], ips: ["127.0.0.1", "::1"] });
  assert.deepEqual(publicNamesOf(["0.0.0.0", "::", "10.0.0.5"], local), { dnsNames: ["localhost", "box1"], ips: ["127.0.0.1", "::1", "10.0.0.5", "10.1.2.3", "fe80::1"] });
  const many = { hostname: "box1", interfaceAddresses: Array.from({ length: 40 }, (_, i) => `10.9.0.${i + 1}`) };
  assert.equal(publicNamesOf(["0.0.0.0"], many).ips.length, 16, "a host with many interfaces is cut to the leaf's IP SAN limit, loopback first");
});

void describe("--tls auto on a 3-node cluster (n1 also with --tls-verify-client)", { timeout: 180_000 }, () => {
  let cluster: ProcessCluster;
  /** The trust bundle (PEM roots), read once from n2 without verification, as a first client would fetch it. */
  let bundle = "";
  let svid: ClientPair & { serial: string; direct: ClientPair };
  const stranger = ensurePeerCredentials(join(scratch, "strangers"), ["stranger"]).get("stranger")!;
  const strangerPair: ClientPair = { cert: readFileSync(stranger.certFile, "utf8"), key: readFileSync(stranger.keyFile, "utf8") };
  const strangerCa = readFileSync(stranger.caFile, "utf8");

  before(async () => {
    cluster = await ProcessCluster.start(3, ["--tls", "auto"], { nodeArgs: (id) => (id === "n1" ? ["--tls-verify-client"] : []) });
    const n2 = cluster.node("n2");
    bundle = await waitFor(async () => {
      const res = await httpsCall(n2.info.http, "GET", "/v1/ca/bundle?format=pem", undefined).catch(() => undefined);
      return res?.status === 200 && res.body.includes("BEGIN CERTIFICATE") ? res.body : undefined;
    }, FIRST_CERTIFICATE_BOUND_MS, () => `n2 serves no HTTPS with a bundle: ${n2.lastWords()}`);
    svid = await signSvid(n2, bundle, WEB_ID);
  });
  after(async () => {
    await cluster.close();
  });

  void test("every node serves HTTPS and gRPC over TLS with one leaf that chains to the cluster's roots and names the node", async () => {
    for (const node of cluster.nodes) {
      const id = node.info.id;
      const viaHttps = await waitFor(() => presentedLeaf(node.info.http, bundle, "http/1.1", svid).catch(() => undefined), FIRST_CERTIFICATE_BOUND_MS, () => `${id} serves no verified HTTPS: ${node.lastWords()}`);
      const viaGrpc = await waitFor(() => presentedLeaf(node.info.grpc, bundle, "h2", svid).catch(() => undefined), FIRST_CERTIFICATE_BOUND_MS, () => `${id} serves no verified gRPC TLS: ${node.lastWords()}`);
      assert.equal(viaGrpc.serialNumber, viaHttps.serialNumber, `${id}: both ports present the same certificate`);
      const names = viaHttps.subjectAltName ?? "";
      assert.match(names, new RegExp(`URI:spiffe://${TRUST_DOMAIN}/cairn/node/${id}(,|$)`), `${id}: the leaf names the node`);
      assert.match(names, /DNS:localhost/);
      assert.match(names, /IP Address:127\.0\.0\.1/);
      assert.equal(viaHttps.ca, false);
      assert.ok(viaHttps.keyUsage?.includes("1.3.6.1.5.5.7.3.1"), `${id}: the leaf has serverAuth`);
      // The child's output reaches this process through a pipe, a little after the handshake may have.
      await waitFor(() => Promise.resolve(/--tls auto: this node's public certificate signed by the cluster's CA/.test(node.stdout) ? true : undefined), REQUEST_TIMEOUT_MS, () => `${id} never logged its certificate: ${node.lastWords()}`);
      // The check can fail: a client trusting another CA refuses the handshake.
      await assert.rejects(presentedLeaf(node.info.http, strangerCa, "http/1.1", svid), `${id}: a client trusting another CA refuses the certificate`);
      await assert.rejects(fetch(`http://${node.info.http}/v1/status/leader`), `${id}: plaintext HTTP is not served`);
    }
    const health = await healthCheck(cluster.node("n2").info.grpc, grpc.credentials.createSsl(Buffer.from(bundle)));
    assert.ok(Buffer.isBuffer(health), `gRPC over TLS, verified with the trust bundle: ${String(health)}`);
    assert.deepEqual([...health], SERVING);
  });

  void test("with --tls-verify-client and no CA file, a client without an SVID of this cluster is refused and one with an SVID is served", async () => {
    const n1 = cluster.node("n1");
    const served = await httpsCall(n1.info.http, "GET", "/v1/status/leader", bundle, svid);
    assert.equal(served.status, 200, "HTTPS with an SVID from POST /v1/ca/sign is served");
    assert.match(served.body, /127\.0\.0\.1/);
    await assert.rejects(httpsCall(n1.info.http, "GET", "/v1/status/leader", bundle), "HTTPS without a client certificate is refused");
    await assert.rejects(httpsCall(n1.info.http, "GET", "/v1/status/leader", bundle, strangerPair), "HTTPS with a certificate from another CA is refused");
    const withSvid = await healthCheck(n1.info.grpc, grpc.credentials.createSsl(Buffer.from(bundle), Buffer.from(svid.key), Buffer.from(svid.cert)));
    assert.ok(Buffer.isBuffer(withSvid), `gRPC over TLS with an SVID is served: ${String(withSvid)}`);
    assert.deepEqual([...withSvid], SERVING);
    const without = await healthCheck(n1.info.grpc, grpc.credentials.createSsl(Buffer.from(bundle)));
    assert.ok(!Buffer.isBuffer(without) && without.code === grpc.status.UNAVAILABLE, "gRPC over TLS without a client certificate is refused in the handshake");
    const withStranger = await healthCheck(n1.info.grpc, grpc.credentials.createSsl(Buffer.from(bundle), Buffer.from(strangerPair.key), Buffer.from(strangerPair.cert)));
    assert.ok(!Buffer.isBuffer(withStranger), "gRPC over TLS with a certificate from another CA is refused");
    // n2 has no --tls-verify-client: it asks nothing of clients.
    assert.equal((await httpsCall(cluster.node("n2").info.http, "GET", "/v1/status/leader", bundle)).status, 200);
  });

  void test("a root rotation reaches both ports of every node without a restart, and SVIDs of the new root are accepted", async () => {
    const n2 = cluster.node("n2");
    const pids = cluster.nodes.map((n) => n.process?.pid);
    const leavesBefore = new Map<string, X509Certificate>();
    for (const node of cluster.nodes) leavesBefore.set(node.info.id, await presentedLeaf(node.info.http, bundle, "http/1.1", svid));

    const rotatedAtMs = performance.now();
    const rotated = await httpsCall(n2.info.http, "POST", "/v1/ca/rotate", bundle, undefined, "{}");
    assert.equal(rotated.status, 200, `POST /v1/ca/rotate: ${rotated.body}`);
    const newRoot = (JSON.parse(rotated.body) as { root: { certificate: string; intermediates: string[] } }).root;
    const newIntermediate = new X509Certificate(newRoot.intermediates[0]);
    const issuedByNewRoot = (leaf: X509Certificate): boolean => leaf.checkIssued(newIntermediate) && leaf.verify(newIntermediate.publicKey);
    // The check can fail: the leaves served before the rotation are not of the new root.
    for (const leaf of leavesBefore.values()) assert.equal(issuedByNewRoot(leaf), false);

    // Clients that hold only the old bundle go on verifying: the chain reaches the old root through the cross-signed new root.
    const lagMs: Record<string, number> = {};
    for (const node of cluster.nodes) {
      for (const [port, address, alpn] of [["https", node.info.http, "http/1.1"], ["grpc", node.info.grpc, "h2"]] as const) {
        const leaf = await waitFor(async () => {
          const seen = await presentedLeaf(address, bundle, alpn, svid).catch(() => undefined);
          return seen !== undefined && issuedByNewRoot(seen) ? seen : undefined;
        }, ROTATION_BOUND_MS, () => `${node.info.id} ${port} still serves a leaf of the old root ${ROTATION_BOUND_MS} ms after the rotation: ${node.lastWords()}`);
        lagMs[`${node.info.id} ${port}`] = Math.round(performance.now() - rotatedAtMs);
        assert.notEqual(leaf.serialNumber, leavesBefore.get(node.info.id)?.serialNumber, `${node.info.id} ${port}: a new certificate`);
        assert.match(leaf.subjectAltName ?? "", new RegExp(`URI:spiffe://${TRUST_DOMAIN}/cairn/node/${node.info.id}`));
      }
    }
    assert.deepEqual(cluster.nodes.map((n) => n.process?.pid), pids, "no node restarted");
    assert.ok(cluster.nodes.every((n) => n.running));
    process.stdout.write(`# rotation reached each port after (ms, measured serially): ${JSON.stringify(lagMs)}\n`);

    // The client CA follows the roots: n1 accepts an SVID of the new root, even with no cross-signed root in its chain to lead back to the old one, and still one of the old.
    const newBundle = (await httpsCall(n2.info.http, "GET", "/v1/ca/bundle?format=pem", bundle)).body;
    assert.equal(newBundle.match(/BEGIN CERTIFICATE/g)?.length, 2, "the bundle holds the old and the new root");
    assert.ok(newBundle.includes(newRoot.certificate.trim()), "the bundle holds the new root");
    const newSvid = await signSvid(n2, newBundle, WEB_ID);
    assert.ok(issuedByNewRoot(new X509Certificate(newSvid.cert)), "the new SVID is a leaf of the new root");
    const n1 = cluster.node("n1");
    const accepted = await waitFor(async () => {
      const res = await httpsCall(n1.info.http, "GET", "/v1/status/leader", newBundle, newSvid.direct).catch(() => undefined);
      return res?.status === 200 ? res : undefined;
    }, ROTATION_BOUND_MS, () => `n1 refuses an SVID of the new root: ${n1.lastWords()}`);
    assert.equal(accepted.status, 200);
    const grpcNew = await healthCheck(n1.info.grpc, grpc.credentials.createSsl(Buffer.from(newBundle), Buffer.from(newSvid.direct.key), Buffer.from(newSvid.direct.cert)));
    assert.ok(Buffer.isBuffer(grpcNew), `gRPC accepts an SVID of the new root: ${String(grpcNew)}`);
    assert.equal((await httpsCall(n1.info.http, "GET", "/v1/status/leader", newBundle, svid)).status, 200, "an SVID of the old root is still accepted while it is trusted");
    await assert.rejects(httpsCall(n1.info.http, "GET", "/v1/status/leader", newBundle), "and a client without one is still refused");
  });
});
