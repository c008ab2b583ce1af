//! The tokio shell around [`crate::core::Flock`]: accepts TCP (optionally
//! TLS), reads one HTTP head, serves the portal or upgrades `/device` and
//! `/signal` to WebSockets, and shuttles frames between sockets and the
//! core. Invariants: one task owns the core (no locks); every queue is
//! bounded, and a connection whose send queue is full is closed rather
//! than allowed to grow memory; the registry is written before anything
//! after `SaveRegistry` is sent.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, error, info, warn};

use crate::config::{Config, TlsFiles};
use crate::core::{ConnId, Flock, Frame, Kind, Output, RandomSource};
use crate::http::{self, Head};
use crate::registry::{self, Registry};
use flock_proto::MAX_MESSAGE;

/// How long a client may take for TLS and the request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why flock could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct SystemRng(aws_lc_rs::rand::SystemRandom);

impl RandomSource for SystemRng {
    fn fill(&mut self, buf: &mut [u8]) {
        use aws_lc_rs::rand::SecureRandom;
        // The OS RNG failing leaves nothing safe to do.
        if self.0.fill(buf).is_err() {
            error!("system random number generator failed");
            std::process::abort();
        }
    }
}

enum ToCore {
    Open {
        conn: ConnId,
        kind: Kind,
        peer: IpAddr,
        tx: mpsc::Sender<ToConn>,
        accepted: oneshot::Sender<bool>,
    },
    Frame(ConnId, Frame),
    Closed(ConnId),
}

enum ToConn {
    Frame(Frame),
    Close(String),
}

/// Loads the TLS acceptor from PEM files (aws-lc-rs provider).
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, StartError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect())
        .map_err(|e| StartError::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "{}: no certificate in the file",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| StartError::Tls(format!("{}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A bound, ready-to-run flock.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    config: Config,
    registry: Registry,
}

impl Server {
    /// Loads the registry and TLS files and binds the listen address.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let registry = Registry::load(&config.registry)?;
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Ok(Self {
            listener,
            tls,
            config,
            registry,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until the process ends.
    pub async fn run(self) {
        let core_config = self.config.core();
        let send_queue = core_config.limits.send_queue;
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let core = Flock::new(
            core_config,
            self.registry,
            Box::new(SystemRng(aws_lc_rs::rand::SystemRandom::new())),
            Instant::now().into_std(),
            unix,
        );
        let (to_core, from_conns) = mpsc::channel(1024);
        tokio::spawn(core_task(core, from_conns, self.config.registry.clone()));
        let web_root = Arc::new(self.config.web_root.clone());
        let mut next: ConnId = 1;
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let conn = next;
            next += 1;
            let _ = tcp.set_nodelay(true);
            let tls = self.tls.clone();
            let to_core = to_core.clone();
            let web_root = web_root.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    connection(conn, tcp, peer, tls, to_core, web_root, send_queue).await
                {
                    debug!("conn {conn} from {peer}: {e}");
                }
            });
        }
    }
}

/// Owns the core: feeds it events and the clock, carries out its outputs.
async fn core_task(mut core: Flock, mut rx: mpsc::Receiver<ToCore>, registry_path: PathBuf) {
    let mut conns: HashMap<ConnId, mpsc::Sender<ToConn>> = HashMap::new();
    loop {
        let deadline = core
            .poll_timeout()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { return };
                let now = Instant::now().into_std();
                match ev {
                    ToCore::Open { conn, kind, peer, tx, accepted } => {
                        conns.insert(conn, tx);
                        let ok = core.open(conn, kind, peer, now);
                        let _ = accepted.send(ok);
                    }
                    ToCore::Frame(conn, frame) => core.frame(conn, frame, now),
                    ToCore::Closed(conn) => {
                        conns.remove(&conn);
                        core.closed(conn, now);
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => core.timeout(Instant::now().into_std()),
        }
        while let Some(out) = core.poll_output() {
            match out {
                Output::Send { conn, frame } => {
                    let full = match conns.get(&conn) {
                        Some(tx) => tx.try_send(ToConn::Frame(frame)).is_err(),
                        None => false,
                    };
                    if full {
                        // Dropping the sender ends the connection's task.
                        warn!("conn {conn}: send queue full, closing (too slow)");
                        conns.remove(&conn);
                        core.closed(conn, Instant::now().into_std());
                    }
                }
                Output::Close { conn, reason } => {
                    if let Some(tx) = conns.remove(&conn) {
                        let _ = tx.try_send(ToConn::Close(reason));
                    }
                }
                Output::SaveRegistry(bytes) => {
                    let path = registry_path.clone();
                    let r =
                        tokio::task::spawn_blocking(move || registry::write_atomic(&path, &bytes))
                            .await;
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => error!("registry not saved: {e}"),
                        Err(e) => error!("registry writer failed: {e}"),
                    }
                }
                Output::Log(e) if e.is_warning() => warn!("{e}"),
                Output::Log(e) => info!("{e}"),
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connection(
    conn: ConnId,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    to_core: mpsc::Sender<ToCore>,
    web_root: Arc<PathBuf>,
    send_queue: usize,
) -> Result<(), String> {
    let mut io: Box<dyn Io> = match tls {
        Some(acceptor) => match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(e)) => return Err(format!("TLS handshake: {e}")),
            Err(_) => return Err("TLS handshake timed out".into()),
        },
        None => Box::new(tcp),
    };
    let (head, rest) = match timeout(HANDSHAKE_TIMEOUT, read_head(&mut io)).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            let _ = io
                .write_all(&http::response(
                    "400 Bad Request",
                    "text/plain",
                    e.as_bytes(),
                ))
                .await;
            return Err(e);
        }
        Err(_) => return Err("request head timed out".into()),
    };
    let kind = match head.path.as_str() {
        "/device" => Some(Kind::Device),
        "/signal" => Some(Kind::Browser),
        _ => None,
    };
    let Some(kind) = kind else {
        return serve_file(&mut io, &head, &web_root).await;
    };
    let Some(key) = head.websocket_key().map(str::to_string) else {
        let body = b"this path takes WebSocket upgrades only\n";
        let _ = io
            .write_all(&http::response("426 Upgrade Required", "text/plain", body))
            .await;
        return Err("not a WebSocket upgrade".into());
    };
    let (tx, mut rx) = mpsc::channel(send_queue);
    let (accepted_tx, accepted_rx) = oneshot::channel();
    to_core
        .send(ToCore::Open {
            conn,
            kind,
            peer: peer.ip(),
            tx,
            accepted: accepted_tx,
        })
        .await
        .map_err(|_| "core gone")?;
    if !accepted_rx.await.unwrap_or(false) {
        let _ = io
            .write_all(&http::response(
                "429 Too Many Requests",
                "text/plain",
                b"too many connections; try later\n",
            ))
            .await;
        return Err("refused by limits".into());
    }
    let result = websocket(conn, io, &key, rest, &to_core, &mut rx).await;
    let _ = to_core.send(ToCore::Closed(conn)).await;
    result
}

async fn websocket(
    conn: ConnId,
    mut io: Box<dyn Io>,
    key: &str,
    rest: Vec<u8>,
    to_core: &mpsc::Sender<ToCore>,
    rx: &mut mpsc::Receiver<ToConn>,
) -> Result<(), String> {
    io.write_all(http::switching_protocols(key).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(4 * MAX_MESSAGE);
    let ws = WebSocketStream::from_partially_read(io, rest, Role::Server, Some(config)).await;
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            msg = stream.next() => {
                let frame = match msg {
                    None => return Ok(()),
                    Some(Err(e)) => {
                        warn!("conn {conn}: closed on a WebSocket error: {e}");
                        return Err(e.to_string());
                    }
                    Some(Ok(Message::Text(t))) => Frame::Text(t.as_str().to_string()),
                    Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
                    Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(_)) => continue,
                };
                if to_core.send(ToCore::Frame(conn, frame)).await.is_err() {
                    return Err("core gone".into());
                }
            }
            cmd = rx.recv() => match cmd {
                Some(ToConn::Frame(f)) => {
                    let m = match f {
                        Frame::Text(t) => Message::Text(t.into()),
                        Frame::Binary(b) => Message::Binary(b.into()),
                    };
                    sink.send(m).await.map_err(|e| e.to_string())?;
                }
                Some(ToConn::Close(reason)) => {
                    let mut reason = reason;
                    // A close frame's reason is at most 123 bytes.
                    while reason.len() > 123 {
                        reason.pop();
                    }
                    let frame = CloseFrame { code: CloseCode::Policy, reason: reason.into() };
                    let _ = timeout(Duration::from_secs(2), sink.send(Message::Close(Some(frame)))).await;
                    return Ok(());
                }
                None => {
                    let frame = CloseFrame { code: CloseCode::Again, reason: "too slow".into() };
                    let _ = timeout(Duration::from_secs(2), sink.send(Message::Close(Some(frame)))).await;
                    return Err("closed by flock (send queue full)".into());
                }
            }
        }
    }
}

/// Reads up to the end of the head; returns the head and any bytes after it.
async fn read_head(io: &mut Box<dyn Io>) -> Result<(Head, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = io.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the request head ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = http::head_end(&buf) {
            let head = Head::parse(&buf[..end - 4]).map_err(|e| e.to_string())?;
            return Ok((head, buf[end..].to_vec()));
        }
        if buf.len() > http::MAX_HEAD {
            return Err("request head too large".into());
        }
    }
}

async fn serve_file(
    io: &mut Box<dyn Io>,
    head: &Head,
    root: &std::path::Path,
) -> Result<(), String> {
    let reply = if head.method != "GET" && head.method != "HEAD" {
        http::response("405 Method Not Allowed", "text/plain", b"GET only\n")
    } else {
        match http::resolve(root, &head.path) {
            None => http::response("404 Not Found", "text/plain", b"not found\n"),
            Some(path) => match tokio::fs::read(&path).await {
                Ok(body) => http::response("200 OK", http::content_type(&path), &body),
                Err(_) if head.path == "/" || head.path == "/index.html" => http::response(
                    "200 OK",
                    "text/html; charset=utf-8",
                    http::NOT_BUILT_PAGE.as_bytes(),
                ),
                Err(_) => http::response("404 Not Found", "text/plain", b"not found\n"),
            },
        }
    };
    let reply = if head.method == "HEAD" {
        let end = http::head_end(&reply).unwrap_or(reply.len());
        reply[..end].to_vec()
    } else {
        reply
    };
    io.write_all(&reply).await.map_err(|e| e.to_string())?;
    let _ = io.shutdown().await;
    Ok(())
}
