// Blocking queries: wait until a service's index (or the catalog's) passes the one the caller
// last saw, or until the wait runs out. Waiters are woken only by revisions that touched what
// they watch, and their number is bounded.

import { TooManyWatchersError } from "../common/errors.js";
import type { RegistryState } from "./state.js";

/** What a blocking query watches: one service, or the catalog (the set of services and tags). */
export type WatchKey = { readonly service: string } | { readonly catalog: true };

export class ChangeWaiters {
  private readonly byService = new Map<string, Set<() => void>>();
  private readonly catalog = new Set<() => void>();
  private count = 0;

  constructor(private readonly state: RegistryState, readonly waitersMax = 100_000) {
    state.onChange((_revision, services, catalogChanged) => {
      for (const s of services) this.wake(this.byService.get(s));
      if (catalogChanged) this.wake(this.catalog);
    });
  }

  /** The index a blocking query on `key` reports. */
  indexOf(key: WatchKey): number {
    return "catalog" in key ? this.state.catalogIndex : this.state.serviceIndex(key.service);
  }

  /**
   * Resolves once indexOf(key) > sinceIndex, after timeoutMs, or when `signal` aborts (the
   * client went away, so its place is freed at once); never rejects once waiting.
   */
  wait(key: WatchKey, sinceIndex: number, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.indexOf(key) > sinceIndex || timeoutMs <= 0 || signal?.aborted === true) return Promise.resolve();
    if (this.count >= this.waitersMax) return Promise.reject(new TooManyWatchersError(this.waitersMax));
    return new Promise((resolve) => {
      let set: Set<() => void>;
      if ("catalog" in key) set = this.catalog;
      else {
        let s = this.byService.get(key.service);
        if (s === undefined) this.byService.set(key.service, (s = new Set()));
        set = s;
      }
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        if (set.delete(done)) this.count--;
        if (!("catalog" in key) && set.size === 0) this.byService.delete(key.service);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal?.addEventListener("abort", done, { once: true });
      set.add(done);
      this.count++;
    });
  }

  get waiting(): number {
    return this.count;
  }

  private wake(set: Set<() => void> | undefined): void {
    if (set === undefined || set.size === 0) return;
    for (const done of [...set]) done();
  }
}
