//! The whole peer path on loopback: the real `flock` binary, the real
//! `intrustd` (`[rendezvous]` pointing at it, one app) and a Rust "browser"
//! (str0m) that signals through flock's `/signal` WebSocket, then through
//! the tunnel: a page, a 64 MiB download and a 32 MiB upload checked by
//! SHA-256, 100 concurrent requests, and a cancelled request the app sees
//! end. Status shows the session and the link LED; closing the session is
//! noticed at once; without `--insecure-open` the browser is refused with
//! a reason. Every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flock_proto::browser::{self, BrowserToFlock, FlockToBrowser};
use flock_proto::DeviceName;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use intrust_agent::appliance::StateName;
use intrust_agent::control::{ControlClient, Status};
use intrust_agent::peer::str0m_engine::{Str0mConfig, Str0mEngine};
use intrust_board::{LedPattern, LedRole};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const T: Duration = Duration::from_secs(15);

mod common;
use common::app::{
    concurrent_pages, get, http, pattern, sha256_hex, start_app, DOWNLOAD, PAGE, UPLOAD,
};

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_flock(dir: &Path) -> common::FlockProc {
    common::start_flock(dir, "127.0.0.1:0".parse().unwrap(), "")
}

struct Agent {
    dir: tempfile::TempDir,
    child: Option<Proc>,
}

impl Agent {
    async fn start(flock: SocketAddr, app: SocketAddr, insecure_open: bool) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = dir.path().join("intrustd.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/control.sock\"\n\
                 sim_socket = \"{d}/sim.sock\"\nboard = \"sim\"\n\
                 [rendezvous]\nflock_url = \"ws://{flock}/device\"\nname = \"e2e-box\"\n\
                 [peer]\nbind = \"127.0.0.1\"\n[peer.apps]\nhello = \"{app}\"\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_intrustd"));
        cmd.arg("--config").arg(&config);
        if insecure_open {
            cmd.arg("--insecure-open");
        }
        let child = cmd
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let agent = Agent {
            dir,
            child: Some(Proc(child)),
        };
        agent
            .status_until("registered at flock", |s| {
                s.rendezvous
                    .as_ref()
                    .is_some_and(|r| r.state == "registered")
            })
            .await;
        agent
    }

    fn control(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    async fn status_until(&self, what: &str, f: impl Fn(&Status) -> bool) -> Status {
        self.status_within(T, what, f).await
    }

    async fn status_within(
        &self,
        limit: Duration,
        what: &str,
        f: impl Fn(&Status) -> bool,
    ) -> Status {
        let t0 = Instant::now();
        let mut last = None;
        loop {
            if let Ok(mut c) = ControlClient::connect(self.control()).await {
                if let Ok(Ok(s)) = timeout(T, c.status()).await {
                    if f(&s) {
                        return s;
                    }
                    last = Some(s);
                }
            }
            assert!(
                t0.elapsed() < limit,
                "timed out waiting for {what}; last status {last:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                return s;
            }
            assert!(t0.elapsed() < T, "intrustd did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

type Ws = WebSocketStream<TcpStream>;

async fn signal_send(b: &mut Ws, m: &BrowserToFlock) {
    b.send(Message::Text(browser::encode(m).unwrap().into()))
        .await
        .unwrap();
}

async fn signal_recv(b: &mut Ws) -> FlockToBrowser {
    loop {
        match timeout(T, b.next()).await.expect("no signalling in time") {
            Some(Ok(Message::Text(t))) => return browser::decode(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Connects to `/signal`, sends the offer; returns the socket and flock's
/// first answer-or-close.
async fn signal_offer(flock: SocketAddr, offer: &str) -> (Ws, FlockToBrowser) {
    let tcp = TcpStream::connect(flock).await.unwrap();
    let (mut ws, _) = timeout(
        T,
        tokio_tungstenite::client_async(format!("ws://{flock}/signal"), tcp),
    )
    .await
    .unwrap()
    .unwrap();
    signal_send(
        &mut ws,
        &BrowserToFlock::Connect {
            device: DeviceName::new("e2e-box").unwrap(),
        },
    )
    .await;
    match signal_recv(&mut ws).await {
        FlockToBrowser::Session { .. } => {}
        other => panic!("expected a session, got {other:?}"),
    }
    signal_send(
        &mut ws,
        &BrowserToFlock::Offer {
            sdp: offer.to_owned(),
        },
    )
    .await;
    loop {
        match signal_recv(&mut ws).await {
            FlockToBrowser::Candidate { .. } => continue,
            m => return (ws, m),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_reaches_the_app_through_flock_and_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let flock_proc = start_flock(dir.path());
    let flock = flock_proc.addr;
    let app = start_app().await;
    let mut agent = Agent::start(flock, app.addr, true).await;
    assert!(
        agent.stderr().contains("--insecure-open"),
        "the insecure warning is logged at start:\n{}",
        agent.stderr()
    );

    timeout(Duration::from_secs(90), async {
        let engine = Str0mEngine::new(Str0mConfig::default());
        let pending = engine.create_offer("control").unwrap();
        let (_ws, reply) = signal_offer(flock, pending.offer_sdp()).await;
        let FlockToBrowser::Answer { sdp } = reply else {
            panic!("expected an answer, got {reply:?}");
        };
        let (browser, control) = pending.accept_answer(&sdp).unwrap();
        control.open().await.unwrap();

        let session = &*browser.session;
        let (mut hello, _conn) = http(session, "hello").await;
        let resp = hello.send_request(get("/page")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, PAGE.as_bytes());

        // 64 MiB down and 32 MiB up on one keep-alive channel.
        let started = Instant::now();
        hello.ready().await.unwrap();
        let resp = hello.send_request(get("/download")).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let down_secs = started.elapsed().as_secs_f64();
        assert_eq!(body.len(), DOWNLOAD);
        assert_eq!(sha256_hex(&body), sha256_hex(&app.download));
        let upload = Bytes::from(pattern(11, UPLOAD));
        let want = format!("{UPLOAD} {}", sha256_hex(&upload));
        let started = Instant::now();
        hello.ready().await.unwrap();
        let req = Request::post("/upload")
            .header("host", "demo")
            .body(Full::new(upload))
            .unwrap();
        let resp = hello.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let up_secs = started.elapsed().as_secs_f64();
        assert_eq!(String::from_utf8_lossy(&body), want);
        println!(
            "through flock and intrustd: {} MiB down at {:.1} MB/s, {} MiB up at {:.1} MB/s",
            DOWNLOAD >> 20,
            DOWNLOAD as f64 / down_secs / 1e6,
            UPLOAD >> 20,
            UPLOAD as f64 / up_secs / 1e6
        );

        // 100 concurrent requests, each on its own channel.
        concurrent_pages(browser.session.clone(), "hello", 100).await;

        // Cancellation: dropping the connection (closing its channel) ends
        // the app's side of the request.
        let (mut slow, conn) = http(session, "hello").await;
        let resp = slow.send_request(get("/slow")).await.unwrap();
        let mut body = resp.into_body();
        let mut got = 0;
        while got < 4096 {
            let frame = body.frame().await.unwrap().unwrap();
            got += frame.data_ref().map_or(0, |d| d.len());
        }
        conn.abort();
        drop((body, slow));
        timeout(T, app.slow_closed.notified())
            .await
            .expect("the app sees the cancelled request's connection close");

        let s = agent.status_until("one peer", |s| s.peers == Some(1)).await;
        assert_eq!(s.state, StateName::PeerConnected);
        assert_eq!(s.leds[&LedRole::Link], LedPattern::On);
        let r = s.rendezvous.unwrap();
        assert!(r.insecure_open);
        assert_eq!(r.name, "e2e-box");

        let mut c = ControlClient::connect(agent.control()).await.unwrap();
        let (_, sessions) = c.peers().await.unwrap();
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        let p = &sessions[0];
        assert!(p.connected);
        assert!(p.bytes_out > DOWNLOAD as u64, "{p:?}");
        assert!(p.bytes_in > 0, "{p:?}");
        // Loopback host candidates on both sides; the pair shows once
        // str0m's first stats (every second) are in.
        let t0 = Instant::now();
        loop {
            let (_, sessions) = c.peers().await.unwrap();
            if sessions[0].pair != "unknown" {
                assert_eq!(sessions[0].pair, "host", "{sessions:?}");
                break;
            }
            assert!(t0.elapsed() < T, "no selected pair: {sessions:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Closing sends DTLS close_notify: the device ends the session at
        // once, not at the 30 s silence timeout.
        browser.session.close();
        // (The link LED follows the appliance state, a step after the count.)
        agent
            .status_within(Duration::from_secs(3), "no peers, link LED off", |s| {
                s.peers == Some(0) && s.leds[&LedRole::Link] == LedPattern::Off
            })
            .await;
    })
    .await
    .expect("test finished in time");
    assert!(agent.terminate().success(), "{}", agent.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_insecure_open_the_browser_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let flock_proc = start_flock(dir.path());
    let flock = flock_proc.addr;
    let app = start_app().await;
    let mut agent = Agent::start(flock, app.addr, false).await;
    let engine = Str0mEngine::new(Str0mConfig::default());
    let pending = engine.create_offer("control").unwrap();
    let (_ws, reply) = signal_offer(flock, pending.offer_sdp()).await;
    let FlockToBrowser::Closed { reason } = reply else {
        panic!("expected a refusal, got {reply:?}");
    };
    assert!(reason.contains("--insecure-open"), "{reason}");
    let s = agent.status_until("status", |_| true).await;
    assert_eq!(s.peers, Some(0));
    assert!(!s.rendezvous.unwrap().insecure_open);
    assert!(!agent.stderr().contains("INSECURE"), "{}", agent.stderr());
    assert!(agent.terminate().success(), "{}", agent.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_ice_never_connects_is_listed_but_not_a_connected_peer() {
    let dir = tempfile::tempdir().unwrap();
    let flock_proc = start_flock(dir.path());
    let flock = flock_proc.addr;
    let app = start_app().await;
    let mut agent = Agent::start(flock, app.addr, true).await;
    timeout(Duration::from_secs(30), async {
        // A browser that offers, gets its answer, then vanishes: its socket
        // closes with the offer, so no ICE check is ever answered.
        let engine = Str0mEngine::new(Str0mConfig::default());
        let pending = engine.create_offer("control").unwrap();
        let (_ws, reply) = signal_offer(flock, pending.offer_sdp()).await;
        assert!(matches!(reply, FlockToBrowser::Answer { .. }), "{reply:?}");
        drop(pending);

        let mut c = ControlClient::connect(agent.control()).await.unwrap();
        let t0 = Instant::now();
        loop {
            let (_, sessions) = c.peers().await.unwrap();
            if sessions.len() == 1 {
                assert!(!sessions[0].connected, "{sessions:?}");
                break;
            }
            assert!(t0.elapsed() < T, "the session is not listed: {sessions:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // For a while (ICE gives up later): no connected peer, link LED off.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(1500) {
            let s = c.status().await.unwrap();
            assert_eq!(s.peers, Some(0), "{s:?}");
            assert_eq!(s.leds[&LedRole::Link], LedPattern::Off, "{s:?}");
            assert_ne!(s.state, StateName::PeerConnected, "{s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("test finished in time");
    assert!(agent.terminate().success(), "{}", agent.stderr());
}
