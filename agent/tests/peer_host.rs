//! Browser sessions from rendezvous signalling: an offer is answered (or
//! refused with a reason) through the command channel, and an admitted
//! session reaches the app through the tunnel.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use intrust_agent::peer::host::{Authenticator, InsecureOpen, PeerHost, RefuseAll};
use intrust_agent::peer::str0m_engine::{Str0mConfig, Str0mEngine};
use intrust_agent::peer::stream::ChannelStream;
use intrust_agent::peer::tunnel::{TunnelConfig, Upstream};
use intrust_agent::rendezvous::{SignallingCommand, SignallingEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// An app that answers every connection with one fixed response.
async fn tiny_app() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

struct Host {
    events: mpsc::Sender<SignallingEvent>,
    commands: mpsc::Receiver<SignallingCommand>,
    active: Arc<std::sync::atomic::AtomicUsize>,
}

async fn host(auth: Arc<dyn Authenticator>) -> Host {
    let mut apps = BTreeMap::new();
    apps.insert("demo".to_string(), Upstream::Tcp(tiny_app().await));
    let tunnel = Arc::new(TunnelConfig {
        device: "testbox".into(),
        apps,
    });
    // A short silence timeout: a peer gone without close_notify is
    // noticed within the test's bounds.
    let engine = Arc::new(Str0mEngine::new(Str0mConfig {
        silence_timeout: Duration::from_secs(3),
        ..Str0mConfig::default()
    }));
    let host = PeerHost::new(engine, tunnel, auth);
    let active = host.active_sessions();
    let (events, ev_rx) = mpsc::channel(16);
    let (cmd_tx, commands) = mpsc::channel(16);
    tokio::spawn(host.run(ev_rx, cmd_tx));
    Host {
        events,
        commands,
        active,
    }
}

fn offer(session: u64, sdp: &str) -> SignallingEvent {
    SignallingEvent::Offer {
        session,
        sdp: sdp.to_string(),
        ice_servers: Vec::new(),
    }
}

async fn next(host: &mut Host) -> SignallingCommand {
    timeout(Duration::from_secs(10), host.commands.recv())
        .await
        .expect("a command in time")
        .expect("host running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_open_answers_and_tunnels() {
    timeout(Duration::from_secs(30), async {
        let mut host = host(Arc::new(InsecureOpen)).await;
        let browser_engine = Str0mEngine::new(Str0mConfig::default());
        let pending = browser_engine.create_offer("control").unwrap();
        host.events
            .send(offer(7, pending.offer_sdp()))
            .await
            .unwrap();
        let SignallingCommand::Answer { session: 7, sdp } = next(&mut host).await else {
            panic!("expected an answer for session 7");
        };
        assert_eq!(
            next(&mut host).await,
            SignallingCommand::Candidate {
                session: 7,
                candidate: None,
                sdp_mid: None
            }
        );
        let (browser, control) = pending.accept_answer(&sdp).unwrap();
        control.open().await.unwrap();
        // flock forgetting the session does not end the peer connection.
        host.events
            .send(SignallingEvent::Closed {
                session: 7,
                reason: "browser left flock".into(),
            })
            .await
            .unwrap();
        let io = browser
            .session
            .open_channel("http/1.1 demo")
            .unwrap()
            .open()
            .await
            .unwrap();
        let mut stream = ChannelStream::new(io);
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: demo\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let mut got = 0;
        while !answer[..got].ends_with(b"ok") {
            let n = stream.read(&mut answer[got..]).await.unwrap();
            assert!(n > 0, "channel closed early");
            got += n;
        }
        assert!(answer.starts_with(b"HTTP/1.1 200 OK"));
        assert_eq!(host.active.load(Ordering::Relaxed), 1);

        browser.session.close();
        timeout(Duration::from_secs(10), async {
            while host.active.load(Ordering::Relaxed) != 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the device notices the closed session");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_broken_offers_are_closed_with_a_reason() {
    timeout(Duration::from_secs(20), async {
        let mut host = host(Arc::new(RefuseAll)).await;
        let browser_engine = Str0mEngine::new(Str0mConfig::default());
        let pending = browser_engine.create_offer("control").unwrap();
        host.events
            .send(offer(1, pending.offer_sdp()))
            .await
            .unwrap();
        let SignallingCommand::Close { session: 1, reason } = next(&mut host).await else {
            panic!("expected a close for session 1");
        };
        assert!(reason.contains("--insecure-open"), "{reason}");

        let mut host = self::host(Arc::new(InsecureOpen)).await;
        host.events
            .send(offer(2, "v=0\r\nthis is not SDP\r\n"))
            .await
            .unwrap();
        let SignallingCommand::Close { session: 2, reason } = next(&mut host).await else {
            panic!("expected a close for session 2");
        };
        assert!(reason.contains("could not answer"), "{reason}");
        // A stray candidate for an unknown session changes nothing.
        host.events
            .send(SignallingEvent::Candidate {
                session: 99,
                candidate: Some("candidate:garbage".into()),
                sdp_mid: None,
            })
            .await
            .unwrap();
        assert_eq!(host.active.load(Ordering::Relaxed), 0);
    })
    .await
    .expect("test finished in time");
}
