//! Fetching a bundle over HTTPS for `install https://…`: one HTTP/1.1 GET
//! over rustls (aws-lc-rs), its body handed out as a plain [`Read`] so the
//! bundle reader verifies header, signature and manifest before any payload
//! byte reaches a slot. Nothing is written to disk here: no temp file.
//!
//! Invariants: only `https://` (plain `http://` is refused); the server's
//! certificate must chain to a CA in the config's `update_ca` (no system
//! roots); only status 200 is accepted and redirects are not followed (the
//! error names the `Location`, so the operator puts the final URL in);
//! every line and the whole response head have a size bound; connecting and
//! each read have a timeout; a body that ends before its `Content-Length`,
//! inside a chunk, or (without either framing) without TLS `close_notify`
//! is an error, never a short `Ok(0)`.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::config::Config;

/// Longest status, header, chunk-size or trailer line.
pub const MAX_LINE_LEN: usize = 8 * 1024;
/// Longest response head (status line and all headers).
pub const MAX_HEAD_LEN: usize = 64 * 1024;
/// Most header (or trailer) lines in one response.
pub const MAX_HEADERS: usize = 100;
/// Interim (1xx) responses skipped before the real one.
const MAX_INTERIM: usize = 4;
/// Read buffer between TLS and the bundle reader.
const BUFFER_LEN: usize = 64 * 1024;

/// How long to wait for the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For each TCP connection attempt.
    pub connect: Duration,
    /// For each read or write (handshake, head and every body read): a
    /// slow but live download goes on, a silent server does not.
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(15),
            io: Duration::from_secs(60),
        }
    }
}

/// Why a download could not start. Nothing is written to any slot when
/// one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// `http://` (or another scheme) instead of `https://`.
    #[error("{url}: only https:// URLs are accepted ({reason})")]
    NotHttps {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The URL could not be parsed.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No `update_ca` in the config.
    #[error(
        "installing from a URL needs `update_ca` in the recovery config: a PEM file of the \
         CA certificates the update server's certificate chains to (system roots are not used)"
    )]
    NoTrust,
    /// The `update_ca` file is unusable.
    #[error("update_ca {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Dns {
        /// The host.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No address accepted a TCP connection.
    #[error("cannot connect to {host} port {port}: {source}")]
    Connect {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The last address's error.
        source: io::Error,
    },
    /// The TLS handshake failed (certificate, protocol, …).
    #[error("TLS with {host} failed: {reason}")]
    Tls {
        /// The host.
        host: String,
        /// rustls' reason, with a hint for certificate errors.
        reason: String,
    },
    /// The server went silent or the connection broke before the body.
    #[error("{host}: {during}: {source}")]
    Io {
        /// The host.
        host: String,
        /// What was being done.
        during: &'static str,
        /// The error (a timeout says how long we waited).
        source: io::Error,
    },
    /// Any status but 200 (and not a redirect).
    #[error("the update server answered {status} {reason} for {url}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// A 3xx answer: redirects are not followed.
    #[error(
        "the update server redirects {url} ({status}) to {location}; redirects are not \
         followed: use the final https:// URL"
    )]
    Redirect {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The `Location` header (or `?`).
        location: String,
    },
    /// The response head broke the HTTP/1.1 rules or our bounds.
    #[error("malformed response from {host}: {what}")]
    Malformed {
        /// The host.
        host: String,
        /// What was wrong.
        what: String,
    },
}

/// Whether a command-line argument is meant as a URL (`scheme://…`), so it
/// is parsed as one (and refused if not `https://`) instead of opened as a
/// file.
pub fn looks_like_url(arg: &str) -> bool {
    arg.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// A parsed `https://host[:port]/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    text: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (443 unless given).
    pub port: u16,
    /// Path and query, starting with `/`, fragment removed.
    pub target: String,
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Url {
    /// Parses `text`; refuses anything but `https://`, user info in the
    /// authority and characters that could not go into a request line.
    pub fn parse(text: &str) -> Result<Url, FetchError> {
        let bad = |reason: &str| FetchError::BadUrl {
            url: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected https://host/path"))?;
        if !scheme.eq_ignore_ascii_case("https") {
            let reason = if scheme.eq_ignore_ascii_case("http") {
                "plain http:// is refused: the download must be authenticated by TLS".to_owned()
            } else {
                format!("scheme {scheme:?} is not supported")
            };
            return Err(FetchError::NotHttps {
                url: text.to_owned(),
                reason,
            });
        }
        if let Some(c) = rest.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(bad(&format!("{c:?} is not allowed (percent-encode it)")));
        }
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let target = match target {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        if authority.contains('@') {
            return Err(bad("user names and passwords in URLs are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected :port after ]"))?,
                ),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 443,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(bad(&format!("port {p:?} is not a number in 1..=65535"))),
            },
        };
        Ok(Url {
            text: text.to_owned(),
            host: host.to_owned(),
            port,
            target,
        })
    }

    /// The `Host` header value.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A TLS client config trusting exactly the CA certificates in the PEM
/// file `ca` (aws-lc-rs provider, TLS 1.2 and 1.3).
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, FetchError> {
    let err = |reason: String| FetchError::Ca {
        path: ca.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| err(pem_reason(e)))?;
    for cert in certs {
        let cert = cert.map_err(|e| err(pem_reason(e)))?;
        roots.add(cert).map_err(|e| {
            err(format!(
                "a certificate cannot be used as a trust anchor: {e}"
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(err(
            "no PEM certificates (-----BEGIN CERTIFICATE-----) in it".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn pem_reason(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => e.to_string(),
        other => format!("not a PEM file: {other:?}"),
    }
}

/// The TLS stream a download reads from.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Starts downloading `url` as the config says: its `update_ca` is the
/// only trust, default timeouts.
pub fn open(url: &str, config: &Config) -> Result<Body<BufReader<TlsStream>>, FetchError> {
    let url = Url::parse(url)?;
    let ca = config.update_ca.as_deref().ok_or(FetchError::NoTrust)?;
    get(&url, client_config(ca)?, Timeouts::default())
}

/// Connects, completes the TLS handshake, sends the GET and reads the
/// response head; returns the body positioned at its first byte.
pub fn get(
    url: &Url,
    tls: Arc<ClientConfig>,
    timeouts: Timeouts,
) -> Result<Body<BufReader<TlsStream>>, FetchError> {
    let host = url.host.clone();
    let io_err = |during: &'static str, source: io::Error| FetchError::Io {
        host: host.clone(),
        during,
        source: explain_timeout(source, timeouts.io),
    };
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|source| FetchError::Dns {
            host: host.clone(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no addresses");
    let mut sock = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeouts.connect) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
        }
    }
    let mut sock = sock.ok_or_else(|| FetchError::Connect {
        host: host.clone(),
        port: url.port,
        source: explain_timeout(last, timeouts.connect),
    })?;
    sock.set_read_timeout(Some(timeouts.io))
        .and_then(|()| sock.set_write_timeout(Some(timeouts.io)))
        .and_then(|()| sock.set_nodelay(true))
        .map_err(|e| io_err("setting socket options", e))?;

    let name = ServerName::try_from(url.host.clone()).map_err(|e| FetchError::BadUrl {
        url: url.to_string(),
        reason: format!("host is not a valid DNS name or IP address: {e}"),
    })?;
    let mut conn = ClientConnection::new(tls, name).map_err(|e| FetchError::Tls {
        host: host.clone(),
        reason: e.to_string(),
    })?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            return Err(handshake_error(&host, e, timeouts.io));
        }
    }
    let mut stream = StreamOwned::new(conn, sock);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: intrust-recovery/{}\r\n\
         Accept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        url.target,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
    );
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| io_err("sending the request", e))?;
    let mut reader = BufReader::with_capacity(BUFFER_LEN, stream);
    let head = read_head(&mut reader).map_err(|e| match e {
        HeadError::Malformed(what) => FetchError::Malformed {
            host: host.clone(),
            what,
        },
        HeadError::Io(e) => io_err("reading the response head", e),
    })?;
    match head.status {
        200 => {}
        300..=399 => {
            return Err(FetchError::Redirect {
                url: url.to_string(),
                status: head.status,
                location: head.location.unwrap_or_else(|| "?".into()),
            })
        }
        status => {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
                reason: head.reason,
            })
        }
    }
    Ok(Body::new(reader, head.framing, timeouts.io))
}

fn handshake_error(host: &str, e: io::Error, io_timeout: Duration) -> FetchError {
    let tls = |reason: String| FetchError::Tls {
        host: host.to_owned(),
        reason,
    };
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return match inner {
            rustls::Error::InvalidCertificate(_) => tls(format!(
                "{inner} (the server's certificate must chain to a CA in the config's update_ca \
                 and name the URL's host)"
            )),
            other => tls(other.to_string()),
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => tls(format!(
            "the server closed the connection during the handshake ({e})"
        )),
        _ => FetchError::Io {
            host: host.to_owned(),
            during: "TLS handshake",
            source: explain_timeout(e, io_timeout),
        },
    }
}

/// A socket timeout surfaces as `WouldBlock`/`TimedOut` with the OS's
/// wording; say how long we waited instead.
fn explain_timeout(e: io::Error, waited: Duration) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s", waited.as_secs_f64()),
        ),
        _ => e,
    }
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body ends with the connection (TLS `close_notify`).
    UntilClose,
}

/// The parts of a response head this client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Reason phrase (may be empty).
    pub reason: String,
    /// How the body is delimited.
    pub framing: Framing,
    /// `Location`, for the redirect error.
    pub location: Option<String>,
}

/// Reading a response head failed.
#[derive(Debug)]
pub enum HeadError {
    /// The bytes broke the rules or the bounds.
    Malformed(String),
    /// The connection failed.
    Io(io::Error),
}

enum LineError {
    TooLong,
    Closed,
    Io(io::Error),
}

/// Reads one line (LF or CRLF ended, without them) of at most `max` bytes.
fn read_line<R: BufRead>(r: &mut R, max: usize, line: &mut Vec<u8>) -> Result<(), LineError> {
    line.clear();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(LineError::Closed),
            Err(e) => return Err(LineError::Io(e)),
        };
        if buf.is_empty() {
            return Err(LineError::Closed);
        }
        let (take, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        // +2: the line ending does not count against the bound.
        if line.len() + take > max + 2 {
            return Err(LineError::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if end {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > max {
                return Err(LineError::TooLong);
            }
            return Ok(());
        }
    }
}

/// Reads the status line and headers (skipping 1xx interim responses) and
/// decides the body's framing.
pub fn read_head<R: BufRead>(r: &mut R) -> Result<Head, HeadError> {
    let mut line = Vec::new();
    let mut total = 0usize;
    let mut next = |r: &mut R, line: &mut Vec<u8>, what: &str| -> Result<(), HeadError> {
        read_line(r, MAX_LINE_LEN, line).map_err(|e| match e {
            LineError::TooLong => {
                HeadError::Malformed(format!("{what} is longer than {MAX_LINE_LEN} bytes"))
            }
            LineError::Closed => HeadError::Malformed(format!(
                "the connection closed in the response head (reading the {what})"
            )),
            LineError::Io(e) => HeadError::Io(e),
        })?;
        total += line.len() + 2;
        if total > MAX_HEAD_LEN {
            return Err(HeadError::Malformed(format!(
                "response head is longer than {MAX_HEAD_LEN} bytes"
            )));
        }
        Ok(())
    };
    for _ in 0..=MAX_INTERIM {
        next(r, &mut line, "status line")?;
        let (status, reason) = parse_status_line(&line).map_err(HeadError::Malformed)?;
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut location = None;
        let mut count = 0;
        loop {
            next(r, &mut line, "header line")?;
            if line.is_empty() {
                break;
            }
            count += 1;
            if count > MAX_HEADERS {
                return Err(HeadError::Malformed(format!(
                    "more than {MAX_HEADERS} header lines"
                )));
            }
            let (name, value) = parse_header_line(&line).map_err(HeadError::Malformed)?;
            if name.eq_ignore_ascii_case("content-length") {
                for v in value.split(',').map(str::trim) {
                    let n = parse_decimal(v).ok_or_else(|| {
                        HeadError::Malformed(format!("Content-Length {value:?} is not a number"))
                    })?;
                    if content_length.is_some_and(|c| c != n) {
                        return Err(HeadError::Malformed(
                            "conflicting Content-Length values".into(),
                        ));
                    }
                    content_length = Some(n);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    if chunked {
                        return Err(HeadError::Malformed(
                            "a transfer coding after chunked".into(),
                        ));
                    }
                    if !coding.eq_ignore_ascii_case("chunked") {
                        return Err(HeadError::Malformed(format!(
                            "unsupported Transfer-Encoding {coding:?} (only chunked is read)"
                        )));
                    }
                    chunked = true;
                }
            } else if name.eq_ignore_ascii_case("location") {
                location = Some(value.to_owned());
            }
        }
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(HeadError::Malformed(
                    "101 Switching Protocols without an Upgrade request".into(),
                ));
            }
            continue;
        }
        let framing = match (chunked, content_length) {
            (true, Some(_)) => {
                return Err(HeadError::Malformed(
                    "both Transfer-Encoding and Content-Length (ambiguous body length)".into(),
                ))
            }
            (true, None) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::UntilClose,
        };
        return Ok(Head {
            status,
            reason,
            framing,
            location,
        });
    }
    Err(HeadError::Malformed(format!(
        "more than {MAX_INTERIM} interim (1xx) responses"
    )))
}

/// `HTTP/1.1 200 OK` → (200, "OK").
fn parse_status_line(line: &[u8]) -> Result<(u16, String), String> {
    let shown = || String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    let bad = || format!("status line {:?} is not `HTTP/1.x NNN reason`", shown());
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let rest = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .ok_or_else(bad)?;
    let (code, reason) = rest.split_at(rest.len().min(3));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let reason = match reason {
        "" => "",
        r => r.strip_prefix(' ').ok_or_else(bad)?,
    };
    if reason.chars().any(|c| c.is_control() && c != '\t') {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if !(100..600).contains(&status) {
        return Err(bad());
    }
    Ok((status, reason.to_owned()))
}

/// `Name: value` → (name, trimmed value); the name must be a token and
/// sit right before the colon (RFC 9112 §5.1).
fn parse_header_line(line: &[u8]) -> Result<(&str, &str), String> {
    let shown = || String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    let text =
        std::str::from_utf8(line).map_err(|_| format!("header line {:?} is not UTF-8", shown()))?;
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header line {:?} has no colon", shown()))?;
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("header name {name:?} is not a token"));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("header {name} has control characters in its value"));
    }
    Ok((name, value))
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `1a2b;ext=1` → 0x1a2b.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let end = line
        .iter()
        .position(|&b| b == b';' || b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let digits = &line[..end];
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length { remaining: u64, total: u64 },
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    UntilClose,
    Done,
}

/// A response body as a [`Read`]: framing removed, every early end an
/// error (see the module docs).
pub struct Body<R> {
    inner: R,
    state: State,
    read: u64,
    io_timeout: Duration,
    line: Vec<u8>,
}

impl<R: BufRead> Body<R> {
    /// The body of a response framed as `framing`, read from `inner`;
    /// `io_timeout` is only for messages.
    pub fn new(inner: R, framing: Framing, io_timeout: Duration) -> Body<R> {
        let state = match framing {
            Framing::Length(total) => State::Length {
                remaining: total,
                total,
            },
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Body {
            inner,
            state,
            read: 0,
            io_timeout,
            line: Vec::new(),
        }
    }

    fn truncated(&self, expected: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "download truncated: the connection closed after {} body bytes{expected}",
                self.read
            ),
        )
    }

    fn malformed(what: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed chunked body: {what}"),
        )
    }

    fn io(&self, e: io::Error) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the update server sent nothing for {} s (after {} body bytes)",
                    self.io_timeout.as_secs_f64(),
                    self.read
                ),
            ),
            _ => e,
        }
    }

    /// Reads payload bytes from `inner` into `buf` (at most `limit`); an
    /// end of stream is a truncation described by `expected`.
    fn read_payload(&mut self, buf: &mut [u8], limit: u64, expected: &str) -> io::Result<usize> {
        let want = usize::try_from(limit).unwrap_or(usize::MAX).min(buf.len());
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => Err(self.truncated(expected)),
            Ok(n) => {
                self.read += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.truncated(expected)),
            Err(e) => Err(self.io(e)),
        }
    }

    fn control_line(&mut self, what: &str) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        let result = read_line(&mut self.inner, MAX_LINE_LEN, &mut line);
        self.line = line;
        match result {
            Ok(()) => Ok(()),
            Err(LineError::TooLong) => Err(Self::malformed(format!(
                "{what} longer than {MAX_LINE_LEN} bytes"
            ))),
            Err(LineError::Closed) => Err(self.truncated(&format!(" (in a {what})"))),
            Err(LineError::Io(e)) => Err(self.io(e)),
        }
    }
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Length { remaining: 0, .. } => {
                    self.state = State::Done;
                }
                State::Length { remaining, total } => {
                    let n = self.read_payload(buf, remaining, &format!(" of {total}"))?;
                    self.state = State::Length {
                        remaining: remaining - n as u64,
                        total,
                    };
                    return Ok(n);
                }
                State::UntilClose => match self.inner.read(buf) {
                    Ok(0) => {
                        self.state = State::Done;
                        return Ok(0);
                    }
                    Ok(n) => {
                        self.read += n as u64;
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Err(
                            self.truncated(" without TLS close_notify (the server gave no length)")
                        )
                    }
                    Err(e) => return Err(self.io(e)),
                },
                State::ChunkSize => {
                    self.control_line("chunk size line")?;
                    let size = parse_chunk_size(&self.line).ok_or_else(|| {
                        Self::malformed(format!(
                            "chunk size line {:?} is not hexadecimal",
                            String::from_utf8_lossy(&self.line[..self.line.len().min(40)])
                        ))
                    })?;
                    if size == 0 {
                        // Trailers, up to the empty line; their content is unused.
                        for _ in 0..=MAX_HEADERS {
                            self.control_line("trailer line")?;
                            if self.line.is_empty() {
                                self.state = State::Done;
                                break;
                            }
                        }
                        if self.state != State::Done {
                            return Err(Self::malformed(format!(
                                "more than {MAX_HEADERS} trailer lines"
                            )));
                        }
                    } else {
                        self.state = State::ChunkData(size);
                    }
                }
                State::ChunkData(remaining) => {
                    let n = self.read_payload(buf, remaining, " (inside a chunk)")?;
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Ok(n);
                }
                State::ChunkEnd => {
                    self.control_line("chunk end")?;
                    if !self.line.is_empty() {
                        return Err(Self::malformed(
                            "chunk data is longer than its size line says".into(),
                        ));
                    }
                    self.state = State::ChunkSize;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn head(text: &str) -> Result<Head, String> {
        read_head(&mut Cursor::new(text.as_bytes())).map_err(|e| match e {
            HeadError::Malformed(m) => m,
            HeadError::Io(e) => format!("io: {e}"),
        })
    }

    fn body(framing: Framing, wire: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // A tiny buffer so every state boundary is crossed mid-read.
        let inner = BufReader::with_capacity(3, Cursor::new(wire.to_vec()));
        let mut b = Body::new(inner, framing, Duration::from_secs(1));
        let mut buf = [0u8; 5];
        loop {
            match b.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn urls() {
        let u = Url::parse("https://updates.example.com/rpi4/2026.1.bundle").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("updates.example.com", 443, "/rpi4/2026.1.bundle")
        );
        assert_eq!(u.host_header(), "updates.example.com");
        let u = Url::parse("HTTPS://127.0.0.1:8443?x=1#frag").unwrap();
        assert_eq!((u.port, u.target.as_str()), (8443, "/?x=1"));
        assert_eq!(u.host_header(), "127.0.0.1:8443");
        let u = Url::parse("https://[::1]:9/b").unwrap();
        assert_eq!(
            (u.host.as_str(), u.host_header()),
            ("::1", "[::1]:9".into())
        );
        let msg = |s: &str| Url::parse(s).unwrap_err().to_string();
        assert!(msg("http://x/b").contains("plain http:// is refused"));
        assert!(matches!(
            Url::parse("ftp://x/b"),
            Err(FetchError::NotHttps { .. })
        ));
        assert!(msg("https://u:p@x/b").contains("passwords"));
        assert!(msg("https:///b").contains("no host"));
        assert!(msg("https://x:0/b").contains("port"));
        assert!(msg("https://x:99999/b").contains("port"));
        assert!(msg("https://x:+1/b").contains("port"));
        assert!(msg("https://x/a b").contains("not allowed"));
        assert!(msg("https://x/a\r\nHost: y").contains("not allowed"));
        assert!(looks_like_url("https://x") && looks_like_url("http://x"));
        assert!(!looks_like_url("update.bundle") && !looks_like_url("-"));
        assert!(!looks_like_url("./dir://x"));
    }

    #[test]
    fn heads() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A:  b \r\n\r\nrest").unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                reason: "OK".into(),
                framing: Framing::Length(12),
                location: None
            }
        );
        let h = head("HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\n").unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.0 200\r\n\r\n").unwrap();
        assert_eq!((h.reason.as_str(), h.framing), ("", Framing::UntilClose));
        let h = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n")
            .unwrap();
        assert_eq!((h.status, h.location.as_deref()), (302, Some("/x")));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Length(5));

        for (text, want) in [
            ("", "closed in the response head"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n",
                "closed in the response head",
            ),
            ("ICY 200 OK\r\n\r\n", "is not `HTTP/1.x NNN reason`"),
            ("HTTP/1.1 20 OK\r\n\r\n", "is not `HTTP/1.x NNN reason`"),
            ("HTTP/1.1 2000 OK\r\n\r\n", "is not `HTTP/1.x NNN reason`"),
            ("HTTP/1.1 700 Huh\r\n\r\n", "is not `HTTP/1.x NNN reason`"),
            ("HTTP/2 200 OK\r\n\r\n", "is not `HTTP/1.x NNN reason`"),
            ("HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "has no colon"),
            ("HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", "not a token"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n",
                "not a token",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "ambiguous",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "unsupported",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                "after chunked",
            ),
            ("HTTP/1.1 101 Up\r\n\r\n", "Switching"),
        ] {
            let err = head(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_LINE_LEN));
        assert!(head(&long).unwrap_err().contains("longer than"));
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(head(&many).unwrap_err().contains("more than"));
        let big = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            format!("X: {}\r\n", "a".repeat(MAX_LINE_LEN - 10)).repeat(MAX_HEADERS)
        );
        assert!(head(&big).unwrap_err().contains("response head is longer"));
        let interim = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1);
        assert!(head(&interim).unwrap_err().contains("interim"));
    }

    #[test]
    fn length_bodies() {
        assert_eq!(
            body(Framing::Length(11), b"hello world and more").unwrap(),
            b"hello world"
        );
        assert_eq!(body(Framing::Length(0), b"x").unwrap(), b"");
        let err = body(Framing::Length(12), b"hello world").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            err.to_string().contains("after 11 body bytes of 12"),
            "{err}"
        );
        assert_eq!(
            body(Framing::UntilClose, b"all of it").unwrap(),
            b"all of it"
        );
    }

    #[test]
    fn chunked_bodies() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nafter";
        assert_eq!(body(Framing::Chunked, wire).unwrap(), b"hello 0123456789");
        assert_eq!(body(Framing::Chunked, b"0\r\n\r\n").unwrap(), b"");
        for (wire, want) in [
            (&b"5\r\nhel"[..], "inside a chunk"),
            (b"5\r\nhello\r\n", "chunk size line"),
            (b"5\r\nhello", "chunk end"),
            (b"5\r\nhelloX\r\n0\r\n\r\n", "longer than its size"),
            (b"zz\r\nhello\r\n", "not hexadecimal"),
            (b"\r\n", "not hexadecimal"),
            (b"11111111111111111\r\n", "not hexadecimal"),
            (b"0\r\nTrailer: x\r\n", "trailer line"),
        ] {
            let err = body(Framing::Chunked, wire).unwrap_err();
            assert!(err.to_string().contains(want), "{wire:?}: {err}");
        }
    }
}
