// Admission of new xDS streams: the token bucket on its own with a hand-driven clock, and the
// service holding streams past the rate (unread, not failed) and refusing past the queue bound.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { AdmissionGate, type AdmissionClock } from "../../src/api/xds/admission.js";
import { ENDPOINT_TYPE } from "../../src/api/xds/resources.js";
import { waitFor } from "../support/cluster.js";
import { XdsHarness } from "./harness.js";
import { adsClient, RawAdsStream, type SotwResponse } from "./raw_client.js";

/** Time moves only when the test says; due timers fire then, in order. */
class ManualClock implements AdmissionClock {
  private now = 0;
  private timers: { atMs: number; callback: () => void }[] = [];

  nowMs(): number {
    return this.now;
  }

  schedule(callback: () => void, delayMs: number): () => void {
    const timer = { atMs: this.now + delayMs, callback };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  advance(ms: number): void {
    this.now += ms;
    for (;;) {
      const due = this.timers.filter((t) => t.atMs <= this.now).sort((a, b) => a.atMs - b.atMs)[0];
      if (due === undefined) return;
      this.timers = this.timers.filter((t) => t !== due);
      due.callback();
    }
  }

  get pendingTimers(): number {
    return this.timers.length;
  }
}

void describe("xDS stream admission", () => {
  void test("the bucket admits its burst at once, then one stream per 1/rate, in arrival order", () => {
    const clock = new ManualClock();
    const gate = new AdmissionGate({ ratePerSecond: 10, burst: 2, waitingMax: 10 }, clock);
    const admitted: number[] = [];
    const tickets = [1, 2, 3, 4, 5].map((n) => gate.enter(() => admitted.push(n)));
    assert.deepEqual(admitted, [1, 2]);
    assert.deepEqual(tickets.map((t) => t?.waited), [false, false, true, true, true]);
    assert.equal(gate.waitingCount, 3);
    clock.advance(99);
    assert.deepEqual(admitted, [1, 2]);
    clock.advance(1);
    assert.deepEqual(admitted, [1, 2, 3]);
    tickets[3]?.cancel();
    clock.advance(100);
    assert.deepEqual(admitted, [1, 2, 3, 5], "a cancelled stream leaves the queue");
    assert.equal(gate.waitingCount, 0);
    assert.equal(clock.pendingTimers, 0, "no timer runs while nobody waits");
    clock.advance(10_000);
    const late: number[] = [];
    gate.enter(() => late.push(1));
    gate.enter(() => late.push(2));
    gate.enter(() => late.push(3));
    assert.deepEqual(late, [1, 2], "idle time refills the burst, never more");
  });

  void test("past the bound of waiting streams, a new one is refused", () => {
    const clock = new ManualClock();
    const gate = new AdmissionGate({ ratePerSecond: 1, burst: 1, waitingMax: 2 }, clock);
    assert.equal(gate.enter(() => {})?.waited, false);
    assert.equal(gate.enter(() => {})?.waited, true);
    assert.equal(gate.enter(() => {})?.waited, true);
    assert.equal(gate.enter(() => {}), undefined);
    assert.equal(gate.close(), 2);
    assert.equal(clock.pendingTimers, 0);
  });

  void test("the limits are checked when the gate is made", () => {
    assert.throws(() => new AdmissionGate({ ratePerSecond: 0, burst: 1, waitingMax: 1 }), /rate 0\/s/);
    assert.throws(() => new AdmissionGate({ ratePerSecond: 1, burst: 0, waitingMax: 1 }), /burst 0/);
  });

  void describe("on the server", () => {
    const clock = new ManualClock();
    let harness: XdsHarness;
    let client: grpc.Client;
    const streams: RawAdsStream<SotwResponse>[] = [];

    before(async () => {
      harness = await XdsHarness.start({ limits: { admission: { ratePerSecond: 1, burst: 1, waitingMax: 2 } }, admissionClock: clock });
      harness.register("adm-1", "adm");
      client = adsClient(harness.address);
    });

    after(async () => {
      for (const s of streams) s.close();
      client.close();
      await harness.close();
    });

    void test("streams past the rate wait unread and are served in turn; past the queue bound one is refused with RESOURCE_EXHAUSTED", async () => {
      const open = async (): Promise<RawAdsStream<SotwResponse>> => {
        const s = await RawAdsStream.sotw(client);
        streams.push(s);
        s.send({ node: { id: `adm-${streams.length}` }, type_url: ENDPOINT_TYPE.typeUrl, resource_names: ["adm"] });
        return s;
      };
      const first = await open();
      await first.next();
      const second = await open();
      const third = await open();
      await waitFor(() => Promise.resolve(harness.xds.stats.streamsWaiting === 2 ? true : undefined), 5000, () => `waiting: ${harness.xds.stats.streamsWaiting}`);
      const refused = await open();
      const status = await refused.status();
      assert.equal(status.code, 8, "RESOURCE_EXHAUSTED");
      assert.match(status.details, /2 xDS streams waiting to be admitted/);
      assert.equal(harness.xds.stats.admissionRefused, 1);
      assert.equal(second.pending + third.pending, 0, "a waiting stream is not answered");

      clock.advance(1000);
      await second.next();
      assert.equal(third.pending, 0);
      clock.advance(1000);
      await third.next();
      assert.equal(harness.xds.stats.admissionWaits, 2);
      assert.equal(harness.xds.stats.streamsWaiting, 0);
      assert.equal(harness.xds.stats.streamsActive, 3);
    });
  });
});
