// Include in an app page served through the service worker
// (<script src="/ws-shim.js"></script>, before the app's own scripts):
// replaces window.WebSocket so same-origin sockets go through the tunnel.
// A service worker cannot see WebSocket connections, so the shim asks it for
// a MessagePort to the page that owns the tunnel and speaks over that port.

import { parseWsToPage, type WebSocketMsg, type WsFromPage } from "./bridge-protocol.ts";

const Native = window.WebSocket;
type Handler = ((ev: Event) => void) | null;

function makeEvent(type: string, props: Record<string, unknown>): Event {
  const ev = new Event(type);
  for (const [k, v] of Object.entries(props)) Object.defineProperty(ev, k, { value: v, enumerable: true });
  return ev;
}

/** The app and in-app path of a same-origin ws URL, given this page's location under the scope. */
function tunnelTarget(url: URL, scope: string): { app: string; target: string } | null {
  if (url.host !== location.host) return null;
  const page = location.origin + location.pathname;
  if (!page.startsWith(scope)) return null;
  const app = page.slice(scope.length).split("/")[0] ?? "";
  if (app === "") return null;
  const scopePath = new URL(scope).pathname + app;
  const path = url.pathname.startsWith(scopePath + "/") ? url.pathname.slice(scopePath.length) : url.pathname;
  return { app, target: path + url.search };
}

class ShimWebSocket extends EventTarget {
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
  private readonly port: MessagePort;

  constructor(
    readonly url: string,
    app: string,
    target: string,
    protocols: string[],
  ) {
    super();
    for (const t of ["open", "message", "error", "close"] as const) {
      this.addEventListener(t, (ev) => this[`on${t}`]?.call(this, ev));
    }
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    port1.onmessage = (ev) => this.onPortMessage(ev.data);
    const req: WebSocketMsg = { type: "websocket", app, target, protocols };
    void navigator.serviceWorker.ready.then((reg) => reg.active?.postMessage(req, [port2]));
  }

  private onPortMessage(data: unknown): void {
    const m = parseWsToPage(data);
    if (!m) return;
    switch (m.type) {
      case "open":
        this.readyState = 1;
        this.protocol = m.protocol;
        this.dispatchEvent(new Event("open"));
        return;
      case "message": {
        const d = typeof m.data === "string" || this.binaryType === "arraybuffer" ? m.data : new Blob([m.data]);
        this.dispatchEvent(new MessageEvent("message", { data: d, origin: new URL(this.url).origin }));
        return;
      }
      case "error":
        this.dispatchEvent(makeEvent("error", { message: m.message }));
        return;
      case "close":
        this.readyState = 3;
        this.port.close();
        this.dispatchEvent(makeEvent("close", { code: m.code, reason: m.reason, wasClean: m.wasClean }));
        return;
    }
  }

  send(data: string | ArrayBufferLike | ArrayBufferView | Blob): void {
    if (this.readyState === 0) throw new DOMException("WebSocket is still connecting", "InvalidStateError");
    if (this.readyState !== 1) return;
    const post = (d: string | ArrayBuffer): void => {
      const m: WsFromPage = { type: "send", data: d };
      this.port.postMessage(m, typeof d === "string" ? [] : [d]);
    };
    if (typeof data === "string") post(data);
    else if (data instanceof Blob) void data.arrayBuffer().then(post);
    else if (ArrayBuffer.isView(data)) post(new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice().buffer);
    else post(new Uint8Array(data as ArrayBuffer).slice().buffer);
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    const m: WsFromPage = { type: "close" };
    if (code !== undefined) m.code = code;
    if (reason !== undefined) m.reason = reason;
    this.port.postMessage(m);
  }
}

// The scope is known synchronously from the controller's script URL: sw.js sits next to "app/".
const scope = navigator.serviceWorker?.controller ? new URL("app/", navigator.serviceWorker.controller.scriptURL).href : null;

function TunnelAwareWebSocket(this: unknown, url: string | URL, protocols?: string | string[]): WebSocket {
  const u = new URL(url, location.href);
  const t = scope ? tunnelTarget(u, scope) : null;
  if (!t) return new Native(url, protocols);
  const list = protocols === undefined ? [] : typeof protocols === "string" ? [protocols] : protocols;
  return new ShimWebSocket(u.href, t.app, t.target, list) as unknown as WebSocket;
}
Object.assign(TunnelAwareWebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
TunnelAwareWebSocket.prototype = Native.prototype;
window.WebSocket = TunnelAwareWebSocket as unknown as typeof WebSocket;
