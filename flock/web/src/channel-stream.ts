// An RTCDataChannel seen as a byte stream, like a TCP socket: writes are cut
// into messages of at most 64 KiB (the tunnel contract) and wait while the
// channel's send buffer is above a high-water mark; received messages are
// queued into a ReadableStream. Closing either way closes the channel, which
// the device takes as "cancel this request".

/** The part of RTCDataChannel we use; tests pass a fake. */
export interface DataChannelLike extends EventTarget {
  readonly label: string;
  readonly readyState: "connecting" | "open" | "closing" | "closed";
  readonly bufferedAmount: number;
  bufferedAmountLowThreshold: number;
  binaryType: string;
  send(data: Uint8Array): void;
  close(): void;
}

export const MAX_MESSAGE = 64 * 1024;

export interface ChannelStreamOptions {
  /** writes wait while bufferedAmount is above this */
  highWaterMark?: number;
  /** and resume when it drops to this (bufferedAmountLowThreshold) */
  lowWaterMark?: number;
}

export class ChannelClosedError extends Error {
  override name = "ChannelClosedError";
}

export class ChannelStream {
  readonly readable: ReadableStream<Uint8Array>;
  private readonly ch: DataChannelLike;
  private readonly high: number;
  private readableCtl!: ReadableStreamDefaultController<Uint8Array>;
  private readableDone = false;
  private closedError: Error | null = null;
  private drainWaiters: Array<() => void> = [];
  private readonly openPromise: Promise<void>;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  constructor(channel: DataChannelLike, opts: ChannelStreamOptions = {}) {
    this.ch = channel;
    this.high = opts.highWaterMark ?? 1024 * 1024;
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = opts.lowWaterMark ?? 256 * 1024;
    this.readable = new ReadableStream<Uint8Array>({
      start: (ctl) => {
        this.readableCtl = ctl;
      },
      // The reader no longer wants the bytes: for a request that means cancel, so close the channel.
      cancel: () => {
        this.readableDone = true;
        this.close();
      },
    });
    this.closedPromise = new Promise((r) => (this.resolveClosed = r));
    this.openPromise = new Promise<void>((resolve, reject) => {
      if (channel.readyState === "open") return resolve();
      const onOpen = (): void => {
        channel.removeEventListener("close", onFail);
        resolve();
      };
      const onFail = (): void => {
        channel.removeEventListener("open", onOpen);
        reject(new ChannelClosedError(`channel "${channel.label}" closed before it opened`));
      };
      channel.addEventListener("open", onOpen, { once: true });
      channel.addEventListener("close", onFail, { once: true });
    });
    // Avoid an unhandled rejection if nobody awaits opened().
    this.openPromise.catch(() => {});

    channel.addEventListener("message", (ev) => this.onMessage(ev as MessageEvent));
    channel.addEventListener("bufferedamountlow", () => this.wakeWriters());
    channel.addEventListener("close", () => this.onClose(null));
    channel.addEventListener("error", (ev) => {
      const detail = (ev as Event & { error?: { message?: string } }).error?.message;
      this.onClose(new ChannelClosedError(`channel "${channel.label}" failed${detail ? `: ${detail}` : ""}`));
    });
  }

  get label(): string {
    return this.ch.label;
  }

  /** Resolves when the channel is open; rejects if it closes first. */
  opened(): Promise<void> {
    return this.openPromise;
  }

  /** Resolves once the channel has closed, whoever closed it. */
  closed(): Promise<void> {
    return this.closedPromise;
  }

  /** Write bytes, in ≤ 64 KiB messages, waiting for the send buffer to drain as needed. */
  async write(bytes: Uint8Array): Promise<void> {
    await this.openPromise;
    for (let off = 0; off < bytes.byteLength; off += MAX_MESSAGE) {
      while (this.ch.bufferedAmount > this.high && this.closedError === null && this.ch.readyState === "open") {
        await new Promise<void>((r) => this.drainWaiters.push(r));
      }
      if (this.closedError !== null) throw this.closedError;
      if (this.ch.readyState !== "open") throw new ChannelClosedError(`channel "${this.ch.label}" is closed`);
      // Copy the slice: send() may keep a reference and the caller may reuse its buffer.
      this.ch.send(bytes.slice(off, Math.min(off + MAX_MESSAGE, bytes.byteLength)));
    }
  }

  /** Close the channel (the device sees end of stream / cancellation). */
  close(): void {
    if (this.ch.readyState === "open" || this.ch.readyState === "connecting") this.ch.close();
    this.onClose(null);
  }

  private onMessage(ev: MessageEvent): void {
    if (this.readableDone) return;
    const d: unknown = ev.data;
    let bytes: Uint8Array;
    if (d instanceof ArrayBuffer) bytes = new Uint8Array(d);
    else if (ArrayBuffer.isView(d)) bytes = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    else {
      // The contract says binary only; a text message means the peer is not speaking the tunnel protocol.
      this.onClose(new ChannelClosedError(`channel "${this.ch.label}" received a text message on a byte stream`));
      this.ch.close();
      return;
    }
    if (bytes.byteLength > 0) this.readableCtl.enqueue(bytes);
  }

  private onClose(err: Error | null): void {
    if (this.closedError === null) this.closedError = err ?? new ChannelClosedError(`channel "${this.ch.label}" is closed`);
    if (!this.readableDone) {
      this.readableDone = true;
      if (err) this.readableCtl.error(err);
      else this.readableCtl.close();
    }
    this.wakeWriters();
    this.resolveClosed();
  }

  private wakeWriters(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const r of w) r();
  }
}
