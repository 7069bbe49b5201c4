// Workload certificates through CairnClient against a real three-node cluster, used by real Node
// TLS endpoints: mutual TLS with SPIFFE ID checks, a server whose certificate renews under it
// without a restart, and peers on either side of a root rotation that still verify each other.

import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import * as tls from "node:tls";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, waitFor } from "../support/cluster.js";
import { CairnClient, type RotationReason, type TlsMaterial, type WorkloadCertificate, peerSpiffeId, tlsClientOptions, tlsServerOptions } from "../../src/client/client.js";

const TD = "cairn.local";
const WEB_ID = `spiffe://${TD}/ns/default/svc/web`;
const API_ID = `spiffe://${TD}/ns/default/svc/api`;

interface Handshake {
  /** The serial of the certificate the server presented. */
  readonly serverSerial: string;
  /** The SPIFFE ID the client saw, and the one the server saw (it writes it back). */
  readonly clientSaw: string | undefined;
  readonly serverSaw: string;
}

/** A TLS server that answers each client with the SPIFFE ID it verified. */
async function listen(options: tls.TlsOptions): Promise<{ server: tls.Server; port: number; errors: string[] }> {
  const errors: string[] = [];
  const server = tls.createServer(options, (socket) => socket.end(`${peerSpiffeId(socket) ?? "(none)"}\n`));
  server.on("tlsClientError", (err) => errors.push(err.message));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  assert.ok(typeof address === "object" && address !== null);
  return { server, port: address.port, errors };
}

async function handshake(port: number, options: tls.ConnectionOptions): Promise<Handshake> {
  const socket = tls.connect({ ...options, host: "127.0.0.1", port });
  try {
    await once(socket, "secureConnect");
    assert.ok(socket.authorized, `client: ${String(socket.authorizationError)}`);
    // Read before the connection ends: the peer certificate goes with the TLS session.
    const serverSerial = socket.getPeerCertificate().serialNumber;
    const clientSaw = peerSpiffeId(socket);
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (c: string) => (text += c));
    await once(socket, "end");
    return { serverSerial, clientSaw, serverSaw: text.trim() };
  } finally {
    socket.destroy();
  }
}

/** `promise`, or a rejection after `timeoutMs`; the timer never outlives it. */
async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => (timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs)))]);
  } finally {
    clearTimeout(timer);
  }
}

function certsOf(pem: string): X509Certificate[] {
  return pem.split(/(?<=-----END CERTIFICATE-----\n?)/).filter((p) => p.includes("BEGIN")).map((p) => new X509Certificate(p));
}

/** Whether `material`'s leaf was signed under `root`: its first intermediate is the root's. */
function signedUnder(material: TlsMaterial, root: X509Certificate): boolean {
  const intermediate = certsOf(material.cert)[1];
  return intermediate.checkIssued(root) && intermediate.verify(root.publicKey);
}

void describe("workload certificates through CairnClient, used for mutual TLS", () => {
  let cluster: ProcessCluster;
  let cairn: CairnClient;
  const servers: tls.Server[] = [];

  before(async () => {
    cluster = await ProcessCluster.start(3, ["--log-level", "warn"]);
    await cluster.agreedLeader();
    cairn = new CairnClient({ endpoints: cluster.nodes.map((n) => `http://${n.info.http}`), requestTimeoutMs: 2_000 });
  });

  after(async () => {
    for (const s of servers) s.close();
    await cairn?.close().catch(() => undefined);
    await cluster?.close();
  });

  void test("a server's certificate renews under it and new handshakes use the new one, without a restart", async () => {
    // A 1m leaf (the CA's minimum) renewed at 5% of its life: about every 3 s.
    const web = await cairn.certificates({ spiffeId: WEB_ID, ttl: "1m", renewFraction: 0.05, renewJitterFraction: 0 });
    const api = await cairn.certificates({ spiffeId: API_ID });
    const { server, port, errors } = await listen(web.serverOptions());
    servers.push(server);
    web.keepCurrent(server);

    const first = await handshake(port, api.clientOptions(WEB_ID));
    assert.deepEqual([first.clientSaw, first.serverSaw], [WEB_ID, API_ID]);
    assert.equal(first.serverSerial.toLowerCase(), web.current().serial.replace(/:/g, "").toLowerCase());

    const renewed = new Promise<RotationReason>((resolve) => web.onRotate((_m, reason) => resolve(reason)));
    assert.equal(await within(renewed, 10_000, "a renewal"), "renewed");
    const second = await handshake(port, api.clientOptions(WEB_ID));
    assert.notEqual(second.serverSerial, first.serverSerial, "the server presents its renewed certificate");
    assert.equal(second.serverSerial.toLowerCase(), web.current().serial.replace(/:/g, "").toLowerCase());
    assert.deepEqual(errors, []);

    // A client expecting another identity refuses the server, although its chain is valid.
    await assert.rejects(handshake(port, api.clientOptions(`spiffe://${TD}/ns/default/svc/other`)), /not the expected/);
    await Promise.all([web.close(), api.close()]);
  });

  void test("across a root rotation, a peer with an old-root certificate and one with a new-root certificate complete mTLS both ways", async () => {
    const web = await cairn.certificates({ spiffeId: WEB_ID, rootChangeSpreadMs: 0 });
    const api = await cairn.certificates({ spiffeId: API_ID, rootChangeSpreadMs: 0 });
    const oldWeb = web.current();
    const oldApi = api.current();
    const oldRoot = certsOf(oldWeb.ca)[0];
    assert.equal(certsOf(oldWeb.ca).length, 1);

    const res = await fetch(cluster.nodes[1].url("/v1/ca/rotate"), { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    assert.equal(res.status, 200, await res.clone().text());
    const newRootId = ((await res.json()) as { root: { id: string } }).root.id;

    // Both renew onto the new root soon after the bundle watch sees it.
    const moved = (c: WorkloadCertificate): boolean => c.current().rootId === newRootId && certsOf(c.current().ca).length === 2;
    await waitFor(() => Promise.resolve(moved(web) && moved(api) ? true : undefined), 10_000, () => `web ${web.current().rootId}, api ${api.current().rootId}, want ${newRootId}`);
    const newWeb = web.current();
    const newApi = api.current();
    const newRoot = certsOf(newWeb.ca).find((c) => c.fingerprint256 !== oldRoot.fingerprint256);
    assert.ok(newRoot !== undefined);
    assert.ok(signedUnder(oldApi, oldRoot) && signedUnder(oldWeb, oldRoot));
    assert.ok(signedUnder(newWeb, newRoot) && signedUnder(newApi, newRoot));

    // New server, old client (which still trusts only the old root): the server's chain reaches
    // the old root through the cross-signed new root; the server trusts both roots.
    const fresh = await listen(tlsServerOptions(newWeb));
    servers.push(fresh.server);
    const oldToNew = await handshake(fresh.port, tlsClientOptions(oldApi, WEB_ID));
    assert.deepEqual([oldToNew.clientSaw, oldToNew.serverSaw], [WEB_ID, API_ID]);

    // Old server (trusting only the old root), new client: the mirror image.
    const stale = await listen(tlsServerOptions(oldWeb));
    servers.push(stale.server);
    const newToOld = await handshake(stale.port, tlsClientOptions(newApi, WEB_ID));
    assert.deepEqual([newToOld.clientSaw, newToOld.serverSaw], [WEB_ID, API_ID]);

    // And both on the new root.
    const both = await handshake(fresh.port, api.clientOptions(WEB_ID));
    assert.deepEqual([both.clientSaw, both.serverSaw], [WEB_ID, API_ID]);
    assert.deepEqual([...fresh.errors, ...stale.errors], []);
    await Promise.all([web.close(), api.close()]);
  });
});
