//! Ending a session is noticed by the other side at once (DTLS
//! close_notify), not after the 30 s consent/silence timeout: a device
//! must not keep a browser's session — and its app connections — open
//! long after the tab closed the connection.

use std::time::{Duration, Instant};

use intrust_agent::peer::engine::{PeerEngine, SessionEvent};
use intrust_agent::peer::str0m_engine::{Str0mConfig, Str0mEngine};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;

/// Far below the silence timeout (30 s) and far above a loopback RTT.
const NOTICE: Duration = Duration::from_secs(3);

async fn until_connected(events: &mut UnboundedReceiver<SessionEvent>) {
    loop {
        match timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(SessionEvent::Connected)) => return,
            Ok(Some(SessionEvent::Closed { reason })) => panic!("closed early: {reason}"),
            Ok(Some(_)) => {}
            Ok(None) => panic!("events ended before Connected"),
            Err(_) => panic!("not connected within 10 s"),
        }
    }
}

/// Waits for `Closed`; returns its reason and how long it took.
async fn until_closed(events: &mut UnboundedReceiver<SessionEvent>) -> (String, Duration) {
    let started = Instant::now();
    loop {
        match timeout(NOTICE, events.recv()).await {
            Ok(Some(SessionEvent::Closed { reason })) => return (reason, started.elapsed()),
            Ok(Some(_)) => {}
            Ok(None) => panic!("events ended without Closed"),
            Err(_) => panic!("the close was not noticed within {NOTICE:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_side_closing_is_noticed_by_the_other_at_once() {
    for device_closes in [false, true] {
        let engine = Str0mEngine::new(Str0mConfig::default());
        let pending = engine.create_offer("control").unwrap();
        let mut device = engine.accept_offer(pending.offer_sdp()).unwrap();
        let (mut browser, first) = pending.accept_answer(&device.answer_sdp).unwrap();
        until_connected(&mut browser.events).await;
        until_connected(&mut device.events).await;
        let _channel = timeout(Duration::from_secs(10), first.open())
            .await
            .expect("channel open in time")
            .unwrap();

        let (closer, mut other) = if device_closes {
            (device.session.clone(), browser.events)
        } else {
            (browser.session.clone(), device.events)
        };
        closer.close();
        let (reason, took) = until_closed(&mut other).await;
        println!("device_closes={device_closes}: noticed in {took:?} ({reason})");
        assert!(
            reason.contains("closed"),
            "the reason says the peer closed: {reason}"
        );
    }
}
