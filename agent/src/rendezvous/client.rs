//! The tokio shell around [`Link`]: dials flock (`ws://` or `wss://`),
//! moves frames between the socket and the core, feeds it time, commands
//! and connection events, and publishes its status.
//!
//! Invariants: all protocol decisions are the core's; this file only does
//! IO. TLS trusts exactly the CA certificates of a configured PEM file
//! (like recovery's `update_ca`; no system roots), on rustls with the
//! aws-lc-rs provider. Dropping the [`Rendezvous`] handle stops the task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flock_proto::identity::DeviceKey;
use flock_proto::{DeviceName, IceServer, MAX_MESSAGE};
use futures_util::{SinkExt, StreamExt};
use intrust_board::Mono;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::backoff::Jitter;
use super::link::{Link, Output, Timing};
use super::{LinkStatus, SignallingCommand, SignallingEvent};

/// Everything the link needs besides the key.
#[derive(Debug, Clone)]
pub struct RendezvousConfig {
    /// `ws://host:port/device` or `wss://host/device` (path defaults to `/device`).
    pub flock_url: String,
    /// The name this appliance registers (what people type in the portal).
    pub name: DeviceName,
    /// PEM file of the CAs trusted for `wss://` (required for it).
    pub ca_file: Option<PathBuf>,
    pub timing: Timing,
}

#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    #[error("flock URL {url:?}: {reason} (expected ws://HOST[:PORT][/PATH] or wss://…)")]
    Url { url: String, reason: String },
    #[error("flock URL {0:?} is wss://, which needs a CA file (PEM) to trust")]
    NoCa(String),
    #[error("flock CA file {path}: {reason}")]
    Ca { path: String, reason: String },
}

/// Queue lengths between the shell and the peer engine.
const EVENT_QUEUE: usize = 256;
const COMMAND_QUEUE: usize = 256;

/// A running link. Dropping it stops the link.
pub struct Rendezvous {
    status: watch::Receiver<LinkStatus>,
    ice_servers: watch::Receiver<Vec<IceServer>>,
    commands: mpsc::Sender<SignallingCommand>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Rendezvous {
    /// Checks the config and starts the link on the current tokio runtime.
    /// Returns the handle and the events for the peer engine.
    pub fn spawn(
        config: RendezvousConfig,
        key: DeviceKey,
    ) -> Result<(Rendezvous, mpsc::Receiver<SignallingEvent>), RendezvousError> {
        let target = Target::parse(&config.flock_url, config.ca_file.as_deref())?;
        let link = Link::new(config.name, Arc::new(key), config.timing, Jitter::from_os());
        let (status_tx, status) = watch::channel(link.status().clone());
        let (ice_tx, ice_servers) = watch::channel(Vec::new());
        let (commands, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ev_tx, events) = mpsc::channel(EVENT_QUEUE);
        let task = tokio::spawn(run(link, target, cmd_rx, ev_tx, status_tx, ice_tx));
        Ok((
            Rendezvous {
                status,
                ice_servers,
                commands,
                task,
            },
            events,
        ))
    }

    /// The current connection state.
    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    /// Watch the state (e.g. to wait until registered).
    pub fn watch_status(&self) -> watch::Receiver<LinkStatus> {
        self.status.clone()
    }

    /// The STUN/TURN servers of flock's latest `Registered`.
    pub fn ice_servers(&self) -> Vec<IceServer> {
        self.ice_servers.borrow().clone()
    }

    /// Where the peer engine sends answers, candidates and closes.
    pub fn commands(&self) -> mpsc::Sender<SignallingCommand> {
        self.commands.clone()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<X: AsyncRead + AsyncWrite + Unpin + Send> Io for X {}
type Ws = WebSocketStream<Box<dyn Io>>;

/// A parsed flock URL and, for wss, its TLS setup.
struct Target {
    url: String,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Target {
    fn parse(url: &str, ca: Option<&Path>) -> Result<Target, RendezvousError> {
        let bad = |reason: &str| RendezvousError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad("the scheme must be ws or wss")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") | Some("/") => "/device",
            Some(p) => p,
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
        let scheme = if secure { "wss" } else { "ws" };
        let tls = if secure {
            let ca = ca.ok_or_else(|| RendezvousError::NoCa(url.to_owned()))?;
            Some(tokio_rustls::TlsConnector::from(client_config(ca)?))
        } else {
            None
        };
        Ok(Target {
            url: format!("{scheme}://{authority}{path}"),
            host,
            port,
            tls,
        })
    }

    async fn dial(&self) -> Result<Ws, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("{:?} is not a TLS server name: {e}", self.host))?;
                Box::new(
                    tls.connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS with {}: {e}", self.host))?,
                )
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(self.url.as_str(), io, Some(config))
                .await
                .map_err(|e| format!("WebSocket handshake with {}: {e}", self.url))?;
        Ok(ws)
    }
}

/// TLS trusting exactly the certificates in the PEM file `ca`.
fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, RendezvousError> {
    let err = |reason: String| RendezvousError::Ca {
        path: ca.display().to_string(),
        reason,
    };
    let pem_reason = |e: rustls_pki_types::pem::Error| match e {
        rustls_pki_types::pem::Error::Io(e) => e.to_string(),
        other => format!("not a PEM file: {other:?}"),
    };
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| err(pem_reason(e)))? {
        let cert = cert.map_err(|e| err(pem_reason(e)))?;
        roots
            .add(cert)
            .map_err(|e| err(format!("a certificate cannot be a trust anchor: {e}")))?;
    }
    if roots.is_empty() {
        return Err(err(
            "no PEM certificates (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What woke the loop.
enum Wake {
    Dialed(Result<Box<Ws>, String>),
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Command(Option<SignallingCommand>),
    Timer,
}

type Dial = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Box<Ws>, String>> + Send>>;

async fn run(
    mut link: Link,
    target: Target,
    mut commands: mpsc::Receiver<SignallingCommand>,
    events: mpsc::Sender<SignallingEvent>,
    status: watch::Sender<LinkStatus>,
    ice: watch::Sender<Vec<IceServer>>,
) {
    let target = Arc::new(target);
    let mut conn: Option<Box<Ws>> = None;
    let mut dial: Option<Dial> = None;
    let mut commands_open = true;
    link.start(Mono::now());
    loop {
        let mut broken: Option<String> = None;
        while let Some(out) = link.poll_output() {
            match out {
                Output::Connect => {
                    conn = None;
                    let t = target.clone();
                    dial = Some(Box::pin(async move { t.dial().await.map(Box::new) }));
                }
                Output::Transmit(frame) => {
                    if let Some(ws) = conn.as_mut() {
                        // Bounded: a peer that stops reading is a dead link.
                        let sent = tokio::time::timeout(
                            Duration::from_secs(10),
                            ws.send(Message::Binary(frame.into())),
                        )
                        .await;
                        match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => broken = Some(format!("sending to flock: {e}")),
                            Err(_) => broken = Some("sending to flock timed out".into()),
                        }
                    }
                }
                Output::Close => {
                    dial = None;
                    if let Some(mut ws) = conn.take() {
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    }
                }
                Output::Event(ev) => {
                    if let SignallingEvent::IceServers(list) = &ev {
                        ice.send_replace(list.clone());
                    }
                    if let Err(mpsc::error::TrySendError::Full(ev)) = events.try_send(ev) {
                        tracing::warn!(
                            ?ev,
                            "the peer engine is not keeping up; dropped a signalling event"
                        );
                    }
                }
            }
        }
        status.send_if_modified(|s| {
            if s != link.status() {
                *s = link.status().clone();
                true
            } else {
                false
            }
        });
        if let Some(reason) = broken {
            conn = None;
            link.handle_disconnected(Mono::now(), reason);
            continue;
        }
        let deadline = link.poll_timeout();
        let wake = tokio::select! {
            r = async { dial.as_mut().expect("guarded").await }, if dial.is_some() => Wake::Dialed(r),
            m = async { conn.as_mut().expect("guarded").next().await }, if conn.is_some() => Wake::Frame(m),
            c = commands.recv(), if commands_open => Wake::Command(c),
            _ = async {
                match deadline {
                    Some(at) => tokio::time::sleep(at.saturating_since(Mono::now())).await,
                    None => std::future::pending().await,
                }
            } => Wake::Timer,
        };
        let now = Mono::now();
        match wake {
            Wake::Dialed(Ok(ws)) => {
                dial = None;
                conn = Some(ws);
                link.handle_connected(now);
            }
            Wake::Dialed(Err(e)) => {
                dial = None;
                link.handle_disconnected(now, e);
            }
            Wake::Frame(Some(Ok(Message::Binary(b)))) => link.handle_frame(now, &b),
            // tungstenite answers pings itself.
            Wake::Frame(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Wake::Frame(Some(Ok(Message::Text(_)))) => link.handle_unexpected(now, "a text frame"),
            Wake::Frame(Some(Ok(Message::Frame(_)))) => {}
            Wake::Frame(Some(Ok(Message::Close(_))) | None) => {
                conn = None;
                link.handle_disconnected(now, "flock closed the connection".into());
            }
            Wake::Frame(Some(Err(e))) => {
                conn = None;
                link.handle_disconnected(now, format!("reading from flock: {e}"));
            }
            Wake::Command(Some(c)) => link.handle_command(now, c),
            // The handle keeps a sender, so this only happens while it is dropped.
            Wake::Command(None) => commands_open = false,
            Wake::Timer => link.handle_timeout(now),
        }
    }
}
