//! The local control socket: `intrustctl` and test rigs ask the daemon for
//! its status, open or close the pairing window, install updates and clear
//! the error state.
//!
//! JSON lines over a Unix socket, one request and one response each (format
//! in ARCHITECTURE.md). Invariants: the socket is mode 0600 and only root or
//! the agent's own uid may talk to it (SO_PEERCRED); a line is at most
//! [`MAX_LINE`] bytes; a malformed line gets one error response and the
//! connection is closed, the server keeps running.

use crate::appliance::StateName;
use intrust_board::{LedPattern, LedRole};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Longest accepted line, in bytes, without the newline.
pub const MAX_LINE: usize = 4096;
/// Version of this protocol, reported in [`Versions::control_protocol`].
pub const PROTOCOL: u32 = 1;
/// Connections served at once; more are told so and closed.
const MAX_CONNECTIONS: usize = 16;

/// A request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    Pairing {
        action: PairingAction,
    },
    /// `{"cmd":"update","action":"apply","source":"/path"}` or
    /// `{"cmd":"update","action":"status"}`.
    Update(UpdateRequest),
    /// `{"cmd":"error","action":"clear"}`: the owner saw the error.
    Error {
        action: ErrorAction,
    },
    /// `{"cmd":"peers"}`: the status plus [`Response::sessions`].
    Peers,
}

/// What an `update` request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpdateRequest {
    /// Install the bundle at `source` (an absolute path on the device) into
    /// the other slot. Answered as soon as the install has started; its
    /// progress and result are in [`Status::update`].
    Apply { source: String },
    /// The status with [`UpdateStatus::slots`] filled in.
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorAction {
    Clear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairingAction {
    Open,
    Close,
}

/// A response line: `{"ok":true,"result":STATUS}` or `{"ok":false,"error":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The peer sessions; only in the answer to `{"cmd":"peers"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<PeerSession>>,
}

impl Response {
    pub fn ok(status: Status) -> Response {
        Response {
            ok: true,
            result: Some(status),
            error: None,
            sessions: None,
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(message.into()),
            sessions: None,
        }
    }

    pub fn into_result(self) -> Result<Status, String> {
        match (self.ok, self.result, self.error) {
            (true, Some(s), _) => Ok(s),
            (true, None, _) => Err("response says ok but has no result".into()),
            (false, _, e) => Err(e.unwrap_or_else(|| "error without a message".into())),
        }
    }
}

/// What the daemon reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub state: StateName,
    pub device_id: String,
    /// The board profile's name.
    pub board: String,
    pub versions: Versions,
    /// The pattern each of the board's LEDs shows.
    pub leds: BTreeMap<LedRole, LedPattern>,
    pub pairing_window: PairingWindow,
    /// Factory resets requested with the RESET button since start.
    pub factory_reset_requests: u64,
    /// The simulated board's socket, if the board has one.
    pub sim_socket: Option<PathBuf>,
    pub uptime_ms: u64,
    /// Progress while `state` is `updating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_percent: Option<u8>,
    /// The message while `state` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Updates and mark-good; present when recovery is wired
    /// (`recovery_config` in the agent config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateStatus>,
    /// The flock link; present when `[rendezvous]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendezvous: Option<RendezvousStatus>,
    /// Live peer sessions; present when `[rendezvous]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<u32>,
}

/// Where the flock link stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RendezvousStatus {
    /// `connecting`, `registered`, `rejected` or `retrying`.
    pub state: String,
    /// The name the appliance registers.
    pub name: String,
    /// One line for people, e.g. `registered as box-1`.
    pub detail: String,
    /// Browser sessions are let in without login (`--insecure-open`).
    pub insecure_open: bool,
}

/// One peer session in the answer to `{"cmd":"peers"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSession {
    /// The agent's id for the session.
    pub id: u64,
    /// flock's id of its signalling.
    pub signalling: u64,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// The selected candidate pair: `host`, `srflx`, `prflx` or `relay`
    /// (relayed if either side is, else reflexive if either side is), or
    /// `unknown` until ICE has selected a pair.
    pub pair: String,
    /// The pair's local and remote candidate types, when selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_candidate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_candidate: Option<String>,
    /// Round-trip time on the selected pair, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
    /// UDP payload bytes received from and sent to the browser.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub age_ms: u64,
}

/// Updates since the agent started, the boot slot waiting for a reboot and
/// whether the booted slot was marked good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// An install is running (its percent is [`Status::update_percent`]).
    pub running: bool,
    /// Installs started since the agent started; the running one, or the
    /// one `last` reports, is number `attempts`.
    pub attempts: u64,
    /// How the last finished install ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<UpdateResult>,
    /// The slot the next boot starts when it is not the booted one: an
    /// installed update waiting for a reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_slot: Option<String>,
    /// Mark-good of the booted slot, once the agent is up.
    pub mark_good: MarkGoodState,
    /// The recovery's view of the slots; only in the answer to
    /// `{"cmd":"update","action":"status"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<SlotsInfo>,
}

/// One finished install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateResult {
    /// Which install (see [`UpdateStatus::attempts`]).
    pub attempt: u64,
    /// The bundle it installed from.
    pub source: String,
    pub ok: bool,
    /// The bundle's version, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The slot written and activated, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// What went wrong, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where mark-good is: `{"result":"waiting"}` until the agent is up and
/// healthy, then `marked`/`already_good` (with the slot) or `failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum MarkGoodState {
    Waiting,
    Running,
    Marked { slot: String },
    AlreadyGood { slot: String },
    Failed { error: String },
}

/// The A/B slots as recovery reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotsInfo {
    pub booted: String,
    /// Slots in boot order.
    pub order: Vec<String>,
    /// The slot the next boot starts when it is not the booted one.
    pub pending: Option<String>,
    /// Tries left per slot.
    pub tries: BTreeMap<String, u8>,
    /// The last failed install's error, as recovery recorded it.
    pub last_error: Option<String>,
}

impl From<&crate::recovery::SlotsStatus> for SlotsInfo {
    fn from(s: &crate::recovery::SlotsStatus) -> SlotsInfo {
        SlotsInfo {
            booted: s.booted.name().into(),
            order: s.order.iter().map(|o| o.name().to_owned()).collect(),
            pending: s.pending.map(|p| p.name().to_owned()),
            tries: [("A".to_owned(), s.tries.a), ("B".to_owned(), s.tries.b)]
                .into_iter()
                .collect(),
            last_error: s.last_error.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    pub intrustd: String,
    pub control_protocol: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingWindow {
    pub open: bool,
    pub closes_in_ms: Option<u64>,
}

/// A request handed from a connection to the daemon, with where to answer.
#[derive(Debug)]
pub struct ControlRequest {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// Result of reading one line.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line is in the buffer (without its newline).
    Line,
    /// The peer closed the stream before another line.
    Eof,
    /// The line was longer than the limit. Part of it was consumed, the
    /// rest was not: the caller should close the connection.
    TooLong,
}

/// Reads one `\n`-terminated line of at most `max` bytes into `buf`, never
/// buffering more than `max` bytes. A last line without a newline counts.
pub async fn read_line_limited<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    buf.clear();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            if buf.len() + i > max {
                r.consume(i + 1);
                return Ok(LineRead::TooLong);
            }
            buf.extend_from_slice(&avail[..i]);
            r.consume(i + 1);
            return Ok(LineRead::Line);
        }
        let n = avail.len();
        if buf.len() + n > max {
            r.consume(n);
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(avail);
        r.consume(n);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} exists and is not a socket; refusing to remove it", path.display())]
    NotASocket { path: PathBuf },
    #[error("another process is already listening on {}; is intrustd already running?", path.display())]
    InUse { path: PathBuf },
}

/// Binds a Unix socket at `path` with mode 0600: creates missing parent
/// directories, removes a stale socket file, refuses to remove anything
/// else or a socket someone still listens on.
pub fn bind_socket(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |what, source| ControlError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| io("cannot create the directory of socket", e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse {
                    path: path.to_owned(),
                });
            }
            tracing::info!(socket = %path.display(), "removing stale socket file");
            std::fs::remove_file(path).map_err(|e| io("cannot remove stale socket", e))?;
        }
        Ok(_) => {
            return Err(ControlError::NotASocket {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot inspect socket path", e)),
    }
    // Bind under a temporary name, tighten, then rename into place: the
    // socket is never reachable with looser permissions.
    let file_name = path.file_name().ok_or_else(|| {
        io(
            "socket path has no file name",
            io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| io("cannot bind socket", e))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("cannot put socket in place with mode 0600", e));
    }
    Ok(listener)
}

/// The running control server. Dropping it (or [`shutdown`](Self::shutdown))
/// stops accepting and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    /// Binds `path` and serves connections; each request goes to `requests`.
    /// Must be called within a tokio runtime.
    pub fn bind(
        path: &Path,
        requests: mpsc::Sender<ControlRequest>,
    ) -> Result<ControlServer, ControlError> {
        let listener = bind_socket(path)?;
        // SAFETY: geteuid cannot fail.
        let own_uid = unsafe { libc::geteuid() };
        let task = tokio::spawn(accept_loop(listener, requests, own_uid));
        Ok(ControlServer {
            path: path.to_owned(),
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn shutdown(self) {
        drop(self)
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, requests: mpsc::Sender<ControlRequest>, own_uid: u32) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                // Avoid a hot loop on persistent errors (e.g. EMFILE).
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let requests = requests.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let Ok(_permit) = slots.try_acquire_owned() else {
                tracing::warn!("control socket: too many connections, refusing one");
                let _ = refuse(stream, "too many connections").await;
                return;
            };
            if let Err(e) = serve_connection(stream, requests, own_uid).await {
                tracing::debug!(error = %e, "control connection ended with an error");
            }
        });
    }
}

async fn refuse(mut stream: UnixStream, message: &str) -> io::Result<()> {
    write_response(&mut stream, &Response::error(message)).await?;
    stream.shutdown().await
}

async fn write_response<W: AsyncWriteExt + Unpin>(w: &mut W, r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

async fn serve_connection(
    stream: UnixStream,
    requests: mpsc::Sender<ControlRequest>,
    own_uid: u32,
) -> io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    if uid != 0 && uid != own_uid {
        tracing::warn!(
            uid,
            "control socket: refused a peer that is neither root nor our own user"
        );
        return refuse(
            stream,
            &format!("permission denied: uid {uid} may not use the control socket"),
        )
        .await;
    }
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::with_capacity(256);
    loop {
        let request = match read_line_limited(&mut rd, &mut buf, MAX_LINE).await? {
            LineRead::Eof => return Ok(()),
            LineRead::TooLong => {
                tracing::warn!(
                    "control socket: line longer than {MAX_LINE} bytes, closing the connection"
                );
                write_response(
                    &mut wr,
                    &Response::error(format!("line longer than {MAX_LINE} bytes")),
                )
                .await?;
                return wr.shutdown().await;
            }
            LineRead::Line => match serde_json::from_slice::<Request>(&buf) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: malformed request, closing the connection");
                    write_response(&mut wr, &Response::error(format!("malformed request: {e}")))
                        .await?;
                    return wr.shutdown().await;
                }
            },
        };
        let (reply, answer) = oneshot::channel();
        let response = if requests
            .send(ControlRequest { request, reply })
            .await
            .is_err()
        {
            Response::error("intrustd is shutting down")
        } else {
            answer
                .await
                .unwrap_or_else(|_| Response::error("intrustd is shutting down"))
        };
        write_response(&mut wr, &response).await?;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {}: is intrustd running? ({source})", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("control socket {}: unexpected reply: {message}", path.display())]
    Protocol { path: PathBuf, message: String },
    #[error("intrustd: {0}")]
    Agent(String),
}

/// An async client of the control socket.
#[derive(Debug)]
pub struct ControlClient {
    path: PathBuf,
    rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
    buf: Vec<u8>,
}

impl ControlClient {
    pub async fn connect(path: impl AsRef<Path>) -> Result<ControlClient, ClientError> {
        let path = path.as_ref().to_owned();
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.clone(),
                source,
            })?;
        let (rd, wr) = stream.into_split();
        Ok(ControlClient {
            path,
            rd: BufReader::new(rd),
            wr,
            buf: Vec::new(),
        })
    }

    /// Sends one request and waits for its status.
    pub async fn request(&mut self, request: &Request) -> Result<Status, ClientError> {
        self.exchange(request)
            .await?
            .into_result()
            .map_err(ClientError::Agent)
    }

    /// The status and the peer sessions.
    pub async fn peers(&mut self) -> Result<(Status, Vec<PeerSession>), ClientError> {
        let response = self.exchange(&Request::Peers).await?;
        let sessions = response.sessions.clone().unwrap_or_default();
        let status = response.into_result().map_err(ClientError::Agent)?;
        Ok((status, sessions))
    }

    /// Sends one request and waits for its response.
    pub async fn exchange(&mut self, request: &Request) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(request).map_err(|e| io(io::Error::other(e)))?;
        line.push(b'\n');
        if let Err(e) = self.wr.write_all(&line).await {
            // A refused peer (wrong uid, too many connections) gets one error
            // line and a closed socket, which can break our write first:
            // that line is the better message.
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                if let Ok(LineRead::Line) =
                    read_line_limited(&mut self.rd, &mut self.buf, 64 * 1024).await
                {
                    if let Ok(r) = serde_json::from_slice::<Response>(&self.buf) {
                        return Ok(r);
                    }
                }
            }
            return Err(io(e));
        }
        // A status line is small, but leave room for long error messages.
        match read_line_limited(&mut self.rd, &mut self.buf, 64 * 1024)
            .await
            .map_err(io)?
        {
            LineRead::Line => {}
            LineRead::Eof => {
                return Err(ClientError::Protocol {
                    path: self.path.clone(),
                    message: "connection closed".into(),
                })
            }
            LineRead::TooLong => {
                return Err(ClientError::Protocol {
                    path: self.path.clone(),
                    message: "reply too long".into(),
                })
            }
        }
        serde_json::from_slice(&self.buf).map_err(|e| ClientError::Protocol {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    pub async fn status(&mut self) -> Result<Status, ClientError> {
        self.request(&Request::Status).await
    }

    /// Opens (`true`) or closes the pairing window.
    pub async fn pairing(&mut self, open: bool) -> Result<Status, ClientError> {
        let action = if open {
            PairingAction::Open
        } else {
            PairingAction::Close
        };
        self.request(&Request::Pairing { action }).await
    }

    /// Starts installing the bundle at `source` (an absolute path).
    pub async fn update_apply(&mut self, source: &str) -> Result<Status, ClientError> {
        self.request(&Request::Update(UpdateRequest::Apply {
            source: source.to_owned(),
        }))
        .await
    }

    /// The status with the recovery's slots.
    pub async fn update_status(&mut self) -> Result<Status, ClientError> {
        self.request(&Request::Update(UpdateRequest::Status)).await
    }

    /// Clears the error state.
    pub async fn clear_error(&mut self) -> Result<Status, ClientError> {
        self.request(&Request::Error {
            action: ErrorAction::Clear,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn sample_status() -> Status {
        Status {
            state: StateName::Unpaired,
            device_id: "ab".repeat(16),
            board: "sim".into(),
            versions: Versions {
                intrustd: "0.1.0".into(),
                control_protocol: PROTOCOL,
            },
            leds: [
                (
                    LedRole::Status,
                    LedPattern::Blink {
                        on_ms: 500,
                        off_ms: 500,
                    },
                ),
                (LedRole::Link, LedPattern::Off),
            ]
            .into_iter()
            .collect(),
            pairing_window: PairingWindow {
                open: false,
                closes_in_ms: None,
            },
            factory_reset_requests: 0,
            sim_socket: Some("/run/intrustd/sim.sock".into()),
            uptime_ms: 12,
            update_percent: None,
            error: None,
            update: None,
            rendezvous: None,
            peers: None,
        }
    }

    #[test]
    fn wire_format_matches_architecture_md() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Pairing {
                action: PairingAction::Open
            })
            .unwrap(),
            r#"{"cmd":"pairing","action":"open"}"#
        );
        let v: serde_json::Value = serde_json::to_value(Response::ok(sample_status())).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(v["result"]["state"], "unpaired");
        assert_eq!(v["result"]["leds"]["status"]["kind"], "blink");
        assert_eq!(v["result"]["leds"]["link"]["kind"], "off");
        assert_eq!(
            v["result"]["pairing_window"]["closes_in_ms"],
            serde_json::Value::Null
        );
        assert_eq!(v["result"]["versions"]["control_protocol"], 1);
        assert!(v.get("error").is_none());
        assert!(v["result"].get("update").is_none());
        for (request, line) in [
            (
                Request::Update(UpdateRequest::Apply {
                    source: "/tmp/u.bundle".into(),
                }),
                r#"{"cmd":"update","action":"apply","source":"/tmp/u.bundle"}"#,
            ),
            (
                Request::Update(UpdateRequest::Status),
                r#"{"cmd":"update","action":"status"}"#,
            ),
            (
                Request::Error {
                    action: ErrorAction::Clear,
                },
                r#"{"cmd":"error","action":"clear"}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&request).unwrap(), line);
            assert_eq!(serde_json::from_str::<Request>(line).unwrap(), request);
        }
        let mut s = sample_status();
        s.update = Some(UpdateStatus {
            running: false,
            attempts: 1,
            last: Some(UpdateResult {
                attempt: 1,
                source: "/b".into(),
                ok: true,
                version: Some("2.0".into()),
                slot: Some("B".into()),
                error: None,
            }),
            pending_slot: Some("B".into()),
            mark_good: MarkGoodState::AlreadyGood { slot: "A".into() },
            slots: None,
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["update"],
            serde_json::json!({"running":false,"attempts":1,
                "last":{"attempt":1,"source":"/b","ok":true,"version":"2.0","slot":"B"},
                "pending_slot":"B","mark_good":{"result":"already_good","slot":"A"}})
        );
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), s);
        let e = serde_json::to_string(&Response::error("nope")).unwrap();
        assert_eq!(e, r#"{"ok":false,"error":"nope"}"#);
        let back: Response =
            serde_json::from_str(&serde_json::to_string(&Response::ok(sample_status())).unwrap())
                .unwrap();
        assert_eq!(back.into_result().unwrap(), sample_status());
    }

    #[test]
    fn malformed_requests_are_rejected() {
        for bad in [
            r#"{"cmd":"reboot"}"#,
            r#"{"cmd":"pairing"}"#,
            r#"{"cmd":"pairing","action":"ajar"}"#,
            r#"{"cmd":"update","action":"apply"}"#,
            r#"{"cmd":"update","action":"apply","source":"/b","force":true}"#,
            r#"{"cmd":"update"}"#,
            r#"{"cmd":"error","action":"ignore"}"#,
            "[]",
            "x",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn read_line_limited_bounds_lines() {
        let data = b"short\n\nexactly4\ntoolongline\nlast".to_vec();
        let mut r = BufReader::with_capacity(3, &data[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_limited(&mut r, &mut buf, 8).await.unwrap() {
                LineRead::Eof => break,
                LineRead::TooLong => {
                    got.push("<too long>".to_string());
                    break;
                }
                LineRead::Line => got.push(String::from_utf8(buf.clone()).unwrap()),
            }
        }
        assert_eq!(got, ["short", "", "exactly4", "<too long>"]);
        let mut r = BufReader::new(&b"a\nlast"[..]);
        assert_eq!(
            read_line_limited(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(
            read_line_limited(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"last");
        assert_eq!(
            read_line_limited(&mut r, &mut buf, 8).await.unwrap(),
            LineRead::Eof
        );
    }

    async fn answer_with_status(mut rx: mpsc::Receiver<ControlRequest>) {
        while let Some(req) = rx.recv().await {
            let mut s = sample_status();
            if let Request::Pairing {
                action: PairingAction::Open,
            } = req.request
            {
                s.state = StateName::PairingWindow;
            }
            let _ = req.reply.send(Response::ok(s));
        }
    }

    #[tokio::test]
    async fn server_answers_rejects_garbage_and_keeps_running() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("run/control.sock");
        let (tx, rx) = mpsc::channel(8);
        let server = ControlServer::bind(&path, tx).unwrap();
        tokio::spawn(answer_with_status(rx));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut c = ControlClient::connect(&path).await.unwrap();
        assert_eq!(c.status().await.unwrap().state, StateName::Unpaired);
        assert_eq!(
            c.pairing(true).await.unwrap().state,
            StateName::PairingWindow
        );

        // Garbage: one error line, then the server closes the connection.
        for garbage in [&b"{not json\n"[..], &[b'x'; MAX_LINE + 10][..]] {
            let mut s = UnixStream::connect(&path).await.unwrap();
            s.write_all(garbage).await.unwrap();
            s.write_all(b"\n").await.unwrap();
            let mut out = String::new();
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                s.read_to_string(&mut out),
            )
            .await
            .unwrap()
            .unwrap();
            let r: Response = serde_json::from_str(out.trim()).unwrap();
            assert!(!r.ok, "{out}");
            assert_eq!(out.lines().count(), 1, "{out}");
        }
        // Still serving.
        assert!(ControlClient::connect(&path)
            .await
            .unwrap()
            .status()
            .await
            .is_ok());
        server.shutdown();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_and_regular_file_are_not() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("c.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (tx, _rx) = mpsc::channel(1);
        let server = ControlServer::bind(&path, tx.clone()).unwrap();
        let err = ControlServer::bind(&path, tx.clone()).unwrap_err();
        assert!(matches!(err, ControlError::InUse { .. }), "{err}");
        drop(server);
        let file = t.path().join("file");
        std::fs::write(&file, "keep me").unwrap();
        let err = ControlServer::bind(&file, tx).unwrap_err();
        assert!(matches!(err, ControlError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn client_error_when_nobody_listens_says_so() {
        let t = tempfile::tempdir().unwrap();
        let err = ControlClient::connect(t.path().join("none.sock"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is intrustd running?"), "{err}");
        assert!(err.contains("none.sock"), "{err}");
    }
}
