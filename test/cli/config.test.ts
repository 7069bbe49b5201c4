import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, test } from "node:test";
import { ConfigError, parseServerConfig } from "../../src/cli/config.js";

const run = promisify(execFile);
const cairn = fileURLToPath(new URL("../../../bin/cairn", import.meta.url));
const base = ["--id", "n1", "--data", "/tmp/x", "--http", "127.0.0.1:8501", "--grpc", "127.0.0.1:8601", "--peer", "127.0.0.1:8701"];

void describe("server configuration", () => {
  void test("flags are read, and the advertised peer address comes from --initial-cluster", () => {
    const cfg = parseServerConfig([...base, "--initial-cluster", "n1=10.0.0.1:8701,n2=10.0.0.2:8701"], {});
    assert.equal(cfg.id, "n1");
    assert.equal(cfg.http.port, 8501);
    assert.equal(cfg.advertisePeer, "10.0.0.1:8701");
    assert.equal(cfg.initialCluster?.size, 2);
  });

  void test("environment variables fill in, and flags win over them", () => {
    const cfg = parseServerConfig(["--id", "n9"], {
      CAIRN_ID: "ignored", CAIRN_DATA: "/d", CAIRN_HTTP: "h:1", CAIRN_GRPC: "h:2", CAIRN_PEER: "h:3", CAIRN_JOIN: "http://h:1",
    });
    assert.equal(cfg.id, "n9");
    assert.equal(cfg.dataDir, "/d");
    assert.equal(cfg.join, "http://h:1");
  });

  void test("a JSON config file is the last source", () => {
    const file = JSON.stringify({ id: "f1", data: "/f", http: "h:1", grpc: "h:2", peer: "h:3", initialCluster: "f1=h:3", tickMs: 20 });
    const cfg = parseServerConfig(["--config", "c.json"], {}, () => file);
    assert.equal(cfg.id, "f1");
    assert.equal(cfg.tickMs, 20);
  });

  for (const [name, args, message] of [
    ["an unknown flag", [...base, "--bogus", "1"], /unknown flag --bogus/],
    ["a missing id", base.slice(2), /--id is required/],
    ["a bad port", [...base.slice(0, 4), "--http", "127.0.0.1:99999", ...base.slice(6)], /--http must be HOST:PORT/],
    ["both initial cluster and join", [...base, "--initial-cluster", "n1=h:1", "--join", "http://h:1"], /either --initial-cluster .* or --join/],
    ["an initial cluster without this node", [...base, "--initial-cluster", "n2=h:1"], /must include this node \(n1\)/],
    ["a duplicate member", [...base, "--initial-cluster", "n1=h:1,n1=h:2"], /names node n1 twice/],
    ["a bad join address", [...base, "--join", "h:1"], /--join must be an HTTP address/],
    ["an invalid id", ["--id", "-bad", ...base.slice(2)], /--id "-bad" must be/],
    ["an invalid trust domain", [...base, "--trust-domain", "Bad Domain"], /--trust-domain: trust domain "Bad Domain" must be/],
    ["an unknown CA key type", [...base, "--ca-key-type", "dsa"], /--ca-key-type must be one of ec-p256, rsa-2048, ed25519/],
    ["a leaf TTL maximum under the default TTL", [...base, "--ca-leaf-ttl-max", "10m"], /--ca-leaf-ttl-max must be a duration of at least 1h/],
    ["a leader wait that is not a duration", [...base, "--leader-wait", "7"], /--leader-wait must be a duration from 1ms to 10m0s like "7s" or "1500ms", not "7"/],
    ["a leader wait of zero", [...base, "--leader-wait", "0s"], /--leader-wait must be a duration from 1ms/],
    ["a leader wait past ten minutes", [...base, "--leader-wait", "11m"], /--leader-wait must be a duration from 1ms to 10m0s/],
    ["a negative catch-up margin", [...base, "--catch-up-entries", "-1"], /--catch-up-entries must be a whole number \(0 or more\), not "-1"/],
    ["a catch-up margin that is not a number", [...base, "--catch-up-entries", "lots"], /--catch-up-entries must be a whole number/],
    ["a peer-via entry without an id", [...base, "--peer-via", "127.0.0.1:9000"], /--peer-via entry "127.0.0.1:9000" must be ID=HOST:PORT/],
    ["a peer-via entry with a bad port", [...base, "--peer-via", "n2=127.0.0.1:x"], /--peer-via entry for n2 must be HOST:PORT/],
    ["a peer-via naming a member twice", [...base, "--peer-via", "n2=h:1,n2=h:2"], /--peer-via names node n2 twice/],
    ["a peer-via naming this node", [...base, "--peer-via", "n1=h:1"], /--peer-via names this node \(n1\); a node never dials itself/],
    ["a workload identity of another trust domain", [...base, "--workload-identities", "spiffe://other/ns/a/svc/b"], /--workload-identities: "spiffe:\/\/other\/ns\/a\/svc\/b": .*not in trust domain cairn.local/],
    ["a workload rule without a selector", [...base, "--workload-attest", "spiffe://cairn.local/ns/a/svc/b"], /--workload-attest: rule "spiffe:\/\/cairn.local\/ns\/a\/svc\/b" must be uid:<number>=<SPIFFE ID> or gid:<number>=<SPIFFE ID>/],
    ["a workload rule selecting by user name", [...base, "--workload-attest", "uid:web=spiffe://cairn.local/ns/a/svc/b"], /--workload-attest: rule "uid:web=.*" must be uid:<number>=/],
    ["a workload rule with an unknown selector", [...base, "--workload-attest", "pid:7=spiffe://cairn.local/ns/a/svc/b"], /--workload-attest: rule "pid:7=.*" must be uid:<number>=/],
    ["a workload rule past the largest uid", [...base, "--workload-attest", "uid:4294967295=spiffe://cairn.local/ns/a/svc/b"], /uid 4294967295 is past the largest uid, 4294967294/],
    ["a workload rule of another trust domain", [...base, "--workload-attest", "uid:1000=spiffe://other/ns/a/svc/b"], /--workload-attest: rule "uid:1000=spiffe:\/\/other\/ns\/a\/svc\/b": .*not in trust domain cairn.local/],
    ["a workload rule with no SPIFFE ID", [...base, "--workload-attest", "uid:1000="], /--workload-attest: rule "uid:1000=": .*is not a SPIFFE ID/],
    ["a workload rule given twice", [...base, "--workload-attest", "gid:5=spiffe://cairn.local/ns/a/svc/b,gid:5=spiffe://cairn.local/ns/a/svc/b"], /rule "gid:5=.*" is given twice/],
    ["a socket mode that is not octal", [...base, "--workload-socket-mode", "rwx"], /--workload-socket-mode must be octal permission bits like 0770 or 0777, not "rwx"/],
    ["a socket mode with a digit past 7", [...base, "--workload-socket-mode", "0778"], /--workload-socket-mode must be octal/],
  ] as const) {
    void test(`${name} is refused with a message that says what is wrong`, () => {
      assert.throws(() => parseServerConfig(args, {}), (err: unknown) => err instanceof ConfigError && message.test(err.message));
    });
  }

  void test("--leader-wait is a Go duration, from the flag or CAIRN_LEADER_WAIT, in whole milliseconds; unset leaves the driver's 7s", () => {
    assert.equal(parseServerConfig(base, {}).leaderWaitMs, undefined);
    assert.equal(parseServerConfig([...base, "--leader-wait", "15s"], {}).leaderWaitMs, 15_000);
    assert.equal(parseServerConfig(base, { CAIRN_LEADER_WAIT: "1m30s" }).leaderWaitMs, 90_000);
    assert.equal(parseServerConfig([...base, "--leader-wait=250ms"], { CAIRN_LEADER_WAIT: "1m" }).leaderWaitMs, 250, "the flag wins");
    assert.equal(parseServerConfig([...base, "--leader-wait", "1.5ms"], {}).leaderWaitMs, 2);
  });

  void test("--peer-via maps members to the address to dial them at, from the flag or CAIRN_PEER_VIA; the advertised address is untouched", () => {
    assert.equal(parseServerConfig(base, {}).peerVia.size, 0);
    const cfg = parseServerConfig([...base, "--initial-cluster", "n1=10.0.0.1:8701,n2=10.0.0.2:8701", "--peer-via", "n2=127.0.0.1:9002, n3=[::1]:9003"], {});
    assert.deepEqual([...cfg.peerVia], [["n2", "127.0.0.1:9002"], ["n3", "[::1]:9003"]]);
    assert.equal(cfg.advertisePeer, "10.0.0.1:8701");
    assert.equal(parseServerConfig(base, { CAIRN_PEER_VIA: "n2=h:1" }).peerVia.get("n2"), "h:1");
  });

  void test("--catch-up-entries takes 0 (keep no margin) or more, from the flag or CAIRN_CATCH_UP_ENTRIES; unset leaves the core's 5000", () => {
    assert.equal(parseServerConfig(base, {}).catchUpEntries, undefined);
    assert.equal(parseServerConfig([...base, "--catch-up-entries", "0"], {}).catchUpEntries, 0);
    assert.equal(parseServerConfig(base, { CAIRN_CATCH_UP_ENTRIES: "20000" }).catchUpEntries, 20_000);
  });

  void test("--metrics-open is a switch, off by default, from the flag or CAIRN_METRICS_OPEN", () => {
    assert.equal(parseServerConfig(base, {}).metricsOpen, false);
    assert.equal(parseServerConfig([...base, "--metrics-open"], {}).metricsOpen, true);
    assert.equal(parseServerConfig(base, { CAIRN_METRICS_OPEN: "true" }).metricsOpen, true);
    assert.equal(parseServerConfig([...base, "--metrics-open=false"], { CAIRN_METRICS_OPEN: "1" }).metricsOpen, false, "the flag wins");
    assert.throws(() => parseServerConfig(base, { CAIRN_METRICS_OPEN: "yes" }), (err: unknown) => err instanceof ConfigError && /--metrics-open .*is a switch/.test(err.message));
  });

  void test("CA settings: defaults, and the KEK from CAIRN_CA_KEK or a file but never both", () => {
    const plain = parseServerConfig(base, {});
    assert.deepEqual({ ...plain.ca, kek: plain.ca.kek === undefined }, {
      trustDomain: "cairn.local", keyType: "ec-p256", leafTtlMaxMs: 86_400_000, kek: true, previousKeks: [], workloadSocket: undefined, workloadSocketMode: 0o770, workloadRules: [],
    });
    const fromEnv = parseServerConfig(base, { CAIRN_CA_KEK: "c2VjcmV0" });
    assert.equal(fromEnv.ca.kek?.source, "CAIRN_CA_KEK");
    const fromFile = parseServerConfig([...base, "--ca-kek-file", "/k"], {}, undefined, (p) => new TextEncoder().encode(`key at ${p}`));
    assert.equal(new TextDecoder().decode(fromFile.ca.kek?.raw), "key at /k");
    assert.throws(() => parseServerConfig([...base, "--ca-kek-file", "/k"], { CAIRN_CA_KEK: "x" }), /either in CAIRN_CA_KEK or with --ca-kek-file, not both/);
  });

  void test("previous KEKs come from --ca-kek-previous-file and/or CAIRN_CA_KEK_PREVIOUS, and only beside a current KEK", () => {
    const read = (p: string): Uint8Array => new TextEncoder().encode(`keys at ${p}`);
    const both = parseServerConfig([...base, "--ca-kek-previous-file", "/old"], { CAIRN_CA_KEK: "c2VjcmV0", CAIRN_CA_KEK_PREVIOUS: "b2xk" }, undefined, read);
    assert.deepEqual(both.ca.previousKeks.map((k) => [k.source, new TextDecoder().decode(k.raw)]), [["--ca-kek-previous-file /old", "keys at /old"], ["CAIRN_CA_KEK_PREVIOUS", "b2xk"]]);
    const fromEnvFile = parseServerConfig(base, { CAIRN_CA_KEK: "c2VjcmV0", CAIRN_CA_KEK_PREVIOUS_FILE: "/env-old" }, undefined, read);
    assert.equal(fromEnvFile.ca.previousKeks[0]?.source, "--ca-kek-previous-file /env-old");
    assert.throws(() => parseServerConfig(base, { CAIRN_CA_KEK_PREVIOUS: "b2xk" }), /previous KEKs .* without a current one: give the new KEK with CAIRN_CA_KEK or --ca-kek-file/);
    assert.throws(
      () => parseServerConfig([...base, "--ca-kek-previous-file", "/gone"], { CAIRN_CA_KEK: "c2VjcmV0" }, undefined, () => { throw new Error("ENOENT"); }),
      /cannot read --ca-kek-previous-file \/gone: ENOENT/,
    );
  });

  void test("Workload API rules: --workload-identities grants every caller, --workload-attest grants by uid or gid, in the order given", () => {
    const b = "spiffe://cairn.local/ns/a/svc/b";
    const c = "spiffe://cairn.local/ns/a/svc/c";
    const workload = parseServerConfig([...base, "--workload-socket", "/run/w.sock", "--workload-identities", `${b}, ${c}`, "--workload-attest", `uid:1000=${b}, gid:0=${c},uid:1000=${c}`], {});
    assert.deepEqual(workload.ca.workloadRules, [
      { selector: { kind: "any" }, spiffeId: b },
      { selector: { kind: "any" }, spiffeId: c },
      { selector: { kind: "uid", uid: 1000 }, spiffeId: b },
      { selector: { kind: "gid", gid: 0 }, spiffeId: c },
      { selector: { kind: "uid", uid: 1000 }, spiffeId: c },
    ]);
    assert.deepEqual(parseServerConfig(base, { CAIRN_WORKLOAD_ATTEST: `gid:50=${b}` }).ca.workloadRules, [{ selector: { kind: "gid", gid: 50 }, spiffeId: b }]);
    assert.equal(parseServerConfig([...base, "--workload-socket-mode", "0777"], {}).ca.workloadSocketMode, 0o777);
    assert.equal(parseServerConfig([...base, "--workload-socket-mode", "660"], {}).ca.workloadSocketMode, 0o660);
    assert.equal(parseServerConfig(base, { CAIRN_WORKLOAD_SOCKET_MODE: "0o700" }).ca.workloadSocketMode, 0o700);
  });

  void test("--tls auto verifies clients against the cluster's own trust bundle unless --tls-client-ca-file names a CA", () => {
    assert.deepEqual(parseServerConfig([...base, "--tls", "auto"], {}).publicTls, { mode: "auto", verifyClient: false, clientCaFile: undefined });
    assert.deepEqual(parseServerConfig([...base, "--tls", "auto", "--tls-verify-client"], {}).publicTls, { mode: "auto", verifyClient: true, clientCaFile: undefined });
    assert.deepEqual(parseServerConfig([...base, "--tls", "auto", "--tls-verify-client", "--tls-client-ca-file", "ca.pem"], {}).publicTls, { mode: "auto", verifyClient: true, clientCaFile: "ca.pem" });
    assert.throws(() => parseServerConfig([...base, "--tls", "auto", "--tls-client-ca-file", "ca.pem"], {}), /--tls-client-ca-file is given without --tls-verify-client/);
    assert.throws(() => parseServerConfig([...base, "--tls-verify-client"], {}), /--tls-verify-client needs --tls-client-ca-file/);
    assert.throws(() => parseServerConfig([...base, "--tls", "auto", "--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"], {}), /do not go together/);
  });

  void test("the executable exits 2 with a usage error for bad flags", async () => {
    await assert.rejects(run(cairn, ["server", "--id", "n1", "--bogus"]), (err: { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr ?? "", /unknown flag --bogus/);
      return true;
    });
  });
});
