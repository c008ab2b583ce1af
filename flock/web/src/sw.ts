// Service worker: makes an unmodified web app work through the tunnel. It
// answers fetches under its scope ("…/app/APP/…" → app APP, path "/…"), and
// same-origin fetches from pages under that scope (an app's absolute paths),
// by forwarding them to the page that owns the tunnel over a MessagePort.
// It holds no tunnel itself: a SW cannot own an RTCPeerConnection and may be
// stopped whenever it is idle, so after a restart it asks windows to attach again.

import {
  parseAttach,
  parseFetchReply,
  parseWebSocketMsg,
  type FetchMsg,
  type NeedBridgeMsg,
} from "./bridge-protocol.ts";
import { injectScript, isHtmlPage, MAX_INJECT_BYTES } from "./inject.ts";
import { streamFromPort } from "./port-stream.ts";

declare const self: ServiceWorkerGlobalScope;

const ATTACH_WAIT_MS = 5_000;
const HEAD_WAIT_MS = 60_000;
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

let bridge: MessagePort | null = null;
let apps: string[] = [];
let attachWaiters: Array<(p: MessagePort) => void> = [];

self.addEventListener("install", () => void self.skipWaiting());
self.addEventListener("activate", (ev) => ev.waitUntil(self.clients.claim()));

self.addEventListener("message", (ev) => {
  const msg = parseAttach(ev.data);
  const port = ev.ports[0];
  if (msg) {
    if (!port) return;
    bridge = port;
    apps = msg.apps;
    for (const w of attachWaiters.splice(0)) w(port);
    return;
  }
  // A WebSocket request from the shim in an app page: hand its port to the tunnel owner.
  const ws = parseWebSocketMsg(ev.data);
  if (ws && port) {
    ev.waitUntil(
      getBridge().then(
        (b) => b.postMessage(ws, [port]),
        (e: unknown) => port.postMessage({ type: "close", code: 1006, reason: e instanceof Error ? e.message : String(e), wasClean: false }),
      ),
    );
  }
});

async function getBridge(): Promise<MessagePort> {
  if (bridge) return bridge;
  const got = new Promise<MessagePort>((resolve, reject) => {
    attachWaiters.push(resolve);
    setTimeout(() => reject(new Error("no page holds a connection to the appliance: open the portal and connect")), ATTACH_WAIT_MS);
  });
  const need: NeedBridgeMsg = { type: "intrust-need-bridge" };
  for (const c of await self.clients.matchAll({ type: "window", includeUncontrolled: true })) c.postMessage(need);
  return got;
}

/** "https://h/app/" + "notes/a/b?c" → { app: "notes", target: "/a/b?c" } */
function underScope(url: URL): { app: string; target: string } | null {
  const scope = self.registration.scope;
  const href = url.origin + url.pathname;
  if (!href.startsWith(scope)) return null;
  const rest = href.slice(scope.length);
  const slash = rest.indexOf("/");
  const app = slash < 0 ? rest : rest.slice(0, slash);
  if (app === "") return null;
  return { app, target: (slash < 0 ? "/" : rest.slice(slash)) + url.search };
}

async function route(ev: FetchEvent): Promise<{ app: string; target: string } | null> {
  const url = new URL(ev.request.url);
  if (url.origin !== self.location.origin) return null;
  if (url.pathname.endsWith("/ws-shim.js") || url.pathname.endsWith("/sw.js")) return null;
  const direct = underScope(url);
  if (direct) return direct;
  // An app page asking for "/static/x.js": route to the app the page belongs to.
  if (!ev.clientId) return null;
  const client = await self.clients.get(ev.clientId);
  const owner = client ? underScope(new URL(client.url)) : null;
  return owner ? { app: owner.app, target: url.pathname + url.search } : null;
}

function textResponse(status: number, text: string): Response {
  return new Response(text, { status, headers: { "content-type": "text/plain; charset=utf-8" } });
}

/** Location "/login" from app A must become "…/app/A/login" to stay in the tunnel. */
function rewriteLocation(value: string, app: string): string {
  if (value.startsWith("/") && !value.startsWith("//")) return `${self.registration.scope}${app}${value}`;
  try {
    const u = new URL(value);
    if (u.host === app) return `${self.registration.scope}${app}${u.pathname}${u.search}${u.hash}`;
  } catch {
    // relative without a leading "/": the browser resolves it against the request URL, which is right
  }
  return value;
}

async function forward(request: Request, app: string, target: string): Promise<Response> {
  let port: MessagePort;
  try {
    port = await getBridge();
  } catch (e) {
    return textResponse(503, e instanceof Error ? e.message : String(e));
  }
  if (apps.length > 0 && !apps.includes(app)) return textResponse(404, `the appliance has no app "${app}"`);
  const headers: Array<[string, string]> = [];
  request.headers.forEach((v, n) => headers.push([n, v]));
  // Bodies are read whole so the app sees a Content-Length (some servers refuse chunked uploads).
  const body = request.method === "GET" || request.method === "HEAD" ? null : await request.arrayBuffer();
  const msg: FetchMsg = { type: "fetch", app, method: request.method, target, headers, body };
  const { port1, port2 } = new MessageChannel();
  const head = new Promise<Response>((resolve) => {
    const timer = setTimeout(() => resolve(textResponse(504, "the page holding the tunnel did not answer")), HEAD_WAIT_MS);
    port1.addEventListener("message", function onHead(ev) {
      const reply = parseFetchReply(ev.data);
      if (!reply) return;
      port1.removeEventListener("message", onHead);
      clearTimeout(timer);
      if (reply.type === "error") return resolve(textResponse(502, `tunnel: ${reply.message}`));
      const h = new Headers();
      for (const [n, v] of reply.headers) {
        try {
          h.append(n, n.toLowerCase() === "location" ? rewriteLocation(v, app) : v);
        } catch {
          // forbidden response header: cannot be passed on
        }
      }
      const nullBody = NULL_BODY.has(reply.status) || request.method === "HEAD";
      resolve(new Response(nullBody ? null : streamFromPort(port1, "res"), { status: reply.status, statusText: reply.statusText, headers: h }));
    });
    port1.start();
  });
  port.postMessage(msg, body ? [port2, body] : [port2]);
  const resp = await head;
  return request.method === "GET" && isHtmlPage(resp.status, resp.headers.get("content-type")) ? withShim(resp) : resp;
}

/** An app page with the WebSocket shim added (see inject.ts). */
async function withShim(resp: Response): Promise<Response> {
  const declared = Number(resp.headers.get("content-length") ?? "0");
  if (declared > MAX_INJECT_BYTES) return resp;
  const html = await resp.text();
  const headers = new Headers(resp.headers);
  headers.delete("content-length");
  const shim = new URL("ws-shim.js", self.location.href).href;
  return new Response(injectScript(html, shim), { status: resp.status, statusText: resp.statusText, headers });
}

self.addEventListener("fetch", (ev) => {
  // respondWith must be called synchronously, so routing happens inside it and
  // requests that are not ours go to the network unchanged.
  const url = new URL(ev.request.url);
  if (url.origin !== self.location.origin) return;
  ev.respondWith(
    route(ev).then((r) => (r ? forward(ev.request, r.app, r.target) : fetch(ev.request))),
  );
});
