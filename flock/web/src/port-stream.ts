// A byte stream across a MessagePort with pull-based flow control: the
// receiver posts "pull", the sender answers with one chunk (transferred, not
// copied), "end" or "error". So a slow browser consumer slows the tunnel
// instead of piling chunks up in the service worker. Used for response bodies
// from the page that owns the tunnel to the service worker. Works where
// transferable ReadableStreams do not (Safari).

export interface PortLike {
  postMessage(message: unknown, transfer?: Transferable[]): void;
  addEventListener(type: "message", listener: (ev: MessageEvent) => void): void;
  start?(): void;
}

type StreamMsg =
  | { tag: string; kind: "pull" }
  | { tag: string; kind: "cancel"; reason: string }
  | { tag: string; kind: "chunk"; data: ArrayBuffer }
  | { tag: string; kind: "end" }
  | { tag: string; kind: "error"; message: string };

function asStreamMsg(v: unknown, tag: string): StreamMsg | null {
  if (typeof v !== "object" || v === null) return null;
  const o = v as Record<string, unknown>;
  if (o.tag !== tag) return null;
  switch (o.kind) {
    case "pull":
    case "end":
      return { tag, kind: o.kind };
    case "cancel":
      return { tag, kind: "cancel", reason: typeof o.reason === "string" ? o.reason : "" };
    case "chunk":
      return o.data instanceof ArrayBuffer ? { tag, kind: "chunk", data: o.data } : null;
    case "error":
      return { tag, kind: "error", message: typeof o.message === "string" ? o.message : "stream failed" };
    default:
      return null;
  }
}

/** Serve `stream` to the other end of `port`, one chunk per pull. */
export function pipeToPort(port: PortLike, tag: string, stream: ReadableStream<Uint8Array>): void {
  const reader = stream.getReader();
  let busy = Promise.resolve();
  port.addEventListener("message", (ev) => {
    const m = asStreamMsg(ev.data, tag);
    if (!m) return;
    if (m.kind === "cancel") {
      void reader.cancel(m.reason).catch(() => {});
      return;
    }
    if (m.kind !== "pull") return;
    busy = busy.then(async () => {
      try {
        const { done, value } = await reader.read();
        if (done) return port.postMessage({ tag, kind: "end" });
        // Copy into a fresh buffer we own, then transfer it.
        const buf = value.slice().buffer;
        port.postMessage({ tag, kind: "chunk", data: buf }, [buf]);
      } catch (e) {
        port.postMessage({ tag, kind: "error", message: e instanceof Error ? e.message : String(e) });
      }
    });
  });
  port.start?.();
}

/** The receiving side of pipeToPort. */
export function streamFromPort(port: PortLike, tag: string): ReadableStream<Uint8Array> {
  let waiting: { resolve: (m: StreamMsg) => void } | null = null;
  port.addEventListener("message", (ev) => {
    const m = asStreamMsg(ev.data, tag);
    if (!m || m.kind === "pull" || m.kind === "cancel") return;
    const w = waiting;
    waiting = null;
    w?.resolve(m);
  });
  port.start?.();
  return new ReadableStream<Uint8Array>({
    pull: async (ctl) => {
      const m = await new Promise<StreamMsg>((resolve) => {
        waiting = { resolve };
        port.postMessage({ tag, kind: "pull" });
      });
      if (m.kind === "chunk") ctl.enqueue(new Uint8Array(m.data));
      else if (m.kind === "end") ctl.close();
      else if (m.kind === "error") ctl.error(new Error(m.message));
    },
    cancel: (reason) => {
      port.postMessage({ tag, kind: "cancel", reason: String(reason ?? "") });
    },
  });
}
