//! Just enough HTTP/1.1 to speak WebDriver to a chromedriver on loopback:
//! one JSON request per TCP connection (`Connection: close`), the response
//! framed by `Content-Length`, `chunked` or the end of the stream, and
//! bounded in size and time. Anything else is an error naming what was wrong.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Screenshots are the largest answers (a base64 PNG); 64 MiB is far above.
const MAX_RESPONSE: usize = 64 << 20;

/// A response: status code and the body parsed as JSON (`null` when empty).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
}

/// Sends `method path` with an optional JSON body to `addr` and reads the
/// whole response within `limit`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    limit: Duration,
) -> anyhow::Result<Response> {
    tokio::time::timeout(limit, exchange(addr, method, path, body))
        .await
        .map_err(|_| {
            anyhow::anyhow!("{method} {path}: no answer from chromedriver within {limit:?}")
        })?
        .with_context(|| format!("{method} {path}"))
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Response> {
    let body = match body {
        Some(v) => serde_json::to_vec(v).context("cannot encode the request body")?,
        None => Vec::new(),
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if !body.is_empty() || method == "POST" {
        head.push_str("Content-Type: application/json; charset=utf-8\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");

    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to chromedriver at {addr}"))?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .context("reading the response")?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE {
            bail!("response over {MAX_RESPONSE} bytes");
        }
        // chromedriver keeps the connection open despite `Connection: close`.
        if is_complete(&raw) {
            break;
        }
    }
    parse_response(&raw)
}

/// Whether `raw` holds a whole response by its own framing (the strict
/// checks are left to [`parse_response`]).
fn is_complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    for line in head.split("\r\n").skip(1) {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

/// Parses a complete response (the connection was closed after it).
pub fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the response has no complete head")?;
    let head = std::str::from_utf8(&raw[..end]).context("the response head is not UTF-8")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        bail!("malformed status line {status_line:?}");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {status_line:?}");
    }
    let status: u16 = code
        .parse()
        .with_context(|| format!("bad status code in {status_line:?}"))?;

    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("malformed header line {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .with_context(|| format!("bad Content-Length {value:?}"))?;
            if length.is_some_and(|l| l != n) {
                bail!("conflicting Content-Length headers");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                bail!("unsupported Transfer-Encoding {value:?}");
            }
            chunked = true;
        }
    }
    let body = match (chunked, length) {
        (true, Some(_)) => bail!("both Transfer-Encoding and Content-Length"),
        (true, None) => dechunk(rest)?,
        (false, Some(n)) => {
            if rest.len() < n {
                bail!("body cut short: {} of {n} bytes", rest.len());
            }
            rest[..n].to_vec()
        }
        (false, None) => rest.to_vec(),
    };
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "HTTP {status} with a body that is not JSON: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })?
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line without CRLF")?;
        let line = std::str::from_utf8(&rest[..eol]).context("chunk size line is not UTF-8")?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {line:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            bail!("chunk of {size} bytes cut short or not followed by CRLF");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"value\":1}\n")
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body["value"], 1);
    }

    #[test]
    fn chunked_body() {
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:2}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body["a"], 2);
    }

    #[test]
    fn refuses_ambiguous_or_broken_framing() {
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}").is_err());
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{} "
        )
        .is_err());
        assert!(parse_response(b"SMTP 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn completeness_follows_the_framing() {
        assert!(!is_complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"));
        assert!(!is_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{"
        ));
        assert!(is_complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        ));
        assert!(!is_complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n"
        ));
        assert!(is_complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        ));
        assert!(
            !is_complete(b"HTTP/1.1 200 OK\r\n\r\n{}"),
            "close-delimited waits for EOF"
        );
    }

    #[test]
    fn empty_body_is_null() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(r.body.is_null());
    }
}
