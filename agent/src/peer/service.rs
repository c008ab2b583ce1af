//! The daemon's peer connection: the flock link ([`Rendezvous`]) feeding a
//! [`PeerHost`], started from `[rendezvous]` and `[peer]`.
//!
//! Invariants: sessions are admitted only by the authenticator chosen here
//! ([`RefuseAll`] unless the daemon was started with `--insecure-open`);
//! stopping closes every live session and the flock link, and never waits
//! more than [`STOP_GRACE`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use intrust_board::Mono;
use tokio::sync::watch;

use super::host::{Authenticator, InsecureOpen, LiveSessions, PeerHost, RefuseAll};
use crate::config::{Config, RendezvousSection};
use crate::control::{PeerSession, RendezvousStatus};
use crate::rendezvous::link::Timing;
use crate::rendezvous::{identity, LinkStatus, Rendezvous, RendezvousConfig};
use crate::state_dir::StateDir;

/// How long stopping waits for sessions to close.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The running peer connection.
pub struct PeerService {
    name: String,
    insecure_open: bool,
    rendezvous: Rendezvous,
    live: LiveSessions,
    host: tokio::task::JoinHandle<()>,
}

impl PeerService {
    /// Starts the link and the host for `section`; the device key is loaded
    /// from (or created in) `state`. Must run within a tokio runtime.
    pub fn start(
        config: &Config,
        section: &RendezvousSection,
        state: &StateDir,
        insecure_open: bool,
    ) -> anyhow::Result<PeerService> {
        let name = section.device_name().map_err(anyhow::Error::msg)?;
        let key = identity::load_or_create(state)?;
        let (rendezvous, events) = Rendezvous::spawn(
            RendezvousConfig {
                flock_url: section.flock_url.clone(),
                name: name.clone(),
                ca_file: section.ca_file.clone(),
                timing: Timing::default(),
            },
            key,
        )?;
        let auth: Arc<dyn Authenticator> = if insecure_open {
            Arc::new(InsecureOpen)
        } else {
            Arc::new(RefuseAll)
        };
        let host = PeerHost::new(
            Arc::new(config.peer.engine()),
            config.peer.tunnel(name.as_str()),
            auth,
        );
        let live = host.live_sessions();
        let host = tokio::spawn(host.run(events, rendezvous.commands()));
        tracing::info!(
            flock = %section.flock_url,
            name = %name.as_str(),
            bind = %config.peer.bind,
            apps = config.peer.apps.len(),
            "peer connection started"
        );
        Ok(PeerService {
            name: name.as_str().to_owned(),
            insecure_open,
            rendezvous,
            live,
            host,
        })
    }

    /// The number of connected sessions (ICE and DTLS up), updated on
    /// every change: what the appliance state and the link LED show.
    pub fn watch_connected(&self) -> watch::Receiver<usize> {
        self.live.watch_connected()
    }

    /// The flock link, for status.
    pub fn status(&self, now: Mono) -> RendezvousStatus {
        let link = self.rendezvous.status();
        RendezvousStatus {
            state: match link {
                LinkStatus::Connecting => "connecting",
                LinkStatus::Registered { .. } => "registered",
                LinkStatus::Rejected { .. } => "rejected",
                LinkStatus::Retrying { .. } => "retrying",
            }
            .into(),
            name: self.name.clone(),
            detail: link.describe(now),
            insecure_open: self.insecure_open,
        }
    }

    /// The live sessions, for `{"cmd":"peers"}`.
    pub fn sessions(&self) -> Vec<PeerSession> {
        let now = Instant::now();
        self.live
            .list()
            .into_iter()
            .map(|s| PeerSession {
                id: s.id,
                signalling: s.signalling,
                connected: s.stats.connected,
                pair: match s.stats.pair {
                    Some((l, r)) => super::engine::CandidateType::of_pair(l, r).as_str(),
                    None => "unknown",
                }
                .into(),
                local_candidate: s.stats.pair.map(|(l, _)| l.as_str().into()),
                remote_candidate: s.stats.pair.map(|(_, r)| r.as_str().into()),
                rtt_us: s.stats.rtt.map(|d| d.as_micros() as u64),
                bytes_in: s.stats.bytes_in,
                bytes_out: s.stats.bytes_out,
                age_ms: now.saturating_duration_since(s.started).as_millis() as u64,
            })
            .collect()
    }

    /// Closes every session and the flock link; waits at most
    /// [`STOP_GRACE`] for the sessions to end.
    pub async fn stop(self) {
        let mut count = self.live.watch_count();
        self.live.close_all();
        let _ = tokio::time::timeout(STOP_GRACE, count.wait_for(|n| *n == 0)).await;
        // Ends the link task; its event channel closes, and the host loop
        // with it.
        drop(self.rendezvous);
        let _ = tokio::time::timeout(STOP_GRACE, self.host).await;
        tracing::info!("peer connection stopped");
    }
}
