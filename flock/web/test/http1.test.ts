import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  DEFAULT_LIMITS,
  encodeChunk,
  encodeRequestHead,
  HttpError,
  LAST_CHUNK,
  ResponseParser,
  type ParseEvent,
  type ParserLimits,
  type ResponseBody,
  type ResponseHead,
} from "../src/http1.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const b = (s: string): Uint8Array => te.encode(s);
const latin1 = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

interface Parsed {
  informational: ResponseHead[];
  head: ResponseHead | null;
  body: ResponseBody | null;
  data: string;
  ended: boolean;
  rest: string;
}

function collect(events: ParseEvent[], into: Parsed): void {
  for (const ev of events) {
    switch (ev.type) {
      case "informational":
        into.informational.push(ev.head);
        break;
      case "head":
        into.head = ev.head;
        into.body = ev.body;
        break;
      case "data":
        into.data += td.decode(ev.data, { stream: true });
        break;
      case "end":
        assert.equal(into.ended, false, "two end events");
        into.ended = true;
        into.rest += td.decode(ev.rest);
        break;
    }
  }
}

/** Feed `pieces` in order, then end-of-stream if `eof`. */
function parsePieces(pieces: Uint8Array[], opts: { method?: string; eof?: boolean; limits?: Partial<ParserLimits> } = {}): Parsed {
  const p = new ResponseParser(opts.method ?? "GET", opts.limits);
  const out: Parsed = { informational: [], head: null, body: null, data: "", ended: false, rest: "" };
  for (const piece of pieces) {
    if (out.ended && piece.byteLength > 0) {
      assert.throws(() => p.push(piece), HttpError);
      return out;
    }
    collect(p.push(piece), out);
  }
  if (opts.eof) collect(p.end(), out);
  return out;
}

/** Parse `input` whole, split once at every byte boundary, and byte by byte; all must agree. */
function parseEverySplit(input: string | Uint8Array, opts: { method?: string; eof?: boolean } = {}): Parsed {
  const bytes = typeof input === "string" ? b(input) : input;
  const whole = parsePieces([bytes], opts);
  for (let i = 0; i <= bytes.byteLength; i++) {
    const split = parsePieces([bytes.subarray(0, i), bytes.subarray(i)], opts);
    assert.deepEqual(split, whole, `split at byte ${i} differs`);
  }
  const single = parsePieces(
    Array.from(bytes, (_, i) => bytes.subarray(i, i + 1)),
    opts,
  );
  assert.deepEqual(single, whole, "byte-by-byte differs");
  return whole;
}

/** Parsing must fail with a message matching `re`, however the input is split. */
function failsEverySplit(input: string | Uint8Array, re: RegExp, opts: { method?: string; eof?: boolean; limits?: Partial<ParserLimits> } = {}): void {
  const bytes = typeof input === "string" ? b(input) : input;
  const attempt = (pieces: Uint8Array[]): void => {
    const p = new ResponseParser(opts.method ?? "GET", opts.limits);
    assert.throws(
      () => {
        for (const piece of pieces) p.push(piece);
        if (opts.eof) p.end();
      },
      (e: unknown) => e instanceof HttpError && re.test(e.message),
    );
  };
  attempt([bytes]);
  for (let i = 0; i <= bytes.byteLength; i++) attempt([bytes.subarray(0, i), bytes.subarray(i)]);
  attempt(Array.from(bytes, (_, i) => bytes.subarray(i, i + 1)));
}

describe("encodeRequestHead", () => {
  it("writes a request line, headers and Content-Length", () => {
    const head = encodeRequestHead(
      { method: "POST", target: "/a/b?c=d", headers: [["Host", "notes"], ["Content-Type", " text/plain "]] },
      { kind: "length", length: 5 },
    );
    assert.equal(td.decode(head), "POST /a/b?c=d HTTP/1.1\r\nHost: notes\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n");
  });

  it("writes Transfer-Encoding for chunked bodies and nothing for none", () => {
    assert.match(td.decode(encodeRequestHead({ method: "PUT", target: "/", headers: [["host", "x"]] }, { kind: "chunked" })), /transfer-encoding: chunked\r\n\r\n$/i);
    assert.equal(td.decode(encodeRequestHead({ method: "GET", target: "/", headers: [["host", "x"]] }, { kind: "none" })), "GET / HTTP/1.1\r\nhost: x\r\n\r\n");
  });

  it("rejects header injection, bad names, bad methods and bad targets", () => {
    const ok = { method: "GET", target: "/", headers: [["host", "x"]] as Array<[string, string]> };
    const none = { kind: "none" } as const;
    assert.throws(() => encodeRequestHead({ ...ok, headers: [["host", "x"], ["a", "b\r\nEvil: 1"]] }, none), /invalid value for header a/);
    assert.throws(() => encodeRequestHead({ ...ok, headers: [["host", "x"], ["a", "b\nc"]] }, none), HttpError);
    assert.throws(() => encodeRequestHead({ ...ok, headers: [["host", "x"], ["a", "b\0"]] }, none), HttpError);
    assert.throws(() => encodeRequestHead({ ...ok, headers: [["host", "x"], ["bad name", "v"]] }, none), /invalid header name/);
    assert.throws(() => encodeRequestHead({ ...ok, headers: [["host", "x"], ["x:y", "v"]] }, none), /invalid header name/);
    assert.throws(() => encodeRequestHead({ ...ok, method: "GE T" }, none), /invalid request method/);
    assert.throws(() => encodeRequestHead({ ...ok, target: "/a b" }, none), /invalid request target/);
    assert.throws(() => encodeRequestHead({ ...ok, target: "http://x/" }, none), /invalid request target/);
    assert.throws(() => encodeRequestHead({ ...ok, target: "/\r\n" }, none), /invalid request target/);
    assert.throws(() => encodeRequestHead({ ...ok, headers: [["host", "é€"]] }, none), /Latin-1|invalid value/);
  });

  it("needs exactly one Host and owns the framing headers", () => {
    const none = { kind: "none" } as const;
    assert.throws(() => encodeRequestHead({ method: "GET", target: "/", headers: [] }, none), /exactly one Host header, got 0/);
    assert.throws(() => encodeRequestHead({ method: "GET", target: "/", headers: [["host", "a"], ["Host", "b"]] }, none), /got 2/);
    assert.throws(() => encodeRequestHead({ method: "GET", target: "/", headers: [["host", "a"], ["Content-Length", "3"]] }, none), /set by the codec/);
    assert.throws(() => encodeRequestHead({ method: "GET", target: "/", headers: [["host", "a"], ["transfer-encoding", "chunked"]] }, none), /set by the codec/);
    assert.throws(() => encodeRequestHead({ method: "GET", target: "/", headers: [["host", "a"]] }, { kind: "length", length: -1 }), /invalid body length/);
    assert.throws(() => encodeRequestHead({ method: "GET", target: "/", headers: [["host", "a"]] }, { kind: "length", length: 1.5 }), /invalid body length/);
  });
});

describe("chunk encoding", () => {
  it("frames data in hex and never writes a zero chunk by accident", () => {
    assert.equal(td.decode(encodeChunk(b("hello world, hello"))), "12\r\nhello world, hello\r\n");
    assert.equal(encodeChunk(new Uint8Array(0)).byteLength, 0);
    assert.equal(td.decode(LAST_CHUNK), "0\r\n\r\n");
  });

  it("round-trips through the parser", () => {
    const body = b("x".repeat(70000));
    const wire = [b("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), encodeChunk(body.subarray(0, 65536)), encodeChunk(body.subarray(65536)), LAST_CHUNK];
    const r = parsePieces(wire);
    assert.equal(r.data.length, 70000);
    assert.equal(r.ended, true);
  });
});

describe("ResponseParser: framing", () => {
  it("parses Content-Length bodies at every split", () => {
    const r = parseEverySplit("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world");
    assert.equal(r.head?.status, 200);
    assert.equal(r.head?.reason, "OK");
    assert.equal(r.head?.version, "1.1");
    assert.deepEqual(r.head?.headers, [["Content-Type", "text/plain"], ["Content-Length", "11"]]);
    assert.deepEqual(r.body, { kind: "length", length: 11 });
    assert.equal(r.data, "hello world");
    assert.equal(r.ended, true);
  });

  it("ends a Content-Length: 0 response at the head", () => {
    const r = parseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert.equal(r.ended, true);
    assert.equal(r.data, "");
  });

  it("parses chunked bodies with extensions and trailers at every split", () => {
    const r = parseEverySplit(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n1 \r\n \r\nA\r\n0123456789\r\n000\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
    );
    assert.equal(r.data, "hello 0123456789");
    assert.equal(r.ended, true);
  });

  it("parses chunked bodies without trailers and with uppercase hex", () => {
    const r = parseEverySplit("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n1F\r\n" + "a".repeat(31) + "\r\n0\r\n\r\n");
    assert.equal(r.data, "a".repeat(31));
    assert.equal(r.ended, true);
  });

  it("reads close-delimited bodies until end of stream", () => {
    const r = parseEverySplit("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>hi</p>", { eof: true });
    assert.deepEqual(r.body, { kind: "close" });
    assert.equal(r.data, "<p>hi</p>");
    assert.equal(r.ended, true);
  });

  it("accepts HTTP/1.0 and an empty or missing reason phrase", () => {
    assert.equal(parseEverySplit("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx").head?.version, "1.0");
    assert.equal(parseEverySplit("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n").head?.reason, "");
    assert.equal(parseEverySplit("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n").head?.status, 404);
    assert.equal(parseEverySplit("HTTP/1.1 500 Internal  Server\tError\r\nContent-Length: 0\r\n\r\n").head?.reason, "Internal  Server\tError");
  });

  it("keeps obs-text bytes in values as Latin-1", () => {
    const r = parsePieces([latin1("HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 0\r\n\r\n")]);
    assert.deepEqual(r.head?.headers[0], ["X-Name", "caf\xe9"]);
  });

  it("has no body for HEAD, 204 and 304 whatever the headers say", () => {
    for (const [method, head] of [
      ["HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"],
      ["GET", "HTTP/1.1 204 No Content\r\n\r\n"],
      ["GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"],
      ["HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ] as const) {
      const r = parseEverySplit(head, { method });
      assert.deepEqual(r.body, { kind: "none" });
      assert.equal(r.ended, true);
    }
  });

  it("skips interim 1xx responses", () => {
    const r = parseEverySplit("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
    assert.deepEqual(r.informational.map((h) => h.status), [100, 103]);
    assert.equal(r.head?.status, 201);
    assert.equal(r.data, "ok");
  });

  it("turns 101 into a raw byte pipe", () => {
    const r = parseEverySplit("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi", { eof: true });
    assert.deepEqual(r.body, { kind: "upgrade" });
    assert.equal(r.data, "\x81\x02hi");
    assert.equal(r.ended, true);
  });

  it("reports bytes after the end of the response", () => {
    const r = parsePieces([b("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")]);
    assert.equal(r.rest, "EXTRA");
    const p = new ResponseParser("GET");
    p.push(b("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    assert.equal(p.finished, true);
    assert.throws(() => p.push(b("x")), /1 bytes received after the end of the response/);
  });

  it("accepts identical repeated Content-Length values", () => {
    const r = parseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc");
    assert.equal(r.data, "abc");
  });
});

describe("ResponseParser: malformed input", () => {
  const cases: Array<[string, string, RegExp]> = [
    ["not HTTP", "HTTX/1.1 200 OK\r\n\r\n", /malformed status line/],
    ["HTTP/2 status line", "HTTP/2 200 OK\r\n\r\n", /malformed status line/],
    ["HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", /malformed status line/],
    ["two-digit status", "HTTP/1.1 20 OK\r\n\r\n", /malformed status line/],
    ["four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", /malformed status line/],
    ["status out of range", "HTTP/1.1 600 Odd\r\n\r\n", /out of range/],
    ["status 099", "HTTP/1.1 099 Odd\r\n\r\n", /out of range/],
    ["leading space", " HTTP/1.1 200 OK\r\n\r\n", /malformed status line/],
    ["control in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", /malformed status line/],
    ["empty head", "\r\n\r\n", /malformed status line/],
    ["bare LF in head", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", /bare LF in response head/],
    ["bare CR in head", "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", /bare CR/],
    ["header without colon", "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", /no name before ":"/],
    ["empty header name", "HTTP/1.1 200 OK\r\n: v\r\n\r\n", /no name before ":"/],
    ["space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx", /invalid header name/],
    ["obs-fold", "HTTP/1.1 200 OK\r\nA: b\r\n c\r\nContent-Length: 0\r\n\r\n", /obsolete line folding/],
    ["NUL in value", "HTTP/1.1 200 OK\r\nA: b\0c\r\nContent-Length: 0\r\n\r\n", /invalid characters in header A/],
    ["TE and CL", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", /both Transfer-Encoding and Content-Length/],
    ["gzip TE", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", /unsupported Transfer-Encoding/],
    ["chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", /unsupported Transfer-Encoding/],
    ["TE in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", /HTTP\/1.0/],
    ["negative CL", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", /invalid Content-Length/],
    ["hex CL", "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", /invalid Content-Length/],
    ["plus CL", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", /invalid Content-Length/],
    ["huge CL", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999\r\n\r\n", /invalid Content-Length/],
    ["empty CL", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", /invalid Content-Length/],
    ["conflicting CL", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", /conflicting Content-Length/],
    ["conflicting CL list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", /conflicting Content-Length/],
    ["chunk size not hex", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", /malformed chunk-size line/],
    ["negative chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", /malformed chunk-size line/],
    ["empty chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", /malformed chunk-size line/],
    ["0x chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", /malformed chunk-size line/],
    ["huge chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n", /too large/],
    ["chunk too long for its size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", /not followed by CRLF/],
    ["chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab0\r\n\r\n", /not followed by CRLF/],
    ["bare LF after chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n", /bare LF in chunk-size line/],
    ["malformed trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n", /trailer/],
  ];
  for (const [name, input, re] of cases) {
    it(`rejects ${name}`, () => failsEverySplit(input, re));
  }

  it("rejects a head over the limit, even before its end arrives", () => {
    const big = "HTTP/1.1 200 OK\r\n" + "X-Pad: " + "a".repeat(DEFAULT_LIMITS.maxHeadBytes) + "\r\n";
    const p = new ResponseParser("GET");
    assert.throws(() => p.push(b(big)), /response head exceeds the limit of 65536 bytes/);
    const p2 = new ResponseParser("GET");
    assert.throws(() => {
      for (let i = 0; i < big.length; i += 1000) p2.push(b(big.slice(i, i + 1000)));
    }, /exceeds the limit/);
  });

  it("accepts a head of exactly the limit and rejects one byte more", () => {
    const base = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ";
    const pad = (n: number): string => base + "a".repeat(n - base.length - 4) + "\r\n\r\n";
    const limits = { maxHeadBytes: 200 };
    assert.equal(parsePieces([b(pad(200))], { limits }).ended, true);
    failsEverySplit(pad(201), /exceeds the limit of 200/, { limits });
  });

  it("limits the number of headers", () => {
    const head = "HTTP/1.1 200 OK\r\n" + Array.from({ length: 5 }, (_, i) => `X-${i}: v\r\n`).join("") + "\r\n";
    failsEverySplit(head, /more than 4 header fields/, { limits: { maxHeaders: 4 } });
  });

  it("limits chunk-size lines and trailers", () => {
    failsEverySplit("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;" + "e".repeat(100) + "\r\n", /chunk-size line exceeds the limit of 50/, {
      limits: { maxChunkLineBytes: 50 },
    });
    failsEverySplit("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + "X: 1\r\n".repeat(20) + "\r\n", /trailer/, {
      limits: { maxTrailerBytes: 50 },
    });
  });

  it("fails on end of stream inside the head, a sized body or a chunked body", () => {
    failsEverySplit("", /connection closed before a response was received/, { eof: true });
    failsEverySplit("HTTP/1.1 200 OK\r\nContent-", /closed inside the response head/, { eof: true });
    failsEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", /after 3 of 10 body bytes/, { eof: true });
    failsEverySplit("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", /inside a chunked body/, { eof: true });
    failsEverySplit("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", /inside a chunked body/, { eof: true });
  });

  it("stays failed after an error", () => {
    const p = new ResponseParser("GET");
    assert.throws(() => p.push(b("garbage\r\n\r\n")), /malformed status line/);
    assert.throws(() => p.push(b("HTTP/1.1 200 OK\r\n\r\n")), /malformed status line/);
    assert.throws(() => p.end(), /malformed status line/);
  });
});

describe("ResponseParser: binary bodies", () => {
  it("passes every byte value through unchanged", () => {
    const body = Uint8Array.from({ length: 256 }, (_, i) => i);
    const head = b("HTTP/1.1 200 OK\r\nContent-Length: 256\r\n\r\n");
    const wire = new Uint8Array(head.byteLength + 256);
    wire.set(head);
    wire.set(body, head.byteLength);
    for (let i = 0; i <= wire.byteLength; i += 7) {
      const p = new ResponseParser("GET");
      const got: number[] = [];
      for (const piece of [wire.subarray(0, i), wire.subarray(i)]) for (const ev of p.push(piece)) if (ev.type === "data") got.push(...ev.data);
      assert.deepEqual(Uint8Array.from(got), body);
    }
  });
});
