//! The agent's flock link against the real `flock` binary on 127.0.0.1
//! (built on demand with `cargo build -p flock`), a fake browser on
//! `/signal` and a fake flock that sends garbage. Every wait is bounded;
//! nothing leaves loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use flock_proto::browser::{self, BrowserToFlock, FlockToBrowser};
use flock_proto::identity::DeviceKey;
use flock_proto::DeviceName;
use futures_util::{SinkExt, StreamExt};
use intrust_agent::rendezvous::link::Timing;
use intrust_agent::rendezvous::{
    LinkStatus, Rendezvous, RendezvousConfig, SignallingCommand, SignallingEvent,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const T: Duration = Duration::from_secs(10);

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("intrust_agent=debug")
        .try_init();
}

mod common;
use common::start_flock as start_flock_with;

/// Flock with STUN/TURN configured, so `Registered` carries ICE servers.
fn start_flock(dir: &Path, listen: SocketAddr) -> common::FlockProc {
    start_flock_with(
        dir,
        listen,
        "stun_urls = [\"stun:127.0.0.1:3478\"]\n[turn]\nurls = [\"turn:127.0.0.1:3478\"]\nsecret = \"s3cret\"\nttl_secs = 600\n",
    )
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn name(s: &str) -> DeviceName {
    DeviceName::new(s).unwrap()
}

fn client(
    addr: SocketAddr,
    n: &str,
    key: DeviceKey,
) -> (Rendezvous, mpsc::Receiver<SignallingEvent>) {
    Rendezvous::spawn(
        RendezvousConfig {
            flock_url: format!("ws://{addr}/device"),
            name: name(n),
            ca_file: None,
            timing: Timing::default(),
        },
        key,
    )
    .unwrap()
}

async fn wait_status(r: &Rendezvous, what: &str, ok: impl Fn(&LinkStatus) -> bool) -> LinkStatus {
    let mut w = r.watch_status();
    let got = timeout(T, w.wait_for(|s| ok(s))).await;
    match got {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("not {what} in time; status: {:?}", r.status()),
    }
}

async fn next_event(ev: &mut mpsc::Receiver<SignallingEvent>) -> SignallingEvent {
    timeout(T, ev.recv())
        .await
        .expect("no signalling event in time")
        .expect("event channel closed")
}

/// The next event that is not an ICE server refresh.
async fn next_session_event(ev: &mut mpsc::Receiver<SignallingEvent>) -> SignallingEvent {
    loop {
        match next_event(ev).await {
            SignallingEvent::IceServers(_) => continue,
            e => return e,
        }
    }
}

type Browser = WebSocketStream<TcpStream>;

async fn browser(addr: SocketAddr, device: &str) -> (Browser, u64) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut b, _) = timeout(
        T,
        tokio_tungstenite::client_async(format!("ws://{addr}/signal"), tcp),
    )
    .await
    .unwrap()
    .unwrap();
    browser_send(
        &mut b,
        &BrowserToFlock::Connect {
            device: name(device),
        },
    )
    .await;
    match browser_recv(&mut b).await {
        FlockToBrowser::Session { session, .. } => (b, session),
        other => panic!("expected a session, got {other:?}"),
    }
}

async fn browser_send(b: &mut Browser, m: &BrowserToFlock) {
    b.send(Message::Text(browser::encode(m).unwrap().into()))
        .await
        .unwrap();
}

async fn browser_recv(b: &mut Browser) -> FlockToBrowser {
    loop {
        match timeout(T, b.next())
            .await
            .expect("no message for the browser in time")
        {
            Some(Ok(Message::Text(t))) => return browser::decode(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn registers_and_relays_a_session_both_ways() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let f = start_flock(dir.path(), any_port());
    let (r, mut ev) = client(f.addr, "box-1", DeviceKey::generate().unwrap());
    let s = wait_status(&r, "registered", LinkStatus::is_registered).await;
    assert_eq!(
        s,
        LinkStatus::Registered {
            name: name("box-1")
        }
    );
    let SignallingEvent::IceServers(ice) = next_event(&mut ev).await else {
        panic!("the first event is the ICE server list")
    };
    assert_eq!(ice.len(), 2, "{ice:?}");
    assert!(ice[1].username.is_some(), "TURN credentials: {ice:?}");
    assert_eq!(r.ice_servers(), ice);

    let (mut b, sid) = browser(f.addr, "box-1").await;
    browser_send(
        &mut b,
        &BrowserToFlock::Offer {
            sdp: "v=0 offer".into(),
        },
    )
    .await;
    assert_eq!(
        next_session_event(&mut ev).await,
        SignallingEvent::Offer {
            session: sid,
            sdp: "v=0 offer".into(),
            ice_servers: ice.clone(),
        }
    );
    let cmds = r.commands();
    cmds.send(SignallingCommand::Answer {
        session: sid,
        sdp: "v=0 answer".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        browser_recv(&mut b).await,
        FlockToBrowser::Answer {
            sdp: "v=0 answer".into()
        }
    );
    // Candidates both ways, including the end-of-candidates marker.
    browser_send(
        &mut b,
        &BrowserToFlock::Candidate {
            candidate: Some("candidate:1 1 udp 1 127.0.0.1 5000 typ host".into()),
            sdp_mid: Some("0".into()),
        },
    )
    .await;
    assert_eq!(
        next_session_event(&mut ev).await,
        SignallingEvent::Candidate {
            session: sid,
            candidate: Some("candidate:1 1 udp 1 127.0.0.1 5000 typ host".into()),
            sdp_mid: Some("0".into()),
        }
    );
    for c in [
        Some("candidate:2 1 udp 1 127.0.0.1 6000 typ host".to_owned()),
        None,
    ] {
        cmds.send(SignallingCommand::Candidate {
            session: sid,
            candidate: c.clone(),
            sdp_mid: Some("0".into()),
        })
        .await
        .unwrap();
        assert_eq!(
            browser_recv(&mut b).await,
            FlockToBrowser::Candidate {
                candidate: c,
                sdp_mid: Some("0".into())
            }
        );
    }
    // The device ends the session; the browser hears it.
    cmds.send(SignallingCommand::Close {
        session: sid,
        reason: "done".into(),
    })
    .await
    .unwrap();
    assert!(matches!(
        browser_recv(&mut b).await,
        FlockToBrowser::Closed { .. }
    ));

    // A browser that leaves is reported to the engine.
    let (mut b2, sid2) = browser(f.addr, "box-1").await;
    browser_send(&mut b2, &BrowserToFlock::Offer { sdp: "v=0".into() }).await;
    assert!(
        matches!(next_session_event(&mut ev).await, SignallingEvent::Offer { session, .. } if session == sid2)
    );
    drop(b2);
    assert!(
        matches!(next_session_event(&mut ev).await, SignallingEvent::Closed { session, .. } if session == sid2)
    );
}

#[tokio::test]
async fn registered_again_within_5s_after_flock_restarts() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let f = start_flock(dir.path(), any_port());
    let addr = f.addr;
    let (r, mut ev) = client(addr, "box-restart", DeviceKey::generate().unwrap());
    wait_status(&r, "registered", LinkStatus::is_registered).await;

    let killed = Instant::now();
    drop(f);
    assert_eq!(
        next_session_event(&mut ev).await,
        SignallingEvent::Disconnected
    );
    wait_status(&r, "retrying", |s| !s.is_registered()).await;
    // Down for a moment, as in a service restart.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let f = start_flock(dir.path(), addr);
    let restarted = Instant::now();
    assert_eq!(f.addr, addr);
    wait_status(&r, "registered again", LinkStatus::is_registered).await;
    let after_restart = restarted.elapsed();
    println!(
        "re-registered {:?} after flock restarted ({:?} after it was killed)",
        after_restart,
        killed.elapsed()
    );
    assert!(after_restart < Duration::from_secs(5), "{after_restart:?}");
    // And it works: a browser reaches it.
    let (mut b, sid) = browser(addr, "box-restart").await;
    browser_send(&mut b, &BrowserToFlock::Offer { sdp: "v=0".into() }).await;
    assert!(
        matches!(next_session_event(&mut ev).await, SignallingEvent::Offer { session, .. } if session == sid)
    );
}

#[tokio::test]
async fn a_name_taken_by_another_key_is_rejected_and_the_link_lives_on() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let f = start_flock(dir.path(), any_port());
    let (owner, _ev1) = client(f.addr, "box-taken", DeviceKey::generate().unwrap());
    wait_status(&owner, "registered", LinkStatus::is_registered).await;
    let (thief, _ev2) = client(f.addr, "box-taken", DeviceKey::generate().unwrap());
    let s = wait_status(&thief, "rejected", |s| {
        matches!(s, LinkStatus::Rejected { .. })
    })
    .await;
    let text = s.describe(intrust_board::Mono::now());
    println!("status: {text}");
    assert!(text.starts_with("rejected: "), "{text}");
    // A long backoff: no retry within the next second, the owner is unaffected.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(matches!(thief.status(), LinkStatus::Rejected { .. }));
    assert!(owner.status().is_registered());
}

/// A fake flock: accepts WebSocket connections and answers each with junk.
async fn garbage_flock(listener: TcpListener, accepted: mpsc::UnboundedSender<Instant>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = accepted.send(Instant::now());
        tokio::spawn(async move {
            if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                let _ = ws
                    .send(Message::Binary(vec![0xde, 0xad, 0xbe, 0xef].into()))
                    .await;
                // Keep the socket open: the device must be the one to drop it.
                let _ = timeout(T, ws.next()).await;
            }
        });
    }
}

#[tokio::test]
async fn garbage_from_flock_drops_the_connection_and_retries_with_backoff() {
    logs();
    let listener = TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut accepted) = mpsc::unbounded_channel();
    let server = tokio::spawn(garbage_flock(listener, tx));
    let (r, _ev) = client(addr, "box-junk", DeviceKey::generate().unwrap());
    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(timeout(T, accepted.recv()).await.unwrap().unwrap());
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    println!("reconnect gaps: {gaps:?}");
    // Transport backoff: the n-th delay is at least half of 100 ms · 2^n.
    for (i, g) in gaps.iter().enumerate() {
        let floor = Duration::from_millis(50) * (1 << i);
        assert!(*g >= floor, "gap {i} {g:?} below {floor:?}");
    }
    let s = wait_status(
        &r,
        "retrying after garbage",
        |s| matches!(s, LinkStatus::Retrying { error, .. } if error.contains("undecodable")),
    )
    .await;
    println!("status: {}", s.describe(intrust_board::Mono::now()));
    server.abort();
}

/// The TEST ONLY certificates in `tests/fixtures/flock-tls` (see its README).
fn tls_fixture(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/flock-tls")
        .join(file)
}

fn tls_client(port: u16, ca: &str) -> (Rendezvous, mpsc::Receiver<SignallingEvent>) {
    Rendezvous::spawn(
        RendezvousConfig {
            flock_url: format!("wss://localhost:{port}/device"),
            name: name("box-tls"),
            ca_file: Some(tls_fixture(ca)),
            timing: Timing::default(),
        },
        DeviceKey::generate().unwrap(),
    )
    .unwrap()
}

fn start_tls_flock(dir: &Path) -> common::FlockProc {
    start_flock_with(
        dir,
        any_port(),
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            tls_fixture("cert.pem").display(),
            tls_fixture("key.pem").display()
        ),
    )
}

#[tokio::test]
async fn registers_over_wss_with_the_configured_ca() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let f = start_tls_flock(dir.path());
    let (r, _ev) = tls_client(f.addr.port(), "ca.pem");
    let s = wait_status(&r, "registered over wss", LinkStatus::is_registered).await;
    assert_eq!(
        s,
        LinkStatus::Registered {
            name: name("box-tls")
        }
    );
}

#[tokio::test]
async fn wss_with_an_unrelated_ca_is_refused_with_a_certificate_error() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let f = start_tls_flock(dir.path());
    let (r, _ev) = tls_client(f.addr.port(), "other-ca.pem");
    let s = wait_status(&r, "retrying", |s| matches!(s, LinkStatus::Retrying { .. })).await;
    let LinkStatus::Retrying { error, .. } = s else {
        unreachable!()
    };
    assert!(
        error.contains("TLS") && error.to_lowercase().contains("certificate"),
        "the error names TLS and the certificate: {error}"
    );
    // Never registered meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!r.status().is_registered(), "{:?}", r.status());
}

#[tokio::test]
async fn ws_to_a_tls_flock_fails_clearly_and_wss_without_a_ca_is_a_config_error() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let f = start_tls_flock(dir.path());
    let (r, _ev) = client(f.addr, "box-plain", DeviceKey::generate().unwrap());
    let s = wait_status(&r, "retrying", |s| matches!(s, LinkStatus::Retrying { .. })).await;
    assert!(!s.is_registered());

    let err = Rendezvous::spawn(
        RendezvousConfig {
            flock_url: format!("wss://localhost:{}/device", f.addr.port()),
            name: name("box-noca"),
            ca_file: None,
            timing: Timing::default(),
        },
        DeviceKey::generate().unwrap(),
    )
    .err()
    .expect("wss without a CA file is refused at start");
    assert!(err.to_string().contains("wss"), "{err}");
}
