// The CA through its HTTP API on a real three-node cluster, checked with openssl: issuance,
// refusals, the trust bundle (blocking and streamed), rotation with cross-signing, Consul's
// Connect CA endpoints, restart from disk, and that no private key ever leaks.

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { X509Certificate, createPrivateKey, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";

const TD = "cairn.local";
const WEB_ID = `spiffe://${TD}/ns/default/svc/web`;

interface Json { [key: string]: unknown }
interface Bundle { trustDomain: string; index: number; roots: { id: string; certificate: string; active: boolean }[] }
interface Signed { certificate: string; chain: string[]; spiffeId: string; serial: string; notBefore: string; notAfter: string }

let dir: string;

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function openssl(args: string[], input?: string): string {
  const r = spawnSync("openssl", args, { encoding: "utf8", input });
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A key and a CSR made by openssl itself, asking for `uri`. */
function csrFor(uri: string, keyArgs = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]): { csr: string; keyPath: string } {
  const tag = randomBytes(4).toString("hex");
  const keyPath = join(dir, `key-${tag}.pem`);
  const csr = openssl(["req", "-new", ...keyArgs, "-nodes", "-keyout", keyPath, "-subj", "/", "-addext", `subjectAltName=URI:${uri}`]);
  return { csr, keyPath };
}

async function call(node: ProcessNode, method: string, path: string, body?: unknown): Promise<{ status: number; json: Json; text: string; headers: Headers }> {
  const res = await fetch(node.url(path), {
    method,
    ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  let json: Json = {};
  try {
    json = JSON.parse(text) as Json;
  } catch {
    // Not JSON (PEM, or Consul's text errors): the test reads `text`.
  }
  return { status: res.status, json, text, headers: res.headers };
}

async function bundle(node: ProcessNode): Promise<Bundle> {
  const r = await call(node, "GET", "/v1/ca/bundle");
  assert.equal(r.status, 200, r.text);
  return r.json as unknown as Bundle;
}

async function sign(node: ProcessNode, body: unknown): Promise<Signed> {
  const r = await call(node, "POST", "/v1/ca/sign", body);
  assert.equal(r.status, 200, r.text);
  return r.json as unknown as Signed;
}

/** `openssl verify` of a leaf and its chain against exactly the roots given. */
function verify(signed: { certificate: string; chain: readonly string[] }, rootsPem: string): { ok: boolean; output: string } {
  const tag = randomBytes(4).toString("hex");
  const r = spawnSync("openssl", ["verify", "-CAfile", file(`roots-${tag}.pem`, rootsPem), "-untrusted", file(`chain-${tag}.pem`, signed.chain.join("")), file(`leaf-${tag}.pem`, signed.certificate)], { encoding: "utf8" });
  return { ok: r.status === 0, output: r.stdout + r.stderr };
}

void describe("the certificate authority over HTTP", () => {
  let cluster: ProcessCluster;
  let n1: ProcessNode;
  let n2: ProcessNode;
  let n3: ProcessNode;
  const kek = randomBytes(32).toString("base64");

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "cairn-ca-test-"));
    cluster = await ProcessCluster.start(3, ["--ca-kek-file", file("kek", kek)]);
    await cluster.agreedLeader();
    [n1, n2, n3] = cluster.nodes as [ProcessNode, ProcessNode, ProcessNode];
    // The leader creates the CA once the cluster has formed; every node then holds the same roots.
    await waitFor(async () => {
      const ids = await Promise.all(cluster.nodes.map(async (n) => (await bundle(n)).roots.map((r) => r.id).join(",")));
      return ids[0] !== "" && ids.every((x) => x === ids[0]) ? true : undefined;
    }, 15_000, () => "the CA was not created on every node");
  });

  after(async () => {
    await cluster.close();
    rmSync(dir, { recursive: true, force: true });
  });

  void test("a CSR signed by any node verifies with openssl against the bundle, as an X.509-SVID", async () => {
    const roots = (await bundle(n1)).roots.map((r) => r.certificate).join("");
    for (const node of [n1, n2, n3]) {
      const { csr, keyPath } = csrFor(WEB_ID);
      const before = Date.now();
      const signed = await sign(node, { csr });
      const check = verify(signed, roots);
      assert.ok(check.ok, check.output);
      assert.equal(signed.spiffeId, WEB_ID);
      // Default TTL one hour, NotBefore backdated by about a minute for clock skew.
      const notBefore = Date.parse(signed.notBefore);
      const notAfter = Date.parse(signed.notAfter);
      assert.ok(Math.abs(notAfter - before - 3_600_000) < 5_000, `${signed.notAfter} is not an hour from now`);
      assert.ok(Math.abs(before - notBefore - 60_000) < 5_000, `${signed.notBefore} is not a minute ago`);
      const leafPath = file(`leaf-${node.info.id}.pem`, signed.certificate);
      const text = openssl(["x509", "-in", leafPath, "-noout", "-text"]);
      assert.match(text, /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cairn\.local\/ns\/default\/svc\/web\s*\n/);
      assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature\s*\n/);
      assert.match(text, /X509v3 Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/);
      assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
      assert.match(text, /X509v3 Subject Key Identifier/);
      assert.match(text, /X509v3 Authority Key Identifier/);
      assert.ok(BigInt(`0x${signed.serial.replaceAll(":", "")}`) >= 2n ** 63n || signed.serial.replaceAll(":", "").length >= 16, "serials carry at least 64 random bits");
      // The certificate certifies the CSR's own key.
      const certKey = openssl(["x509", "-in", leafPath, "-noout", "-pubkey"]);
      const csrKey = openssl(["pkey", "-in", keyPath, "-pubout"]);
      assert.equal(certKey, csrKey);
    }
  });

  void test("a requested TTL is honoured, and one over the maximum is refused rather than shortened", async () => {
    const signed = await sign(n2, { csr: csrFor(WEB_ID).csr, ttl: "2h30m" });
    assert.ok(Math.abs(Date.parse(signed.notAfter) - Date.now() - 9_000_000) < 5_000);
    const over = await call(n2, "POST", "/v1/ca/sign", { csr: csrFor(WEB_ID).csr, ttl: "25h" });
    assert.equal(over.status, 400);
    assert.equal(over.json.field, "ttl");
    assert.match(String(over.json.error), /over the maximum of 24h/);
  });

  void test("bad requests get a 4xx that names the problem", async () => {
    const good = csrFor(WEB_ID).csr;
    const der = Buffer.from(good.replace(/-----[A-Z ]+-----/g, "").replace(/\s/g, ""), "base64");
    der[der.length - 5] ^= 0xff;
    const badSignature = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64").replace(/.{64}/g, "$&\n")}\n-----END CERTIFICATE REQUEST-----\n`;
    const cases: [string, unknown, number, RegExp][] = [
      ["identity in another trust domain", { csr: csrFor("spiffe://other.domain/ns/default/svc/web").csr }, 403, /may not hold|trust domain/],
      ["malformed CSR", { csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" }, 400, /csr/],
      ["not PEM at all", { csr: "hello" }, 400, /csr/],
      ["bad CSR signature", { csr: badSignature }, 400, /signature/i],
      ["unsupported key (RSA 1024)", { csr: csrFor(WEB_ID, ["-newkey", "rsa:1024"]).csr }, 400, /RSA 1024/],
      ["a URI that is not a workload ID", { csr: csrFor(`spiffe://${TD}/just/a/path`).csr }, 400, /ns\/<namespace>\/svc\/<service>/],
      ["no SPIFFE ID", { csr: openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", join(dir, "x.pem"), "-subj", "/CN=x"]) }, 400, /exactly one URI SAN/],
      ["TTL that is not a duration", { csr: good, ttl: "soon" }, 400, /ttl/],
      ["missing csr", { ttl: "1h" }, 400, /csr/],
      ["unknown field", { csr: good, lifetime: "1h" }, 400, /lifetime/],
      ["malformed JSON", "{\"csr\":", 400, /JSON|body/i],
    ];
    for (const [what, body, status, reason] of cases) {
      const r = await call(n3, "POST", "/v1/ca/sign", body);
      assert.equal(r.status, status, `${what}: ${r.text}`);
      assert.match(String(r.json.error), reason, what);
    }
  });

  void test("the bundle is served as JSON, PEM and a SPIFFE bundle", async () => {
    const b = await bundle(n2);
    assert.equal(b.trustDomain, TD);
    const pem = await call(n2, "GET", "/v1/ca/bundle?format=pem");
    assert.match(pem.headers.get("content-type") ?? "", /application\/x-pem-file/);
    assert.equal(pem.text, b.roots.map((r) => r.certificate).join(""));
    const spiffe = await call(n2, "GET", "/v1/ca/bundle?format=spiffe");
    const keys = spiffe.json.keys as { use: string; kty: string; x5c: string[] }[];
    assert.equal(keys.length, b.roots.length);
    assert.equal(keys[0].use, "x509-svid");
    assert.equal(new X509Certificate(Buffer.from(keys[0].x5c[0], "base64")).toString(), new X509Certificate(b.roots[0].certificate).toString());
  });

  void test("Consul's Connect CA endpoints answer in Consul's shapes", async () => {
    const roots = await call(n1, "GET", "/v1/agent/connect/ca/roots");
    assert.equal(roots.status, 200);
    assert.ok(Number(roots.headers.get("x-consul-index")) > 0);
    const shape = roots.json as { ActiveRootID: string; TrustDomain: string; Roots: Json[] };
    assert.equal(shape.TrustDomain, TD);
    const active = shape.Roots.find((r) => r.Active === true);
    assert.ok(active !== undefined);
    assert.equal(active.ID, shape.ActiveRootID);
    assert.deepEqual([active.PrivateKeyType, active.PrivateKeyBits], ["ec", 256]);
    for (const key of ["ID", "Name", "SerialNumber", "SigningKeyID", "NotBefore", "NotAfter", "RootCert", "IntermediateCerts", "Active", "PrivateKeyType", "PrivateKeyBits", "CreateIndex", "ModifyIndex"]) {
      assert.ok(key in active, `root lacks ${key}`);
    }
    assert.deepEqual((await call(n2, "GET", "/v1/connect/ca/roots")).json, roots.json);

    const leaf = await call(n2, "GET", "/v1/agent/connect/ca/leaf/web");
    assert.equal(leaf.status, 200, leaf.text);
    const l = leaf.json as { CertPEM: string; PrivateKeyPEM: string; Service: string; ServiceURI: string; SerialNumber: string; ValidAfter: string; ValidBefore: string };
    assert.equal(l.Service, "web");
    assert.equal(l.ServiceURI, `spiffe://${TD}/ns/default/dc/dc1/svc/web`);
    assert.match(l.SerialNumber, /^[0-9a-f]{2}(:[0-9a-f]{2})+$/);
    const [cert, ...chain] = l.CertPEM.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n/g) ?? [];
    assert.ok(cert !== undefined && chain.length >= 1, "CertPEM carries the leaf, then its intermediates");
    const check = verify({ certificate: cert, chain }, String(active.RootCert));
    assert.ok(check.ok, check.output);
    assert.equal(new X509Certificate(cert).checkPrivateKey(createPrivateKey(l.PrivateKeyPEM)), true);
    // The same node hands the same leaf to every caller until it nears expiry.
    assert.equal((await call(n2, "GET", "/v1/agent/connect/ca/leaf/web")).json.SerialNumber, l.SerialNumber);
    const bad = await call(n2, "GET", "/v1/agent/connect/ca/leaf/not_a_label");
    assert.equal(bad.status, 400);
  });

  void test("rotation: the new root is cross-signed, so holders of either root trust new leaves, and old leaves stay trusted", async () => {
    const oldBundle = await bundle(n1);
    const oldRoot = oldBundle.roots[0].certificate;
    const oldLeaf = await sign(n3, { csr: csrFor(WEB_ID).csr });
    const consulBefore = await call(n3, "GET", "/v1/agent/connect/ca/leaf/web");
    const consulIndex = consulBefore.headers.get("x-consul-index") ?? "0";

    // Watchers are blocked on the current revision when the rotation lands.
    const blockingBundle = call(n2, "GET", `/v1/ca/bundle?index=${oldBundle.index}&wait=30s`);
    const blockingLeaf = call(n3, "GET", `/v1/agent/connect/ca/leaf/web?index=${consulIndex}&wait=30s`);
    const stream = await fetch(n3.url("/v1/ca/bundle/stream"));
    const reader = (stream.body as ReadableStream<Uint8Array>).getReader();
    const events: string[] = [];
    let buffered = "";
    const nextEvent = async (): Promise<string> => {
      while (!buffered.includes("\n\n")) {
        const { value, done } = await reader.read();
        if (done === true) throw new Error("stream ended");
        buffered += new TextDecoder().decode(value);
      }
      const at = buffered.indexOf("\n\n");
      const event = buffered.slice(0, at);
      buffered = buffered.slice(at + 2);
      events.push(event);
      return event;
    };
    assert.match(await nextEvent(), /event: bundle\ndata: .*"roots"/);

    const rotated = await call(n2, "POST", "/v1/ca/rotate", {});
    assert.equal(rotated.status, 200, rotated.text);
    const newRootId = (rotated.json.root as { id: string }).id;

    const woke = await blockingBundle;
    assert.equal((woke.json as unknown as Bundle).roots.length, 2);
    assert.ok(Number(woke.headers.get("x-cairn-index")) > oldBundle.index);
    const event = await nextEvent();
    assert.ok(event.includes(newRootId), "the stream pushed the rotated bundle");
    const newConsulLeaf = await blockingLeaf;
    assert.ok(Number(newConsulLeaf.headers.get("x-consul-index")) > Number(consulIndex), "Consul's leaf query returned on rotation");
    assert.notEqual(newConsulLeaf.json.SerialNumber, consulBefore.json.SerialNumber);
    await reader.cancel();

    const newBundle = await waitFor(async () => {
      const b = await bundle(n1);
      return b.roots.length === 2 ? b : undefined;
    }, 5_000, () => "node 1 did not see the rotation");
    const newRoot = newBundle.roots.find((r) => r.active)!.certificate;
    assert.equal(newBundle.roots.find((r) => r.active)!.id, newRootId);
    const newLeaf = await waitFor(async () => {
      const s = await sign(n1, { csr: csrFor(WEB_ID).csr });
      return s.chain.length === 2 ? s : undefined;
    }, 5_000, () => "node 1 still signs without the cross-signed root");

    assert.ok(verify(newLeaf, newRoot).ok, "a new leaf verifies against the new root");
    const viaOld = verify(newLeaf, oldRoot);
    assert.ok(viaOld.ok, `a new leaf verifies against the OLD root alone, through the cross-signed certificate: ${viaOld.output}`);
    assert.ok(verify(oldLeaf, newBundle.roots.map((r) => r.certificate).join("")).ok, "an old leaf verifies against the new bundle");
    // Planted failure: without the cross-signed certificate, the old root alone cannot verify a new leaf.
    assert.equal(verify({ certificate: newLeaf.certificate, chain: [newLeaf.chain[0]] }, oldRoot).ok, false);
  });

  void test("an operator imports their own root, then their own intermediate; leaves chain to what was imported", async () => {
    const ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"];
    const rootKey = join(dir, "op-root.key");
    const rootPem = openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", rootKey, "-subj", "/CN=Operator Root", "-days", "3650", ...ext]);
    const imported = await call(n1, "POST", "/v1/ca/import", { certificate: rootPem, privateKey: openssl(["pkey", "-in", rootKey]) });
    assert.equal(imported.status, 200, imported.text);
    const leafUnderRoot = await waitFor(async () => {
      const s = await sign(n2, { csr: csrFor(WEB_ID).csr });
      return verify({ certificate: s.certificate, chain: [s.chain[0]] }, rootPem).ok ? s : undefined;
    }, 5_000, () => "leaves do not chain to the imported root");
    assert.ok(leafUnderRoot.chain.length >= 1);

    const again = await call(n1, "POST", "/v1/ca/import", { certificate: rootPem, privateKey: openssl(["pkey", "-in", rootKey]) });
    assert.equal(again.status, 400);
    assert.match(String(again.json.error), /already the active root/);

    // An intermediate of the operator's under another root of theirs: Cairn then signs with it directly.
    const root2Key = join(dir, "op-root2.key");
    // P-384, a key type Cairn would not generate itself but signs with.
    const root2Pem = openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes", "-keyout", root2Key, "-subj", "/CN=Operator Root 2", "-days", "3650", ...ext]);
    const intKey = join(dir, "op-int.key");
    const intCsr = file("op-int.csr", openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes", "-keyout", intKey, "-subj", "/CN=Operator Intermediate"]));
    const extFile = file("op-int.ext", "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n");
    const intPem = openssl(["x509", "-req", "-in", intCsr, "-CA", file("op-root2.pem", root2Pem), "-CAkey", root2Key, "-days", "365", "-extfile", extFile]);
    const intKeyPem = openssl(["pkey", "-in", intKey]);
    const mismatched = await call(n1, "POST", "/v1/ca/import", { certificate: intPem, privateKey: openssl(["pkey", "-in", root2Key]), root: root2Pem });
    assert.equal(mismatched.status, 400);
    assert.equal(mismatched.json.field, "privateKey");
    const orphan = await call(n1, "POST", "/v1/ca/import", { certificate: intPem, privateKey: intKeyPem });
    assert.equal(orphan.status, 400);
    assert.equal(orphan.json.field, "root");
    const wrongRoot = await call(n1, "POST", "/v1/ca/import", { certificate: intPem, privateKey: intKeyPem, root: rootPem });
    assert.equal(wrongRoot.status, 400);
    assert.match(String(wrongRoot.json.error), /not issued by the given root/);
    const notCa = await call(n1, "POST", "/v1/ca/import", { certificate: leafUnderRoot.certificate, privateKey: intKeyPem });
    assert.equal(notCa.status, 400);
    assert.match(String(notCa.json.error), /not a CA certificate/);
    assert.doesNotMatch(mismatched.text + orphan.text + notCa.text + wrongRoot.text, /PRIVATE KEY/);
    const viaIntermediate = await call(n3, "POST", "/v1/ca/import", { certificate: intPem, privateKey: intKeyPem, root: root2Pem });
    assert.equal(viaIntermediate.status, 200, viaIntermediate.text);
    const leafUnderIntermediate = await waitFor(async () => {
      const s = await sign(n2, { csr: csrFor(WEB_ID).csr });
      return s.chain[0] === new X509Certificate(intPem).toString() ? s : undefined;
    }, 5_000, () => "leaves are not signed by the imported intermediate");
    assert.ok(verify(leafUnderIntermediate, root2Pem).ok, "a leaf verifies against the operator's root 2");
    // Holders of the previous (operator) root still trust it: Cairn cross-signed root 2 with root 1's key.
    assert.ok(verify(leafUnderIntermediate, rootPem).ok, "a leaf verifies against the previous root alone, through the cross-signed root");
    const consulRoots = (await call(n1, "GET", "/v1/connect/ca/roots")).json as { Roots: { Active: boolean; PrivateKeyType: string; PrivateKeyBits: number }[] };
    const activeRoot = consulRoots.Roots.find((r) => r.Active);
    assert.deepEqual([activeRoot?.PrivateKeyType, activeRoot?.PrivateKeyBits], ["ec", 384]);
  });

  void test("no private key or sealed key appears in any API answer or log", async () => {
    const answers = await Promise.all([
      call(n1, "GET", "/v1/ca/roots"), call(n1, "GET", "/v1/ca/bundle"), call(n1, "GET", "/v1/connect/ca/roots"),
      call(n1, "GET", "/v1/ca/bundle?format=spiffe"), call(n1, "GET", "/v1/openapi.json"),
    ]);
    for (const a of answers) {
      assert.doesNotMatch(a.text, /PRIVATE KEY|aes256gcm:|plain:/);
      assert.ok(!a.text.includes('"d"'), "a JWK private component leaked");
    }
    for (const n of cluster.nodes) {
      assert.doesNotMatch(n.stdout + n.stderr, /PRIVATE KEY|aes256gcm:|plain:/);
      assert.ok(!(n.stdout + n.stderr).includes(kek), "the KEK appeared in a log");
    }
  });

  void test("a node stops promptly with blocking reads and streams open, and a cluster restarted from disk keeps signing with the same CA", async () => {
    const before = await bundle(n1);
    const activeBefore = before.roots.find((r) => r.active)!;
    const intermediateBefore = (await sign(n1, { csr: csrFor(WEB_ID).csr })).chain[0];
    // Open waits must not hold a shutdown up: blocking reads answer and streams end when a node stops.
    const waits = Promise.all([
      call(n1, "GET", `/v1/ca/bundle?index=${before.index}&wait=5m`),
      call(n1, "GET", "/v1/health/service/nothing?index=100000&wait=5m"),
      fetch(n1.url("/v1/ca/bundle/stream")).then(async (res) => res.text()),
    ]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const stopStartedMs = Date.now();
    assert.equal(await n1.stop(), 0);
    assert.ok(Date.now() - stopStartedMs < 5_000, `stopping with open waits took ${Date.now() - stopStartedMs} ms`);
    const [bundleWait, healthWait, streamed] = await waits;
    assert.equal(bundleWait.status, 200);
    assert.equal(healthWait.status, 200);
    assert.match(streamed, /event: bundle/);
    for (const n of cluster.nodes) await n.stop();
    for (const n of cluster.nodes) n.start();
    await cluster.agreedLeader(20_000);
    const after = await waitFor(async () => {
      try {
        const b = await bundle(n2);
        return b.roots.length > 0 ? b : undefined;
      } catch {
        return undefined;
      }
    }, 15_000, () => "no bundle after restart");
    assert.deepEqual(after.roots.map((r) => r.id), before.roots.map((r) => r.id));
    const signed = await waitFor(async () => {
      const r = await call(n2, "POST", "/v1/ca/sign", { csr: csrFor(WEB_ID).csr });
      return r.status === 200 ? (r.json as unknown as Signed) : undefined;
    }, 10_000, () => "no signing after restart");
    assert.equal(signed.chain[0], intermediateBefore, "the same intermediate signs after the restart");
    assert.ok(verify(signed, activeBefore.certificate).ok);
    const text = execFileSync("openssl", ["x509", "-noout", "-issuer"], { input: signed.certificate, encoding: "utf8" });
    assert.match(text, /Intermediate/);
  });
});
