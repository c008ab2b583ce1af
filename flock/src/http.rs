//! The HTTP/1.1 in front of the WebSockets: a bounded request head, the
//! WebSocket upgrade answer (RFC 6455 accept key) and the portal's static
//! files. Invariants: a head over [`MAX_HEAD`] bytes is refused; a file is
//! only served from inside the web root (no `..`, no hidden names).

use std::path::{Path, PathBuf};

use aws_lc_rs::digest;

use flock_proto::turn::base64;

/// Largest request head flock reads.
pub const MAX_HEAD: usize = 8 * 1024;

/// One parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    headers: Vec<(String, String)>,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head is not UTF-8")]
    Encoding,
    #[error("malformed request line")]
    RequestLine,
    #[error("malformed header line")]
    Header,
}

impl Head {
    /// Parses a head (without the final blank line).
    pub fn parse(bytes: &[u8]) -> Result<Self, HeadError> {
        let text = std::str::from_utf8(bytes).map_err(|_| HeadError::Encoding)?;
        let mut lines = text.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (first.next(), first.next(), first.next(), first.next())
        else {
            return Err(HeadError::RequestLine);
        };
        if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
            return Err(HeadError::RequestLine);
        }
        let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(':').ok_or(HeadError::Header)?;
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        Ok(Self {
            method: method.to_string(),
            path,
            headers,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Sec-WebSocket-Key` of a well-formed upgrade request.
    pub fn websocket_key(&self) -> Option<&str> {
        let has = |h: &str, token: &str| {
            self.header(h)
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        if self.method == "GET"
            && has("upgrade", "websocket")
            && has("connection", "upgrade")
            && self.header("sec-websocket-version") == Some("13")
        {
            self.header("sec-websocket-key")
        } else {
            None
        }
    }
}

/// Where the head ends (index just past `\r\n\r\n`), if it has.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 section 4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(ctx.finish().as_ref())
}

/// The 101 answer to an upgrade.
pub fn switching_protocols(key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
}

/// A complete response with a body (connection closed after it).
pub fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Shown at `/` when the portal has not been built.
pub const NOT_BUILT_PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>flock</title></head>\n<body><h1>flock</h1><p>The portal is not built: build <code>flock/web</code> and set <code>web_root</code> to its <code>dist</code> directory.</p></body></html>\n";

/// Content type by file extension.
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Maps a request path to a file under `root`, or `None` when the path
/// tries to leave it. `/` is `index.html`.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = path.strip_prefix('/').unwrap_or(path);
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let mut out = root.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part.starts_with('.') || part.contains('\\') || part.contains('%') {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_an_upgrade() {
        let h = Head::parse(b"GET /device?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc==\r\n").unwrap();
        assert_eq!(h.path, "/device");
        assert_eq!(h.websocket_key(), Some("abc=="));
        let h = Head::parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
        assert_eq!(h.websocket_key(), None);
    }

    #[test]
    fn rejects_bad_heads() {
        for bad in [
            &b"GET"[..],
            b"GET / HTTP/1.1 x",
            b"GET nope HTTP/1.1",
            b"GET / SPDY",
            b"GET / HTTP/1.1\r\nno colon",
            b"\xff / HTTP/1.1",
        ] {
            assert!(Head::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn resolve_stays_in_root() {
        let root = Path::new("/srv");
        assert_eq!(resolve(root, "/"), Some(PathBuf::from("/srv/index.html")));
        assert_eq!(
            resolve(root, "/assets/app.js"),
            Some(PathBuf::from("/srv/assets/app.js"))
        );
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/.git/config",
            "//x",
            "/a%2e%2e",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
        assert_eq!(
            content_type(Path::new("index.html")),
            "text/html; charset=utf-8"
        );
    }
}
