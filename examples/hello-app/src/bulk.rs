//! Bulk endpoints for `cargo xtask bench tunnel`: `GET /bytes?n=N` answers
//! N bytes (byte i is `i % 251`) with a Content-Length, in frames of a fixed
//! chunk; `POST /upload` reads the body as it arrives and answers
//! `{"bytes":N}`. Neither holds more than one frame in memory, so the
//! app is never what limits a transfer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

/// Largest `n` of `/bytes` (4 GiB).
pub const MAX_BYTES: u64 = 4 << 30;
/// One frame: 256 periods of the 251-byte pattern, so every frame is the
/// same bytes and the pattern runs on across frames.
const CHUNK: usize = 251 * 256;

/// A response body of the app: small ones whole, downloads streamed.
pub type AppBody = BoxBody<Bytes, Infallible>;

/// Whether [`serve`] answers this request.
pub fn is_bulk(method: &Method, path: &str) -> bool {
    matches!(
        (method, path),
        (&Method::GET, "/bytes") | (&Method::POST, "/upload")
    )
}

/// Answers `GET /bytes?n=N` and `POST /upload`.
pub async fn serve(req: Request<Incoming>) -> Response<AppBody> {
    let small = |status: StatusCode, content_type: &'static str, text: String| {
        let mut r = Response::new(Full::new(Bytes::from(text)).boxed());
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let mut r = if req.method() == Method::POST {
        match count(req.into_body()).await {
            Ok(n) => small(
                StatusCode::OK,
                "application/json",
                format!("{{\"bytes\":{n}}}"),
            ),
            Err(e) => small(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                format!("the upload broke off: {e}\n"),
            ),
        }
    } else {
        match download_len(req.uri().query()) {
            Ok(n) => {
                let mut r = Response::new(Pattern::new(n).boxed());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            Err(why) => small(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                format!("{why}\n"),
            ),
        }
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The `n` of `/bytes?n=N`: a decimal up to [`MAX_BYTES`].
pub fn download_len(query: Option<&str>) -> Result<u64, String> {
    let n = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("n="))
        .ok_or("say how many bytes: /bytes?n=N")?;
    let n: u64 = n.parse().map_err(|_| format!("n={n:?} is not a number"))?;
    if n > MAX_BYTES {
        return Err(format!("n={n} is over the {MAX_BYTES}-byte limit"));
    }
    Ok(n)
}

/// A body of `left` pattern bytes.
pub struct Pattern {
    chunk: Bytes,
    left: u64,
}

impl Pattern {
    pub fn new(len: u64) -> Pattern {
        Pattern {
            chunk: Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>()),
            left: len,
        }
    }
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Reads `body` to its end, counting bytes.
pub async fn count<B>(mut body: B) -> Result<u64, B::Error>
where
    B: Body + Unpin,
{
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            n += d.remaining() as u64;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[test]
    fn download_len_reads_n_and_rejects_the_rest() {
        assert_eq!(download_len(Some("n=1048576")), Ok(1 << 20));
        assert_eq!(download_len(Some("x=1&n=0")), Ok(0));
        assert!(download_len(None).is_err());
        assert!(download_len(Some("n=-1")).is_err());
        assert!(download_len(Some("n=lots")).is_err());
        assert!(download_len(Some(&format!("n={}", MAX_BYTES + 1))).is_err());
    }

    #[tokio::test]
    async fn pattern_is_exact_in_length_and_content() {
        for len in [
            0u64,
            1,
            250,
            CHUNK as u64,
            CHUNK as u64 + 7,
            3 * CHUNK as u64,
        ] {
            let body = Pattern::new(len);
            assert_eq!(body.size_hint().exact(), Some(len));
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(bytes.len() as u64, len);
            assert!(
                bytes.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
                "pattern broken for len {len}"
            );
        }
    }

    #[tokio::test]
    async fn count_adds_up_every_frame() {
        assert_eq!(
            count(Full::new(Bytes::from(vec![1u8; 1000]))).await,
            Ok(1000)
        );
        let frames =
            (0..5).map(|i| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![0u8; i * 10]))));
        let body = StreamBody::new(futures_util::stream::iter(frames));
        assert_eq!(count(body).await, Ok(100));
    }
}
