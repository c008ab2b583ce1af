//! The whole peer path on loopback: the real `flock` binary, the real
//! `intrustd` (`[rendezvous]` pointing at it, one app) and a Rust "browser"
//! (str0m) that signals through flock's `/signal` WebSocket, then fetches a
//! page and a 4 MiB download through the tunnel. Status shows the session
//! and the link LED; without `--insecure-open` the browser is refused with
//! a reason. Every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flock_proto::browser::{self, BrowserToFlock, FlockToBrowser};
use flock_proto::DeviceName;
use futures_util::{SinkExt, StreamExt};
use intrust_agent::appliance::StateName;
use intrust_agent::control::{ControlClient, Status};
use intrust_agent::peer::str0m_engine::{Str0mConfig, Str0mEngine};
use intrust_agent::peer::stream::ChannelStream;
use intrust_board::{LedPattern, LedRole};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const T: Duration = Duration::from_secs(15);
const BIG: usize = 4 * 1024 * 1024;

mod common;

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

/// The download's bytes: a fixed pseudo-random pattern.
fn big_body() -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..BIG)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// FNV-1a, to compare the download without printing 4 MiB on failure.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The app: `GET /` → `hello`, `GET /big` → [`big_body`]; keep-alive.
async fn app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let big = std::sync::Arc::new(big_body());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let big = big.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let body: &[u8] = if head.starts_with("GET /big ") {
                        &big
                    } else {
                        b"hello"
                    };
                    let h = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    if tcp.write_all(h.as_bytes()).await.is_err()
                        || tcp.write_all(body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
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

/// Reads one HTTP/1.1 response with a content-length; returns the body.
async fn read_response<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Vec<u8> {
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = r.read(&mut chunk).await.unwrap();
        assert!(n > 0, "channel closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("content-length")
        .trim()
        .parse()
        .unwrap();
    buf.drain(..end + 4);
    while buf.len() < len {
        let n = r.read(&mut chunk).await.unwrap();
        assert!(n > 0, "channel closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..len).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_reaches_the_app_through_flock_and_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let flock_proc = start_flock(dir.path());
    let flock = flock_proc.addr;
    let app = app().await;
    let mut agent = Agent::start(flock, app, true).await;
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

        let io = browser
            .session
            .open_channel("http/1.1 hello")
            .unwrap()
            .open()
            .await
            .unwrap();
        let mut stream = ChannelStream::new(io);
        let mut buf = Vec::new();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: hello\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut stream, &mut buf).await, b"hello");
        stream
            .write_all(b"GET /big HTTP/1.1\r\nhost: hello\r\n\r\n")
            .await
            .unwrap();
        let big = read_response(&mut stream, &mut buf).await;
        assert_eq!(big.len(), BIG);
        assert_eq!(checksum(&big), checksum(&big_body()));

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
        assert!(p.bytes_out > BIG as u64, "{p:?}");
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

        // str0m's close sends nothing the device would see: the session
        // ends when ICE consent expires (30 s of silence).
        browser.session.close();
        let s = agent
            .status_within(Duration::from_secs(45), "no peers", |s| s.peers == Some(0))
            .await;
        assert_eq!(s.leds[&LedRole::Link], LedPattern::Off);
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
    let app = app().await;
    let mut agent = Agent::start(flock, app, false).await;
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
