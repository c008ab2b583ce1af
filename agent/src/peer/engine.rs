//! The engine-neutral face of a WebRTC implementation.
//!
//! A [`PeerEngine`] turns a remote SDP offer into a local answer and a
//! running [`Session`]; the session reports [`SessionEvent`]s (channels
//! opened by the remote, connection up, session closed) on a channel and
//! hands out each data channel as a [`ChannelIo`]: whole messages in and
//! out, each marked text or binary ([`MessageKind`]), with back-pressure on
//! the sending side. Invariant: a message passed to [`ChannelIo::poll_send`]
//! is accepted whole or not at all.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// A STUN or TURN server (flock hands these out with short-lived TURN
/// credentials).
pub use flock_proto::IceServer;

/// Largest data channel message the agent sends or expects (the tunnel
/// cuts its byte streams into slices of at most this size).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// What went wrong in the peer engine.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the remote SDP offer is not usable: {0}")]
    BadOffer(String),
    #[error("the remote SDP answer is not usable: {0}")]
    BadAnswer(String),
    #[error("the remote ICE candidate {candidate:?} is not usable: {reason}")]
    BadCandidate { candidate: String, reason: String },
    #[error("could not set up the UDP socket for a session on {addr}: {source}")]
    Socket {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("the session is closed")]
    SessionClosed,
    #[error("the WebRTC engine failed: {0}")]
    Engine(String),
}

/// Something a session reports to its owner, in order.
pub enum SessionEvent {
    /// ICE and DTLS are up; data channels can flow.
    Connected,
    /// The remote peer opened a data channel.
    ChannelOpen {
        label: String,
        channel: Arc<dyn ChannelIo>,
    },
    /// The session ended (remote gone, ICE failed, or closed locally); no
    /// more events follow.
    Closed { reason: String },
}

impl std::fmt::Debug for SessionEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEvent::Connected => f.write_str("Connected"),
            SessionEvent::ChannelOpen { label, .. } => {
                f.debug_struct("ChannelOpen").field("label", label).finish()
            }
            SessionEvent::Closed { reason } => {
                f.debug_struct("Closed").field("reason", reason).finish()
            }
        }
    }
}

/// How a data channel message is marked on the wire (the SCTP payload
/// protocol). Browsers hand a text message to scripts as a string and a
/// binary one as an `ArrayBuffer`/`Blob`: the `control` channel's JSON is
/// text, the byte streams of `http/1.1` channels are binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Binary,
    /// UTF-8 text (a message that is not valid UTF-8 is refused).
    Text,
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    pub data: Bytes,
}

/// One data channel: reliable, ordered messages.
pub trait ChannelIo: Send + Sync + 'static {
    /// Sends one message of at most [`MAX_MESSAGE`] bytes, marked `kind`.
    /// Pending while the channel's (or the session's) send buffer is full;
    /// an error once the channel or the session is closed, or for a
    /// [`MessageKind::Text`] message that is not UTF-8.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        kind: MessageKind,
        msg: &[u8],
    ) -> Poll<io::Result<()>>;
    /// Ready once everything sent so far has left the send buffer (or the
    /// channel is closed).
    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()>;
    /// The next received message; `None` once the channel is closed (by
    /// either side, or with the session) and everything received is read.
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Message>>;
    /// Closes the channel; queued sends may be dropped. Idempotent.
    fn close(&self);
    /// The channel's label.
    fn label(&self) -> &str;
}

/// A running session (the engine drives it in the background).
pub trait Session: Send + Sync {
    /// Adds a remote ICE candidate (an SDP `candidate:` line, with or
    /// without the `a=` prefix).
    fn add_remote_candidate(&self, candidate: &str) -> Result<(), PeerError>;
    /// The local candidates (SDP `candidate:` lines) to send to the remote.
    fn local_candidates(&self) -> Vec<String>;
    /// Opens a data channel from this side (the browser role); resolves
    /// once the channel is open.
    fn open_channel(&self, label: &str) -> Result<PendingChannel, PeerError>;
    /// Closes the session; a [`SessionEvent::Closed`] follows.
    fn close(&self);
    /// What the session looks like now (for status and `intrustctl peers`).
    fn stats(&self) -> SessionStats;
}

/// An ICE candidate's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CandidateType {
    Host,
    /// Peer reflexive: learnt from a connectivity check, not signalled.
    Prflx,
    Srflx,
    Relay,
}

impl CandidateType {
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Host => "host",
            CandidateType::Prflx => "prflx",
            CandidateType::Srflx => "srflx",
            CandidateType::Relay => "relay",
        }
    }

    /// How a pair is described: relayed if either side is, else reflexive
    /// if either side is, else host (a direct path on one network).
    pub fn of_pair(local: CandidateType, remote: CandidateType) -> CandidateType {
        local.max(remote)
    }
}

/// A session's counters and selected path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// ICE and DTLS are up.
    pub connected: bool,
    /// The types of the selected candidate pair (local, remote), once ICE
    /// has chosen one.
    pub pair: Option<(CandidateType, CandidateType)>,
    /// Round-trip time on the selected pair (ICE consent checks).
    pub rtt: Option<std::time::Duration>,
    /// UDP payload bytes received and sent (all of ICE, DTLS and SCTP).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A channel opened locally, not yet open.
pub struct PendingChannel(pub(crate) oneshot::Receiver<Arc<dyn ChannelIo>>);

impl PendingChannel {
    /// Waits until the remote has accepted the channel.
    pub async fn open(self) -> Result<Arc<dyn ChannelIo>, PeerError> {
        self.0.await.map_err(|_| PeerError::SessionClosed)
    }
}

/// A new session: the answer to send back, the handle, and its events.
pub struct Accepted {
    pub answer_sdp: String,
    pub session: Arc<dyn Session>,
    pub events: mpsc::UnboundedReceiver<SessionEvent>,
    /// Candidates gathered after the session started (server-reflexive,
    /// relayed) as SDP `candidate:` lines, in order, to trickle to the
    /// remote; the channel ends when gathering is over (end of candidates).
    /// Host candidates are in the SDP and [`Session::local_candidates`].
    pub local_candidates: mpsc::UnboundedReceiver<String>,
}

/// A WebRTC implementation that answers offers.
pub trait PeerEngine: Send + Sync {
    /// Creates a session from a remote offer and starts driving it.
    fn accept_offer(&self, offer_sdp: &str) -> Result<Accepted, PeerError>;
    /// The STUN/TURN servers to gather candidates from, for sessions
    /// created from now on (an engine without gathering ignores them).
    fn set_ice_servers(&self, servers: Vec<IceServer>) {
        let _ = servers;
    }
}
