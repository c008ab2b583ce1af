//! `hello-app [ADDR]`: the demo's example app (default `127.0.0.1:8471`).
//!
//! A small but ordinary web app, so the tunnel is shown carrying what real
//! apps use: a page (`/`) with a style sheet, a script and an image, all by
//! relative URLs; a counter read with XMLHttpRequest and changed with fetch
//! (`GET/POST /api/counter`, JSON); a form post (`POST /guestbook`) that
//! answers `303 See Other` to `/` and sets a cookie the page greets by; and
//! a WebSocket (`/api/live`) that pushes the counter and echoes text.
//! For benchmarks, `GET /bytes?n=N` and `POST /upload` move bulk bytes
//! ([`bulk`]).
//! Prints `hello-app listening on ADDR` once it accepts connections; stops
//! on SIGTERM/SIGINT.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

mod bulk;

const PAGE: &str = include_str!("static/index.html");
const STYLE: &str = include_str!("static/style.css");
const SCRIPT: &str = include_str!("static/app.js");
/// Largest request body the app reads (the guest book form is tiny).
const MAX_BODY: usize = 64 * 1024;
/// Longest name the guest book takes, in characters.
const MAX_NAME: usize = 40;
/// The cookie the guest book sets.
const COOKIE: &str = "hello_visitor";

/// What the app remembers: a counter, the requests served, its start time.
struct App {
    clicks: AtomicU64,
    requests: AtomicU64,
    started: Instant,
    /// The click count, watched by the WebSockets.
    changes: watch::Sender<u64>,
}

/// A request as the routes see it (the body already read).
struct Req<'a> {
    method: &'a Method,
    path: &'a str,
    cookie: Option<&'a str>,
    body: &'a [u8],
}

/// A response before it becomes hyper's.
#[derive(Debug)]
struct Resp {
    status: StatusCode,
    content_type: &'static str,
    body: String,
    extra: Vec<(header::HeaderName, String)>,
}

impl Resp {
    fn new(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Resp {
        Resp {
            status,
            content_type,
            body: body.into(),
            extra: Vec::new(),
        }
    }

    fn text(status: StatusCode, body: impl Into<String>) -> Resp {
        Resp::new(status, "text/plain; charset=utf-8", body)
    }
}

impl App {
    fn new() -> App {
        App {
            clicks: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            started: Instant::now(),
            changes: watch::channel(0).0,
        }
    }

    fn counter_json(&self) -> String {
        format!(
            "{{\"clicks\":{},\"requests\":{},\"uptime_secs\":{}}}",
            self.clicks.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
            self.started.elapsed().as_secs()
        )
    }

    /// A picture that changes with the counter: the hue turns per click.
    fn picture(&self) -> String {
        let clicks = self.clicks.load(Ordering::Relaxed);
        let hue = (clicks * 37) % 360;
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"240\" height=\"120\" viewBox=\"0 0 240 120\">\
             <rect width=\"240\" height=\"120\" rx=\"16\" fill=\"hsl({hue},70%,45%)\"/>\
             <circle cx=\"60\" cy=\"60\" r=\"34\" fill=\"hsl({},80%,80%)\"/>\
             <text x=\"60\" y=\"72\" font-family=\"sans-serif\" font-size=\"34\" text-anchor=\"middle\" fill=\"#222\">{clicks}</text>\
             <text x=\"160\" y=\"68\" font-family=\"sans-serif\" font-size=\"22\" text-anchor=\"middle\" fill=\"#fff\">hello</text>\
             </svg>",
            (hue + 180) % 360
        )
    }

    /// The page, greeting the visitor named by the guest book's cookie.
    fn page(&self, cookie: Option<&str>) -> String {
        let greeting = cookie
            .and_then(|c| cookie_value(c, COOKIE))
            .and_then(|v| percent_decode(v).ok())
            .filter(|n| name_ok(n))
            .map(|n| format!("Welcome back, {}.", html_escape(&n)))
            .unwrap_or_default();
        PAGE.replace("{{greeting}}", &greeting)
    }

    fn click(&self) {
        let n = self.clicks.fetch_add(1, Ordering::Relaxed) + 1;
        self.changes.send_replace(n);
    }

    /// Routes one request.
    fn respond(&self, req: &Req) -> Resp {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let json = "application/json";
        match (req.method, req.path) {
            (&Method::GET, "/") | (&Method::GET, "/index.html") => Resp::new(
                StatusCode::OK,
                "text/html; charset=utf-8",
                self.page(req.cookie),
            ),
            (&Method::GET, "/style.css") => Resp::new(StatusCode::OK, "text/css", STYLE),
            (&Method::GET, "/app.js") => {
                Resp::new(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT)
            }
            (&Method::GET, "/api/counter") => Resp::new(StatusCode::OK, json, self.counter_json()),
            (&Method::POST, "/api/counter") => {
                self.click();
                Resp::new(StatusCode::OK, json, self.counter_json())
            }
            (&Method::GET, "/picture.svg") => {
                Resp::new(StatusCode::OK, "image/svg+xml", self.picture())
            }
            (&Method::POST, "/guestbook") => sign(req.body),
            (&Method::GET, "/api/live") => {
                Resp::text(StatusCode::UPGRADE_REQUIRED, "/api/live is a WebSocket\n")
            }
            (
                _,
                "/" | "/index.html" | "/style.css" | "/app.js" | "/api/counter" | "/picture.svg"
                | "/guestbook" | "/api/live",
            ) => Resp::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            _ => Resp::text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// `POST /guestbook` with `name=…` (a form): remember the name in a cookie
/// and send the browser back to the page (an absolute `/`, as most apps do).
fn sign(body: &[u8]) -> Resp {
    let name = match form_field(body, "name") {
        Ok(Some(n)) if name_ok(&n) => n,
        Ok(_) => {
            return Resp::text(
                StatusCode::BAD_REQUEST,
                format!("the form needs a name of 1 to {MAX_NAME} printable characters\n"),
            )
        }
        Err(e) => return Resp::text(StatusCode::BAD_REQUEST, format!("bad form: {e}\n")),
    };
    let mut r = Resp::text(StatusCode::SEE_OTHER, "signed\n");
    r.extra.push((header::LOCATION, "/".into()));
    r.extra.push((
        header::SET_COOKIE,
        format!(
            "{COOKIE}={}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax",
            percent_encode(&name)
        ),
    ));
    r
}

fn name_ok(n: &str) -> bool {
    let len = n.chars().count();
    (1..=MAX_NAME).contains(&len) && !n.chars().any(char::is_control)
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], field: &str) -> Result<Option<String>, String> {
    let body = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(&k.replace('+', " "))? == field {
            return percent_decode(&v.replace('+', " ")).map(Some);
        }
    }
    Ok(None)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a broken %-escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "an escape that is not UTF-8".to_string())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `name`'s value in a `Cookie:` header.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    req.method() == Method::GET
        && has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
}

/// `/api/live`: answers 101 and serves the socket in its own task.
fn upgrade(app: Arc<App>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return plain(Resp::text(
            StatusCode::BAD_REQUEST,
            "no Sec-WebSocket-Key\n",
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                live(app, ws).await;
            }
            Err(e) => eprintln!("hello-app: websocket upgrade: {e}"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// Pushes the counter on every click; echoes text as `echo:TEXT`.
async fn live<S>(app: Arc<App>, mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut changes = app.changes.subscribe();
    if ws.send(Message::text(app.counter_json())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() || ws.send(Message::text(app.counter_json())).await.is_err() {
                    return;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if ws.send(Message::text(format!("echo:{}", t.as_str()))).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

fn plain(r: Resp) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(r.body)));
    *response.status_mut() = r.status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(r.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in r.extra {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(name, v);
        }
    }
    response
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<bulk::AppBody>, Infallible> {
    if bulk::is_bulk(req.method(), req.uri().path()) {
        app.requests.fetch_add(1, Ordering::Relaxed);
        return Ok(bulk::serve(req).await);
    }
    Ok(handle_small(app, req).await?.map(BodyExt::boxed))
}

async fn handle_small(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/api/live" && is_websocket(&req) {
        app.requests.fetch_add(1, Ordering::Relaxed);
        return Ok(upgrade(app, req));
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(plain(Resp::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request bodies are limited to {MAX_BODY} bytes\n"),
            )))
        }
    };
    let cookie = parts
        .headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok());
    let r = app.respond(&Req {
        method: &parts.method,
        path: parts.uri.path(),
        cookie,
        body: &body,
    });
    Ok(plain(r))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = match std::env::args().nth(1).as_deref() {
        None => "127.0.0.1:8471".parse()?,
        Some("-h" | "--help") => {
            println!("usage: hello-app [ADDR]   (default 127.0.0.1:8471)");
            return Ok(());
        }
        Some(a) => a.parse().map_err(|e| format!("address {a:?}: {e}"))?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        println!("hello-app listening on {}", listener.local_addr()?);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = serve(listener) => r,
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

async fn serve(listener: TcpListener) -> Result<(), Box<dyn std::error::Error>> {
    let app = Arc::new(App::new());
    loop {
        let (stream, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(app.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                eprintln!("hello-app: connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests;
