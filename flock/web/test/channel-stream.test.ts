import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ChannelClosedError, ChannelStream, MAX_MESSAGE } from "../src/channel-stream.ts";
import { FakeChannel, tick } from "./fakes.ts";

async function readAll(s: ReadableStream<Uint8Array>): Promise<string> {
  let out = "";
  const td = new TextDecoder();
  for await (const chunk of s) out += td.decode(chunk, { stream: true });
  return out;
}

describe("ChannelStream", () => {
  it("waits for open, then slices writes into ≤ 64 KiB messages", async () => {
    const ch = new FakeChannel("http/1.1 notes");
    const s = new ChannelStream(ch);
    assert.equal(ch.binaryType, "arraybuffer");
    const big = new Uint8Array(MAX_MESSAGE * 2 + 10).map((_, i) => i & 0xff);
    const w = s.write(big);
    await tick();
    assert.equal(ch.sent.length, 0, "nothing sent before open");
    ch.open();
    await w;
    assert.deepEqual(ch.sent.map((m) => m.byteLength), [MAX_MESSAGE, MAX_MESSAGE, 10]);
    assert.deepEqual(Uint8Array.from(ch.sent.flatMap((m) => [...m])), big);
  });

  it("applies back-pressure on bufferedAmount and resumes on bufferedamountlow", async () => {
    const ch = new FakeChannel("x");
    ch.holdSends = true;
    ch.open();
    const s = new ChannelStream(ch, { highWaterMark: 100_000, lowWaterMark: 10_000 });
    assert.equal(ch.bufferedAmountLowThreshold, 10_000);
    let done = false;
    const w = s.write(new Uint8Array(5 * MAX_MESSAGE)).then(() => (done = true));
    await tick();
    // 64 KiB + 64 KiB puts us over 100 000: the writer must stop there.
    assert.equal(ch.sent.length, 2);
    assert.equal(done, false);
    ch.drain(60_000); // still above the low mark: no event, no progress
    await tick();
    assert.equal(ch.sent.length, 2);
    ch.drain(); // to zero: bufferedamountlow fires
    await tick();
    assert.equal(ch.sent.length, 4);
    ch.drain();
    await w;
    assert.equal(ch.sent.length, 5);
    assert.equal(done, true);
  });

  it("queues received messages into the readable stream and ends on close", async () => {
    const ch = new FakeChannel("x");
    ch.open();
    const s = new ChannelStream(ch);
    ch.deliver(new TextEncoder().encode("hello "));
    ch.deliver(new Uint8Array(0));
    ch.deliver(new TextEncoder().encode("world"));
    ch.remoteClose();
    assert.equal(await readAll(s.readable), "hello world");
    await s.closed();
  });

  it("fails the stream on a text message", async () => {
    const ch = new FakeChannel("x");
    ch.open();
    const s = new ChannelStream(ch);
    ch.deliver("text!");
    await assert.rejects(readAll(s.readable), /received a text message on a byte stream/);
    assert.equal(ch.readyState, "closed");
  });

  it("cancelling the readable closes the channel", async () => {
    const ch = new FakeChannel("x");
    ch.open();
    const s = new ChannelStream(ch);
    await s.readable.cancel();
    assert.equal(ch.readyState, "closed");
    assert.equal(ch.closedByLocal, true);
  });

  it("rejects writes after close and wakes blocked writers", async () => {
    const ch = new FakeChannel("x");
    ch.holdSends = true;
    ch.open();
    const s = new ChannelStream(ch, { highWaterMark: 10 });
    const w = s.write(new Uint8Array(MAX_MESSAGE * 2));
    await tick();
    ch.remoteClose();
    await assert.rejects(w, ChannelClosedError);
    await assert.rejects(s.write(new Uint8Array(1)), ChannelClosedError);
  });

  it("opened() rejects if the channel closes before opening", async () => {
    const ch = new FakeChannel("http/1.1 gone");
    const s = new ChannelStream(ch);
    ch.remoteClose();
    await assert.rejects(s.opened(), /"http\/1.1 gone" closed before it opened/);
  });
});
