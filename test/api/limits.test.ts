// What a client may send and hold, against a real `cairn server`: a slowloris client is cut off
// within the headers timeout, a trickled body within the request timeout, an oversize header is
// answered 431, and one address past its connection cap is refused while others still get in.
// Answers are never bounded: a blocking query outlasts every receive timeout.

import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ProcessCluster, type ProcessNode } from "../support/cluster.js";
import { exchange, openSocket, readUntilClosed } from "../support/raw_http.js";

const HEADERS_TIMEOUT_MS = 2_000;
const REQUEST_TIMEOUT_MS = 3_000;
/** The server looks for expired requests every second (timeoutCheckIntervalMs). */
const CHECK_INTERVAL_MS = 1_000;
/** Scheduling on a busy two-core machine. */
const SLACK_MS = 1_500;
const CONNS_PER_CLIENT_MAX = 8;
const HEADER_BYTES_MAX = 4096;
/** How often the slow client sends its next byte: well inside every timeout, so only the total bound can cut it. */
const TRICKLE_INTERVAL_MS = 200;

/** Sends one byte of `text` every TRICKLE_INTERVAL_MS until the text or the socket ends. */
async function trickle(socket: Socket, text: string): Promise<void> {
  for (const ch of text) {
    if (socket.destroyed || socket.writableEnded) return;
    socket.write(ch);
    await sleep(TRICKLE_INTERVAL_MS);
  }
}

void describe("HTTP limits against hostile clients", () => {
  let cluster: ProcessCluster;
  let node: ProcessNode;
  const sockets: Socket[] = [];

  before(async () => {
    cluster = await ProcessCluster.start(1, [
      "--http-headers-timeout", `${HEADERS_TIMEOUT_MS}ms`,
      "--http-request-timeout", `${REQUEST_TIMEOUT_MS}ms`,
      "--http-max-conns-per-client", String(CONNS_PER_CLIENT_MAX),
      "--http-max-header-bytes", String(HEADER_BYTES_MAX),
    ]);
    node = await cluster.agreedLeader();
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await cluster.close();
  });

  void test("a slowloris client that trickles its headers is answered 408 and cut off within the headers timeout", async () => {
    const socket = await openSocket(node.info.http);
    sockets.push(socket);
    const headers = `GET /v1/cluster HTTP/1.1\r\nHost: x\r\n${"X-Slow: y\r\n".repeat(200)}\r\n`;
    const closed = readUntilClosed(socket, HEADERS_TIMEOUT_MS + CHECK_INTERVAL_MS + SLACK_MS * 3);
    void trickle(socket, headers);
    const result = await closed;
    assert.ok(result.closed, `the server still held the slow client after ${Math.round(result.afterMs)} ms`);
    assert.ok(result.afterMs <= HEADERS_TIMEOUT_MS + CHECK_INTERVAL_MS + SLACK_MS, `cut off after ${Math.round(result.afterMs)} ms`);
    assert.ok(result.afterMs >= HEADERS_TIMEOUT_MS - 100, `cut off after ${Math.round(result.afterMs)} ms, before the headers timeout`);
    assert.match(result.text, /^HTTP\/1\.1 408 /);
  });

  void test("a client that trickles its body is answered 408 and cut off within the request timeout", async () => {
    const socket = await openSocket(node.info.http);
    sockets.push(socket);
    const body = JSON.stringify({ value: "v".repeat(100) });
    socket.write(`PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
    const closed = readUntilClosed(socket, REQUEST_TIMEOUT_MS + CHECK_INTERVAL_MS + SLACK_MS * 3);
    void trickle(socket, body);
    const result = await closed;
    assert.ok(result.closed, `the server still held the slow body after ${Math.round(result.afterMs)} ms`);
    assert.ok(result.afterMs <= REQUEST_TIMEOUT_MS + CHECK_INTERVAL_MS + SLACK_MS, `cut off after ${Math.round(result.afterMs)} ms`);
    assert.match(result.text, /^HTTP\/1\.1 408 /);
    assert.equal((await node.get("slow")).status, 404, "the cut-off write must not have been applied");
  });

  void test("a blocking query outlasts every receive timeout: answers are not bounded, only receiving is", async () => {
    const index = Number((await fetch(node.url("/v1/ca/bundle"))).headers.get("x-cairn-index"));
    const waitMs = REQUEST_TIMEOUT_MS + CHECK_INTERVAL_MS + 1_000;
    const startMs = performance.now();
    const res = await fetch(node.url(`/v1/ca/bundle?index=${index}&wait=${waitMs}ms`));
    const tookMs = performance.now() - startMs;
    assert.equal(res.status, 200);
    assert.ok(tookMs >= waitMs - 50, `the query was answered after ${Math.round(tookMs)} ms, before its wait of ${waitMs} ms`);
  });

  void test("a header past the size limit is answered 431", async () => {
    const res = await fetch(node.url("/v1/cluster"), { headers: { "x-big": "b".repeat(HEADER_BYTES_MAX + 1) } });
    assert.equal(res.status, 431);
    const small = await fetch(node.url("/v1/cluster"), { headers: { "x-small": "b".repeat(HEADER_BYTES_MAX / 4) } });
    assert.equal(small.status, 200);
  });

  void test("one address past its connection cap is answered 429 and closed, while its open connections and other addresses still work", async () => {
    // A source address of its own, so the test's other connections (fetch keeps some alive) do not count.
    const crowded = "127.0.0.7";
    const held: Socket[] = [];
    for (let i = 0; i < CONNS_PER_CLIENT_MAX; i++) {
      const s = await openSocket(node.info.http, crowded);
      sockets.push(s);
      held.push(s);
      assert.equal((await exchange(s, "GET /v1/cluster HTTP/1.1\r\nHost: x\r\n\r\n", 5_000)).status, 200, `connection ${i + 1} of ${CONNS_PER_CLIENT_MAX}`);
    }
    for (let extra = 1; extra <= 3; extra++) {
      const s = await openSocket(node.info.http, crowded);
      sockets.push(s);
      const closed = readUntilClosed(s, 5_000);
      s.write("GET /v1/cluster HTTP/1.1\r\nHost: x\r\n\r\n");
      const result = await closed;
      assert.ok(result.closed, `connection ${CONNS_PER_CLIENT_MAX + extra} was held open`);
      assert.match(result.text, /^HTTP\/1\.1 429 /, `connection ${CONNS_PER_CLIENT_MAX + extra} got ${JSON.stringify(result.text.slice(0, 80))}`);
      assert.match(result.text, /retry-after: 1/i);
      assert.doesNotMatch(result.text, /"leader"/, "the refused connection's request must not have been served");
    }
    for (const s of held) assert.equal((await exchange(s, "GET /v1/cluster HTTP/1.1\r\nHost: x\r\n\r\n", 5_000)).status, 200);
    const other = await openSocket(node.info.http, "127.0.0.8");
    sockets.push(other);
    assert.equal((await exchange(other, "GET /v1/cluster HTTP/1.1\r\nHost: x\r\n\r\n", 5_000)).status, 200, "another address must still get in");
    // Closing some frees their places.
    held[0].destroy();
    held[1].destroy();
    await sleep(200);
    const again = await openSocket(node.info.http, crowded);
    sockets.push(again);
    assert.equal((await exchange(again, "GET /v1/cluster HTTP/1.1\r\nHost: x\r\n\r\n", 5_000)).status, 200, "a closed connection must free its place");
  });
});
