import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { classifyFlockError, normalizeDeviceName, openSignal, parseFlockMessage, SignalError, signalUrl } from "../src/signal.ts";
import { FakeWebSocket, ManualTimers, tick } from "./fakes.ts";

function setup(): { ws: () => FakeWebSocket; timers: ManualTimers; opts: Parameters<typeof openSignal>[2] } {
  let sock: FakeWebSocket | null = null;
  const timers = new ManualTimers();
  return {
    ws: () => sock!,
    timers,
    opts: { webSocket: (u) => (sock = new FakeWebSocket(u)), timers },
  };
}

const session = { type: "session", session: 7, ice_servers: [{ urls: ["stun:stun.example:3478"] }, { urls: ["turn:t.example"], username: "1700000000:ab", credential: "c2VjcmV0" }] };

describe("signal: parsing", () => {
  it("parses every message type", () => {
    assert.deepEqual(parseFlockMessage(JSON.stringify(session)), {
      type: "session",
      session: 7,
      iceServers: [{ urls: ["stun:stun.example:3478"] }, { urls: ["turn:t.example"], username: "1700000000:ab", credential: "c2VjcmV0" }],
    });
    assert.deepEqual(parseFlockMessage('{"type":"answer","sdp":"v=0"}'), { type: "answer", sdp: "v=0" });
    assert.deepEqual(parseFlockMessage('{"type":"candidate","candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host","sdp_mid":"0"}'), {
      type: "candidate",
      candidate: "candidate:1 1 udp 1 1.2.3.4 5 typ host",
      sdpMid: "0",
    });
    assert.deepEqual(parseFlockMessage('{"type":"candidate","candidate":null,"sdp_mid":null}'), { type: "candidate", candidate: null, sdpMid: null });
    assert.deepEqual(parseFlockMessage('{"type":"closed","reason":"device left"}'), { type: "closed", reason: "device left" });
    assert.deepEqual(parseFlockMessage('{"type":"error","message":"unknown device"}'), { type: "error", message: "unknown device" });
  });

  const bad: Array<[string, RegExp]> = [
    ["not json", /not JSON/],
    ["[]", /without a "type"/],
    ['{"type":5}', /without a "type"/],
    ['{"type":"bogus"}', /unknown message type "bogus"/],
    ['{"type":"answer"}', /"answer" message whose "sdp" is not a string/],
    ['{"type":"session","session":-1,"ice_servers":[]}', /"session" is not a non-negative integer/],
    ['{"type":"session","session":1.5,"ice_servers":[]}', /non-negative integer/],
    ['{"type":"session","session":1}', /"ice_servers" is not a list/],
    ['{"type":"session","session":1,"ice_servers":[{"urls":"stun:x"}]}', /urls is not a non-empty list/],
    ['{"type":"session","session":1,"ice_servers":[{"urls":["http://x"]}]}', /non-STUN\/TURN URL/],
    ['{"type":"session","session":1,"ice_servers":[{"urls":["turn:x"],"username":5}]}', /non-string username/],
    ['{"type":"candidate","candidate":5}', /"candidate" is not a string or null/],
    ['{"type":"error"}', /"message" is not a string/],
  ];
  for (const [text, re] of bad) {
    it(`rejects ${text}`, () => assert.throws(() => parseFlockMessage(text), (e: unknown) => e instanceof SignalError && e.code === "protocol" && re.test(e.message)));
  }

  it("rejects messages over 64 KiB", () => {
    assert.throws(() => parseFlockMessage(JSON.stringify({ type: "answer", sdp: "x".repeat(70000) })), /over 65536 bytes/);
  });

  it("validates and normalizes device names", () => {
    assert.equal(normalizeDeviceName(" Living-Room "), "living-room");
    for (const bad of ["ab", "-abc", "abc-", "a_b_c", "x".repeat(64), "déjà"]) {
      assert.throws(() => normalizeDeviceName(bad), (e: unknown) => e instanceof SignalError && e.code === "invalid-name");
    }
    assert.equal(normalizeDeviceName("x".repeat(63)), "x".repeat(63));
  });

  it("derives the /signal URL", () => {
    assert.equal(signalUrl("https://flock.example"), "wss://flock.example/signal");
    assert.equal(signalUrl("http://localhost:8080/base/"), "ws://localhost:8080/base/signal");
    assert.equal(signalUrl("wss://f.example/signal"), "wss://f.example/signal");
    assert.throws(() => signalUrl("ftp://x"), /http\(s\) or ws\(s\)/);
    assert.throws(() => signalUrl("not a url"), /not a URL/);
  });

  it("classifies flock's error messages", () => {
    assert.equal(classifyFlockError("device is offline"), "offline");
    assert.equal(classifyFlockError("unknown device"), "unknown-device");
    assert.equal(classifyFlockError("rate limited"), "refused");
  });
});

describe("signal: session", () => {
  it("connects, exchanges offer/answer and trickles candidates both ways", async () => {
    const { ws, opts } = setup();
    const p = openSignal("https://flock.example", "Kitchen", opts);
    assert.equal(ws().url, "wss://flock.example/signal");
    ws().serverOpen();
    assert.deepEqual(ws().sent, [{ type: "connect", device: "kitchen" }]);
    // A candidate that arrives before handlers are set is queued, not lost.
    ws().serverSend(session);
    const s = await p;
    assert.equal(s.session, 7);
    assert.equal(s.iceServers.length, 2);
    ws().serverSend({ type: "candidate", candidate: "c1", sdp_mid: "0" });
    const got: Array<[string | null, string | null]> = [];
    s.setHandlers({ onCandidate: (c, m) => got.push([c, m]) });
    s.sendOffer("v=0 offer");
    s.sendCandidate("cand", "0");
    s.sendCandidate(null, null);
    const answer = s.answer();
    ws().serverSend({ type: "answer", sdp: "v=0 answer" });
    assert.equal(await answer, "v=0 answer");
    ws().serverSend({ type: "candidate", candidate: null, sdp_mid: null });
    assert.deepEqual(got, [["c1", "0"], [null, null]]);
    assert.deepEqual(ws().sent.slice(1), [
      { type: "offer", sdp: "v=0 offer" },
      { type: "candidate", candidate: "cand", sdp_mid: "0" },
      { type: "candidate", candidate: null, sdp_mid: null },
    ]);
    s.close();
    assert.ok(ws().closed);
  });

  it("reports an unknown device and an offline device", async () => {
    for (const [msg, code] of [["unknown device \"x\"", "unknown-device"], ["device is offline", "offline"]] as const) {
      const { ws, opts } = setup();
      const p = openSignal("https://flock.example", "abc", opts);
      ws().serverOpen();
      ws().serverSend({ type: "error", message: msg });
      await assert.rejects(p, (e: unknown) => e instanceof SignalError && e.code === code && e.message.includes(msg));
      assert.ok(ws().closed, "socket closed after the error");
    }
  });

  it("reports flock unreachable when the socket fails before opening", async () => {
    const { ws, opts } = setup();
    const p = openSignal("https://flock.example", "abc", opts);
    ws().fail();
    await assert.rejects(p, (e: unknown) => e instanceof SignalError && e.code === "unreachable" && /cannot reach flock/.test(e.message));
  });

  it("times out without a connection, and without a session reply", async () => {
    {
      const { opts, timers } = setup();
      const p = openSignal("https://flock.example", "abc", { ...opts, sessionTimeoutMs: 5000 });
      timers.fireAll();
      await assert.rejects(p, (e: unknown) => e instanceof SignalError && e.code === "unreachable" && /within 5 s/.test(e.message));
    }
    {
      const { ws, opts, timers } = setup();
      const p = openSignal("https://flock.example", "abc", opts);
      ws().serverOpen();
      timers.fireAll();
      await assert.rejects(p, (e: unknown) => e instanceof SignalError && e.code === "timeout");
    }
  });

  it("times out waiting for the answer", async () => {
    const { ws, opts, timers } = setup();
    const p = openSignal("https://flock.example", "abc", opts);
    ws().serverOpen();
    ws().serverSend(session);
    const s = await p;
    const a = s.answer();
    timers.fireAll();
    await assert.rejects(a, (e: unknown) => e instanceof SignalError && e.code === "timeout" && /did not answer/.test(e.message));
  });

  it("fails the answer when flock closes the session or breaks the protocol", async () => {
    for (const [msg, code] of [
      [{ type: "closed", reason: "device went away" }, "closed"],
      ["{oops", "protocol"],
      [session, "protocol"],
    ] as const) {
      const { ws, opts } = setup();
      const p = openSignal("https://flock.example", "abc", opts);
      ws().serverOpen();
      ws().serverSend(session);
      const s = await p;
      const closed: SignalError[] = [];
      s.setHandlers({ onClosed: (e) => closed.push(e) });
      const a = s.answer();
      ws().serverSend(msg);
      await assert.rejects(a, (e: unknown) => e instanceof SignalError && e.code === code);
      assert.equal(closed.length, 1);
      assert.throws(() => s.sendOffer("x"), SignalError);
    }
  });

  it("rejects a message before the session, and a binary frame", async () => {
    {
      const { ws, opts } = setup();
      const p = openSignal("https://flock.example", "abc", opts);
      ws().serverOpen();
      ws().serverSend({ type: "answer", sdp: "x" });
      await assert.rejects(p, /"answer" before "session"/);
    }
    {
      const { ws, opts } = setup();
      const p = openSignal("https://flock.example", "abc", opts);
      ws().serverOpen();
      ws().dispatchEvent(new MessageEvent("message", { data: new ArrayBuffer(2) }));
      await assert.rejects(p, /binary frame/);
    }
    await tick();
  });

  it("refuses an invalid name before opening a socket", async () => {
    const { opts } = setup();
    assert.throws(() => openSignal("https://flock.example", "-bad", opts), /not an appliance name/);
  });
});
