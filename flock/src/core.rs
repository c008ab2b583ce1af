//! flock's sans-IO core: the registry, connected devices, browser sessions
//! and the relay rules. Connections, frames and the current time go in;
//! frames to send, connections to close, registry writes and log events
//! come out ([`Flock::poll_output`]), plus the next deadline
//! ([`Flock::poll_timeout`]).
//!
//! Invariants:
//! - a browser socket reaches exactly one session of exactly one device,
//!   and a device only sees the sessions made for it;
//! - a connection that breaks the protocol (garbage, wrong frame kind,
//!   oversize, flood, late hello) is closed with a logged reason, and only
//!   the sessions that ran over it end;
//! - a name is bound to the first key that proves it; the registry is
//!   saved (an output) before the device hears `Registered`;
//! - every collection is bounded by [`Limits`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use flock_proto::browser::{self, BrowserToFlock, FlockToBrowser};
use flock_proto::device::{self, DeviceToFlock, FlockToDevice};
use flock_proto::identity::verify_challenge;
use flock_proto::{DeviceName, IceServer, MAX_MESSAGE};

use crate::rate::TokenBucket;
use crate::registry::{Binding, Registry};
use flock_proto::turn;

/// Identifies one transport connection (chosen by the shell, never reused).
pub type ConnId = u64;

/// Which endpoint a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/device`: postcard binary frames.
    Device,
    /// `/signal`: JSON text frames.
    Browser,
}

/// One WebSocket data frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Binary(Vec<u8>),
    Text(String),
}

/// Bounds on everything a peer can make flock hold or do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A device must send a valid `Hello`, a browser `connect`, this soon.
    pub hello_timeout: Duration,
    /// New connections per source address per minute.
    pub connections_per_minute: u32,
    /// Open connections per source address.
    pub connections_per_source: u32,
    /// Open connections in total.
    pub max_connections: usize,
    /// Frames per second per connection (bucket of twice this size).
    pub messages_per_second: u32,
    /// Browser sessions at once per device.
    pub sessions_per_device: usize,
    /// New names bound per source address per hour.
    pub registrations_per_hour: u32,
    /// Names in the registry.
    pub max_registry: usize,
    /// Frames queued towards one connection before it is cut as too slow
    /// (enforced by the shell, which owns the queues).
    pub send_queue: usize,
    /// flock pings devices this often; a device silent for three
    /// intervals is closed.
    pub ping_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(10),
            connections_per_minute: 60,
            connections_per_source: 64,
            max_connections: 10_000,
            messages_per_second: 50,
            sessions_per_device: 8,
            registrations_per_hour: 20,
            max_registry: 100_000,
            send_queue: 64,
            ping_interval: Duration::from_secs(15),
        }
    }
}

/// The TURN server flock mints credentials for.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub urls: Vec<String>,
    pub secret: Vec<u8>,
    pub ttl: Duration,
}

/// What the core needs to know besides the registry.
#[derive(Debug, Clone, Default)]
pub struct CoreConfig {
    pub limits: Limits,
    pub stun_urls: Vec<String>,
    pub turn: Option<TurnConfig>,
}

/// Randomness for nonces and TURN usernames (injected so tests are
/// deterministic).
pub trait RandomSource: Send {
    fn fill(&mut self, buf: &mut [u8]);
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send {
        conn: ConnId,
        frame: Frame,
    },
    /// Close the connection (after sending what is queued) and forget it.
    Close {
        conn: ConnId,
        reason: String,
    },
    /// Write these bytes to the registry file atomically, before the next
    /// `Send`.
    SaveRegistry(Vec<u8>),
    Log(Event),
}

/// Things worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Refused {
        peer: IpAddr,
        why: String,
    },
    Registered {
        conn: ConnId,
        name: DeviceName,
        new: bool,
    },
    Replaced {
        old: ConnId,
        name: DeviceName,
    },
    DeviceLeft {
        name: DeviceName,
    },
    SessionOpened {
        session: u64,
        name: DeviceName,
    },
    SessionEnded {
        session: u64,
        why: String,
    },
    CutOff {
        conn: ConnId,
        peer: IpAddr,
        why: String,
    },
    Ignored {
        conn: ConnId,
        why: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Refused { peer, why } => write!(f, "refused connection from {peer}: {why}"),
            Event::Registered { conn, name, new } => {
                let how = if *new {
                    "registered new name"
                } else {
                    "device online"
                };
                write!(f, "{how} {name} (conn {conn})")
            }
            Event::Replaced { old, name } => {
                write!(f, "{name} reconnected; old conn {old} replaced")
            }
            Event::DeviceLeft { name } => write!(f, "device {name} offline"),
            Event::SessionOpened { session, name } => {
                write!(f, "session {session} opened for {name}")
            }
            Event::SessionEnded { session, why } => write!(f, "session {session} ended: {why}"),
            Event::CutOff { conn, peer, why } => {
                write!(f, "cut off conn {conn} from {peer}: {why}")
            }
            Event::Ignored { conn, why } => write!(f, "ignored a message on conn {conn}: {why}"),
        }
    }
}

impl Event {
    /// Misbehaviour and refusals are warnings; the rest is information.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Event::Refused { .. } | Event::CutOff { .. } | Event::Ignored { .. }
        )
    }
}

enum State {
    /// Device connected, challenge sent.
    Challenged { nonce: [u8; 32] },
    /// Device proved its name.
    Device { name: DeviceName },
    /// Browser connected, no `connect` yet.
    BrowserNew,
    /// Browser bound to one session.
    Browser { session: u64 },
}

struct Conn {
    peer: IpAddr,
    kind: Kind,
    state: State,
    opened: Instant,
    last_rx: Instant,
    bucket: TokenBucket,
}

struct OnlineDevice {
    conn: ConnId,
    sessions: BTreeSet<u64>,
    next_ping: Instant,
    refresh_at: Option<Instant>,
}

struct Session {
    browser: ConnId,
    device: DeviceName,
    offered: bool,
    answered: bool,
}

struct Source {
    open: u32,
    connects: TokenBucket,
    registrations: TokenBucket,
}

/// The rendezvous state machine.
pub struct Flock {
    config: CoreConfig,
    registry: Registry,
    rng: Box<dyn RandomSource>,
    start: Instant,
    start_unix: u64,
    conns: HashMap<ConnId, Conn>,
    sources: HashMap<IpAddr, Source>,
    devices: HashMap<DeviceName, OnlineDevice>,
    sessions: HashMap<u64, Session>,
    next_session: u64,
    out: VecDeque<Output>,
}

/// Session ids stay below 2^53 so JavaScript numbers hold them exactly.
const SESSION_ID_MAX: u64 = (1 << 53) - 1;

impl Flock {
    /// `unix_now` is the wall clock (seconds) at `now`; TURN expiries are
    /// derived from it.
    pub fn new(
        config: CoreConfig,
        registry: Registry,
        rng: Box<dyn RandomSource>,
        now: Instant,
        unix_now: u64,
    ) -> Self {
        Self {
            config,
            registry,
            rng,
            start: now,
            start_unix: unix_now,
            conns: HashMap::new(),
            sources: HashMap::new(),
            devices: HashMap::new(),
            sessions: HashMap::new(),
            next_session: 1,
            out: VecDeque::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Number of open connections (for tests and metrics).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Is `name` online right now?
    pub fn is_online(&self, name: &DeviceName) -> bool {
        self.devices.contains_key(name)
    }

    /// A transport connection arrived. Returns false (and emits `Close`)
    /// when the source is over its limits; the shell may then drop it
    /// without a handshake.
    pub fn open(&mut self, conn: ConnId, kind: Kind, peer: IpAddr, now: Instant) -> bool {
        let limits = &self.config.limits;
        let total_full = self.conns.len() >= limits.max_connections;
        let source = self.sources.entry(peer).or_insert_with(|| Source {
            open: 0,
            connects: TokenBucket::new(limits.connections_per_minute, Duration::from_secs(60), now),
            registrations: TokenBucket::new(
                limits.registrations_per_hour,
                Duration::from_secs(3600),
                now,
            ),
        });
        let why = if total_full {
            Some("flock is full")
        } else if source.open >= limits.connections_per_source {
            Some("too many open connections from this address")
        } else if !source.connects.take(now) {
            Some("too many connections per minute from this address")
        } else {
            None
        };
        if let Some(why) = why {
            self.log(Event::Refused {
                peer,
                why: why.into(),
            });
            self.out.push_back(Output::Close {
                conn,
                reason: why.into(),
            });
            return false;
        }
        source.open += 1;
        let rate = limits.messages_per_second;
        let state = match kind {
            Kind::Device => {
                let mut nonce = [0u8; 32];
                self.rng.fill(&mut nonce);
                self.send_device(conn, &FlockToDevice::Challenge { nonce });
                State::Challenged { nonce }
            }
            Kind::Browser => State::BrowserNew,
        };
        self.conns.insert(
            conn,
            Conn {
                peer,
                kind,
                state,
                opened: now,
                last_rx: now,
                bucket: TokenBucket::new(rate.saturating_mul(2), Duration::from_secs(2), now),
            },
        );
        true
    }

    /// The transport ended (either side). Unknown ids are ignored.
    pub fn closed(&mut self, conn: ConnId, _now: Instant) {
        self.forget(conn, "peer closed the connection");
    }

    /// A data frame arrived on `conn`.
    pub fn frame(&mut self, conn: ConnId, frame: Frame, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_rx = now;
        if !c.bucket.take(now) {
            return self.cut(conn, "message flood (over the per-connection rate)");
        }
        let len = match &frame {
            Frame::Binary(b) => b.len(),
            Frame::Text(t) => t.len(),
        };
        if len > MAX_MESSAGE {
            return self.cut(conn, &format!("frame of {len} bytes over the limit"));
        }
        match (c.kind, frame) {
            (Kind::Device, Frame::Binary(b)) => match device::decode::<DeviceToFlock>(&b) {
                Ok(m) => self.device_message(conn, m, now),
                Err(e) => self.cut(conn, &format!("bad device frame: {e}")),
            },
            (Kind::Browser, Frame::Text(t)) => match browser::decode::<BrowserToFlock>(&t) {
                Ok(m) => self.browser_message(conn, m, now),
                Err(e) => {
                    let message = format!("bad message: {e}");
                    self.send_browser(
                        conn,
                        &FlockToBrowser::Error {
                            message: message.clone(),
                        },
                    );
                    self.cut(conn, &message)
                }
            },
            (Kind::Device, Frame::Text(_)) => self.cut(conn, "text frame on the device socket"),
            (Kind::Browser, Frame::Binary(_)) => {
                self.cut(conn, "binary frame on the browser socket")
            }
        }
    }

    /// Time passed: hello deadlines, pings, idle devices, credential refresh.
    pub fn timeout(&mut self, now: Instant) {
        let limits = self.config.limits.clone();
        let mut late = Vec::new();
        for (&id, c) in &self.conns {
            let waiting = matches!(c.state, State::Challenged { .. } | State::BrowserNew);
            if waiting && now >= c.opened + limits.hello_timeout {
                late.push((id, "no hello in time"));
            } else if matches!(c.state, State::Device { .. })
                && now >= c.last_rx + limits.ping_interval * 3
            {
                late.push((id, "device silent for three ping intervals"));
            }
        }
        late.sort_unstable();
        for (id, why) in late {
            self.cut(id, why);
        }
        let mut pings = Vec::new();
        let mut refresh = Vec::new();
        for d in self.devices.values_mut() {
            if now >= d.next_ping {
                d.next_ping = now + limits.ping_interval;
                pings.push(d.conn);
            }
            if d.refresh_at.is_some_and(|t| now >= t) {
                d.refresh_at = self.config.turn.as_ref().map(|t| now + t.ttl / 2);
                refresh.push(d.conn);
            }
        }
        pings.sort_unstable();
        for conn in pings {
            self.send_device(conn, &FlockToDevice::Ping);
        }
        refresh.sort_unstable();
        for conn in refresh {
            let ice_servers = self.ice_servers(now);
            self.send_device(conn, &FlockToDevice::Registered { ice_servers });
        }
        // Forget idle sources whose buckets have refilled.
        self.sources
            .retain(|_, s| s.open > 0 || !s.connects.is_full(now) || !s.registrations.is_full(now));
    }

    /// The earliest instant at which [`Flock::timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let limits = &self.config.limits;
        let conns = self.conns.values().filter_map(|c| match c.state {
            State::Challenged { .. } | State::BrowserNew => Some(c.opened + limits.hello_timeout),
            State::Device { .. } => Some(c.last_rx + limits.ping_interval * 3),
            State::Browser { .. } => None,
        });
        let devices = self
            .devices
            .values()
            .flat_map(|d| std::iter::once(d.next_ping).chain(d.refresh_at));
        conns.chain(devices).min()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    // ---- devices ----

    fn device_message(&mut self, conn: ConnId, msg: DeviceToFlock, now: Instant) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match (&c.state, msg) {
            (
                State::Challenged { nonce },
                DeviceToFlock::Hello {
                    name,
                    public_key,
                    signature,
                },
            ) => {
                let nonce = *nonce;
                self.hello(conn, nonce, name, public_key, signature, now)
            }
            (State::Challenged { .. }, _) => self.cut(conn, "message before hello"),
            (State::Device { .. }, DeviceToFlock::Hello { .. }) => self.cut(conn, "second hello"),
            (State::Device { name }, msg) => {
                let name = name.clone();
                self.registered_device_message(conn, name, msg)
            }
            (State::BrowserNew | State::Browser { .. }, _) => {}
        }
    }

    fn hello(
        &mut self,
        conn: ConnId,
        nonce: [u8; 32],
        name: DeviceName,
        public_key: Vec<u8>,
        signature: Vec<u8>,
        now: Instant,
    ) {
        if let Err(e) = verify_challenge(&public_key, &nonce, &name, &signature) {
            return self.reject(conn, &format!("hello refused: {e}"));
        }
        let new = match self.registry.check(&name, &public_key) {
            Binding::Same => false,
            Binding::Other => {
                return self.reject(conn, &format!("the name {name} belongs to another key"))
            }
            Binding::Free => true,
        };
        if new {
            if self.registry.len() >= self.config.limits.max_registry {
                return self.reject(conn, "the registry is full");
            }
            let Some(peer) = self.conns.get(&conn).map(|c| c.peer) else {
                return;
            };
            let allowed = self
                .sources
                .get_mut(&peer)
                .is_some_and(|s| s.registrations.take(now));
            if !allowed {
                return self.reject(conn, "too many new names from this address; try later");
            }
            self.registry.bind(name.clone(), public_key);
            self.out
                .push_back(Output::SaveRegistry(self.registry.to_bytes()));
        }
        if let Some(old) = self.devices.get(&name).map(|d| d.conn) {
            self.log(Event::Replaced {
                old,
                name: name.clone(),
            });
            self.out.push_back(Output::Close {
                conn: old,
                reason: "replaced by a newer connection of the same device".into(),
            });
            self.forget(old, "replaced by a newer connection");
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = State::Device { name: name.clone() };
        }
        let limits = &self.config.limits;
        self.devices.insert(
            name.clone(),
            OnlineDevice {
                conn,
                sessions: BTreeSet::new(),
                next_ping: now + limits.ping_interval,
                refresh_at: self.config.turn.as_ref().map(|t| now + t.ttl / 2),
            },
        );
        self.log(Event::Registered { conn, name, new });
        let ice_servers = self.ice_servers(now);
        self.send_device(conn, &FlockToDevice::Registered { ice_servers });
    }

    fn reject(&mut self, conn: ConnId, reason: &str) {
        self.send_device(
            conn,
            &FlockToDevice::Rejected {
                reason: reason.into(),
            },
        );
        self.cut(conn, reason);
    }

    fn registered_device_message(&mut self, conn: ConnId, name: DeviceName, msg: DeviceToFlock) {
        let session_of = |s: u64, this: &Self| {
            this.devices
                .get(&name)
                .is_some_and(|d| d.sessions.contains(&s))
        };
        match msg {
            DeviceToFlock::Ping => self.send_device(conn, &FlockToDevice::Pong),
            DeviceToFlock::Pong => {}
            DeviceToFlock::Hello { .. } => self.cut(conn, "second hello"),
            DeviceToFlock::SessionAnswer { session, sdp } => {
                if !session_of(session, self) {
                    return self.ignored(conn, format!("answer for unknown session {session}"));
                }
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                if !s.offered || s.answered {
                    return self.ignored(conn, format!("unexpected answer for session {session}"));
                }
                s.answered = true;
                let browser = s.browser;
                self.send_browser(browser, &FlockToBrowser::Answer { sdp });
            }
            DeviceToFlock::Candidate {
                session,
                candidate,
                sdp_mid,
            } => {
                if !session_of(session, self) {
                    return self.ignored(conn, format!("candidate for unknown session {session}"));
                }
                if let Some(s) = self.sessions.get(&session) {
                    let browser = s.browser;
                    self.send_browser(browser, &FlockToBrowser::Candidate { candidate, sdp_mid });
                }
            }
            DeviceToFlock::SessionClosed { session, reason } => {
                if !session_of(session, self) {
                    return self.ignored(conn, format!("close of unknown session {session}"));
                }
                self.end_session(session, &format!("device: {reason}"), false);
            }
        }
    }

    // ---- browsers ----

    fn browser_message(&mut self, conn: ConnId, msg: BrowserToFlock, now: Instant) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match (&c.state, msg) {
            (State::BrowserNew, BrowserToFlock::Connect { device }) => {
                self.connect(conn, device, now)
            }
            (State::BrowserNew, _) => self.browser_violation(conn, "connect first"),
            (State::Browser { .. }, BrowserToFlock::Connect { .. }) => {
                self.browser_violation(conn, "already connected to a device")
            }
            (&State::Browser { session }, BrowserToFlock::Offer { sdp }) => {
                let Some(s) = self.sessions.get_mut(&session) else {
                    return;
                };
                if s.offered {
                    return self.browser_violation(conn, "only one offer per session");
                }
                s.offered = true;
                let device = s.device.clone();
                if let Some(d) = self.devices.get(&device) {
                    let dconn = d.conn;
                    self.send_device(dconn, &FlockToDevice::SessionOffer { session, sdp });
                }
            }
            (&State::Browser { session }, BrowserToFlock::Candidate { candidate, sdp_mid }) => {
                let Some(s) = self.sessions.get(&session) else {
                    return;
                };
                if !s.offered {
                    return self.browser_violation(conn, "candidate before offer");
                }
                if let Some(d) = self.devices.get(&s.device) {
                    let dconn = d.conn;
                    self.send_device(
                        dconn,
                        &FlockToDevice::Candidate {
                            session,
                            candidate,
                            sdp_mid,
                        },
                    );
                }
            }
            (State::Challenged { .. } | State::Device { .. }, _) => {}
        }
    }

    fn connect(&mut self, conn: ConnId, name: DeviceName, now: Instant) {
        let max = self.config.limits.sessions_per_device;
        let Some(d) = self.devices.get_mut(&name) else {
            let message = format!("device {name} is unknown or offline");
            self.send_browser(
                conn,
                &FlockToBrowser::Error {
                    message: message.clone(),
                },
            );
            self.out.push_back(Output::Close {
                conn,
                reason: message,
            });
            return self.forget(conn, "device offline");
        };
        if d.sessions.len() >= max {
            let message = format!("device {name} has too many sessions; try later");
            self.send_browser(
                conn,
                &FlockToBrowser::Error {
                    message: message.clone(),
                },
            );
            self.out.push_back(Output::Close {
                conn,
                reason: message,
            });
            return self.forget(conn, "too many sessions");
        }
        let session = self.next_session;
        self.next_session = if session >= SESSION_ID_MAX {
            1
        } else {
            session + 1
        };
        d.sessions.insert(session);
        self.sessions.insert(
            session,
            Session {
                browser: conn,
                device: name.clone(),
                offered: false,
                answered: false,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = State::Browser { session };
        }
        self.log(Event::SessionOpened { session, name });
        let ice_servers = self.ice_servers(now);
        self.send_browser(
            conn,
            &FlockToBrowser::Session {
                session,
                ice_servers,
            },
        );
    }

    fn browser_violation(&mut self, conn: ConnId, why: &str) {
        self.send_browser(
            conn,
            &FlockToBrowser::Error {
                message: why.into(),
            },
        );
        self.cut(conn, why);
    }

    // ---- common ----

    /// Ends a session: tells the browser (and closes its socket) and, if
    /// it knew of it, the device.
    fn end_session(&mut self, session: u64, why: &str, tell_device: bool) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        self.log(Event::SessionEnded {
            session,
            why: why.into(),
        });
        let dconn = self.devices.get_mut(&s.device).map(|d| {
            d.sessions.remove(&session);
            d.conn
        });
        if tell_device && s.offered {
            if let Some(dconn) = dconn {
                self.send_device(
                    dconn,
                    &FlockToDevice::SessionClosed {
                        session,
                        reason: why.into(),
                    },
                );
            }
        }
        if self.conns.contains_key(&s.browser) {
            self.send_browser(s.browser, &FlockToBrowser::Closed { reason: why.into() });
            self.out.push_back(Output::Close {
                conn: s.browser,
                reason: why.into(),
            });
            self.forget(s.browser, why);
        }
    }

    /// Closes a misbehaving connection and logs why.
    fn cut(&mut self, conn: ConnId, why: &str) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        self.log(Event::CutOff {
            conn,
            peer: c.peer,
            why: why.into(),
        });
        self.out.push_back(Output::Close {
            conn,
            reason: why.into(),
        });
        self.forget(conn, why);
    }

    /// Drops all state of `conn` and ends what ran over it.
    fn forget(&mut self, conn: ConnId, why: &str) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(s) = self.sources.get_mut(&c.peer) {
            s.open = s.open.saturating_sub(1);
        }
        match c.state {
            State::Device { name } => {
                // Only if this connection is still the device's current one.
                if self.devices.get(&name).is_some_and(|d| d.conn == conn) {
                    if let Some(d) = self.devices.remove(&name) {
                        for session in d.sessions {
                            self.end_session(session, "device disconnected", false);
                        }
                    }
                    self.log(Event::DeviceLeft { name });
                }
            }
            State::Browser { session } => {
                if self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.browser == conn)
                {
                    self.end_session(session, &format!("browser left: {why}"), true);
                }
            }
            State::Challenged { .. } | State::BrowserNew => {}
        }
    }

    fn ignored(&mut self, conn: ConnId, why: String) {
        self.log(Event::Ignored { conn, why });
    }

    fn log(&mut self, e: Event) {
        self.out.push_back(Output::Log(e));
    }

    fn send_device(&mut self, conn: ConnId, msg: &FlockToDevice) {
        match device::encode(msg) {
            Ok(b) => self.out.push_back(Output::Send {
                conn,
                frame: Frame::Binary(b),
            }),
            // Only relayed SDP could be this big, and it was checked on the
            // way in; refusing here keeps the bound even so.
            Err(e) => self.ignored(conn, format!("not sent: {e}")),
        }
    }

    fn send_browser(&mut self, conn: ConnId, msg: &FlockToBrowser) {
        match browser::encode(msg) {
            Ok(t) => self.out.push_back(Output::Send {
                conn,
                frame: Frame::Text(t),
            }),
            Err(e) => self.ignored(conn, format!("not sent: {e}")),
        }
    }

    fn ice_servers(&mut self, now: Instant) -> Vec<IceServer> {
        let mut v = Vec::new();
        if !self.config.stun_urls.is_empty() {
            v.push(IceServer {
                urls: self.config.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let Some(t) = &self.config.turn {
            let unix = self.start_unix + now.saturating_duration_since(self.start).as_secs();
            let mut random = [0u8; 8];
            self.rng.fill(&mut random);
            let (username, credential) =
                turn::credentials(&t.secret, unix + t.ttl.as_secs(), &random);
            v.push(IceServer {
                urls: t.urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        v
    }
}

#[cfg(test)]
mod tests;
