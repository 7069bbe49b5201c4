// A large JSON answer as a list of Buffers of bounded size, built piece by piece: it is never one
// 30 MB string (one allocation, one long encode), and it is sent chunk by chunk.

import { SliceClock } from "./slices.js";

/** An encoded answer: its chunks, sent in order, and their total length. */
export interface EncodedBody {
  readonly chunks: readonly Buffer[];
  readonly bytes: number;
}

/** Characters gathered before they are encoded into one chunk: large enough that chunks are few, small enough to encode in well under a millisecond. */
export const JSON_CHUNK_CHARS = 64 * 1024;

/**
 * Writes a JSON array (or an object ending in one: give `open` and `close`) one item at a time.
 * Each item is already-encoded JSON; the writer adds the commas and cuts the text into chunks.
 */
export class JsonArrayWriter {
  private parts: string[] = [];
  private chars = 0;
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  private first = true;
  private finished = false;

  constructor(open = "[", private readonly close = "]", private readonly chunkChars = JSON_CHUNK_CHARS) {
    this.push(open);
  }

  item(json: string): void {
    if (this.finished) throw new Error("JsonArrayWriter: item() after finish()");
    this.push(this.first ? json : `,${json}`);
    this.first = false;
  }

  finish(): EncodedBody {
    if (this.finished) throw new Error("JsonArrayWriter: finish() twice");
    this.push(this.close);
    this.flush();
    this.finished = true;
    return { chunks: this.chunks, bytes: this.bytes };
  }

  private push(text: string): void {
    this.parts.push(text);
    this.chars += text.length;
    if (this.chars >= this.chunkChars) this.flush();
  }

  private flush(): void {
    if (this.parts.length === 0) return;
    const chunk = Buffer.from(this.parts.join(""), "utf8");
    this.parts = [];
    this.chars = 0;
    this.chunks.push(chunk);
    this.bytes += chunk.length;
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
