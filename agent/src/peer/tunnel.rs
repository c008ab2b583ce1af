//! The tunnel protocol over one session's data channels (see
//! ARCHITECTURE.md, "Tunnel over data channels").
//!
//! - `control`: JSON messages, each one *text* message (browsers hand
//!   those to scripts as strings; the portal refuses binary ones). The
//!   device sends `{"type":"hello",...}` once, then reads (login and
//!   pairing messages come with their issue);
//! - `http/1.1 APP`: the channel is one HTTP/1.1 connection, served by
//!   hyper's server and proxied request by request with hyper's client to
//!   the app's upstream (TCP or Unix socket). Bodies stream both ways;
//!   a `101 Switching Protocols` from the app turns the channel into a raw
//!   pipe to the app. An unknown app gets a 404, unparsable bytes a 400
//!   (from hyper) and the channel closes; other channels are unaffected.
//!
//! Invariants: every channel is served by its own task; when a channel
//! closes, its hyper connection ends and drops the in-flight request,
//! which closes the upstream connection (cancellation). When the session
//! ends every channel task is aborted.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::engine::{ChannelIo, MessageKind, SessionEvent};
use super::stream::ChannelStream;

/// Version of the tunnel protocol announced in the hello.
pub const PROTOCOL: u32 = 1;
/// Label of the control channel.
pub const CONTROL_LABEL: &str = "control";
/// Prefix of an app channel's label; the app name follows.
pub const HTTP_LABEL_PREFIX: &str = "http/1.1 ";
/// How long a request head may take to arrive on a channel.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an app listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What the tunnel needs to know: the device's name and its apps.
#[derive(Debug, Clone, Default)]
pub struct TunnelConfig {
    pub device: String,
    pub apps: BTreeMap<String, Upstream>,
}

/// What a channel is for, from its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind<'a> {
    Control,
    Http { app: &'a str },
    Unknown,
}

impl<'a> ChannelKind<'a> {
    pub fn of(label: &'a str) -> Self {
        if label == CONTROL_LABEL {
            return ChannelKind::Control;
        }
        match label.strip_prefix(HTTP_LABEL_PREFIX) {
            Some(app) if !app.is_empty() && !app.contains(char::is_whitespace) => {
                ChannelKind::Http { app }
            }
            _ => ChannelKind::Unknown,
        }
    }
}

/// The control channel's first message.
pub fn hello(config: &TunnelConfig) -> String {
    serde_json::json!({
        "type": "hello",
        "device": config.device,
        "protocol": PROTOCOL,
        "apps": config.apps.keys().collect::<Vec<_>>(),
    })
    .to_string()
}

/// Serves one session's channels until the session ends.
pub async fn serve_session(
    config: Arc<TunnelConfig>,
    mut events: mpsc::UnboundedReceiver<SessionEvent>,
) {
    let mut channels = JoinSet::new();
    while let Some(event) = events.recv().await {
        match event {
            SessionEvent::Connected => tracing::debug!("peer session connected"),
            SessionEvent::Closed { reason } => {
                tracing::debug!("peer session closed: {reason}");
                break;
            }
            SessionEvent::ChannelOpen { label, channel } => match ChannelKind::of(&label) {
                ChannelKind::Control => {
                    channels.spawn(serve_control(config.clone(), channel));
                }
                ChannelKind::Http { app } => {
                    channels.spawn(serve_http(config.clone(), app.to_string(), channel));
                }
                ChannelKind::Unknown => {
                    tracing::info!(%label, "closing a data channel with an unknown label");
                    channel.close();
                }
            },
        }
        // Reap finished channel tasks so the set stays small.
        while channels.try_join_next().is_some() {}
    }
    channels.shutdown().await;
}

async fn serve_control(config: Arc<TunnelConfig>, channel: Arc<dyn ChannelIo>) {
    let hello = hello(&config);
    let sent =
        std::future::poll_fn(|cx| channel.poll_send(cx, MessageKind::Text, hello.as_bytes()));
    if let Err(e) = sent.await {
        tracing::debug!("control channel closed before the hello: {e}");
        return;
    }
    while let Some(msg) = std::future::poll_fn(|cx| channel.poll_recv(cx)).await {
        tracing::debug!(
            len = msg.data.len(),
            kind = ?msg.kind,
            "control message ignored (no login yet)"
        );
    }
}

async fn serve_http(config: Arc<TunnelConfig>, app: String, channel: Arc<dyn ChannelIo>) {
    let upstream = config.apps.get(&app).cloned();
    let stream = ChannelStream::new(channel);
    let service_app = app.clone();
    let service = service_fn(move |req| proxy(req, service_app.clone(), upstream.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%app, "http channel ended: {e}");
    }
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

trait UpstreamIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpstreamIo for T {}

impl Upstream {
    async fn connect(&self) -> std::io::Result<Box<dyn UpstreamIo>> {
        Ok(match self {
            Upstream::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Upstream::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        })
    }
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
}

/// Proxies one request to the app on a fresh upstream connection.
async fn proxy(
    mut req: Request<Incoming>,
    app: String,
    upstream: Option<Upstream>,
) -> Result<Response<ProxyBody>, Infallible> {
    let Some(upstream) = upstream else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            format!("no app named {app:?} on this device\n"),
        ));
    };
    let channel_upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let io = match upstream.connect().await {
        Ok(io) => io,
        Err(e) => {
            tracing::warn!(%app, ?upstream, "app not reachable: {e}");
            return Ok(text(
                StatusCode::BAD_GATEWAY,
                format!("app {app:?} is not reachable: {e}\n"),
            ));
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(e) => {
            return Ok(text(
                StatusCode::BAD_GATEWAY,
                format!("app {app:?}: HTTP handshake failed: {e}\n"),
            ))
        }
    };
    // Ends by itself when the response body is done or dropped (the
    // latter closes the upstream connection: cancellation).
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    let mut resp = match sender.send_request(req).await {
        Ok(resp) => resp,
        Err(e) => {
            return Ok(text(
                StatusCode::BAD_GATEWAY,
                format!("app {app:?} did not answer: {e}\n"),
            ))
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(channel_upgrade) = channel_upgrade {
            let app_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (channel, app_side) = match tokio::try_join!(channel_upgrade, app_upgrade) {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::debug!("upgrade failed: {e}");
                        return;
                    }
                };
                let (mut a, mut b) = (TokioIo::new(channel), TokioIo::new(app_side));
                if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                    tracing::debug!("upgraded connection ended: {e}");
                }
            });
        }
    }
    Ok(resp.map(BodyExt::boxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(ChannelKind::of("control"), ChannelKind::Control);
        assert_eq!(
            ChannelKind::of("http/1.1 notes"),
            ChannelKind::Http { app: "notes" }
        );
        assert_eq!(ChannelKind::of("http/1.1 "), ChannelKind::Unknown);
        assert_eq!(ChannelKind::of("http/1.1 a b"), ChannelKind::Unknown);
        assert_eq!(ChannelKind::of("http/2 notes"), ChannelKind::Unknown);
        assert_eq!(ChannelKind::of(""), ChannelKind::Unknown);
    }

    #[test]
    fn hello_lists_apps() {
        let mut config = TunnelConfig {
            device: "box".into(),
            ..Default::default()
        };
        config.apps.insert(
            "notes".into(),
            Upstream::Tcp("127.0.0.1:1".parse().unwrap()),
        );
        let v: serde_json::Value = serde_json::from_str(&hello(&config)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"hello","device":"box","protocol":1,"apps":["notes"]})
        );
    }
}
