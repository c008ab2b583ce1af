//! Moving a known byte pattern over a data channel as a byte stream: every
//! byte must arrive in order, and EOF only after the last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use intrust_agent::peer::engine::ChannelIo;
use intrust_agent::peer::stream::ChannelStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn byte_at(i: usize) -> u8 {
    (i % 251) as u8
}

/// Writes `size` pattern bytes into `from` (odd-sized writes; the stream
/// slices them into ≤ 64 KiB messages), shuts it down, and checks every
/// byte read from `to`. Returns how long it took.
pub async fn transfer(from: Arc<dyn ChannelIo>, to: Arc<dyn ChannelIo>, size: usize) -> Duration {
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let mut s = ChannelStream::new(from);
        let data: Vec<u8> = (0..size).map(byte_at).collect();
        for chunk in data.chunks(100_003) {
            s.write_all(chunk).await.unwrap();
        }
        s.shutdown().await.unwrap();
    });
    let mut reader = ChannelStream::new(to);
    let mut buf = vec![0u8; 50_000];
    let mut got = 0;
    loop {
        let n = reader.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, byte_at(got + k), "byte {} differs", got + k);
        }
        got += n;
    }
    assert_eq!(got, size, "EOF only after every byte");
    writer.await.unwrap();
    started.elapsed()
}
