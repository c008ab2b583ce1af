//! The device side of the rendezvous: one long-lived, authenticated
//! WebSocket link to flock (`/device`, postcard frames; see the "Peer
//! connection" section of `ARCHITECTURE.md`) that carries WebRTC signalling
//! between browsers and the peer engine.
//!
//! - [`link`]: the sans-IO state machine (challenge answer, registration,
//!   keepalive, session relay, reconnect with backoff);
//! - [`backoff`]: reconnect delays with jitter;
//! - [`identity`]: the device's P-256 key in the state directory;
//! - [`client`]: the thin tokio shell (TCP, optional TLS, WebSocket).
//!
//! # Plugging in the peer engine
//!
//! [`client::Rendezvous::spawn`] returns a handle and a receiver of
//! [`SignallingEvent`]s; the engine answers with [`SignallingCommand`]s
//! through [`client::Rendezvous::commands`]. Per browser session: the engine
//! gets [`SignallingEvent::Offer`], sends [`SignallingCommand::Answer`],
//! trickles [`SignallingCommand::Candidate`]s (a `None` candidate = end of
//! candidates) while receiving [`SignallingEvent::Candidate`]s, and either
//! side ends signalling with `Close`/`Closed`. Session ids are valid only on
//! the flock connection that delivered the offer: after
//! [`SignallingEvent::Disconnected`] commands for older sessions are dropped
//! (an established peer connection does not need flock and may go on).
//!
//! Invariants: the agent keeps running whatever flock does (refuses,
//! rejects, sends garbage, disappears): every failure ends in a logged
//! error, a visible [`LinkStatus`] and a retry after a backoff.

pub mod backoff;
pub mod client;
pub mod identity;
pub mod link;

use flock_proto::{DeviceName, IceServer};
use intrust_board::Mono;

pub use client::{Rendezvous, RendezvousConfig, RendezvousError};

/// flock → peer engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignallingEvent {
    /// A browser's offer; `ice_servers` are the latest from flock (STUN and
    /// TURN with short-lived credentials) for the engine's candidates.
    Offer {
        session: u64,
        sdp: String,
        ice_servers: Vec<IceServer>,
    },
    /// A trickled browser candidate; `candidate: None` = end of candidates.
    Candidate {
        session: u64,
        candidate: Option<String>,
        sdp_mid: Option<String>,
    },
    /// The browser went away or flock ended the session.
    Closed { session: u64, reason: String },
    /// flock (re)registered the device and sent STUN/TURN servers; sent on
    /// every registration and on every credential refresh (half the TTL).
    IceServers(Vec<IceServer>),
    /// The flock connection is gone; signalling for sessions so far is over.
    Disconnected,
}

/// Peer engine → flock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignallingCommand {
    /// The device's answer to [`SignallingEvent::Offer`].
    Answer { session: u64, sdp: String },
    /// A device candidate; `candidate: None` = end of candidates.
    Candidate {
        session: u64,
        candidate: Option<String>,
        sdp_mid: Option<String>,
    },
    /// The device ends the session (refused, failed, done).
    Close { session: u64, reason: String },
}

impl SignallingCommand {
    pub fn session(&self) -> u64 {
        match self {
            SignallingCommand::Answer { session, .. }
            | SignallingCommand::Candidate { session, .. }
            | SignallingCommand::Close { session, .. } => *session,
        }
    }
}

/// Where the flock link stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// Dialing or registering.
    Connecting,
    Registered {
        name: DeviceName,
    },
    /// flock refused the registration; the next try is at `retry_at`.
    Rejected {
        reason: String,
        retry_at: Mono,
    },
    /// The last connection failed with `error`; the next try is at `retry_at`.
    Retrying {
        error: String,
        retry_at: Mono,
    },
}

impl LinkStatus {
    /// One line for people, e.g. `registered as box-1`,
    /// `rejected: name is taken (retrying in 60 s)`.
    pub fn describe(&self, now: Mono) -> String {
        let secs = |at: Mono| at.saturating_since(now).as_secs_f64().ceil() as u64;
        match self {
            LinkStatus::Connecting => "connecting".into(),
            LinkStatus::Registered { name } => format!("registered as {}", name.as_str()),
            LinkStatus::Rejected { reason, retry_at } => {
                format!("rejected: {reason} (retrying in {} s)", secs(*retry_at))
            }
            LinkStatus::Retrying { error, retry_at } => {
                format!("retrying in {} s (last error: {error})", secs(*retry_at))
            }
        }
    }

    pub fn is_registered(&self) -> bool {
        matches!(self, LinkStatus::Registered { .. })
    }
}

#[cfg(test)]
mod tests;
