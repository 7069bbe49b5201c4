// The client's server-sent events parser, fed the same stream cut at every place a network could
// cut it.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type SseEvent, SseEventTooLargeError, SseParser } from "../../src/client/sse.js";

function parseAll(pieces: readonly string[], eventCharsMax = 1_000_000): { events: SseEvent[]; parser: SseParser } {
  const parser = new SseParser(eventCharsMax);
  const events = pieces.flatMap((p) => parser.feed(p));
  return { events, parser };
}

const STREAM = "\uFEFFretry: 1000\n\n: a comment, as keep-alives are sent\n" +
  "event: events\nid: 7\ndata: {\"revision\":7}\n\n" +
  "event: reset\r\ndata: first line\r\ndata:second line\r\nunknown: ignored\r\n\r\n" +
  "event: progress\rid: 9\rdata: {\"revision\":9}\r\r" +
  "id: 10\nevent: nothing\n\n" +
  "data\n\n" +
  "data: é and 日本\n\n";

const EXPECTED: SseEvent[] = [
  { event: "events", data: "{\"revision\":7}", id: "7" },
  { event: "reset", data: "first line\nsecond line", id: undefined },
  { event: "progress", data: "{\"revision\":9}", id: "9" },
  // An event without data is not dispatched, and its id does not carry over to the next one.
  { event: "message", data: "", id: undefined },
  { event: "message", data: "é and 日本", id: undefined },
];

void describe("SseParser", () => {
  void test("parses LF, CRLF and CR line endings, comments, retry, multi-line data and a leading BOM", () => {
    const { events, parser } = parseAll([STREAM]);
    assert.deepEqual(events, EXPECTED);
    assert.equal(parser.retryMs, 1000);
  });

  void test("the same events come out however the stream is cut into two or three chunks", () => {
    for (let a = 0; a <= STREAM.length; a++) {
      assert.deepEqual(parseAll([STREAM.slice(0, a), STREAM.slice(a)]).events, EXPECTED, `cut at ${a}`);
    }
    for (let a = 0; a <= STREAM.length; a += 3) {
      for (let b = a; b <= STREAM.length; b += 5) {
        assert.deepEqual(parseAll([STREAM.slice(0, a), STREAM.slice(a, b), STREAM.slice(b)]).events, EXPECTED, `cut at ${a} and ${b}`);
      }
    }
    assert.deepEqual(parseAll([...STREAM]).events, EXPECTED, "one character at a time");
  });

  void test("an event cut off by the end of the stream is not dispatched", () => {
    assert.deepEqual(parseAll(["event: events\nid: 3\ndata: {\"revision\":3}\n"]).events, []);
  });

  void test("an event longer than eventCharsMax is refused, whether its lines end or not", () => {
    assert.throws(() => parseAll(["data: ", "x".repeat(60), "y".repeat(60)], 100), SseEventTooLargeError);
    assert.throws(() => parseAll([`data: ${"x".repeat(60)}\ndata: ${"y".repeat(60)}\n`], 100), SseEventTooLargeError);
    // The bound is per event: many events within it pass.
    const many = Array.from({ length: 50 }, (_, i) => `data: ${"z".repeat(80)}${i}\n\n`).join("");
    assert.equal(parseAll([many], 100).events.length, 50);
  });
});
