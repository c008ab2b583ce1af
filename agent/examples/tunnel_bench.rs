//! The Rust-client half of `cargo xtask bench tunnel`. Prints one JSON
//! object per measurement on stdout; the xtask and `intrust-hil bench
//! tunnel` take medians and print the figures. Every wait is bounded.
//!
//! - `download [--bytes N] [--runs N]`: in one process, alternately, (a) an
//!   HTTP GET of N bytes through the tunnel (a str0m "browser" from
//!   `Str0mEngine::create_offer`, the device side `serve_session`, a hyper
//!   client on an `http/1.1 bench` channel, a hyper upstream on loopback
//!   streaming 64 KiB frames) and (b) a raw str0m data-channel pair pushing N
//!   bytes of 64 KiB messages, each peer a plain blocking loop on its own
//!   thread and UDP socket, with the engine's SCTP buffer and high-water mark.
//!   `{"kind":"tunnel"|"str0m_raw","bytes":N,"secs":S}`.
//! - `connect --flock ADDR --device NAME --app APP [--runs N]`: signalling
//!   start (WebSocket connect to flock's `/signal`) to the first byte of the
//!   app's answer to `GET /` on a fresh `http/1.1 APP` channel, a new session
//!   each run. `{"kind":"connect","ms":M}`.
//! - `sessions --flock ADDR --device NAME --app APP [--count N]`: N sessions,
//!   each with its control channel open and one request done; prints
//!   `{"kind":"sessions_ready","count":N}` and holds them until stdin closes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{SocketAddr, UdpSocket};

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use flock_proto::browser::{self, BrowserToFlock, FlockToBrowser};
use flock_proto::DeviceName;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use intrust_agent::peer::engine::{PeerEngine, Session};
use intrust_agent::peer::str0m_engine::{
    Str0mConfig, Str0mEngine, CHANNEL_HIGH_WATER, MAX_SCTP_SEND_BUFFER,
};
use intrust_agent::peer::stream::ChannelStream;
use intrust_agent::peer::tunnel::{serve_session, TunnelConfig, Upstream};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const CHUNK: usize = 64 * 1024;
/// Any one step (signalling, channel open, a request head).
const STEP: Duration = Duration::from_secs(15);
/// One bulk transfer.
const TRANSFER: Duration = Duration::from_secs(120);

struct Args {
    command: String,
    bytes: u64,
    runs: u32,
    count: u32,
    flock: Option<SocketAddr>,
    device: String,
    app: String,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let command = it.next().context(
        "usage: tunnel_bench download|connect|sessions [--bytes N] [--runs N] [--count N] \
         [--flock ADDR] [--device NAME] [--app APP]",
    )?;
    let mut args = Args {
        command,
        bytes: 256 << 20,
        runs: 3,
        count: 10,
        flock: None,
        device: "bench-box".into(),
        app: "hello".into(),
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let num = || -> Result<u64> {
            value
                .parse()
                .with_context(|| format!("{flag} {value}: not a number"))
        };
        match flag.as_str() {
            "--bytes" => args.bytes = num()?,
            "--runs" => args.runs = u32::try_from(num()?)?,
            "--count" => args.count = u32::try_from(num()?)?,
            "--flock" => {
                args.flock = Some(
                    value
                        .parse()
                        .with_context(|| format!("--flock {value}: not ADDR:PORT"))?,
                )
            }
            "--device" => args.device = value,
            "--app" => args.app = value,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.command.as_str() {
            "download" => download(&args).await,
            "connect" => connect_runs(&args).await,
            "sessions" => sessions(&args).await,
            other => bail!("unknown command {other:?} (download, connect, sessions)"),
        }
    })
}

// --- download: our tunnel vs a raw str0m pair -------------------------------

async fn download(args: &Args) -> Result<()> {
    let upstream = start_upstream().await?;
    for _ in 0..args.runs {
        let secs = timeout(TRANSFER, tunnel_once(upstream, args.bytes))
            .await
            .map_err(|_| anyhow!("tunnel download: no result within {TRANSFER:?}"))??;
        println!(
            "{{\"kind\":\"tunnel\",\"bytes\":{},\"secs\":{secs:.6}}}",
            args.bytes
        );
        let bytes = args.bytes;
        let secs = tokio::task::spawn_blocking(move || raw_str0m_once(bytes))
            .await
            .context("raw str0m pair panicked")??;
        println!(
            "{{\"kind\":\"str0m_raw\",\"bytes\":{},\"secs\":{secs:.6}}}",
            args.bytes
        );
    }
    Ok(())
}

/// `GET /bytes?n=N` → N bytes in 64 KiB frames, with Content-Length.
async fn start_upstream() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let chunk = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let n = req
                        .uri()
                        .query()
                        .and_then(|q| q.strip_prefix("n="))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    let body = Sized {
                        chunk: chunk.clone(),
                        left: n,
                    };
                    async move { Ok::<_, Infallible>(Response::new(body)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A body of `left` bytes, one 64 KiB frame at a time.
struct Sized {
    chunk: Bytes,
    left: u64,
}

impl Body for Sized {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// Seconds from sending the request to the last body byte.
async fn tunnel_once(upstream: SocketAddr, bytes: u64) -> Result<f64> {
    let engine = Str0mEngine::new(Str0mConfig::default());
    let mut apps = BTreeMap::new();
    apps.insert("bench".to_string(), Upstream::Tcp(upstream));
    let config = Arc::new(TunnelConfig {
        device: "bench-box".into(),
        apps,
    });
    let pending = engine.create_offer("control")?;
    let device = engine.accept_offer(pending.offer_sdp())?;
    let device_session = device.session.clone();
    tokio::spawn(serve_session(config, device.events));
    let (browser, control) = pending.accept_answer(&device.answer_sdp)?;
    let mut events = browser.events;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let _control = timeout(STEP, control.open())
        .await
        .context("control channel did not open")??;
    let io = timeout(STEP, browser.session.open_channel("http/1.1 bench")?.open())
        .await
        .context("app channel did not open")??;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(ChannelStream::new(io))).await?;
    let conn = tokio::spawn(conn);

    let started = Instant::now();
    let req = Request::get(format!("/bytes?n={bytes}"))
        .header("host", "bench")
        .body(Empty::<Bytes>::new())?;
    let resp = timeout(STEP, sender.send_request(req))
        .await
        .context("no response head")??;
    if !resp.status().is_success() {
        bail!("tunnel answered {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        got += frame?.data_ref().map_or(0, |d| d.len() as u64);
    }
    let secs = started.elapsed().as_secs_f64();
    if got != bytes {
        bail!("tunnel download ended after {got} of {bytes} bytes");
    }
    conn.abort();
    browser.session.close();
    device_session.close();
    Ok(secs)
}

/// One raw str0m peer: its `Rtc`, socket and address.
struct RawPeer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
}

/// Datagrams fed in per wake-up before output is polled (str0m's DTLS
/// receive queue takes a few dozen).
const RAW_BATCH: usize = 16;

impl RawPeer {
    fn new() -> Result<RawPeer> {
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .set_sctp_max_buffered_amount(MAX_SCTP_SEND_BUFFER)
            .build(Instant::now());
        let socket = raw_socket()?;
        let local = socket.local_addr()?;
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        Ok(RawPeer { rtc, socket, local })
    }

    /// Sends what str0m wants sent and hands out its events; returns when
    /// it next needs time to pass.
    fn drive(&mut self, mut on_event: impl FnMut(Event)) -> Result<Instant> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(e) => on_event(e),
            }
        }
    }

    /// Feeds in what has arrived (up to a batch), waiting until `until` for
    /// the first datagram if `block`; a timeout tick if nothing came.
    fn pump(&mut self, until: Instant, block: bool, buf: &mut [u8]) -> Result<()> {
        let mut got = 0;
        while got < RAW_BATCH {
            match self.socket.recv_from(buf) {
                Ok((n, source)) => {
                    let receive = Receive::new(Protocol::Udp, source, self.local, &buf[..n])
                        .map_err(|e| anyhow!("a datagram str0m does not take: {e}"))?;
                    // Rejected datagrams are dropped, as the engine does.
                    let _ = self
                        .rtc
                        .handle_input(Input::Receive(Instant::now(), receive));
                    got += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if got > 0 || !block {
                        break;
                    }
                    let ms = until
                        .saturating_duration_since(Instant::now())
                        .as_millis()
                        .min(50) as libc::c_int;
                    if !readable(&self.socket, ms) {
                        break;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        if Instant::now() >= until || got == 0 {
            self.rtc.handle_input(Input::Timeout(Instant::now()))?;
        }
        Ok(())
    }
}

/// A non-blocking loopback UDP socket with the engine's 4 MiB buffers.
fn raw_socket() -> Result<UdpSocket> {
    Ok(intrust_agent::peer::udp::bind_std(SocketAddr::from((
        [127, 0, 0, 1],
        0,
    )))?)
}

/// Whether `socket` becomes readable within `ms` milliseconds.
fn readable(socket: &UdpSocket, ms: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fd, 1, ms) > 0 }
}

/// Seconds from the sender's channel open to the receiver's last byte.
fn raw_str0m_once(bytes: u64) -> Result<f64> {
    let mut offerer = RawPeer::new()?;
    let mut answerer = RawPeer::new()?;
    let mut api = offerer.rtc.sdp_api();
    let channel = api.add_channel("bench".into());
    let (offer, pending) = api.apply().context("str0m made no offer")?;
    let answer = answerer.rtc.sdp_api().accept_offer(offer)?;
    offerer.rtc.sdp_api().accept_answer(pending, answer)?;
    offerer
        .rtc
        .add_remote_candidate(Candidate::host(answerer.local, "udp")?);
    answerer
        .rtc
        .add_remote_candidate(Candidate::host(offerer.local, "udp")?);

    let deadline = Instant::now() + TRANSFER;
    let receiver = std::thread::spawn(move || -> Result<Instant> {
        let mut buf = vec![0u8; 2048];
        let mut got = 0u64;
        let mut done = None;
        while done.is_none() {
            if Instant::now() > deadline {
                bail!("raw str0m receiver: {got} of {bytes} bytes within {TRANSFER:?}");
            }
            let t = answerer.drive(|e| {
                if let Event::ChannelData(d) = e {
                    got += d.data.len() as u64;
                    if got >= bytes && done.is_none() {
                        done = Some(Instant::now());
                    }
                }
            })?;
            if done.is_none() {
                answerer.pump(t, true, &mut buf)?;
            }
        }
        // Let the last SACKs out so the sender can finish cleanly.
        let linger = Instant::now() + Duration::from_millis(200);
        while Instant::now() < linger {
            let t = answerer.drive(|_| {})?;
            answerer.pump(t, true, &mut buf)?;
        }
        done.context("the receiver stopped without its bytes")
    });

    let mut buf = vec![0u8; 2048];
    let payload: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    let mut open_at = None;
    let mut sent = 0u64;
    while !receiver.is_finished() {
        if Instant::now() > deadline {
            bail!(
                "raw str0m sender: channel open {} after {TRANSFER:?}",
                open_at.is_some()
            );
        }
        let t = offerer.drive(|e| {
            if let Event::ChannelOpen(id, _) = e {
                if id == channel && open_at.is_none() {
                    open_at = Some(Instant::now());
                }
            }
        })?;
        let mut wrote = false;
        if open_at.is_some() && sent < bytes {
            if let Some(mut ch) = offerer.rtc.channel(channel) {
                while sent < bytes && ch.buffered_amount() < CHANNEL_HIGH_WATER {
                    let n = (bytes - sent).min(CHUNK as u64) as usize;
                    if !ch.write(true, &payload[..n])? {
                        break;
                    }
                    sent += n as u64;
                    wrote = true;
                }
            }
        }
        if wrote {
            // Put what was just written on the wire, then take any SACKs.
            let t = offerer.drive(|_| {})?;
            offerer.pump(t, false, &mut buf)?;
        } else {
            offerer.pump(t, true, &mut buf)?;
        }
    }
    let end = receiver
        .join()
        .map_err(|_| anyhow!("raw str0m receiver panicked"))??;
    let start = open_at.context("the raw channel never opened")?;
    Ok(end.duration_since(start).as_secs_f64())
}

// --- connect / sessions through a real flock and intrustd -------------------

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_send(ws: &mut Ws, m: &BrowserToFlock) -> Result<()> {
    ws.send(WsMessage::Text(browser::encode(m)?.into())).await?;
    Ok(())
}

async fn ws_recv(ws: &mut Ws) -> Result<FlockToBrowser> {
    loop {
        match timeout(STEP, ws.next())
            .await
            .context("flock sent nothing in time")?
        {
            Some(Ok(WsMessage::Text(t))) => return Ok(browser::decode(t.as_str())?),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => bail!("flock's /signal: expected a text frame, got {other:?}"),
        }
    }
}

/// A connected session; its control channel stays open as long as it lives.
struct Connected {
    session: Arc<dyn Session>,
    _control: Arc<dyn intrust_agent::peer::engine::ChannelIo>,
}

/// Signals through flock, opens the control channel and waits for the
/// appliance's hello (as the browser library does); the instant the
/// signalling started is returned with the session.
async fn connect_session(flock: SocketAddr, device: &str) -> Result<(Instant, Connected)> {
    let engine = Str0mEngine::new(Str0mConfig::default());
    let started = Instant::now();
    let pending = engine.create_offer("control")?;
    let tcp = TcpStream::connect(flock)
        .await
        .with_context(|| format!("cannot reach flock at {flock}"))?;
    let (mut ws, _) = timeout(
        STEP,
        tokio_tungstenite::client_async(format!("ws://{flock}/signal"), tcp),
    )
    .await
    .context("flock's /signal handshake timed out")??;
    ws_send(
        &mut ws,
        &BrowserToFlock::Connect {
            device: DeviceName::new(device).map_err(|e| anyhow!("device name {device:?}: {e}"))?,
        },
    )
    .await?;
    match ws_recv(&mut ws).await? {
        FlockToBrowser::Session { .. } => {}
        other => bail!("flock: expected a session, got {other:?}"),
    }
    ws_send(
        &mut ws,
        &BrowserToFlock::Offer {
            sdp: pending.offer_sdp().to_owned(),
        },
    )
    .await?;
    let mut early = Vec::new();
    let answer = loop {
        match ws_recv(&mut ws).await? {
            FlockToBrowser::Candidate {
                candidate: Some(c), ..
            } => early.push(c),
            FlockToBrowser::Candidate { .. } => {}
            FlockToBrowser::Answer { sdp } => break sdp,
            other => bail!("flock: expected an answer, got {other:?}"),
        }
    };
    let (browser, control) = pending.accept_answer(&answer)?;
    for c in early {
        let _ = browser.session.add_remote_candidate(&c);
    }
    // Trickled device candidates keep coming through flock until the
    // appliance has said hello; then, like the browser library, the
    // signalling socket is closed (flock counts it as a session until then).
    let session = browser.session.clone();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => {
                    let _ = ws.close(None).await;
                    return;
                }
                m = ws.next() => match m {
                    Some(Ok(WsMessage::Text(t))) => {
                        if let Ok(FlockToBrowser::Candidate {
                            candidate: Some(c), ..
                        }) = browser::decode(t.as_str())
                        {
                            let _ = session.add_remote_candidate(&c);
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                },
            }
        }
    });
    let mut events = browser.events;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let control = timeout(STEP, control.open())
        .await
        .context("the control channel did not open (ICE/DTLS through flock)")??;
    let hello = timeout(STEP, std::future::poll_fn(|cx| control.poll_recv(cx)))
        .await
        .context("no hello on the control channel")?
        .context("the control channel closed before its hello")?;
    if !hello.data.starts_with(b"{") {
        bail!("the control channel's hello is not JSON: {:?}", hello.data);
    }
    let _ = stop.send(());
    Ok((
        started,
        Connected {
            session: browser.session,
            _control: control,
        },
    ))
}

/// `GET /` on a new `http/1.1 APP` channel; returns when the first byte of
/// the answer is in, and the whole answer.
async fn first_byte(c: &Connected, app: &str) -> Result<(Instant, Vec<u8>)> {
    let io = timeout(
        STEP,
        c.session.open_channel(&format!("http/1.1 {app}"))?.open(),
    )
    .await
    .context("the app channel did not open")??;
    let mut stream = ChannelStream::new(io);
    stream
        .write_all(format!("GET / HTTP/1.1\r\nhost: {app}\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = timeout(STEP, stream.read(&mut buf))
        .await
        .context("no answer from the app")??;
    let at = Instant::now();
    if n == 0 {
        bail!("the app channel closed without an answer");
    }
    let mut all = buf[..n].to_vec();
    let _ = timeout(STEP, stream.read_to_end(&mut all)).await;
    if !all.starts_with(b"HTTP/1.1 200") {
        bail!(
            "the app answered {:?}",
            String::from_utf8_lossy(&all[..all.len().min(80)])
        );
    }
    Ok((at, all))
}

async fn connect_runs(args: &Args) -> Result<()> {
    let flock = args.flock.context("connect needs --flock ADDR")?;
    for _ in 0..args.runs {
        let (started, c) = connect_session(flock, &args.device).await?;
        let (at, _) = first_byte(&c, &args.app).await?;
        let ms = at.duration_since(started).as_secs_f64() * 1000.0;
        println!("{{\"kind\":\"connect\",\"ms\":{ms:.3}}}");
        c.session.close();
        // Let intrustd see the session end before the next one.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn sessions(args: &Args) -> Result<()> {
    let flock = args.flock.context("sessions needs --flock ADDR")?;
    let mut held = Vec::new();
    for _ in 0..args.count {
        let (_, c) = connect_session(flock, &args.device).await?;
        first_byte(&c, &args.app).await?;
        held.push(c);
    }
    println!("{{\"kind\":\"sessions_ready\",\"count\":{}}}", held.len());
    // Hold them until the caller closes stdin (bounded).
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = closed_tx.send(());
    });
    let _ = timeout(Duration::from_secs(300), closed_rx).await;
    for c in &held {
        c.session.close();
    }
    Ok(())
}
