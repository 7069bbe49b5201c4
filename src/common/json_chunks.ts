// A large JSON answer as a list of Buffers of bounded size, built piece by piece: it is never one
// 30 MB string (one allocation, one long encode), and it is sent chunk by chunk.

import { SliceClock } from "./slices.js";

/** An encoded answer: its chunks, sent in order, and their total length. */
export interface EncodedBody {
  readonly chunks: readonly Buffer[];
  readonly bytes: number;
}

/** Bytes of one chunk (an entry larger than this gets a chunk of its own size). */
export const JSON_CHUNK_BYTES = 64 * 1024;
/** UTF-8 takes at most this many bytes per UTF-16 code unit (a lone surrogate becomes a 3-byte U+FFFD). */
const UTF8_BYTES_PER_UNIT_MAX = 3;

/**
 * Writes a JSON array (or an object ending in one: give `open` and `close`) one item at a time.
 * Each item is already-encoded JSON; the writer adds the commas and writes it straight into the
 * current chunk, so nothing of the answer but its Buffers outlives the item: the items' strings
 * die young, which keeps the garbage collector's pauses short while 30 MB are encoded.
 */
export class JsonArrayWriter {
  private readonly chunks: Buffer[] = [];
  private chunk: Buffer;
  private used = 0;
  private bytes = 0;
  private first = true;
  private finished = false;

  constructor(open = "[", private readonly close = "]", private readonly chunkBytes = JSON_CHUNK_BYTES) {
    this.chunk = Buffer.allocUnsafeSlow(chunkBytes);
    this.write(open);
  }

  item(json: string): void {
    if (this.finished) throw new Error("JsonArrayWriter: item() after finish()");
    if (!this.first) this.write(",");
    this.write(json);
    this.first = false;
  }

  finish(): EncodedBody {
    if (this.finished) throw new Error("JsonArrayWriter: finish() twice");
    this.write(this.close);
    this.seal();
    this.finished = true;
    return { chunks: this.chunks, bytes: this.bytes };
  }

  private write(text: string): void {
    const room = this.chunk.length - this.used;
    // Most items fit for certain; only near a chunk's end is the exact length worth counting.
    if (text.length * UTF8_BYTES_PER_UNIT_MAX > room) {
      const needed = Buffer.byteLength(text, "utf8");
      if (needed > room) {
        this.seal();
        this.chunk = Buffer.allocUnsafeSlow(Math.max(this.chunkBytes, needed));
      }
    }
    this.used += this.chunk.write(text, this.used, "utf8");
  }

  /** Ends the current chunk at what was written into it. */
  private seal(): void {
    if (this.used === 0) return;
    this.chunks.push(this.chunk.subarray(0, this.used));
    this.bytes += this.used;
    this.used = 0;
  }
}

/** A small answer encoded whole: one chunk. */
export function encodedJson(value: unknown): EncodedBody {
  const chunk = Buffer.from(JSON.stringify(value), "utf8");
  return { chunks: [chunk], bytes: chunk.length };
}

/**
 * Encodes the items `keep` accepts as one JSON array (inside `open`/`close`, if given), one item
 * at a time with `encode`, yielding whenever the slice is spent. An answer of 100,000 entries
 * takes some 400 ms to encode; no slice of it takes more than a few.
 */
export async function encodeArrayInSlices<T>(items: readonly T[], keep: (item: T) => boolean, encode: (item: T) => string,
  wrap: { readonly open?: string; readonly close?: string } = {}): Promise<EncodedBody> {
  const writer = new JsonArrayWriter(wrap.open ?? "[", wrap.close ?? "]");
  const clock = new SliceClock();
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (keep(item)) writer.item(encode(item));
    if (clock.tick()) await clock.pause();
  }
  return writer.finish();
}
