//! The device's side of browser sessions: takes signalling from the
//! rendezvous link, asks the [`Authenticator`], answers offers with the
//! engine and serves each session's channels with the tunnel.
//!
//! Invariants: a refused or failed offer is answered with a `Close`
//! carrying a reason a person can act on; a session lives until its peer
//! connection ends, independent of flock (signalling state for it is
//! dropped on `Closed`/`Disconnected`, the connection goes on); nothing a
//! browser or flock sends can stop the host loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::engine::{PeerEngine, Session, SessionEvent, SessionStats};
use super::tunnel::{serve_session, TunnelConfig};
use crate::rendezvous::{SignallingCommand, SignallingEvent};

/// Decides whether a browser session may start.
pub trait Authenticator: Send + Sync {
    /// `Err(reason)` refuses the session; the reason goes to the browser.
    fn admit(&self, session: u64) -> Result<(), String>;
}

/// Admits every session: only with `--insecure-open`, until login exists.
#[derive(Debug, Clone, Copy)]
pub struct InsecureOpen;

impl Authenticator for InsecureOpen {
    fn admit(&self, _session: u64) -> Result<(), String> {
        Ok(())
    }
}

/// Refuses every session (the default until the login issue).
#[derive(Debug, Clone, Copy)]
pub struct RefuseAll;

impl Authenticator for RefuseAll {
    fn admit(&self, _session: u64) -> Result<(), String> {
        Err(
            "this device does not accept sessions yet: login is not built; \
             its owner can start intrustd with --insecure-open for testing"
                .into(),
        )
    }
}

/// One live session as status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The host's own id (flock's ids restart with a new flock connection).
    pub id: u64,
    /// flock's id of the session's signalling.
    pub signalling: u64,
    /// When the offer was accepted.
    pub started: Instant,
    pub stats: SessionStats,
}

/// One session the host serves.
struct Entry {
    /// flock's session id.
    signalling: u64,
    started: Instant,
    session: Arc<dyn Session>,
    /// ICE and DTLS came up (a session still negotiating, or one whose
    /// ICE never connects, is not a connected peer).
    connected: bool,
}

/// Host id → its entry.
type Live = BTreeMap<u64, Entry>;

/// The sessions that are up, shared between the host and whoever reports
/// them (the daemon's status). Cheap to clone. Two counts are watched:
/// every session served (`watch_count`, for shutdown) and the connected
/// ones (`watch_connected`, what the appliance state and the link LED
/// show).
#[derive(Clone)]
pub struct LiveSessions {
    sessions: Arc<Mutex<Live>>,
    count: Arc<watch::Sender<usize>>,
    connected: Arc<watch::Sender<usize>>,
}

impl LiveSessions {
    fn new() -> Self {
        LiveSessions {
            sessions: Default::default(),
            count: Arc::new(watch::channel(0).0),
            connected: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` and publishes both counts.
    fn update(&self, change: impl FnOnce(&mut Live)) {
        let (all, connected) = {
            let mut s = self.lock();
            change(&mut s);
            (s.len(), s.values().filter(|e| e.connected).count())
        };
        self.count.send_replace(all);
        self.connected.send_replace(connected);
    }

    fn insert(&self, id: u64, signalling: u64, session: Arc<dyn Session>) {
        self.update(|s| {
            s.insert(
                id,
                Entry {
                    signalling,
                    started: Instant::now(),
                    session,
                    connected: false,
                },
            );
        });
    }

    fn mark_connected(&self, id: u64) {
        self.update(|s| {
            if let Some(e) = s.get_mut(&id) {
                e.connected = true;
            }
        });
    }

    fn remove(&self, id: u64) {
        self.update(|s| {
            s.remove(&id);
        });
    }

    /// The live sessions with their current counters, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let sessions: Vec<_> = self
            .lock()
            .iter()
            .map(|(id, e)| (*id, e.signalling, e.started, e.session.clone()))
            .collect();
        // Stats take each session's own lock: not under ours.
        sessions
            .into_iter()
            .map(|(id, signalling, started, s)| SessionInfo {
                id,
                signalling,
                started,
                stats: s.stats(),
            })
            .collect()
    }

    /// Closes every live session (shutdown); each leaves the list as it ends.
    pub fn close_all(&self) {
        let sessions: Vec<_> = self.lock().values().map(|e| e.session.clone()).collect();
        for s in sessions {
            s.close();
        }
    }

    /// The number of sessions served (connected or not), on every change.
    pub fn watch_count(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// The number of connected sessions, on every change.
    pub fn watch_connected(&self) -> watch::Receiver<usize> {
        self.connected.subscribe()
    }
}

/// Serves browser sessions.
pub struct PeerHost {
    engine: Arc<dyn PeerEngine>,
    tunnel: Arc<TunnelConfig>,
    auth: Arc<dyn Authenticator>,
    active: Arc<AtomicUsize>,
    live: LiveSessions,
    next_id: AtomicU64,
}

impl PeerHost {
    pub fn new(
        engine: Arc<dyn PeerEngine>,
        tunnel: Arc<TunnelConfig>,
        auth: Arc<dyn Authenticator>,
    ) -> Self {
        PeerHost {
            engine,
            tunnel,
            auth,
            active: Arc::new(AtomicUsize::new(0)),
            live: LiveSessions::new(),
            next_id: AtomicU64::new(1),
        }
    }

    /// The live sessions (list and count), for status.
    pub fn live_sessions(&self) -> LiveSessions {
        self.live.clone()
    }

    /// How many peer connections are up (for status).
    pub fn active_sessions(&self) -> Arc<AtomicUsize> {
        self.active.clone()
    }

    /// Runs until `events` ends (the rendezvous link is gone for good).
    pub async fn run(
        self,
        mut events: mpsc::Receiver<SignallingEvent>,
        commands: mpsc::Sender<SignallingCommand>,
    ) {
        // Sessions still in signalling, by flock's session id.
        let mut signalling: HashMap<u64, Arc<dyn Session>> = HashMap::new();
        while let Some(event) = events.recv().await {
            match event {
                SignallingEvent::Offer {
                    session,
                    sdp,
                    ice_servers,
                } => {
                    // The servers flock sent with the offer are the newest.
                    if !ice_servers.is_empty() {
                        self.engine.set_ice_servers(ice_servers);
                    }
                    match self.offer(session, &sdp) {
                        Ok((handle, answer, gathered)) => {
                            signalling.insert(session, handle);
                            let sdp_mid = answer_mid(&answer);
                            let answer = SignallingCommand::Answer {
                                session,
                                sdp: answer,
                            };
                            if commands.send(answer).await.is_err() {
                                return;
                            }
                            // The host candidates are in the answer's SDP;
                            // srflx/relay ones are trickled as gathered,
                            // then the end of candidates.
                            tokio::spawn(trickle(session, sdp_mid, gathered, commands.clone()));
                        }
                        Err(reason) => {
                            tracing::info!(session, "browser session refused: {reason}");
                            let close = SignallingCommand::Close { session, reason };
                            if commands.send(close).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                SignallingEvent::Candidate {
                    session,
                    candidate: Some(candidate),
                    ..
                } => {
                    if let Some(s) = signalling.get(&session) {
                        if let Err(e) = s.add_remote_candidate(&candidate) {
                            tracing::debug!(session, "{e}");
                        }
                    }
                }
                SignallingEvent::Candidate { .. } => {}
                SignallingEvent::Closed { session, reason } => {
                    tracing::debug!(session, "signalling closed: {reason}");
                    signalling.remove(&session);
                }
                SignallingEvent::Disconnected => signalling.clear(),
                SignallingEvent::IceServers(servers) => {
                    tracing::debug!(count = servers.len(), "ICE servers updated");
                    self.engine.set_ice_servers(servers);
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn offer(
        &self,
        session: u64,
        sdp: &str,
    ) -> Result<(Arc<dyn Session>, String, mpsc::UnboundedReceiver<String>), String> {
        self.auth.admit(session)?;
        let accepted = self
            .engine
            .accept_offer(sdp)
            .map_err(|e| format!("the device could not answer: {e}"))?;
        let tunnel = self.tunnel.clone();
        let active = self.active.clone();
        let live = self.live.clone();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        active.fetch_add(1, Ordering::Relaxed);
        live.insert(id, session, accepted.session.clone());
        tracing::info!(id, session, "peer session started");
        let mut events = accepted.events;
        tokio::spawn(async move {
            // The tunnel gets every event; the live list learns when the
            // session has connected.
            let (tx, rx) = mpsc::unbounded_channel();
            let forward = async {
                while let Some(ev) = events.recv().await {
                    if matches!(ev, SessionEvent::Connected) {
                        live.mark_connected(id);
                    }
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
                drop(tx);
            };
            tokio::join!(serve_session(tunnel, rx), forward);
            active.fetch_sub(1, Ordering::Relaxed);
            live.remove(id);
            tracing::info!(id, session, "peer session over");
        });
        Ok((
            accepted.session,
            accepted.answer_sdp,
            accepted.local_candidates,
        ))
    }
}

/// The media id the answer's candidates belong to (the one data channel
/// m-line; browsers need it to add a trickled candidate).
fn answer_mid(answer: &str) -> String {
    answer
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=mid:"))
        .unwrap_or("0")
        .to_string()
}

/// Forwards a session's gathered candidates to flock, then the end of
/// candidates (`candidate: None`).
async fn trickle(
    session: u64,
    sdp_mid: String,
    mut gathered: mpsc::UnboundedReceiver<String>,
    commands: mpsc::Sender<SignallingCommand>,
) {
    while let Some(line) = gathered.recv().await {
        let cmd = SignallingCommand::Candidate {
            session,
            candidate: Some(line),
            sdp_mid: Some(sdp_mid.clone()),
        };
        if commands.send(cmd).await.is_err() {
            return;
        }
    }
    let _ = commands
        .send(SignallingCommand::Candidate {
            session,
            candidate: None,
            sdp_mid: None,
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::engine::{Accepted, IceServer, PeerError, PendingChannel};

    /// An engine whose sessions trickle two gathered candidates.
    #[derive(Default)]
    struct Fake {
        ice_servers: Mutex<Vec<Vec<IceServer>>>,
        gathered: Mutex<Option<mpsc::UnboundedSender<String>>>,
    }

    struct FakeSession;

    impl Session for FakeSession {
        fn add_remote_candidate(&self, _: &str) -> Result<(), PeerError> {
            Ok(())
        }
        fn local_candidates(&self) -> Vec<String> {
            Vec::new()
        }
        fn open_channel(&self, _: &str) -> Result<PendingChannel, PeerError> {
            Err(PeerError::SessionClosed)
        }
        fn close(&self) {}
        fn stats(&self) -> SessionStats {
            SessionStats::default()
        }
    }

    impl PeerEngine for Fake {
        fn accept_offer(&self, _: &str) -> Result<Accepted, PeerError> {
            let (_events_tx, events) = mpsc::unbounded_channel();
            let (tx, local_candidates) = mpsc::unbounded_channel();
            *self.gathered.lock().unwrap() = Some(tx);
            Ok(Accepted {
                answer_sdp: "v=0\r\na=mid:data\r\n".into(),
                session: Arc::new(FakeSession),
                events,
                local_candidates,
            })
        }
        fn set_ice_servers(&self, servers: Vec<IceServer>) {
            self.ice_servers.lock().unwrap().push(servers);
        }
    }

    fn server(url: &str) -> IceServer {
        IceServer {
            urls: vec![url.into()],
            username: None,
            credential: None,
        }
    }

    #[tokio::test]
    async fn ice_servers_reach_the_engine_and_gathered_candidates_are_trickled() {
        let engine = Arc::new(Fake::default());
        let tunnel = Arc::new(TunnelConfig {
            device: "testbox".into(),
            apps: BTreeMap::new(),
        });
        let host = PeerHost::new(engine.clone(), tunnel, Arc::new(InsecureOpen));
        let (events, ev_rx) = mpsc::channel(16);
        let (cmd_tx, mut commands) = mpsc::channel(16);
        tokio::spawn(host.run(ev_rx, cmd_tx));

        let refreshed = vec![server("stun:a.example")];
        events
            .send(SignallingEvent::IceServers(refreshed.clone()))
            .await
            .unwrap();
        let with_offer = vec![server("stun:b.example")];
        events
            .send(SignallingEvent::Offer {
                session: 7,
                sdp: "offer".into(),
                ice_servers: with_offer.clone(),
            })
            .await
            .unwrap();
        assert!(matches!(
            commands.recv().await,
            Some(SignallingCommand::Answer { session: 7, .. })
        ));
        assert_eq!(
            *engine.ice_servers.lock().unwrap(),
            vec![refreshed, with_offer]
        );
        let gathered = engine.gathered.lock().unwrap().take().unwrap();
        for line in [
            "candidate:1 1 udp 1 192.0.2.1 5 typ srflx",
            "candidate:2 1 udp 1 192.0.2.2 6 typ relay",
        ] {
            gathered.send(line.into()).unwrap();
            assert_eq!(
                commands.recv().await,
                Some(SignallingCommand::Candidate {
                    session: 7,
                    candidate: Some(line.into()),
                    sdp_mid: Some("data".into()),
                })
            );
        }
        // Gathering over: the end of candidates.
        drop(gathered);
        assert_eq!(
            commands.recv().await,
            Some(SignallingCommand::Candidate {
                session: 7,
                candidate: None,
                sdp_mid: None,
            })
        );
    }
}
