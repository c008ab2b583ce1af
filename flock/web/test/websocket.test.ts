import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ChannelStream } from "../src/channel-stream.ts";
import { acceptFor, encodeFrame, FrameParser, tunnelWebSocket } from "../src/websocket.ts";
import { FakeChannel, tick, until } from "./fakes.ts";

const te = new TextEncoder();

/** Unmask one client frame (tests only read what the client sent). */
function decodeClientFrame(b: Uint8Array): { opcode: number; payload: Uint8Array } {
  assert.ok((b[1]! & 0x80) !== 0, "client frames are masked");
  let len = b[1]! & 0x7f;
  let off = 2;
  if (len === 126) {
    len = (b[2]! << 8) | b[3]!;
    off = 4;
  }
  const mask = b.subarray(off, off + 4);
  const payload = b.slice(off + 4, off + 4 + len).map((x, i) => x ^ mask[i & 3]!);
  return { opcode: b[0]! & 0x0f, payload };
}

describe("websocket framing", () => {
  it("computes Sec-WebSocket-Accept as in RFC 6455", async () => {
    assert.equal(await acceptFor("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  });

  it("masks client frames with 7-, 16- and 64-bit lengths", () => {
    const mask = new Uint8Array([1, 2, 3, 4]);
    for (const n of [0, 125, 126, 65535, 65536]) {
      const f = encodeFrame(2, new Uint8Array(n).fill(7), mask);
      const hdr = n < 126 ? 2 : n < 65536 ? 4 : 10;
      assert.equal(f.byteLength, hdr + 4 + n);
      assert.equal(f[0], 0x82);
      if (n < 126) assert.equal(f[1], 0x80 | n);
      if (n > 0) assert.equal(f[hdr + 4], 7 ^ 1);
    }
  });

  it("parses server frames split anywhere, and rejects bad ones", () => {
    const wire = new Uint8Array([0x81, 0x02, 0x68, 0x69, 0x89, 0x00, 0x02, 0x7e, 0x00, 0x03, 1, 2, 3]);
    for (let i = 0; i <= wire.byteLength; i++) {
      const p = new FrameParser();
      const frames = [...p.push(wire.subarray(0, i)), ...p.push(wire.subarray(i))];
      assert.deepEqual(frames.map((f) => [f.opcode, f.fin, [...f.payload]]), [[1, true, [0x68, 0x69]], [9, true, []], [2, false, [1, 2, 3]]]);
    }
    assert.throws(() => new FrameParser().push(new Uint8Array([0x81, 0x82, 0, 0, 0, 0, 1, 2])), /must not be masked/);
    assert.throws(() => new FrameParser().push(new Uint8Array([0xc1, 0x00])), /reserved bits/);
    assert.throws(() => new FrameParser().push(new Uint8Array([0x83, 0x00])), /unknown opcode 3/);
    assert.throws(() => new FrameParser().push(new Uint8Array([0x09, 0x00])), /control frame fragmented/);
    assert.throws(() => new FrameParser(10).push(new Uint8Array([0x82, 0x0b])), /over the 10-byte limit/);
  });
});

describe("tunnel WebSocket", () => {
  it("upgrades, exchanges text, binary, ping and close", async () => {
    const ch = new FakeChannel("http/1.1 chat");
    const ws = tunnelWebSocket(() => new ChannelStream(ch), "chat", "/socket?room=1", ["v1"]);
    ws.binaryType = "arraybuffer";
    const events: string[] = [];
    const messages: unknown[] = [];
    ws.onopen = () => events.push("open");
    ws.onmessage = (ev) => messages.push((ev as MessageEvent).data);
    ws.addEventListener("close", (ev) => events.push(`close ${(ev as CloseEvent).code} ${(ev as CloseEvent).wasClean}`));
    ch.open();
    await tick();
    const req = ch.sentText();
    assert.match(req, /^GET \/socket\?room=1 HTTP\/1.1\r\nhost: chat\r\nupgrade: websocket\r\nconnection: Upgrade\r\n/);
    const key = /sec-websocket-key: (\S+)\r\n/.exec(req)![1]!;
    assert.match(req, /sec-websocket-protocol: v1\r\n/);
    const sentBefore = ch.sent.length;
    ch.deliver(te.encode(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${await acceptFor(key)}\r\nSec-WebSocket-Protocol: v1\r\n\r\n`));
    ch.deliver(new Uint8Array([0x01, 0x02, 0x68, 0x65, 0x80, 0x01, 0x79])); // "he" + "y" fragmented
    ch.deliver(new Uint8Array([0x82, 0x02, 9, 8, 0x89, 0x01, 0x50]));
    await until(() => messages.length >= 2 && ch.sent.length > sentBefore, "the two messages and the pong");
    assert.deepEqual(events, ["open"]);
    assert.equal(ws.protocol, "v1");
    assert.equal(messages[0], "hey");
    assert.deepEqual([...new Uint8Array(messages[1] as ArrayBuffer)], [9, 8]);
    ws.send("hi");
    await tick();
    const out = ch.sent.slice(sentBefore).map(decodeClientFrame);
    assert.deepEqual(out.map((f) => [f.opcode, [...f.payload]]), [[10, [0x50]], [1, [0x68, 0x69]]]);
    ws.close(1000, "bye");
    await tick();
    const closeFrame = decodeClientFrame(ch.sent[ch.sent.length - 1]!);
    assert.equal(closeFrame.opcode, 8);
    assert.deepEqual([...closeFrame.payload], [0x03, 0xe8, ...te.encode("bye")]);
    ch.deliver(new Uint8Array([0x88, 0x02, 0x03, 0xe8]));
    await tick();
    assert.deepEqual(events, ["open", "close 1000 true"]);
    assert.equal(ws.readyState, 3);
  });

  it("fails the handshake on a wrong accept key or a non-101 answer", async () => {
    for (const resp of [
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bogus\r\n\r\n",
      "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    ]) {
      const ch = new FakeChannel("x");
      const ws = tunnelWebSocket(() => new ChannelStream(ch), "chat", "/s");
      const got: string[] = [];
      ws.onerror = (ev) => got.push(`error ${(ev as Event & { message: string }).message}`);
      ws.onclose = (ev) => got.push(`close ${(ev as CloseEvent).code}`);
      ch.open();
      await tick();
      ch.deliver(te.encode(resp));
      await until(() => got.length >= 2, "the error and close events");
      assert.equal(got.length, 2, got.join());
      assert.match(got[0]!, /Sec-WebSocket-Accept|404/);
      assert.equal(got[1], "close 1006");
      assert.equal(ch.readyState, "closed");
    }
  });

  it("reports 1006 when the channel closes without a close frame", async () => {
    const ch = new FakeChannel("x");
    const ws = tunnelWebSocket(() => new ChannelStream(ch), "chat", "/s");
    const codes: number[] = [];
    ws.onclose = (ev) => codes.push((ev as CloseEvent).code);
    ch.open();
    await tick();
    const key = /sec-websocket-key: (\S+)\r\n/.exec(ch.sentText())![1]!;
    ch.deliver(te.encode(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: ${await acceptFor(key)}\r\n\r\n`));
    await tick();
    ch.remoteClose();
    await until(() => codes.length >= 1, "the close event");
    assert.deepEqual(codes, [1006]);
  });
});
