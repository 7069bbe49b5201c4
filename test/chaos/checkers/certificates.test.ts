import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { checkCertificates } from "../../../chaos/checkers/certificates.js";
import { HistoryBuilder } from "./history_builder.js";

const WEB_ID = "spiffe://cairn.local/ns/default/svc/web";
const DAY_MS = 86_400_000;

/** A real CA made with the openssl command line: root, intermediate, and leaves signed by the intermediate or another root. */
class OpensslCa {
  readonly dir = mkdtempSync(join(tmpdir(), "cairn-chaos-ca-"));
  private serial = 1;

  private run(args: readonly string[]): void {
    execFileSync("openssl", args, { cwd: this.dir, stdio: ["ignore", "ignore", "pipe"] });
  }

  private read(name: string): string {
    return readFileSync(join(this.dir, name), "utf8");
  }

  root(name: string): string {
    this.run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.pem`,
      "-subj", `/CN=${name}`, "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    return this.read(`${name}.pem`);
  }

  /** Signs a new key as `name` with `issuer`, valid for a day from now, with the extensions given. */
  issue(name: string, issuer: string, extensions: readonly string[]): string {
    writeFileSync(join(this.dir, `${name}.ext`), extensions.join("\n") + "\n");
    this.run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`]);
    this.run(["x509", "-req", "-in", `${name}.csr`, "-CA", `${issuer}.pem`, "-CAkey", `${issuer}.key`, "-set_serial", String(this.serial++),
      "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.pem`]);
    return this.read(`${name}.pem`);
  }

  leaf(name: string, issuer: string, spiffeId: string): string {
    return this.issue(name, issuer, ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=serverAuth,clientAuth", `subjectAltName=URI:${spiffeId}`]);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe("certificates checker", () => {
  const ca = new OpensslCa();
  let rootPem = "";
  let intermediatePem = "";
  let goodLeaf = "";
  let wrongSanLeaf = "";
  let strangerLeaf = "";
  const nowMs = Date.now();
  before(() => {
    rootPem = ca.root("root");
    intermediatePem = ca.issue("int", "root", ["basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,keyCertSign,cRLSign"]);
    goodLeaf = ca.leaf("leaf", "int", WEB_ID);
    wrongSanLeaf = ca.leaf("wrong", "int", "spiffe://cairn.local/ns/default/svc/db");
    ca.root("stranger");
    strangerLeaf = ca.leaf("strangerleaf", "stranger", WEB_ID);
  });
  after(() => ca.remove());

  const issue = (h: HistoryBuilder, leafPem: string, completedWallMs: number, at: readonly [number, number] = [1, 2]): void => {
    h.cert(WEB_ID, at, { chainPem: leafPem + intermediatePem, bundlePem: rootPem, completedWallMs });
  };

  test("accepts a leaf that chains to the bundle through its intermediate and names its SPIFFE ID", async () => {
    const h = new HistoryBuilder();
    issue(h, goodLeaf, nowMs + 60_000);
    const v = await checkCertificates(h.build());
    assert.equal(v.ok, true, JSON.stringify(v.anomalies));
    assert.deepEqual([v.stats.issued, v.stats.verified, v.stats.sampleRule], [1, 1, "all"]);
  });

  test("flags a leaf from another CA", async () => {
    const h = new HistoryBuilder();
    issue(h, strangerLeaf, nowMs + 60_000);
    const v = await checkCertificates(h.build());
    assert.equal(v.ok, false);
    assert.match(v.anomalies[0].message, /openssl verify at .* failed: .*unable to get local issuer certificate/);
  });

  test("flags a leaf that is expired, or not yet valid, at the time it was issued", async () => {
    const h = new HistoryBuilder();
    issue(h, goodLeaf, nowMs + 3 * DAY_MS);
    issue(h, goodLeaf, nowMs - DAY_MS);
    const v = await checkCertificates(h.build());
    assert.equal(v.anomalies.length, 2);
    const messages = v.anomalies.map((a) => a.message).join("\n");
    assert.match(messages, /certificate has expired/);
    assert.match(messages, /certificate is not yet valid/);
  });

  test("flags a leaf whose URI SAN is not the SPIFFE ID asked for", async () => {
    const h = new HistoryBuilder();
    issue(h, wrongSanLeaf, nowMs + 60_000);
    const v = await checkCertificates(h.build());
    assert.match(v.anomalies[0].message, /URI SANs are \[spiffe:\/\/cairn.local\/ns\/default\/svc\/db\], not \[spiffe:\/\/cairn.local\/ns\/default\/svc\/web\]/);
  });

  test("flags an ok certificate recorded without its chain", async () => {
    const h = new HistoryBuilder();
    h.cert(WEB_ID, [1, 2], { bundlePem: rootPem, completedWallMs: nowMs });
    assert.match((await checkCertificates(h.build())).anomalies[0].message, /recorded without its chain/);
  });

  test("past the bound, verifies a sample that always includes the certificates issued during faults", async () => {
    const h = new HistoryBuilder();
    h.fault("crash", 1_000, 2_000);
    for (let i = 0; i < 8; i++) issue(h, goodLeaf, nowMs + 60_000, [10 + i * 10, 15 + i * 10]);
    issue(h, strangerLeaf, nowMs + 60_000, [1_500, 1_600]); // during the fault: must be verified, and fails
    const v = await checkCertificates(h.build(), { verifiedMax: 3 });
    assert.equal(v.stats.verified, 3);
    assert.equal(v.stats.verifiedDuringFaults, 1);
    assert.match(String(v.stats.sampleRule), /every one overlapping a fault \(1\) and every 4th other by id \(2 of 8\)/);
    assert.equal(v.anomalies.length, 1);
  });
});
