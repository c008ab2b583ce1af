//! A webrtc-rs (`webrtc` crate) data-channel pair on loopback, moving N bytes
//! of fixed-size binary messages over one ordered, reliable channel — the same
//! channel kind the tunnel uses. Prints one JSON line per run on stdout:
//! `{"peer":"webrtc-rs 0.21.1","bytes":..,"secs":..}`.
//!
//! Usage: tunnel-baselines [--bytes N] [--message N] [--runs N] [--timeout-secs N]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState,
};

const PEER: &str = "webrtc-rs 0.21.1";
/// Chromium's send-queue cap; webrtc-rs' own suggestion for a browser-like sender.
const SEND_BUFFER_LIMIT: usize = 16 * 1024 * 1024;

struct Args {
    bytes: u64,
    message: usize,
    runs: u32,
    timeout: Duration,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        bytes: 256 << 20,
        message: 64 << 10,
        runs: 1,
        timeout: Duration::from_secs(120),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let number: u64 = value
            .parse()
            .with_context(|| format!("{flag} {value}: not a number"))?;
        match flag.as_str() {
            "--bytes" => args.bytes = number,
            "--message" => args.message = usize::try_from(number)?,
            "--runs" => args.runs = u32::try_from(number)?,
            "--timeout-secs" => args.timeout = Duration::from_secs(number),
            _ => bail!("unknown flag {flag} (know --bytes, --message, --runs, --timeout-secs)"),
        }
    }
    if args.message == 0 || args.bytes == 0 {
        bail!("--bytes and --message must be positive");
    }
    Ok(args)
}

/// Signals ICE gathering completion and connection failure.
struct Handler {
    gathered: mpsc::Sender<()>,
    failed: mpsc::Sender<String>,
    /// Only the answerer gets channels; it hands them to the receiving task.
    channels: Option<mpsc::Sender<Arc<dyn DataChannel>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Failed {
            let _ = self.failed.try_send(format!("connection state {state}"));
        }
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        if let Some(tx) = &self.channels {
            let _ = tx.try_send(channel);
        }
    }
}

async fn peer(handler: Handler) -> Result<impl PeerConnection> {
    PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(MediaEngine::default())
        .with_handler(Arc::new(handler))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .with_data_channel_send_buffer_limit(SEND_BUFFER_LIMIT)
        .build()
        .await
        .map_err(|e| anyhow!("build peer connection: {e}"))
}

/// One transfer: returns seconds from channel open (sender side) to the last
/// byte counted by the receiver.
async fn run_once(total: u64, message: usize) -> Result<f64> {
    let (failed_tx, mut failed_rx) = mpsc::channel(4);
    let (offer_gathered_tx, mut offer_gathered) = mpsc::channel(1);
    let offerer = peer(Handler {
        gathered: offer_gathered_tx,
        failed: failed_tx.clone(),
        channels: None,
    })
    .await?;
    let (answer_gathered_tx, mut answer_gathered) = mpsc::channel(1);
    let (channel_tx, mut channel_rx) = mpsc::channel(1);
    let answerer = peer(Handler {
        gathered: answer_gathered_tx,
        failed: failed_tx,
        channels: Some(channel_tx),
    })
    .await?;

    let dc = offerer
        .create_data_channel("bench", None)
        .await
        .map_err(|e| anyhow!("create data channel: {e}"))?;

    let offer = offerer
        .create_offer(None)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    offerer
        .set_local_description(offer)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    offer_gathered.recv().await;
    let offer = offerer
        .local_description()
        .await
        .context("offerer has no local description")?;
    answerer
        .set_remote_description(offer)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let answer = answerer
        .create_answer(None)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    answerer
        .set_local_description(answer)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    answer_gathered.recv().await;
    let answer = answerer
        .local_description()
        .await
        .context("answerer has no local description")?;
    offerer
        .set_remote_description(answer)
        .await
        .map_err(|e| anyhow!("{e}"))?;

    // Receiver: count bytes, report the instant the last one arrived.
    let (done_tx, done_rx) = oneshot::channel::<Result<Instant>>();
    tokio::spawn(async move {
        let Some(channel) = channel_rx.recv().await else {
            let _ = done_tx.send(Err(anyhow!("answerer got no data channel")));
            return;
        };
        let mut got = 0u64;
        while let Some(event) = channel.poll().await {
            match event {
                DataChannelEvent::OnMessage(msg) => {
                    got += msg.data.len() as u64;
                    if got >= total {
                        let _ = done_tx.send(Ok(Instant::now()));
                        return;
                    }
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
        let _ = done_tx.send(Err(anyhow!("channel closed after {got} of {total} bytes")));
    });

    // Sender: wait for open, then push; `send` blocks at the buffer limit.
    let (open_tx, open_rx) = oneshot::channel();
    let events = dc.clone();
    tokio::spawn(async move {
        let mut open_tx = Some(open_tx);
        while let Some(event) = events.poll().await {
            if let DataChannelEvent::OnOpen = event {
                if let Some(tx) = open_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    tokio::select! {
        r = open_rx => r.context("sender channel never opened")?,
        Some(why) = failed_rx.recv() => bail!("{why}"),
    }
    let start = Instant::now();
    let payload = BytesMut::from(&vec![0x5au8; message][..]);
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(message as u64) as usize;
        dc.send(payload.clone().split_to(n))
            .await
            .map_err(|e| anyhow!("send after {sent} bytes: {e}"))?;
        sent += n as u64;
    }
    let end = tokio::select! {
        r = done_rx => r.context("receiver task ended")??,
        Some(why) = failed_rx.recv() => bail!("{why}"),
    };
    let secs = end.duration_since(start).as_secs_f64();
    let _ = offerer.close().await;
    let _ = answerer.close().await;
    Ok(secs)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    for _ in 0..args.runs {
        let secs = tokio::time::timeout(args.timeout, run_once(args.bytes, args.message))
            .await
            .map_err(|_| anyhow!("webrtc-rs pair: no result within {:?}", args.timeout))??;
        println!(
            "{{\"peer\":\"{PEER}\",\"bytes\":{},\"message\":{},\"secs\":{secs:.6}}}",
            args.bytes, args.message
        );
    }
    Ok(())
}
