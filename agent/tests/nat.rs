//! NAT traversal end to end, on a small internet of network namespaces
//! this test builds (veth pairs, nftables NATs): the real `flock` and a
//! real coturn on the "internet", the real `intrustd` behind one NAT, a
//! Rust "browser" (the str0m engine's offering role, on a thread that
//! entered its namespace) behind another. Each case first checks that the
//! NATs map as intended (STUN from one socket to two addresses), then
//! connects through flock's signalling with flock's ICE servers, fetches a
//! page from an app through the tunnel and asserts the candidate pair type
//! that both the browser (`Session::stats`) and the device (`intrustctl
//! peers --json`) report.
//!
//! ```text
//!            wan (the internet): flock 100.64.0.1:8080, coturn 100.64.0.2:3478
//!            (and .3:3478), default route into `void`, which drops all
//!            /site-dev 100.64.1.1                        \site-br 100.64.2.1
//!   dev-nat: wan 100.64.1.10                   br-nat: wan 100.64.2.20
//!            lan 10.1.0.1                              lan 10.2.0.1
//!   dev:     eth0 10.1.0.2 (intrustd)          br:     eth0 10.2.0.2 (browser)
//! ```
//!
//! | case                      | NATs                                    | pair                 |
//! |---------------------------|-----------------------------------------|----------------------|
//! | routed                    | none (`wan` routes the LANs)            | host                 |
//! | cone                      | `masquerade`                            | srflx (or prflx)     |
//! | symmetric                 | `masquerade random,fully-random`        | relay                |
//! | UDP dropped between sites | `masquerade`, `wan` drops forwarded UDP | relay                |
//! | no ICE servers            | `masquerade`                            | none: fails in 20 s  |
//!
//! The NAT routers also drop unsolicited packets from `wan` before
//! conntrack keeps them, as a home router's firewall does (see
//! [`Internet::build`] for why hole punching needs that on Linux).
//!
//! Needs root (namespaces, nft); without it every case prints why it is
//! skipped and passes. `nft` and `turnserver` missing is a failure naming
//! the package (`cargo xtask test` installs both). Every wait is bounded;
//! namespaces are deleted (and what runs in them killed) even on panic.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flock_proto::browser::{self, BrowserToFlock, FlockToBrowser};
use flock_proto::{DeviceName, IceServer};
use futures_util::{SinkExt, StreamExt};
use intrust_agent::control::{ControlClient, PeerSession};
use intrust_agent::peer::engine::CandidateType;
use intrust_agent::peer::str0m_engine::{Str0mConfig, Str0mEngine};
use intrust_agent::peer::stream::ChannelStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::coturn::{Coturn, CoturnOpts};
use common::netns::{self, Netns};

/// Signalling, ICE, DTLS and the control channel opening.
const CONNECT: Duration = Duration::from_secs(20);
/// Everything the browser does in one case (connect, a request, the pair
/// type on both sides).
const RUN: Duration = Duration::from_secs(45);
/// Starting a process and seeing it ready (flock's first line, intrustd
/// registered at flock).
const START: Duration = Duration::from_secs(15);

const FLOCK_IP: &str = "100.64.0.1";
const FLOCK_PORT: u16 = 8080;
const TURN_IP: &str = "100.64.0.2";
const TURN_PORT: u16 = 3478;
/// coturn answers STUN here too: a second destination for the mapping check.
const STUN2_IP: &str = "100.64.0.3";
const DEV_IP: &str = "10.1.0.2";
const BR_IP: &str = "10.2.0.2";
const DEVICE: &str = "nat-box";
const SECRET: &str = "nat-test-turn-secret";

/// How each site (device, browser) reaches the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    /// Plain routing, no translation: the LAN addresses are reachable
    /// from the other site.
    Routed,
    /// `masquerade`: Linux keeps a socket's source port when it is free
    /// and uses one mapping per socket whatever the destination
    /// (endpoint-independent mapping); inbound packets pass only on a
    /// conntrack entry (address- and port-dependent filtering), which the
    /// two sides' simultaneous checks create: hole punching works.
    Cone,
    /// `masquerade random,fully-random`: a new random port for every
    /// destination (endpoint-dependent mapping), so the mapping coturn's
    /// STUN saw is useless to the other side.
    Symmetric,
}

/// The namespaces of one case. Dropping it deletes them (processes in
/// them are killed first).
struct Internet {
    wan: Netns,
    void: Netns,
    dev_nat: Netns,
    dev: Netns,
    br_nat: Netns,
    br: Netns,
}

impl Internet {
    /// Builds the topology in the module docs. `udp_between_sites: false`
    /// drops UDP that the internet would forward from one site to the
    /// other (the sites still reach flock and coturn, which are local to
    /// `wan`, not forwarded).
    fn build(nat: Nat, udp_between_sites: bool) -> Internet {
        let ns = |tag| Netns::new(tag).unwrap_or_else(|e| panic!("namespace {tag}: {e}"));
        let net = Internet {
            wan: ns("wan"),
            void: ns("void"),
            dev_nat: ns("devnat"),
            dev: ns("dev"),
            br_nat: ns("brnat"),
            br: ns("br"),
        };
        let wan = &net.wan;
        wan.ip(&["addr", "add", &format!("{FLOCK_IP}/32"), "dev", "lo"]);
        wan.ip(&["addr", "add", &format!("{TURN_IP}/32"), "dev", "lo"]);
        wan.ip(&["addr", "add", &format!("{STUN2_IP}/32"), "dev", "lo"]);
        wan.sysctl("net.ipv4.ip_forward", "1");
        // The internet drops what it has no route for (the LANs' private
        // addresses) silently: a default route into `void`, which drops
        // every IP packet. Without one, coturn's relayed send to a host
        // candidate fails with ENETUNREACH and coturn ends that whole
        // allocation.
        netns::veth(wan, "void", &net.void, "eth0");
        wan.ip(&["addr", "add", "100.64.255.1/30", "dev", "void"]);
        net.void
            .ip(&["addr", "add", "100.64.255.2/30", "dev", "eth0"]);
        wan.ip(&["route", "add", "default", "via", "100.64.255.2"]);
        net.void.nft(
            "table ip void {\n  chain prerouting {\n    \
             type filter hook prerouting priority raw;\n    \
             drop\n  }\n}\n",
        );
        for (router, host, site, public, lan, host_ip) in [
            (&net.dev_nat, &net.dev, "1", "10", "10.1.0", DEV_IP),
            (&net.br_nat, &net.br, "2", "20", "10.2.0", BR_IP),
        ] {
            let uplink = if site == "1" { "site-dev" } else { "site-br" };
            netns::veth(wan, uplink, router, "wan");
            wan.ip(&["addr", "add", &format!("100.64.{site}.1/24"), "dev", uplink]);
            router.ip(&[
                "addr",
                "add",
                &format!("100.64.{site}.{public}/24"),
                "dev",
                "wan",
            ]);
            router.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("100.64.{site}.1"),
            ]);
            netns::veth(router, "lan", host, "eth0");
            router.ip(&["addr", "add", &format!("{lan}.1/24"), "dev", "lan"]);
            host.ip(&["addr", "add", &format!("{host_ip}/24"), "dev", "eth0"]);
            host.ip(&["route", "add", "default", "via", &format!("{lan}.1")]);
            router.sysctl("net.ipv4.ip_forward", "1");
            match nat {
                Nat::Routed => wan.ip(&[
                    "route",
                    "add",
                    &format!("{lan}.0/24"),
                    "via",
                    &format!("100.64.{site}.{public}"),
                ]),
                Nat::Cone | Nat::Symmetric => {
                    let how = if nat == Nat::Symmetric {
                        "masquerade random,fully-random"
                    } else {
                        "masquerade"
                    };
                    // Unsolicited packets from the internet are dropped in
                    // `input`, before conntrack confirms an entry for them,
                    // as a home router's firewall does. Without it the
                    // other side's first check (racing ours) would leave an
                    // entry holding our mapping's tuple, and our own
                    // outbound packet would then get another port: both
                    // NATs remap and no check ever gets through.
                    router.nft(&format!(
                        "table ip nat {{\n  chain postrouting {{\n    \
                         type nat hook postrouting priority srcnat;\n    \
                         oifname \"wan\" {how}\n  }}\n}}\n\
                         table inet firewall {{\n  chain input {{\n    \
                         type filter hook input priority filter;\n    \
                         iifname \"wan\" ct state new drop\n  }}\n}}\n"
                    ));
                }
            }
        }
        if !udp_between_sites {
            wan.nft(
                "table inet sites {\n  chain forward {\n    \
                 type filter hook forward priority filter;\n    \
                 meta l4proto udp drop\n  }\n}\n",
            );
        }
        net
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// flock in `wan` on FLOCK_IP:FLOCK_PORT, `extra` appended to its config.
fn start_flock(wan: &Netns, dir: &Path, extra: &str) -> Proc {
    let config = dir.join("flock.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{FLOCK_IP}:{FLOCK_PORT}\"\nregistry = \"{}\"\nweb_root = \"{}\"\n{extra}",
            dir.join("registry.json").display(),
            dir.join("web").display()
        ),
    )
    .unwrap();
    let mut child = wan
        .command(common::flock_bin())
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("flock.stderr")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(START).unwrap_or_else(|_| {
        panic!(
            "flock did not start in time: {}",
            std::fs::read_to_string(dir.join("flock.stderr")).unwrap_or_default()
        )
    });
    assert!(
        line.starts_with("flock listening on "),
        "unexpected first line {line:?}: {}",
        std::fs::read_to_string(dir.join("flock.stderr")).unwrap_or_default()
    );
    proc
}

/// intrustd in `dev`: registered at flock as DEVICE, sessions bound to
/// DEV_IP, one app `hello` on a Unix socket (Unix sockets are not per
/// network namespace, so the app runs in the test's own).
fn start_intrustd(dev: &Netns, dir: &Path, app: &Path) -> Proc {
    let d = dir.display();
    let config = dir.join("intrustd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/control.sock\"\n\
             sim_socket = \"{d}/sim.sock\"\nboard = \"sim\"\n\
             [rendezvous]\nflock_url = \"ws://{FLOCK_IP}:{FLOCK_PORT}/device\"\nname = \"{DEVICE}\"\n\
             [peer]\nbind = \"{DEV_IP}\"\n[peer.apps]\nhello = \"unix:{}\"\n",
            app.display()
        ),
    )
    .unwrap();
    let child = dev
        .command(env!("CARGO_BIN_EXE_intrustd"))
        .arg("--config")
        .arg(&config)
        .arg("--insecure-open")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("intrustd.stderr")).unwrap())
        .spawn()
        .unwrap();
    Proc(child)
}

/// The app: every request on the Unix socket gets `hello from the app`.
async fn serve_app(path: PathBuf) {
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = b"hello from the app";
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
}

/// What one case saw.
#[derive(Debug)]
struct Outcome {
    /// The browser's selected pair (local, remote).
    browser: (CandidateType, CandidateType),
    /// The device's session, from `intrustctl peers --json`.
    device: PeerSession,
    /// From sending the offer to the control channel being open.
    connect: Duration,
}

/// What the browser did, for failure messages.
#[derive(Debug, Default)]
struct Trace {
    ice_servers: Vec<String>,
    sent: Vec<String>,
    received: Vec<String>,
}

/// The browser's side of one case: runs on a thread in `br`, so its
/// sockets (signalling, the session's UDP) are created there.
async fn browse(dir: PathBuf, trace: &mut Trace) -> Result<Outcome, String> {
    serve_app(dir.join("app.sock")).await;
    let control = dir.join("control.sock");
    wait_registered(&control).await?;

    let flock: SocketAddr = format!("{FLOCK_IP}:{FLOCK_PORT}").parse().unwrap();
    let tcp = timeout(START, tokio::net::TcpStream::connect(flock))
        .await
        .map_err(|_| format!("no TCP connection to flock at {flock} in time"))?
        .map_err(|e| format!("cannot reach flock at {flock}: {e}"))?;
    let (mut ws, _) = timeout(
        START,
        tokio_tungstenite::client_async(format!("ws://{flock}/signal"), tcp),
    )
    .await
    .map_err(|_| "no WebSocket handshake with flock in time".to_string())?
    .map_err(|e| format!("WebSocket handshake with flock: {e}"))?;
    let send = |m: BrowserToFlock| Message::Text(browser::encode(&m).unwrap().into());
    ws.send(send(BrowserToFlock::Connect {
        device: DeviceName::new(DEVICE).unwrap(),
    }))
    .await
    .map_err(|e| e.to_string())?;
    let ice_servers = match next_signal(&mut ws).await? {
        FlockToBrowser::Session { ice_servers, .. } => ice_servers,
        other => return Err(format!("expected a session from flock, got {other:?}")),
    };
    trace.ice_servers = ice_servers.iter().flat_map(|s| s.urls.clone()).collect();

    let engine = browser_engine(ice_servers);
    let pending = engine.create_offer("control").map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    ws.send(send(BrowserToFlock::Offer {
        sdp: pending.offer_sdp().to_owned(),
    }))
    .await
    .map_err(|e| e.to_string())?;
    // Device candidates may come before the answer: keep them for later.
    let mut early = Vec::new();
    let answer = loop {
        match next_signal(&mut ws).await? {
            FlockToBrowser::Answer { sdp } => break sdp,
            FlockToBrowser::Candidate {
                candidate: Some(c), ..
            } => early.push(c),
            FlockToBrowser::Candidate {
                candidate: None, ..
            } => {}
            other => return Err(format!("expected an answer, got {other:?}")),
        }
    };
    let (accepted, control_channel) = pending.accept_answer(&answer).map_err(|e| e.to_string())?;
    let session = accepted.session.clone();
    for c in early {
        trace.received.push(c.clone());
        session
            .add_remote_candidate(&c)
            .map_err(|e| e.to_string())?;
    }
    let mut local = accepted.local_candidates;

    // Trickle both ways until the control channel is open.
    let opened = control_channel.open();
    tokio::pin!(opened);
    let deadline = tokio::time::sleep(CONNECT);
    tokio::pin!(deadline);
    let mut local_done = false;
    loop {
        tokio::select! {
            r = &mut opened => {
                r.map_err(|e| format!(
                    "not connected: the session ended after {:?} ({e}); browser stats {:?}",
                    t0.elapsed(),
                    session.stats()
                ))?;
                break;
            }
            () = &mut deadline => {
                return Err(format!(
                    "not connected within {CONNECT:?}: browser stats {:?}",
                    session.stats()
                ));
            }
            c = local.recv(), if !local_done => match c {
                Some(line) => {
                    trace.sent.push(line.clone());
                    ws.send(send(BrowserToFlock::Candidate {
                        candidate: Some(line),
                        sdp_mid: Some("0".into()),
                    }))
                    .await
                    .map_err(|e| e.to_string())?;
                }
                None => {
                    // End of candidates, as a browser says it.
                    local_done = true;
                    ws.send(send(BrowserToFlock::Candidate {
                        candidate: None,
                        sdp_mid: None,
                    }))
                    .await
                    .map_err(|e| e.to_string())?;
                }
            },
            m = next_signal(&mut ws) => match m? {
                FlockToBrowser::Candidate { candidate: Some(c), .. } => {
                    trace.received.push(c.clone());
                    session.add_remote_candidate(&c).map_err(|e| e.to_string())?;
                }
                FlockToBrowser::Candidate { candidate: None, .. } => {}
                other => return Err(format!("unexpected signalling {other:?}")),
            },
        }
    }
    let connect = t0.elapsed();

    // The tunnel works on this path.
    let io = session
        .open_channel("http/1.1 hello")
        .map_err(|e| e.to_string())?
        .open()
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = ChannelStream::new(io);
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: hello\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.ends_with(b"hello from the app") {
        let n = timeout(CONNECT, stream.read(&mut chunk))
            .await
            .map_err(|_| format!("no response through the tunnel: {got:?}"))?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("tunnel closed early: {got:?}"));
        }
        got.extend_from_slice(&chunk[..n]);
    }

    // str0m reports the selected pair with its stats (every second).
    let t1 = Instant::now();
    let browser = loop {
        if let Some(pair) = session.stats().pair {
            break pair;
        }
        if t1.elapsed() > START {
            return Err("the browser never reported a selected pair".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let device = device_pair(&control).await?;
    session.close();
    Ok(Outcome {
        browser,
        device,
        connect,
    })
}

/// The browser's engine with flock's ICE servers.
fn browser_engine(ice_servers: Vec<IceServer>) -> Str0mEngine {
    Str0mEngine::new(Str0mConfig {
        bind: BR_IP.parse().unwrap(),
        ice_servers,
        ..Str0mConfig::default()
    })
}

async fn next_signal<S>(ws: &mut S) -> Result<FlockToBrowser, String>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return browser::decode(t.as_str()).map_err(|e| e.to_string())
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return Err(format!("signalling ended: {other:?}")),
        }
    }
}

async fn wait_registered(control: &Path) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        if let Ok(mut c) = ControlClient::connect(control).await {
            if let Ok(Ok(s)) = timeout(START, c.status()).await {
                if s.rendezvous
                    .as_ref()
                    .is_some_and(|r| r.state == "registered")
                {
                    return Ok(());
                }
            }
        }
        if t0.elapsed() > START {
            return Err(format!(
                "intrustd did not register at flock within {START:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The device's one session once it names a pair, via the real CLI.
async fn device_pair(control: &Path) -> Result<PeerSession, String> {
    let t0 = Instant::now();
    loop {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_intrustctl"));
        cmd.arg("--socket").arg(control).args(["peers", "--json"]);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("intrustctl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            let sessions: Vec<PeerSession> =
                serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
            if let [s] = &sessions[..] {
                if s.connected && s.pair != "unknown" {
                    return Ok(s.clone());
                }
            }
        }
        if t0.elapsed() > START {
            return Err(format!(
                "the device named no pair within {START:?}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One case: topology, coturn + flock (with or without ICE servers),
/// intrustd, then the browser on its own thread in `br`.
fn run(
    test: &str,
    nat: Nat,
    udp_between_sites: bool,
    ice: bool,
) -> Option<Result<Outcome, String>> {
    if netns::skip_without_netns(test) {
        return None;
    }
    netns::require_tool("nft", "nftables");
    let net = Internet::build(nat, udp_between_sites);
    let dir = tempfile::tempdir().unwrap();
    let coturn = ice.then(|| {
        Coturn::start(CoturnOpts {
            port: TURN_PORT,
            also_listen: vec![STUN2_IP.parse().unwrap()],
            // As in production: no relaying into private networks (the
            // LANs' host candidates get 403 on CreatePermission).
            denied_peers: vec!["10.0.0.0-10.255.255.255".into()],
            relay_ports: Some((50000, 50999)),
            netns: Some(net.wan.name().to_owned()),
            secret: SECRET.into(),
            ..CoturnOpts::on(TURN_IP.parse().unwrap())
        })
    });
    if coturn.is_some() {
        check_mappings(nat, &net);
    }
    let extra = coturn
        .as_ref()
        .map(|c| c.flock_config(600))
        .unwrap_or_default();
    let _flock = start_flock(&net.wan, dir.path(), &extra);
    let _intrustd = start_intrustd(&net.dev, dir.path(), &dir.path().join("app.sock"));

    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_owned();
    let _browser = net.br.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut trace = Trace::default();
        let r = rt.block_on(async {
            timeout(RUN, browse(path, &mut trace))
                .await
                .unwrap_or_else(|_| Err(format!("the browser did not finish within {RUN:?}")))
        });
        let _ = tx.send((r, trace));
    });
    let (result, trace) = rx
        .recv_timeout(RUN + Duration::from_secs(5))
        .unwrap_or_else(|e| {
            panic!(
                "{test}: no result from the browser thread ({e}; a panic there is printed above)"
            )
        });
    let result = result.map_err(|e| {
        format!(
            "{e}\nbrowser: {trace:#?}\n\
             --- dev-nat conntrack:\n{}\
             --- br-nat conntrack:\n{}\
             --- intrustd stderr:\n{}\n\
             --- coturn log (tail):\n{}",
            net.dev_nat.read_proc("net/nf_conntrack"),
            net.br_nat.read_proc("net/nf_conntrack"),
            std::fs::read_to_string(dir.path().join("intrustd.stderr")).unwrap_or_default(),
            coturn
                .as_ref()
                .map(|c| tail(&c.log(), 60))
                .unwrap_or_default()
        )
    });
    if let Ok(o) = &result {
        eprintln!(
            "{test}: connected in {:?}: browser pair {:?}, device pair {} ({:?} -> {:?})",
            o.connect,
            o.browser,
            o.device.pair,
            o.device.local_candidate,
            o.device.remote_candidate
        );
    }
    Some(result)
}

/// The NATs are what the case says they are: one socket on each LAN asks
/// coturn's two addresses for its mapping. Routed: no translation; cone:
/// one mapping, the public address with the socket's own port; symmetric:
/// a different port per destination.
fn check_mappings(nat: Nat, net: &Internet) {
    for (ns, ip, public) in [
        (&net.dev, DEV_IP, "100.64.1.10"),
        (&net.br, BR_IP, "100.64.2.20"),
    ] {
        let (local, a, b) = ns
            .spawn(move || {
                let socket = std::net::UdpSocket::bind((ip, 0)).unwrap();
                let ask = |to: &str| {
                    let to = SocketAddr::new(to.parse().unwrap(), TURN_PORT);
                    common::coturn::stun_binding_from(&socket, to, Duration::from_secs(2))
                        .unwrap_or_else(|e| panic!("STUN from {ip} to {to}: {e}"))
                };
                (socket.local_addr().unwrap(), ask(TURN_IP), ask(STUN2_IP))
            })
            .join()
            .expect("STUN probe");
        let public: std::net::IpAddr = public.parse().unwrap();
        let ok = match nat {
            Nat::Routed => a == local && b == local,
            Nat::Cone => a == b && a.ip() == public && a.port() == local.port(),
            Nat::Symmetric => a.ip() == public && b.ip() == public && a.port() != b.port(),
        };
        assert!(ok, "{nat:?} NAT: {local} was seen as {a} and {b}");
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn connected(test: &str, r: Option<Result<Outcome, String>>) -> Option<Outcome> {
    r.map(|r| r.unwrap_or_else(|e| panic!("{test}: {e}")))
}

fn pair_type(o: &Outcome) -> CandidateType {
    CandidateType::of_pair(o.browser.0, o.browser.1)
}

#[test]
fn routed_sites_connect_with_host_candidates() {
    let test = "routed_sites_connect_with_host_candidates";
    let Some(o) = connected(test, run(test, Nat::Routed, true, true)) else {
        return;
    };
    // Host pairs have the highest priority and work here.
    assert_eq!(pair_type(&o), CandidateType::Host, "{o:?}");
    assert_eq!(o.device.pair, "host", "{o:?}");
}

#[test]
fn cone_nats_connect_directly_via_stun() {
    let test = "cone_nats_connect_directly_via_stun";
    let Some(o) = connected(test, run(test, Nat::Cone, true, true)) else {
        return;
    };
    // Direct, but not on the LAN addresses: a server-reflexive candidate
    // (the mapping coturn's STUN saw), or peer-reflexive when a check
    // arrived from a mapping before its candidate was signalled (or the NAT
    // had to pick another port). Relay would mean the hole punching failed.
    let t = pair_type(&o);
    assert!(
        matches!(t, CandidateType::Srflx | CandidateType::Prflx),
        "browser pair {t:?}: {o:?}"
    );
    assert!(
        ["srflx", "prflx"].contains(&o.device.pair.as_str()),
        "device pair {}: {o:?}",
        o.device.pair
    );
}

#[test]
fn symmetric_nats_connect_through_turn() {
    let test = "symmetric_nats_connect_through_turn";
    let Some(o) = connected(test, run(test, Nat::Symmetric, true, true)) else {
        return;
    };
    assert_eq!(pair_type(&o), CandidateType::Relay, "{o:?}");
    assert_eq!(o.device.pair, "relay", "{o:?}");
}

#[test]
fn udp_dropped_between_sites_connects_through_turn() {
    let test = "udp_dropped_between_sites_connects_through_turn";
    let Some(o) = connected(test, run(test, Nat::Cone, false, true)) else {
        return;
    };
    assert_eq!(pair_type(&o), CandidateType::Relay, "{o:?}");
    assert_eq!(o.device.pair, "relay", "{o:?}");
}

/// The control case: without STUN or TURN, NATed sites have only their
/// LAN addresses to offer, which the other side cannot reach; the
/// connection fails within the bound with a clear error. (This also proves
/// the topology does not leak a route between the LANs.)
#[test]
fn without_ice_servers_nated_sites_do_not_connect() {
    let test = "without_ice_servers_nated_sites_do_not_connect";
    let Some(r) = run(test, Nat::Cone, true, false) else {
        return;
    };
    let e = r.expect_err("connected without ICE servers across two NATs");
    assert!(e.starts_with("not connected"), "{e}");
    eprintln!(
        "{test}: as expected: {}",
        e.lines().next().unwrap_or_default()
    );
}

/// The coturn launcher itself, on loopback (no root needed): it answers
/// STUN with the address it saw.
#[test]
fn coturn_answers_stun_on_loopback() {
    let coturn = Coturn::start(CoturnOpts::loopback());
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mapped =
        common::coturn::stun_binding_from(&socket, coturn.addr, Duration::from_secs(2)).unwrap();
    assert_eq!(mapped, socket.local_addr().unwrap(), "{}", coturn.log());
    let (user, credential) = coturn.credentials(Duration::from_secs(600));
    assert!(
        user.split(':').next().unwrap().parse::<u64>().is_ok(),
        "{user}"
    );
    assert_eq!(credential.len(), 28, "base64 of a 20-byte HMAC-SHA1");
}
