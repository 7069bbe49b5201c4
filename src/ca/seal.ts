// CA private keys at rest: sealed with the operator's key-encryption key (KEK) before they enter a
// Raft command, so the log, snapshots and LevelDB never hold them in the clear. Every node of a
// cluster must be given the same KEK. Without one, keys are stored unsealed and the node warns.

import { createCipheriv, createDecipheriv, createHash, createPrivateKey, type KeyObject, randomBytes } from "node:crypto";

export const KEK_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Binds the ciphertext to its purpose, so a sealed blob cannot be replayed as something else. */
const AAD = Buffer.from("cairn ca private key v1");
const SEALED_PREFIX = "aes256gcm";
const PLAIN_PREFIX = "plain";

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

export class KeySealer {
  /** A short fingerprint of the KEK: tells a wrong KEK from a corrupt blob, and never reveals it. */
  readonly kekId: string | undefined;

  constructor(private readonly kek: Uint8Array | undefined) {
    if (kek !== undefined && kek.byteLength !== KEK_BYTES) throw new SealError(`a KEK must be ${KEK_BYTES} bytes, not ${kek.byteLength}`);
    this.kekId = kek === undefined ? undefined : createHash("sha256").update("cairn kek id").update(kek).digest("hex").slice(0, 16);
  }

  get sealing(): boolean {
    return this.kek !== undefined;
  }

  /** Seals a private key (PEM, PKCS#8) into the text stored in the replicated state. */
  seal(privateKeyPem: string): string {
    const der = createPrivateKey(privateKeyPem).export({ format: "der", type: "pkcs8" });
    if (this.kek === undefined || this.kekId === undefined) return `${PLAIN_PREFIX}:${der.toString("base64")}`;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.kek, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(AAD);
    const body = Buffer.concat([cipher.update(der), cipher.final(), cipher.getAuthTag()]);
    return `${SEALED_PREFIX}:${this.kekId}:${iv.toString("base64")}:${body.toString("base64")}`;
  }

  unseal(sealed: string): KeyObject {
    const parts = sealed.split(":");
    if (parts[0] === PLAIN_PREFIX && parts.length === 2) return createPrivateKey({ key: Buffer.from(parts[1], "base64"), format: "der", type: "pkcs8" });
    if (parts[0] !== SEALED_PREFIX || parts.length !== 4) throw new SealError("a CA key in the replicated state is in an unknown format");
    const [, kekId, ivText, bodyText] = parts;
    if (this.kek === undefined) throw new SealError(`the CA key is sealed with KEK ${kekId}, but this node has no KEK: give it the cluster's KEK (CAIRN_CA_KEK or --ca-kek-file)`);
    if (kekId !== this.kekId) throw new SealError(`the CA key is sealed with KEK ${kekId}, but this node's KEK is ${this.kekId}: every node needs the same KEK`);
    const body = Buffer.from(bodyText, "base64");
    if (body.byteLength <= TAG_BYTES) throw new SealError("a sealed CA key is truncated");
    const decipher = createDecipheriv("aes-256-gcm", this.kek, Buffer.from(ivText, "base64"), { authTagLength: TAG_BYTES });
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
