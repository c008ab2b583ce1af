// HTTP/1.1 client codec, sans-IO: request heads and body framing go out as
// bytes, response bytes go in and come out as typed events. It never touches a
// channel or a timer, so every byte split can be tested. Strict by design: a
// response we cannot frame unambiguously is an error, never a guess (a tunnel
// that guesses is a tunnel that can be smuggled through).

export class HttpError extends Error {
  override name = "HttpError";
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Field values: visible ASCII, SP, HTAB and obs-text; no CR, LF, NUL or other controls.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const REQUEST_TARGET = /^(\/[\x21-\x7e]*|\*)$/;

const enc = new TextEncoder();

export interface RequestHead {
  method: string;
  /** origin-form target ("/path?query") or "*" */
  target: string;
  /** must contain exactly one Host; must not contain Content-Length or Transfer-Encoding (framing belongs to the codec) */
  headers: Iterable<readonly [string, string]>;
}

export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" };

/** Serialize a request head; the framing headers are written from `framing`. */
export function encodeRequestHead(head: RequestHead, framing: BodyFraming): Uint8Array {
  if (!TOKEN.test(head.method)) throw new HttpError(`invalid request method ${JSON.stringify(head.method)}`);
  if (!REQUEST_TARGET.test(head.target)) {
    throw new HttpError(`invalid request target ${JSON.stringify(head.target)}: must start with "/" and contain no spaces or controls`);
  }
  let out = `${head.method} ${head.target} HTTP/1.1\r\n`;
  let hosts = 0;
  for (const [name, rawValue] of head.headers) {
    if (!TOKEN.test(name)) throw new HttpError(`invalid header name ${JSON.stringify(name)}`);
    const value = rawValue.replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value)) throw new HttpError(`invalid value for header ${name}: contains CR, LF or control characters`);
    const lower = name.toLowerCase();
    if (lower === "content-length" || lower === "transfer-encoding") {
      throw new HttpError(`header ${name} is set by the codec from the body, not by the caller`);
    }
    if (lower === "host") hosts++;
    out += `${name}: ${value}\r\n`;
  }
  if (hosts !== 1) throw new HttpError(`a request needs exactly one Host header, got ${hosts}`);
  switch (framing.kind) {
    case "none":
      break;
    case "length":
      if (!Number.isSafeInteger(framing.length) || framing.length < 0) {
        throw new HttpError(`invalid body length ${framing.length}`);
      }
      out += `Content-Length: ${framing.length}\r\n`;
      break;
    case "chunked":
      out += "Transfer-Encoding: chunked\r\n";
      break;
  }
  out += "\r\n";
  return latin1Bytes(out);
}

/** One chunk of a chunked body. An empty input gives empty output: a zero-size chunk would end the body. */
export function encodeChunk(data: Uint8Array): Uint8Array {
  if (data.byteLength === 0) return new Uint8Array(0);
  const prefix = enc.encode(`${data.byteLength.toString(16)}\r\n`);
  const out = new Uint8Array(prefix.byteLength + data.byteLength + 2);
  out.set(prefix, 0);
  out.set(data, prefix.byteLength);
  out[out.byteLength - 2] = 13;
  out[out.byteLength - 1] = 10;
  return out;
}

/** The last chunk with no trailers: ends a chunked body. */
export const LAST_CHUNK: Uint8Array = enc.encode("0\r\n\r\n");

function latin1Bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new HttpError("request head contains characters outside Latin-1");
    out[i] = c;
  }
  return out;
}

function latin1String(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.byteLength; i += 0x2000) {
    s += String.fromCharCode(...b.subarray(i, Math.min(i + 0x2000, b.byteLength)));
  }
  return s;
}

// ---------------------------------------------------------------------------
// Response parsing

export interface ResponseHead {
  version: "1.0" | "1.1";
  status: number;
  reason: string;
  /** in order, names as sent; values trimmed */
  headers: Array<[string, string]>;
}

export type ResponseBody =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" }
  /** 101 Switching Protocols: everything after the head is a raw byte pipe */
  | { kind: "upgrade" };

export type ParseEvent =
  | { type: "informational"; head: ResponseHead }
  | { type: "head"; head: ResponseHead; body: ResponseBody }
  | { type: "data"; data: Uint8Array }
  /** `rest`: bytes received after the end of this response (none are expected without pipelining) */
  | { type: "end"; rest: Uint8Array };

export interface ParserLimits {
  /** status line + headers + final CRLF, in bytes */
  maxHeadBytes: number;
  maxHeaders: number;
  /** chunk-size line including extensions */
  maxChunkLineBytes: number;
  maxTrailerBytes: number;
}

export const DEFAULT_LIMITS: ParserLimits = {
  maxHeadBytes: 64 * 1024,
  maxHeaders: 128,
  maxChunkLineBytes: 1024,
  maxTrailerBytes: 16 * 1024,
};

type State =
  | { s: "head" }
  | { s: "length"; remaining: number; total: number }
  | { s: "chunk-size" }
  | { s: "chunk-data"; remaining: number }
  | { s: "chunk-crlf"; seen: number }
  | { s: "trailers"; bytes: number; count: number }
  | { s: "close" }
  | { s: "upgraded" }
  | { s: "done" }
  | { s: "failed"; error: HttpError };

/**
 * Incremental response parser for one response (plus any 1xx before it).
 * `push` bytes as they arrive and `end` at end of stream; both return events
 * in order and throw `HttpError` on malformed input (after which the parser
 * stays failed).
 */
export class ResponseParser {
  private state: State = { s: "head" };
  // Bytes of an incomplete head, chunk-size line or trailer section.
  private pending: Uint8Array = new Uint8Array(0);
  private scanFrom = 0;
  private readonly limits: ParserLimits;
  private readonly headRequest: boolean;

  constructor(requestMethod: string, limits: Partial<ParserLimits> = {}) {
    this.headRequest = requestMethod.toUpperCase() === "HEAD";
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  get finished(): boolean {
    return this.state.s === "done";
  }

  push(data: Uint8Array): ParseEvent[] {
    const events: ParseEvent[] = [];
    try {
      this.run(data, events);
    } catch (e) {
      const err = e instanceof HttpError ? e : new HttpError(String(e));
      this.state = { s: "failed", error: err };
      throw err;
    }
    return events;
  }

  /** End of stream: completes a close-delimited body, or fails an incomplete response. */
  end(): ParseEvent[] {
    const st = this.state;
    const fail = (msg: string): never => {
      const err = new HttpError(msg);
      this.state = { s: "failed", error: err };
      throw err;
    };
    switch (st.s) {
      case "head":
        return fail(
          this.pending.byteLength === 0
            ? "connection closed before a response was received"
            : `connection closed inside the response head (${this.pending.byteLength} bytes received)`,
        );
      case "length":
        return fail(`connection closed after ${st.total - st.remaining} of ${st.total} body bytes`);
      case "chunk-size":
      case "chunk-data":
      case "chunk-crlf":
      case "trailers":
        return fail("connection closed inside a chunked body");
      case "close":
      case "upgraded":
        this.state = { s: "done" };
        return [{ type: "end", rest: new Uint8Array(0) }];
      case "done":
        return [];
      case "failed":
        throw st.error;
    }
  }

  private run(input: Uint8Array, events: ParseEvent[]): void {
    let data = input;
    while (data.byteLength > 0) {
      const st = this.state;
      switch (st.s) {
        case "failed":
          throw st.error;
        case "done":
          throw new HttpError(`${data.byteLength} bytes received after the end of the response`);
        case "head": {
          const end = this.takeUntilBlankLine(data, this.limits.maxHeadBytes, "response head");
          if (end === null) return;
          data = end.rest;
          this.onHead(end.block, events);
          if (this.state.s === "done") {
            events.push({ type: "end", rest: data });
            return;
          }
          break;
        }
        case "length": {
          const n = Math.min(st.remaining, data.byteLength);
          events.push({ type: "data", data: data.subarray(0, n) });
          data = data.subarray(n);
          st.remaining -= n;
          if (st.remaining === 0) {
            this.state = { s: "done" };
            events.push({ type: "end", rest: data });
            return;
          }
          break;
        }
        case "close":
        case "upgraded":
          events.push({ type: "data", data });
          return;
        case "chunk-size": {
          const line = this.takeLine(data, this.limits.maxChunkLineBytes, "chunk-size line");
          if (line === null) return;
          data = line.rest;
          const size = parseChunkSize(line.line);
          this.state = size === 0 ? { s: "trailers", bytes: 0, count: 0 } : { s: "chunk-data", remaining: size };
          break;
        }
        case "chunk-data": {
          const n = Math.min(st.remaining, data.byteLength);
          events.push({ type: "data", data: data.subarray(0, n) });
          data = data.subarray(n);
          st.remaining -= n;
          if (st.remaining === 0) this.state = { s: "chunk-crlf", seen: 0 };
          break;
        }
        case "chunk-crlf": {
          const want = st.seen === 0 ? 13 : 10;
          if (data[0] !== want) throw new HttpError("chunk data not followed by CRLF (chunk size does not match the data)");
          data = data.subarray(1);
          if (st.seen === 0) st.seen = 1;
          else this.state = { s: "chunk-size" };
          break;
        }
        case "trailers": {
          const line = this.takeLine(data, this.limits.maxTrailerBytes, "trailer line");
          if (line === null) return;
          data = line.rest;
          if (line.line === "") {
            this.state = { s: "done" };
            events.push({ type: "end", rest: data });
            return;
          }
          // Trailers are checked for syntax and dropped: fetch has no way to expose them.
          st.bytes += line.line.length + 2;
          st.count += 1;
          if (st.bytes > this.limits.maxTrailerBytes) {
            throw new HttpError(`trailer section exceeds the limit of ${this.limits.maxTrailerBytes} bytes`);
          }
          if (st.count > this.limits.maxHeaders) throw new HttpError(`more than ${this.limits.maxHeaders} trailer fields`);
          parseFieldLines([line.line], this.limits.maxHeaders, "trailer");
          break;
        }
      }
    }
  }

  /** Accumulate until CRLFCRLF; returns the block including the terminator, or null if more bytes are needed. */
  private takeUntilBlankLine(
    data: Uint8Array,
    limit: number,
    what: string,
  ): { block: Uint8Array; rest: Uint8Array } | null {
    const buf = concat(this.pending, data);
    const stop = Math.min(buf.byteLength, limit);
    for (let i = this.scanFrom; i < stop; i++) {
      if (buf[i] !== 10) continue;
      // Reject bare LF as soon as it is seen, rather than waiting for a CRLFCRLF that never comes.
      if (i === 0 || buf[i - 1] !== 13) throw new HttpError(`bare LF in ${what}`);
      if (i >= 3 && buf[i - 2] === 10 && buf[i - 3] === 13) {
        this.pending = new Uint8Array(0);
        this.scanFrom = 0;
        return { block: buf.subarray(0, i + 1), rest: buf.subarray(i + 1) };
      }
    }
    if (buf.byteLength >= limit) throw new HttpError(`${what} exceeds the limit of ${limit} bytes`);
    this.pending = buf === data ? data.slice() : buf;
    this.scanFrom = buf.byteLength;
    return null;
  }

  /** Accumulate one CRLF-terminated line (terminator removed). */
  private takeLine(data: Uint8Array, limit: number, what: string): { line: string; rest: Uint8Array } | null {
    const buf = concat(this.pending, data);
    const stop = Math.min(buf.byteLength, limit + 2);
    for (let i = this.scanFrom; i < stop; i++) {
      if (buf[i] === 10) {
        if (i === 0 || buf[i - 1] !== 13) throw new HttpError(`bare LF in ${what}`);
        this.pending = new Uint8Array(0);
        this.scanFrom = 0;
        return { line: latin1String(buf.subarray(0, i - 1)), rest: buf.subarray(i + 1) };
      }
    }
    if (buf.byteLength >= limit + 2) throw new HttpError(`${what} exceeds the limit of ${limit} bytes`);
    this.pending = buf === data ? data.slice() : buf;
    this.scanFrom = buf.byteLength;
    return null;
  }

  private onHead(block: Uint8Array, events: ParseEvent[]): void {
    const text = latin1String(block.subarray(0, block.byteLength - 4));
    const lines = text.split("\r\n");
    for (const l of lines) {
      if (l.includes("\n")) throw new HttpError("bare LF in response head");
      if (l.includes("\r")) throw new HttpError("bare CR in response head");
    }
    const statusLine = lines[0] ?? "";
    const m = /^HTTP\/1\.([01]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?$/.exec(statusLine);
    if (!m) throw new HttpError(`malformed status line ${JSON.stringify(statusLine.slice(0, 80))}`);
    const status = Number(m[2]);
    if (status < 100 || status > 599) throw new HttpError(`status code ${status} out of range 100-599`);
    const head: ResponseHead = {
      version: m[1] === "1" ? "1.1" : "1.0",
      status,
      reason: m[3] ?? "",
      headers: parseFieldLines(lines.slice(1), this.limits.maxHeaders, "header"),
    };

    if (status === 101) {
      this.state = { s: "upgraded" };
      events.push({ type: "head", head, body: { kind: "upgrade" } });
      return;
    }
    if (status < 200) {
      // Interim response (100 Continue, 103 Early Hints): the real one follows.
      events.push({ type: "informational", head });
      return;
    }
    const body = bodyFraming(head, this.headRequest);
    events.push({ type: "head", head, body });
    switch (body.kind) {
      case "none":
        this.state = { s: "done" };
        break;
      case "length":
        this.state = body.length === 0 ? { s: "done" } : { s: "length", remaining: body.length, total: body.length };
        break;
      case "chunked":
        this.state = { s: "chunk-size" };
        break;
      case "close":
        this.state = { s: "close" };
        break;
      case "upgrade":
        this.state = { s: "upgraded" };
        break;
    }
  }
}

function parseFieldLines(lines: string[], maxHeaders: number, what: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const line of lines) {
    if (line === "") throw new HttpError(`empty line inside ${what} section`);
    if (line[0] === " " || line[0] === "\t") throw new HttpError(`obsolete line folding in ${what} section`);
    const colon = line.indexOf(":");
    if (colon <= 0) throw new HttpError(`malformed ${what} line ${JSON.stringify(line.slice(0, 80))}: no name before ":"`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new HttpError(`invalid ${what} name ${JSON.stringify(name.slice(0, 80))}`);
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value)) throw new HttpError(`invalid characters in ${what} ${name}`);
    out.push([name, value]);
    if (out.length > maxHeaders) throw new HttpError(`more than ${maxHeaders} ${what} fields`);
  }
  return out;
}

/** RFC 9112 §6.3, minus everything ambiguous. */
function bodyFraming(head: ResponseHead, headRequest: boolean): ResponseBody {
  if (headRequest || head.status === 204 || head.status === 304) return { kind: "none" };
  const te: string[] = [];
  const cl: string[] = [];
  for (const [n, v] of head.headers) {
    const lower = n.toLowerCase();
    if (lower === "transfer-encoding") te.push(...v.split(",").map((x) => x.trim().toLowerCase()).filter((x) => x !== ""));
    else if (lower === "content-length") cl.push(...v.split(",").map((x) => x.trim()));
  }
  if (te.length > 0) {
    if (cl.length > 0) throw new HttpError("response has both Transfer-Encoding and Content-Length");
    if (head.version === "1.0") throw new HttpError("Transfer-Encoding in an HTTP/1.0 response");
    if (te.length !== 1 || te[0] !== "chunked") {
      throw new HttpError(`unsupported Transfer-Encoding ${JSON.stringify(te.join(", "))}: only "chunked" is accepted`);
    }
    return { kind: "chunked" };
  }
  if (cl.length > 0) {
    const first = cl[0] ?? "";
    if (!/^[0-9]{1,15}$/.test(first)) throw new HttpError(`invalid Content-Length ${JSON.stringify(first.slice(0, 40))}`);
    if (cl.some((v) => v !== first)) throw new HttpError("conflicting Content-Length values");
    return { kind: "length", length: Number(first) };
  }
  return { kind: "close" };
}

function parseChunkSize(line: string): number {
  // chunk-size [ chunk-ext ]; extensions are allowed and ignored.
  const m = /^([0-9A-Fa-f]+)[ \t]*(;[\t\x20-\x7e\x80-\xff]*)?$/.exec(line);
  if (!m || m[1] === undefined) throw new HttpError(`malformed chunk-size line ${JSON.stringify(line.slice(0, 40))}`);
  const hex = m[1].replace(/^0+(?=.)/, "");
  if (hex.length > 13) throw new HttpError(`chunk size ${m[1].slice(0, 20)} is too large`);
  return parseInt(hex, 16);
}

export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.byteLength === 0) return b;
  if (b.byteLength === 0) return a;
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

/** Header lookup helper for callers: comma-joined values of a field, or null. */
export function headerValue(headers: ReadonlyArray<readonly [string, string]>, name: string): string | null {
  const lower = name.toLowerCase();
  const vals = headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
  return vals.length === 0 ? null : vals.join(", ");
}
