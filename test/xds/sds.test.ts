// SDS on a real one-node server with ACLs on, through a client built on Envoy's protos (Envoy is
// not packaged here): the ROOTCA bundle and a service's certificate over ADS and over the
// standalone SecretDiscoveryService, checked with openssl; a token without service:write on the
// service gets nothing for it; ACK and NACK; and a root rotation pushes the two-root bundle and a
// leaf signed by the new root to every stream, the NACKed one included.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { CLUSTER_TYPE, LISTENER_TYPE, SECRET_TYPE } from "../../src/api/xds/resources.js";
import { loadXdsProtos, type XdsProtos } from "../../src/api/xds/protos.js";
import { TRUST_BUNDLE_SECRET_NAME } from "../../src/api/xds/secrets.js";
import { sdsServiceDefinition } from "../../src/api/xds/service.js";
import { ProcessCluster, type ProcessNode } from "../support/cluster.js";
import { adsClient, decodeAny, RawAdsStream, type AnyMessage, type DeltaResponse, type SotwResponse } from "./raw_client.js";

interface DecodedSecret {
  readonly name: string;
  readonly tls_certificate?: { readonly certificate_chain: { readonly inline_bytes: Uint8Array }; readonly private_key: { readonly inline_bytes: Uint8Array } };
  readonly validation_context?: { readonly trusted_ca: { readonly inline_bytes: Uint8Array } };
}

interface Answer { readonly status: number; readonly text: string; readonly json: () => Record<string, unknown> }

async function call(node: ProcessNode, method: string, path: string, token: string, body?: unknown): Promise<Answer> {
  const headers: Record<string, string> = { "x-consul-token": token, ...(body === undefined ? {} : { "content-type": "application/json" }) };
  const res = await fetch(node.url(path), { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.text();
  return { status: res.status, text, json: () => JSON.parse(text) as Record<string, unknown> };
}

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g;
const pemBlocks = (pem: string): string[] => pem.match(PEM_BLOCK) ?? [];

/** The tokens' metadata, as Envoy sends it in its gRPC service's initial_metadata. */
function tokenMetadata(token: string): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set("x-consul-token", token);
  return m;
}

void describe("SDS secrets on a one-node server with ACLs on", { timeout: 60_000 }, () => {
  let cluster: ProcessCluster;
  let node: ProcessNode;
  let management: string;
  let webToken: string;
  let readerToken: string;
  let protos: XdsProtos;
  let client: grpc.Client;
  let dir: string;
  const streams: { close(): void }[] = [];
  /** The ADS stream of the first test and the SDS stream of the third, left open for the rotation. */
  let adsStream: RawAdsStream<SotwResponse>;
  let sdsStream: RawAdsStream<SotwResponse>;
  let firstSerial: string;
  let firstBundle: string;

  let webAccessor: string;

  const tokenWith = async (name: string, rules: object): Promise<{ secret: string; accessor: string }> => {
    const policy = await call(node, "PUT", "/v1/acl/policy", management, { Name: name, Rules: JSON.stringify(rules) });
    assert.equal(policy.status, 200, policy.text);
    const token = await call(node, "PUT", "/v1/acl/token", management, { Policies: [{ Name: name }] });
    assert.equal(token.status, 200, token.text);
    return { secret: token.json().SecretID as string, accessor: token.json().AccessorID as string };
  };

  const secretsOf = (resources: readonly AnyMessage[]): Map<string, DecodedSecret> => {
    const out = new Map<string, DecodedSecret>();
    for (const any of resources) {
      assert.equal(any.type_url, SECRET_TYPE.typeUrl);
      const secret = decodeAny(protos, any) as unknown as DecodedSecret;
      out.set(secret.name, secret);
    }
    return out;
  };

  /** Every version_info each stream was sent, in order. */
  const versionsSent = new Map<RawAdsStream<SotwResponse>, string[]>();

  /** Reads SotW responses (ACKing each) until every name in `names` has come; returns the last of each and the last response. */
  const collect = async (s: RawAdsStream<SotwResponse>, names: readonly string[], ack = true): Promise<{ secrets: Map<string, DecodedSecret>; last: SotwResponse }> => {
    const secrets = new Map<string, DecodedSecret>();
    for (;;) {
      const r = await s.next(5000);
      versionsSent.set(s, [...(versionsSent.get(s) ?? []), r.version_info]);
      assert.equal(r.type_url, SECRET_TYPE.typeUrl, `only secrets were asked for, got a ${r.type_url} response`);
      for (const [name, secret] of secretsOf(r.resources)) secrets.set(name, secret);
      if (names.every((n) => secrets.has(n))) return { secrets, last: r };
      if (ack) s.send({ type_url: SECRET_TYPE.typeUrl, resource_names: names, response_nonce: r.nonce, version_info: r.version_info });
    }
  };

  /** Writes the secret's PEMs to files and checks them with openssl; returns the leaf. */
  const checkCertificate = (secret: DecodedSecret, bundlePem: string, label: string): X509Certificate => {
    const tls = secret.tls_certificate;
    assert.ok(tls !== undefined, `${secret.name} is a tls_certificate secret`);
    const chainPem = Buffer.from(tls.certificate_chain.inline_bytes).toString();
    const keyPem = Buffer.from(tls.private_key.inline_bytes).toString();
    const [leafPem, ...intermediates] = pemBlocks(chainPem);
    assert.ok(leafPem !== undefined && intermediates.length >= 1, "the chain is the leaf, then its intermediates");
    const leaf = new X509Certificate(leafPem);
    assert.ok(leaf.checkPrivateKey(createPrivateKey(keyPem)), "the private key is the certificate's");
    writeFileSync(join(dir, `${label}-leaf.pem`), leafPem);
    writeFileSync(join(dir, `${label}-chain.pem`), intermediates.join(""));
    writeFileSync(join(dir, `${label}-bundle.pem`), bundlePem);
    const verify = spawnSync("openssl", ["verify", "-CAfile", join(dir, `${label}-bundle.pem`), "-untrusted", join(dir, `${label}-chain.pem`), join(dir, `${label}-leaf.pem`)], { encoding: "utf8" });
    assert.equal(verify.status, 0, `openssl verify: ${verify.stdout}${verify.stderr}`);
    return leaf;
  };

  const bundleOf = (secret: DecodedSecret | undefined): string => {
    const ca = secret?.validation_context?.trusted_ca.inline_bytes;
    assert.ok(ca !== undefined, "ROOTCA is a validation_context secret");
    return Buffer.from(ca).toString();
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "cairn-sds-"));
    protos = await loadXdsProtos();
    cluster = await ProcessCluster.start(1, [], { acl: true });
    node = cluster.nodes[0];
    management = await cluster.bootstrapAcl(node);
    await cluster.agreedLeader();
    ({ secret: webToken, accessor: webAccessor } = await tokenWith("web-writer", { service: { web: { policy: "write" } } }));
    readerToken = (await tokenWith("reader", { service_prefix: { "": { policy: "read" } } })).secret;
    client = adsClient(node.info.grpc);
  });

  after(async () => {
    for (const s of streams) s.close();
    client?.close();
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  void test("over ADS, a token with service:write on web gets ROOTCA and web's certificate: its SPIFFE ID, its key, a chain to the bundle, the same leaf as Consul's route", async () => {
    adsStream = await RawAdsStream.sotw(client, tokenMetadata(webToken));
    streams.push(adsStream);
    adsStream.send({ node: { id: "envoy-web-1", cluster: "web" }, type_url: SECRET_TYPE.typeUrl, resource_names: [TRUST_BUNDLE_SECRET_NAME, "web"] });
    const { secrets, last } = await collect(adsStream, [TRUST_BUNDLE_SECRET_NAME, "web"]);
    const bundlePem = bundleOf(secrets.get(TRUST_BUNDLE_SECRET_NAME));
    assert.equal(pemBlocks(bundlePem).length, 1, "one root before any rotation");
    const web = secrets.get("web");
    assert.ok(web !== undefined);
    const leaf = checkCertificate(web, bundlePem, "ads");
    const consul = await call(node, "GET", "/v1/agent/connect/ca/leaf/web", webToken);
    assert.equal(consul.status, 200, consul.text);
    const uri = consul.json().ServiceURI as string;
    assert.match(uri, /^spiffe:\/\/cairn\.local\/ns\/default\/dc\/[^/]+\/svc\/web$/);
    assert.equal(leaf.subjectAltName, `URI:${uri}`, "exactly one SAN: web's SPIFFE ID");
    assert.equal((consul.json().SerialNumber as string).toUpperCase(), leaf.serialNumber.match(/../g)?.join(":"), "SDS and Consul's leaf route hand out the node's one leaf for web");
    // The stream signed it, as its token's holder: the audit log names the accessor and the client.
    const audited = readFileSync(join(node.info.dataDir, "audit.log"), "utf8").split("\n").filter((l) => l.includes('"kind":"certificate"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(audited.filter((r) => r.spiffeId === uri).map((r) => [r.accessor, r.origin]), [[webAccessor, "xDS client envoy-web-1"]]);
    // The ACK opens the window for the pushes the rotation test waits for.
    adsStream.send({ type_url: SECRET_TYPE.typeUrl, resource_names: [TRUST_BUNDLE_SECRET_NAME, "web"], response_nonce: last.nonce, version_info: last.version_info });
    firstSerial = leaf.serialNumber;
    firstBundle = bundlePem;
  });

  void test("a token without service:write on web gets nothing for it, only ROOTCA: delta says web does not exist", async () => {
    const s = await RawAdsStream.delta(client, tokenMetadata(readerToken));
    streams.push(s);
    s.send({ node: { id: "envoy-reader", cluster: "reader" }, type_url: SECRET_TYPE.typeUrl, resource_names_subscribe: [TRUST_BUNDLE_SECRET_NAME, "web"] });
    const r: DeltaResponse = await s.next();
    assert.deepEqual(r.resources.map((x) => x.name), [TRUST_BUNDLE_SECRET_NAME]);
    assert.deepEqual(r.removed_resources, ["web"], "web is absent to this token");
    assert.equal(bundleOf(decodeAny(protos, r.resources[0].resource) as unknown as DecodedSecret), firstBundle);
    // The same over state of the world: a response with the bundle alone.
    const sotw = await RawAdsStream.sotw(client, tokenMetadata(readerToken));
    streams.push(sotw);
    sotw.send({ node: { id: "envoy-reader-2", cluster: "reader" }, type_url: SECRET_TYPE.typeUrl, resource_names: ["web", TRUST_BUNDLE_SECRET_NAME] });
    const first = await sotw.next();
    assert.deepEqual([...secretsOf(first.resources).keys()], [TRUST_BUNDLE_SECRET_NAME]);
  });

  void test("over the standalone SecretDiscoveryService the stream gets secrets and no other type; a NACK is logged and keeps the rejected version from coming back", async () => {
    sdsStream = await RawAdsStream.sotw(client, tokenMetadata(webToken), sdsServiceDefinition.StreamSecrets);
    streams.push(sdsStream);
    // A listener and a cluster request first: an ADS stream answers them at once (even with no
    // service); the SDS stream ignores them, so its first response is the secrets'.
    sdsStream.send({ node: { id: "envoy-web-2", cluster: "web" }, type_url: LISTENER_TYPE.typeUrl, resource_names: [] });
    sdsStream.send({ type_url: CLUSTER_TYPE.typeUrl, resource_names: [] });
    sdsStream.send({ type_url: SECRET_TYPE.typeUrl, resource_names: ["web"] });
    const r = await sdsStream.next();
    assert.equal(r.type_url, SECRET_TYPE.typeUrl);
    const web = secretsOf(r.resources).get("web");
    assert.ok(web !== undefined);
    assert.equal(checkCertificate(web, firstBundle, "sds").serialNumber, firstSerial, "the same leaf as over ADS");
    sdsStream.send({ type_url: SECRET_TYPE.typeUrl, resource_names: ["web"], response_nonce: r.nonce, version_info: r.version_info, error_detail: { code: 3, message: "test: certificate refused" } });
    await waitForLog(node, "xDS client rejected (NACKed) a response", "envoy-web-2");
  });

  void test("a root rotation pushes, within seconds, the two-root bundle and a leaf of the new root to every stream, the one that NACKed included", async () => {
    const rotatedAtMs = Date.now();
    const rotated = await call(node, "POST", "/v1/ca/rotate", management, {});
    assert.equal(rotated.status, 200, rotated.text);
    const { secrets } = await collect(adsStream, [TRUST_BUNDLE_SECRET_NAME, "web"]);
    const pushMs = Date.now() - rotatedAtMs;
    const bundlePem = bundleOf(secrets.get(TRUST_BUNDLE_SECRET_NAME));
    assert.equal(pemBlocks(bundlePem).length, 2, "old and new root are both trusted");
    assert.ok(bundlePem.startsWith(firstBundle), "the old root is still in the bundle");
    const web = secrets.get("web");
    assert.ok(web !== undefined);
    const leaf = checkCertificate(web, bundlePem, "rotated");
    assert.notEqual(leaf.serialNumber, firstSerial, "a new leaf");
    // Signed under the new root: it verifies against the new root alone.
    const newRoot = pemBlocks(bundlePem).find((b) => !firstBundle.includes(b));
    assert.ok(newRoot !== undefined);
    checkCertificate(web, newRoot, "new-root-only");
    assert.ok(pushMs < 5000, `pushed ${pushMs} ms after the rotation was answered`);
    // A rotation leaves the registry's revision as it was, yet its pushes carry versions of their own.
    const versions = versionsSent.get(adsStream) ?? [];
    assert.ok(versions.length >= 2);
    assert.equal(new Set(versions).size, versions.length, `a version_info was sent twice on one stream: ${versions.join(", ")}`);
    // The NACKed version is never sent again: the SDS stream's next response is the new leaf.
    const next = await sdsStream.next(5000);
    const sdsWeb = secretsOf(next.resources).get("web");
    assert.ok(sdsWeb !== undefined);
    assert.equal(checkCertificate(sdsWeb, bundlePem, "sds-rotated").serialNumber, leaf.serialNumber);
    // Private keys never reach the log: not the key material itself, nor its PEM header.
    const keyBody = Buffer.from(web.tls_certificate?.private_key.inline_bytes ?? []).toString().split("\n")[1] ?? "";
    assert.ok(keyBody.length > 20 && !node.stdout.includes(keyBody) && !node.stderr.includes(keyBody), "the private key is not in the node's output");
    assert.ok(!node.stdout.includes("PRIVATE KEY"), "no private key PEM in the node's output");
    process.stdout.write(`# SDS push after a root rotation: ${pushMs} ms\n`);
  });
});

/** Waits (bounded) until the node has logged `message` for `client`. */
async function waitForLog(node: ProcessNode, message: string, client: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!node.stdout.split("\n").some((l) => l.includes(message) && l.includes(`"client":"${client}"`))) {
    if (Date.now() > deadline) throw new Error(`the node did not log "${message}" for ${client}${node.lastWords()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
