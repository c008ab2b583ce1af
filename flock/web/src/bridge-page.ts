// The page side of service-worker mode: the page that owns the Appliance
// serves the SW's fetches (and app pages' WebSockets) over MessagePorts.
// A SW cannot hold an RTCPeerConnection, so the tunnel lives here.

import {
  isNeedBridge,
  parseFetch,
  parseWebSocketMsg,
  parseWsFromPage,
  type AttachMsg,
  type FetchReply,
  type WsToPage,
} from "./bridge-protocol.ts";
import type { Appliance } from "./peer.ts";
import { pipeToPort } from "./port-stream.ts";

/** Anything that can fetch/websocket through the tunnel (an Appliance; tests pass a fake). */
export type Tunnel = Pick<Appliance, "device" | "apps" | "fetch" | "websocket">;

/** Serve one fetch request that arrived with its own port. */
export async function serveFetch(tunnel: Tunnel, data: unknown, port: MessagePort): Promise<void> {
  const req = parseFetch(data);
  const reply = (m: FetchReply): void => port.postMessage(m);
  if (!req) return reply({ type: "error", message: "malformed fetch message from the service worker" });
  if (!tunnel.apps.includes(req.app)) return reply({ type: "error", message: `the appliance has no app "${req.app}"` });
  try {
    const init: RequestInit = { method: req.method, headers: req.headers, redirect: "manual" };
    if (req.body !== null) init.body = req.body;
    const resp = await tunnel.fetch(req.app, req.target, init);
    const headers: Array<[string, string]> = [];
    resp.headers.forEach((v, n) => headers.push([n, v]));
    reply({ type: "head", status: resp.status, statusText: resp.statusText, headers });
    if (resp.body) pipeToPort(port, "res", resp.body);
  } catch (e) {
    reply({ type: "error", message: e instanceof Error ? e.message : String(e) });
  }
}

/** Serve one WebSocket for the shim in an app page. */
export function serveWebSocket(tunnel: Tunnel, data: unknown, port: MessagePort): void {
  const req = parseWebSocketMsg(data);
  const post = (m: WsToPage, transfer: Transferable[] = []): void => port.postMessage(m, transfer);
  if (!req) return post({ type: "close", code: 1006, reason: "malformed websocket request", wasClean: false });
  let ws: ReturnType<Tunnel["websocket"]>;
  try {
    ws = tunnel.websocket(req.app, req.target, req.protocols);
  } catch (e) {
    post({ type: "error", message: e instanceof Error ? e.message : String(e) });
    return post({ type: "close", code: 1006, reason: "", wasClean: false });
  }
  ws.binaryType = "arraybuffer";
  ws.addEventListener("open", () => post({ type: "open", protocol: ws.protocol }));
  ws.addEventListener("message", (ev) => {
    const d: unknown = (ev as MessageEvent).data;
    if (typeof d === "string") post({ type: "message", data: d });
    else if (d instanceof ArrayBuffer) post({ type: "message", data: d }, [d]);
  });
  ws.addEventListener("error", (ev) => post({ type: "error", message: String((ev as Event & { message?: unknown }).message ?? "error") }));
  ws.addEventListener("close", (ev) => {
    const c = ev as CloseEvent;
    post({ type: "close", code: c.code, reason: c.reason, wasClean: c.wasClean });
    port.close();
  });
  port.addEventListener("message", (ev) => {
    const m = parseWsFromPage(ev.data);
    if (!m) return;
    try {
      if (m.type === "send") ws.send(m.data);
      else ws.close(m.code, m.reason);
    } catch (e) {
      post({ type: "error", message: e instanceof Error ? e.message : String(e) });
    }
  });
  port.start();
}

/** Handle messages on the bridge port (fetches and WebSockets from the SW). */
export function serveBridgePort(tunnel: Tunnel, port: MessagePort): void {
  port.addEventListener("message", (ev) => {
    const reqPort = ev.ports[0];
    if (!reqPort) return;
    const type = (ev.data as { type?: unknown } | null)?.type;
    if (type === "fetch") void serveFetch(tunnel, ev.data, reqPort);
    else if (type === "websocket") serveWebSocket(tunnel, ev.data, reqPort);
  });
  port.start();
}

/**
 * Register the service worker and hand it a bridge to `tunnel`; re-attach
 * whenever the SW asks (it loses the port when the browser stops it).
 * Returns the scope apps are served under ("…/app/").
 */
export async function attachServiceWorker(tunnel: Tunnel, swUrl = "sw.js", scope = "app/"): Promise<string> {
  const reg = await navigator.serviceWorker.register(swUrl, { scope });
  await navigator.serviceWorker.ready;
  const attach = (): void => {
    const worker = reg.active ?? reg.waiting ?? reg.installing;
    if (!worker) return;
    const { port1, port2 } = new MessageChannel();
    serveBridgePort(tunnel, port1);
    const msg: AttachMsg = { type: "intrust-attach", device: tunnel.device, apps: [...tunnel.apps] };
    worker.postMessage(msg, [port2]);
  };
  navigator.serviceWorker.addEventListener("message", (ev) => {
    if (isNeedBridge(ev.data)) attach();
  });
  navigator.serviceWorker.startMessages();
  attach();
  return reg.scope;
}
