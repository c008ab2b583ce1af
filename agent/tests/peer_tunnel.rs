//! The tunnel end to end on loopback: a "browser" built on the same str0m
//! engine opens data channels to a device session serving the tunnel, which
//! proxies to an example app (a hyper server on 127.0.0.1). SDP goes
//! straight from one to the other (no flock).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use intrust_agent::peer::engine::{MessageKind, PeerEngine, Session};
use intrust_agent::peer::str0m_engine::{Str0mConfig, Str0mEngine};
use intrust_agent::peer::stream::ChannelStream;
use intrust_agent::peer::tunnel::{serve_session, TunnelConfig, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;

const DOWNLOAD: usize = 64 * 1024 * 1024;
const UPLOAD: usize = 32 * 1024 * 1024;
const PAGE: &str = "<html><body>hello from the app</body></html>";

/// Deterministic test bytes (xorshift64), `len` of them from `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
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

fn sha256_hex(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

type AppBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(data: impl Into<Bytes>) -> AppBody {
    Full::new(data.into()).boxed()
}

/// The example app; counts closed slow responses.
struct App {
    addr: SocketAddr,
    download: Bytes,
    slow_closed: Arc<Notify>,
    slow_closed_count: Arc<AtomicUsize>,
}

async fn start_app() -> App {
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

/// A browser connected to a device session serving the tunnel.
struct Browser {
    session: Arc<dyn Session>,
    hello: String,
    /// Text or binary, as the hello arrived (a browser refuses binary).
    hello_kind: MessageKind,
}

async fn connect(app: &App) -> Browser {
    let engine = Str0mEngine::new(Str0mConfig::default());
    let mut apps = BTreeMap::new();
    apps.insert("demo".to_string(), Upstream::Tcp(app.addr));
    let config = Arc::new(TunnelConfig {
        device: "testbox".into(),
        apps,
    });

    let pending = engine.create_offer("control").unwrap();
    let device = engine.accept_offer(pending.offer_sdp()).unwrap();
    tokio::spawn(serve_session(config, device.events));
    let (browser, control) = pending.accept_answer(&device.answer_sdp).unwrap();
    // Drain the browser's own events (it opens the channels itself).
    let mut events = browser.events;
    tokio::spawn(async move { while events.recv().await.is_some() {} });

    let control = timeout(Duration::from_secs(10), control.open())
        .await
        .expect("control channel opens in time")
        .unwrap();
    let hello = timeout(
        Duration::from_secs(5),
        std::future::poll_fn(|cx| control.poll_recv(cx)),
    )
    .await
    .expect("hello in time")
    .expect("hello message");
    // Keep the control channel open for the session's lifetime.
    std::mem::forget(control);
    Browser {
        session: browser.session,
        hello: String::from_utf8(hello.data.to_vec()).unwrap(),
        hello_kind: hello.kind,
    }
}

impl Browser {
    async fn channel(&self, label: &str) -> ChannelStream {
        let io = timeout(
            Duration::from_secs(10),
            self.session.open_channel(label).unwrap().open(),
        )
        .await
        .expect("channel opens in time")
        .unwrap();
        ChannelStream::new(io)
    }

    /// An HTTP/1.1 client connection over a new `http/1.1 APP` channel.
    async fn http(&self, app: &str) -> (SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>) {
        let stream = self.channel(&format!("http/1.1 {app}")).await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        (sender, task)
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "demo")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_page_and_unknown_app() {
    timeout(Duration::from_secs(30), async {
        let app = start_app().await;
        let browser = connect(&app).await;
        let hello: serde_json::Value = serde_json::from_str(&browser.hello).unwrap();
        assert_eq!(
            hello,
            serde_json::json!({"type":"hello","device":"testbox","protocol":1,"apps":["demo"]})
        );
        assert_eq!(
            browser.hello_kind,
            MessageKind::Text,
            "the control channel's JSON goes as text messages"
        );

        // An app channel's bytes go as binary messages.
        let raw = timeout(
            Duration::from_secs(10),
            browser
                .session
                .open_channel("http/1.1 demo")
                .unwrap()
                .open(),
        )
        .await
        .expect("channel opens in time")
        .unwrap();
        let request = b"GET /page HTTP/1.1\r\nhost: demo\r\n\r\n";
        std::future::poll_fn(|cx| raw.poll_send(cx, MessageKind::Binary, request))
            .await
            .unwrap();
        let first = timeout(
            Duration::from_secs(10),
            std::future::poll_fn(|cx| raw.poll_recv(cx)),
        )
        .await
        .expect("response in time")
        .expect("a response message");
        assert_eq!(first.kind, MessageKind::Binary);
        assert!(first.data.starts_with(b"HTTP/1.1 200"), "{first:?}");
        raw.close();

        let (mut demo, _t) = browser.http("demo").await;
        for _ in 0..3 {
            // Keep-alive: several requests on one channel.
            demo.ready().await.unwrap();
            let resp = demo.send_request(get("/page")).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, PAGE.as_bytes());
        }

        let (mut nope, _t) = browser.http("nope").await;
        let resp = nope.send_request(get("/page")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("no app named \"nope\""),
            "{body:?}"
        );
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_64_mib_and_upload_32_mib_checksums() {
    timeout(Duration::from_secs(50), async {
        let app = start_app().await;
        let expected = sha256_hex(&app.download);
        let browser = connect(&app).await;

        let (mut demo, _t) = browser.http("demo").await;
        let started = Instant::now();
        let resp = demo.send_request(get("/download")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(body.len(), DOWNLOAD);
        assert_eq!(sha256_hex(&body), expected);
        println!(
            "tunnel download: {} MiB in {secs:.2} s = {:.1} MB/s",
            DOWNLOAD >> 20,
            DOWNLOAD as f64 / secs / 1e6
        );

        let upload = Bytes::from(pattern(11, UPLOAD));
        let want = format!("{UPLOAD} {}", sha256_hex(&upload));
        let started = Instant::now();
        let req = Request::post("/upload")
            .header("host", "demo")
            .body(Full::new(upload))
            .unwrap();
        demo.ready().await.unwrap();
        let resp = demo.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(String::from_utf8_lossy(&body), want);
        println!(
            "tunnel upload: {} MiB in {secs:.2} s = {:.1} MB/s",
            UPLOAD >> 20,
            UPLOAD as f64 / secs / 1e6
        );
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_channels() {
    timeout(Duration::from_secs(30), async {
        let app = start_app().await;
        let browser = Arc::new(connect(&app).await);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let browser = browser.clone();
            tasks.spawn(async move {
                let (mut demo, _t) = browser.http("demo").await;
                let resp = demo.send_request(get(&format!("/page?{i}"))).await.unwrap();
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
        assert_eq!(done, 100);
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_channel_cancels_the_upstream_request() {
    timeout(Duration::from_secs(30), async {
        let app = start_app().await;
        let browser = connect(&app).await;
        let (mut demo, conn) = browser.http("demo").await;
        let resp = demo.send_request(get("/slow")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        // Some of the endless body arrives...
        let mut got = 0;
        while got < 4096 {
            let frame = body.frame().await.unwrap().unwrap();
            got += frame.data_ref().map_or(0, |d| d.len());
        }
        assert_eq!(app.slow_closed_count.load(Ordering::SeqCst), 0);
        // ...then the browser closes the channel (drops the connection).
        conn.abort();
        drop(body);
        drop(demo);
        timeout(Duration::from_secs(10), app.slow_closed.notified())
            .await
            .expect("the app sees its connection closed");
        assert_eq!(app.slow_closed_count.load(Ordering::SeqCst), 1);
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_400_and_others_are_unaffected() {
    timeout(Duration::from_secs(30), async {
        let app = start_app().await;
        let browser = connect(&app).await;
        let (mut demo, _t) = browser.http("demo").await;

        let mut raw = browser.channel("http/1.1 demo").await;
        raw.write_all(b"\x00\x01 this is not HTTP \xff\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
            .await
            .expect("the channel closes after the 400")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

        let resp = demo.send_request(get("/page")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // And a channel opened after it works too.
        let (mut again, _t) = browser.http("demo").await;
        let resp = again.send_request(get("/page")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_passes_bytes_through() {
    timeout(Duration::from_secs(30), async {
        let app = start_app().await;
        let browser = connect(&app).await;
        let (mut demo, _t) = browser.http("demo").await;
        let req = Request::get("/echo")
            .header("host", "demo")
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = demo.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
        for msg in [&b"ping"[..], &[42u8; 100_000][..]] {
            io.write_all(msg).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            io.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }
    })
    .await
    .expect("test finished in time");
}
