// Issues certificates for CSRs off the event loop: a worker checks a CSR's self-signature and,
// once it holds, signs the leaf. Those two are nearly all of an issuance's own cost (bench:ca:
// ~100 of ~105 µs in process); serving the HTTP request around them costs about twice that
// again, and on one thread the two would take turns. The event loop keeps everything that decides whether to sign (ACLs, rate limits,
// the CSR's structure and SPIFFE ID, the TTL) and everything after (audit, metrics, the answer).
//
// The workers hold the active intermediate's private key, sent to them as a KeyObject when they
// first sign with it. Worker threads share the process's memory, so keeping the key out of them
// would isolate nothing.
//
// Every CSR in flight (queued or at a worker) counts against `inflightMax`; past it a new one is
// refused at once with CaBusyError (503 with Retry-After), so a storm of CSRs waits in its
// clients, not in this process's memory. Invariant: inflight = queued + sum(worker.running) <= inflightMax.

import type { KeyObject } from "node:crypto";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import { CertificateError } from "./certificates.js";
import { CsrError, type CsrErrorReason, type CsrProof, verifyCsrProof } from "./csr.js";
import { ensureEcVerifyAvailable } from "./ec_verify.js";
import type { LeafRequest, LeafSigner, SignedLeaf } from "./leaf.js";

/** An intermediate as the pool signs with it. `id` names it to the workers, which build their own LeafSigner for it once. */
export interface PoolSigner {
  readonly id: number;
  /** Signs on the caller's thread, for the inline issuer and a pool without workers. */
  readonly signer: LeafSigner;
  readonly intermediate: { readonly certificatePem: string; readonly privateKey: KeyObject };
}

/** What issues for a checked CSR: the pool below, or `inlineIssuer` on the caller's thread. */
export interface CsrIssuer {
  /**
   * Checks `proof`, then signs `leaf` with `signer`. Rejects with CsrError when the proof does
   * not verify, CertificateError when the leaf cannot be made, CaBusyError when full.
   */
  issue(proof: CsrProof, leaf: LeafRequest, signer: PoolSigner): Promise<SignedLeaf>;
  close(): Promise<void>;
}

/** A busy pool's Retry-After is spread over 1..this many seconds, so a refused herd does not return as one. */
export const BUSY_RETRY_SPREAD_SECONDS = 4;

/** Too many CSRs are being checked on this node already: retry after `retryAfterSeconds`. */
export class CaBusyError extends Error {
  constructor(inflightMax: number, readonly retryAfterSeconds: number) {
    super(`this node is already checking ${inflightMax} CSRs, its bound; retry after ${retryAfterSeconds}s or ask another node`);
    this.name = "CaBusyError";
  }
}

export interface CsrPoolSettings {
  /** Worker threads; 0 issues on the caller's thread (still bounded by inflightMax). */
  readonly workers: number;
  /** CSRs queued or at a worker, at most. */
  readonly inflightMax: number;
}

/** Workers, at most: past the cores there is nothing to gain. */
export const CSR_WORKERS_MAX = 64;
export const INFLIGHT_MAX_LIMIT = 1_000_000;

/** One worker per core but the one the event loop runs on, at most 4; none on a single core. */
export const csrPoolDefaults: CsrPoolSettings = {
  workers: Math.max(0, Math.min(4, availableParallelism() - 1)),
  inflightMax: 1024,
};

export function resolveCsrPool(settings: CsrPoolSettings): CsrPoolSettings {
  if (!Number.isInteger(settings.workers) || settings.workers < 0 || settings.workers > CSR_WORKERS_MAX) {
    throw new RangeError(`CSR workers must be a whole number from 0 to ${CSR_WORKERS_MAX}, not ${settings.workers}`);
  }
  if (!Number.isInteger(settings.inflightMax) || settings.inflightMax < 1 || settings.inflightMax > INFLIGHT_MAX_LIMIT) {
    throw new RangeError(`the CSR in-flight bound must be a whole number from 1 to ${INFLIGHT_MAX_LIMIT}, not ${settings.inflightMax}`);
  }
  return settings;
}

/**
 * CSRs one message to a worker carries, at most. A worker answers a message whole, so a big
 * batch makes the event loop wait for all of it and then answer all of it while the worker
 * idles: the two threads take turns instead of overlapping (bench:ca measured 2,400/s with 64 a
 * batch against 3,600/s with 4). Small batches keep both busy; 4 still amortises each message.
 */
export const BATCH_TASKS_MAX = 4;
/** Intermediates a worker keeps signers for: the active one and those that were active moments ago. */
export const WORKER_SIGNERS_MAX = 4;
/** A worker that dies is replaced; past this many in a row without a success, the pool stops replacing them and issues on the event loop. */
const RESPAWNS_MAX = 5;

/** The wire between the pool and a worker: plain data and KeyObjects, structured-cloned. */
export interface CsrTask {
  readonly id: number;
  readonly proof: CsrProof;
  readonly leaf: LeafRequest;
  readonly signerId: number;
}
export interface CsrBatch {
  /** Signers to build before the tasks, in order. */
  readonly install: readonly { readonly id: number; readonly certificatePem: string; readonly privateKey: KeyObject }[];
  /** Signers to drop before the tasks. */
  readonly retire: readonly number[];
  readonly tasks: readonly CsrTask[];
}
export type CsrResult =
  | { readonly ok: true; readonly leaf: SignedLeaf }
  | { readonly ok: false; readonly reason: CsrErrorReason | "certificate" | "internal"; readonly message: string };
export type CsrOutcome = CsrResult & { readonly id: number };

interface Pending {
  readonly resolve: (leaf: SignedLeaf) => void;
  readonly reject: (err: Error) => void;
}

interface PoolWorker {
  readonly worker: Worker;
  /** Task ids sent to it and not yet answered. */
  readonly running: Set<number>;
  /** Signer ids it holds, oldest first, as the pool told it: the pool alone decides what it keeps. */
  readonly signers: number[];
}

/** Issues on the caller's thread. */
export const inlineIssuer: CsrIssuer = {
  issue: (proof, leaf, signer) => {
    try {
      verifyCsrProof(proof);
      return Promise.resolve(signer.signer.sign(leaf));
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  },
  close: () => Promise.resolve(),
};

export class CsrIssuePool implements CsrIssuer {
  private readonly settings: CsrPoolSettings;
  private readonly workers: PoolWorker[] = [];
  private readonly pending = new Map<number, Pending>();
  private queue: { readonly task: CsrTask; readonly signer: PoolSigner }[] = [];
  private nextId = 1;
  private flushScheduled = false;
  private respawnsInARow = 0;
  private closed = false;

  constructor(settings: CsrPoolSettings, private readonly log: Logger) {
    this.settings = resolveCsrPool(settings);
    // Each worker loads it too; loading it here first makes a node without it fail at start.
    ensureEcVerifyAvailable();
    for (let i = 0; i < this.settings.workers; i++) this.workers.push(this.spawn());
  }

  /** CSRs queued or at a worker. */
  get inflight(): number {
    return this.pending.size;
  }

  issue(proof: CsrProof, leaf: LeafRequest, signer: PoolSigner): Promise<SignedLeaf> {
    if (this.pending.size >= this.settings.inflightMax) {
      return Promise.reject(new CaBusyError(this.settings.inflightMax, 1 + Math.floor(Math.random() * BUSY_RETRY_SPREAD_SECONDS)));
    }
    if (this.workers.length === 0) {
      if (this.closed) return Promise.reject(new Error("the CSR pool is closed"));
      return inlineIssuer.issue(proof, leaf, signer);
    }
    const id = this.nextId++;
    const task: CsrTask = { id, proof: detached(proof), leaf: { ...leaf, subjectPublicKeyInfoDer: leaf.subjectPublicKeyInfoDer.slice() }, signerId: signer.id };
    return new Promise<SignedLeaf>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.queue.push({ task, signer });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // After this turn's I/O callbacks: every request that arrived in it goes out together.
        setImmediate(() => this.flush());
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const workers = this.workers.splice(0);
    await Promise.all(workers.map((w) => w.worker.terminate()));
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(new Error("the CSR pool closed before the CSR was answered"));
    }
  }

  /** Hands the queue out in batches, each to the worker with the least in flight. */
  private flush(): void {
    this.flushScheduled = false;
    const queue = this.queue;
    this.queue = [];
    if (this.workers.length === 0) {
      for (const { task } of queue) this.settle({ id: task.id, ok: false, reason: "internal", message: "no CSR worker is running" });
      return;
    }
    for (let at = 0; at < queue.length; at += BATCH_TASKS_MAX) {
      const entries = queue.slice(at, at + BATCH_TASKS_MAX);
      const target = this.workers.reduce((a, b) => (b.running.size < a.running.size ? b : a));
      for (const { task } of entries) target.running.add(task.id);
      target.worker.ref();
      target.worker.postMessage(batchFor(target, entries));
    }
  }

  private spawn(): PoolWorker {
    const worker = new Worker(new URL("./csr_worker.js", import.meta.url));
    const entry: PoolWorker = { worker, running: new Set(), signers: [] };
    worker.on("message", (outcomes: readonly CsrOutcome[]) => {
      this.respawnsInARow = 0;
      for (const o of outcomes) {
        entry.running.delete(o.id);
        this.settle(o);
      }
      if (entry.running.size === 0) worker.unref();
    });
    worker.on("error", (err) => this.log.error({ err }, "a CSR worker failed"));
    worker.on("exit", (code) => this.replace(entry, code));
    // An idle pool must not keep a process alive that is otherwise done; a busy one must, until it answers.
    worker.unref();
    return entry;
  }

  /** A worker that exits fails what it held, and is replaced while the pool is open. */
  private replace(entry: PoolWorker, code: number): void {
    const at = this.workers.indexOf(entry);
    if (at < 0) return; // closed, or already replaced
    this.workers.splice(at, 1);
    for (const id of entry.running) this.settle({ id, ok: false, reason: "internal", message: `the CSR worker exited with code ${code}` });
    if (this.closed) return;
    if (this.respawnsInARow >= RESPAWNS_MAX) {
      this.log.error({ respawns: this.respawnsInARow }, "CSR workers keep exiting; issuing on the main thread from now on");
      return;
    }
    this.respawnsInARow++;
    this.workers.push(this.spawn());
  }

  private settle(outcome: CsrOutcome): void {
    const p = this.pending.get(outcome.id);
    if (p === undefined) return;
    this.pending.delete(outcome.id);
    if (outcome.ok) p.resolve(outcome.leaf);
    else p.reject(errorOf(outcome));
  }
}

/**
 * The batch for `entries` on `target`: the signers it lacks are installed first, and the oldest
 * it holds retired to keep WORKER_SIGNERS_MAX, never one this batch needs (a batch needs at most
 * BATCH_TASKS_MAX <= WORKER_SIGNERS_MAX). A worker handles its messages in order, so a task is
 * always signed by a signer it was sent.
 */
function batchFor(target: PoolWorker, entries: readonly { readonly task: CsrTask; readonly signer: PoolSigner }[]): CsrBatch {
  const needed = new Map(entries.map(({ signer }) => [signer.id, signer]));
  const install = [...needed.values()].filter((s) => !target.signers.includes(s.id)).map((s) => ({ id: s.id, ...s.intermediate }));
  target.signers.push(...install.map((s) => s.id));
  const retire: number[] = [];
  for (let i = 0; i < target.signers.length && target.signers.length > WORKER_SIGNERS_MAX; ) {
    if (needed.has(target.signers[i])) i++;
    else retire.push(...target.signers.splice(i, 1));
  }
  return { install, retire, tasks: entries.map((e) => e.task) };
}

/** The proof with its bytes copied out of the request's buffers: a view's whole buffer would be cloned. */
function detached(proof: CsrProof): CsrProof {
  const key = "point" in proof.key ? { curve: proof.key.curve, point: proof.key.point.slice() } : proof.key;
  return { ...proof, signed: proof.signed.slice(), key, signature: proof.signature.slice() };
}

/** A worker's refusal as the error the inline issuer would have thrown. */
function errorOf(outcome: CsrResult & { readonly ok: false }): Error {
  if (outcome.reason === "internal") return new Error(outcome.message);
  if (outcome.reason === "certificate") return new CertificateError(outcome.message);
  return new CsrError(outcome.reason, outcome.message);
}
