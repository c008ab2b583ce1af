//! [`PeerEngine`] on `str0m`: each session is a sans-IO `Rtc` owned by a
//! shared state, driven by one tokio task with one UDP socket.
//!
//! Socket choice: one UDP socket per session (bound to the configured host
//! address, port chosen by the kernel). Demultiplexing is then the kernel's
//! job, a session's socket can be paused on its own (inbound back-pressure
//! below) and closing a session releases everything. A shared socket
//! demultiplexed with `Rtc::accepts` would save ports and suit a fixed
//! forwarded port; it can be added behind the same trait.
//!
//! Invariants:
//! - the `Rtc` is only touched under `Shared::inner`'s lock, and every
//!   change that may produce output (a write, a close, a candidate) is
//!   followed by `Shared::wake`, so the driver polls it out;
//! - the SCTP send buffer of a session is at most 256 KiB; a channel whose
//!   buffered amount is at or above [`CHANNEL_HIGH_WATER`] takes no more
//!   messages until it drains, so one channel cannot starve the others;
//! - received messages wait in a per-channel queue; while any channel has
//!   more than [`INBOUND_LIMIT`] bytes queued the driver stops reading the
//!   socket (the kernel buffer and SCTP retransmission hold the rest), so
//!   a slow reader bounds memory instead of growing it;
//! - a session whose peer has sent nothing for `silence_timeout` ends
//!   (browsers send ICE consent checks every few seconds, RFC 7675; a tab
//!   that is killed sends no DTLS close_notify);
//! - when the session ends, every channel reads EOF and fails writes;
//! - every datagram read passes the [`Gatherer`] first (STUN/TURN
//!   responses, relayed data), and every str0m transmit whose source is a
//!   relayed address goes through it (to the TURN server); gathered
//!   candidates are added to the `Rtc` and trickled in the order found, and
//!   the trickle sender is dropped once gathering is over.
//!
//! Candidates: the host candidate (the socket's address) is in the SDP;
//! server-reflexive (STUN) and relayed (TURN over UDP) ones are gathered on
//! the same socket once the session runs, from the ICE servers set last
//! ([`PeerEngine::set_ice_servers`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, CandidateKind, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, Notify};

use super::engine::{
    Accepted, CandidateType, ChannelIo, IceServer, Message, MessageKind, PeerEngine, PeerError,
    PendingChannel, Session, SessionEvent, SessionStats, MAX_MESSAGE,
};
use super::ice::gather::{self, Gathered, Gatherer};
use super::ice::{IceUrl, UrlError};
use super::udp;

/// Largest SCTP send buffer (per session) the engine allows.
pub const MAX_SCTP_SEND_BUFFER: usize = 256 * 1024;
/// A channel with this much unacknowledged data takes no more messages.
pub const CHANNEL_HIGH_WATER: usize = 128 * 1024;
/// Queued received bytes per channel above which the session stops reading.
pub const INBOUND_LIMIT: usize = 1024 * 1024;
/// Datagrams handled per wake-up before output is polled again.
const RECV_BATCH: usize = 64;
/// How often str0m reports the selected pair and its RTT.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How long resolving the ICE servers' names may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How the str0m engine binds and sizes its sessions.
#[derive(Debug, Clone)]
pub struct Str0mConfig {
    /// Local address the sessions' UDP sockets bind to; it is the host
    /// candidate, and the base of the srflx and relay candidates.
    pub bind: IpAddr,
    /// SCTP send buffer per session, clamped to
    /// `MAX_MESSAGE..=MAX_SCTP_SEND_BUFFER`.
    pub sctp_send_buffer: usize,
    /// A session whose peer sends nothing for this long is over (30 s is
    /// when ICE consent expires, RFC 7675).
    pub silence_timeout: Duration,
    /// STUN and TURN servers for sessions created from now on (replaced by
    /// [`PeerEngine::set_ice_servers`]).
    pub ice_servers: Vec<IceServer>,
    /// Offer relay candidates only (like `iceTransportPolicy: "relay"`):
    /// no host candidate, no server-reflexive ones.
    pub relay_only: bool,
}

impl Default for Str0mConfig {
    fn default() -> Self {
        Str0mConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sctp_send_buffer: MAX_SCTP_SEND_BUFFER,
            silence_timeout: Duration::from_secs(30),
            ice_servers: Vec::new(),
            relay_only: false,
        }
    }
}

/// The str0m engine. Methods must be called inside a tokio runtime (each
/// session spawns its driver task). Clones share the ICE servers.
#[derive(Debug, Clone, Default)]
pub struct Str0mEngine {
    config: Str0mConfig,
    ice_servers: Arc<RwLock<Vec<IceServer>>>,
}

/// What a session gathers with.
struct GatherSetup {
    servers: Vec<IceServer>,
    relay_only: bool,
}

impl Str0mEngine {
    pub fn new(config: Str0mConfig) -> Self {
        let ice_servers = Arc::new(RwLock::new(config.ice_servers.clone()));
        Str0mEngine {
            config,
            ice_servers,
        }
    }

    fn gather_setup(&self) -> GatherSetup {
        GatherSetup {
            servers: self
                .ice_servers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            relay_only: self.config.relay_only,
        }
    }

    fn new_rtc(&self) -> Result<(Rtc, UdpSocket, Vec<String>), PeerError> {
        let buffer = self
            .config
            .sctp_send_buffer
            .clamp(MAX_MESSAGE, MAX_SCTP_SEND_BUFFER);
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .set_sctp_max_buffered_amount(buffer)
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(Instant::now());
        let addr = SocketAddr::new(self.config.bind, 0);
        let socket = udp::bind(addr).map_err(|source| PeerError::Socket { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| PeerError::Socket { addr, source })?;
        let candidate =
            Candidate::host(local, "udp").map_err(|e| PeerError::Engine(e.to_string()))?;
        if self.config.relay_only {
            return Ok((rtc, socket, Vec::new()));
        }
        let line = candidate.to_sdp_string();
        rtc.add_local_candidate(candidate);
        Ok((rtc, socket, vec![line]))
    }

    /// The browser role (tests, benchmarks): an offer with one data channel
    /// labelled `first_label`; more channels come with
    /// [`Session::open_channel`] once connected.
    pub fn create_offer(&self, first_label: &str) -> Result<PendingOffer, PeerError> {
        let (mut rtc, socket, candidates) = self.new_rtc()?;
        let mut api = rtc.sdp_api();
        let first = api.add_channel(first_label.to_string());
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| PeerError::Engine("no offer was produced".into()))?;
        Ok(PendingOffer {
            silence_timeout: self.config.silence_timeout,
            offer_sdp: offer.to_sdp_string(),
            rtc,
            socket,
            candidates,
            pending,
            first,
            first_label: first_label.to_string(),
            gather: self.gather_setup(),
        })
    }
}

impl PeerEngine for Str0mEngine {
    fn accept_offer(&self, offer_sdp: &str) -> Result<Accepted, PeerError> {
        let offer =
            SdpOffer::from_sdp_string(offer_sdp).map_err(|e| PeerError::BadOffer(e.to_string()))?;
        let (mut rtc, socket, candidates) = self.new_rtc()?;
        // Candidates in the offer itself (the rest are trickled).
        let remote_kinds = sdp_candidate_kinds(offer_sdp);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| PeerError::BadOffer(e.to_string()))?;
        let (session, events, local_candidates) = start(
            rtc,
            socket,
            candidates,
            remote_kinds,
            None,
            self.config.silence_timeout,
            self.gather_setup(),
        );
        Ok(Accepted {
            answer_sdp: answer.to_sdp_string(),
            session,
            events,
            local_candidates,
        })
    }

    fn set_ice_servers(&self, servers: Vec<IceServer>) {
        *self
            .ice_servers
            .write()
            .unwrap_or_else(PoisonError::into_inner) = servers;
    }
}

/// The types of the candidates listed in an SDP, by address.
fn sdp_candidate_kinds(sdp: &str) -> HashMap<SocketAddr, CandidateType> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a="))
        .filter(|l| l.starts_with("candidate:"))
        .filter_map(|l| Candidate::from_sdp_string(l).ok())
        .map(|c| (c.addr(), kind(c.kind())))
        .collect()
}

/// An offer made by [`Str0mEngine::create_offer`], waiting for its answer.
pub struct PendingOffer {
    silence_timeout: Duration,
    offer_sdp: String,
    rtc: Rtc,
    socket: UdpSocket,
    candidates: Vec<String>,
    pending: SdpPendingOffer,
    first: ChannelId,
    first_label: String,
    gather: GatherSetup,
}

impl PendingOffer {
    pub fn offer_sdp(&self) -> &str {
        &self.offer_sdp
    }

    /// Applies the remote answer and starts the session; the returned
    /// channel is the one named in `create_offer`.
    pub fn accept_answer(self, answer_sdp: &str) -> Result<(Accepted, PendingChannel), PeerError> {
        let answer = SdpAnswer::from_sdp_string(answer_sdp)
            .map_err(|e| PeerError::BadAnswer(e.to_string()))?;
        let mut rtc = self.rtc;
        rtc.sdp_api()
            .accept_answer(self.pending, answer)
            .map_err(|e| PeerError::BadAnswer(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        let (session, events, local_candidates) = start(
            rtc,
            self.socket,
            self.candidates,
            sdp_candidate_kinds(answer_sdp),
            Some((self.first, self.first_label, tx)),
            self.silence_timeout,
            self.gather,
        );
        Ok((
            Accepted {
                answer_sdp: String::new(),
                session,
                events,
                local_candidates,
            },
            PendingChannel(rx),
        ))
    }
}

type Opened = oneshot::Sender<Arc<dyn ChannelIo>>;

struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the driver: output may be pending, or reading may resume.
    wake: Notify,
    local_candidates: Vec<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Inner {
    rtc: Rtc,
    channels: HashMap<ChannelId, ChannelState>,
    pending_opens: HashMap<ChannelId, (String, Opened)>,
    /// Tasks waiting for send-buffer space or for a drain.
    send_waiters: Vec<Waker>,
    close_requested: bool,
    close_started: bool,
    ended: bool,
    /// Why the session is over, once a poll found out (see `poll`).
    over: Option<String>,
    connected: bool,
    /// Signalled candidates by address, to name the selected pair's types
    /// (str0m's stats give addresses only); unknown remote = prflx.
    local_kinds: HashMap<SocketAddr, CandidateType>,
    remote_kinds: HashMap<SocketAddr, CandidateType>,
    /// The selected pair (local, remote) and its RTT, from str0m's stats.
    selected: Option<(SocketAddr, SocketAddr)>,
    rtt: Option<Duration>,
    bytes_in: u64,
    bytes_out: u64,
}

fn kind(k: CandidateKind) -> CandidateType {
    match k {
        CandidateKind::Host => CandidateType::Host,
        CandidateKind::PeerReflexive => CandidateType::Prflx,
        CandidateKind::ServerReflexive => CandidateType::Srflx,
        CandidateKind::Relayed => CandidateType::Relay,
    }
}

struct ChannelState {
    inbound: VecDeque<Message>,
    inbound_bytes: usize,
    /// Closed by either side or with the session.
    closed: bool,
    reader: Option<Waker>,
}

impl Inner {
    fn wake_senders(&mut self) {
        for w in self.send_waiters.drain(..) {
            w.wake();
        }
    }

    fn reading_paused(&self) -> bool {
        self.channels
            .values()
            .any(|c| !c.closed && c.inbound_bytes > INBOUND_LIMIT)
    }

    /// Polls the `Rtc` until it asks for a timeout; transmits and events
    /// are collected. `Err(reason)` once the session is over, and on every
    /// call after that: the end is sticky, so the driver sees it whichever
    /// of its polls (timer, wake-up or a datagram in a batch) met it.
    fn poll(
        &mut self,
        shared: &Arc<Shared>,
        events: &mpsc::UnboundedSender<SessionEvent>,
        transmits: &mut Vec<Transmit>,
    ) -> Result<Instant, String> {
        if let Some(reason) = &self.over {
            return Err(reason.clone());
        }
        let polled = self.poll_rtc(shared, events, transmits);
        if let Err(reason) = &polled {
            self.over = Some(reason.clone());
        }
        polled
    }

    fn poll_rtc(
        &mut self,
        shared: &Arc<Shared>,
        events: &mpsc::UnboundedSender<SessionEvent>,
        transmits: &mut Vec<Transmit>,
    ) -> Result<Instant, String> {
        if self.close_requested && !self.close_started {
            self.close_started = true;
            if let Err(e) = self.rtc.close() {
                return Err(format!("closing failed: {e}"));
            }
        }
        loop {
            if !self.rtc.is_alive() {
                return Err("closed".into());
            }
            match self.rtc.poll_output() {
                Err(e) => return Err(format!("engine error: {e}")),
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => {
                    self.bytes_out += t.contents.len() as u64;
                    transmits.push(Transmit {
                        source: t.source,
                        destination: t.destination,
                        data: t.contents.to_vec(),
                    })
                }
                Ok(Output::Event(ev)) => self.on_event(ev, shared, events)?,
            }
        }
    }

    fn on_event(
        &mut self,
        event: Event,
        shared: &Arc<Shared>,
        events: &mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<(), String> {
        match event {
            Event::Connected => {
                self.connected = true;
                let _ = events.send(SessionEvent::Connected);
            }
            Event::PeerStats(stats) => {
                if let Some(pair) = stats.selected_candidate_pair {
                    self.selected = Some((pair.local.addr, pair.remote.addr));
                    self.rtt = pair.current_round_trip_time.or(stats.rtt);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                return Err("ICE disconnected".into());
            }
            Event::Closed => return Err("closed by the remote peer".into()),
            Event::ChannelOpen(id, label) => {
                if let Some(mut ch) = self.rtc.channel(id) {
                    ch.set_buffered_amount_low_threshold(CHANNEL_HIGH_WATER / 2);
                }
                self.channels.insert(
                    id,
                    ChannelState {
                        inbound: VecDeque::new(),
                        inbound_bytes: 0,
                        closed: false,
                        reader: None,
                    },
                );
                let io: Arc<dyn ChannelIo> = Arc::new(Str0mChannel {
                    shared: shared.clone(),
                    id,
                    label: label.clone(),
                });
                match self.pending_opens.remove(&id) {
                    Some((_, opened)) => {
                        let _ = opened.send(io);
                    }
                    None => {
                        let _ = events.send(SessionEvent::ChannelOpen { label, channel: io });
                    }
                }
            }
            Event::ChannelData(data) => {
                if let Some(ch) = self.channels.get_mut(&data.id) {
                    if !ch.closed {
                        ch.inbound_bytes += data.data.len();
                        ch.inbound.push_back(Message {
                            kind: if data.binary {
                                MessageKind::Binary
                            } else {
                                MessageKind::Text
                            },
                            data: Bytes::from(data.data),
                        });
                        if let Some(w) = ch.reader.take() {
                            w.wake();
                        }
                    }
                }
            }
            Event::ChannelClose(id) => {
                self.pending_opens.remove(&id);
                if let Some(ch) = self.channels.get_mut(&id) {
                    ch.closed = true;
                    if let Some(w) = ch.reader.take() {
                        w.wake();
                    }
                }
                self.wake_senders();
            }
            Event::ChannelBufferedAmountLow(_) => self.wake_senders(),
            _ => {}
        }
        Ok(())
    }

    fn receive(&mut self, source: SocketAddr, local: SocketAddr, datagram: &[u8]) {
        self.bytes_in += datagram.len() as u64;
        let Ok(receive) = Receive::new(Protocol::Udp, source, local, datagram) else {
            tracing::trace!(%source, "ignored a datagram that is not STUN, DTLS or RTP");
            return;
        };
        if let Err(e) = self
            .rtc
            .handle_input(Input::Receive(Instant::now(), receive))
        {
            tracing::debug!(%source, "datagram rejected: {e}");
        }
    }

    /// Adds a gathered candidate to the `Rtc`; its SDP line if str0m took
    /// it (it drops one redundant with a better candidate).
    fn add_gathered(&mut self, g: Gathered, socket: SocketAddr) -> Option<String> {
        let candidate = match g {
            Gathered::ServerReflexive { addr, base } => {
                Candidate::server_reflexive(addr, base, "udp")
            }
            Gathered::Relayed { addr } => Candidate::relayed(addr, socket, "udp"),
        };
        let candidate = match candidate {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("gathered candidate {g:?} not usable: {e}");
                return None;
            }
        };
        let (addr, k) = (candidate.addr(), kind(candidate.kind()));
        let line = self.rtc.add_local_candidate(candidate)?.to_sdp_string();
        self.local_kinds.insert(addr, k);
        Some(line)
    }

    /// The session is over: every channel reads EOF, writes fail.
    fn end(&mut self) {
        self.ended = true;
        self.pending_opens.clear();
        for ch in self.channels.values_mut() {
            ch.closed = true;
            if let Some(w) = ch.reader.take() {
                w.wake();
            }
        }
        self.wake_senders();
    }
}

/// One datagram str0m wants sent.
struct Transmit {
    source: SocketAddr,
    destination: SocketAddr,
    data: Vec<u8>,
}

fn start(
    rtc: Rtc,
    socket: UdpSocket,
    local_candidates: Vec<String>,
    remote_kinds: HashMap<SocketAddr, CandidateType>,
    first: Option<(ChannelId, String, Opened)>,
    silence_timeout: Duration,
    gather: GatherSetup,
) -> (
    Arc<dyn Session>,
    mpsc::UnboundedReceiver<SessionEvent>,
    mpsc::UnboundedReceiver<String>,
) {
    let local_kinds = local_candidates
        .iter()
        .filter_map(|l| Candidate::from_sdp_string(l).ok())
        .map(|c| (c.addr(), kind(c.kind())))
        .collect();
    let mut pending_opens = HashMap::new();
    if let Some((id, label, tx)) = first {
        pending_opens.insert(id, (label, tx));
    }
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            rtc,
            channels: HashMap::new(),
            pending_opens,
            send_waiters: Vec::new(),
            close_requested: false,
            close_started: false,
            ended: false,
            over: None,
            connected: false,
            local_kinds,
            remote_kinds,
            selected: None,
            rtt: None,
            bytes_in: 0,
            bytes_out: 0,
        }),
        wake: Notify::new(),
        local_candidates,
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let (trickle_tx, trickle_rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(
        shared.clone(),
        socket,
        tx,
        silence_timeout,
        gather,
        trickle_tx,
    ));
    (Arc::new(Str0mSession { shared }), rx, trickle_rx)
}

/// Resolves the servers' URLs to addresses of `family`'s IP version;
/// unusable ones are logged and left out.
async fn resolve(servers: Vec<IceServer>, family: SocketAddr) -> Vec<gather::Server> {
    let mut out = Vec::new();
    for server in servers {
        for url in &server.urls {
            let parsed = match IceUrl::parse(url) {
                Ok(u) => u,
                Err(e @ UrlError::Unsupported(_)) => {
                    tracing::debug!("ICE server skipped: {e}");
                    continue;
                }
                Err(e) => {
                    tracing::warn!("ICE server skipped: {e}");
                    continue;
                }
            };
            let (host, port) = match &parsed {
                IceUrl::Stun { host, port } | IceUrl::Turn { host, port } => (host.clone(), *port),
            };
            let lookup =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await;
            let addr = match lookup {
                Ok(Ok(mut addrs)) => addrs.find(|a| a.is_ipv4() == family.is_ipv4()),
                Ok(Err(e)) => {
                    tracing::warn!("ICE server {parsed} not resolved: {e}");
                    continue;
                }
                Err(_) => {
                    tracing::warn!("ICE server {parsed} not resolved within {RESOLVE_TIMEOUT:?}");
                    continue;
                }
            };
            let Some(addr) = addr else {
                tracing::warn!("ICE server {parsed} has no address of the session's IP version");
                continue;
            };
            // One socket can hold one allocation per TURN server (a
            // second Allocate on the same 5-tuple is refused), and one
            // probe per STUN server is enough: URLs naming the same
            // address again are left out.
            let turn = matches!(parsed, IceUrl::Turn { .. });
            if out.iter().any(|s| match s {
                gather::Server::Stun(a) => !turn && *a == addr,
                gather::Server::Turn { addr: a, .. } => turn && *a == addr,
            }) {
                tracing::debug!("ICE server {parsed} skipped: its address is listed already");
                continue;
            }
            out.push(match parsed {
                IceUrl::Stun { .. } => gather::Server::Stun(addr),
                IceUrl::Turn { .. } => match (&server.username, &server.credential) {
                    (Some(username), Some(password)) => gather::Server::Turn {
                        addr,
                        username: username.clone(),
                        password: password.clone(),
                    },
                    _ => {
                        tracing::warn!("TURN server {parsed} skipped: no username and credential");
                        continue;
                    }
                },
            });
        }
    }
    out
}

/// Hands one datagram read from the socket to the gatherer, then (if it is
/// not gathering's) to str0m; true if str0m got it (the peer was heard).
fn dispatch(
    gatherer: &mut Gatherer,
    inner: &mut Inner,
    source: SocketAddr,
    local: SocketAddr,
    datagram: &[u8],
) -> bool {
    match gatherer.handle_datagram(Instant::now(), source, datagram) {
        gather::Incoming::NotMine => inner.receive(source, local, datagram),
        gather::Incoming::Consumed => return false,
        gather::Incoming::Relayed {
            peer,
            relayed,
            data,
        } => inner.receive(peer, relayed, &data),
    }
    true
}

/// The driver: polls output, sends it, then waits for a datagram, the next
/// timeout, a wake-up or the resolved ICE servers.
async fn drive(
    shared: Arc<Shared>,
    socket: UdpSocket,
    events: mpsc::UnboundedSender<SessionEvent>,
    silence_timeout: Duration,
    gather: GatherSetup,
    trickle: mpsc::UnboundedSender<String>,
) {
    let mut buf = vec![0u8; 2048];
    let mut transmits = Vec::new();
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            shared.lock().end();
            let _ = events.send(SessionEvent::Closed {
                reason: format!("socket has no local address: {e}"),
            });
            return;
        }
    };
    let mut seed = [0u8; 12];
    if aws_lc_rs::rand::fill(&mut seed).is_err() {
        tracing::warn!("no randomness for STUN transaction ids; using the clock");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        seed.copy_from_slice(&nanos.to_be_bytes()[4..]);
    }
    let mut gatherer = Gatherer::new(local, gather.relay_only, seed);
    let mut trickle = Some(trickle);
    let resolving = resolve(gather.servers, local);
    tokio::pin!(resolving);
    let mut resolved = false;
    let mut last_heard = Instant::now();
    let mut first = true;
    let reason = loop {
        let gathered: Vec<Gathered> = std::iter::from_fn(|| gatherer.poll_candidate()).collect();
        let (step, paused, lines) = {
            let mut inner = shared.lock();
            let lines: Vec<String> = gathered
                .into_iter()
                .filter_map(|g| inner.add_gathered(g, local))
                .collect();
            if !lines.is_empty() || first {
                // Checks on new pairs start now; and str0m's ICE has no
                // timer at all until its first timeout (a relay-only
                // session has nothing else to start it).
                first = false;
                if let Err(e) = inner.rtc.handle_input(Input::Timeout(Instant::now())) {
                    tracing::debug!("timeout handling failed: {e}");
                }
            }
            let step = inner.poll(&shared, &events, &mut transmits);
            (step, inner.reading_paused(), lines)
        };
        if let Some(tx) = &trickle {
            for line in lines {
                tracing::debug!(%local, "gathered candidate {line}");
                let _ = tx.send(line);
            }
            if gatherer.is_done() {
                tracing::debug!(%local, "candidate gathering finished");
                trickle = None;
            }
        }
        let now = Instant::now();
        for t in transmits.drain(..) {
            // Anything not from the socket's own address (host, and srflx
            // whose base it is) belongs to a relayed candidate: it goes
            // through its allocation or nowhere, never straight out, which
            // would reveal this address to a relay-only peer.
            if t.source != local {
                if !gatherer.relay_send(now, t.source, t.destination, &t.data) {
                    tracing::trace!(source = %t.source, "dropped a send from a relay that is gone");
                }
                continue;
            }
            if let Err(e) = socket.send_to(&t.data, t.destination).await {
                tracing::debug!(dest = %t.destination, "send failed: {e}");
            }
        }
        while let Some((dest, data)) = gatherer.poll_transmit() {
            if let Err(e) = socket.send_to(&data, dest).await {
                tracing::debug!(%dest, "send to an ICE server failed: {e}");
            }
        }
        let deadline = match step {
            Ok(d) => gatherer.poll_timeout().map_or(d, |g| d.min(g)),
            Err(reason) => break reason,
        };
        let silence_deadline = last_heard + silence_timeout;
        if Instant::now() >= silence_deadline {
            break format!(
                "nothing heard from the peer for {} s",
                silence_timeout.as_secs_f64()
            );
        }
        tokio::select! {
            r = socket.recv_from(&mut buf), if !paused => match r {
                Ok((n, source)) => {
                    let mut inner = shared.lock();
                    if dispatch(&mut gatherer, &mut inner, source, local, &buf[..n]) {
                        last_heard = Instant::now();
                    }
                    // Output is polled after every datagram: str0m's DTLS
                    // layer holds only a few undelivered records and drops
                    // the rest ("receive queue full").
                    let mut alive = inner.poll(&shared, &events, &mut transmits).is_ok();
                    for _ in 1..RECV_BATCH {
                        if !alive || inner.reading_paused() {
                            break;
                        }
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, source)) => {
                                if dispatch(&mut gatherer, &mut inner, source, local, &buf[..n]) {
                                    last_heard = Instant::now();
                                }
                                alive = inner.poll(&shared, &events, &mut transmits).is_ok();
                            }
                            Err(_) => break,
                        }
                    }
                    // SACKs free send buffer: let blocked writers retry.
                    inner.wake_senders();
                }
                Err(e) => tracing::debug!("receive failed: {e}"),
            },
            _ = tokio::time::sleep_until(deadline.min(silence_deadline).into()) => {
                let now = Instant::now();
                gatherer.handle_timeout(now);
                let mut inner = shared.lock();
                if let Err(e) = inner.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!("timeout handling failed: {e}");
                }
            }
            _ = shared.wake.notified() => {
                // A write, close or candidate: let str0m act on it now
                // rather than at its next timer.
                let mut inner = shared.lock();
                if let Err(e) = inner.rtc.handle_input(Input::Timeout(Instant::now())) {
                    tracing::debug!("timeout handling failed: {e}");
                }
            }
            servers = &mut resolving, if !resolved => {
                resolved = true;
                gatherer.start(Instant::now(), servers);
            }
        }
    };
    tracing::info!(%local, "session ended: {reason}");
    shared.lock().end();
    // Release TURN allocations (one datagram each, unanswered or not).
    gatherer.close(Instant::now());
    while let Some((dest, data)) = gatherer.poll_transmit() {
        let _ = socket.send_to(&data, dest).await;
    }
    let _ = events.send(SessionEvent::Closed { reason });
}

struct Str0mSession {
    shared: Arc<Shared>,
}

impl Session for Str0mSession {
    fn add_remote_candidate(&self, candidate: &str) -> Result<(), PeerError> {
        let line = candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        let c = Candidate::from_sdp_string(line).map_err(|e| PeerError::BadCandidate {
            candidate: candidate.to_string(),
            reason: e.to_string(),
        })?;
        let mut inner = self.shared.lock();
        inner.remote_kinds.insert(c.addr(), kind(c.kind()));
        inner.rtc.add_remote_candidate(c);
        drop(inner);
        self.shared.wake.notify_one();
        Ok(())
    }

    fn local_candidates(&self) -> Vec<String> {
        self.shared.local_candidates.clone()
    }

    fn open_channel(&self, label: &str) -> Result<PendingChannel, PeerError> {
        let mut inner = self.shared.lock();
        if inner.ended || inner.close_requested {
            return Err(PeerError::SessionClosed);
        }
        let id = inner.rtc.direct_api().create_data_channel(ChannelConfig {
            label: label.to_string(),
            ..ChannelConfig::default()
        });
        let (tx, rx) = oneshot::channel();
        inner.pending_opens.insert(id, (label.to_string(), tx));
        drop(inner);
        self.shared.wake.notify_one();
        Ok(PendingChannel(rx))
    }

    fn close(&self) {
        self.shared.lock().close_requested = true;
        self.shared.wake.notify_one();
    }

    fn stats(&self) -> SessionStats {
        let inner = self.shared.lock();
        let pair = inner.selected.map(|(local, remote)| {
            (
                // Our own candidates are all signalled (host, srflx and
                // relay addresses are in `local_kinds`).
                inner
                    .local_kinds
                    .get(&local)
                    .copied()
                    .unwrap_or(CandidateType::Host),
                inner
                    .remote_kinds
                    .get(&remote)
                    .copied()
                    .unwrap_or(CandidateType::Prflx),
            )
        });
        SessionStats {
            connected: inner.connected && !inner.ended,
            pair,
            rtt: inner.rtt,
            bytes_in: inner.bytes_in,
            bytes_out: inner.bytes_out,
        }
    }
}

struct Str0mChannel {
    shared: Arc<Shared>,
    id: ChannelId,
    label: String,
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the data channel is closed")
}

impl ChannelIo for Str0mChannel {
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        kind: MessageKind,
        msg: &[u8],
    ) -> Poll<io::Result<()>> {
        if msg.len() > MAX_MESSAGE {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "data channel message larger than 64 KiB",
            )));
        }
        let binary = match kind {
            MessageKind::Binary => true,
            MessageKind::Text if std::str::from_utf8(msg).is_ok() => false,
            MessageKind::Text => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a text data channel message that is not UTF-8",
                )))
            }
        };
        let mut inner = self.shared.lock();
        let open = !inner.ended && inner.channels.get(&self.id).is_some_and(|c| !c.closed);
        let Some(mut ch) = inner.rtc.channel(self.id).filter(|_| open) else {
            return Poll::Ready(Err(closed_error()));
        };
        let accepted = if ch.buffered_amount() >= CHANNEL_HIGH_WATER {
            false
        } else {
            match ch.write(binary, msg) {
                Ok(accepted) => accepted,
                Err(e) => return Poll::Ready(Err(io::Error::other(e.to_string()))),
            }
        };
        if accepted {
            drop(inner);
            self.shared.wake.notify_one();
            Poll::Ready(Ok(()))
        } else {
            inner.send_waiters.push(cx.waker().clone());
            Poll::Pending
        }
    }

    fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.shared.lock();
        let open = !inner.ended && inner.channels.get(&self.id).is_some_and(|c| !c.closed);
        let drained = match inner.rtc.channel(self.id).filter(|_| open) {
            Some(mut ch) => ch.buffered_amount() == 0,
            None => true,
        };
        if drained {
            Poll::Ready(())
        } else {
            inner.send_waiters.push(cx.waker().clone());
            Poll::Pending
        }
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let mut inner = self.shared.lock();
        let ended = inner.ended;
        let Some(ch) = inner.channels.get_mut(&self.id) else {
            return Poll::Ready(None);
        };
        if let Some(msg) = ch.inbound.pop_front() {
            let was_over = ch.inbound_bytes > INBOUND_LIMIT;
            ch.inbound_bytes -= msg.data.len();
            if was_over && ch.inbound_bytes <= INBOUND_LIMIT {
                drop(inner);
                self.shared.wake.notify_one();
            }
            return Poll::Ready(Some(msg));
        }
        if ch.closed || ended {
            return Poll::Ready(None);
        }
        ch.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn close(&self) {
        let mut inner = self.shared.lock();
        let Some(ch) = inner.channels.get_mut(&self.id) else {
            return;
        };
        if ch.closed {
            return;
        }
        ch.closed = true;
        if let Some(w) = ch.reader.take() {
            w.wake();
        }
        if !inner.ended {
            inner.rtc.direct_api().close_data_channel(self.id);
        }
        inner.wake_senders();
        drop(inner);
        self.shared.wake.notify_one();
    }

    fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for Str0mChannel {
    fn drop(&mut self) {
        self.close();
        self.shared.lock().channels.remove(&self.id);
    }
}
