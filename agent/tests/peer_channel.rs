//! One data channel between two str0m sessions on loopback, as byte
//! streams both ways: every byte arrives in order, EOF follows the
//! sender's shutdown, and the throughput is printed.

use std::sync::Arc;
use std::time::Duration;

use intrust_agent::peer::engine::{ChannelIo, PeerEngine, SessionEvent};
use intrust_agent::peer::str0m_engine::{Str0mConfig, Str0mEngine};
use tokio::time::timeout;

mod common;

const SIZE: usize = 16 * 1024 * 1024;

async fn pair() -> (Arc<dyn ChannelIo>, Arc<dyn ChannelIo>) {
    let engine = Str0mEngine::new(Str0mConfig::default());
    let pending = engine.create_offer("bulk").unwrap();
    let mut device = engine.accept_offer(pending.offer_sdp()).unwrap();
    let (browser, first) = pending.accept_answer(&device.answer_sdp).unwrap();
    let mut browser_events = browser.events;
    tokio::spawn(async move { while browser_events.recv().await.is_some() {} });
    // The sessions must outlive the test body.
    std::mem::forget(browser.session);
    std::mem::forget(device.session);
    let device_side = loop {
        match device.events.recv().await.expect("device session alive") {
            SessionEvent::ChannelOpen { label, channel } => {
                assert_eq!(label, "bulk");
                break channel;
            }
            SessionEvent::Closed { reason } => panic!("session closed: {reason}"),
            SessionEvent::Connected => {}
        }
    };
    tokio::spawn(async move { while device.events.recv().await.is_some() {} });
    (first.open().await.unwrap(), device_side)
}

/// The pattern over the channel, checked, with the throughput printed.
async fn transfer(from: Arc<dyn ChannelIo>, to: Arc<dyn ChannelIo>, what: &str) {
    let secs = common::transfer::transfer(from, to, SIZE)
        .await
        .as_secs_f64();
    println!(
        "data channel {what}: {} MiB in {secs:.2} s = {:.1} MB/s",
        SIZE >> 20,
        SIZE as f64 / secs / 1e6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_arrive_in_order_both_ways() {
    timeout(Duration::from_secs(40), async {
        let (browser, device) = pair().await;
        transfer(device, browser, "device -> browser").await;
        let (browser, device) = pair().await;
        transfer(browser, device, "browser -> device").await;
    })
    .await
    .expect("test finished in time");
}
