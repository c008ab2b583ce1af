// Test doubles: an RTCDataChannel with a send buffer that drains on demand,
// and a WebSocket whose server side the test drives.
import type { DataChannelLike } from "../src/channel-stream.ts";
import type { WebSocketLike } from "../src/signal.ts";

export class FakeChannel extends EventTarget implements DataChannelLike {
  readyState: "connecting" | "open" | "closing" | "closed" = "connecting";
  bufferedAmount = 0;
  bufferedAmountLowThreshold = 0;
  binaryType = "blob";
  sent: Uint8Array[] = [];
  /** messages are kept in the send buffer until drain() */
  holdSends = false;
  constructor(readonly label: string) {
    super();
  }
  open(): void {
    this.readyState = "open";
    this.dispatchEvent(new Event("open"));
  }
  send(data: Uint8Array): void {
    if (this.readyState !== "open") throw new Error("InvalidStateError: send on a channel that is not open");
    if (data.byteLength > 64 * 1024) throw new Error(`message of ${data.byteLength} bytes is over 64 KiB`);
    this.sent.push(data);
    if (this.holdSends) this.bufferedAmount += data.byteLength;
  }
  drain(bytes = Infinity): void {
    const before = this.bufferedAmount;
    this.bufferedAmount = Math.max(0, this.bufferedAmount - bytes);
    if (before > this.bufferedAmountLowThreshold && this.bufferedAmount <= this.bufferedAmountLowThreshold) {
      this.dispatchEvent(new Event("bufferedamountlow"));
    }
  }
  deliver(data: Uint8Array | string): void {
    const payload = typeof data === "string" ? data : data.slice().buffer;
    this.dispatchEvent(new MessageEvent("message", { data: payload }));
  }
  close(): void {
    if (this.readyState === "closed") return;
    this.readyState = "closed";
    this.closedByLocal = true;
    queueMicrotask(() => this.dispatchEvent(new Event("close")));
  }
  closedByLocal = false;
  remoteClose(): void {
    if (this.readyState === "closed") return;
    this.readyState = "closed";
    this.dispatchEvent(new Event("close"));
  }
  sentText(): string {
    return new TextDecoder().decode(concatAll(this.sent));
  }
}

export function concatAll(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

export class FakeWebSocket extends EventTarget implements WebSocketLike {
  readyState = 0;
  sent: unknown[] = [];
  closed: { code?: number; reason?: string } | null = null;
  constructor(readonly url: string) {
    super();
  }
  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }
  close(code?: number, reason?: string): void {
    this.closed = { code, reason };
    this.readyState = 3;
  }
  serverOpen(): void {
    this.readyState = 1;
    this.dispatchEvent(new Event("open"));
  }
  serverSend(msg: unknown): void {
    this.dispatchEvent(new MessageEvent("message", { data: typeof msg === "string" ? msg : JSON.stringify(msg) }));
  }
  serverClose(code = 1006): void {
    this.readyState = 3;
    const ev = new Event("close");
    Object.defineProperty(ev, "code", { value: code });
    this.dispatchEvent(ev);
  }
  fail(): void {
    this.dispatchEvent(new Event("error"));
    this.serverClose();
  }
}

/** Timers the test fires by hand. */
export class ManualTimers {
  private next = 1;
  pending = new Map<number, { fn: () => void; ms: number }>();
  setTimeout = (fn: () => void, ms: number): unknown => {
    const id = this.next++;
    this.pending.set(id, { fn, ms });
    return id;
  };
  clearTimeout = (h: unknown): void => {
    this.pending.delete(h as number);
  };
  fireAll(): void {
    const p = [...this.pending.values()];
    this.pending.clear();
    for (const t of p) t.fn();
  }
}

export const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * Waits, bounded, until `cond()` holds. For steps that cross real async work
 * (the handshake's `crypto.subtle` digest), where a fixed number of ticks is
 * enough on an idle machine and not on a loaded one.
 */
export async function until(cond: () => boolean, what: string, limitMs = 5000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${limitMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}
