// DER and PEM, the encodings of X.509. The reader accepts only what a DER encoder can produce:
// single-byte tags, definite minimal lengths that fit inside the enclosing element, and no
// trailing bytes. It never copies: an element is a tag and offsets into the caller's bytes.
// The writers serve two paths: small concatenating builders for the rare CA certificates, and
// headerBytes/writeHeader/writeTime for the leaf hot path, which sizes everything first and
// writes once into one buffer. It knows encodings, not certificates, so it sits in src/common: the
// CA reads and writes X.509 with it, and the client library writes its CSRs with it.

export class DerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DerError";
  }
}

export const Tag = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  utf8String: 0x0c,
  printableString: 0x13,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

/** The tag of a context-specific element `[n]`: constructed for EXPLICIT or structured IMPLICIT types. */
export function contextTag(n: number, constructed: boolean): number {
  if (!Number.isInteger(n) || n < 0 || n > 30) throw new RangeError(`context tag [${n}] needs the high-tag-number form, which X.509 never uses`);
  return 0x80 | (constructed ? 0x20 : 0) | n;
}

/** One element inside some bytes: [start, valueStart) is the header, [valueStart, end) the value. */
export interface DerElement {
  readonly tag: number;
  readonly start: number;
  readonly valueStart: number;
  readonly end: number;
}

/** Lengths past 4 bytes (4 GiB) cannot occur in anything Cairn reads; refusing them keeps arithmetic exact. */
const LENGTH_BYTES_MAX = 4;

export class DerReader {
  private pos: number;

  constructor(
    readonly bytes: Uint8Array,
    start = 0,
    private readonly limit = bytes.length,
  ) {
    this.pos = start;
  }

  /** A reader over the value of `element`, which must come from the same bytes. */
  static inside(bytes: Uint8Array, element: DerElement): DerReader {
    return new DerReader(bytes, element.valueStart, element.end);
  }

  get atEnd(): boolean {
    return this.pos >= this.limit;
  }

  /** The next element's tag, or -1 when none is left. */
  peekTag(): number {
    return this.pos < this.limit ? this.bytes[this.pos] : -1;
  }

  /** Reads the next element; `what` names it in errors, `tag` (if given) is the one it must have. */
  read(what: string, tag?: number): DerElement {
    const bytes = this.bytes;
    const start = this.pos;
    if (start >= this.limit) throw new DerError(`${what} is missing: the enclosing element ends first`);
    const t = bytes[start];
    if ((t & 0x1f) === 0x1f) throw new DerError(`${what} uses a multi-byte tag, which DER in X.509 never does`);
    if (tag !== undefined && t !== tag) throw new DerError(`${what} must have tag 0x${hex2(tag)} but has 0x${hex2(t)}`);
    if (start + 2 > this.limit) throw new DerError(`${what} is truncated inside its header`);
    let length = bytes[start + 1];
    let valueStart = start + 2;
    if (length >= 0x80) {
      const lengthBytes = length & 0x7f;
      if (lengthBytes === 0) throw new DerError(`${what} has an indefinite length, which DER forbids`);
      if (lengthBytes > LENGTH_BYTES_MAX) throw new DerError(`${what} has a ${lengthBytes}-byte length, longer than anything X.509 needs`);
      if (valueStart + lengthBytes > this.limit) throw new DerError(`${what} is truncated inside its length`);
      if (bytes[valueStart] === 0) throw new DerError(`${what} has a length with a leading zero byte, which DER forbids`);
      length = 0;
      for (let i = 0; i < lengthBytes; i++) length = length * 256 + bytes[valueStart + i];
      if (length < 0x80) throw new DerError(`${what} uses the long form for a length under 128, which DER forbids`);
      valueStart += lengthBytes;
    }
    if (length > this.limit - valueStart) {
      throw new DerError(`${what} claims ${length} bytes but only ${this.limit - valueStart} remain`);
    }
    this.pos = valueStart + length;
    return { tag: t, start, valueStart, end: valueStart + length };
  }

  /** Reads the next element only if it has `tag` (for OPTIONAL and DEFAULT fields). */
  readOptional(what: string, tag: number): DerElement | undefined {
    return this.peekTag() === tag ? this.read(what, tag) : undefined;
  }

  /** Asserts everything was read: trailing bytes mean a different structure than the one expected. */
  finish(what: string): void {
    if (this.pos !== this.limit) throw new DerError(`${what} has ${this.limit - this.pos} unexpected bytes after its last field`);
  }
}

// ---------------------------------------------------------------- reading values

export function valueOf(bytes: Uint8Array, element: DerElement): Uint8Array {
  return bytes.subarray(element.valueStart, element.end);
}

/** The whole element, header included (what a signature covers, or what is spliced verbatim). */
export function elementBytes(bytes: Uint8Array, element: DerElement): Uint8Array {
  return bytes.subarray(element.start, element.end);
}

/** Whether the element's value equals `expected` byte for byte (used to compare OIDs without decoding them). */
export function valueEquals(bytes: Uint8Array, element: DerElement, expected: Uint8Array): boolean {
  const length = element.end - element.valueStart;
  if (length !== expected.length) return false;
  for (let i = 0; i < length; i++) if (bytes[element.valueStart + i] !== expected[i]) return false;
  return true;
}

/** A DER INTEGER's value, checked to be minimal; returns its two's-complement bytes. */
export function readIntegerBytes(bytes: Uint8Array, element: DerElement, what: string): Uint8Array {
  const length = element.end - element.valueStart;
  if (length === 0) throw new DerError(`${what} is an empty INTEGER`);
  if (length > 1) {
    const first = bytes[element.valueStart];
    const second = bytes[element.valueStart + 1];
    if ((first === 0x00 && second < 0x80) || (first === 0xff && second >= 0x80)) {
      throw new DerError(`${what} is an INTEGER with a redundant leading byte, which DER forbids`);
    }
  }
  return valueOf(bytes, element);
}

/** A small non-negative INTEGER (a version, a path length): at most 31 bits. */
export function readSmallInteger(bytes: Uint8Array, element: DerElement, what: string): number {
  const value = readIntegerBytes(bytes, element, what);
  if (value[0] >= 0x80) throw new DerError(`${what} is negative`);
  if (value.length > 4 || (value.length === 4 && value[0] !== 0)) throw new DerError(`${what} is too large`);
  let n = 0;
  for (const b of value) n = n * 256 + b;
  return n;
}

export function readBoolean(bytes: Uint8Array, element: DerElement, what: string): boolean {
  if (element.end - element.valueStart !== 1) throw new DerError(`${what} is a BOOLEAN that is not one byte long`);
  const b = bytes[element.valueStart];
  if (b !== 0x00 && b !== 0xff) throw new DerError(`${what} is a BOOLEAN that is neither 0x00 nor 0xff, which DER forbids`);
  return b === 0xff;
}

/** The octets of a BIT STRING that must be whole bytes (keys, signatures): its unused-bits count must be 0. */
export function readBitStringOctets(bytes: Uint8Array, element: DerElement, what: string): Uint8Array {
  if (element.end === element.valueStart) throw new DerError(`${what} is a BIT STRING without its unused-bits byte`);
  if (bytes[element.valueStart] !== 0) throw new DerError(`${what} must be whole bytes but says ${bytes[element.valueStart]} bits are unused`);
  return bytes.subarray(element.valueStart + 1, element.end);
}

/**
 * A named-bit-list BIT STRING (keyUsage) as a number whose bit i (from the most significant
 * bit of the first octet) is bit i of the list. Untrimmed trailing zero bits are tolerated:
 * some CA software of operators' imported certificates emits them, and they change no meaning.
 */
export function readNamedBits(bytes: Uint8Array, element: DerElement, what: string): number {
  const length = element.end - element.valueStart;
  if (length === 0) throw new DerError(`${what} is a BIT STRING without its unused-bits byte`);
  const unused = bytes[element.valueStart];
  if (unused > 7 || (length === 1 && unused !== 0)) throw new DerError(`${what} has an impossible unused-bits count ${unused}`);
  if (length > 3) throw new DerError(`${what} has more named bits than any X.509 extension defines`);
  if (length > 1) {
    const last = bytes[element.end - 1];
    if ((last & ((1 << unused) - 1)) !== 0) throw new DerError(`${what} sets bits it declares unused`);
  }
  let named = 0;
  for (let i = 1; i < length; i++) {
    const octet = bytes[element.valueStart + i];
    for (let bit = 0; bit < 8; bit++) if (octet & (0x80 >>> bit)) named |= 1 << ((i - 1) * 8 + bit);
  }
  return named;
}

/** An IA5String (URIs, DNS names) restricted to printable ASCII: control bytes in a name are never legitimate. */
export function readPrintableAscii(bytes: Uint8Array, element: DerElement, what: string): string {
  for (let i = element.valueStart; i < element.end; i++) {
    const b = bytes[i];
    if (b < 0x21 || b > 0x7e) throw new DerError(`${what} contains byte 0x${hex2(b)}; only printable ASCII without spaces is accepted`);
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset + element.valueStart, element.end - element.valueStart).toString("latin1");
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A directory string (UTF8String, PrintableString, IA5String or the legacy T61/BMP forms) for display. */
export function readDirectoryString(bytes: Uint8Array, element: DerElement, what: string): string {
  const value = valueOf(bytes, element);
  switch (element.tag) {
    case Tag.utf8String:
      try {
        return utf8.decode(value);
      } catch {
        throw new DerError(`${what} is a UTF8String that is not valid UTF-8`);
      }
    case Tag.printableString:
    case Tag.ia5String:
    case 0x14: // TeletexString, read as Latin-1 as most decoders do
      return Buffer.from(value).toString("latin1");
    case 0x1e: {
      // BMPString: UTF-16 big-endian.
      if (value.length % 2 !== 0) throw new DerError(`${what} is a BMPString with an odd length`);
      return Buffer.from(value).swap16().toString("utf16le");
    }
    default:
      throw new DerError(`${what} has tag 0x${hex2(element.tag)}, which is not a directory string`);
  }
}

/** The dotted form of an OBJECT IDENTIFIER, for messages and lookups on the slow path. */
export function readOid(bytes: Uint8Array, element: DerElement, what: string): string {
  const length = element.end - element.valueStart;
  if (length === 0 || length > 64) throw new DerError(`${what} is an OBJECT IDENTIFIER of impossible length ${length}`);
  const arcs: number[] = [];
  let arc = 0;
  let arcStarted = false;
  for (let i = element.valueStart; i < element.end; i++) {
    const b = bytes[i];
    if (!arcStarted && b === 0x80) throw new DerError(`${what} has an arc with a leading zero, which DER forbids`);
    arcStarted = true;
    arc = arc * 128 + (b & 0x7f);
    if (arc > Number.MAX_SAFE_INTEGER / 128) throw new DerError(`${what} has an arc too large to represent`);
    if ((b & 0x80) === 0) {
      if (arcs.length === 0) {
        const first = arc < 40 ? 0 : arc < 80 ? 1 : 2;
        arcs.push(first, arc - 40 * first);
      } else {
        arcs.push(arc);
      }
      arc = 0;
      arcStarted = false;
    }
  }
  if (arcStarted) throw new DerError(`${what} ends inside an arc`);
  return arcs.join(".");
}

const MS_PER_SECOND = 1000;

/** A UTCTime or GeneralizedTime in the one form RFC 5280 allows (seconds, "Z", no fraction), as Unix ms. */
export function readTime(bytes: Uint8Array, element: DerElement, what: string): number {
  const length = element.end - element.valueStart;
  let year: number;
  let p = element.valueStart;
  if (element.tag === Tag.utcTime && length === 13) {
    const yy = digits(bytes, p, 2, what);
    year = yy < 50 ? 2000 + yy : 1900 + yy;
    p += 2;
  } else if (element.tag === Tag.generalizedTime && length === 15) {
    year = digits(bytes, p, 4, what);
    p += 4;
  } else {
    throw new DerError(`${what} must be a UTCTime YYMMDDHHMMSSZ or a GeneralizedTime YYYYMMDDHHMMSSZ`);
  }
  const month = digits(bytes, p, 2, what);
  const day = digits(bytes, p + 2, 2, what);
  const hour = digits(bytes, p + 4, 2, what);
  const minute = digits(bytes, p + 6, 2, what);
  const second = digits(bytes, p + 8, 2, what);
  if (bytes[p + 10] !== 0x5a) throw new DerError(`${what} must end in Z (UTC)`);
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const check = new Date(ms);
  // Date.UTC rolls 31 February over into March; a round trip catches every impossible field.
  if (check.getUTCFullYear() !== year || check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day || check.getUTCHours() !== hour || check.getUTCMinutes() !== minute || check.getUTCSeconds() !== second) {
    throw new DerError(`${what} is not a real date and time`);
  }
  return ms;
}

function digits(bytes: Uint8Array, at: number, count: number, what: string): number {
  let n = 0;
  for (let i = 0; i < count; i++) {
    const d = bytes[at + i] - 0x30;
    if (d < 0 || d > 9) throw new DerError(`${what} has a non-digit where a digit belongs`);
    n = n * 10 + d;
  }
  return n;
}

// ---------------------------------------------------------------- writing

/** Bytes taken by the tag and length of an element whose value is `length` bytes. */
export function headerBytes(length: number): number {
  return length < 0x80 ? 2 : length < 0x100 ? 3 : length < 0x10000 ? 4 : length < 0x1000000 ? 5 : 6;
}

/** Writes a tag and a DER length at `pos`; returns where the value starts. */
export function writeHeader(out: Uint8Array, pos: number, tag: number, length: number): number {
  out[pos++] = tag;
  if (length < 0x80) {
    out[pos++] = length;
    return pos;
  }
  const lengthBytes = headerBytes(length) - 2;
  out[pos++] = 0x80 | lengthBytes;
  for (let i = lengthBytes - 1; i >= 0; i--) out[pos++] = (length >>> (8 * i)) & 0xff;
  return pos;
}

/** One element with the concatenation of `parts` as its value (slow path: allocates). */
export function der(tag: number, ...parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(headerBytes(length) + length);
  let pos = writeHeader(out, 0, tag, length);
  for (const part of parts) {
    out.set(part, pos);
    pos += part.length;
  }
  return out;
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let pos = 0;
  for (const part of parts) {
    out.set(part, pos);
    pos += part.length;
  }
  return out;
}

export function encodeOid(dotted: string): Uint8Array {
  const arcs = dotted.split(".").map(Number);
  if (arcs.length < 2 || arcs.some((a) => !Number.isSafeInteger(a) || a < 0) || arcs[0] > 2 || (arcs[0] < 2 && arcs[1] >= 40)) {
    throw new RangeError(`"${dotted}" is not an object identifier`);
  }
  const out: number[] = [];
  const push = (arc: number): void => {
    const septets = [arc % 128];
    for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128)) septets.unshift((rest % 128) | 0x80);
    out.push(...septets);
  };
  push(arcs[0] * 40 + arcs[1]);
  for (const arc of arcs.slice(2)) push(arc);
  return der(Tag.oid, Uint8Array.from(out));
}

/** A non-negative INTEGER from unsigned big-endian bytes, made minimal. */
export function encodeUnsignedInteger(magnitude: Uint8Array): Uint8Array {
  let first = 0;
  while (first < magnitude.length - 1 && magnitude[first] === 0) first++;
  const trimmed = magnitude.subarray(first);
  return trimmed[0] >= 0x80 ? der(Tag.integer, Uint8Array.of(0), trimmed) : der(Tag.integer, trimmed);
}

export function encodeSmallInteger(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new RangeError(`${n} is not a small non-negative integer`);
  const bytes = [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  return encodeUnsignedInteger(Uint8Array.from(bytes));
}

export const DER_NULL = Uint8Array.of(Tag.null, 0);
export const DER_TRUE = Uint8Array.of(Tag.boolean, 1, 0xff);

export function encodeOctetString(value: Uint8Array): Uint8Array {
  return der(Tag.octetString, value);
}

/** A BIT STRING of whole bytes. */
export function encodeBitString(octets: Uint8Array): Uint8Array {
  return der(Tag.bitString, Uint8Array.of(0), octets);
}

/** A named-bit-list BIT STRING (keyUsage), trimmed of trailing zero bits as DER requires. */
export function encodeNamedBits(namedBits: readonly number[]): Uint8Array {
  if (namedBits.length === 0) throw new RangeError("a named bit list needs at least one bit");
  const highest = Math.max(...namedBits);
  const octets = new Uint8Array(Math.floor(highest / 8) + 1);
  for (const bit of namedBits) octets[Math.floor(bit / 8)] |= 0x80 >>> (bit % 8);
  const unused = 7 - (highest % 8);
  return der(Tag.bitString, Uint8Array.of(unused), octets);
}

const textEncoder = new TextEncoder();

export function encodeUtf8String(value: string): Uint8Array {
  return der(Tag.utf8String, textEncoder.encode(value));
}

/** Bytes a UTCTime (years 1950-2049) or GeneralizedTime (other years) of `ms` takes, header included. */
export function timeBytes(ms: number): number {
  const year = new Date(ms).getUTCFullYear();
  return year >= 1950 && year < 2050 ? 15 : 17;
}

/**
 * Writes `ms` (whole seconds; the fraction is dropped) as RFC 5280 requires: UTCTime through
 * 2049, GeneralizedTime from 2050. Returns the position after it.
 */
export function writeTime(out: Uint8Array, pos: number, ms: number): number {
  const date = new Date(ms);
  const year = date.getUTCFullYear();
  if (!(year >= 0 && year <= 9999)) throw new RangeError(`time ${ms} is outside years 0000-9999`);
  if (year >= 1950 && year < 2050) {
    out[pos++] = Tag.utcTime;
    out[pos++] = 13;
    pos = writeDigits(out, pos, year % 100, 2);
  } else {
    out[pos++] = Tag.generalizedTime;
    out[pos++] = 15;
    pos = writeDigits(out, pos, year, 4);
  }
  pos = writeDigits(out, pos, date.getUTCMonth() + 1, 2);
  pos = writeDigits(out, pos, date.getUTCDate(), 2);
  pos = writeDigits(out, pos, date.getUTCHours(), 2);
  pos = writeDigits(out, pos, date.getUTCMinutes(), 2);
  pos = writeDigits(out, pos, date.getUTCSeconds(), 2);
  out[pos++] = 0x5a;
  return pos;
}

export function encodeTime(ms: number): Uint8Array {
  const out = new Uint8Array(timeBytes(ms));
  writeTime(out, 0, ms);
  return out;
}

/** The instant an encoded time names: `ms` without its fraction of a second. */
export function wholeSecondMs(ms: number): number {
  return Math.floor(ms / MS_PER_SECOND) * MS_PER_SECOND;
}

function writeDigits(out: Uint8Array, pos: number, n: number, count: number): number {
  for (let i = count - 1; i >= 0; i--) {
    out[pos + i] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  }
  return pos + count;
}

function hex2(b: number): string {
  return b.toString(16).padStart(2, "0");
}

// ---------------------------------------------------------------- PEM (RFC 7468)

const PEM_LINE_CHARS = 64;

/** 64-column base64 between BEGIN/END lines, with a trailing newline. */
export function pemEncode(label: string, der: Uint8Array): string {
  const base64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64");
  let body = "";
  for (let i = 0; i < base64.length; i += PEM_LINE_CHARS) body += base64.slice(i, i + PEM_LINE_CHARS) + "\n";
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

export interface PemBlock {
  readonly label: string;
  readonly der: Uint8Array;
}

const PEM_BEGIN = "-----BEGIN ";
const PEM_DASHES = "-----";
const PEM_LABEL = /^[A-Z0-9 ]{1,64}$/;
/** 1 for each base64 alphabet character, 2 for whitespace PEM allows between characters, 0 otherwise. */
const BASE64_CLASS = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") BASE64_CLASS[c.charCodeAt(0)] = 1;
for (const c of " \t\r\n") BASE64_CLASS[c.charCodeAt(0)] = 2;
const PAD = 0x3d;

/**
 * Whether `body` is strict base64 once whitespace is skipped: alphabet characters, a multiple of
 * four of them, and '=' padding only at the end. Checked by hand in one pass because this runs
 * for every CSR, and Buffer's decoder silently skips anything it does not understand.
 */
function isStrictBase64(body: string): boolean {
  let chars = 0;
  let padding = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    const kind = c < 128 ? BASE64_CLASS[c] : 0;
    if (kind === 2) continue;
    if (c === PAD) {
      if (++padding > 2) return false;
    } else if (kind !== 1 || padding > 0) {
      return false;
    }
    chars++;
  }
  return chars > 0 && chars % 4 === 0;
}

/**
 * Every PEM block in `pem`, in order. Text between blocks is ignored (RFC 7468 allows
 * explanations there), but a block itself must be well formed: matching labels and strict
 * base64. Throws DerError otherwise.
 */
export function pemDecodeBlocks(pem: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  let from = 0;
  for (;;) {
    const begin = pem.indexOf(PEM_BEGIN, from);
    if (begin < 0) return blocks;
    const labelEnd = pem.indexOf(PEM_DASHES, begin + PEM_BEGIN.length);
    if (labelEnd < 0) throw new DerError("a PEM BEGIN line is not closed with -----");
    const label = pem.slice(begin + PEM_BEGIN.length, labelEnd);
    if (!PEM_LABEL.test(label)) throw new DerError("a PEM block has a malformed label");
    const bodyStart = labelEnd + PEM_DASHES.length;
    const endLine = `-----END ${label}-----`;
    const end = pem.indexOf(endLine, bodyStart);
    if (end < 0) throw new DerError(`the PEM block "${label}" has no matching END line`);
    const body = pem.slice(bodyStart, end);
    if (!isStrictBase64(body)) throw new DerError(`the PEM block "${label}" is not valid base64`);
    const bytes = Buffer.from(body, "base64");
    blocks.push({ label, der: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) });
    from = end + endLine.length;
  }
}

/** The DER of every block labelled `label` (other blocks are skipped). Throws DerError on a malformed block. */
export function pemDecodeAll(pem: string, label: string): Uint8Array[] {
  return pemDecodeBlocks(pem)
    .filter((b) => b.label === label)
    .map((b) => b.der);
}
