//! The example app the tunnel tests proxy to: a hyper server on
//! 127.0.0.1 with `/page`, a streamed 64 MiB `/download`, `/upload`
//! (answers "LEN SHA256"), an endless `/slow` that counts when its client
//! goes away (cancellation), and `/echo` (a raw upgrade).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

pub const DOWNLOAD: usize = 64 * 1024 * 1024;
pub const UPLOAD: usize = 32 * 1024 * 1024;
pub const PAGE: &str = "<html><body>hello from the app</body></html>";

/// Deterministic test bytes (xorshift64), `len` of them from `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub type AppBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn full(data: impl Into<Bytes>) -> AppBody {
    Full::new(data.into()).boxed()
}

/// The example app; counts closed slow responses.
pub struct App {
    pub addr: SocketAddr,
    pub download: Bytes,
    pub slow_closed: Arc<Notify>,
    pub slow_closed_count: Arc<AtomicUsize>,
}

pub async fn start_app() -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let download = Bytes::from(pattern(7, DOWNLOAD));
    let slow_closed = Arc::new(Notify::new());
    let slow_closed_count = Arc::new(AtomicUsize::new(0));
    let (d, n, c) = (
        download.clone(),
        slow_closed.clone(),
        slow_closed_count.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (d, n, c) = (d.clone(), n.clone(), c.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    app_route(req, d.clone(), n.clone(), c.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    App {
        addr,
        download,
        slow_closed,
        slow_closed_count,
    }
}

async fn app_route(
    mut req: Request<Incoming>,
    download: Bytes,
    slow_closed: Arc<Notify>,
    slow_closed_count: Arc<AtomicUsize>,
) -> Result<Response<AppBody>, hyper::Error> {
    Ok(match req.uri().path() {
        "/page" => Response::new(full(PAGE)),
        "/download" => {
            // Streamed in 64 KiB frames, like a file.
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let mut off = 0;
                while off < download.len() {
                    let end = (off + 65536).min(download.len());
                    if tx
                        .send(Ok(Frame::data(download.slice(off..end))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    off = end;
                }
            });
            let body = StreamBody::new(tokio_stream(rx));
            Response::builder()
                .header("content-length", DOWNLOAD.to_string())
                .body(BodyExt::boxed(body))
                .unwrap()
        }
        "/upload" => {
            let body = req.into_body().collect().await?.to_bytes();
            Response::new(full(format!("{} {}", body.len(), sha256_hex(&body))))
        }
        "/slow" => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                loop {
                    if tx
                        .send(Ok(Frame::data(Bytes::from(vec![b's'; 1024]))))
                        .await
                        .is_err()
                    {
                        slow_closed_count.fetch_add(1, Ordering::SeqCst);
                        slow_closed.notify_one();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(tokio_stream(rx))))
        }
        "/echo" => {
            // A raw upgrade ("Upgrade: echo"): after the 101 every byte comes back.
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(full(""))
                .unwrap()
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full("not here"))
            .unwrap(),
    })
}

/// An mpsc receiver as a `Stream`, for `StreamBody`.
fn tokio_stream<T>(rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    RecvStream(rx)
}

struct RecvStream<T>(mpsc::Receiver<T>);

impl<T> futures_util::Stream for RecvStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// An HTTP/1.1 client connection over a new `http/1.1 APP` channel of
/// `session` (the browser's side), as the browser library does it.
pub async fn http(
    session: &dyn intrust_agent::peer::engine::Session,
    app: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let io = tokio::time::timeout(
        Duration::from_secs(10),
        session
            .open_channel(&format!("http/1.1 {app}"))
            .unwrap()
            .open(),
    )
    .await
    .expect("channel opens in time")
    .unwrap();
    let stream = intrust_agent::peer::stream::ChannelStream::new(io);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    (sender, task)
}

/// `GET path` with `Host: demo`.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "demo")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// `n` concurrent `GET /page?i` to `app`, each on its own channel of
/// `session`; every one must answer the page.
pub async fn concurrent_pages(
    session: Arc<dyn intrust_agent::peer::engine::Session>,
    app: &'static str,
    n: usize,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let session = session.clone();
        tasks.spawn(async move {
            let (mut c, _conn) = http(&*session, app).await;
            let resp = c.send_request(get(&format!("/page?{i}"))).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, PAGE.as_bytes());
        });
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
        done += 1;
    }
    assert_eq!(done, n);
}
