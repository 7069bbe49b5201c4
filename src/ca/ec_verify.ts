// ECDSA checks of signatures made by keys seen once (a CSR's own key), through the native addon
// in native/ec_verify: node:crypto spends more importing a fresh key than verifying with it (see
// the addon's header). The addon is built by `npm run build` and loaded on first use;
// `ensureEcVerifyAvailable` loads it at start so a node without it fails then, not at its first CSR.

import { loadNativeAddon } from "../common/native_addon.js";
import type { SignatureHash } from "./keys.js";

export type EcCurve = "P-256" | "P-384";

/** What the addon answers. */
const VERIFIED = 0;
const NOT_VERIFIED = 1;
const BAD_KEY = 2;

const CURVE_BITS: Record<EcCurve, number> = { "P-256": 256, "P-384": 384 };
const HASH_BITS: Record<SignatureHash, number> = { sha256: 256, sha384: 384, sha512: 512 };

export interface EcVerifyAddon {
  verifyEcdsa(curveBits: number, hashBits: number, point: Uint8Array, message: Uint8Array, signature: Uint8Array): unknown;
}

let addon: EcVerifyAddon | undefined;

function loadAddon(): EcVerifyAddon {
  addon ??= loadNativeAddon("ec_verify", ["verifyEcdsa"]) as EcVerifyAddon;
  return addon;
}

export function ensureEcVerifyAvailable(): void {
  loadAddon();
}

/** The public key is not a point of the curve (or is the point at infinity). */
export class EcKeyError extends Error {
  constructor(curve: EcCurve) {
    super(`the ${curve} public key is not a point on the curve`);
    this.name = "EcKeyError";
  }
}

/**
 * Whether `signature` (DER, as X.509 and PKCS#10 carry it) is `message`'s ECDSA signature with
 * `hash` by the key `point` (uncompressed: 0x04 || X || Y). Throws EcKeyError for a point that
 * is no key on `curve`.
 */
export function verifyEcdsa(curve: EcCurve, hash: SignatureHash, point: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  return verifyThrough(loadAddon(), curve, hash, point, message, signature);
}

/** verifyEcdsa through another build of the addon: the tests hold copies with planted bugs to it. */
export function verifyEcdsaWith(addon: EcVerifyAddon): typeof verifyEcdsa {
  return (curve, hash, point, message, signature) => verifyThrough(addon, curve, hash, point, message, signature);
}

function verifyThrough(addon: EcVerifyAddon, curve: EcCurve, hash: SignatureHash, point: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  const answer = addon.verifyEcdsa(CURVE_BITS[curve], HASH_BITS[hash], point, message, signature);
  if (answer === VERIFIED) return true;
  if (answer === NOT_VERIFIED) return false;
  if (answer === BAD_KEY) throw new EcKeyError(curve);
  throw new Error(`the ec_verify addon answered ${String(answer)}, not 0, 1 or 2`);
}
