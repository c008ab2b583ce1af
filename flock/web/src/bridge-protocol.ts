// Messages between the service worker, the page that owns the tunnel (the
// portal) and app pages (the WebSocket shim). Shared by both sides and free of
// DOM- or worker-only types so it compiles in either. Everything received is
// checked with the parsers below before use.

/** portal → SW (with a MessagePort to carry fetches): "I hold a tunnel" */
export interface AttachMsg {
  type: "intrust-attach";
  device: string;
  apps: string[];
}
/** SW → windows: "I lost my tunnel port (restart?), attach again" */
export interface NeedBridgeMsg {
  type: "intrust-need-bridge";
}
/** SW → portal over the bridge port, with a per-request port */
export interface FetchMsg {
  type: "fetch";
  app: string;
  method: string;
  target: string;
  headers: Array<[string, string]>;
  body: ArrayBuffer | null;
}
/** app page (shim) → SW → portal, with a port for one WebSocket */
export interface WebSocketMsg {
  type: "websocket";
  app: string;
  target: string;
  protocols: string[];
}
/** portal → SW over the per-request port */
export type FetchReply =
  | { type: "head"; status: number; statusText: string; headers: Array<[string, string]> }
  | { type: "error"; message: string };

/** portal ↔ shim over a WebSocket port */
export type WsToPage =
  | { type: "open"; protocol: string }
  | { type: "message"; data: string | ArrayBuffer }
  | { type: "error"; message: string }
  | { type: "close"; code: number; reason: string; wasClean: boolean };
export type WsFromPage = { type: "send"; data: string | ArrayBuffer } | { type: "close"; code?: number; reason?: string };

function obj(v: unknown): Record<string, unknown> | null {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}
const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === "string");
const pairs = (v: unknown): v is Array<[string, string]> =>
  Array.isArray(v) && v.every((p) => Array.isArray(p) && p.length === 2 && typeof p[0] === "string" && typeof p[1] === "string");

export function parseAttach(v: unknown): AttachMsg | null {
  const o = obj(v);
  if (!o || o.type !== "intrust-attach" || typeof o.device !== "string" || !strings(o.apps)) return null;
  return { type: o.type, device: o.device, apps: o.apps };
}
export function isNeedBridge(v: unknown): boolean {
  return obj(v)?.type === "intrust-need-bridge";
}
export function parseFetch(v: unknown): FetchMsg | null {
  const o = obj(v);
  if (!o || o.type !== "fetch" || typeof o.app !== "string" || typeof o.method !== "string" || typeof o.target !== "string") return null;
  if (!pairs(o.headers) || !(o.body === null || o.body instanceof ArrayBuffer)) return null;
  return { type: "fetch", app: o.app, method: o.method, target: o.target, headers: o.headers, body: o.body };
}
export function parseWebSocketMsg(v: unknown): WebSocketMsg | null {
  const o = obj(v);
  if (!o || o.type !== "websocket" || typeof o.app !== "string" || typeof o.target !== "string" || !strings(o.protocols)) return null;
  return { type: "websocket", app: o.app, target: o.target, protocols: o.protocols };
}
export function parseFetchReply(v: unknown): FetchReply | null {
  const o = obj(v);
  if (!o) return null;
  if (o.type === "error" && typeof o.message === "string") return { type: "error", message: o.message };
  if (o.type === "head" && typeof o.status === "number" && typeof o.statusText === "string" && pairs(o.headers)) {
    return { type: "head", status: o.status, statusText: o.statusText, headers: o.headers };
  }
  return null;
}
export function parseWsToPage(v: unknown): WsToPage | null {
  const o = obj(v);
  if (!o) return null;
  switch (o.type) {
    case "open":
      return typeof o.protocol === "string" ? { type: "open", protocol: o.protocol } : null;
    case "message":
      return typeof o.data === "string" || o.data instanceof ArrayBuffer ? { type: "message", data: o.data } : null;
    case "error":
      return typeof o.message === "string" ? { type: "error", message: o.message } : null;
    case "close":
      return typeof o.code === "number" && typeof o.reason === "string" && typeof o.wasClean === "boolean"
        ? { type: "close", code: o.code, reason: o.reason, wasClean: o.wasClean }
        : null;
    default:
      return null;
  }
}
export function parseWsFromPage(v: unknown): WsFromPage | null {
  const o = obj(v);
  if (!o) return null;
  if (o.type === "send" && (typeof o.data === "string" || o.data instanceof ArrayBuffer)) return { type: "send", data: o.data };
  if (o.type === "close") {
    const out: WsFromPage = { type: "close" };
    if (typeof o.code === "number") out.code = o.code;
    if (typeof o.reason === "string") out.reason = o.reason;
    return out;
  }
  return null;
}
