// The SDS module on a real one-node Raft cluster in this process (real LevelDB, real CA and leaf
// cache), with an injected clock: what the server test cannot steer, a leaf falling due an hour
// from now. Proves that a leaf's renewal is pushed when it falls due, that the watch ends once
// nobody reads the leaf any more, that a renewal by another reader of the cache and a root
// rotation reach the subscribers, and that close() leaves no timer behind.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { pino } from "pino";
import { Permissions, parseRules } from "../../src/acl/rules.js";
import { CertificateAuthority, caDefaults } from "../../src/ca/authority.js";
import { openAuthorizer } from "../../src/ca/authorizer.js";
import { LeafCache } from "../../src/ca/leaves.js";
import { KeySealer } from "../../src/ca/seal.js";
import { CaState } from "../../src/ca/state.js";
import type { EncodedResource, ResourceKey } from "../../src/api/xds/cache.js";
import { loadXdsProtos } from "../../src/api/xds/protos.js";
import { SECRET_TYPE } from "../../src/api/xds/resources.js";
import { RateLimiter, rateLimitDefaults } from "../../src/api/rate_limit.js";
import { SIGNS_PER_TURN_MAX, SecretsModule, TRUST_BUNDLE_SECRET_NAME, type SecretsClock } from "../../src/api/xds/secrets.js";
import { peerAddressOf, type StreamIdentity } from "../../src/api/xds/session.js";
import type { ResourceSource } from "../../src/api/xds/subscription.js";
import { RaftDriver } from "../../src/raft/node/driver.js";
import { waitFor } from "../support/cluster.js";
import { type OneNodeCa, startOneNodeCa } from "../support/one_node_ca.js";

const logger = pino({ level: "silent" });

/** Timers that fire only when a test says so, on a clock it moves. */
class ManualClock implements SecretsClock {
  private offsetMs = 0;
  private readonly timers = new Set<{ readonly atMs: number; readonly callback: () => void }>();

  nowMs(): number {
    return Date.now() + this.offsetMs;
  }

  schedule(callback: () => void, delayMs: number): () => void {
    const timer = { atMs: this.nowMs() + delayMs, callback };
    this.timers.add(timer);
    return () => this.timers.delete(timer);
  }

  /** When each armed timer is due, in ms from now, soonest first. */
  dueInMs(): number[] {
    return [...this.timers].map((t) => t.atMs - this.nowMs()).sort((a, b) => a - b);
  }

  /** Moves the clock to the soonest timer and fires every timer due by then. */
  fireNext(): void {
    const soonest = Math.min(...[...this.timers].map((t) => t.atMs));
    assert.ok(Number.isFinite(soonest), "a timer is armed");
    this.offsetMs += Math.max(0, soonest - this.nowMs());
    for (const t of [...this.timers]) {
      if (t.atMs > this.nowMs()) continue;
      this.timers.delete(t);
      t.callback();
    }
  }

  advance(ms: number): void {
    this.offsetMs += ms;
  }
}

void describe("the SDS module over a real CA and leaf cache", () => {
  let node: OneNodeCa;
  let driver: RaftDriver;
  let state: CaState;
  let ca: CertificateAuthority;
  let clock: ManualClock;
  let leaves: LeafCache;
  let secrets: SecretsModule;
  const changes: ResourceKey[][] = [];
  const changedNames = (): string[] => changes.splice(0).flat().map((k) => `${k.kind}/${k.name}`).sort();

  const stream = (rules: string | undefined, presentedToken?: string, peerAddress = "127.0.0.1"): StreamIdentity => ({
    client: { id: "envoy-test", cluster: "web", userAgent: "test", metadata: new Map() },
    visible: undefined,
    permissions: rules === undefined ? Permissions.allowAll() : Permissions.of([parseRules(rules)], "deny"),
    presentedToken,
    peerAddress,
  });
  const sourceOf = (identity: StreamIdentity): ResourceSource<EncodedResource> => {
    const source = secrets.sourceFor(SECRET_TYPE, identity, undefined);
    assert.ok(source !== undefined, "the module serves secrets");
    return source;
  };

  before(async () => {
    node = await startOneNodeCa("cairn-sds-module-", logger);
    ({ driver, state } = node);
    clock = new ManualClock();
    const now = (): number => clock.nowMs();
    ca = new CertificateAuthority({ driver, state, sealer: new KeySealer(undefined), authorizer: openAuthorizer, settings: { ...caDefaults }, logger, now });
    ca.start();
    await waitFor(() => Promise.resolve(state.activeRoot === undefined ? undefined : true), 10_000, () => "the leader did not create the CA");
    // Renewal at the middle of Consul's window, 75% of the leaf's life: 45 minutes of a 1-hour leaf.
    leaves = new LeafCache(ca, "dc1", { now, random: () => 0.5 });
    secrets = new SecretsModule({ authority: ca, leaves, logger, clock });
    secrets.onChange((c) => changes.push([...c]));
    secrets.start(await loadXdsProtos());
  });

  after(async () => {
    secrets?.close();
    ca?.stop();
    await node?.close();
  });

  void test("a leaf is pushed again when it falls due, and renewed by the next read; once nobody reads it the watch ends", () => {
    const source = sourceOf(stream(undefined));
    const first = source.get("web");
    assert.ok(first !== undefined);
    assert.equal(source.get("web"), first, "encoded once, shared by every read");
    assert.equal(secrets.watchedCount, 1);
    const [dueMs] = clock.dueInMs();
    const leafLifeMs = caDefaults.leafTtlDefaultMs;
    assert.ok(Math.abs((dueMs ?? 0) - 0.75 * leafLifeMs) < 1000, `the renewal timer is due at 75% of the leaf's life, not in ${dueMs} ms`);
    changedNames();

    clock.fireNext();
    assert.deepEqual(changedNames(), ["secret/web"], "its subscribers are told when the leaf falls due");
    assert.equal(secrets.watchedCount, 0);
    const renewed = source.get("web");
    assert.ok(renewed !== undefined);
    assert.notEqual(renewed.version, first.version, "the next read renews it");
    // The timer already told every subscriber: the renewal its first reader caused needs no second word.
    assert.deepEqual(changedNames(), []);
    assert.equal(secrets.watchedCount, 1, "and watched again");

    clock.fireNext();
    assert.deepEqual(changedNames(), ["secret/web"]);
    assert.equal(secrets.watchedCount, 0, "nobody read it: no more timers for it");
    assert.deepEqual(clock.dueInMs(), []);
  });

  void test("a name the token may not hold is absent and not pending; the bundle is for every stream", () => {
    const source = sourceOf(stream('{"service":{"web":{"policy":"write"},"db":{"policy":"read"}}}'));
    assert.equal(source.get("db"), undefined);
    assert.equal(source.pending("db"), false);
    assert.equal(secrets.watchedCount, 0, "nothing signed for it");
    assert.ok(source.get("web") !== undefined);
    const bundle = sourceOf(stream('{"service":{"db":{"policy":"read"}}}')).get(TRUST_BUNDLE_SECRET_NAME);
    assert.ok(bundle !== undefined);
    assert.equal(bundle.name, TRUST_BUNDLE_SECRET_NAME);
    assert.equal(source.get("not a service name"), undefined, "a name that is neither the bundle nor a service is left to the sources inside");
  });

  void test("a renewal by another reader of the cache (Consul's leaf route) reaches the watched service's subscribers", () => {
    const source = sourceOf(stream(undefined));
    const held = source.get("web");
    changedNames();
    clock.advance(caDefaults.leafTtlDefaultMs);
    leaves.get("web", { token: undefined, origin: "test: Consul's leaf route" });
    assert.deepEqual(changedNames(), ["secret/web"]);
    assert.notEqual(source.get("web")?.version, held?.version);
  });

  void test("a root rotation marks the bundle and every watched leaf; the bundle then holds both roots", async () => {
    const source = sourceOf(stream(undefined));
    const leafBefore = source.get("web");
    const bundleBefore = source.get(TRUST_BUNDLE_SECRET_NAME);
    changedNames();
    await ca.rotate();
    assert.deepEqual(changedNames(), [`secret/${TRUST_BUNDLE_SECRET_NAME}`, "secret/web"]);
    const bundle = source.get(TRUST_BUNDLE_SECRET_NAME);
    assert.notEqual(bundle?.version, bundleBefore?.version);
    assert.equal(state.roots.length, 2);
    assert.notEqual(source.get("web")?.version, leafBefore?.version, "the leaf is renewed under the new root");
  });

  void test("at most SIGNS_PER_TURN_MAX new leaves are signed per turn of the event loop; the rest are pending, then announced and signed on the next turn", async () => {
    await new Promise((resolve) => setImmediate(resolve));
    const source = sourceOf(stream(undefined));
    const names = Array.from({ length: SIGNS_PER_TURN_MAX + 3 }, (_, i) => `many-${i}`);
    changedNames();
    const served = names.filter((n) => source.get(n) !== undefined);
    assert.deepEqual(served, names.slice(0, SIGNS_PER_TURN_MAX));
    const later = names.slice(SIGNS_PER_TURN_MAX);
    assert.deepEqual(later.map((n) => source.pending(n)), [true, true, true], "put off, not absent");
    assert.ok(source.get(names[0]) !== undefined, "a leaf already signed costs nothing of the budget");
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(changedNames(), later.map((n) => `secret/${n}`).sort(), "the names put off are announced on the next turn");
    assert.ok(later.every((n) => source.get(n) !== undefined && !source.pending(n)));
  });

  void test("a leaf signed for a stream is charged to its token's and address's sign rate limit; past it the secret is pending until the limit lets it through", async () => {
    await new Promise((resolve) => setImmediate(resolve));
    // Its own cache and module, so that every name below needs a new signature.
    const limited = new SecretsModule({
      authority: ca, leaves: new LeafCache(ca, "dc1", { now: () => clock.nowMs(), random: () => 0.5 }), logger, clock,
      rateLimiter: new RateLimiter({ ...rateLimitDefaults, sign: { perToken: { ratePerSecond: 1, burst: 2 }, perAddress: { ratePerSecond: 1000, burst: 1000 } } }, () => clock.nowMs()),
    });
    const announced: string[] = [];
    limited.onChange((c) => announced.push(...c.map((k) => k.name)));
    limited.start(await loadXdsProtos());
    try {
      const source = limited.sourceFor(SECRET_TYPE, stream(undefined, "token-a"), undefined);
      assert.ok(source !== undefined);
      assert.ok(source.get("limited-1") !== undefined && source.get("limited-2") !== undefined, "the burst signs two");
      assert.equal(source.get("limited-3"), undefined, "the third is past the token's limit");
      assert.equal(source.pending("limited-3"), true, "and pending, not absent");
      assert.ok(source.get("limited-1") !== undefined, "a leaf already signed is not charged again");
      const other = limited.sourceFor(SECRET_TYPE, stream(undefined, "token-b"), undefined);
      assert.ok(other?.get("limited-4") !== undefined, "another token has its own budget");
      // The retry is due when the bucket has a token again (1 a second): then it is announced and signed.
      assert.ok(clock.dueInMs().some((ms) => ms > 0 && ms <= 1000), `a retry within the limit's second: ${JSON.stringify(clock.dueInMs())}`);
      while (!announced.includes("limited-3")) clock.fireNext();
      assert.ok(source.get("limited-3") !== undefined && !source.pending("limited-3"));
    } finally {
      limited.close();
    }
  });

  void test("a stream's peer address, for its address's bucket, is the IP of its gRPC peer", () => {
    assert.equal(peerAddressOf("ipv4:127.0.0.1:50123"), "127.0.0.1");
    assert.equal(peerAddressOf("ipv6:[::1]:50123"), "::1");
    assert.equal(peerAddressOf("10.0.0.7:443"), "10.0.0.7");
    assert.equal(peerAddressOf("::1"), "::1");
  });

  void test("close() cancels every timer and stops listening to the CA", async () => {
    assert.ok(clock.dueInMs().length > 0, "a leaf is watched");
    secrets.close();
    assert.deepEqual(clock.dueInMs(), []);
    changedNames();
    await ca.rotate();
    assert.deepEqual(changedNames(), []);
  });
});
