// The SPIFFE Workload API on a real node's Unix socket, called by a grpc-js client built from the
// same proto, and the TrustBundle.Watch stream on the public gRPC port: the security header,
// the first message's full state (checked with openssl), and the push after a root rotation.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { existsSync, lstatSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { ProcessCluster, type ProcessNode, waitFor } from "../support/cluster.js";
import type { BundleMessage } from "../../src/api/ca/bundle_grpc.js";
import { loadProtoService } from "../../src/api/protos.js";
import { DerReader, Tag, elementBytes, pemEncode } from "../../src/common/der.js";

const TD = "cairn.local";
const WEB_ID = `spiffe://${TD}/ns/default/svc/web`;
/** How long a pushed message may take to arrive after the change that caused it. */
const PUSH_MS = 5_000;

interface X509Svid { spiffe_id: string; x509_svid: Buffer; x509_svid_key: Buffer; bundle: Buffer; hint: string }
interface X509SvidResponse { svids: X509Svid[] }
interface X509BundlesResponse { bundles: Record<string, Buffer> }

const workloadService = loadProtoService("spiffe/workloadapi.proto", "SpiffeWorkloadAPI");
const bundleService = loadProtoService("cairn/ca/v1/bundle.proto", "cairn.ca.v1.TrustBundle");

/** The messages of one server stream, read in order with a bound on each wait. */
class StreamReader<T> {
  private readonly queue: T[] = [];
  private failure: grpc.ServiceError | undefined;
  private wake: (() => void) | undefined;

  constructor(readonly call: grpc.ClientReadableStream<T>) {
    call.on("data", (m: T) => {
      this.queue.push(m);
      this.wake?.();
    });
    call.on("error", (e: grpc.ServiceError) => {
      this.failure = e;
      this.wake?.();
    });
  }

  /** The next message, or a rejection naming what arrived instead. */
  async next(timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      if (this.failure !== undefined) throw new Error(`the stream failed: ${this.failure.code} ${this.failure.details}`);
      const leftMs = deadline - Date.now();
      if (leftMs <= 0) throw new Error(`no message within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, leftMs);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.queue.shift() as T;
  }

  /** The next message that satisfies `predicate`, skipping others. */
  async nextWhere(predicate: (m: T) => boolean, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      if (predicate(m)) return m;
    }
  }

  /** The status the stream ended with; fails if it sent a message or stayed open. */
  async status(timeoutMs: number): Promise<grpc.ServiceError> {
    await this.next(timeoutMs).then(
      (m) => assert.fail(`expected the stream to fail, but it sent ${JSON.stringify(m).slice(0, 200)}`),
      () => undefined,
    );
    assert.ok(this.failure !== undefined, "the stream neither failed nor sent anything");
    return this.failure;
  }

  cancel(): void {
    this.call.cancel();
  }
}

function open<T>(client: grpc.Client, service: grpc.ServiceDefinition, method: string, metadata: grpc.Metadata): StreamReader<T> {
  const m = service[method];
  const call = client.makeServerStreamRequest<object, T>(m.path, (v: object) => m.requestSerialize(v), (b: Buffer) => m.responseDeserialize(b) as T, {}, metadata);
  return new StreamReader(call);
}

/** `waitForReady` makes the call wait for the socket to accept rather than fail at once. */
function workloadMetadata(waitForReady = false): grpc.Metadata {
  const md = new grpc.Metadata({ waitForReady });
  md.set("workload.spiffe.io", "true");
  return md;
}

/** Concatenated DER certificates, as the Workload API sends them, one by one. */
function splitDer(bytes: Uint8Array): X509Certificate[] {
  const reader = new DerReader(bytes);
  const out: X509Certificate[] = [];
  while (!reader.atEnd) out.push(new X509Certificate(elementBytes(bytes, reader.read("certificate", Tag.sequence))));
  return out;
}

function pemOf(certs: readonly X509Certificate[]): string {
  return certs.map((c) => pemEncode("CERTIFICATE", c.raw)).join("");
}

async function rotate(node: ProcessNode): Promise<string> {
  const res = await fetch(node.url("/v1/ca/rotate"), { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return (JSON.parse(text) as { root: { id: string } }).root.id;
}

void describe("the SPIFFE Workload API on a node's Unix socket", () => {
  let dir: string;
  let socket: string;
  let cluster: ProcessCluster;
  let workload: grpc.Client;
  let bundles: grpc.Client;
  const readers: StreamReader<unknown>[] = [];

  const track = <T>(r: StreamReader<T>): StreamReader<T> => {
    readers.push(r);
    return r;
  };

  /** Verifies an SVID the way a TLS peer would, with openssl: its chain must lead to one of `roots`. */
  const opensslVerify = (svid: readonly X509Certificate[], roots: readonly X509Certificate[]): void => {
    const tag = Math.random().toString(16).slice(2);
    const caFile = join(dir, `roots-${tag}.pem`);
    const chainFile = join(dir, `chain-${tag}.pem`);
    const leafFile = join(dir, `leaf-${tag}.pem`);
    writeFileSync(caFile, pemOf(roots));
    writeFileSync(chainFile, pemOf(svid.slice(1)));
    writeFileSync(leafFile, pemOf(svid.slice(0, 1)));
    const r = spawnSync("openssl", ["verify", "-CAfile", caFile, "-untrusted", chainFile, leafFile], { encoding: "utf8" });
    assert.equal(r.status, 0, `openssl verify: ${r.stderr}${r.stdout}`);
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "cairn-wl-"));
    socket = join(dir, "workload.sock");
    cluster = await ProcessCluster.start(1, ["--log-level", "warn", "--workload-socket", socket, "--workload-identities", WEB_ID]);
    await cluster.agreedLeader();
    workload = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure());
    bundles = new grpc.Client(cluster.nodes[0].info.grpc, grpc.credentials.createInsecure());
  });

  after(async () => {
    for (const r of readers) r.cancel();
    workload?.close();
    bundles?.close();
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  void test("a call without the workload.spiffe.io metadata is refused with InvalidArgument; JWT methods are unimplemented", async () => {
    for (const method of ["FetchX509SVID", "FetchX509Bundles"]) {
      const err = await track(open(workload, workloadService, method, new grpc.Metadata())).status(PUSH_MS);
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT, `${method}: ${err.details}`);
      assert.match(err.details, /workload\.spiffe\.io: true/);
    }
    const jwt = await track(open(workload, workloadService, "FetchJWTBundles", workloadMetadata())).status(PUSH_MS);
    assert.equal(jwt.code, grpc.status.UNIMPLEMENTED, jwt.details);
  });

  void test("FetchX509SVID sends the full state at once: a P-256 key matching a leaf whose chain verifies against the bundle", async () => {
    const first = await track(open<X509SvidResponse>(workload, workloadService, "FetchX509SVID", workloadMetadata())).next(PUSH_MS);
    assert.equal(first.svids.length, 1);
    const svid = first.svids[0];
    assert.equal(svid.spiffe_id, WEB_ID);
    const chain = splitDer(svid.x509_svid);
    assert.ok(chain.length >= 2, "the leaf comes with its intermediate");
    assert.match(chain[0].subjectAltName ?? "", new RegExp(`URI:${WEB_ID}`));
    assert.equal(chain[0].ca, false);
    const key = createPrivateKey({ key: svid.x509_svid_key, format: "der", type: "pkcs8" });
    assert.equal(key.asymmetricKeyType, "ec");
    assert.equal(key.asymmetricKeyDetails?.namedCurve, "prime256v1");
    assert.ok(chain[0].checkPrivateKey(key), "x509_svid_key is the leaf's key");
    const roots = splitDer(svid.bundle);
    assert.equal(roots.length, 1);
    opensslVerify(chain, roots);
    // Two streams share the node's one SVID rather than signing one each.
    const second = await track(open<X509SvidResponse>(workload, workloadService, "FetchX509SVID", workloadMetadata())).next(PUSH_MS);
    assert.deepEqual(second.svids[0].x509_svid, svid.x509_svid);
  });

  void test("a root rotation pushes at once: SVIDs from the new root and bundles holding both roots, on every stream", async () => {
    const svids = track(open<X509SvidResponse>(workload, workloadService, "FetchX509SVID", workloadMetadata()));
    const x509Bundles = track(open<X509BundlesResponse>(workload, workloadService, "FetchX509Bundles", workloadMetadata()));
    const watch = track(open<BundleMessage>(bundles, bundleService, "Watch", new grpc.Metadata()));
    const before = await svids.next(PUSH_MS);
    const beforeBundles = await x509Bundles.next(PUSH_MS);
    const beforeWatch = await watch.next(PUSH_MS);
    const oldRoot = splitDer(before.svids[0].bundle)[0];
    assert.deepEqual(Object.keys(beforeBundles.bundles), [`spiffe://${TD}`]);
    assert.equal(beforeWatch.trust_domain, TD);
    assert.equal(beforeWatch.roots.length, 1);
    const oldRootId = beforeWatch.roots[0].id;

    const rotatedAtMs = Date.now();
    const newRootId = await rotate(cluster.nodes[0]);
    assert.notEqual(newRootId, oldRootId);

    const after = await svids.nextWhere((m) => splitDer(m.svids[0].bundle).length === 2, PUSH_MS);
    const pushedMs = Date.now() - rotatedAtMs;
    const chain = splitDer(after.svids[0].x509_svid);
    const roots = splitDer(after.svids[0].bundle);
    const newRoot = roots.find((r) => r.fingerprint256 !== oldRoot.fingerprint256);
    assert.ok(newRoot !== undefined, "the bundle holds a second root");
    assert.ok(roots.some((r) => r.fingerprint256 === oldRoot.fingerprint256), "the old root stays trusted");
    // The leaf's intermediate is the new root's, so the new root signed it.
    assert.ok(chain[1].checkIssued(newRoot) && chain[1].verify(newRoot.publicKey), "the SVID comes from the new root");
    opensslVerify(chain, [newRoot]);
    // Holders of only the old root still verify it, through the cross-signed new root in the chain.
    opensslVerify(chain, [oldRoot]);
    assert.notDeepEqual(after.svids[0].x509_svid, before.svids[0].x509_svid);
    assert.ok(pushedMs < PUSH_MS, `pushed ${pushedMs} ms after the rotation`);

    const afterBundles = await x509Bundles.nextWhere((m) => splitDer(m.bundles[`spiffe://${TD}`]).length === 2, PUSH_MS);
    assert.deepEqual(splitDer(afterBundles.bundles[`spiffe://${TD}`]).map((c) => c.fingerprint256).sort(), roots.map((c) => c.fingerprint256).sort());

    const afterWatch = await watch.nextWhere((m) => m.roots.length === 2, PUSH_MS);
    assert.ok(afterWatch.revision > beforeWatch.revision);
    assert.deepEqual(afterWatch.roots.map((r) => [r.id, r.active]), [[oldRootId, false], [newRootId, true]]);
    assert.ok(afterWatch.roots.every((r) => r.certificate_pem.startsWith("-----BEGIN CERTIFICATE-----") && r.not_after_unix_ms > Date.now()));
  });

  void test("a socket left behind by a node killed with -9 is replaced when the node restarts", async () => {
    const node = cluster.nodes[0];
    await node.kill9();
    assert.ok(lstatSync(socket).isSocket(), "kill -9 leaves the socket file");
    node.start();
    // A new channel with its own connections: grpc-js otherwise shares the old channel's, which
    // may not have noticed yet that its peer died, and the first call would be dropped.
    const client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
    try {
      const first = await track(open<X509SvidResponse>(client, workloadService, "FetchX509SVID", workloadMetadata(true))).next(15_000);
      assert.equal(first.svids[0].spiffe_id, WEB_ID);
    } finally {
      client.close();
    }
  });

  void test("a socket that hands out no identity answers PermissionDenied; a socket directory that does not exist stops the node", async () => {
    const empty = join(dir, "empty.sock");
    const bare = await ProcessCluster.start(1, ["--log-level", "warn", "--workload-socket", empty]);
    const missing = await ProcessCluster.start(1, ["--log-level", "warn", "--workload-socket", join(dir, "no-such-dir", "w.sock")]);
    const client = new grpc.Client(`unix://${empty}`, grpc.credentials.createInsecure());
    try {
      await waitFor(() => Promise.resolve(existsSync(empty) ? true : undefined), 10_000, () => `no socket at ${empty}: ${bare.nodes[0].stderr}`);
      const err = await track(open(client, workloadService, "FetchX509SVID", workloadMetadata())).status(PUSH_MS);
      assert.equal(err.code, grpc.status.PERMISSION_DENIED, err.details);
      assert.match(err.details, /hands out no identity: start the node with --workload-attest uid:<uid>=<SPIFFE ID>,... \(or --workload-identities, for every caller\)/);
      const code = await missing.nodes[0].exit;
      assert.equal(code, 2, "a misconfigured socket is a usage error");
      assert.match(missing.nodes[0].stderr, /cairn: cannot serve the Workload API on .*no-such-dir does not exist; create it first/);
      assert.doesNotMatch(missing.nodes[0].stderr, /\n\s+at /, "no stack trace for an operator's mistake");
    } finally {
      client.close();
      await Promise.all([bare.close(), missing.close()]);
    }
  });
});
