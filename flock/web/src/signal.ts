// Client for flock's browser signalling protocol (JSON text frames over a
// WebSocket at /signal; see ARCHITECTURE.md "flock ↔ browser"). Every message
// from flock is parsed into a typed `FlockMessage` or rejected with an error
// that says what was wrong. One socket carries exactly one session.

export type SignalErrorCode =
  | "invalid-name"
  | "unreachable"
  | "unknown-device"
  | "offline"
  | "refused"
  | "protocol"
  | "timeout"
  | "closed";

export class SignalError extends Error {
  override name = "SignalError";
  constructor(
    readonly code: SignalErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

export type FlockMessage =
  | { type: "session"; session: number; iceServers: IceServer[] }
  | { type: "answer"; sdp: string }
  | { type: "candidate"; candidate: string | null; sdpMid: string | null }
  | { type: "error"; message: string }
  | { type: "closed"; reason: string };

export const MAX_MESSAGE_BYTES = 64 * 1024;

const DEVICE_NAME = /^[a-z0-9](?:[a-z0-9-]{1,61})[a-z0-9]$/;

/** Device names as flock accepts them: 3–63 of [a-z0-9-], not starting or ending with "-". Lower-cases the input. */
export function normalizeDeviceName(input: string): string {
  const name = input.trim().toLowerCase();
  if (!DEVICE_NAME.test(name)) {
    throw new SignalError(
      "invalid-name",
      `"${input}" is not an appliance name: use 3–63 letters, digits or "-", not starting or ending with "-"`,
    );
  }
  return name;
}

/** https://flock.example → wss://flock.example/signal (a URL already ending in /signal is kept). */
export function signalUrl(flockUrl: string): string {
  let u: URL;
  try {
    u = new URL(flockUrl);
  } catch {
    throw new SignalError("unreachable", `flock address "${flockUrl}" is not a URL`);
  }
  if (u.protocol === "https:") u.protocol = "wss:";
  else if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new SignalError("unreachable", `flock address must be http(s) or ws(s), got ${u.protocol}`);
  }
  if (!u.pathname.endsWith("/signal")) u.pathname = u.pathname.replace(/\/$/, "") + "/signal";
  u.hash = "";
  return u.toString();
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function field<T>(o: Record<string, unknown>, key: string, check: (v: unknown) => v is T, what: string): T {
  const v = o[key];
  if (!check(v)) throw new SignalError("protocol", `flock sent a "${String(o.type)}" message whose "${key}" is not ${what}`);
  return v;
}

const isString = (v: unknown): v is string => typeof v === "string";
const isStringOrNull = (v: unknown): v is string | null => v === null || typeof v === "string";
const isStringOrAbsent = (v: unknown): v is string | undefined => v === undefined || typeof v === "string";
const isCount = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0;

function parseIceServer(v: unknown, i: number): IceServer {
  if (!isObject(v)) throw new SignalError("protocol", `ice_servers[${i}] is not an object`);
  const urls = v.urls;
  if (!Array.isArray(urls) || urls.length === 0 || !urls.every(isString)) {
    throw new SignalError("protocol", `ice_servers[${i}].urls is not a non-empty list of strings`);
  }
  for (const url of urls) {
    if (!/^(stun|stuns|turn|turns):/.test(url)) throw new SignalError("protocol", `ice_servers[${i}] has a non-STUN/TURN URL "${url}"`);
  }
  if (!isStringOrAbsent(v.username) || !isStringOrAbsent(v.credential)) {
    throw new SignalError("protocol", `ice_servers[${i}] has a non-string username or credential`);
  }
  const out: IceServer = { urls: [...urls] };
  if (v.username !== undefined) out.username = v.username;
  if (v.credential !== undefined) out.credential = v.credential;
  return out;
}

/** Parse one text frame from flock. Throws SignalError("protocol") on anything unexpected. */
export function parseFlockMessage(text: string): FlockMessage {
  if (text.length > MAX_MESSAGE_BYTES) throw new SignalError("protocol", `flock sent a message over ${MAX_MESSAGE_BYTES} bytes`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new SignalError("protocol", "flock sent a message that is not JSON");
  }
  if (!isObject(v) || typeof v.type !== "string") throw new SignalError("protocol", 'flock sent a message without a "type"');
  switch (v.type) {
    case "session": {
      const session = field(v, "session", isCount, "a non-negative integer");
      const servers = v.ice_servers;
      if (!Array.isArray(servers)) throw new SignalError("protocol", 'flock sent a "session" message whose "ice_servers" is not a list');
      return { type: "session", session, iceServers: servers.map(parseIceServer) };
    }
    case "answer":
      return { type: "answer", sdp: field(v, "sdp", isString, "a string") };
    case "candidate":
      return {
        type: "candidate",
        candidate: field(v, "candidate", isStringOrNull, "a string or null"),
        sdpMid: v.sdp_mid === undefined ? null : field(v, "sdp_mid", isStringOrNull, "a string or null"),
      };
    case "error":
      return { type: "error", message: field(v, "message", isString, "a string") };
    case "closed":
      return { type: "closed", reason: field(v, "reason", isString, "a string") };
    default:
      throw new SignalError("protocol", `flock sent an unknown message type "${v.type.slice(0, 40)}"`);
  }
}

/** flock's errors are free text; map the ones a person can act on to codes. */
export function classifyFlockError(message: string): SignalErrorCode {
  const m = message.toLowerCase();
  if (m.includes("offline") || m.includes("not connected")) return "offline";
  if (m.includes("unknown") || m.includes("not registered") || m.includes("no such")) return "unknown-device";
  return "refused";
}

/** The part of the DOM WebSocket we use; tests pass a fake. */
export interface WebSocketLike extends EventTarget {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketFactory = (url: string) => WebSocketLike;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const defaultTimers: Timers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof setTimeout>),
};

export interface SignalOptions {
  webSocket?: WebSocketFactory;
  timers?: Timers;
  /** socket open + session reply */
  sessionTimeoutMs?: number;
  /** offer sent → answer received */
  answerTimeoutMs?: number;
}

export interface SignalHandlers {
  onCandidate?: (candidate: string | null, sdpMid: string | null) => void;
  /** the session ended from flock's side or the socket broke; not called after close() */
  onClosed?: (err: SignalError) => void;
}

/** One signalling session with one device. */
export class SignalSession {
  private handlers: SignalHandlers = {};
  private queued: Array<[string | null, string | null]> = [];
  private answerWaiter: { resolve: (sdp: string) => void; reject: (e: SignalError) => void } | null = null;
  private answered: string | null = null;
  private ended: SignalError | null = null;
  private closedByUs = false;

  constructor(
    private readonly ws: WebSocketLike,
    readonly device: string,
    readonly session: number,
    readonly iceServers: IceServer[],
    private readonly timers: Timers,
    private readonly answerTimeoutMs: number,
  ) {}

  /** Set handlers; candidates received before this are delivered now. */
  setHandlers(h: SignalHandlers): void {
    this.handlers = h;
    const q = this.queued;
    this.queued = [];
    for (const [c, m] of q) h.onCandidate?.(c, m);
  }

  sendOffer(sdp: string): void {
    this.send({ type: "offer", sdp });
  }

  sendCandidate(candidate: string | null, sdpMid: string | null): void {
    this.send({ type: "candidate", candidate, sdp_mid: sdpMid });
  }

  /** The device's answer; rejects on timeout, error or close. */
  answer(): Promise<string> {
    if (this.answered !== null) return Promise.resolve(this.answered);
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      const t = this.timers.setTimeout(() => {
        this.answerWaiter = null;
        reject(new SignalError("timeout", `appliance "${this.device}" did not answer within ${this.answerTimeoutMs / 1000} s`));
      }, this.answerTimeoutMs);
      this.answerWaiter = {
        resolve: (sdp) => {
          this.timers.clearTimeout(t);
          resolve(sdp);
        },
        reject: (e) => {
          this.timers.clearTimeout(t);
          reject(e);
        },
      };
    });
  }

  /** Done with signalling (the peer connection lives on without it). */
  close(): void {
    this.closedByUs = true;
    this.end(new SignalError("closed", "signalling closed"));
    this.ws.close(1000, "done");
  }

  /** @internal */
  handle(msg: FlockMessage): void {
    switch (msg.type) {
      case "answer":
        if (this.answered !== null) return this.fail(new SignalError("protocol", "flock sent a second answer"));
        this.answered = msg.sdp;
        this.answerWaiter?.resolve(msg.sdp);
        this.answerWaiter = null;
        return;
      case "candidate":
        if (this.handlers.onCandidate) this.handlers.onCandidate(msg.candidate, msg.sdpMid);
        else this.queued.push([msg.candidate, msg.sdpMid]);
        return;
      case "error":
        return this.fail(new SignalError(classifyFlockError(msg.message), `flock: ${msg.message}`));
      case "closed":
        return this.fail(new SignalError("closed", `session closed: ${msg.reason}`));
      case "session":
        return this.fail(new SignalError("protocol", "flock sent a second session message"));
    }
  }

  /** @internal */
  fail(err: SignalError): void {
    if (this.ended) return;
    this.end(err);
    this.ws.close(1000, "session ended");
    if (!this.closedByUs) this.handlers.onClosed?.(err);
  }

  private end(err: SignalError): void {
    if (this.ended) return;
    this.ended = err;
    this.answerWaiter?.reject(err);
    this.answerWaiter = null;
  }

  private send(msg: object): void {
    if (this.ended) throw this.ended;
    const text = JSON.stringify(msg);
    if (text.length > MAX_MESSAGE_BYTES) throw new SignalError("protocol", `signalling message over ${MAX_MESSAGE_BYTES} bytes`);
    this.ws.send(text);
  }
}

/**
 * Open a signalling socket to flock, ask for `device` and wait for the session
 * (with its ICE servers). Errors say whether flock was unreachable, the
 * appliance unknown or offline, or the reply malformed.
 */
export function openSignal(flockUrl: string, deviceName: string, opts: SignalOptions = {}): Promise<SignalSession> {
  const device = normalizeDeviceName(deviceName);
  const url = signalUrl(flockUrl);
  const timers = opts.timers ?? defaultTimers;
  const timeoutMs = opts.sessionTimeoutMs ?? 10_000;
  const factory: WebSocketFactory = opts.webSocket ?? ((u) => new WebSocket(u));

  return new Promise((resolve, reject) => {
    let ws: WebSocketLike;
    try {
      ws = factory(url);
    } catch (e) {
      reject(new SignalError("unreachable", `cannot open a WebSocket to ${url}: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    let opened = false;
    let session: SignalSession | null = null;
    let settled = false;
    const settle = (err: SignalError | null): void => {
      if (settled) return;
      settled = true;
      timers.clearTimeout(timer);
      if (err) {
        reject(err);
        ws.close(1000, "giving up");
      } else if (session) resolve(session);
    };
    const timer = timers.setTimeout(() => {
      settle(
        opened
          ? new SignalError("timeout", `flock did not answer the request for "${device}" within ${timeoutMs / 1000} s`)
          : new SignalError("unreachable", `flock at ${url} did not accept a connection within ${timeoutMs / 1000} s`),
      );
    }, timeoutMs);

    ws.addEventListener("open", () => {
      opened = true;
      ws.send(JSON.stringify({ type: "connect", device }));
    });
    ws.addEventListener("message", (ev) => {
      const data: unknown = (ev as MessageEvent).data;
      let msg: FlockMessage;
      try {
        if (typeof data !== "string") throw new SignalError("protocol", "flock sent a binary frame; the protocol is JSON text");
        msg = parseFlockMessage(data);
      } catch (e) {
        const err = e instanceof SignalError ? e : new SignalError("protocol", String(e));
        if (session) session.fail(err);
        else settle(err);
        return;
      }
      if (session) return session.handle(msg);
      switch (msg.type) {
        case "session":
          session = new SignalSession(ws, device, msg.session, msg.iceServers, timers, opts.answerTimeoutMs ?? 15_000);
          return settle(null);
        case "error":
          return settle(new SignalError(classifyFlockError(msg.message), `flock: ${msg.message}`));
        case "closed":
          return settle(new SignalError("closed", `flock closed the session: ${msg.reason}`));
        default:
          return settle(new SignalError("protocol", `flock sent "${msg.type}" before "session"`));
      }
    });
    const onGone = (what: string): void => {
      const err = opened
        ? new SignalError("closed", `flock closed the signalling connection (${what})`)
        : new SignalError("unreachable", `cannot reach flock at ${url}`);
      if (session) session.fail(err);
      else settle(err);
    };
    ws.addEventListener("error", () => onGone("error"));
    ws.addEventListener("close", (ev) => {
      const code = (ev as CloseEvent).code;
      onGone(code === undefined ? "close" : `code ${code}`);
    });
  });
}
