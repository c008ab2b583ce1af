//! A small async client for the simulated board socket, for `intrustctl
//! board watch/press` and the HIL rig: connect, press/release, read messages.

use super::proto::{SimIn, SimOut};
use crate::Button;
use std::io;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Longest line accepted from the board (hello with two 16-step sequences
/// is well under this).
const MAX_IN_LINE: u64 = 64 * 1024;

/// A connection to a simulated board.
#[derive(Debug)]
pub struct SimClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    buf: Vec<u8>,
}

impl SimClient {
    /// Connects; the first [`next`](Self::next) message is the `hello`.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<SimClient> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("connecting to sim socket {}: {e}", path.display()),
            )
        })?;
        let (rd, writer) = stream.into_split();
        Ok(SimClient {
            reader: BufReader::new(rd),
            writer,
            buf: Vec::new(),
        })
    }

    /// Sends one operation.
    pub async fn send(&mut self, op: &SimIn) -> io::Result<()> {
        let mut line = serde_json::to_string(op).map_err(io::Error::other)?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await
    }

    pub async fn press(&mut self, button: Button) -> io::Result<()> {
        self.send(&SimIn::Press { button }).await
    }

    pub async fn release(&mut self, button: Button) -> io::Result<()> {
        self.send(&SimIn::Release { button }).await
    }

    /// Sends raw bytes (for tests of the server's input checks).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// The next message, or `None` when the board closed the connection.
    pub async fn next(&mut self) -> io::Result<Option<SimOut>> {
        self.buf.clear();
        let n = (&mut self.reader)
            .take(MAX_IN_LINE)
            .read_until(b'\n', &mut self.buf)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.last() != Some(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sim socket: line without newline ({n} bytes, limit {MAX_IN_LINE})"),
            ));
        }
        serde_json::from_slice(&self.buf).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sim socket: bad message: {e}"),
            )
        })
    }
}
