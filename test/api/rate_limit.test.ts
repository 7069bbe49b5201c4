// The rate limiter's arithmetic on an injected clock: bursts, refill, Retry-After, per token and
// per address independently, bounded tables; and the flags that set it. The same limits on a
// real server are in rate_limit_server.test.ts.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BucketTable, RateLimiter, type RateLimitSettings, msUntilToken, refill, resolveRateLimits, retryAfterSeconds, tokenKey } from "../../src/api/rate_limit.js";
import { ConfigError, parseBucketLimit } from "../../src/cli/config.js";
import { parseCsr } from "../../src/ca/csr.js";
import { csrKeys, csrPem } from "../support/fast_csr.js";

function settings(over: Partial<RateLimitSettings> = {}): RateLimitSettings {
  return {
    write: { perToken: { ratePerSecond: 2, burst: 3 }, perAddress: { ratePerSecond: 10, burst: 5 } },
    sign: { perToken: { ratePerSecond: 0.1, burst: 1 }, perAddress: { ratePerSecond: 100, burst: 100 } },
    bucketsMax: 1000,
    ...over,
  };
}

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => { t += ms; } };
}

void describe("token buckets", () => {
  test("a full bucket lets a burst through, then refills at the rate up to the burst and no further", () => {
    const limit = { ratePerSecond: 2, burst: 3 };
    const bucket = { tokens: 0, updatedMs: 0, promisedUntilMs: 0 };
    refill(bucket, limit, 250);
    assert.equal(bucket.tokens, 0.5);
    assert.equal(msUntilToken(bucket, limit), 250);
    refill(bucket, limit, 10_000);
    assert.equal(bucket.tokens, 3);
    assert.equal(msUntilToken(bucket, limit), 0);
  });

  test("a clock that steps back adds nothing and does not move the bucket's time back", () => {
    const limit = { ratePerSecond: 1, burst: 10 };
    const bucket = { tokens: 1, updatedMs: 5000, promisedUntilMs: 0 };
    refill(bucket, limit, 1000);
    assert.deepEqual(bucket, { tokens: 1, updatedMs: 5000, promisedUntilMs: 0 });
  });

  test("Retry-After rounds the wait up to whole seconds, at least 1", () => {
    assert.equal(retryAfterSeconds(0), 1);
    assert.equal(retryAfterSeconds(1), 1);
    assert.equal(retryAfterSeconds(1000), 1);
    assert.equal(retryAfterSeconds(1001), 2);
    assert.equal(retryAfterSeconds(9_500), 10);
  });

  test("a table holds at most bucketsMax buckets and drops the least recently used", () => {
    const table = new BucketTable({ ratePerSecond: 1, burst: 1 }, 3);
    for (const k of ["a", "b", "c"]) table.touch(k, 0).tokens = 0;
    table.touch("a", 0); // a is now the most recently used
    table.touch("d", 0);
    assert.equal(table.size, 3);
    assert.equal(table.touch("a", 0).tokens, 0, "a was kept, still empty");
    assert.equal(table.touch("b", 0).tokens, 1, "b was dropped and comes back full");
  });
});

void describe("the rate limiter", () => {
  test("a token's burst, then 429 naming the token limit with the wait to its next request", () => {
    const c = clock();
    const limiter = new RateLimiter(settings(), c.now);
    for (let i = 0; i < 3; i++) assert.equal(limiter.admit("write", "secret-a", "10.0.0.1").admitted, true);
    const refused = limiter.admit("write", "secret-a", "10.0.0.1");
    assert.equal(refused.admitted, false);
    assert.ok(!refused.admitted);
    assert.equal(refused.limit, "token");
    assert.equal(refused.retryAfterSeconds, 1); // 2/s: the next token in 500 ms
    c.advance(499);
    assert.equal(limiter.admit("write", "secret-a", "10.0.0.1").admitted, false);
    c.advance(1);
    assert.equal(limiter.admit("write", "secret-a", "10.0.0.1").admitted, true, "recovers after the wait it named");
  });

  test("a herd of refused requests is promised slots one token apart, so honouring Retry-After spreads it", () => {
    const c = clock();
    const limiter = new RateLimiter(settings({ sign: { perToken: { ratePerSecond: 1, burst: 1 }, perAddress: { ratePerSecond: 2, burst: 2 } } }), c.now);
    for (let i = 0; i < 2; i++) assert.equal(limiter.admit("sign", undefined, "10.0.0.9").admitted, true);
    const waits = Array.from({ length: 6 }, () => {
      const a = limiter.admit("sign", undefined, "10.0.0.9");
      assert.ok(!a.admitted);
      return a.retryAfterSeconds;
    });
    // 2/s: slots at 0.5, 1.0, 1.5, 2.0, 2.5, 3.0 s, rounded up to whole seconds.
    assert.deepEqual(waits, [1, 1, 2, 2, 3, 3]);
    c.advance(3000);
    const fresh = limiter.admit("sign", undefined, "10.0.0.9");
    assert.equal(fresh.admitted, true, "promises are not charged: the tokens accrued are there for whoever comes");
  });

  test("a slow rate names a long Retry-After", () => {
    const c = clock();
    const limiter = new RateLimiter(settings(), c.now);
    assert.equal(limiter.admit("sign", "t", "10.0.0.1").admitted, true);
    c.advance(2500);
    const refused = limiter.admit("sign", "t", "10.0.0.1");
    assert.ok(!refused.admitted);
    assert.equal(refused.retryAfterSeconds, 8); // 0.1/s: 10 s per token, 2.5 s of it gone
  });

  test("tokens are limited independently, and all of an address's requests share its bucket", () => {
    const c = clock();
    const limiter = new RateLimiter(settings(), c.now);
    for (let i = 0; i < 3; i++) assert.equal(limiter.admit("write", "a", "10.0.0.1").admitted, true);
    assert.equal(limiter.admit("write", "a", "10.0.0.1").admitted, false);
    // Token b has its own bucket, but the address has only 2 of its 5 left.
    assert.equal(limiter.admit("write", "b", "10.0.0.1").admitted, true);
    assert.equal(limiter.admit("write", "b", "10.0.0.1").admitted, true);
    const refused = limiter.admit("write", "b", "10.0.0.1");
    assert.ok(!refused.admitted);
    assert.equal(refused.limit, "address");
    assert.equal(limiter.admit("write", undefined, "10.0.0.1").admitted, false, "anonymous requests share the address bucket");
    // Another address is untouched; token a is still empty there.
    assert.equal(limiter.admit("write", undefined, "10.0.0.2").admitted, true);
    const stillA = limiter.admit("write", "a", "10.0.0.2");
    assert.ok(!stillA.admitted);
    assert.equal(stillA.limit, "token");
  });

  test("a refused request costs nothing: neither bucket is charged", () => {
    const c = clock();
    const limiter = new RateLimiter(settings({ write: { perToken: { ratePerSecond: 1, burst: 1 }, perAddress: { ratePerSecond: 1, burst: 2 } } }), c.now);
    assert.equal(limiter.admit("write", "a", "10.0.0.1").admitted, true);
    for (let i = 0; i < 10; i++) assert.equal(limiter.admit("write", "a", "10.0.0.1").admitted, false);
    assert.equal(limiter.admit("write", "b", "10.0.0.1").admitted, true, "a's refusals took nothing from the address");
  });

  test("writes and signing are separate classes", () => {
    const c = clock();
    const limiter = new RateLimiter(settings(), c.now);
    for (let i = 0; i < 3; i++) limiter.admit("write", "a", "10.0.0.1");
    assert.equal(limiter.admit("write", "a", "10.0.0.1").admitted, false);
    assert.equal(limiter.admit("sign", "a", "10.0.0.1").admitted, true);
  });

  test("a flood of random tokens is bounded in memory and still meets the address's limit", () => {
    const c = clock();
    const limiter = new RateLimiter(settings({ bucketsMax: 50, write: { perToken: { ratePerSecond: 1, burst: 1 }, perAddress: { ratePerSecond: 1, burst: 20 } } }), c.now);
    let admitted = 0;
    for (let i = 0; i < 10_000; i++) if (limiter.admit("write", `random-${i}`, "10.0.0.1").admitted) admitted++;
    assert.equal(admitted, 20);
    assert.equal(limiter.bucketCount("write").tokens, 50);
    assert.equal(limiter.bucketCount("write").addresses, 1);
  });

  test("buckets are keyed by a hash of the token, never the token", () => {
    const key = tokenKey("0b1c2d3e-secret-token");
    assert.doesNotMatch(key, /secret/);
    assert.equal(key, tokenKey("0b1c2d3e-secret-token"));
    assert.notEqual(key, tokenKey("0b1c2d3e-secret-tokeN"));
  });

  test("a zero rate or a burst below one is refused when the limiter is made", () => {
    assert.throws(() => resolveRateLimits(settings({ sign: { perToken: { ratePerSecond: 0, burst: 1 }, perAddress: { ratePerSecond: 1, burst: 1 } } })), /sign perToken rate/);
    assert.throws(() => resolveRateLimits(settings({ sign: { perToken: { ratePerSecond: 1, burst: 0 }, perAddress: { ratePerSecond: 1, burst: 1 } } })), /sign perToken burst/);
    assert.throws(() => resolveRateLimits(settings({ bucketsMax: 0 })), /bucketsMax/);
  });
});

void describe("the rate-limit flags", () => {
  test("RATE gives a burst of twice the rate; RATE,BURST gives both", () => {
    assert.deepEqual(parseBucketLimit("--x", "50"), { ratePerSecond: 50, burst: 100 });
    assert.deepEqual(parseBucketLimit("--x", "0.5"), { ratePerSecond: 0.5, burst: 1 });
    assert.deepEqual(parseBucketLimit("--x", "50,10"), { ratePerSecond: 50, burst: 10 });
  });

  test("a zero, negative or malformed limit is refused with the flag and the form it takes", () => {
    for (const bad of ["0", "-1", "abc", "5,0", "5,", ",5", "1e3"]) {
      assert.throws(() => parseBucketLimit("--rate-limit-sign-token", bad), (err: unknown) => err instanceof ConfigError && /--rate-limit-sign-token must be RATE or RATE,BURST/.test(err.message), bad);
    }
  });
});

void describe("the tests' fast CSRs", () => {
  test("are distinct, and pass Cairn's strict parser with their signature verified", () => {
    const [key] = csrKeys(1);
    const a = csrPem(key, "spiffe://cairn.local/ns/default/svc/web", "a.web");
    const b = csrPem(key, "spiffe://cairn.local/ns/default/svc/web", "b.web");
    assert.notEqual(a, b);
    const parsed = parseCsr(a);
    assert.deepEqual(parsed.uris, ["spiffe://cairn.local/ns/default/svc/web"]);
    assert.deepEqual(parsed.dnsNames, ["a.web"]);
  });
});
