// Connecting to an appliance: signalling through flock, one RTCPeerConnection,
// the `control` channel opened first, and the device's hello on it. The
// result is an `Appliance`: the app list, the route (direct or relayed) and
// fetch/websocket over per-request channels. flock is only used until the
// peer connection is up; it never sees app data.

import { ChannelStream, type DataChannelLike } from "./channel-stream.ts";
import { CookieJar } from "./cookies.ts";
import { tunnelFetch } from "./fetch.ts";
import { openSignal, SignalError, type SignalOptions, type Timers, defaultTimers } from "./signal.ts";
import { tunnelWebSocket, type TunnelWebSocket } from "./websocket.ts";

export type Progress = "signalling" | "ice" | "dtls" | "control" | "ready";

export class ConnectError extends Error {
  override name = "ConnectError";
}

export interface Hello {
  device: string;
  protocol: 1;
  apps: string[];
}

const APP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function isAppName(s: string): boolean {
  return APP_NAME.test(s);
}

/** Parse the device's first control message. Apps may be names or {"name": …} objects. */
export function parseHello(text: string): Hello {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new ConnectError("the appliance sent a control message that is not JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ConnectError("the appliance's control message is not an object");
  const o = v as Record<string, unknown>;
  if (o.type !== "hello") throw new ConnectError(`expected "hello" on the control channel, got ${JSON.stringify(o.type)}`);
  if (o.protocol !== 1) throw new ConnectError(`the appliance speaks control protocol ${JSON.stringify(o.protocol)}; this page speaks 1`);
  if (typeof o.device !== "string") throw new ConnectError('the appliance\'s hello has no "device" name');
  if (!Array.isArray(o.apps)) throw new ConnectError('the appliance\'s hello has no "apps" list');
  const apps = o.apps.map((a: unknown, i: number) => {
    const name = typeof a === "string" ? a : typeof a === "object" && a !== null ? (a as Record<string, unknown>).name : undefined;
    if (typeof name !== "string" || !isAppName(name)) throw new ConnectError(`apps[${i}] in the appliance's hello is not a valid app name`);
    return name;
  });
  return { device: o.device, protocol: 1, apps };
}

export type Route = "direct" | "relayed" | "unknown";

type Stat = Record<string, unknown> & { id: string; type: string };

/** What getStats() resolves to: an RTCStatsReport (map-like, id → stat); a list of stats works too. */
export type StatsReportLike = { forEach(cb: (stat: Stat) => void): void } | Iterable<Stat | [string, Stat]>;

/** Direct (host/srflx/prflx on both ends) or relayed (TURN on either end), from getStats(). */
export function classifyRoute(report: StatsReportLike): Route {
  const stats = new Map<string, Stat>();
  const add = (s: Stat): void => void stats.set(s.id, s);
  // RTCStatsReport is map-like: iterating it yields [id, stat] entries,
  // while its forEach (like an array's) passes the stat first.
  if ("forEach" in report && typeof report.forEach === "function") report.forEach((s) => add(s));
  else for (const s of report as Iterable<Stat | [string, Stat]>) add(Array.isArray(s) ? s[1] : s);

  let pair: Stat | undefined;
  for (const s of stats.values()) {
    if (s.type === "transport" && typeof s.selectedCandidatePairId === "string") pair = stats.get(s.selectedCandidatePairId);
  }
  // Firefox has no transport stats: it marks the pair itself.
  if (!pair) for (const s of stats.values()) if (s.type === "candidate-pair" && s.selected === true) pair = s;
  if (!pair) for (const s of stats.values()) if (s.type === "candidate-pair" && s.nominated === true && s.state === "succeeded") pair = s;
  if (!pair) return "unknown";
  const local = stats.get(String(pair.localCandidateId));
  const remote = stats.get(String(pair.remoteCandidateId));
  if (!local || !remote) return "unknown";
  return local.candidateType === "relay" || remote.candidateType === "relay" ? "relayed" : "direct";
}

/** The part of RTCPeerConnection we use (tests may pass a fake). */
export type PeerConnectionFactory = (config: RTCConfiguration) => RTCPeerConnection;

export interface ConnectOptions extends SignalOptions {
  onProgress?: (step: Progress) => void;
  peerConnection?: PeerConnectionFactory;
  /** ICE + DTLS + hello, after signalling */
  connectTimeoutMs?: number;
  timers?: Timers;
}

export class Appliance {
  /** called once when the peer connection fails or is closed */
  onclose: ((reason: string) => void) | null = null;
  private closed = false;
  private readonly jars = new Map<string, CookieJar>();

  constructor(
    readonly device: string,
    readonly apps: readonly string[],
    readonly pc: RTCPeerConnection,
    readonly control: RTCDataChannel,
  ) {
    const gone = (reason: string): void => {
      if (this.closed) return;
      this.closed = true;
      this.onclose?.(reason);
    };
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "failed") gone("the connection to the appliance failed");
      if (pc.connectionState === "closed") gone("closed");
    });
    control.addEventListener("close", () => gone("the appliance closed the control channel"));
  }

  /** Direct or relayed, from the selected candidate pair. */
  async route(): Promise<Route> {
    return classifyRoute(await this.pc.getStats());
  }

  /** A fresh byte-stream channel to `app` (one HTTP/1.1 connection). */
  openChannel(app: string): ChannelStream {
    if (!isAppName(app)) throw new TypeError(`"${app}" is not an app name`);
    if (this.closed) throw new ConnectError(`the connection to ${this.device} is closed`);
    const ch = this.pc.createDataChannel(`http/1.1 ${app}`, { ordered: true });
    return new ChannelStream(ch as unknown as DataChannelLike);
  }

  /** The app's cookie jar (cookies live as long as this connection's page). */
  cookies(app: string): CookieJar {
    let jar = this.jars.get(app);
    if (!jar) {
      jar = new CookieJar();
      this.jars.set(app, jar);
    }
    return jar;
  }

  /**
   * fetch() an app's URL through the tunnel; URLs are resolved against the
   * app's root. The app's cookies are kept and sent (see cookies.ts) unless
   * `credentials` is "omit".
   */
  fetch(app: string, input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    return tunnelFetch((a) => this.openChannel(a), app, input, init, this.cookies(app));
  }

  /** A WebSocket to `path` on `app`, through the tunnel (with the app's cookies). */
  websocket(app: string, path: string, protocols?: string | string[]): TunnelWebSocket {
    return tunnelWebSocket(() => this.openChannel(app), app, path, protocols, this.cookies(app));
  }

  close(): void {
    this.pc.close();
  }
}

/**
 * Connect to `deviceName` through the flock at `flockUrl`. Resolves once the
 * device's hello has arrived on the control channel.
 */
export async function connect(flockUrl: string, deviceName: string, opts: ConnectOptions = {}): Promise<Appliance> {
  const progress = opts.onProgress ?? (() => {});
  const timers = opts.timers ?? defaultTimers;
  progress("signalling");
  const signal = await openSignal(flockUrl, deviceName, opts);
  const makePc: PeerConnectionFactory = opts.peerConnection ?? ((c) => new RTCPeerConnection(c));
  const pc = makePc({ iceServers: signal.iceServers });
  let failed: ((e: Error) => void) | null = null;
  try {
    // Remote candidates can arrive before the answer is applied; hold them until it is.
    const early: RTCIceCandidateInit[] = [];
    let remoteSet = false;
    const addRemote = (c: RTCIceCandidateInit | null): void => {
      // A null candidate is "end of candidates"; browsers that reject the empty form ignore it harmlessly.
      pc.addIceCandidate(c ?? undefined).catch(() => {});
    };
    signal.setHandlers({
      onCandidate: (candidate, sdpMid) => {
        const c = candidate === null ? null : { candidate, sdpMid };
        if (!remoteSet) {
          if (c) early.push(c);
        } else addRemote(c);
      },
      onClosed: (err) => failed?.(err),
    });
    pc.addEventListener("icecandidate", (ev) => {
      const c = ev.candidate;
      try {
        signal.sendCandidate(c ? c.candidate : null, c ? c.sdpMid : null);
      } catch {
        // Signalling already closed: the connection is up or failing on its own.
      }
    });
    pc.addEventListener("iceconnectionstatechange", () => {
      if (pc.iceConnectionState === "checking") progress("ice");
      if (pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed") progress("dtls");
    });

    const control = pc.createDataChannel("control", { ordered: true });
    const helloPromise = new Promise<Hello>((resolve, reject) => {
      failed = reject;
      control.addEventListener("open", () => progress("control"));
      control.addEventListener("message", (ev) => {
        if (typeof ev.data !== "string") return reject(new ConnectError("the appliance sent a binary message on the control channel"));
        try {
          resolve(parseHello(ev.data));
        } catch (e) {
          reject(e);
        }
      }, { once: true });
      control.addEventListener("close", () => reject(new ConnectError("the appliance closed the control channel before saying hello")));
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed") {
          reject(new ConnectError("no network path to the appliance worked (ICE or DTLS failed); if both sides are behind strict NATs a TURN relay is needed"));
        }
      });
    });

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    signal.sendOffer(pc.localDescription?.sdp ?? offer.sdp ?? "");
    const answer = await signal.answer();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    remoteSet = true;
    for (const c of early.splice(0)) addRemote(c);

    const timeoutMs = opts.connectTimeoutMs ?? 30_000;
    let timer: unknown;
    const timeout = new Promise<never>((_, reject) => {
      timer = timers.setTimeout(() => reject(new ConnectError(`the appliance did not complete the connection within ${timeoutMs / 1000} s`)), timeoutMs);
    });
    const hello = await Promise.race([helloPromise, timeout]).finally(() => timers.clearTimeout(timer));
    // The peer connection no longer needs flock.
    signal.close();
    progress("ready");
    return new Appliance(hello.device, hello.apps, pc, control);
  } catch (e) {
    signal.close();
    pc.close();
    if (e instanceof SignalError || e instanceof ConnectError) throw e;
    throw new ConnectError(`connecting to the appliance failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}
