// fetch() over the tunnel: one data channel per request, labelled
// "http/1.1 APP", carrying one HTTP/1.1 exchange with "Connection: close".
// Closing the channel is how a request is cancelled (AbortSignal, or the
// response body being cancelled), so one channel per request keeps
// cancellation exact; a keep-alive pool is a later optimisation.

import { ChannelClosedError, type ChannelStream } from "./channel-stream.ts";
import {
  encodeChunk,
  encodeRequestHead,
  HttpError,
  LAST_CHUNK,
  ResponseParser,
  type BodyFraming,
  type ParseEvent,
  type ResponseHead,
} from "./http1.ts";
import type { CookieJar } from "./cookies.ts";

/** Opens a fresh channel to `app` (an Appliance does this; tests pass a fake). */
export type OpenChannel = (app: string) => ChannelStream | Promise<ChannelStream>;

// Hop-by-hop and framing headers belong to this connection, not to the caller.
const CONNECTION_HEADERS = new Set(["connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade", "proxy-connection"]);
const BODYLESS_METHODS = new Set(["GET", "HEAD"]);
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 20;

type Body =
  | { kind: "none" }
  | { kind: "bytes"; bytes: Uint8Array }
  | { kind: "blob"; blob: Blob }
  | { kind: "stream"; stream: ReadableStream<Uint8Array> };

export interface TunnelRequest {
  method: string;
  /** origin-form: "/path?query" */
  target: string;
  headers: Headers;
  body: Body;
  signal: AbortSignal | null;
  redirect: RequestRedirect;
  /** "omit" keeps the app's cookie jar out of this request. */
  credentials: RequestCredentials;
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
}

/** The request target of `url` as seen by an app mounted at "/". */
export function targetOf(url: string | URL, app: string): string {
  const u = new URL(url, `http://${app}/`);
  return (u.pathname || "/") + u.search;
}

/** Normalize fetch(input, init) into what we put on the wire; reads non-stream bodies. */
export async function toTunnelRequest(app: string, input: RequestInfo | URL, init: RequestInit = {}): Promise<TunnelRequest> {
  const req = input instanceof Request ? input : null;
  const method = (init.method ?? req?.method ?? "GET").toUpperCase();
  // A plain Headers (not Request's) keeps headers like Cookie that Request would drop silently.
  const headers = new Headers(init.headers ?? req?.headers);
  const target = targetOf(req ? req.url : input instanceof URL ? input : String(input), app);
  const signal = init.signal ?? req?.signal ?? null;
  const redirect = init.redirect ?? req?.redirect ?? "follow";
  const credentials = init.credentials ?? req?.credentials ?? "same-origin";

  let body: Body = { kind: "none" };
  const raw: unknown = init.body !== undefined ? init.body : req?.body ?? null;
  if (raw !== null && raw !== undefined) {
    if (BODYLESS_METHODS.has(method)) throw new TypeError(`a ${method} request cannot have a body`);
    if (typeof raw === "string") {
      body = { kind: "bytes", bytes: new TextEncoder().encode(raw) };
      if (!headers.has("content-type")) headers.set("content-type", "text/plain;charset=UTF-8");
    } else if (raw instanceof ArrayBuffer) {
      body = { kind: "bytes", bytes: new Uint8Array(raw.slice(0)) };
    } else if (ArrayBuffer.isView(raw)) {
      body = { kind: "bytes", bytes: new Uint8Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)) };
    } else if (raw instanceof Blob) {
      body = { kind: "blob", blob: raw };
      if (!headers.has("content-type") && raw.type) headers.set("content-type", raw.type);
    } else if (raw instanceof ReadableStream) {
      body = { kind: "stream", stream: raw as ReadableStream<Uint8Array> };
    } else {
      // FormData, URLSearchParams: let the platform serialize them (and pick the multipart boundary).
      const r = new Response(raw as BodyInit);
      body = { kind: "bytes", bytes: new Uint8Array(await r.arrayBuffer()) };
      const ct = r.headers.get("content-type");
      if (ct && !headers.has("content-type")) headers.set("content-type", ct);
    }
  }
  return { method, target, headers, body, signal, redirect, credentials };
}

function framingOf(method: string, body: Body): BodyFraming {
  switch (body.kind) {
    case "none":
      // Like browsers: methods that usually carry a body say so explicitly.
      return BODYLESS_METHODS.has(method) ? { kind: "none" } : { kind: "length", length: 0 };
    case "bytes":
      return { kind: "length", length: body.bytes.byteLength };
    case "blob":
      return { kind: "length", length: body.blob.size };
    case "stream":
      return { kind: "chunked" };
  }
}

/** Head lines for the wire: caller's headers minus connection headers, plus Host and Connection. */
export function wireHeaders(app: string, headers: Headers, connection: "close" | "upgrade"): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let host = false;
  headers.forEach((value, name) => {
    if (CONNECTION_HEADERS.has(name)) return;
    if (name === "host") host = true;
    out.push([name, value]);
  });
  if (!host) out.unshift(["host", app]);
  if (!headers.has("accept")) out.push(["accept", "*/*"]);
  out.push(["connection", connection]);
  return out;
}

async function writeBody(ch: ChannelStream, body: Body): Promise<void> {
  switch (body.kind) {
    case "none":
      return;
    case "bytes":
      return ch.write(body.bytes);
    case "blob":
    case "stream": {
      const chunked = body.kind === "stream";
      const reader = (body.kind === "blob" ? (body.blob.stream() as ReadableStream<Uint8Array>) : body.stream).getReader();
      let sent = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        sent += value.byteLength;
        await ch.write(chunked ? encodeChunk(value) : value);
      }
      if (chunked) await ch.write(LAST_CHUNK);
      else if (sent !== (body as { blob: Blob }).blob.size) throw new HttpError("request Blob changed size while it was sent");
      return;
    }
  }
}

/** Channel opens tried per request (see openFresh). */
export const OPEN_ATTEMPTS = 3;

/**
 * A fresh channel to `app`, open. A channel that closes before it opens has
 * carried nothing, so another is tried (at most OPEN_ATTEMPTS in all):
 * rarely the device's SCTP stack drops a new stream before acknowledging
 * it (seen with Chromium), and a request must not fail for that.
 */
export async function openFresh(open: OpenChannel, app: string, signal: AbortSignal | null = null): Promise<ChannelStream> {
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw abortError(signal);
    const ch = await open(app);
    const onAbort = (): void => ch.close();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await ch.opened();
      return ch;
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      if (!(e instanceof ChannelClosedError) || attempt >= OPEN_ATTEMPTS) throw e;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

/**
 * Send one request on a fresh channel and return the Response as soon as its
 * head has arrived; the body streams from the channel. `onHead` sees the
 * head as received, with headers a script-made Response drops (Set-Cookie).
 */
export async function exchange(open: OpenChannel, app: string, req: TunnelRequest, onHead?: (head: ResponseHead) => void): Promise<Response> {
  const { signal } = req;
  const ch = await openFresh(open, app, signal);
  const onAbort = (): void => ch.close();
  signal?.addEventListener("abort", onAbort, { once: true });
  const reader = ch.readable.getReader();
  const parser = new ResponseParser(req.method);
  // Events already parsed but not yet handed to the body stream.
  const queue: ParseEvent[] = [];
  let ended = false;
  let bodyError: unknown = null;
  let finish = (): void => {
    signal?.removeEventListener("abort", onAbort);
    ch.close();
  };

  const fill = async (): Promise<void> => {
    const { done, value } = await reader.read();
    if (signal?.aborted) throw abortError(signal);
    if (done) queue.push(...parser.end());
    else queue.push(...parser.push(value));
  };

  try {
    await ch.opened();
    const head = encodeRequestHead(
      { method: req.method, target: req.target, headers: wireHeaders(app, req.headers, "close") },
      framingOf(req.method, req.body),
    );
    await ch.write(head);
    // The body goes out while the response comes in: a server may answer (e.g. 413) before reading it all.
    const bodyDone = writeBody(ch, req.body).catch((e: unknown) => {
      if (!ended) {
        ended = true;
        ch.close();
        bodyError = e;
      }
    });
    void bodyDone;

    let headEv: Extract<ParseEvent, { type: "head" }> | null = null;
    while (headEv === null) {
      while (queue.length === 0) {
        try {
          await fill();
        } catch (e) {
          if (bodyError) throw bodyError;
          throw e;
        }
      }
      const ev = queue.shift()!;
      if (ev.type === "head") headEv = ev;
      // informational (100 Continue, 103) responses are not exposed by fetch
    }
    if (headEv.body.kind === "upgrade") throw new HttpError(`app "${app}" switched protocols in answer to a plain request`);
    onHead?.(headEv.head);

    const nullBody = headEv.body.kind === "none" || headEv.head.status === 204 || headEv.head.status === 304;
    let stream: ReadableStream<Uint8Array> | null = null;
    if (nullBody) {
      finish();
    } else {
      stream = new ReadableStream<Uint8Array>({
        pull: async (ctl) => {
          try {
            for (;;) {
              const ev = queue.shift();
              if (ev === undefined) {
                await fill();
                continue;
              }
              if (ev.type === "data") {
                if (ev.data.byteLength === 0) continue;
                ctl.enqueue(ev.data);
                return;
              }
              if (ev.type === "end") {
                if (ev.rest.byteLength > 0) throw new HttpError(`app "${app}" sent ${ev.rest.byteLength} bytes after the response`);
                ended = true;
                finish();
                ctl.close();
                return;
              }
            }
          } catch (e) {
            finish();
            throw e;
          }
        },
        cancel: () => finish(),
      });
    }
    const resp = new Response(stream, { status: headEv.head.status, statusText: headEv.head.reason, headers: responseHeaders(headEv.head) });
    return resp;
  } catch (e) {
    finish();
    finish = () => {};
    if (signal?.aborted) throw abortError(signal);
    throw e;
  }
}

function responseHeaders(head: ResponseHead): Headers {
  const h = new Headers();
  for (const [n, v] of head.headers) {
    try {
      h.append(n, v);
    } catch {
      // Forbidden response headers (Set-Cookie in browsers) cannot be set on a script-made Response.
    }
  }
  return h;
}

/** The request with the jar's cookies for its target, unless it sets Cookie itself or omits credentials. */
function withCookies(req: TunnelRequest, jar: CookieJar | undefined): TunnelRequest {
  if (!jar || req.credentials === "omit" || req.headers.has("cookie")) return req;
  const cookie = jar.header(req.target);
  if (cookie === null) return req;
  const headers = new Headers(req.headers);
  headers.set("cookie", cookie);
  return { ...req, headers };
}

/** Keeps the Set-Cookie headers of a response to `target` in `jar`. */
export function storeCookies(jar: CookieJar, head: ResponseHead, target: string): void {
  for (const [n, v] of head.headers) if (n.toLowerCase() === "set-cookie") jar.store(v, target);
}

/**
 * fetch(), with the app's redirects followed inside the tunnel when
 * `redirect` is "follow"; with a `jar`, the app's cookies are kept and sent
 * like a browser would for the app's own origin (see cookies.ts).
 */
export async function tunnelFetch(open: OpenChannel, app: string, input: RequestInfo | URL, init?: RequestInit, jar?: CookieJar): Promise<Response> {
  let req = await toTunnelRequest(app, input, init);
  for (let hops = 0; ; hops++) {
    const target = req.target;
    const keep = jar && req.credentials !== "omit" ? (h: ResponseHead) => storeCookies(jar, h, target) : undefined;
    const resp = await exchange(open, app, withCookies(req, jar), keep);
    const location = resp.headers.get("location");
    if (req.redirect === "manual" || !REDIRECTS.has(resp.status) || location === null) {
      setUrl(resp, req.target, app, hops > 0);
      return resp;
    }
    if (req.redirect === "error") throw new TypeError(`app "${app}" redirected to ${location} and redirect is "error"`);
    if (hops >= MAX_REDIRECTS) throw new TypeError(`app "${app}" redirected more than ${MAX_REDIRECTS} times`);
    const next = new URL(location, `http://${app}${req.target}`);
    if (next.host !== app || next.protocol !== "http:") {
      // Leaving the app would leave the tunnel: hand the redirect to the caller.
      setUrl(resp, req.target, app, hops > 0);
      return resp;
    }
    await resp.body?.cancel();
    const toGet = resp.status === 303 || ((resp.status === 301 || resp.status === 302) && req.method === "POST");
    if (!toGet && req.body.kind === "stream") {
      throw new TypeError(`app "${app}" answered ${resp.status}, which needs the streamed request body to be sent again`);
    }
    const headers = new Headers(req.headers);
    if (toGet) for (const h of ["content-type", "content-length", "content-encoding", "content-language", "content-location"]) headers.delete(h);
    req = {
      ...req,
      method: toGet && req.method !== "HEAD" ? "GET" : req.method,
      target: next.pathname + next.search,
      headers,
      body: toGet ? { kind: "none" } : req.body,
    };
  }
}

function setUrl(resp: Response, target: string, app: string, redirected: boolean): void {
  // A script-made Response has url "" and redirected false; give callers what fetch would.
  Object.defineProperty(resp, "url", { value: `http://${app}${target}`, configurable: true });
  if (redirected) Object.defineProperty(resp, "redirected", { value: true, configurable: true });
}
