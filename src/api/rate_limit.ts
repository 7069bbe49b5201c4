// Rate limits on the HTTP API: token buckets per presented token and per remote address, in
// classes (writes, certificate signing) with their own limits. A request is charged to its
// address's bucket and, when it presents a token, to that token's bucket too: a flood of random
// tokens from one address still meets the address's limit, and many workloads behind one
// address (a node agent, a NAT) each keep their own token's allowance up to the address's.
// Anonymous requests share their address's bucket. Past either, 429 with Retry-After.
//
// Invariant per bucket: 0 <= tokens <= burst, and tokens only grow with time (at ratePerSecond).

import { createHash } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { presentedToken } from "../acl/presented.js";

/** What a route is charged as. `none` is never limited here (reads have their own bounds). */
export type RateClass = "write" | "sign";
export const RATE_CLASSES: readonly RateClass[] = ["write", "sign"];

declare module "fastify" {
  interface FastifyContextConfig {
    /** The rate class a route is charged to; without it, mutating methods count as writes and the rest are not limited. */
    rateClass?: RateClass | "none";
  }
}

export interface BucketLimit {
  /** Sustained requests per second. */
  readonly ratePerSecond: number;
  /** Requests a full bucket lets through at once. */
  readonly burst: number;
}

export interface ClassLimits {
  readonly perToken: BucketLimit;
  readonly perAddress: BucketLimit;
}

export interface RateLimitSettings {
  readonly write: ClassLimits;
  readonly sign: ClassLimits;
  /**
   * Buckets kept per class and kind, at most; past it the least recently used is dropped. A
   * dropped bucket comes back full, so a flood of new keys can only make the limiter lenient to
   * the keys it pushed out, never use unbounded memory.
   */
  readonly bucketsMax: number;
}

/**
 * Defaults sized for a mesh: a workload renews its SVID about once an hour and registers rarely,
 * so a token's share is small beside its address's, which may carry a node agent's many
 * workloads. A storm after a mass restart is what the sign limits are for: past them clients are
 * told when to come back instead of piling up. Benchmarks raise them by flag.
 */
export const rateLimitDefaults: RateLimitSettings = {
  write: { perToken: { ratePerSecond: 500, burst: 1000 }, perAddress: { ratePerSecond: 5000, burst: 10_000 } },
  sign: { perToken: { ratePerSecond: 100, burst: 200 }, perAddress: { ratePerSecond: 1000, burst: 2000 } },
  bucketsMax: 100_000,
};

/** Rates above this are a typo; a bench that wants no limit gives a large rate below it. */
export const RATE_PER_SECOND_MAX = 100_000_000;
/** Retry-After never says more than this: a client should come back and be told again. */
const RETRY_AFTER_SECONDS_MAX = 3600;

/** Checks the settings once, so the limiter never meets a zero rate or a burst below one. */
export function resolveRateLimits(settings: RateLimitSettings): RateLimitSettings {
  for (const cls of RATE_CLASSES) {
    for (const kind of ["perToken", "perAddress"] as const) {
      const limit = settings[cls][kind];
      if (!(limit.ratePerSecond > 0 && limit.ratePerSecond <= RATE_PER_SECOND_MAX)) {
        throw new RangeError(`the ${cls} ${kind} rate must be above 0 and at most ${RATE_PER_SECOND_MAX} per second, not ${limit.ratePerSecond}`);
      }
      if (!Number.isInteger(limit.burst) || limit.burst < 1) throw new RangeError(`the ${cls} ${kind} burst must be a whole number of at least 1, not ${limit.burst}`);
    }
  }
  if (!Number.isInteger(settings.bucketsMax) || settings.bucketsMax < 1) throw new RangeError(`bucketsMax must be a whole number of at least 1, not ${settings.bucketsMax}`);
  return settings;
}

// ---------------------------------------------------------------- bucket math, pure

export interface Bucket {
  tokens: number;
  updatedMs: number;
  /**
   * The latest retry time promised to a refused request. Each refusal is promised the next
   * slot after it (one token's time apart), so a herd that honours Retry-After comes back spread
   * over the time the bucket needs to serve it, instead of all at once a second later.
   */
  promisedUntilMs: number;
}

export function fullBucket(limit: BucketLimit, nowMs: number): Bucket {
  return { tokens: limit.burst, updatedMs: nowMs, promisedUntilMs: 0 };
}

/** Adds what has accrued since the bucket was last touched, up to the burst. A clock that steps back adds nothing. */
export function refill(bucket: Bucket, limit: BucketLimit, nowMs: number): void {
  const elapsedMs = Math.max(0, nowMs - bucket.updatedMs);
  bucket.tokens = Math.min(limit.burst, bucket.tokens + (elapsedMs * limit.ratePerSecond) / 1000);
  bucket.updatedMs = Math.max(bucket.updatedMs, nowMs);
}

/** Milliseconds until a refilled bucket holds one whole token: 0 when it already does. */
export function msUntilToken(bucket: Bucket, limit: BucketLimit): number {
  return bucket.tokens >= 1 ? 0 : ((1 - bucket.tokens) * 1000) / limit.ratePerSecond;
}

/** Refuses one request: promises it the next free slot and answers the milliseconds until then. */
export function promiseSlot(bucket: Bucket, limit: BucketLimit, nowMs: number): number {
  const slotMs = Math.max(nowMs + msUntilToken(bucket, limit), bucket.promisedUntilMs + 1000 / limit.ratePerSecond);
  bucket.promisedUntilMs = Math.min(slotMs, nowMs + RETRY_AFTER_SECONDS_MAX * 1000);
  return bucket.promisedUntilMs - nowMs;
}

/** Retry-After in whole seconds, rounded up so a client that honours it finds a token; at least 1. */
export function retryAfterSeconds(waitMs: number): number {
  return Math.min(RETRY_AFTER_SECONDS_MAX, Math.max(1, Math.ceil(waitMs / 1000)));
}

// ---------------------------------------------------------------- bounded tables

/** Buckets by key, least recently used first (a Map keeps insertion order; a touch re-inserts). */
export class BucketTable {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly limit: BucketLimit, private readonly bucketsMax: number) {}

  get size(): number {
    return this.buckets.size;
  }

  /** The key's bucket, refilled to `nowMs`, made full if new, marked most recently used. */
  touch(key: string, nowMs: number): Bucket {
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (this.buckets.size >= this.bucketsMax) {
        const oldest = this.buckets.keys().next();
        if (oldest.done !== true) this.buckets.delete(oldest.value);
      }
      bucket = fullBucket(this.limit, nowMs);
    } else {
      this.buckets.delete(key);
      refill(bucket, this.limit, nowMs);
    }
    this.buckets.set(key, bucket);
    return bucket;
  }
}

// ---------------------------------------------------------------- the limiter

/** Which of a class's two buckets refused a request. */
export type RateLimitKind = "token" | "address";
export const RATE_LIMIT_KINDS: readonly RateLimitKind[] = ["token", "address"];

export type Admission =
  | { readonly admitted: true }
  | { readonly admitted: false; readonly limit: RateLimitKind; readonly retryAfterSeconds: number; readonly bucket: BucketLimit };

interface ClassTables {
  readonly limits: ClassLimits;
  readonly byToken: BucketTable;
  readonly byAddress: BucketTable;
}

/** Token buckets per class, keyed by a hash of the token (never the secret) and by address. */
export class RateLimiter {
  private readonly classes: Readonly<Record<RateClass, ClassTables>>;
  /** Requests refused (each answered 429), by class and by the bucket that refused; only grow. For metrics. */
  readonly refusals: Readonly<Record<RateClass, Record<RateLimitKind, number>>> = { write: { token: 0, address: 0 }, sign: { token: 0, address: 0 } };

  constructor(readonly settings: RateLimitSettings, private readonly now: () => number = Date.now) {
    resolveRateLimits(settings);
    const tables = (limits: ClassLimits): ClassTables => ({
      limits,
      byToken: new BucketTable(limits.perToken, settings.bucketsMax),
      byAddress: new BucketTable(limits.perAddress, settings.bucketsMax),
    });
    this.classes = { write: tables(settings.write), sign: tables(settings.sign) };
  }

  /** Buckets held for a class, for tests and metrics. */
  bucketCount(cls: RateClass): { readonly tokens: number; readonly addresses: number } {
    return { tokens: this.classes[cls].byToken.size, addresses: this.classes[cls].byAddress.size };
  }

  /**
   * Charges one request to its address and (if it presents one) its token. Both must hold a
   * token, or neither is charged: a refused request costs the caller nothing.
   */
  admit(cls: RateClass, token: string | undefined, address: string): Admission {
    const nowMs = this.now();
    const t = this.classes[cls];
    const addressBucket = t.byAddress.touch(address, nowMs);
    const tokenBucket = token === undefined ? undefined : t.byToken.touch(tokenKey(token), nowMs);
    if (tokenBucket !== undefined && tokenBucket.tokens < 1) {
      this.refusals[cls].token++;
      return { admitted: false, limit: "token", retryAfterSeconds: retryAfterSeconds(promiseSlot(tokenBucket, t.limits.perToken, nowMs)), bucket: t.limits.perToken };
    }
    if (addressBucket.tokens < 1) {
      this.refusals[cls].address++;
      return { admitted: false, limit: "address", retryAfterSeconds: retryAfterSeconds(promiseSlot(addressBucket, t.limits.perAddress, nowMs)), bucket: t.limits.perAddress };
    }
    addressBucket.tokens -= 1;
    if (tokenBucket !== undefined) tokenBucket.tokens -= 1;
    return { admitted: true };
  }
}

/** A token's bucket key: a hash, so neither the map nor a heap dump nor a log line holds the secret. */
export function tokenKey(token: string): string {
  return createHash("sha256").update(token).digest("base64url").slice(0, 22);
}

// ---------------------------------------------------------------- fastify

const MUTATING_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** A route's class: its own `config.rateClass`, else a write for a mutating method, else none. */
export function rateClassOf(req: FastifyRequest): RateClass | "none" {
  const declared = req.routeOptions.config.rateClass;
  if (declared !== undefined) return declared;
  return MUTATING_METHODS.has(req.method) ? "write" : "none";
}

export interface RateLimitBody {
  readonly error: string;
  /** Which limit refused: "sign per token", "write per address", ... */
  readonly limit: string;
  readonly retryAfterSeconds: number;
}

/** Answers a refused request: 429, Retry-After, and which limit it met. */
export function sendRateLimited(reply: FastifyReply, cls: RateClass, refusal: Extract<Admission, { admitted: false }>): FastifyReply {
  const who = refusal.limit === "token" ? "this token" : "this address";
  const body: RateLimitBody = {
    error: `rate limit: ${who} has used its ${cls} allowance (${refusal.bucket.ratePerSecond}/s, bursts of ${refusal.bucket.burst}); retry after ${refusal.retryAfterSeconds}s`,
    limit: `${cls} per ${refusal.limit}`,
    retryAfterSeconds: refusal.retryAfterSeconds,
  };
  return reply.code(429).header("retry-after", String(refusal.retryAfterSeconds)).send(body);
}

/** Limits every route of `app` by its class, before its body is parsed (a refused request is cheap). */
export function addRateLimits(app: FastifyInstance, limiter: RateLimiter): void {
  app.addHook("onRequest", (req, reply, done) => {
    const cls = rateClassOf(req);
    if (cls === "none") return done();
    const admission = limiter.admit(cls, presentedToken(req.headers), req.ip);
    if (admission.admitted) return done();
    sendRateLimited(reply, cls, admission);
  });
}
