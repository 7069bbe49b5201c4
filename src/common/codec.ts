// The binary codec every replicated format is written in: the Raft log and wire (src/raft/codec.ts),
// registry commands and snapshots, the CA's state. Compact and allocation-light: numbers are LEB128
// varints, strings are length-prefixed UTF-8. Decoding never trusts its input: a malformed buffer
// raises CodecError, never a wrong value.

export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CodecError";
  }
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export class Writer {
  private buf: Uint8Array;
  private pos = 0;

  private readonly initialBytes: number;

  constructor(initialBytes = 256) {
    this.initialBytes = Math.max(16, initialBytes);
    this.buf = new Uint8Array(this.initialBytes);
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf[this.pos++] = v;
  }

  uint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new CodecError(`cannot encode ${v} as an unsigned integer`);
    this.reserve(8);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }

  bytes(v: Uint8Array): void {
    this.uint(v.byteLength);
    this.reserve(v.byteLength);
    this.buf.set(v, this.pos);
    this.pos += v.byteLength;
  }

  /** Bytes with no length in front: for a payload whose length was already written. */
  raw(v: Uint8Array): void {
    this.reserve(v.byteLength);
    this.buf.set(v, this.pos);
    this.pos += v.byteLength;
  }

  /** Length-prefixed UTF-8. Most strings here are short ASCII, copied in without an encoder call. */
  string(v: string): void {
    const n = v.length;
    let ascii = true;
    for (let i = 0; i < n && ascii; i++) ascii = v.charCodeAt(i) < 0x80;
    if (!ascii) {
      this.bytes(textEncoder.encode(v));
      return;
    }
    this.uint(n);
    this.reserve(n);
    for (let i = 0; i < n; i++) this.buf[this.pos++] = v.charCodeAt(i);
  }

  strings(v: readonly string[]): void {
    this.uint(v.length);
    for (const s of v) this.string(s);
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  /**
   * The bytes written since the last take, in a buffer of their own, and the writer empty again:
   * one writer serves as reusable scratch, shrinking back to its initial size after a large write.
   */
  take(): Uint8Array {
    const out = this.buf.slice(0, this.pos);
    this.pos = 0;
    if (this.buf.length > this.initialBytes) this.buf = new Uint8Array(this.initialBytes);
    return out;
  }
}

/**
 * A state machine's snapshot as a list of chunks, in order. Large states are produced in slices;
 * keeping them apart until the one final copy saves holding the whole state several times over.
 */
export type Chunks = readonly Uint8Array[];

export function chunksLength(chunks: Chunks): number {
  let total = 0;
  for (const c of chunks) total += c.byteLength;
  return total;
}

/** Writes `chunks` as one length-prefixed byte string, as Writer.bytes would write their concatenation. */
export function writeChunks(w: Writer, chunks: Chunks): void {
  w.uint(chunksLength(chunks));
  for (const c of chunks) w.raw(c);
}

export function concatChunks(chunks: Chunks): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(chunksLength(chunks));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

export class Reader {
  private pos = 0;

  constructor(private readonly buf: Uint8Array) {}

  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new CodecError(`truncated: needed ${n} more bytes at offset ${this.pos} of ${this.buf.length}`);
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }

  /** A boolean is exactly 0 or 1: a damaged byte must not read as "false" (a reject as an accept). */
  bool(): boolean {
    const b = this.u8();
    if (b > 1) throw new CodecError(`invalid boolean byte ${b} at offset ${this.pos - 1}`);
    return b === 1;
  }

  uint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(result)) break;
        return result;
      }
      scale *= 0x80;
    }
    throw new CodecError(`malformed unsigned integer ending at offset ${this.pos}`);
  }

  bytes(): Uint8Array {
    const n = this.uint();
    this.need(n);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  string(): string {
    try {
      return textDecoder.decode(this.bytes());
    } catch (err) {
      if (err instanceof CodecError) throw err;
      throw new CodecError(`invalid UTF-8 string ending at offset ${this.pos}`);
    }
  }

  strings(): string[] {
    const n = this.uint();
    if (n > this.buf.length) throw new CodecError(`string list of ${n} items cannot fit in ${this.buf.length} bytes`);
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.string());
    return out;
  }

  done(): void {
    if (this.pos !== this.buf.length) throw new CodecError(`${this.buf.length - this.pos} unexpected trailing bytes`);
  }
}

