//! The real `flock` binary on 127.0.0.1 with Rust device and browser
//! clients: registration, relaying, limits, TLS, restart, the portal.
//! Every wait is bounded; nothing leaves loopback.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use flock_proto::browser::{self, BrowserToFlock, FlockToBrowser};
use flock_proto::device::{self, DeviceToFlock, FlockToDevice};
use flock_proto::identity::DeviceKey;
use flock_proto::DeviceName;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const T: Duration = Duration::from_secs(10);

struct FlockProc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for FlockProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, extra: &str) -> FlockProc {
    let config = dir.join("flock.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nregistry = \"{}\"\nweb_root = \"{}\"\nstun_urls = [\"stun:127.0.0.1:3478\"]\n{extra}",
            dir.join("registry.json").display(),
            dir.join("web").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flock"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(T).expect("flock did not start in time");
    let addr = line
        .trim()
        .strip_prefix("flock listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    FlockProc { child, addr }
}

const TURN: &str =
    "[turn]\nurls = [\"turn:127.0.0.1:3478\"]\nsecret = \"s3cret\"\nttl_secs = 600\n";

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<X: AsyncRead + AsyncWrite + Unpin + Send> Io for X {}
type Ws = WebSocketStream<Box<dyn Io>>;

async fn tcp_from(addr: SocketAddr, from: [u8; 4]) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((from, 0))).unwrap();
    timeout(T, s.connect(addr)).await.unwrap().unwrap()
}

async fn ws(addr: SocketAddr, path: &str, from: [u8; 4]) -> Ws {
    let io: Box<dyn Io> = Box::new(tcp_from(addr, from).await);
    ws_over(io, addr, path).await.expect("WebSocket handshake")
}

async fn ws_over(
    io: Box<dyn Io>,
    addr: SocketAddr,
    path: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = format!("ws://{addr}{path}");
    timeout(T, tokio_tungstenite::client_async(url, io))
        .await
        .unwrap()
        .map(|(ws, _)| ws)
}

async fn next(ws: &mut Ws) -> Option<Message> {
    loop {
        match timeout(T, ws.next()).await.expect("no message in time") {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(m)) => return Some(m),
        }
    }
}

async fn from_flock(ws: &mut Ws) -> FlockToDevice {
    loop {
        match next(ws).await {
            Some(Message::Binary(b)) => match device::decode(&b).unwrap() {
                FlockToDevice::Ping => continue,
                m => return m,
            },
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

async fn to_flock(ws: &mut Ws, m: &DeviceToFlock) {
    ws.send(Message::Binary(device::encode(m).unwrap().into()))
        .await
        .unwrap();
}

async fn browser_recv(ws: &mut Ws) -> Option<FlockToBrowser> {
    match next(ws).await? {
        Message::Text(t) => Some(browser::decode(t.as_str()).unwrap()),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn browser_send(ws: &mut Ws, m: &BrowserToFlock) {
    ws.send(Message::Text(browser::encode(m).unwrap().into()))
        .await
        .unwrap();
}

fn name(s: &str) -> DeviceName {
    DeviceName::new(s).unwrap()
}

/// Connects a device and answers the challenge; returns the socket and
/// flock's verdict.
async fn device_over(mut ws: Ws, n: &str, key: &DeviceKey) -> (Ws, FlockToDevice) {
    let FlockToDevice::Challenge { nonce } = from_flock(&mut ws).await else {
        panic!("no challenge")
    };
    let hello = DeviceToFlock::Hello {
        name: name(n),
        public_key: key.public_key(),
        signature: key.sign_challenge(&nonce, &name(n)).unwrap(),
    };
    to_flock(&mut ws, &hello).await;
    let verdict = from_flock(&mut ws).await;
    (ws, verdict)
}

async fn device(addr: SocketAddr, n: &str, key: &DeviceKey) -> (Ws, FlockToDevice) {
    device_over(ws(addr, "/device", [127, 0, 0, 1]).await, n, key).await
}

async fn session(addr: SocketAddr, n: &str, from: [u8; 4]) -> (Ws, u64) {
    let mut b = ws(addr, "/signal", from).await;
    browser_send(&mut b, &BrowserToFlock::Connect { device: name(n) }).await;
    match browser_recv(&mut b).await {
        Some(FlockToBrowser::Session {
            session,
            ice_servers,
        }) => {
            assert!(!ice_servers.is_empty(), "at least the STUN entry");
            (b, session)
        }
        other => panic!("expected a session, got {other:?}"),
    }
}

/// The device is alive and served: Ping gets Pong.
async fn assert_alive(d: &mut Ws) {
    to_flock(d, &DeviceToFlock::Ping).await;
    assert_eq!(from_flock(d).await, FlockToDevice::Pong);
}

#[tokio::test]
async fn signalling_round_trip_and_device_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), TURN);
    let key = DeviceKey::generate().unwrap();
    let (mut d, verdict) = device(f.addr, "box-1", &key).await;
    let FlockToDevice::Registered { ice_servers } = verdict else {
        panic!("{verdict:?}")
    };
    assert!(ice_servers[1].username.as_deref().unwrap().contains(':'));
    let (mut b, sid) = session(f.addr, "box-1", [127, 0, 0, 1]).await;

    browser_send(
        &mut b,
        &BrowserToFlock::Offer {
            sdp: "v=0 offer".into(),
        },
    )
    .await;
    assert_eq!(
        from_flock(&mut d).await,
        FlockToDevice::SessionOffer {
            session: sid,
            sdp: "v=0 offer".into()
        }
    );
    browser_send(
        &mut b,
        &BrowserToFlock::Candidate {
            candidate: Some("candidate:1 1 udp 1 127.0.0.1 9 typ host".into()),
            sdp_mid: Some("0".into()),
        },
    )
    .await;
    assert!(matches!(
        from_flock(&mut d).await,
        FlockToDevice::Candidate { session, candidate: Some(_), .. } if session == sid
    ));
    to_flock(
        &mut d,
        &DeviceToFlock::SessionAnswer {
            session: sid,
            sdp: "v=0 answer".into(),
        },
    )
    .await;
    assert_eq!(
        browser_recv(&mut b).await,
        Some(FlockToBrowser::Answer {
            sdp: "v=0 answer".into()
        })
    );
    to_flock(
        &mut d,
        &DeviceToFlock::Candidate {
            session: sid,
            candidate: None,
            sdp_mid: None,
        },
    )
    .await;
    assert_eq!(
        browser_recv(&mut b).await,
        Some(FlockToBrowser::Candidate {
            candidate: None,
            sdp_mid: None
        })
    );
    drop(d);
    assert!(matches!(
        browser_recv(&mut b).await,
        Some(FlockToBrowser::Closed { .. })
    ));
    assert_eq!(browser_recv(&mut b).await, None, "socket closed after it");
}

#[tokio::test]
async fn squatting_and_unknown_devices_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), "");
    let (mut owner, v) = device(f.addr, "box-1", &DeviceKey::generate().unwrap()).await;
    assert!(matches!(v, FlockToDevice::Registered { .. }));
    let (mut thief, v) = device(f.addr, "box-1", &DeviceKey::generate().unwrap()).await;
    assert!(matches!(v, FlockToDevice::Rejected { .. }), "{v:?}");
    assert!(next(&mut thief).await.is_none());
    assert_alive(&mut owner).await;

    let mut b = ws(f.addr, "/signal", [127, 0, 0, 1]).await;
    browser_send(
        &mut b,
        &BrowserToFlock::Connect {
            device: name("nobody"),
        },
    )
    .await;
    assert!(matches!(
        browser_recv(&mut b).await,
        Some(FlockToBrowser::Error { .. })
    ));
}

#[tokio::test]
async fn garbage_and_oversize_cut_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), "");
    let (mut good, _) = device(f.addr, "box-1", &DeviceKey::generate().unwrap()).await;
    let (mut b_good, _) = session(f.addr, "box-1", [127, 0, 0, 1]).await;

    let (mut bad, _) = device(f.addr, "box-2", &DeviceKey::generate().unwrap()).await;
    bad.send(Message::Binary(vec![1, 0xff, 0xff, 0xff].into()))
        .await
        .unwrap();
    assert!(next(&mut bad).await.is_none());

    let mut b_bad = ws(f.addr, "/signal", [127, 0, 0, 1]).await;
    b_bad
        .send(Message::Text(r#"{"type":"bogus"}"#.into()))
        .await
        .unwrap();
    assert!(matches!(
        browser_recv(&mut b_bad).await,
        Some(FlockToBrowser::Error { .. })
    ));
    assert!(next(&mut b_bad).await.is_none());

    let mut b_big = ws(f.addr, "/signal", [127, 0, 0, 1]).await;
    let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(70 * 1024));
    let _ = b_big.send(Message::Text(big.into())).await;
    assert!(next(&mut b_big).await.is_none());

    assert_alive(&mut good).await;
    browser_send(&mut b_good, &BrowserToFlock::Offer { sdp: "o".into() }).await;
    assert!(matches!(
        from_flock(&mut good).await,
        FlockToDevice::SessionOffer { .. }
    ));
}

#[tokio::test]
async fn a_flooding_source_is_limited_while_others_work() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(
        dir.path(),
        "[limits]\nconnections_per_minute = 5\nmessages_per_second = 20\n",
    );
    let (mut good, _) = device(f.addr, "box-1", &DeviceKey::generate().unwrap()).await;

    // Message flood on one connection: cut.
    let mut flooder = ws(f.addr, "/signal", [127, 0, 0, 2]).await;
    browser_send(
        &mut flooder,
        &BrowserToFlock::Connect {
            device: name("box-1"),
        },
    )
    .await;
    let mut cut = false;
    for _ in 0..200 {
        let m = Message::Text(r#"{"type":"candidate","candidate":null}"#.into());
        if flooder.send(m).await.is_err() {
            cut = true;
            break;
        }
    }
    if !cut {
        // Drain until flock's close arrives.
        while next(&mut flooder).await.is_some() {}
    }

    // Connection flood from 127.0.0.2: refused after the budget.
    let mut refused = 0;
    for _ in 0..10 {
        let io: Box<dyn Io> = Box::new(tcp_from(f.addr, [127, 0, 0, 2]).await);
        if ws_over(io, f.addr, "/signal").await.is_err() {
            refused += 1;
        }
    }
    assert!(refused >= 5, "refused {refused}");

    // Another source still works end to end.
    let (mut b, sid) = session(f.addr, "box-1", [127, 0, 0, 3]).await;
    browser_send(&mut b, &BrowserToFlock::Offer { sdp: "o".into() }).await;
    assert_eq!(
        from_flock(&mut good).await,
        FlockToDevice::SessionOffer {
            session: sid,
            sdp: "o".into()
        }
    );
}

#[tokio::test]
async fn tls_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let f = start(dir.path(), &tls);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tcp_from(f.addr, [127, 0, 0, 1]).await;
    let server_name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls_stream = timeout(T, connector.connect(server_name, tcp))
        .await
        .unwrap()
        .unwrap();
    let io: Box<dyn Io> = Box::new(tls_stream);
    let ws = ws_over(io, f.addr, "/device").await.unwrap();
    let (mut d, v) = device_over(ws, "box-tls", &DeviceKey::generate().unwrap()).await;
    assert!(matches!(v, FlockToDevice::Registered { .. }));
    assert_alive(&mut d).await;

    // Plain text on the TLS port gets nowhere.
    let io: Box<dyn Io> = Box::new(tcp_from(f.addr, [127, 0, 0, 1]).await);
    assert!(ws_over(io, f.addr, "/device").await.is_err());
}

#[tokio::test]
async fn the_registry_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = DeviceKey::generate().unwrap();
    {
        let f = start(dir.path(), "");
        let (_d, v) = device(f.addr, "box-1", &key).await;
        assert!(matches!(v, FlockToDevice::Registered { .. }));
    }
    let f = start(dir.path(), "");
    let (_thief, v) = device(f.addr, "box-1", &DeviceKey::generate().unwrap()).await;
    assert!(matches!(v, FlockToDevice::Rejected { .. }), "{v:?}");
    let (mut d, v) = device(f.addr, "box-1", &key).await;
    assert!(matches!(v, FlockToDevice::Registered { .. }), "{v:?}");
    assert_alive(&mut d).await;
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tcp_from(addr, [127, 0, 0, 1]).await;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    timeout(T, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn portal_files_and_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let f = start(dir.path(), "");
    let r = http_get(f.addr, "/").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("portal is not built"), "{r}");

    std::fs::create_dir_all(dir.path().join("web/assets")).unwrap();
    std::fs::write(dir.path().join("web/index.html"), "<p>portal</p>").unwrap();
    std::fs::write(dir.path().join("web/assets/app.js"), "let x = 1;").unwrap();
    let r = http_get(f.addr, "/").await;
    assert!(
        r.contains("Content-Type: text/html") && r.ends_with("<p>portal</p>"),
        "{r}"
    );
    let r = http_get(f.addr, "/assets/app.js").await;
    assert!(r.contains("Content-Type: text/javascript"), "{r}");
    for p in ["/missing", "/../flock.toml", "/assets/../../flock.toml"] {
        let r = http_get(f.addr, p).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{p}: {r}");
    }
    let r = http_get(f.addr, "/device").await;
    assert!(r.starts_with("HTTP/1.1 426"), "{r}");
}

#[test]
fn malformed_config_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flock.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nregistry = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flock"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:12", config.display())), "{err}");
}
