// Public TLS from files with a real cairn server: HTTPS and gRPC over TLS serve with the given
// certificate, and with --tls-verify-client a client without a certificate from the client CA is
// refused on both ports, while one with it is served.

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ensurePeerCredentials } from "../../src/tls/files.js";
import { ProcessCluster, waitFor } from "../support/cluster.js";

const scratch = mkdtempSync(join(tmpdir(), "cairn-public-tls-test-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

interface ClientPair {
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** GET over HTTPS trusting `ca`; resolves with the status and body, or rejects with the TLS error. */
function httpsGet(address: string, path: string, ca: Buffer, client: ClientPair | undefined): Promise<{ status: number; body: string }> {
  const [host, port] = address.split(":");
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), path, method: "GET", ca, ...(client ?? {}), timeout: 5_000 }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => { body += c.toString(); });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.end();
  });
}

function healthCheck(address: string, creds: grpc.ChannelCredentials): Promise<grpc.ServiceError | Buffer> {
  const client = new grpc.Client(address, creds);
  return new Promise<grpc.ServiceError | Buffer>((resolve) => {
    client.makeUnaryRequest("/grpc.health.v1.Health/Check", (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), new grpc.Metadata(), { deadline: Date.now() + 5_000 },
      (err, reply) => resolve(err ?? (reply as Buffer)));
  }).finally(() => client.close());
}

void test("HTTPS and gRPC over TLS serve from files, and --tls-verify-client refuses a client without a certificate", { timeout: 120_000 }, async () => {
  // The server's certificate (SAN 127.0.0.1, serverAuth) and the clients' come from two CAs, as they would in practice.
  const serverDir = join(scratch, "server");
  const clientDir = join(scratch, "clients");
  const server = ensurePeerCredentials(serverDir, ["api"]).get("api")!;
  const client = ensurePeerCredentials(clientDir, ["operator"]).get("operator")!;
  const stranger = ensurePeerCredentials(join(scratch, "strangers"), ["stranger"]).get("stranger")!;
  const serverCa = readFileSync(server.caFile);
  const withCert: ClientPair = { cert: readFileSync(client.certFile), key: readFileSync(client.keyFile) };
  const withStrangerCert: ClientPair = { cert: readFileSync(stranger.certFile), key: readFileSync(stranger.keyFile) };

  const cluster = await ProcessCluster.start(1, ["--tls-cert-file", server.certFile, "--tls-key-file", server.keyFile, "--tls-client-ca-file", client.caFile, "--tls-verify-client"]);
  try {
    const node = cluster.nodes[0];
    const leader = await waitFor(async () => {
      const res = await httpsGet(node.info.http, "/v1/status/leader", serverCa, withCert).catch(() => undefined);
      return res !== undefined && res.status === 200 && res.body !== '""' ? res.body : undefined;
    }, 20_000, () => `no leader over HTTPS: ${node.lastWords()}`);
    assert.match(leader, /127\.0\.0\.1/);
    assert.match(node.stdout, /public HTTP and gRPC serve TLS/);

    await assert.rejects(httpsGet(node.info.http, "/v1/status/leader", serverCa, undefined), "HTTPS without a client certificate is refused");
    await assert.rejects(httpsGet(node.info.http, "/v1/status/leader", serverCa, withStrangerCert), "HTTPS with a certificate from another CA is refused");
    await assert.rejects(fetch(`http://${node.info.http}/v1/status/leader`), "plaintext HTTP is not served");

    const serving = await healthCheck(node.info.grpc, grpc.credentials.createSsl(serverCa, withCert.key, withCert.cert));
    assert.ok(Buffer.isBuffer(serving), `gRPC over TLS with a client certificate is served: ${String(serving)}`);
    assert.deepEqual([...serving], [0x08, 0x01], "the health check answers SERVING");
    const refused = await healthCheck(node.info.grpc, grpc.credentials.createSsl(serverCa));
    assert.ok(!Buffer.isBuffer(refused) && refused.code === grpc.status.UNAVAILABLE, "gRPC over TLS without a client certificate is refused in the handshake");
    const plaintext = await healthCheck(node.info.grpc, grpc.credentials.createInsecure());
    assert.ok(!Buffer.isBuffer(plaintext), "plaintext gRPC is not served");
  } finally {
    await cluster.close();
  }
});

void test("--tls-verify-client without --tls-client-ca-file is refused at start with the fix", async () => {
  const cluster = await ProcessCluster.start(1, ["--tls-verify-client"]);
  try {
    const node = cluster.nodes[0];
    assert.equal(await node.exit, 2);
    assert.match(node.stderr, /--tls-verify-client needs --tls-client-ca-file/);
  } finally {
    await cluster.close();
  }
});
