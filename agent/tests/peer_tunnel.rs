//! The tunnel end to end on loopback: a "browser" built on the same str0m
//! engine opens data channels to a device session serving the tunnel, which
//! proxies to an example app (a hyper server on 127.0.0.1). SDP goes
//! straight from one to the other (no flock).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use intrust_agent::peer::engine::{MessageKind, PeerEngine, Session};
use intrust_agent::peer::str0m_engine::{Str0mConfig, Str0mEngine};
use intrust_agent::peer::stream::ChannelStream;
use intrust_agent::peer::tunnel::{serve_session, TunnelConfig, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

mod common;
use common::app::{
    concurrent_pages, get, pattern, sha256_hex, start_app, App, DOWNLOAD, PAGE, UPLOAD,
};

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

    async fn http(&self, app: &str) -> (SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>) {
        common::app::http(&*self.session, app).await
    }
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
        let browser = connect(&app).await;
        concurrent_pages(browser.session.clone(), "demo", 100).await;
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
