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
import { defaultTimers, type Timers } from "./signal.ts";

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

/** The part of a ServiceWorkerRegistration `whenActivated` watches (tests pass a fake). */
export interface RegistrationLike {
  readonly scope: string;
  readonly active: ServiceWorkerLike | null;
  readonly waiting: ServiceWorkerLike | null;
  readonly installing: ServiceWorkerLike | null;
  addEventListener(type: "updatefound", listener: () => void): void;
  removeEventListener(type: "updatefound", listener: () => void): void;
}

export interface ServiceWorkerLike {
  readonly state: string;
  addEventListener(type: "statechange", listener: () => void): void;
  removeEventListener(type: "statechange", listener: () => void): void;
}

/**
 * Resolves with the registration's worker once it is activated. (Not
 * `navigator.serviceWorker.ready`: that waits for a registration whose scope
 * covers *this* page, and the portal at "/" is outside "app/", so it never
 * resolves here.) Rejects if the worker fails to install or takes longer
 * than `timeoutMs`.
 */
export function whenActivated<W extends ServiceWorkerLike>(
  reg: RegistrationLike & { readonly active: W | null; readonly waiting: W | null; readonly installing: W | null },
  timeoutMs = 10_000,
  timers: Timers = defaultTimers,
): Promise<W> {
  return new Promise<W>((resolve, reject) => {
    let watched: W | null = null;
    let timer: unknown;
    const finish = (): void => {
      timers.clearTimeout(timer);
      watched?.removeEventListener("statechange", check);
      reg.removeEventListener("updatefound", check);
    };
    function check(): void {
      const active = reg.active;
      if (active && active.state === "activated") {
        finish();
        return resolve(active);
      }
      // Follow the newest worker: installing → waiting → active.
      const next = reg.installing ?? reg.waiting ?? reg.active;
      if (next && next !== watched) {
        watched?.removeEventListener("statechange", check);
        watched = next;
        next.addEventListener("statechange", check);
      } else if (!next && watched?.state === "redundant") {
        finish();
        reject(new Error(`the service worker for ${reg.scope} failed to install`));
      }
    }
    reg.addEventListener("updatefound", check);
    timer = timers.setTimeout(() => {
      finish();
      const state = watched ? `it is still "${watched.state}"` : "no worker is installing";
      reject(new Error(`the service worker for ${reg.scope} did not become active within ${timeoutMs / 1000} s (${state})`));
    }, timeoutMs);
    check();
  });
}

/**
 * Register the service worker and hand it a bridge to `tunnel`; re-attach
 * whenever the SW asks (it loses the port when the browser stops it).
 * Returns the scope apps are served under ("…/app/").
 */
export async function attachServiceWorker(tunnel: Tunnel, swUrl = "sw.js", scope = "app/", timeoutMs = 10_000): Promise<string> {
  const reg = await navigator.serviceWorker.register(swUrl, { scope });
  await whenActivated(reg, timeoutMs);
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
