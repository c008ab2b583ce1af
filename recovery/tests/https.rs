//! `intrust-recovery install https://…` against a TLS server on 127.0.0.1
//! run by the test (rustls on aws-lc-rs, certificates made here with
//! rcgen): a good download installs; a wrong CA, an error status, a
//! truncated or malformed response are refused with a clear error and the
//! active slot untouched (and for errors before the body: nothing written).
//! Traffic stays on loopback; every socket has a timeout.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use intrust_recovery::boot::{BootState, Slot};
use intrust_recovery::bootenv;
use intrust_recovery::bundle::{self, ImageSource, Part, SigningKey};
use intrust_recovery::config::Config;
use intrust_recovery::env::Env;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

const ROOT_LEN: usize = 512 * 1024;
const KERN_LEN: usize = 32 * 1024;
const ENV_SIZE: usize = 0x4000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn pki() -> Pki {
    pki_named("intrust test update CA")
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it.
struct Pki {
    ca_pem: String,
    server: Arc<ServerConfig>,
}

fn pki_named(ca_name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

/// What the server sends after reading the request head.
struct Reply {
    bytes: Vec<u8>,
    /// End with TLS close_notify (a clean close) or just drop the socket.
    close_notify: bool,
}

/// Serves one connection; the thread returns the request head it read
/// (or why the connection failed).
fn serve_once(tls: Arc<ServerConfig>, reply: Reply) -> (u16, JoinHandle<Result<String, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .and_then(|()| sock.set_write_timeout(Some(Duration::from_secs(20))))
            .map_err(|e| e.to_string())?;
        let conn = ServerConnection::new(tls).map_err(|e| e.to_string())?;
        let mut stream = BufReader::new(StreamOwned::new(conn, sock));
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = stream.read_line(&mut line).map_err(|e| e.to_string())?;
            if n == 0 || head.len() > 16 * 1024 {
                return Err(format!("request head ended early: {head:?}"));
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let stream = stream.get_mut();
        stream.write_all(&reply.bytes).map_err(|e| e.to_string())?;
        if reply.close_notify {
            stream.conn.send_close_notify();
        }
        stream.flush().map_err(|e| e.to_string())?;
        Ok(head)
    });
    (port, handle)
}

/// Slot files, env and config in a temp dir; booted from A.
struct Rig {
    dir: tempfile::TempDir,
    config_path: PathBuf,
}

impl Rig {
    fn new(ca_pem: Option<&str>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("a-root"), vec![0xaa; ROOT_LEN]).unwrap();
        std::fs::write(p("a-kern"), vec![0xab; KERN_LEN]).unwrap();
        std::fs::write(p("b-root"), vec![0; ROOT_LEN]).unwrap();
        std::fs::write(p("b-kern"), vec![0; KERN_LEN]).unwrap();
        std::fs::create_dir(p("data")).unwrap();
        std::fs::write(p("uboot.env"), vec![0; ENV_SIZE]).unwrap();
        std::fs::write(
            p("fw_env.config"),
            format!("{} 0x0 {ENV_SIZE:#x}\n", p("uboot.env").display()),
        )
        .unwrap();
        let ca_line = match ca_pem {
            Some(pem) => {
                std::fs::write(p("ca.pem"), pem).unwrap();
                format!("update_ca = \"{}\"\n", p("ca.pem").display())
            }
            None => String::new(),
        };
        let key = std::fs::read_to_string(fixture("test-key.pub")).unwrap();
        let config = format!(
            r#"board = "sim"
trusted_keys = ["{key}"]
data = "{data}"
booted_slot = "A"
{ca_line}
[slots.A]
rootfs = {{ device = "{ar}" }}
kernel = {{ device = "{ak}" }}

[slots.B]
rootfs = {{ device = "{br}" }}
kernel = {{ device = "{bk}" }}

[bootloader]
kind = "uboot"
fw_env_config = "{fw}"
"#,
            key = key.trim(),
            data = p("data").display(),
            ar = p("a-root").display(),
            ak = p("a-kern").display(),
            br = p("b-root").display(),
            bk = p("b-kern").display(),
            fw = p("fw_env.config").display(),
        );
        let config_path = p("recovery.toml");
        std::fs::write(&config_path, config).unwrap();
        let rig = Rig { dir, config_path };
        let mut env = bootenv::open(&rig.config().bootloader).unwrap();
        let mut vars = Env::new();
        BootState::default().apply_to(&mut vars);
        env.write(&vars).unwrap();
        rig
    }

    fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    /// Everything but B: what an install may never change.
    fn active(&self) -> Vec<Vec<u8>> {
        vec![self.read("a-root"), self.read("a-kern")]
    }

    fn everything(&self) -> Vec<Vec<u8>> {
        let mut all = self.active();
        all.extend([
            self.read("b-root"),
            self.read("b-kern"),
            self.read("uboot.env"),
        ]);
        all
    }

    fn boot_state(&self) -> BootState {
        let mut env = bootenv::open(&self.config().bootloader).unwrap();
        BootState::from_env(&env.read().unwrap())
    }

    fn install(&self, url: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_intrust-recovery"))
            .args(["install", "--config"])
            .arg(&self.config_path)
            .arg(url)
            .output()
            .unwrap()
    }
}

fn source(part: Part, data: Vec<u8>) -> ImageSource<'static> {
    ImageSource {
        part,
        open: Box::new(move || {
            Ok(Box::new(std::io::Cursor::new(data.clone())) as Box<dyn std::io::Read>)
        }),
    }
}

fn rootfs() -> Vec<u8> {
    (0..ROOT_LEN - 1000).map(|i| (i * 7 % 251) as u8).collect()
}

fn bundle() -> Vec<u8> {
    let key = SigningKey::from_pkcs8(&std::fs::read(fixture("test-key.pk8")).unwrap()).unwrap();
    let mut out = Vec::new();
    bundle::create(
        &key,
        "3.1",
        "sim",
        &mut [
            source(Part::Rootfs, rootfs()),
            source(Part::Kernel, vec![0x6b; 3000]),
        ],
        &mut out,
    )
    .unwrap();
    out
}

fn ok_with(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\n{headers}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

fn content_length(body: &[u8]) -> Vec<u8> {
    ok_with(&format!("Content-Length: {}\r\n", body.len()), body)
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    // Uneven chunk sizes so chunk edges fall anywhere in TLS records.
    for (i, chunk) in body.chunks(7919).enumerate() {
        write!(
            wire,
            "{:x}{}\r\n",
            chunk.len(),
            if i == 1 { ";x=y" } else { "" }
        )
        .unwrap();
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
    ok_with("Transfer-Encoding: chunked\r\n", &wire)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_installed(rig: &Rig, out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "installed 3.1 into slot B\n"
    );
    assert_eq!(&rig.read("b-root")[..ROOT_LEN - 1000], &rootfs()[..]);
    assert_eq!(&rig.read("b-kern")[..3000], &[0x6b; 3000][..]);
    assert_eq!(rig.boot_state().primary(), Slot::B);
}

#[test]
fn installs_from_https_with_content_length() {
    let pki = pki();
    let rig = Rig::new(Some(&pki.ca_pem));
    let active = rig.active();
    let (port, server) = serve_once(
        pki.server.clone(),
        Reply {
            bytes: content_length(&bundle()),
            close_notify: true,
        },
    );
    let out = rig.install(&format!("https://127.0.0.1:{port}/rpi/3.1.bundle?x=1"));
    assert_installed(&rig, &out);
    assert_eq!(rig.active(), active);
    let head = server.join().unwrap().unwrap();
    assert!(
        head.starts_with("GET /rpi/3.1.bundle?x=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
}

#[test]
fn installs_from_https_with_chunked_encoding() {
    let pki = pki();
    let rig = Rig::new(Some(&pki.ca_pem));
    let (port, server) = serve_once(
        pki.server.clone(),
        Reply {
            bytes: chunked(&bundle()),
            close_notify: true,
        },
    );
    let out = rig.install(&format!("https://127.0.0.1:{port}/b"));
    assert_installed(&rig, &out);
    server.join().unwrap().unwrap();
}

#[test]
fn wrong_ca_is_a_tls_error_and_nothing_is_written() {
    let served = pki();
    let other = pki_named("some other CA");
    let rig = Rig::new(Some(&other.ca_pem));
    let before = rig.everything();
    let (port, server) = serve_once(
        served.server.clone(),
        Reply {
            bytes: content_length(&bundle()),
            close_notify: true,
        },
    );
    let out = rig.install(&format!("https://127.0.0.1:{port}/b"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("TLS with 127.0.0.1 failed") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(err.contains("update_ca"), "{err}");
    assert_eq!(rig.everything(), before);
    // The server saw the handshake fail.
    assert!(server.join().unwrap().is_err());
}

#[test]
fn error_status_is_named_and_nothing_is_written() {
    let pki = pki();
    let rig = Rig::new(Some(&pki.ca_pem));
    let before = rig.everything();
    let (port, server) = serve_once(
        pki.server.clone(),
        Reply {
            bytes: b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot here\n".to_vec(),
            close_notify: true,
        },
    );
    let out = rig.install(&format!("https://127.0.0.1:{port}/missing.bundle"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("answered 404 Not Found") && err.contains("/missing.bundle"),
        "{err}"
    );
    assert_eq!(rig.everything(), before);
    server.join().unwrap().unwrap();

    let (port, server) = serve_once(
        pki.server.clone(),
        Reply {
            bytes: b"HTTP/1.1 301 Moved\r\nLocation: https://elsewhere/b\r\n\r\n".to_vec(),
            close_notify: true,
        },
    );
    let err = stderr(&rig.install(&format!("https://127.0.0.1:{port}/b")));
    assert!(
        err.contains("redirects") && err.contains("https://elsewhere/b"),
        "{err}"
    );
    assert_eq!(rig.everything(), before);
    server.join().unwrap().unwrap();
}

#[test]
fn truncated_body_is_rejected_and_the_active_slot_untouched() {
    let pki = pki();
    let bundle = bundle();
    // Cut inside the payload (after the signed head), once with a clean
    // TLS close and once without; then a chunked body cut inside a chunk.
    let cut = &bundle[..bundle.len() / 2];
    let mut short = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        bundle.len()
    )
    .into_bytes();
    short.extend_from_slice(cut);
    let chunked_cut = {
        let full = chunked(&bundle);
        full[..full.len() / 2].to_vec()
    };
    for (bytes, close_notify) in [(short.clone(), true), (short, false), (chunked_cut, true)] {
        let rig = Rig::new(Some(&pki.ca_pem));
        let active = rig.active();
        let (port, server) = serve_once(
            pki.server.clone(),
            Reply {
                bytes,
                close_notify,
            },
        );
        let out = rig.install(&format!("https://127.0.0.1:{port}/b"));
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("download truncated"), "{err}");
        assert!(err.contains("slot A untouched, not activated"), "{err}");
        assert_eq!(rig.active(), active);
        assert_eq!(rig.boot_state().primary(), Slot::A);
        assert_eq!(
            rig.boot_state().tries_left(Slot::B),
            0,
            "B stays marked bad"
        );
        server.join().unwrap().unwrap();
    }
}

#[test]
fn malformed_responses_are_clear_errors_and_nothing_is_written() {
    let pki = pki();
    let rig = Rig::new(Some(&pki.ca_pem));
    let before = rig.everything();
    for (bytes, want) in [
        (&b"HTTP/1.1 OK\r\n\r\n"[..], "status line"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
            "Content-Length \"lots\" is not a number",
        ),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "has no colon"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "ambiguous",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
            "closed in the response head",
        ),
    ] {
        let (port, server) = serve_once(
            pki.server.clone(),
            Reply {
                bytes: bytes.to_vec(),
                close_notify: true,
            },
        );
        let out = rig.install(&format!("https://127.0.0.1:{port}/b"));
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("malformed response from 127.0.0.1") && err.contains(want),
            "{want}: {err}"
        );
        assert_eq!(rig.everything(), before);
        server.join().unwrap().unwrap();
    }
    // A header line over the bound.
    let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(20_000)).into_bytes();
    let (port, server) = serve_once(
        pki.server.clone(),
        Reply {
            bytes: huge,
            close_notify: true,
        },
    );
    let err = stderr(&rig.install(&format!("https://127.0.0.1:{port}/b")));
    assert!(err.contains("longer than"), "{err}");
    assert_eq!(rig.everything(), before);
    // The client stops reading; the server may or may not finish writing.
    let _ = server.join().unwrap();
}

#[test]
fn plain_http_and_missing_trust_are_refused_before_connecting() {
    let pki = pki();
    let rig = Rig::new(Some(&pki.ca_pem));
    let before = rig.everything();
    // Nothing listens there: a connection attempt would show as another error.
    let err = stderr(&rig.install("http://127.0.0.1:9/b"));
    assert!(err.contains("plain http:// is refused"), "{err}");
    let err = stderr(&rig.install("ftp://127.0.0.1:9/b"));
    assert!(err.contains("only https:// URLs"), "{err}");
    assert_eq!(rig.everything(), before);

    let no_ca = Rig::new(None);
    let err = stderr(&no_ca.install("https://127.0.0.1:9/b"));
    assert!(err.contains("needs `update_ca`"), "{err}");

    let bad_ca = Rig::new(Some("not a certificate\n"));
    let err = stderr(&bad_ca.install("https://127.0.0.1:9/b"));
    assert!(
        err.contains("update_ca") && err.contains("no PEM certificates"),
        "{err}"
    );
}

#[test]
fn connection_refused_is_a_clear_error() {
    let pki = pki();
    let rig = Rig::new(Some(&pki.ca_pem));
    // A port that was just free: bind, note, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = stderr(&rig.install(&format!("https://127.0.0.1:{port}/b")));
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1 port {port}")),
        "{err}"
    );
}
