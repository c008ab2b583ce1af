//! Server-reflexive and relayed candidates against a real coturn on
//! 127.0.0.1 (Debian's `coturn`; `cargo xtask test` installs it): two
//! relay-only sessions move data through the relay, the STUN probe reads a
//! mapped address, and bad credentials or an unreachable server leave the
//! host path working and gathering bounded.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::coturn::{Coturn, CoturnOpts};
use intrust_agent::peer::engine::{
    CandidateType, ChannelIo, IceServer, PeerEngine, Session, SessionEvent,
};
use intrust_agent::peer::ice::gather::{self, Gathered, Gatherer};
use intrust_agent::peer::str0m_engine::{Str0mConfig, Str0mEngine};
use tokio::sync::mpsc;
use tokio::time::timeout;

const SIZE: usize = 4 * 1024 * 1024;

/// Everything the engine logs, for asserting on the reasons it gives.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("PEER_TURN_LOG_FILTER").unwrap_or("intrust_agent=debug".into()),
            )
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

fn engine(ice_servers: Vec<IceServer>, relay_only: bool) -> Str0mEngine {
    Str0mEngine::new(Str0mConfig {
        ice_servers,
        relay_only,
        ..Str0mConfig::default()
    })
}

/// One side's gathered candidates and when gathering ended.
#[derive(Default)]
struct Trickled {
    lines: Vec<String>,
    ended: Option<Instant>,
}

/// Forwards `from`'s trickled candidates to `to`, recording them.
fn forward(
    mut from: mpsc::UnboundedReceiver<String>,
    to: Arc<dyn Session>,
    record: Arc<Mutex<Trickled>>,
) {
    tokio::spawn(async move {
        while let Some(line) = from.recv().await {
            to.add_remote_candidate(&line)
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            record.lock().unwrap().lines.push(line);
        }
        record.lock().unwrap().ended = Some(Instant::now());
    });
}

struct Pair {
    started: Instant,
    device: Arc<dyn Session>,
    browser: Arc<dyn Session>,
    device_channel: Arc<dyn ChannelIo>,
    browser_channel: Arc<dyn ChannelIo>,
    /// Candidates each side trickled.
    device_trickled: Arc<Mutex<Trickled>>,
    browser_trickled: Arc<Mutex<Trickled>>,
}

/// A browser-role session offers, a device-role session answers, their
/// gathered candidates are exchanged; returns once the channel is open.
async fn connect(device_engine: &Str0mEngine, browser_engine: &Str0mEngine) -> Pair {
    let started = Instant::now();
    let pending = browser_engine.create_offer("bulk").unwrap();
    let mut device = device_engine.accept_offer(pending.offer_sdp()).unwrap();
    let (browser, first) = pending.accept_answer(&device.answer_sdp).unwrap();
    let device_trickled = Arc::new(Mutex::new(Trickled::default()));
    let browser_trickled = Arc::new(Mutex::new(Trickled::default()));
    forward(
        device.local_candidates,
        browser.session.clone(),
        device_trickled.clone(),
    );
    forward(
        browser.local_candidates,
        device.session.clone(),
        browser_trickled.clone(),
    );
    let mut browser_events = browser.events;
    tokio::spawn(async move {
        while let Some(ev) = browser_events.recv().await {
            if let SessionEvent::Closed { reason } = ev {
                eprintln!("browser session closed: {reason}");
            }
        }
    });
    let device_channel = loop {
        match device.events.recv().await.expect("device session alive") {
            SessionEvent::ChannelOpen { label, channel } => {
                assert_eq!(label, "bulk");
                break channel;
            }
            SessionEvent::Closed { reason } => panic!("session closed: {reason}"),
            SessionEvent::Connected => {}
        }
    };
    tokio::spawn(async move {
        while let Some(ev) = device.events.recv().await {
            if let SessionEvent::Closed { reason } = ev {
                eprintln!("device session closed: {reason}");
            }
        }
    });
    Pair {
        started,
        device: device.session,
        browser: browser.session,
        device_channel,
        browser_channel: first.open().await.unwrap(),
        device_trickled,
        browser_trickled,
    }
}

/// Waits until both sessions report a selected pair; returns (device,
/// browser) pair types.
async fn pairs(
    p: &Pair,
) -> (
    (CandidateType, CandidateType),
    (CandidateType, CandidateType),
) {
    loop {
        if let (Some(d), Some(b)) = (p.device.stats().pair, p.browser.stats().pair) {
            return (d, b);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until both sides' gathering has ended.
async fn gathering_ended(p: &Pair) {
    while p.device_trickled.lock().unwrap().ended.is_none()
        || p.browser_trickled.lock().unwrap().ended.is_none()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn transfer(from: Arc<dyn ChannelIo>, to: Arc<dyn ChannelIo>) {
    common::transfer::transfer(from, to, SIZE).await;
}

fn turn_server(coturn: &Coturn, credential: Option<&str>) -> IceServer {
    let (username, good) = coturn.credentials(Duration::from_secs(600));
    IceServer {
        urls: vec![coturn.turn_url()],
        username: Some(username),
        credential: Some(credential.map_or(good, str::to_string)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_sessions_connect_through_coturn() {
    logs();
    let coturn = Coturn::start(CoturnOpts::loopback());
    let result = timeout(Duration::from_secs(60), async {
        let device = engine(vec![turn_server(&coturn, None)], true);
        let browser = engine(vec![turn_server(&coturn, None)], true);
        let p = connect(&device, &browser).await;
        // Nothing but relay candidates: none in the SDP, one trickled each.
        assert!(p.device.local_candidates().is_empty());
        gathering_ended(&p).await;
        for t in [&p.device_trickled, &p.browser_trickled] {
            let lines = t.lock().unwrap().lines.clone();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].contains("typ relay"), "{lines:?}");
            assert!(lines[0].contains(" 127.0.0.1 "), "{lines:?}");
        }
        let relay = (CandidateType::Relay, CandidateType::Relay);
        assert_eq!(pairs(&p).await, (relay, relay));
        // (The stream's shutdown closes the channel: one direction.)
        transfer(p.device_channel.clone(), p.browser_channel.clone()).await;
        assert_eq!(pairs(&p).await, (relay, relay));
        // The bulk went as ChannelData on bound channels.
        let log = coturn.log();
        assert!(
            log.contains("CHANNEL_BIND processed, success"),
            "no channel bound:\n{log}"
        );
        if std::env::var_os("PEER_TURN_LOG").is_some() {
            eprintln!("{}", log_text());
        }
        // Closing releases both allocations (Refresh with LIFETIME 0).
        p.device.close();
        p.browser.close();
        while coturn.log().matches("REFRESH processed, success").count() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    result.unwrap_or_else(|_| {
        panic!(
            "timed out; coturn log:\n{}\nagent log:\n{}",
            coturn.log(),
            log_text()
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_candidate_is_gathered_next_to_the_host_one() {
    logs();
    let coturn = Coturn::start(CoturnOpts::loopback());
    let result = timeout(Duration::from_secs(30), async {
        let device = engine(coturn.ice_servers(Duration::from_secs(600)), false);
        let browser = engine(Vec::new(), false);
        let p = connect(&device, &browser).await;
        gathering_ended(&p).await;
        let lines = p.device_trickled.lock().unwrap().lines.clone();
        // The STUN mapping on loopback is the host address (not offered);
        // the TURN allocation gives the relay candidate.
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("typ relay"), "{lines:?}");
        assert!(p.browser_trickled.lock().unwrap().lines.is_empty());
        // Host beats relay.
        let host = (CandidateType::Host, CandidateType::Host);
        assert_eq!(pairs(&p).await, (host, host));
    })
    .await;
    result.unwrap_or_else(|_| {
        panic!(
            "timed out; coturn log:\n{}\nagent log:\n{}",
            coturn.log(),
            log_text()
        )
    });
}

/// Runs a [`Gatherer`] over a real socket until it is done.
fn gather_blocking(
    socket: &UdpSocket,
    base: SocketAddr,
    servers: Vec<gather::Server>,
) -> Vec<Gathered> {
    let mut g = Gatherer::new(base, false, [3; 12]);
    g.start(Instant::now(), servers);
    let mut found = Vec::new();
    let mut buf = [0u8; 1500];
    let t0 = Instant::now();
    while !g.is_done() {
        assert!(t0.elapsed() < Duration::from_secs(10), "gathering bounded");
        while let Some((to, data)) = g.poll_transmit() {
            socket.send_to(&data, to).unwrap();
        }
        let wait = g
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(10))
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait)).unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let r = g.handle_datagram(Instant::now(), from, &buf[..n]);
                assert_eq!(r, gather::Incoming::Consumed);
            }
            Err(_) => g.handle_timeout(Instant::now()),
        }
        found.extend(std::iter::from_fn(|| g.poll_candidate()));
    }
    found
}

#[test]
fn stun_against_coturn_reads_the_mapped_address() {
    logs();
    let coturn = Coturn::start(CoturnOpts::loopback());
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    // From the socket's own address, coturn sees that same address: no NAT,
    // so no server-reflexive candidate.
    let found = gather_blocking(&socket, local, vec![gather::Server::Stun(coturn.addr)]);
    assert_eq!(found, vec![]);
    // With another base (as behind a NAT), the mapping coturn saw — the
    // socket's address — is the server-reflexive candidate.
    let base: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let found = gather_blocking(&socket, base, vec![gather::Server::Stun(coturn.addr)]);
    assert_eq!(found, vec![Gathered::ServerReflexive { addr: local, base }]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_turn_credentials_are_logged_and_host_still_connects() {
    logs();
    let coturn = Coturn::start(CoturnOpts::loopback());
    let result = timeout(Duration::from_secs(30), async {
        let device = engine(vec![turn_server(&coturn, Some("wrong"))], false);
        let browser = engine(Vec::new(), false);
        let p = connect(&device, &browser).await;
        gathering_ended(&p).await;
        assert!(p.device_trickled.lock().unwrap().lines.is_empty());
        let host = (CandidateType::Host, CandidateType::Host);
        assert_eq!(pairs(&p).await, (host, host));
        transfer(p.device_channel.clone(), p.browser_channel.clone()).await;
    })
    .await;
    result.unwrap_or_else(|_| {
        panic!(
            "timed out; coturn log:\n{}\nagent log:\n{}",
            coturn.log(),
            log_text()
        )
    });
    let logs = log_text();
    assert!(
        logs.contains(&format!(
            "TURN server {} refused the credentials",
            coturn.addr
        )),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_ice_servers_end_gathering_in_bounded_time() {
    logs();
    // A port nobody listens on.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let servers = vec![
        IceServer {
            urls: vec![format!("stun:{closed}")],
            username: None,
            credential: None,
        },
        IceServer {
            urls: vec![format!("turn:{closed}?transport=udp")],
            username: Some("1:x".into()),
            credential: Some("y".into()),
        },
    ];
    timeout(Duration::from_secs(30), async {
        let device = engine(servers, false);
        let browser = engine(Vec::new(), false);
        let p = connect(&device, &browser).await;
        // The host path does not wait for gathering.
        let connected_after = p.started.elapsed();
        assert!(
            connected_after < Duration::from_secs(3),
            "{connected_after:?}"
        );
        assert!(p.device_trickled.lock().unwrap().ended.is_none());
        gathering_ended(&p).await;
        let took = p.device_trickled.lock().unwrap().ended.unwrap() - p.started;
        assert!(took < Duration::from_secs(8), "gathering took {took:?}");
        assert!(p.device_trickled.lock().unwrap().lines.is_empty());
        // The session is unaffected.
        transfer(p.browser_channel.clone(), p.device_channel.clone()).await;
        let host = (CandidateType::Host, CandidateType::Host);
        assert_eq!(pairs(&p).await, (host, host));
    })
    .await
    .expect("test finished in time");
    let logs = log_text();
    assert!(
        logs.contains(&format!(
            "TURN server {closed} did not answer the allocation"
        )),
        "{logs}"
    );
    assert!(logs.contains("STUN server did not answer"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_device_reaches_a_host_only_browser() {
    logs();
    let coturn = Coturn::start(CoturnOpts::loopback());
    let result = timeout(Duration::from_secs(30), async {
        // The browser's checks go straight to the device's relayed address;
        // the device's go through its allocation as Send indications.
        let device = engine(vec![turn_server(&coturn, None)], true);
        let browser = engine(Vec::new(), false);
        let p = connect(&device, &browser).await;
        let (d, b) = pairs(&p).await;
        assert_eq!(d, (CandidateType::Relay, CandidateType::Host));
        assert_eq!(b.1, CandidateType::Relay, "{b:?}");
        transfer(p.browser_channel.clone(), p.device_channel.clone()).await;
    })
    .await;
    result.unwrap_or_else(|_| {
        panic!(
            "timed out; coturn log:\n{}\nagent log:\n{}",
            coturn.log(),
            log_text()
        )
    });
}
