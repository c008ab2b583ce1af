//! A data channel as a tokio byte stream ([`ChannelStream`]), so the
//! tunnel can run hyper on it exactly as on a TCP connection.
//!
//! Invariants: writes are cut into messages of at most
//! [`MAX_MESSAGE`] bytes and pend while the channel's send buffer is full
//! (back-pressure comes from the engine); a read returns at most one
//! received message's bytes, the rest waits in `pending`; EOF when the
//! channel closes; shutdown waits until the send buffer has drained, then
//! closes the channel (data channels have no half-close); dropping the
//! stream closes the channel at once (that is how a request is cancelled).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::engine::{ChannelIo, MessageKind, MAX_MESSAGE};

pub struct ChannelStream {
    io: Arc<dyn ChannelIo>,
    /// Received bytes not yet read.
    pending: Bytes,
    shut_down: bool,
}

impl ChannelStream {
    pub fn new(io: Arc<dyn ChannelIo>) -> Self {
        ChannelStream {
            io,
            pending: Bytes::new(),
            shut_down: false,
        }
    }

    pub fn label(&self) -> &str {
        self.io.label()
    }
}

impl AsyncRead for ChannelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match self.io.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                // A byte stream: text and binary messages carry bytes alike.
                Poll::Ready(Some(msg)) => self.pending = msg.data,
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChannelStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.shut_down {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the data channel stream is shut down",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_MESSAGE);
        self.io
            .poll_send(cx, MessageKind::Binary, &buf[..n])
            .map_ok(|()| n)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sent messages are in the SCTP send buffer: that is as flushed
        // as a TCP write is.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shut_down {
            if self.io.poll_drained(cx).is_pending() {
                return Poll::Pending;
            }
            self.shut_down = true;
            self.io.close();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for ChannelStream {
    fn drop(&mut self) {
        self.io.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::engine::Message;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An in-memory channel: `capacity` messages may be unsent at once.
    #[derive(Default)]
    struct FakeChannel {
        inbound: Mutex<VecDeque<Bytes>>,
        sent: Mutex<Vec<(MessageKind, Vec<u8>)>>,
        closed: Mutex<bool>,
    }

    impl ChannelIo for FakeChannel {
        fn poll_send(
            &self,
            _cx: &mut Context<'_>,
            kind: MessageKind,
            msg: &[u8],
        ) -> Poll<io::Result<()>> {
            assert!(msg.len() <= MAX_MESSAGE);
            if *self.closed.lock().unwrap() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            self.sent.lock().unwrap().push((kind, msg.to_vec()));
            Poll::Ready(Ok(()))
        }
        fn poll_drained(&self, _cx: &mut Context<'_>) -> Poll<()> {
            Poll::Ready(())
        }
        fn poll_recv(&self, _cx: &mut Context<'_>) -> Poll<Option<Message>> {
            Poll::Ready(
                self.inbound
                    .lock()
                    .unwrap()
                    .pop_front()
                    .map(|data| Message {
                        kind: MessageKind::Binary,
                        data,
                    }),
            )
        }
        fn close(&self) {
            *self.closed.lock().unwrap() = true;
        }
        fn label(&self) -> &str {
            "fake"
        }
    }

    #[tokio::test]
    async fn writes_are_sliced_and_reads_keep_the_rest() {
        let fake = Arc::new(FakeChannel::default());
        fake.inbound
            .lock()
            .unwrap()
            .extend([Bytes::from_static(b"hello "), Bytes::from_static(b"world")]);
        let mut s = ChannelStream::new(fake.clone());
        let mut small = [0u8; 3];
        s.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"lo world");

        s.write_all(&vec![7u8; MAX_MESSAGE * 2 + 10]).await.unwrap();
        let sent = fake.sent.lock().unwrap().clone();
        let sizes: Vec<usize> = sent.iter().map(|(_, m)| m.len()).collect();
        assert_eq!(sizes, [MAX_MESSAGE, MAX_MESSAGE, 10]);
        assert!(sent.iter().all(|(k, _)| *k == MessageKind::Binary));

        s.shutdown().await.unwrap();
        assert!(*fake.closed.lock().unwrap());
        assert!(s.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn drop_closes_the_channel() {
        let fake = Arc::new(FakeChannel::default());
        drop(ChannelStream::new(fake.clone()));
        assert!(*fake.closed.lock().unwrap());
    }
}
