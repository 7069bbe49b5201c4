// The authority on a real one-node Raft cluster in this process (real LevelDB, real peer
// transport), with an injected clock and authorizer: what the HTTP tests cannot steer.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { pino } from "pino";
import { waitFor } from "../support/cluster.js";
import { type OneNodeCa, startOneNodeCa } from "../support/one_node_ca.js";
import { CaForbiddenError, CaInputError, CaUnavailableError, CertificateAuthority, TRUSTED_ROOTS_MAX, caDefaults } from "../../src/ca/authority.js";
import type { Authorizer } from "../../src/ca/authorizer.js";
import { CsrIssuePool, inlineIssuer } from "../../src/ca/csr_pool.js";
import { LEAF_DNS_NAMES_MAX } from "../../src/ca/leaf.js";
import { KEK_BYTES, KeySealer } from "../../src/ca/seal.js";
import { CaState } from "../../src/ca/state.js";
import { RaftDriver } from "../../src/raft/node/driver.js";
import { TooManyWatchersError } from "../../src/common/errors.js";

const logger = pino({ level: "silent" });

function csr(uri: string, dnsNames: readonly string[] = []): string {
  const sans = [`URI:${uri}`, ...dnsNames.map((d) => `DNS:${d}`)].join(",");
  const r = spawnSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "/dev/null", "-subj", "/", "-addext", `subjectAltName=${sans}`], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** Denies one identity, to prove every issuing path asks the authorizer. */
const denySecret: Authorizer = {
  mayHold: (_caller, id) => !id.uri.endsWith("/svc/secret"),
  description: "test: everything but svc/secret",
};

void describe("the certificate authority on a one-node cluster", () => {
  let node: OneNodeCa;
  let driver: RaftDriver;
  let ca: CertificateAuthority;
  let state: CaState;
  const kek = randomBytes(KEK_BYTES);
  const sealer = new KeySealer(kek);
  let clockOffsetMs = 0;
  const now = (): number => Date.now() + clockOffsetMs;

  before(async () => {
    node = await startOneNodeCa("cairn-authority-", logger);
    ({ driver, state } = node);
    ca = new CertificateAuthority({ driver, state, sealer, authorizer: denySecret, settings: { ...caDefaults }, logger, now });
    ca.start();
    await waitFor(() => Promise.resolve(state.activeRoot === undefined ? undefined : true), 10_000, () => "the leader did not create the CA");
  });

  after(async () => {
    ca.stop();
    await node.close();
  });

  void test("the authorizer decides: an identity it denies gets CaForbiddenError (HTTP 403)", async () => {
    const caller = { token: undefined, origin: "test" };
    assert.equal((await ca.signWith(inlineIssuer, { csr: csr("spiffe://cairn.local/ns/default/svc/web") }, caller)).spiffeId, "spiffe://cairn.local/ns/default/svc/web");
    await assert.rejects(ca.signWith(inlineIssuer, { csr: csr("spiffe://cairn.local/ns/default/svc/secret") }, caller), CaForbiddenError);
  });

  void test("a CSR asking for SANs no leaf may carry is the caller's 400 naming the csr, on the event loop and on a worker", async () => {
    const caller = { token: undefined, origin: "test" };
    const pool = new CsrIssuePool({ workers: 1, inflightMax: 8 }, logger);
    try {
      const web = "spiffe://cairn.local/ns/default/svc/web";
      const tooMany = csr(web, Array.from({ length: LEAF_DNS_NAMES_MAX + 1 }, (_, i) => `n${i}.web.internal`));
      const notADnsName = csr(web, ["-web.internal"]);
      for (const issuer of [inlineIssuer, pool]) {
        await assert.rejects(ca.signWith(issuer, { csr: tooMany }, caller), (err: unknown) => err instanceof CaInputError && err.field === "csr" && /at most 32 DNS names/.test(err.message));
        await assert.rejects(ca.signWith(issuer, { csr: notADnsName }, caller), (err: unknown) => err instanceof CaInputError && err.field === "csr" && /is not a DNS name/.test(err.message));
        const issued = await ca.signWith(issuer, { csr: csr(web, ["web.internal"]) }, caller);
        assert.equal(issued.spiffeId, web);
      }
    } finally {
      await pool.close();
    }
  });

  void test("a node given another KEK cannot sign, and says why", async () => {
    const stranger = new CertificateAuthority({ driver, state, sealer: new KeySealer(randomBytes(KEK_BYTES)), authorizer: denySecret, settings: { ...caDefaults }, logger });
    await assert.rejects(
      stranger.signWith(inlineIssuer, { csr: csr("spiffe://cairn.local/ns/default/svc/web") }, { token: undefined, origin: "test" }),
      (err: Error) => err instanceof CaUnavailableError && /every node needs the same KEK/.test(err.message),
    );
  });

  void test("roots whose keys are sealed under a KEK this node lacks are named a restore problem before any restore; under a previous KEK they are not", () => {
    const roots = state.roots;
    assert.equal(ca.restoreProblem(roots), undefined);
    const stranger = new CertificateAuthority({ driver, state, sealer: new KeySealer(randomBytes(KEK_BYTES)), authorizer: denySecret, settings: { ...caDefaults }, logger });
    assert.match(stranger.restoreProblem(roots) ?? "", new RegExp(`sealed under KEK ${sealer.kekId ?? "?"}, which this node does not hold \\(it holds \\S+\\).*give every node that KEK`));
    const rotating = new CertificateAuthority({ driver, state, sealer: new KeySealer(randomBytes(KEK_BYTES), [kek]), authorizer: denySecret, settings: { ...caDefaults }, logger });
    assert.equal(rotating.restoreProblem(roots), undefined, "a previous KEK unseals, so the restore may go ahead");
  });

  void test("a replaced root stays in the bundle until its last leaf could have expired, then the leader retires it", async () => {
    const first = state.activeRoot!.id;
    const rotated = await ca.rotate();
    assert.notEqual(rotated.id, first);
    const old = state.roots.find((r) => r.id === first)!;
    assert.equal(old.active, false);
    const retireAfterMs = old.retireAfterMs!;
    assert.ok(retireAfterMs - now() >= caDefaults.leafTtlMaxMs, "kept at least as long as the longest leaf");
    // A second of maintenance passes with the clock before the deadline: the old root stays.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(state.roots.length, 2);
    clockOffsetMs = retireAfterMs - Date.now() + 1;
    await waitFor(() => Promise.resolve(state.roots.length === 1 ? true : undefined), 5_000, () => "the old root was not retired");
    assert.equal(state.roots[0].id, rotated.id);
    clockOffsetMs = 0;
  });

  void test("blocking reads of the roots are bounded; a freed place can be taken again", async () => {
    const bounded = new CertificateAuthority({ driver, state, sealer, authorizer: denySecret, settings: { ...caDefaults }, logger, blockedWaitsMax: 2 });
    const first = new AbortController();
    const waits = [bounded.waitForChange(state.revision, 60_000, first.signal), bounded.waitForChange(state.revision, 60_000, new AbortController().signal)];
    await assert.rejects(bounded.waitForChange(state.revision, 60_000), TooManyWatchersError);
    first.abort();
    await waits[0];
    const again = new AbortController();
    const third = bounded.waitForChange(state.revision, 60_000, again.signal);
    bounded.stop();
    await Promise.all([waits[1], third]);
  });

  void test("rotating in a loop stops at the bundle's bound, with when the next replaced root retires", async () => {
    while (state.roots.length < TRUSTED_ROOTS_MAX) await ca.rotate();
    await assert.rejects(ca.rotate(), (err: Error) => err instanceof CaInputError && /already holds 16 roots, the most it may \(16\).*retires at 20\d\d-/.test(err.message));
    assert.equal(state.roots.length, TRUSTED_ROOTS_MAX, "the refused rotation changed nothing");
    // Retire every replaced root: rotating works again.
    clockOffsetMs = Math.max(...state.roots.map((r) => r.retireAfterMs ?? 0)) - Date.now() + 1;
    await waitFor(() => Promise.resolve(state.roots.length === 1 ? true : undefined), 5_000, () => `${state.roots.length} roots are left`);
    clockOffsetMs = 0;
    await ca.rotate();
  });

  void test("two rotations racing from the same root: exactly one wins", async () => {
    const results = await Promise.allSettled([ca.rotate(), ca.rotate()]);
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    assert.equal(state.roots.filter((r) => r.active).length, 1);
  });
});
