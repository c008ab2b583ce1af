//! A real coturn (`turnserver`, Debian's `coturn`) for tests, in the
//! `use-auth-secret` (TURN REST API) mode flock mints credentials for:
//! started on a chosen address (optionally inside a network namespace),
//! ready once it answers a STUN Binding request, killed when dropped.
//! [`rest_credentials`] computes what flock's `turn` module computes, so a
//! test can hand str0m credentials without a flock.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flock_proto::IceServer;

/// How long coturn may take to answer its first STUN request.
const READY: Duration = Duration::from_secs(10);

/// Where and how to start coturn.
#[derive(Debug, Clone)]
pub struct CoturnOpts {
    /// Listening address (UDP and TCP).
    pub listen: IpAddr,
    /// Listening port; 0 picks a free one.
    pub port: u16,
    /// More addresses to listen on (same port), e.g. a second STUN
    /// destination to see whether a NAT maps per destination.
    pub also_listen: Vec<IpAddr>,
    /// Address relayed allocations are made on.
    pub relay: IpAddr,
    /// Relay port range (inclusive); `None`: coturn's default 49152–65535.
    pub relay_ports: Option<(u16, u16)>,
    /// Network namespace (`ip netns` name) to run in; `None`: the test's.
    pub netns: Option<String>,
    /// Peer addresses coturn refuses to relay to (`--denied-peer-ip`,
    /// `IP` or `FIRST-LAST`), as production servers deny private ranges.
    pub denied_peers: Vec<String>,
    /// `static-auth-secret`, the same as flock's `[turn] secret`.
    pub secret: String,
    pub realm: String,
}

impl CoturnOpts {
    /// On 127.0.0.1 with a free port; loopback peers allowed.
    pub fn loopback() -> CoturnOpts {
        CoturnOpts::on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// On `ip` (listening and relaying), a free port, no namespace.
    pub fn on(ip: IpAddr) -> CoturnOpts {
        CoturnOpts {
            listen: ip,
            port: 0,
            also_listen: Vec::new(),
            relay: ip,
            relay_ports: None,
            netns: None,
            denied_peers: Vec::new(),
            secret: "intrustd-test-turn-secret".into(),
            realm: "intrustd.test".into(),
        }
    }
}

/// A running coturn, killed when dropped.
pub struct Coturn {
    child: Child,
    /// Where it listens for STUN/TURN (UDP).
    pub addr: SocketAddr,
    secret: String,
    dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `turnserver` on PATH, or a panic saying how to get it.
pub fn turnserver_bin() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("turnserver"))
            .find(|f| f.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`turnserver` is not installed: it is in Debian's `coturn` package, which \
             `cargo xtask test` installs (or: apt-get install coturn)"
        )
    })
}

impl Coturn {
    /// Starts coturn and waits (bounded) until it answers STUN.
    pub fn start(opts: CoturnOpts) -> Coturn {
        let bin = turnserver_bin();
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = if opts.port == 0 {
            in_netns(opts.netns.as_deref(), move || free_port(opts.listen))
        } else {
            opts.port
        };
        let addr = SocketAddr::new(opts.listen, port);
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("-n") // no config file
            .arg(format!("--listening-ip={}", opts.listen))
            .args(
                opts.also_listen
                    .iter()
                    .map(|ip| format!("--listening-ip={ip}")),
            )
            .arg(format!("--listening-port={port}"))
            .arg(format!("--relay-ip={}", opts.relay))
            .arg("--use-auth-secret")
            .arg(format!("--static-auth-secret={}", opts.secret))
            .arg(format!("--realm={}", opts.realm))
            .args(["--fingerprint", "--no-tls", "--no-dtls", "--no-cli"])
            // A file, not stdout: coturn buffers stdout, which is lost
            // when it is killed.
            .arg(format!(
                "--log-file={}",
                dir.path().join("turnserver.log").display()
            ))
            .args(["--simple-log", "--verbose"])
            .arg(format!(
                "--pidfile={}",
                dir.path().join("turnserver.pid").display()
            ))
            .arg(format!("--userdb={}", dir.path().join("turndb").display()));
        if let Some((min, max)) = opts.relay_ports {
            cmd.arg(format!("--min-port={min}"))
                .arg(format!("--max-port={max}"));
        }
        for range in &opts.denied_peers {
            cmd.arg(format!("--denied-peer-ip={range}"));
        }
        if opts.listen.is_loopback() || opts.relay.is_loopback() {
            cmd.arg("--allow-loopback-peers");
        }
        let out = std::fs::File::create(dir.path().join("turnserver.out")).expect("output file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("output file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut coturn = Coturn {
            child,
            addr,
            secret: opts.secret,
            dir,
        };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = coturn.child.try_wait() {
                panic!("turnserver exited ({status}) at start:\n{}", coturn.log());
            }
            let ready = in_netns(opts.netns.as_deref(), move || {
                stun_binding(addr, Duration::from_millis(200)).is_ok()
            });
            if ready {
                return coturn;
            }
            assert!(
                t0.elapsed() < READY,
                "turnserver did not answer STUN on {addr} within {READY:?}:\n{}",
                coturn.log()
            );
        }
    }

    /// `stun:IP:PORT`
    pub fn stun_url(&self) -> String {
        format!("stun:{}", self.addr)
    }

    /// `turn:IP:PORT?transport=udp`
    pub fn turn_url(&self) -> String {
        format!("turn:{}?transport=udp", self.addr)
    }

    /// REST credentials valid for `ttl` from now.
    pub fn credentials(&self, ttl: Duration) -> (String, String) {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            + ttl.as_secs();
        let random = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos()
            .to_be_bytes();
        rest_credentials(self.secret.as_bytes(), expiry, &random)
    }

    /// What flock would hand out for this server: STUN, and TURN with
    /// credentials valid for `ttl`.
    pub fn ice_servers(&self, ttl: Duration) -> Vec<IceServer> {
        let (username, credential) = self.credentials(ttl);
        vec![
            IceServer {
                urls: vec![self.stun_url()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![self.turn_url()],
                username: Some(username),
                credential: Some(credential),
            },
        ]
    }

    /// The `[turn]` and `stun_urls` lines of a flock config for this server.
    pub fn flock_config(&self, secret_ttl_secs: u64) -> String {
        format!(
            "stun_urls = [\"{}\"]\n[turn]\nurls = [\"{}\"]\nsecret = \"{}\"\nttl_secs = {secret_ttl_secs}\n",
            self.stun_url(),
            self.turn_url(),
            self.secret
        )
    }

    /// Everything coturn has logged so far (for failure messages).
    pub fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        read("turnserver.out") + &read("turnserver.log")
    }
}

/// coturn's `use-auth-secret` credentials: username `EXPIRY:HEX(random)`,
/// credential `base64(HMAC-SHA1(secret, username))` (flock's own code).
pub fn rest_credentials(secret: &[u8], expiry_unix: u64, random: &[u8]) -> (String, String) {
    flock_proto::turn::credentials(secret, expiry_unix, random)
}

/// Sends one STUN Binding request (RFC 5389) from a fresh socket and
/// returns the XOR-MAPPED-ADDRESS of the answer: the address `server` saw
/// the request come from (behind a NAT: the mapping).
pub fn stun_binding(server: SocketAddr, wait: Duration) -> io::Result<SocketAddr> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(any)?;
    stun_binding_from(&socket, server, wait)
}

/// [`stun_binding`] from a given socket (to see whether a NAT keeps one
/// mapping for one socket across destinations).
pub fn stun_binding_from(
    socket: &UdpSocket,
    server: SocketAddr,
    wait: Duration,
) -> io::Result<SocketAddr> {
    const COOKIE: u32 = 0x2112_a442;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let txid: [u8; 12] = (nanos ^ u128::from(socket.local_addr()?.port())).to_be_bytes()[4..]
        .try_into()
        .expect("12 bytes");
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&0x0001u16.to_be_bytes()); // Binding request
    req.extend_from_slice(&0u16.to_be_bytes());
    req.extend_from_slice(&COOKIE.to_be_bytes());
    req.extend_from_slice(&txid);
    socket.send_to(&req, server)?;
    socket.set_read_timeout(Some(wait))?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        let m = &buf[..n];
        if from != server || n < 20 || m[0..2] != [0x01, 0x01] || m[8..20] != txid {
            continue; // not the Binding success response to this request
        }
        let mut attrs = &m[20..];
        while attrs.len() >= 4 {
            let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
            let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
            let Some(value) = attrs.get(4..4 + len) else {
                break;
            };
            // XOR-MAPPED-ADDRESS, IPv4
            if kind == 0x0020 && len == 8 && value[1] == 0x01 {
                let port = u16::from_be_bytes([value[2], value[3]]) ^ (COOKIE >> 16) as u16;
                let ip = u32::from_be_bytes([value[4], value[5], value[6], value[7]]) ^ COOKIE;
                return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port));
            }
            attrs = &attrs[(4 + len).div_ceil(4) * 4..];
        }
        return Err(io::Error::other(
            "STUN answer without an IPv4 XOR-MAPPED-ADDRESS",
        ));
    }
}

/// Runs `f` on a thread inside namespace `ns`, or here when `None`.
fn in_netns<T: Send + 'static>(ns: Option<&str>, f: impl FnOnce() -> T + Send + 'static) -> T {
    match ns {
        None => f(),
        Some(ns) => {
            let ns = ns.to_owned();
            std::thread::spawn(move || {
                super::netns::enter(&ns)
                    .unwrap_or_else(|e| panic!("cannot enter namespace {ns}: {e}"));
                f()
            })
            .join()
            .expect("thread in namespace")
        }
    }
}

/// A port free for both UDP and TCP on `ip` (coturn listens on both).
fn free_port(ip: IpAddr) -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind a UDP socket");
        let port = udp.local_addr().expect("local address").port();
        if std::net::TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}
