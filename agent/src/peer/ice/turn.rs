//! A sans-IO TURN client (RFC 8656, UDP to the server, UDP relay) for one
//! allocation: bytes from the server and the current `Instant` go in;
//! datagrams for the server, timeouts and events come out.
//!
//! Allocate (answered 401 with REALM and NONCE) → Allocate with long-term
//! credentials → relayed address; then Refresh before LIFETIME runs out,
//! CreatePermission per peer IP (refreshed every 4 minutes), Send/Data
//! indications for a peer's first datagrams and ChannelData (4 bytes of
//! framing instead of 36) once a ChannelBind for it succeeded (refreshed
//! every 9 minutes). Invariants: every request is
//! retransmitted until answered or [`REQUEST_TIMEOUT`] passes; a success
//! response counts only with a valid MESSAGE-INTEGRITY; data for a peer
//! without an installed permission waits (a few datagrams) for it.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::stun::{self, attr, Class, Encoder, Message, Method, TransactionId};

/// How long a request is retransmitted before it is given up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// First retransmission interval (doubling, capped at 1.6 s).
const INITIAL_RTO: Duration = Duration::from_millis(100);
const MAX_RTO: Duration = Duration::from_millis(1600);
/// Permissions last 300 s (RFC 8656 §9); refreshed a minute early.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Allocation lifetime asked for.
const LIFETIME: u32 = 600;
/// How long a refused permission is not asked for again.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// Channel bindings last 600 s (RFC 8656 §12); refreshed a minute early.
const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// Channel numbers (RFC 8656 §12: 0x4000 through 0x4FFF).
const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x4FFF;
/// Datagrams kept per peer while its permission is being installed.
const QUEUED_PER_PEER: usize = 16;
/// After an unanswered refresh (allocation, permission or channel), the
/// next try comes this much later, for as long as what it refreshes has
/// not expired: one lost exchange (or a few seconds of the session not
/// reading its socket) does not throw away a working relay.
const REFRESH_RETRY: Duration = Duration::from_secs(5);
/// How long before expiry a permission (300 s) or channel (600 s) is
/// refreshed: expiry = `refresh_at` + this.
const REFRESH_EARLY: Duration = Duration::from_secs(60);
/// Shortest allocation lifetime honoured (a server answering 0 or 1 s
/// would otherwise be refreshed in a tight loop).
const MIN_LIFETIME: Duration = Duration::from_secs(30);
/// 438 Stale Nonce retries per request.
const NONCE_RETRIES: u8 = 3;
/// REQUESTED-TRANSPORT: UDP.
const UDP: u32 = 17 << 24;

/// Something the allocation reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The allocation exists: the relayed address (the relay candidate)
    /// and our address as the server saw it (a server-reflexive address).
    Allocated {
        relayed: SocketAddr,
        mapped: Option<SocketAddr>,
    },
    /// The allocation failed or was lost; the reason names what to fix.
    Failed(String),
}

/// What a datagram from the server was.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A response or indication the client consumed.
    Consumed,
    /// Relayed data from `peer`.
    Data { peer: SocketAddr, data: Vec<u8> },
    /// Not for this client (unknown transaction, not STUN).
    NotMine,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Allocate,
    Refresh { lifetime: u32 },
    CreatePermission { ip: IpAddr },
    ChannelBind { peer: SocketAddr, number: u16 },
}

struct Transaction {
    request: Request,
    bytes: Vec<u8>,
    next_send: Instant,
    rto: Duration,
    give_up: Instant,
    authenticated: bool,
    nonce_retries: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Allocating,
    Allocated,
    Failed,
    Closed,
}

enum Permission {
    Pending(Vec<(SocketAddr, Vec<u8>)>),
    Installed {
        refresh_at: Instant,
        refreshing: bool,
    },
    /// The server refused it (e.g. 403 for a denied peer range): data for
    /// the IP is dropped until `retry_at` instead of asking on every check.
    Refused {
        retry_at: Instant,
    },
}

enum Channel {
    Binding,
    Bound {
        number: u16,
        refresh_at: Instant,
        refreshing: bool,
    },
    /// Refused or unanswered: the peer's data goes as Send indications.
    Failed,
}

/// One TURN allocation.
pub struct TurnClient {
    server: SocketAddr,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    state: State,
    relayed: Option<SocketAddr>,
    refresh_at: Option<Instant>,
    /// When the allocation expires unless refreshed.
    expires_at: Option<Instant>,
    transactions: HashMap<TransactionId, Transaction>,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<SocketAddr, Channel>,
    by_number: HashMap<u16, SocketAddr>,
    next_channel: u16,
    ids: TransactionIds,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
}

/// Transaction ids from a random seed (the caller's randomness) and a
/// counter, so tests are deterministic. Ids differ from each other in the
/// last 8 bytes; [`TransactionIds::child`] seeds differ in the first 4, so
/// no two generators derived from one seed ever hand out the same id.
pub struct TransactionIds {
    seed: TransactionId,
    counter: u64,
    children: u32,
}

impl TransactionIds {
    pub fn new(seed: TransactionId) -> Self {
        TransactionIds {
            seed,
            counter: 0,
            children: 0,
        }
    }

    /// A seed for another generator whose ids never collide with these.
    pub fn child(&mut self) -> TransactionId {
        self.children += 1;
        let mut seed = self.seed;
        for (b, c) in seed[..4].iter_mut().zip(self.children.to_be_bytes()) {
            *b ^= c;
        }
        seed
    }

    pub fn next_id(&mut self) -> TransactionId {
        self.counter += 1;
        let mut id = self.seed;
        for (b, c) in id[4..].iter_mut().zip(self.counter.to_be_bytes()) {
            *b ^= c;
        }
        id
    }
}

impl TurnClient {
    /// Starts allocating on `server` (the first request is queued).
    pub fn new(
        server: SocketAddr,
        username: String,
        password: String,
        seed: TransactionId,
        now: Instant,
    ) -> Self {
        let mut c = TurnClient {
            server,
            username,
            password,
            realm: None,
            nonce: None,
            key: None,
            state: State::Allocating,
            relayed: None,
            refresh_at: None,
            expires_at: None,
            transactions: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            by_number: HashMap::new(),
            next_channel: *CHANNELS.start(),
            ids: TransactionIds::new(seed),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        c.request(Request::Allocate, now, 0);
        c
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed.filter(|_| self.state == State::Allocated)
    }

    /// Allocated, failed or closed: no longer gathering.
    pub fn is_settled(&self) -> bool {
        self.state != State::Allocating
    }

    /// The next datagram for the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// When [`TurnClient::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.transactions.values().map(|t| t.next_send).min();
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if self.state == State::Allocated {
            if let Some(r) = self.refresh_at {
                at(r);
            }
            for p in self.permissions.values() {
                if let Permission::Installed {
                    refresh_at,
                    refreshing: false,
                } = p
                {
                    at(*refresh_at);
                }
            }
            for c in self.channels.values() {
                if let Channel::Bound {
                    refresh_at,
                    refreshing: false,
                    ..
                } = c
                {
                    at(*refresh_at);
                }
            }
        }
        t
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (id, t) in self.transactions.iter_mut() {
            if now >= t.give_up {
                expired.push(*id);
            } else if now >= t.next_send {
                self.transmits.push_back(t.bytes.clone());
                t.rto = (t.rto * 2).min(MAX_RTO);
                t.next_send = (now + t.rto).min(t.give_up);
            }
        }
        for id in expired {
            if let Some(t) = self.transactions.remove(&id) {
                self.timed_out(now, t.request);
            }
        }
        if self.state != State::Allocated {
            return;
        }
        if self.refresh_at.is_some_and(|r| now >= r) {
            self.refresh_at = None;
            self.request(Request::Refresh { lifetime: LIFETIME }, now, 0);
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter_map(|(ip, p)| match p {
                Permission::Installed {
                    refresh_at,
                    refreshing: false,
                } if now >= *refresh_at => Some(*ip),
                _ => None,
            })
            .collect();
        for ip in due {
            if let Some(Permission::Installed { refreshing, .. }) = self.permissions.get_mut(&ip) {
                *refreshing = true;
            }
            self.request(Request::CreatePermission { ip }, now, 0);
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter_map(|(peer, c)| match c {
                Channel::Bound {
                    number,
                    refresh_at,
                    refreshing: false,
                } if now >= *refresh_at => Some((*peer, *number)),
                _ => None,
            })
            .collect();
        for (peer, number) in due {
            if let Some(Channel::Bound { refreshing, .. }) = self.channels.get_mut(&peer) {
                *refreshing = true;
            }
            self.request(Request::ChannelBind { peer, number }, now, 0);
        }
    }

    fn timed_out(&mut self, now: Instant, request: Request) {
        let server = self.server;
        match request {
            Request::Allocate => self.fail(format!(
                "TURN server {server} did not answer the allocation within {} s",
                REQUEST_TIMEOUT.as_secs()
            )),
            Request::Refresh { lifetime: 0 } => {}
            Request::Refresh { .. } => {
                if self.expires_at.is_some_and(|e| now + REFRESH_RETRY < e) {
                    tracing::debug!(%server, "TURN refresh unanswered; trying again");
                    self.refresh_at = Some(now + REFRESH_RETRY);
                } else {
                    self.fail(format!("TURN server {server} stopped answering refreshes"))
                }
            }
            Request::CreatePermission { ip } => match self.permissions.get_mut(&ip) {
                Some(Permission::Installed {
                    refresh_at,
                    refreshing,
                }) if now + REFRESH_RETRY < *refresh_at + REFRESH_EARLY => {
                    tracing::debug!(%server, %ip, "TURN permission refresh unanswered; trying again");
                    *refresh_at = now + REFRESH_RETRY;
                    *refreshing = false;
                }
                _ => {
                    tracing::debug!(%server, %ip, "TURN permission request timed out");
                    self.permissions.remove(&ip);
                }
            },
            Request::ChannelBind { peer, number } => match self.channels.get_mut(&peer) {
                Some(Channel::Bound {
                    refresh_at,
                    refreshing,
                    ..
                }) if now + REFRESH_RETRY < *refresh_at + REFRESH_EARLY => {
                    tracing::debug!(%server, %peer, "TURN channel refresh unanswered; trying again");
                    *refresh_at = now + REFRESH_RETRY;
                    *refreshing = false;
                }
                _ => {
                    tracing::debug!(%server, %peer, "TURN channel binding timed out");
                    self.unbind(peer, number);
                }
            },
        }
    }

    /// The channel is not (or no longer) usable: Send indications again.
    fn unbind(&mut self, peer: SocketAddr, number: u16) {
        self.by_number.remove(&number);
        self.channels.insert(peer, Channel::Failed);
    }

    fn fail(&mut self, reason: String) {
        if matches!(self.state, State::Failed | State::Closed) {
            return;
        }
        self.state = State::Failed;
        self.transactions.clear();
        self.permissions.clear();
        self.events.push_back(TurnEvent::Failed(reason));
    }

    fn request(&mut self, request: Request, now: Instant, nonce_retries: u8) {
        let id = self.ids.next_id();
        let method = match request {
            Request::Allocate => Method::Allocate,
            Request::Refresh { .. } => Method::Refresh,
            Request::CreatePermission { .. } => Method::CreatePermission,
            Request::ChannelBind { .. } => Method::ChannelBind,
        };
        let mut e = Encoder::new(Class::Request, method, id);
        match &request {
            Request::Allocate => {
                e = e
                    .u32(attr::REQUESTED_TRANSPORT, UDP)
                    .u32(attr::LIFETIME, LIFETIME)
            }
            Request::Refresh { lifetime } => e = e.u32(attr::LIFETIME, *lifetime),
            Request::CreatePermission { ip } => {
                e = e.address(attr::XOR_PEER_ADDRESS, SocketAddr::new(*ip, 0))
            }
            Request::ChannelBind { peer, number } => {
                e = e
                    .u32(attr::CHANNEL_NUMBER, u32::from(*number) << 16)
                    .address(attr::XOR_PEER_ADDRESS, *peer)
            }
        }
        let authenticated = self.key.is_some();
        let bytes = match (&self.realm, &self.nonce, &self.key) {
            (Some(realm), Some(nonce), Some(key)) => e
                .text(attr::USERNAME, &self.username)
                .text(attr::REALM, realm)
                .text(attr::NONCE, nonce)
                .finish(Some(key), true),
            _ => e.finish(None, true),
        };
        self.transmits.push_back(bytes.clone());
        if let Request::Refresh { lifetime: 0 } = request {
            // Deallocation is sent once, unanswered or not.
            return;
        }
        self.transactions.insert(
            id,
            Transaction {
                request,
                bytes,
                next_send: now + INITIAL_RTO,
                rto: INITIAL_RTO,
                give_up: now + REQUEST_TIMEOUT,
                authenticated,
                nonce_retries,
            },
        );
    }

    /// Handles a datagram that came from the server.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) -> Incoming {
        if let Some(incoming) = self.channel_data(bytes) {
            return incoming;
        }
        if !stun::is_stun(bytes) {
            return Incoming::NotMine;
        }
        let message = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(server = %self.server, "dropped a bad TURN message: {e}");
                return Incoming::Consumed;
            }
        };
        if message.class == Class::Indication && message.method == Method::Data {
            let peer = message.address(attr::XOR_PEER_ADDRESS);
            let data = message.find(|a| match a {
                stun::Attribute::Data(d) => Some(d.clone()),
                _ => None,
            });
            return match (peer, data) {
                (Some(peer), Some(data)) if self.state == State::Allocated => {
                    Incoming::Data { peer, data }
                }
                _ => Incoming::Consumed,
            };
        }
        if !message.is_response() {
            return Incoming::NotMine;
        }
        let Some(t) = self.transactions.remove(&message.transaction) else {
            return Incoming::NotMine;
        };
        if message.class == Class::Success {
            let verified = match &self.key {
                Some(key) => stun::verify_integrity(bytes, &message, key),
                None => Err(stun::StunError::NoIntegrity),
            };
            if let Err(e) = verified {
                // Not from the server we share the key with: keep waiting.
                tracing::debug!(server = %self.server, "dropped a TURN response: {e}");
                self.transactions.insert(message.transaction, t);
                return Incoming::Consumed;
            }
            self.on_success(now, t.request, &message);
        } else {
            // An error answering an authenticated request that carries a
            // MESSAGE-INTEGRITY must verify (RFC 8489 §9.2.5), except the
            // 401 and 438 challenges. One without any is taken: servers
            // (coturn among them) often send 403 and the like bare.
            let code = message.error_code().map(|(c, _)| c);
            let challenge = matches!(code, Some(401 | 438));
            if let (true, false, Some(key)) = (t.authenticated, challenge, &self.key) {
                match stun::verify_integrity(bytes, &message, key) {
                    Ok(()) | Err(stun::StunError::NoIntegrity) => {}
                    Err(e) => {
                        tracing::debug!(server = %self.server, "dropped a TURN error response: {e}");
                        self.transactions.insert(message.transaction, t);
                        return Incoming::Consumed;
                    }
                }
            }
            self.on_error(now, t, &message);
        }
        Incoming::Consumed
    }

    /// ChannelData (RFC 8656 §12.4): channel number, length, data.
    fn channel_data(&self, bytes: &[u8]) -> Option<Incoming> {
        let number = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
        if !CHANNELS.contains(&number) {
            return None;
        }
        let len = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize;
        let (Some(data), Some(peer)) = (bytes.get(4..4 + len), self.by_number.get(&number)) else {
            return Some(Incoming::Consumed);
        };
        if self.state != State::Allocated {
            return Some(Incoming::Consumed);
        }
        Some(Incoming::Data {
            peer: *peer,
            data: data.to_vec(),
        })
    }

    fn on_success(&mut self, now: Instant, request: Request, message: &Message) {
        match request {
            Request::Allocate => {
                let Some(relayed) = message.address(attr::XOR_RELAYED_ADDRESS) else {
                    return self.fail(format!(
                        "TURN server {} allocated without XOR-RELAYED-ADDRESS",
                        self.server
                    ));
                };
                self.state = State::Allocated;
                self.relayed = Some(relayed);
                self.schedule_refresh(now, message);
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped: message.address(attr::XOR_MAPPED_ADDRESS),
                });
            }
            Request::Refresh { .. } => self.schedule_refresh(now, message),
            Request::CreatePermission { ip } => {
                let queued = match self.permissions.insert(
                    ip,
                    Permission::Installed {
                        refresh_at: now + PERMISSION_REFRESH,
                        refreshing: false,
                    },
                ) {
                    Some(Permission::Pending(q)) => q,
                    _ => Vec::new(),
                };
                for (peer, data) in queued {
                    self.send_to(now, peer, &data);
                }
            }
            Request::ChannelBind { peer, number } => {
                self.channels.insert(
                    peer,
                    Channel::Bound {
                        number,
                        refresh_at: now + CHANNEL_REFRESH,
                        refreshing: false,
                    },
                );
            }
        }
    }

    fn schedule_refresh(&mut self, now: Instant, message: &Message) {
        let lifetime = message
            .find(|a| match a {
                stun::Attribute::Lifetime(l) => Some(*l),
                _ => None,
            })
            .unwrap_or(LIFETIME);
        // A minute early, or halfway for short lifetimes.
        let lifetime = Duration::from_secs(lifetime.into()).max(MIN_LIFETIME);
        let early = REFRESH_EARLY.min(lifetime / 2);
        self.refresh_at = Some(now + lifetime - early);
        self.expires_at = Some(now + lifetime);
    }

    fn on_error(&mut self, now: Instant, t: Transaction, message: &Message) {
        let (code, reason) = message
            .error_code()
            .map(|(c, r)| (c, r.to_string()))
            .unwrap_or((0, "no ERROR-CODE".into()));
        let server = self.server;
        let nonce = message.text(attr::NONCE).map(str::to_string);
        match code {
            401 if !t.authenticated && t.request == Request::Allocate => {
                let (Some(realm), Some(nonce)) = (message.text(attr::REALM), nonce) else {
                    return self.fail(format!(
                        "TURN server {server} asked for credentials without REALM and NONCE"
                    ));
                };
                self.key = Some(stun::long_term_key(&self.username, realm, &self.password));
                self.realm = Some(realm.to_string());
                self.nonce = Some(nonce);
                self.request(t.request, now, t.nonce_retries);
            }
            438 if t.nonce_retries < NONCE_RETRIES && nonce.is_some() => {
                self.nonce = nonce;
                if let Some(realm) = message.text(attr::REALM) {
                    self.realm = Some(realm.to_string());
                }
                self.request(t.request, now, t.nonce_retries + 1);
            }
            _ => match t.request {
                Request::Allocate if code == 401 => self.fail(format!(
                    "TURN server {server} refused the credentials of user {:?} \
                     ({code} {reason}); they are short-lived, check flock's TURN secret and clocks",
                    self.username
                )),
                Request::Allocate | Request::Refresh { .. } => self.fail(format!(
                    "TURN server {server} refused {:?}: {code} {reason}",
                    t.request
                )),
                Request::CreatePermission { ip } => {
                    tracing::warn!(
                        %server,
                        %ip,
                        "TURN permission refused: {code} {reason}; not asked again for {} s",
                        REFUSED_RETRY.as_secs()
                    );
                    self.permissions.insert(
                        ip,
                        Permission::Refused {
                            retry_at: now + REFUSED_RETRY,
                        },
                    );
                }
                Request::ChannelBind { peer, number } => {
                    tracing::debug!(%server, %peer, "TURN channel binding refused: {code} {reason}");
                    self.unbind(peer, number);
                }
            },
        }
    }

    /// Sends `data` to `peer` through the relay; asks for a permission
    /// first if the peer's IP has none (the data waits for it).
    pub fn send_to(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        if self.state != State::Allocated {
            return;
        }
        match self.permissions.get_mut(&peer.ip()) {
            Some(Permission::Installed { .. }) => match self.channels.get(&peer) {
                Some(Channel::Bound { number, .. }) => {
                    let mut framed = Vec::with_capacity(4 + data.len());
                    framed.extend_from_slice(&number.to_be_bytes());
                    framed.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    framed.extend_from_slice(data);
                    self.transmits.push_back(framed);
                }
                Some(_) => self.send_indication(peer, data),
                None => {
                    self.send_indication(peer, data);
                    if CHANNELS.contains(&self.next_channel) {
                        let number = self.next_channel;
                        self.next_channel += 1;
                        self.channels.insert(peer, Channel::Binding);
                        self.by_number.insert(number, peer);
                        self.request(Request::ChannelBind { peer, number }, now, 0);
                    }
                }
            },
            Some(Permission::Pending(queue)) => {
                if queue.len() < QUEUED_PER_PEER {
                    queue.push((peer, data.to_vec()));
                }
            }
            Some(Permission::Refused { retry_at }) if now < *retry_at => {}
            Some(Permission::Refused { .. }) | None => {
                self.permissions
                    .insert(peer.ip(), Permission::Pending(vec![(peer, data.to_vec())]));
                self.request(Request::CreatePermission { ip: peer.ip() }, now, 0);
            }
        }
    }

    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let id = self.ids.next_id();
        let bytes = Encoder::new(Class::Indication, Method::Send, id)
            .address(attr::XOR_PEER_ADDRESS, peer)
            .raw(attr::DATA, data)
            .finish(None, false);
        self.transmits.push_back(bytes);
    }

    /// Releases the allocation (a Refresh with LIFETIME 0, sent once).
    pub fn close(&mut self, now: Instant) {
        let was = self.state;
        self.state = State::Closed;
        self.transactions.clear();
        self.permissions.clear();
        self.channels.clear();
        self.by_number.clear();
        if was == State::Allocated {
            self.request(Request::Refresh { lifetime: 0 }, now, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "192.0.2.10:3478";
    const RELAYED: &str = "192.0.2.10:50000";
    const MAPPED: &str = "198.51.100.7:40000";

    fn client(now: Instant) -> TurnClient {
        TurnClient::new(
            SERVER.parse().unwrap(),
            "1700000000:dev".into(),
            "secret".into(),
            [9; 12],
            now,
        )
    }

    fn challenge(req: &[u8], code: u16, nonce: &str) -> Vec<u8> {
        let m = Message::decode(req).unwrap();
        let ec = [0, 0, (code / 100) as u8, (code % 100) as u8];
        Encoder::new(Class::Error, m.method, m.transaction)
            .raw(attr::ERROR_CODE, &[&ec[..], b"x"].concat())
            .text(attr::REALM, "intrustd.test")
            .text(attr::NONCE, nonce)
            .finish(None, true)
    }

    fn key() -> [u8; 16] {
        stun::long_term_key("1700000000:dev", "intrustd.test", "secret")
    }

    fn allocated(req: &[u8], key: &[u8]) -> Vec<u8> {
        let m = Message::decode(req).unwrap();
        Encoder::new(Class::Success, Method::Allocate, m.transaction)
            .address(attr::XOR_RELAYED_ADDRESS, RELAYED.parse().unwrap())
            .address(attr::XOR_MAPPED_ADDRESS, MAPPED.parse().unwrap())
            .u32(attr::LIFETIME, 600)
            .finish(Some(key), true)
    }

    fn success(req: &[u8]) -> Vec<u8> {
        let m = Message::decode(req).unwrap();
        Encoder::new(Class::Success, m.method, m.transaction).finish(Some(&key()), true)
    }

    /// Drains what the client sends.
    fn sent(c: &mut TurnClient) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| c.poll_transmit()).collect()
    }

    /// An allocated client that sent its first datagram to `peer` and got
    /// the permission: the datagram went as a Send indication, and the
    /// returned request asks for a channel.
    fn asking_to_bind(now: Instant, peer: SocketAddr) -> (TurnClient, Vec<u8>) {
        let mut c = allocate(now);
        c.send_to(now, peer, b"first");
        let perm = c.poll_transmit().unwrap();
        c.handle_datagram(now, &success(&perm));
        let _indication = c.poll_transmit().unwrap();
        let bind = c.poll_transmit().unwrap();
        (c, bind)
    }

    /// Runs the 401 dance; returns the client allocated.
    fn allocate(now: Instant) -> TurnClient {
        let mut c = client(now);
        let first = c.poll_transmit().unwrap();
        assert!(Message::decode(&first)
            .unwrap()
            .text(attr::USERNAME)
            .is_none());
        assert_eq!(
            c.handle_datagram(now, &challenge(&first, 401, "n1")),
            Incoming::Consumed
        );
        let second = c.poll_transmit().unwrap();
        let m = Message::decode(&second).unwrap();
        assert_eq!(m.text(attr::USERNAME), Some("1700000000:dev"));
        assert_eq!(m.text(attr::NONCE), Some("n1"));
        stun::verify_integrity(&second, &m, &key()).unwrap();
        c.handle_datagram(now, &allocated(&second, &key()));
        assert_eq!(
            c.poll_event(),
            Some(TurnEvent::Allocated {
                relayed: RELAYED.parse().unwrap(),
                mapped: Some(MAPPED.parse().unwrap())
            })
        );
        c
    }

    #[test]
    fn transaction_ids_of_a_generator_and_its_children_are_distinct() {
        let mut parent = TransactionIds::new([0xA5; 12]);
        let mut a = TransactionIds::new(parent.child());
        let mut b = TransactionIds::new(parent.child());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            for ids in [&mut parent, &mut a, &mut b] {
                assert!(seen.insert(ids.next_id()));
            }
        }
    }

    #[test]
    fn allocates_with_long_term_credentials() {
        let c = allocate(Instant::now());
        assert_eq!(c.relayed(), Some(RELAYED.parse().unwrap()));
        assert!(c.is_settled());
    }

    #[test]
    fn a_second_401_is_a_credential_failure() {
        let now = Instant::now();
        let mut c = client(now);
        let first = c.poll_transmit().unwrap();
        c.handle_datagram(now, &challenge(&first, 401, "n1"));
        let second = c.poll_transmit().unwrap();
        c.handle_datagram(now, &challenge(&second, 401, "n2"));
        match c.poll_event() {
            Some(TurnEvent::Failed(r)) => assert!(r.contains("refused the credentials"), "{r}"),
            e => panic!("{e:?}"),
        }
        assert!(c.is_settled() && c.relayed().is_none());
    }

    #[test]
    fn stale_nonce_is_retried_with_the_new_one() {
        let now = Instant::now();
        let mut c = client(now);
        let first = c.poll_transmit().unwrap();
        c.handle_datagram(now, &challenge(&first, 401, "n1"));
        let second = c.poll_transmit().unwrap();
        c.handle_datagram(now, &challenge(&second, 438, "n2"));
        let third = c.poll_transmit().unwrap();
        assert_eq!(
            Message::decode(&third).unwrap().text(attr::NONCE),
            Some("n2")
        );
        c.handle_datagram(now, &allocated(&third, &key()));
        assert!(matches!(c.poll_event(), Some(TurnEvent::Allocated { .. })));
    }

    #[test]
    fn a_success_with_a_bad_integrity_is_ignored() {
        let now = Instant::now();
        let mut c = client(now);
        let first = c.poll_transmit().unwrap();
        c.handle_datagram(now, &challenge(&first, 401, "n1"));
        let second = c.poll_transmit().unwrap();
        c.handle_datagram(now, &allocated(&second, b"forged"));
        assert_eq!(c.poll_event(), None);
        assert!(!c.is_settled());
    }

    #[test]
    fn retransmits_then_gives_up() {
        let start = Instant::now();
        let mut c = client(start);
        let first = c.poll_transmit().unwrap();
        let mut now = start;
        let mut sends = 0;
        while let Some(t) = c.poll_timeout() {
            now = t;
            c.handle_timeout(now);
            while let Some(b) = c.poll_transmit() {
                assert_eq!(b, first);
                sends += 1;
            }
            if c.is_settled() {
                break;
            }
        }
        assert!(sends >= 5, "{sends} retransmissions");
        assert!(now - start <= REQUEST_TIMEOUT);
        assert!(
            matches!(c.poll_event(), Some(TurnEvent::Failed(r)) if r.contains("did not answer"))
        );
    }

    #[test]
    fn data_waits_for_the_permission_then_goes_as_send_indications() {
        let now = Instant::now();
        let mut c = allocate(now);
        let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
        c.send_to(now, peer, b"one");
        c.send_to(now, peer, b"two");
        let req = c.poll_transmit().unwrap();
        let m = Message::decode(&req).unwrap();
        assert_eq!(m.method, Method::CreatePermission);
        assert_eq!(
            m.address(attr::XOR_PEER_ADDRESS).map(|a| a.ip()),
            Some(peer.ip())
        );
        assert_eq!(c.poll_transmit(), None);
        c.handle_datagram(now, &success(&req));
        let out: Vec<Message> = sent(&mut c)
            .iter()
            .map(|b| Message::decode(b).unwrap())
            .collect();
        // The first datagram goes as a Send indication and asks for a
        // channel; until it is bound, Send indications.
        assert_eq!(out.len(), 3);
        for (ind, want) in [(&out[0], b"one"), (&out[2], b"two")] {
            assert_eq!((ind.class, ind.method), (Class::Indication, Method::Send));
            assert_eq!(ind.address(attr::XOR_PEER_ADDRESS), Some(peer));
            assert!(ind
                .attributes
                .contains(&stun::Attribute::Data(want.to_vec())));
        }
        assert_eq!(out[1].method, Method::ChannelBind);
        c.send_to(now, peer, b"three");
        assert!(c.poll_transmit().is_some());
        // Data from the peer comes back unwrapped.
        let data = Encoder::new(Class::Indication, Method::Data, [1; 12])
            .address(attr::XOR_PEER_ADDRESS, peer)
            .raw(attr::DATA, b"back")
            .finish(None, false);
        assert_eq!(
            c.handle_datagram(now, &data),
            Incoming::Data {
                peer,
                data: b"back".to_vec()
            }
        );
        // Permissions and the allocation are refreshed in time.
        let later = now + PERMISSION_REFRESH;
        assert!(c.poll_timeout().unwrap() <= later);
        c.handle_timeout(later);
        let methods: Vec<Method> = sent(&mut c)
            .iter()
            .map(|b| Message::decode(b).unwrap().method)
            .collect();
        assert_eq!(methods, vec![Method::CreatePermission]);
        c.handle_timeout(now + Duration::from_secs(540));
        let m = Message::decode(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!(m.method, Method::Refresh);
    }

    #[test]
    fn a_bound_channel_carries_channel_data_both_ways() {
        let now = Instant::now();
        let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
        let (mut c, bind) = asking_to_bind(now, peer);
        let m = Message::decode(&bind).unwrap();
        assert_eq!(m.method, Method::ChannelBind);
        assert_eq!(m.address(attr::XOR_PEER_ADDRESS), Some(peer));
        assert!(m
            .attributes
            .contains(&stun::Attribute::ChannelNumber(0x4000)));
        c.handle_datagram(now, &success(&bind));
        c.send_to(now, peer, b"abc");
        assert_eq!(c.poll_transmit().unwrap(), b"\x40\x00\x00\x03abc");
        // Inbound ChannelData; one for an unknown channel or cut short is
        // dropped, not handed on.
        assert_eq!(
            c.handle_datagram(now, b"\x40\x00\x00\x02hi\x00\x00"),
            Incoming::Data {
                peer,
                data: b"hi".to_vec()
            }
        );
        assert_eq!(
            c.handle_datagram(now, b"\x40\x01\x00\x01x"),
            Incoming::Consumed
        );
        assert_eq!(
            c.handle_datagram(now, b"\x40\x00\x00\x09x"),
            Incoming::Consumed
        );
        assert_eq!(c.handle_datagram(now, b"\x40"), Incoming::NotMine);
        // The binding is refreshed before it expires.
        c.handle_timeout(now + CHANNEL_REFRESH);
        let methods: Vec<Method> = sent(&mut c)
            .iter()
            .map(|b| Message::decode(b).unwrap().method)
            .collect();
        assert!(methods.contains(&Method::ChannelBind), "{methods:?}");
    }

    #[test]
    fn an_unanswered_refresh_is_tried_again_until_the_allocation_expires() {
        let now = Instant::now();
        let mut c = allocate(now);
        while c.poll_event().is_some() {}
        // The refresh goes out a minute early and gets no answer.
        let mut t = now + Duration::from_secs(540);
        c.handle_timeout(t);
        assert!(sent(&mut c)
            .iter()
            .any(|b| Message::decode(b).unwrap().method == Method::Refresh));
        t += REQUEST_TIMEOUT;
        c.handle_timeout(t);
        assert_eq!(
            c.relayed(),
            Some(RELAYED.parse().unwrap()),
            "not failed yet"
        );
        assert!(c.poll_event().is_none());
        // The next try is answered: the allocation lives on.
        t += REFRESH_RETRY;
        c.handle_timeout(t);
        let retry = sent(&mut c)
            .into_iter()
            .find(|b| Message::decode(b).unwrap().method == Method::Refresh)
            .expect("a second refresh");
        c.handle_datagram(t, &success(&retry));
        assert_eq!(c.relayed(), Some(RELAYED.parse().unwrap()));
        assert!(c.poll_event().is_none());
        // Unanswered from then on: it fails once the allocation (600 s
        // from the last answer) has expired, not before.
        let expiry = t + Duration::from_secs(600);
        let mut now = t + Duration::from_secs(530);
        let failed_at = loop {
            now += Duration::from_secs(1);
            c.handle_timeout(now);
            sent(&mut c);
            if let Some(TurnEvent::Failed(r)) = c.poll_event() {
                assert!(r.contains("refreshes"), "{r}");
                break now;
            }
            assert!(now < expiry + Duration::from_secs(30), "never failed");
        };
        assert!(
            failed_at >= expiry - REFRESH_RETRY
                && failed_at <= expiry + REQUEST_TIMEOUT + REFRESH_RETRY,
            "failed {:?} after the last answer",
            failed_at - t
        );
    }

    #[test]
    fn an_error_with_a_wrong_integrity_is_dropped() {
        let now = Instant::now();
        let mut c = allocate(now);
        while c.poll_event().is_some() {}
        let peer: SocketAddr = "203.0.113.9:7000".parse().unwrap();
        c.send_to(now, peer, b"x");
        let perm = c.poll_transmit().unwrap();
        let m = Message::decode(&perm).unwrap();
        let forged = Encoder::new(Class::Error, m.method, m.transaction)
            .raw(attr::ERROR_CODE, &[0, 0, 4, 3, b'x'])
            .finish(Some(&[7u8; 16]), true);
        assert_eq!(c.handle_datagram(now, &forged), Incoming::Consumed);
        // Still waiting: the real success installs the permission and the
        // queued datagram goes out.
        c.handle_datagram(now, &success(&perm));
        let out = sent(&mut c);
        assert!(
            out.iter().any(|b| b.starts_with(&[0x40])
                || Message::decode(b)
                    .is_ok_and(|m| m.method == Method::Send || m.method == Method::ChannelBind)),
            "the permission was installed after all: {} datagrams",
            out.len()
        );
    }

    #[test]
    fn a_refused_permission_is_not_asked_again_for_a_while() {
        let now = Instant::now();
        let mut c = allocate(now);
        let peer: SocketAddr = "10.0.0.9:7000".parse().unwrap();
        c.send_to(now, peer, b"x");
        let perm = c.poll_transmit().unwrap();
        c.handle_datagram(now, &challenge(&perm, 403, "n1"));
        c.send_to(now + Duration::from_secs(1), peer, b"y");
        assert_eq!(c.poll_transmit(), None);
        c.send_to(now + REFUSED_RETRY, peer, b"z");
        let m = Message::decode(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!(m.method, Method::CreatePermission);
    }

    #[test]
    fn a_refused_channel_falls_back_to_send_indications() {
        let now = Instant::now();
        let peer: SocketAddr = "203.0.113.5:7000".parse().unwrap();
        let (mut c, bind) = asking_to_bind(now, peer);
        c.handle_datagram(now, &challenge(&bind, 400, "n1"));
        c.send_to(now, peer, b"again");
        let m = Message::decode(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!(m.method, Method::Send);
        assert_eq!(c.poll_transmit(), None);
    }

    proptest::proptest! {
        #[test]
        fn random_datagrams_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)
        ) {
            let now = Instant::now();
            let mut c = allocate(now);
            let _ = c.handle_datagram(now, &bytes);
        }
    }

    #[test]
    fn close_deallocates_once() {
        let now = Instant::now();
        let mut c = allocate(now);
        c.close(now);
        let m = Message::decode(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!(m.method, Method::Refresh);
        assert!(m.attributes.contains(&stun::Attribute::Lifetime(0)));
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.relayed(), None);
    }
}
