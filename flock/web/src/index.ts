// Public API of the Intrustd browser library (dist/intrust.js).
export { connect, Appliance, ConnectError, classifyRoute, parseHello, type ConnectOptions, type Hello, type Progress, type Route } from "./peer.ts";
export { SignalError, normalizeDeviceName, signalUrl, type SignalErrorCode, type IceServer } from "./signal.ts";
export { HttpError } from "./http1.ts";
export { ChannelStream, ChannelClosedError } from "./channel-stream.ts";
export { TunnelWebSocket } from "./websocket.ts";
export { CookieJar } from "./cookies.ts";
export { attachServiceWorker } from "./bridge-page.ts";
