// CA private keys at rest: sealed with the operator's key-encryption key (KEK) before they enter a
// Raft command, so the log, snapshots and LevelDB never hold them in the clear. Every node of a
// cluster must be given the same KEK. Without one, keys are stored unsealed and the node warns.
//
// Rotating the KEK: a node holds one current KEK, which seals everything it seals, and any number
// of previous KEKs, which only unseal. A sealed blob names its KEK by fingerprint, so the node
// picks the right one. Once every node has the new KEK as current (and the old as previous), a CA
// rotation re-seals the active root under the new KEK, and the old one can be dropped
// (docs/security.md, "Rotating the key-encryption key").

import { createCipheriv, createDecipheriv, createHash, createPrivateKey, type KeyObject, randomBytes } from "node:crypto";

export const KEK_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Binds the ciphertext to its purpose, so a sealed blob cannot be replayed as something else. */
const AAD = Buffer.from("cairn ca private key v1");
const SEALED_PREFIX = "aes256gcm";
const PLAIN_PREFIX = "plain";

/** Previous KEKs a node may hold at once: a rotation needs one; a few more cover a rotation abandoned half way. */
export const PREVIOUS_KEKS_MAX = 8;

export class SealError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SealError";
  }
}

/**
 * A KEK from text: 32 bytes as base64 or hex (what `openssl rand -base64 32` or `-hex 32`
 * print), surrounding whitespace ignored. Raw 32-byte files are accepted too.
 */
export function parseKek(raw: Uint8Array, source: string): Uint8Array {
  if (raw.byteLength === KEK_BYTES && !/^[\x21-\x7e]+$/.test(Buffer.from(raw).toString("latin1"))) return raw;
  const text = Buffer.from(raw).toString("utf8").trim();
  const candidates = [/^[0-9a-fA-F]+$/.test(text) ? Buffer.from(text, "hex") : undefined, /^[A-Za-z0-9+/]+={0,2}$/.test(text) ? Buffer.from(text, "base64") : undefined];
  for (const c of candidates) if (c !== undefined && c.byteLength === KEK_BYTES) return new Uint8Array(c);
  throw new SealError(`${source} must hold a ${KEK_BYTES}-byte key as base64 or hex (for example the output of "openssl rand -base64 32")`);
}

/**
 * Previous KEKs from text: one KEK per line (or separated by commas or spaces, for an environment
 * variable), each as parseKek() reads it; "#" starts a comment. A raw 32-byte file is one KEK.
 */
export function parseKekList(raw: Uint8Array, source: string): Uint8Array[] {
  if (raw.byteLength === KEK_BYTES && !isText(raw)) return [raw];
  const keks: Uint8Array[] = [];
  const lines = Buffer.from(raw).toString("utf8").split(/\r?\n/);
  lines.forEach((line, i) => {
    for (const word of line.replace(/#.*$/, "").split(/[\s,]+/)) {
      if (word !== "") keks.push(parseKek(new TextEncoder().encode(word), lines.length > 1 ? `${source} (line ${i + 1})` : source));
    }
  });
  if (keks.length === 0) throw new SealError(`${source} holds no KEK: give one or more 32-byte keys as base64 or hex, one per line, or leave it out`);
  return keks;
}

/** Printable ASCII, tabs and line ends only: a file of keys written out as text. */
function isText(bytes: Uint8Array): boolean {
  return bytes.every((b) => b === 0x09 || b === 0x0a || b === 0x0d || (b >= 0x20 && b <= 0x7e));
}

/** What a sealed blob is sealed under, as this node sees it. */
export type SealedUnder =
  /** This node's current KEK: nothing to do. */
  | { readonly kind: "current"; readonly kekId: string }
  /** One of this node's previous KEKs: readable, but due to be re-sealed (by a CA rotation). */
  | { readonly kind: "previous"; readonly kekId: string }
  /** Stored in the clear: readable by any node; due to be sealed if this node has a KEK. */
  | { readonly kind: "unsealed" }
  /** A KEK this node does not hold, or a format it does not know: it cannot unseal it. */
  | { readonly kind: "unknown"; readonly kekId: string | undefined };

export class KeySealer {
  /** A short fingerprint of the current KEK: tells a wrong KEK from a corrupt blob, and never reveals it. */
  readonly kekId: string | undefined;
  /** Fingerprints of the previous KEKs, in the order given. */
  readonly previousKekIds: readonly string[];
  /** Every KEK this node can unseal with, by fingerprint: the current one and the previous ones. */
  private readonly keksById: ReadonlyMap<string, Uint8Array>;

  /**
   * `kek` seals and unseals; each of `previousKeks` only unseals. Previous KEKs need a current
   * one (sealing with a KEK the operator is retiring would defeat the rotation), and each must
   * differ from it and from each other.
   */
  constructor(private readonly kek: Uint8Array | undefined, previousKeks: readonly Uint8Array[] = []) {
    for (const k of [...(kek === undefined ? [] : [kek]), ...previousKeks]) {
      if (k.byteLength !== KEK_BYTES) throw new SealError(`a KEK must be ${KEK_BYTES} bytes, not ${k.byteLength}`);
    }
    if (kek === undefined && previousKeks.length > 0) {
      throw new SealError("previous KEKs were given without a current one: give the new KEK with CAIRN_CA_KEK or --ca-kek-file, and the old ones with --ca-kek-previous-file or CAIRN_CA_KEK_PREVIOUS");
    }
    if (previousKeks.length > PREVIOUS_KEKS_MAX) throw new SealError(`${previousKeks.length} previous KEKs were given, over the limit of ${PREVIOUS_KEKS_MAX}: drop those no CA key is sealed with any more`);
    this.kekId = kek === undefined ? undefined : kekFingerprint(kek);
    const keksById = new Map<string, Uint8Array>();
    if (kek !== undefined && this.kekId !== undefined) keksById.set(this.kekId, kek);
    const previousIds: string[] = [];
    for (const k of previousKeks) {
      const id = kekFingerprint(k);
      if (id === this.kekId) throw new SealError(`a previous KEK (${id}) is the current KEK: remove it from --ca-kek-previous-file or CAIRN_CA_KEK_PREVIOUS`);
      if (keksById.has(id)) throw new SealError(`previous KEK ${id} is given twice: remove one copy`);
      keksById.set(id, k);
      previousIds.push(id);
    }
    this.keksById = keksById;
    this.previousKekIds = previousIds;
  }

  get sealing(): boolean {
    return this.kek !== undefined;
  }

  /** Seals a private key (PEM, PKCS#8) into the text stored in the replicated state, always with the current KEK. */
  seal(privateKeyPem: string): string {
    const der = createPrivateKey(privateKeyPem).export({ format: "der", type: "pkcs8" });
    if (this.kek === undefined || this.kekId === undefined) return `${PLAIN_PREFIX}:${der.toString("base64")}`;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.kek, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(AAD);
    const body = Buffer.concat([cipher.update(der), cipher.final(), cipher.getAuthTag()]);
    return `${SEALED_PREFIX}:${this.kekId}:${iv.toString("base64")}:${body.toString("base64")}`;
  }

  /** Which of this node's KEKs, if any, `sealed` is under; reads only its header, so it is cheap. */
  sealedUnder(sealed: string): SealedUnder {
    const parts = sealed.split(":");
    if (parts[0] === PLAIN_PREFIX && parts.length === 2) return { kind: "unsealed" };
    if (parts[0] !== SEALED_PREFIX || parts.length !== 4) return { kind: "unknown", kekId: undefined };
    const kekId = parts[1];
    if (kekId === this.kekId) return { kind: "current", kekId };
    return this.keksById.has(kekId) ? { kind: "previous", kekId } : { kind: "unknown", kekId };
  }

  /** Whether `sealed` is as this node would seal it now: under its current KEK (or, with no KEK, in the clear). */
  isUnderCurrentKek(sealed: string): boolean {
    const under = this.sealedUnder(sealed).kind;
    return this.sealing ? under === "current" : under === "unsealed";
  }

  /** Unseals with whichever of this node's KEKs the blob names. */
  unseal(sealed: string): KeyObject {
    const parts = sealed.split(":");
    if (parts[0] === PLAIN_PREFIX && parts.length === 2) return createPrivateKey({ key: Buffer.from(parts[1], "base64"), format: "der", type: "pkcs8" });
    if (parts[0] !== SEALED_PREFIX || parts.length !== 4) throw new SealError("a CA key in the replicated state is in an unknown format");
    const [, kekId, ivText, bodyText] = parts;
    if (this.kek === undefined) throw new SealError(`the CA key is sealed with KEK ${kekId}, but this node has no KEK: give it the cluster's KEK (CAIRN_CA_KEK or --ca-kek-file)`);
    const kek = this.keksById.get(kekId);
    if (kek === undefined) {
      const previous = this.previousKekIds.length === 0 ? "it has none" : `it has ${this.previousKekIds.join(", ")}`;
      throw new SealError(
        `the CA key is sealed with KEK ${kekId}, which is neither this node's current KEK ${this.kekId} nor one of its previous KEKs (${previous}): ` +
        "every node needs the same KEK; if the cluster's KEK is being changed, give the old one with --ca-kek-previous-file or CAIRN_CA_KEK_PREVIOUS until POST /v1/ca/rotate has re-sealed the CA",
      );
    }
    const body = Buffer.from(bodyText, "base64");
    if (body.byteLength <= TAG_BYTES) throw new SealError("a sealed CA key is truncated");
    const decipher = createDecipheriv("aes-256-gcm", kek, Buffer.from(ivText, "base64"), { authTagLength: TAG_BYTES });
    decipher.setAAD(AAD);
    decipher.setAuthTag(body.subarray(body.byteLength - TAG_BYTES));
    let der: Buffer;
    try {
      der = Buffer.concat([decipher.update(body.subarray(0, body.byteLength - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new SealError(`a CA key sealed with KEK ${kekId} fails its integrity check: the replicated state is corrupt`);
    }
    return createPrivateKey({ key: der, format: "der", type: "pkcs8" });
  }
}

/** 16 hex digits of a domain-separated SHA-256: enough to tell KEKs apart, nothing about the key. */
function kekFingerprint(kek: Uint8Array): string {
  return createHash("sha256").update("cairn kek id").update(kek).digest("hex").slice(0, 16);
}
