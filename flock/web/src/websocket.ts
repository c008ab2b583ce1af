// A WebSocket over one tunnel channel: an HTTP/1.1 Upgrade handshake, then
// RFC 6455 framing on the client side (masked frames out, unmasked frames in,
// fragments, ping/pong, close handshake). The object behaves like the DOM
// WebSocket, so app code (and the SW-mode shim) can use it unchanged.

import type { CookieJar } from "./cookies.ts";
import type { ChannelStream } from "./channel-stream.ts";
import { encodeRequestHead, headerValue, HttpError, ResponseParser } from "./http1.ts";
import { openFresh, targetOf } from "./fetch.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

export const Op = { Continuation: 0, Text: 1, Binary: 2, Close: 8, Ping: 9, Pong: 10 } as const;

export class WebSocketProtocolError extends Error {
  override name = "WebSocketProtocolError";
  constructor(
    message: string,
    /** the close code to send: 1002 protocol error, 1007 bad UTF-8, 1009 too big */
    readonly code = 1002,
  ) {
    super(message);
  }
}

export interface Frame {
  fin: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** One client frame; `mask` is 4 random bytes (clients must mask). */
export function encodeFrame(opcode: number, payload: Uint8Array, mask: Uint8Array, fin = true): Uint8Array {
  const len = payload.byteLength;
  const extra = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const out = new Uint8Array(2 + extra + 4 + len);
  out[0] = (fin ? 0x80 : 0) | opcode;
  if (extra === 0) out[1] = 0x80 | len;
  else if (extra === 2) {
    out[1] = 0x80 | 126;
    out[2] = len >>> 8;
    out[3] = len & 0xff;
  } else {
    out[1] = 0x80 | 127;
    new DataView(out.buffer).setBigUint64(2, BigInt(len));
  }
  const m = 2 + extra;
  out.set(mask.subarray(0, 4), m);
  for (let i = 0; i < len; i++) out[m + 4 + i] = (payload[i] ?? 0) ^ (mask[i & 3] ?? 0);
  return out;
}

/** Incremental parser for server→client frames. */
export class FrameParser {
  private buf = new Uint8Array(0);

  constructor(private readonly maxPayload = MAX_MESSAGE_BYTES) {}

  push(data: Uint8Array): Frame[] {
    const joined = new Uint8Array(this.buf.byteLength + data.byteLength);
    joined.set(this.buf);
    joined.set(data, this.buf.byteLength);
    let b = joined;
    const frames: Frame[] = [];
    for (;;) {
      if (b.byteLength < 2) break;
      const b0 = b[0] ?? 0;
      const b1 = b[1] ?? 0;
      if (b0 & 0x70) throw new WebSocketProtocolError("frame has reserved bits set (no extension was negotiated)");
      const opcode = b0 & 0x0f;
      if (![0, 1, 2, 8, 9, 10].includes(opcode)) throw new WebSocketProtocolError(`unknown opcode ${opcode}`);
      if (b1 & 0x80) throw new WebSocketProtocolError("server frames must not be masked");
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.byteLength < 4) break;
        len = ((b[2] ?? 0) << 8) | (b[3] ?? 0);
        off = 4;
      } else if (len === 127) {
        if (b.byteLength < 10) break;
        const big = new DataView(b.buffer, b.byteOffset + 2, 8).getBigUint64(0);
        if (big > BigInt(this.maxPayload)) throw new WebSocketProtocolError(`frame of ${big} bytes is over the ${this.maxPayload}-byte limit`, 1009);
        len = Number(big);
        off = 10;
      }
      const fin = (b0 & 0x80) !== 0;
      if (opcode >= 8 && (!fin || len > 125)) throw new WebSocketProtocolError("control frame fragmented or over 125 bytes");
      if (len > this.maxPayload) throw new WebSocketProtocolError(`frame of ${len} bytes is over the ${this.maxPayload}-byte limit`, 1009);
      if (b.byteLength < off + len) break;
      frames.push({ fin, opcode, payload: b.slice(off, off + len) });
      b = b.subarray(off + len);
    }
    this.buf = b.slice();
    return frames;
  }
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  crypto.getRandomValues(out);
  return out;
}

function base64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

export async function acceptFor(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(key + GUID));
  return base64(new Uint8Array(digest));
}

function makeEvent(type: string, props: Record<string, unknown>): Event {
  const ev = new Event(type);
  for (const [k, v] of Object.entries(props)) Object.defineProperty(ev, k, { value: v, enumerable: true });
  return ev;
}

type Handler = ((ev: Event) => void) | null;

export class TunnelWebSocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;

  readyState = 0;
  protocol = "";
  readonly extensions = "";
  binaryType: BinaryType = "blob";
  bufferedAmount = 0;
  onopen: Handler = null;
  onmessage: Handler = null;
  onerror: Handler = null;
  onclose: Handler = null;

  private ch: ChannelStream | null = null;
  private writes: Promise<void> = Promise.resolve();
  private fragments: Uint8Array[] = [];
  private fragmentOp = 0;
  private fragmentBytes = 0;
  private closeSent = false;
  private finished = false;

  constructor(
    readonly url: string,
    private readonly open: () => ChannelStream | Promise<ChannelStream>,
    private readonly app: string,
    private readonly target: string,
    private readonly protocols: string[],
    /** The app's cookies for the handshake (from the tunnel's jar), if any. */
    private readonly cookie: string | null = null,
  ) {
    super();
    for (const t of ["open", "message", "error", "close"] as const) {
      this.addEventListener(t, (ev) => {
        const h = this[`on${t}`];
        if (h) h.call(this, ev);
      });
    }
    void this.run();
  }

  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): void {
    if (this.readyState === 0) throw new DOMException("WebSocket is still connecting", "InvalidStateError");
    if (this.readyState !== 1) return; // per spec: silently dropped once closing
    if (typeof data === "string") return this.sendFrame(Op.Text, new TextEncoder().encode(data));
    if (data instanceof Blob) {
      const blob = data;
      this.bufferedAmount += blob.size;
      this.writes = this.writes.then(async () => {
        this.bufferedAmount -= blob.size;
        await this.writeFrame(Op.Binary, new Uint8Array(await blob.arrayBuffer()));
      });
      return;
    }
    const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice() : new Uint8Array(data as ArrayBuffer).slice();
    this.sendFrame(Op.Binary, bytes);
  }

  close(code?: number, reason = ""): void {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
      throw new DOMException(`close code ${code} is not 1000 or 3000-4999`, "InvalidAccessError");
    }
    const reasonBytes = new TextEncoder().encode(reason);
    if (reasonBytes.byteLength > 123) throw new DOMException("close reason over 123 bytes", "SyntaxError");
    if (this.readyState >= 2) return;
    if (this.readyState === 0) {
      this.fail(1006, "closed before the connection was established", false);
      return;
    }
    this.readyState = 2;
    this.sendClose(code, reasonBytes);
  }

  private sendClose(code: number | undefined, reason: Uint8Array): void {
    if (this.closeSent) return;
    this.closeSent = true;
    let payload = new Uint8Array(0);
    if (code !== undefined) {
      payload = new Uint8Array(2 + reason.byteLength);
      payload[0] = code >> 8;
      payload[1] = code & 0xff;
      payload.set(reason, 2);
    }
    this.sendFrame(Op.Close, payload);
  }

  private sendFrame(op: number, payload: Uint8Array): void {
    this.bufferedAmount += payload.byteLength;
    this.writes = this.writes.then(async () => {
      this.bufferedAmount -= payload.byteLength;
      await this.writeFrame(op, payload);
    });
    this.writes.catch(() => {});
  }

  private async writeFrame(op: number, payload: Uint8Array): Promise<void> {
    if (!this.ch || this.finished) return;
    await this.ch.write(encodeFrame(op, payload, randomBytes(4)));
  }

  private async run(): Promise<void> {
    try {
      // A channel that closes before it opens is replaced (see openFresh).
      const ch = await openFresh(() => this.open(), this.app);
      this.ch = ch;
      if (this.finished) {
        ch.close();
        return;
      }
      const key = base64(randomBytes(16));
      const headers: Array<[string, string]> = [
        ["host", this.app],
        ["upgrade", "websocket"],
        ["connection", "Upgrade"],
        ["sec-websocket-key", key],
        ["sec-websocket-version", "13"],
      ];
      if (this.protocols.length > 0) headers.push(["sec-websocket-protocol", this.protocols.join(", ")]);
      if (this.cookie !== null) headers.push(["cookie", this.cookie]);
      await ch.write(encodeRequestHead({ method: "GET", target: this.target, headers }, { kind: "none" }));

      const reader = ch.readable.getReader();
      const http = new ResponseParser("GET");
      const frames = new FrameParser();
      let upgraded = false;
      const expected = await acceptFor(key);
      for (;;) {
        const { done, value } = await reader.read();
        const events = done ? http.end() : http.push(value);
        for (const ev of events) {
          if (ev.type === "head") {
            const h = ev.head;
            if (h.status !== 101) throw new HttpError(`app "${this.app}" answered ${h.status} ${h.reason} instead of switching to WebSocket`);
            if (headerValue(h.headers, "upgrade")?.toLowerCase() !== "websocket") throw new HttpError("upgrade response without Upgrade: websocket");
            if (!/(^|,)\s*upgrade\s*(,|$)/i.test(headerValue(h.headers, "connection") ?? "")) throw new HttpError("upgrade response without Connection: upgrade");
            if (headerValue(h.headers, "sec-websocket-accept") !== expected) throw new HttpError("upgrade response has a wrong Sec-WebSocket-Accept");
            const proto = headerValue(h.headers, "sec-websocket-protocol");
            if (proto !== null && !this.protocols.includes(proto)) throw new HttpError(`app chose subprotocol "${proto}", which was not offered`);
            if (headerValue(h.headers, "sec-websocket-extensions") !== null) throw new HttpError("app negotiated an extension that was not offered");
            this.protocol = proto ?? "";
            upgraded = true;
            this.readyState = 1;
            this.dispatchEvent(new Event("open"));
          } else if (ev.type === "data" && upgraded) {
            for (const f of frames.push(ev.data)) this.onFrame(f);
          } else if (ev.type === "end") {
            if (!this.finished) this.fail(1006, "the channel closed without a close frame", !this.closeSent);
            return;
          }
        }
        if (done || this.finished) return;
      }
    } catch (e) {
      if (this.finished) return;
      const code = e instanceof WebSocketProtocolError ? e.code : 1006;
      if (e instanceof WebSocketProtocolError && this.readyState === 1) this.sendClose(code, new Uint8Array(0));
      this.fail(code, e instanceof Error ? e.message : String(e), true);
    }
  }

  private onFrame(f: Frame): void {
    if (this.finished) return;
    switch (f.opcode) {
      case Op.Ping:
        return this.sendFrame(Op.Pong, f.payload);
      case Op.Pong:
        return;
      case Op.Close: {
        if (f.payload.byteLength === 1) throw new WebSocketProtocolError("close frame with a 1-byte payload");
        const code = f.payload.byteLength >= 2 ? ((f.payload[0] ?? 0) << 8) | (f.payload[1] ?? 0) : 1005;
        let reason = "";
        try {
          reason = new TextDecoder("utf-8", { fatal: true }).decode(f.payload.subarray(2));
        } catch {
          throw new WebSocketProtocolError("close reason is not UTF-8", 1007);
        }
        this.readyState = 2;
        // Echo the close, then let the channel go: the server closes the TCP side, we close the channel.
        this.sendClose(code === 1005 ? undefined : code, new Uint8Array(0));
        this.writes.finally(() => this.ch?.close());
        this.finish(code, reason, true);
        return;
      }
      case Op.Continuation:
        if (this.fragments.length === 0) throw new WebSocketProtocolError("continuation frame without a started message");
        return this.addFragment(f);
      default:
        if (this.fragments.length > 0) throw new WebSocketProtocolError("new message started before the previous one finished");
        this.fragmentOp = f.opcode;
        return this.addFragment(f);
    }
  }

  private addFragment(f: Frame): void {
    this.fragmentBytes += f.payload.byteLength;
    if (this.fragmentBytes > MAX_MESSAGE_BYTES) throw new WebSocketProtocolError(`message over ${MAX_MESSAGE_BYTES} bytes`, 1009);
    this.fragments.push(f.payload);
    if (!f.fin) return;
    const msg = new Uint8Array(this.fragmentBytes);
    let off = 0;
    for (const p of this.fragments) {
      msg.set(p, off);
      off += p.byteLength;
    }
    this.fragments = [];
    this.fragmentBytes = 0;
    let data: string | ArrayBuffer | Blob;
    if (this.fragmentOp === Op.Text) {
      try {
        data = new TextDecoder("utf-8", { fatal: true }).decode(msg);
      } catch {
        throw new WebSocketProtocolError("text message is not valid UTF-8", 1007);
      }
    } else data = this.binaryType === "arraybuffer" ? msg.buffer : new Blob([msg]);
    if (this.readyState === 1) this.dispatchEvent(new MessageEvent("message", { data, origin: new URL(this.url).origin }));
  }

  private fail(code: number, reason: string, withError: boolean): void {
    if (this.finished) return;
    if (withError) this.dispatchEvent(makeEvent("error", { message: reason }));
    this.finish(code === 1006 ? 1006 : code, reason, false);
  }

  private finish(code: number, reason: string, wasClean: boolean): void {
    if (this.finished) return;
    this.finished = true;
    this.readyState = 3;
    if (!wasClean) this.ch?.close();
    this.dispatchEvent(makeEvent("close", { code, reason, wasClean }));
  }
}

/** Open a WebSocket to `path` on `app` over a fresh channel. */
export function tunnelWebSocket(
  open: () => ChannelStream | Promise<ChannelStream>,
  app: string,
  path: string,
  protocols?: string | string[],
  jar?: CookieJar,
): TunnelWebSocket {
  const list = protocols === undefined ? [] : typeof protocols === "string" ? [protocols] : [...protocols];
  for (const p of list) if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(p)) throw new DOMException(`invalid subprotocol "${p}"`, "SyntaxError");
  const target = targetOf(path, app);
  return new TunnelWebSocket(`ws://${app}${target}`, open, app, target, list, jar?.header(target) ?? null);
}
