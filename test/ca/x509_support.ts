// Shared by the X.509 tests and bench/ca.ts: @peculiar/x509 loaded behind the small piece of the
// Reflect metadata API its dependency tsyringe insists on (Cairn ships no polyfill package, and
// its own code never needs one), real openssl in a scratch directory, and CA fixtures.

import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as X509 from "@peculiar/x509";
import { createIntermediateCertificate, createRootCertificate } from "../../src/ca/certificates.js";
import { type CaKey, type CaKeyType, generateCaKey } from "../../src/ca/keys.js";

type MetadataKey = string | symbol;
type Store = Map<MetadataKey | undefined, Map<unknown, unknown>>;

/** The four calls tsyringe and tslib's decorators make; a WeakMap so classes can still be collected. */
function installReflectMetadata(): void {
  const reflect = Reflect as unknown as Record<string, unknown>;
  if (typeof reflect.getMetadata === "function") return;
  const stores = new WeakMap<object, Store>();
  const own = (target: object, property: MetadataKey | undefined, create: boolean): Map<unknown, unknown> | undefined => {
    let store = stores.get(target);
    if (store === undefined && create) stores.set(target, (store = new Map<MetadataKey | undefined, Map<unknown, unknown>>()));
    let map = store?.get(property);
    if (map === undefined && create && store !== undefined) store.set(property, (map = new Map<unknown, unknown>()));
    return map;
  };
  const defineMetadata = (key: unknown, value: unknown, target: object, property?: MetadataKey): void => {
    own(target, property, true)?.set(key, value);
  };
  const getOwnMetadata = (key: unknown, target: object, property?: MetadataKey): unknown => own(target, property, false)?.get(key);
  const getMetadata = (key: unknown, target: object, property?: MetadataKey): unknown => {
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
      const map = own(t, property, false);
      if (map?.has(key) === true) return map.get(key);
    }
    return undefined;
  };
  reflect.defineMetadata = defineMetadata;
  reflect.getOwnMetadata = getOwnMetadata;
  reflect.getMetadata = getMetadata;
  reflect.metadata = (key: unknown, value: unknown) => (target: object, property?: MetadataKey) => defineMetadata(key, value, target, property);
}

installReflectMetadata();
export const x509: typeof X509 = await import("@peculiar/x509");

// ---------------------------------------------------------------- openssl

/** A scratch directory; `remove` is safe to call twice. */
export function scratchDir(): { dir: string; path: (name: string) => string; write: (name: string, text: string) => string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "cairn-x509-"));
  return {
    dir,
    path: (name) => join(dir, name),
    write: (name, text) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Runs openssl and returns stdout; throws with its stderr if it fails. */
export function openssl(args: readonly string[]): string {
  return execFileSync("/usr/bin/openssl", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** `openssl verify` of `leafFile`: whether it passed, and what openssl said (for assertion messages). */
export function opensslVerify(caFile: string, untrustedFile: string | undefined, leafFile: string): { ok: boolean; output: string } {
  const args = ["verify", "-CAfile", caFile, ...(untrustedFile === undefined ? [] : ["-untrusted", untrustedFile]), leafFile];
  const r = spawnSync("/usr/bin/openssl", args, { encoding: "utf8" });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

export function readText(path: string): string {
  return readFileSync(path, "utf8");
}

// ---------------------------------------------------------------- CA fixtures

export const TRUST_DOMAIN = "cairn.local";
export const WEB_ID = "spiffe://cairn.local/ns/default/svc/web";
export const HOUR_MS = 3_600_000;
export const DAY_MS = 24 * HOUR_MS;

export interface TestCa {
  readonly rootKey: CaKey;
  readonly rootPem: string;
  readonly intermediateKey: CaKey;
  readonly intermediatePem: string;
}

/** A root and an intermediate starting a minute before `nowMs`, valid for a year and 30 days unless told otherwise. */
export function makeCa(type: CaKeyType, nowMs: number, opts: { rootDays?: number; intermediateDays?: number; tag?: string } = {}): TestCa {
  const { rootDays = 365, intermediateDays = 30, tag = "1" } = opts;
  const rootKey = generateCaKey(type);
  const notBeforeMs = nowMs - 60_000;
  const rootPem = createRootCertificate(rootKey, { trustDomain: TRUST_DOMAIN, commonName: `Cairn Root CA ${tag}`, notBeforeMs, notAfterMs: nowMs + rootDays * DAY_MS });
  const intermediateKey = generateCaKey(type);
  const intermediatePem = createIntermediateCertificate(
    intermediateKey.publicKey,
    { certificatePem: rootPem, privateKey: rootKey.privateKey },
    { trustDomain: TRUST_DOMAIN, commonName: `Cairn Intermediate CA ${tag}`, notBeforeMs, notAfterMs: nowMs + intermediateDays * DAY_MS },
  );
  return { rootKey, rootPem, intermediateKey, intermediatePem };
}
