// Checks CSR self-signatures off the event loop. Verifying with a fresh public key is most of an
// issuance's cost (bench:ca: ~65 of ~100 µs with the native ECDSA check), more than the CA's
// own signature; on a worker thread it overlaps the HTTP work and the signing, which stay on
// the main thread with the CA's key (the workers never hold a private key).
//
// Every CSR in flight (queued or being checked) counts against `inflightMax`; past it a new one
// is refused at once with CaBusyError (503 with Retry-After), so a storm of CSRs waits in its
// clients, not in this process's memory. Invariant: inflight = queued + sum(worker.running) <= inflightMax.

import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import { CsrError, type CsrErrorReason, type CsrProof, verifyCsrProof } from "./csr.js";
import { ensureEcVerifyAvailable } from "./ec_verify.js";

/** What checks a CSR's proof: the pool below, or `inlineVerifier` on the caller's thread. */
export interface CsrVerifier {
  /** Resolves when the proof verifies; rejects with CsrError when it does not, CaBusyError when full. */
  verify(proof: CsrProof): Promise<void>;
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

export interface VerifyPoolSettings {
  /** Worker threads; 0 checks on the caller's thread (still bounded by inflightMax). */
  readonly workers: number;
  /** CSRs queued or being checked, at most. */
  readonly inflightMax: number;
}

/** Workers, at most: past the cores there is nothing to gain. */
export const VERIFY_WORKERS_MAX = 64;
export const INFLIGHT_MAX_LIMIT = 1_000_000;

/** One worker per core but the one the event loop runs on, at most 4; none on a single core. */
export const verifyPoolDefaults: VerifyPoolSettings = {
  workers: Math.max(0, Math.min(4, availableParallelism() - 1)),
  inflightMax: 1024,
};

export function resolveVerifyPool(settings: VerifyPoolSettings): VerifyPoolSettings {
  if (!Number.isInteger(settings.workers) || settings.workers < 0 || settings.workers > VERIFY_WORKERS_MAX) {
    throw new RangeError(`CSR verify workers must be a whole number from 0 to ${VERIFY_WORKERS_MAX}, not ${settings.workers}`);
  }
  if (!Number.isInteger(settings.inflightMax) || settings.inflightMax < 1 || settings.inflightMax > INFLIGHT_MAX_LIMIT) {
    throw new RangeError(`the CSR in-flight bound must be a whole number from 1 to ${INFLIGHT_MAX_LIMIT}, not ${settings.inflightMax}`);
  }
  return settings;
}

/**
 * Proofs one message to a worker carries, at most. A worker answers a message whole, so a big
 * batch makes the event loop wait for all of it and then sign all of it while the worker idles:
 * the two threads take turns instead of overlapping (bench:ca measured 2,400/s with 64 a batch
 * against 3,600/s with 4). Small batches keep both busy; 4 still amortises each message.
 */
export const BATCH_TASKS_MAX = 4;
/** A worker that dies is replaced; past this many in a row without a success, the pool stops replacing and fails requests. */
const RESPAWNS_MAX = 5;

/** The wire between the pool and a worker: plain data, structured-cloned. */
export interface VerifyBatch {
  readonly tasks: readonly { readonly id: number; readonly proof: CsrProof }[];
}
export type VerifyResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: CsrErrorReason | "internal"; readonly message: string };
export type VerifyOutcome = VerifyResult & { readonly id: number };

interface Pending {
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

interface PoolWorker {
  readonly worker: Worker;
  /** Task ids sent to it and not yet answered. */
  readonly running: Set<number>;
}

/** Checks on the caller's thread, bounded only by its own synchronous nature. */
export const inlineVerifier: CsrVerifier = {
  verify: (proof) => {
    verifyCsrProof(proof);
    return Promise.resolve();
  },
  close: () => Promise.resolve(),
};

export class CsrVerifyPool implements CsrVerifier {
  private readonly settings: VerifyPoolSettings;
  private readonly workers: PoolWorker[] = [];
  private readonly pending = new Map<number, Pending>();
  private queue: { readonly id: number; readonly proof: CsrProof }[] = [];
  private nextId = 1;
  private flushScheduled = false;
  private respawnsInARow = 0;
  private closed = false;

  constructor(settings: VerifyPoolSettings, private readonly log: Logger) {
    this.settings = resolveVerifyPool(settings);
    // Each worker loads it too; loading it here first makes a node without it fail at start.
    ensureEcVerifyAvailable();
    for (let i = 0; i < this.settings.workers; i++) this.workers.push(this.spawn());
  }

  /** Proofs queued or being checked. */
  get inflight(): number {
    return this.pending.size;
  }

  verify(proof: CsrProof): Promise<void> {
    if (this.pending.size >= this.settings.inflightMax) {
      return Promise.reject(new CaBusyError(this.settings.inflightMax, 1 + Math.floor(Math.random() * BUSY_RETRY_SPREAD_SECONDS)));
    }
    if (this.workers.length === 0) {
      if (this.closed) return Promise.reject(new Error("the CSR verify pool is closed"));
      return inlineVerifier.verify(proof);
    }
    const id = this.nextId++;
    // A view's whole buffer would be cloned; copy out just the bytes (they are small).
    const key = "point" in proof.key ? { curve: proof.key.curve, point: proof.key.point.slice() } : proof.key;
    const task = { id, proof: { ...proof, signed: proof.signed.slice(), key, signature: proof.signature.slice() } };
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.queue.push(task);
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // After this turn's I/O callbacks: every request that arrived in it goes in one batch.
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
      p.reject(new Error("the CSR verify pool closed before the CSR was checked"));
    }
  }

  /** Hands the queue out in batches, each to the worker with the least in flight. */
  private flush(): void {
    this.flushScheduled = false;
    const queue = this.queue;
    this.queue = [];
    if (this.workers.length === 0) {
      for (const task of queue) this.settle({ id: task.id, ok: false, reason: "internal", message: "no CSR verify worker is running" });
      return;
    }
    for (let at = 0; at < queue.length; at += BATCH_TASKS_MAX) {
      const tasks = queue.slice(at, at + BATCH_TASKS_MAX);
      const target = this.workers.reduce((a, b) => (b.running.size < a.running.size ? b : a));
      for (const t of tasks) target.running.add(t.id);
      target.worker.ref();
      const batch: VerifyBatch = { tasks };
      target.worker.postMessage(batch);
    }
  }

  private spawn(): PoolWorker {
    const worker = new Worker(new URL("./verify_worker.js", import.meta.url));
    const entry: PoolWorker = { worker, running: new Set() };
    worker.on("message", (outcomes: readonly VerifyOutcome[]) => {
      this.respawnsInARow = 0;
      for (const o of outcomes) {
        entry.running.delete(o.id);
        this.settle(o);
      }
      if (entry.running.size === 0) worker.unref();
    });
    worker.on("error", (err) => this.log.error({ err }, "a CSR verify worker failed"));
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
    for (const id of entry.running) this.settle({ id, ok: false, reason: "internal", message: `the CSR verify worker exited with code ${code}` });
    if (this.closed) return;
    if (this.respawnsInARow >= RESPAWNS_MAX) {
      this.log.error({ respawns: this.respawnsInARow }, "CSR verify workers keep exiting; checking CSRs on the main thread from now on");
      return;
    }
    this.respawnsInARow++;
    this.workers.push(this.spawn());
  }

  private settle(outcome: VerifyOutcome): void {
    const p = this.pending.get(outcome.id);
    if (p === undefined) return;
    this.pending.delete(outcome.id);
    if (outcome.ok) p.resolve();
    else if (outcome.reason === "internal") p.reject(new Error(outcome.message));
    else p.reject(new CsrError(outcome.reason, outcome.message));
  }
}
