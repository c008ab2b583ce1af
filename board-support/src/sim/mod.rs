//! The simulated board: LEDs and buttons served on a Unix socket (JSON lines,
//! see [`proto`]), so people and test rigs can watch LEDs and press buttons.
//!
//! Invariants: the agent never waits on a client (LED changes go out through
//! a broadcast channel; a lagging or stuck client is dropped); a bad line
//! from one client closes that client only; every client sees a `hello`
//! snapshot and then every change after it, with nothing missed in between.

pub mod client;
pub mod proto;

pub use client::SimClient;
pub use proto::{SimIn, SimOut, MAX_LINE, PROTOCOL};

use crate::button_task::{self, RawEdge};
use crate::{BoardError, Button, ButtonEvent, Led, LedPattern, LedRole, Mono};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};

/// How many messages a client may fall behind before it is dropped.
const CLIENT_BACKLOG: usize = 256;
/// A client that does not take a line within this time is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

struct Shared {
    board: String,
    buttons: Vec<Button>,
    /// Current patterns. Held while broadcasting a change and while a new
    /// client subscribes, so a hello snapshot and the stream after it agree.
    leds: Mutex<BTreeMap<LedRole, LedPattern>>,
    tx: broadcast::Sender<SimOut>,
    raw: BTreeMap<Button, mpsc::Sender<RawEdge>>,
}

impl Shared {
    fn lock_leds(&self) -> std::sync::MutexGuard<'_, BTreeMap<LedRole, LedPattern>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.leds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running socket server. Dropping it stops accepting, closes clients
/// and removes the socket file.
pub struct SimServerHandle {
    path: PathBuf,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SimServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServerHandle")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SimServerHandle {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Clients currently connected.
    pub fn client_count(&self) -> usize {
        self.shared.tx.receiver_count()
    }
}

impl Drop for SimServerHandle {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A simulated LED: `set` records the pattern and tells every client.
pub struct SimLed {
    role: LedRole,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimLed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimLed").field("role", &self.role).finish()
    }
}

impl Led for SimLed {
    fn set(&mut self, pattern: &LedPattern) -> Result<(), BoardError> {
        let mut leds = self.shared.lock_leds();
        leds.insert(self.role, pattern.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.shared.tx.send(SimOut::Led {
            led: self.role,
            pattern: pattern.clone(),
            at_us: Mono::now().as_micros(),
        });
        Ok(())
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Board name announced in `hello`.
    pub board: String,
    pub leds: Vec<LedRole>,
    /// Buttons and their debounce periods.
    pub buttons: Vec<(Button, Duration)>,
}

/// Binds the socket at `path` (mode 0600; a stale socket file is replaced)
/// and starts serving. Debounced presses go to `events`. Returns the server
/// handle and one [`SimLed`] per configured LED (all start `Off`). Must be
/// called inside a tokio runtime.
pub fn start(
    path: &Path,
    cfg: &SimConfig,
    events: mpsc::Sender<ButtonEvent>,
) -> Result<(SimServerHandle, Vec<(LedRole, SimLed)>), BoardError> {
    let listener = bind_private(path)?;
    let (tx, _) = broadcast::channel(CLIENT_BACKLOG);
    let mut raw = BTreeMap::new();
    let tx_for_buttons = tx.clone();
    for &(button, period) in &cfg.buttons {
        let (raw_tx, raw_rx) = mpsc::channel(64);
        let btx = tx_for_buttons.clone();
        let handed: button_task::Handed = Box::new(move |ev: &ButtonEvent| {
            let _ = btx.send(SimOut::Button {
                button: ev.button,
                edge: ev.edge,
                at_us: Mono::now().as_micros(),
            });
        });
        button_task::spawn(button, period, false, raw_rx, events.clone(), Some(handed));
        raw.insert(button, raw_tx);
    }
    let shared = Arc::new(Shared {
        board: cfg.board.clone(),
        buttons: cfg.buttons.iter().map(|(b, _)| *b).collect(),
        leds: Mutex::new(cfg.leds.iter().map(|r| (*r, LedPattern::Off)).collect()),
        tx,
        raw,
    });
    let accept = tokio::spawn(accept_loop(listener, shared.clone()));
    let leds = cfg
        .leds
        .iter()
        .map(|r| {
            (
                *r,
                SimLed {
                    role: *r,
                    shared: shared.clone(),
                },
            )
        })
        .collect();
    Ok((
        SimServerHandle {
            path: path.to_path_buf(),
            shared,
            accept,
        },
        leds,
    ))
}

/// Binds under a temporary name, sets 0600, then renames into place, so the
/// socket is never reachable with looser permissions.
fn bind_private(path: &Path) -> Result<UnixListener, BoardError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let what = |s: &str| format!("sim socket {}: {s}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| BoardError::io(what("removing the stale socket"), e))?,
        Ok(_) => {
            return Err(BoardError::Other(what(
                "exists and is not a socket; refusing to replace it",
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BoardError::io(what("checking the path"), e)),
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| BoardError::Other(what("the path has no file name")))?
        .to_string_lossy()
        .into_owned();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| BoardError::io(what("binding"), e))?;
    let finish = || -> std::io::Result<()> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_file(&tmp);
        return Err(BoardError::io(
            what("setting mode 0600 and moving into place"),
            e,
        ));
    }
    Ok(listener)
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    let mut clients = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    clients.spawn(serve_client(stream, shared.clone()));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "sim socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished clients so the set does not grow without bound.
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
    // The JoinSet aborts every client task when this task is aborted.
}

enum LineRead {
    Line,
    TooLong,
    Eof,
}

/// Reads one line of at most `max` bytes (newline excluded) into `buf`.
async fn read_line_limited<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let n = (&mut *r)
        .take(max as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(LineRead::Line);
    }
    if buf.len() > max {
        return Ok(LineRead::TooLong);
    }
    Ok(LineRead::Line) // last line, no newline before EOF
}

async fn serve_client(stream: UnixStream, shared: Arc<Shared>) {
    let (rd, mut wr) = stream.into_split();
    let (hello, mut rx) = {
        let leds = shared.lock_leds();
        let rx = shared.tx.subscribe();
        let hello = SimOut::Hello {
            protocol: PROTOCOL,
            board: shared.board.clone(),
            buttons: shared.buttons.clone(),
            leds: leds.clone(),
            now_us: Mono::now().as_micros(),
        };
        (hello, rx)
    };
    if write_line(&mut wr, &hello).await.is_err() {
        return;
    }
    // The reader runs apart from the writer so a slow line never delays
    // broadcasts and vice versa; it reports a fatal problem once.
    let (fatal_tx, mut fatal_rx) = oneshot::channel::<String>();
    let reader = tokio::spawn(read_ops(rd, shared.clone(), fatal_tx));
    let _abort_reader = AbortOnDrop(reader);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(m) => if write_line(&mut wr, &m).await.is_err() { return },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "sim socket: dropping a client that fell behind");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            fatal = &mut fatal_rx => {
                if let Ok(message) = fatal {
                    let _ = write_line(&mut wr, &SimOut::Error { message }).await;
                    let _ = wr.shutdown().await;
                }
                // Err: the client closed its side; we are done too.
                return;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn write_line(wr: &mut tokio::net::unix::OwnedWriteHalf, msg: &SimOut) -> Result<(), ()> {
    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(msg.to_line().as_bytes())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()), // client gone
        Err(_) => {
            tracing::warn!("sim socket: dropping a client that stopped reading");
            Err(())
        }
    }
}

async fn read_ops(
    rd: tokio::net::unix::OwnedReadHalf,
    shared: Arc<Shared>,
    fatal: oneshot::Sender<String>,
) {
    let mut reader = BufReader::new(rd);
    let mut buf = Vec::new();
    let problem = loop {
        match read_line_limited(&mut reader, &mut buf, MAX_LINE).await {
            Ok(LineRead::Eof) | Err(_) => return, // dropping `fatal` ends the writer
            Ok(LineRead::TooLong) => break format!("line longer than {MAX_LINE} bytes"),
            Ok(LineRead::Line) => {}
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let op = match serde_json::from_slice::<SimIn>(&buf) {
            Ok(op) => op,
            Err(e) => break format!("malformed line: {e}"),
        };
        let (button, pressed) = match op {
            SimIn::Press { button } => (button, true),
            SimIn::Release { button } => (button, false),
        };
        let Some(raw) = shared.raw.get(&button) else {
            break format!(
                "button `{button}` is not simulated on board {}",
                shared.board
            );
        };
        // try_send: a client hammering a button must not block anyone.
        if raw
            .try_send(RawEdge {
                pressed,
                at: Mono::now(),
            })
            .is_err()
        {
            tracing::warn!(%button, "sim socket: button edge dropped (debouncer backlog full)");
        }
    };
    tracing::warn!(problem = %problem, "sim socket: closing a client after a bad line");
    let _ = fatal.send(problem);
}
