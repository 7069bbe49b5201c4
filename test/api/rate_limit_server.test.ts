// Rate limits on a real `cairn server`: a burst past a token's or an address's limit gets 429
// with the Retry-After its bucket computes and a body naming the limit; tokens and addresses are
// limited independently; signing is its own class; reads are not limited; the limit recovers.
// Requests come from distinct loopback addresses (127.0.0.x) so each has its own address bucket.

import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ProcessCluster, type ProcessNode } from "../support/cluster.js";
import { csrKeys, csrPem } from "../support/fast_csr.js";

interface Answer { readonly status: number; readonly retryAfter: string | undefined; readonly body: { limit?: string; error?: string; retryAfterSeconds?: number } }

function call(node: ProcessNode, method: string, path: string, opts: { from: string; token?: string; body?: unknown }): Promise<Answer> {
  const [host, port] = node.info.http.split(":");
  const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  return new Promise((resolve, reject) => {
    const req = request({
      host, port: Number(port), method, path, localAddress: opts.from,
      headers: { ...(payload === undefined ? {} : { "content-type": "application/json" }), ...(opts.token === undefined ? {} : { "x-consul-token": opts.token }) },
    }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => { text += c; });
      res.on("end", () => {
        let body: Answer["body"] = {};
        try { body = JSON.parse(text) as Answer["body"]; } catch { /* not JSON: the test reads the status */ }
        const ra = res.headers["retry-after"];
        resolve({ status: res.statusCode ?? 0, retryAfter: typeof ra === "string" ? ra : undefined, body });
      });
    });
    req.on("error", reject);
    req.end(payload);
  });
}

const put = (node: ProcessNode, from: string, token?: string): Promise<Answer> =>
  call(node, "PUT", "/v1/kv/rate-test", { from, ...(token === undefined ? {} : { token }), body: { value: "v" } });

void describe("rate limits on a real server", () => {
  let cluster: ProcessCluster;
  let node: ProcessNode;
  before(async () => {
    // Writes: a token 0.5/s in bursts of 3, an address 0.5/s in bursts of 5; signing: a token 0.25/s in bursts of 2.
    cluster = await ProcessCluster.start(1, [
      "--rate-limit-write-token", "0.5,3", "--rate-limit-write-address", "0.5,5",
      "--rate-limit-sign-token", "0.25,2", "--rate-limit-sign-address", "100,100",
    ]);
    node = await cluster.agreedLeader();
  });
  after(() => cluster.close());

  test("a token's burst is admitted, the next write gets 429 naming the token limit, and it recovers after Retry-After", async () => {
    for (let i = 0; i < 3; i++) assert.equal((await put(node, "127.0.0.1", "token-a")).status, 200);
    const refused = await put(node, "127.0.0.1", "token-a");
    assert.equal(refused.status, 429);
    assert.equal(refused.body.limit, "write per token");
    // 0.5/s: the next token is about 2 s away (a little less, time has passed), so Retry-After is 2.
    assert.equal(refused.retryAfter, "2");
    assert.equal(refused.body.retryAfterSeconds, 2);
    assert.match(refused.body.error ?? "", /this token has used its write allowance \(0\.5\/s, bursts of 3\)/);
    // Another token from the same address has its own bucket; the address has 2 of its 5 left.
    assert.equal((await put(node, "127.0.0.1", "token-b")).status, 200);
    assert.equal((await put(node, "127.0.0.1", "token-b")).status, 200);
    const address = await put(node, "127.0.0.1", "token-b");
    assert.equal(address.status, 429);
    assert.equal(address.body.limit, "write per address");
    // Reads are not limited.
    assert.equal((await call(node, "GET", "/v1/kv/rate-test", { from: "127.0.0.1", token: "token-a" })).status, 200);
    await sleep(Number(refused.retryAfter) * 1000);
    assert.equal((await put(node, "127.0.0.1", "token-a")).status, 200, "a client that waits Retry-After is admitted again");
  });

  test("each address has its own bucket, which anonymous requests share", async () => {
    for (let i = 0; i < 5; i++) assert.equal((await put(node, "127.0.0.2")).status, 200, `anonymous write ${i + 1} of the burst`);
    const refused = await put(node, "127.0.0.2");
    assert.equal(refused.status, 429);
    assert.equal(refused.body.limit, "write per address");
    assert.equal(refused.retryAfter, "2");
    assert.equal((await put(node, "127.0.0.3")).status, 200, "another address is not limited by this one's use");
  });

  test("signing is limited apart from writes, per token", async () => {
    const [key] = csrKeys(1);
    const sign = (n: number): Promise<Answer> =>
      call(node, "POST", "/v1/ca/sign", { from: "127.0.0.4", token: "token-s", body: { csr: csrPem(key, "spiffe://cairn.local/ns/default/svc/web", `s${n}.web`) } });
    // Exhaust token-s's writes first: signing must not care.
    for (let i = 0; i < 3; i++) await put(node, "127.0.0.4", "token-s");
    assert.equal((await put(node, "127.0.0.4", "token-s")).status, 429);
    assert.equal((await sign(1)).status, 200);
    assert.equal((await sign(2)).status, 200);
    const refused = await sign(3);
    assert.equal(refused.status, 429);
    assert.equal(refused.body.limit, "sign per token");
    assert.equal(refused.retryAfter, "4"); // 0.25/s: 4 s per certificate
  });
});
