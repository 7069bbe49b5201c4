// Mutated DER for POST /v1/ca/sign: valid CSRs made by openssl, then bytes flipped, cut,
// inserted or deleted, and the tags and lengths of their DER elements changed, found by walking
// the encoding so the mutations land on structure rather than only on key bytes.

import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";

export interface SeedCsr {
  readonly label: string;
  readonly der: Buffer;
}

/** The keys and identities the seeds ask for: each key type the CA accepts, and a few it refuses. */
const SEED_SPECS: readonly { label: string; key: readonly string[]; san: string }[] = [
  { label: "p256 web", key: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], san: "URI:spiffe://cairn.local/ns/default/svc/web" },
  { label: "p384 api", key: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], san: "URI:spiffe://cairn.local/ns/prod/svc/api" },
  { label: "ed25519 web", key: ["-newkey", "ed25519"], san: "URI:spiffe://cairn.local/ns/default/svc/web" },
  { label: "rsa2048 web", key: ["-newkey", "rsa:2048"], san: "URI:spiffe://cairn.local/ns/default/svc/web" },
  { label: "p256 two sans", key: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], san: "URI:spiffe://cairn.local/ns/default/svc/web,URI:spiffe://cairn.local/ns/default/svc/db,DNS:web" },
  { label: "p256 other domain", key: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], san: "URI:spiffe://evil.example/ns/default/svc/web" },
];

/** Makes the seed CSRs with the system's openssl, in a scratch directory it removes. */
export function makeSeedCsrs(): SeedCsr[] {
  const dir = mkdtempSync(join(tmpdir(), "cairn-fuzz-csr-"));
  try {
    return SEED_SPECS.map((spec, i) => {
      const der = execFileSync("/usr/bin/openssl", ["req", "-new", ...spec.key, "-nodes", "-keyout", join(dir, `k${i}.pem`), "-subj", "/CN=fuzz", "-addext", `subjectAltName=${spec.san}`, "-outform", "DER"], { stdio: ["ignore", "pipe", "pipe"] });
      return { label: spec.label, der };
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Where one DER element's tag and length bytes sit. */
interface DerElement {
  readonly tagAt: number;
  readonly lengthAt: number;
  /** How many bytes the length takes (1 for the short form). */
  readonly lengthBytes: number;
  readonly contentAt: number;
  readonly contentLength: number;
}

/** Bits of a tag byte that say the element is constructed (holds other elements). */
const DER_CONSTRUCTED = 0x20;
const DER_BIT_STRING = 0x03;
/** The outermost elements of a CSR are shallow; deeper than this is key material. */
const DER_WALK_DEPTH_MAX = 8;

/** Every element of a DER encoding that the walk can reach; stops quietly at anything malformed. */
export function derElements(der: Buffer, from = 0, to = der.length, depth = 0, out: DerElement[] = []): DerElement[] {
  let at = from;
  while (at + 2 <= to && depth <= DER_WALK_DEPTH_MAX) {
    const tag = der[at];
    const first = der[at + 1];
    let length = first;
    let lengthBytes = 1;
    if (first & 0x80) {
      const n = first & 0x7f;
      if (n === 0 || n > 4 || at + 2 + n > to) return out;
      length = 0;
      for (let i = 0; i < n; i++) length = length * 256 + der[at + 2 + i];
      lengthBytes = 1 + n;
    }
    const contentAt = at + 1 + lengthBytes;
    if (contentAt + length > to) return out;
    out.push({ tagAt: at, lengthAt: at + 1, lengthBytes, contentAt, contentLength: length });
    if (tag & DER_CONSTRUCTED) derElements(der, contentAt, contentAt + length, depth + 1, out);
    // A BIT STRING with no unused bits may wrap DER itself (a public key).
    else if (tag === DER_BIT_STRING && length > 1 && der[contentAt] === 0) derElements(der, contentAt + 1, contentAt + length, depth + 1, out);
    at = contentAt + length;
  }
  return out;
}

export interface CsrMutation {
  readonly seed: string;
  readonly how: string;
  readonly der: Buffer;
}

function withByte(der: Buffer, at: number, value: number): Buffer {
  const copy = Buffer.from(der);
  copy[at] = value & 0xff;
  return copy;
}

/** One structural or byte-level change to a seed's DER. */
function mutationOf(seed: SeedCsr): fc.Arbitrary<CsrMutation> {
  const der = seed.der;
  const elements = derElements(der);
  const element = fc.constantFrom(...elements);
  const offset = fc.nat({ max: der.length - 1 });
  const m = (how: string, bytes: Buffer): CsrMutation => ({ seed: seed.label, how, der: bytes });
  return fc.oneof(
    fc.constant(m("unchanged", der)),
    fc.tuple(offset, fc.integer({ min: 0, max: 7 })).map(([at, bit]) => m(`flip bit ${bit} at ${at}`, withByte(der, at, der[at] ^ (1 << bit)))),
    offset.map((at) => m(`truncate at ${at}`, der.subarray(0, at))),
    fc.tuple(offset, fc.uint8Array({ minLength: 1, maxLength: 16 })).map(([at, b]) => m(`insert ${b.length} at ${at}`, Buffer.concat([der.subarray(0, at), b, der.subarray(at)]))),
    fc.tuple(offset, fc.integer({ min: 1, max: 64 })).map(([at, n]) => m(`delete ${n} at ${at}`, Buffer.concat([der.subarray(0, at), der.subarray(at + n)]))),
    // Another tag than the element's own.
    fc.tuple(element, fc.integer({ min: 1, max: 255 })).map(([e, delta]) => m(`tag ${(der[e.tagAt] + delta) & 0xff} at ${e.tagAt}`, withByte(der, e.tagAt, der[e.tagAt] + delta))),
    fc.tuple(element, fc.constantFrom(1, -1, 2, 127, 128, 255)).map(([e, delta]) => m(`length ${delta >= 0 ? "+" : ""}${delta} at ${e.lengthAt}`,
      withByte(der, e.lengthAt + e.lengthBytes - 1, der[e.lengthAt + e.lengthBytes - 1] + delta))),
    element.map((e) => m(`indefinite length at ${e.lengthAt}`, withByte(der, e.lengthAt, 0x80))),
    fc.tuple(element, fc.constantFrom(0x84, 0x88, 0xff)).map(([e, form]) => m(`long length form ${form} at ${e.lengthAt}`,
      Buffer.concat([der.subarray(0, e.lengthAt), Buffer.from([form, 0xff, 0xff, 0xff, 0xff]), der.subarray(e.lengthAt + e.lengthBytes)]))),
    element.map((e) => m(`element at ${e.tagAt} doubled`, Buffer.concat([der.subarray(0, e.contentAt + e.contentLength), der.subarray(e.tagAt, e.contentAt + e.contentLength), der.subarray(e.contentAt + e.contentLength)]))),
    fc.integer({ min: 2, max: 20 }).map((n) => m(`nested ${n} sequences`, Buffer.concat([...Array.from({ length: n }, () => Buffer.from([0x30, 0x80])), der]))),
  );
}

function pemOf(der: Buffer, label = "CERTIFICATE REQUEST"): string {
  const lines = der.toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

export interface CsrCase {
  readonly mutation: CsrMutation;
  /** The JSON body sent to POST /v1/ca/sign. */
  readonly body: { csr: string; ttl?: string };
}

/** A sign request whose CSR is a mutated seed, in PEM (mostly), under another PEM label, or base64 bare. */
export function csrCases(seeds: readonly SeedCsr[]): fc.Arbitrary<CsrCase> {
  const mutation = fc.constantFrom(...seeds).chain(mutationOf);
  const wrap = fc.constantFrom("pem", "pem", "pem", "other label", "bare base64", "two pems");
  const ttl = fc.option(fc.constantFrom("1h", "1s", "0s", "24h", "25h", "-1h", "1ns", "x"), { nil: undefined });
  return fc.tuple(mutation, wrap, ttl).map(([mu, w, t]) => {
    const csr = w === "pem" ? pemOf(mu.der) : w === "other label" ? pemOf(mu.der, "CERTIFICATE") : w === "bare base64" ? mu.der.toString("base64") : pemOf(mu.der) + pemOf(mu.der);
    return { mutation: { ...mu, how: `${mu.how}, ${w}` }, body: t === undefined ? { csr } : { csr, ttl: t } };
  });
}
