//! Sans-IO candidate gathering for one session socket: a STUN Binding probe
//! per STUN server (→ server-reflexive address) and a [`TurnClient`] per
//! TURN server (→ relayed address, and the relayed data path afterwards).
//!
//! The driver resolves the servers' names, hands them over with
//! [`Gatherer::start`], passes every datagram from the socket through
//! [`Gatherer::handle_datagram`] before the WebRTC engine sees it, and routes
//! the engine's datagrams whose source is a relayed address through
//! [`Gatherer::relay_send`]. Invariants: gathering ends ([`Gatherer::is_done`])
//! once every probe is answered or timed out and every allocation succeeded
//! or failed, at most [`turn::REQUEST_TIMEOUT`] after `start`; a mapped
//! address equal to the socket's own (no NAT) or seen before is not offered.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stun::{attr, Class, Encoder, Message, Method, TransactionId};
use super::turn::{self, TransactionIds, TurnClient, TurnEvent};

const INITIAL_RTO: Duration = Duration::from_millis(100);
const MAX_RTO: Duration = Duration::from_millis(1600);
/// A STUN server that has not answered by then is given up.
pub const STUN_TIMEOUT: Duration = Duration::from_secs(3);

/// An ICE server with its name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    Stun(SocketAddr),
    Turn {
        addr: SocketAddr,
        username: String,
        password: String,
    },
}

/// A gathered candidate's address, in the order found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gathered {
    /// Our address as a STUN/TURN server saw it; `base` is the socket's.
    ServerReflexive { addr: SocketAddr, base: SocketAddr },
    /// A TURN allocation's relayed address.
    Relayed { addr: SocketAddr },
}

/// What a datagram from the socket was.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Not gathering's: for the WebRTC engine as it came.
    NotMine,
    /// A STUN/TURN response or indication, consumed.
    Consumed,
    /// Data a peer sent to our relayed address: for the WebRTC engine as a
    /// datagram from `peer` to `relayed`.
    Relayed {
        peer: SocketAddr,
        relayed: SocketAddr,
        data: Vec<u8>,
    },
}

struct Probe {
    server: SocketAddr,
    id: TransactionId,
    bytes: Vec<u8>,
    next_send: Instant,
    rto: Duration,
    give_up: Instant,
    done: bool,
}

/// The gathering (and relaying) of one session socket.
pub struct Gatherer {
    base: SocketAddr,
    relay_only: bool,
    started: bool,
    probes: Vec<Probe>,
    turns: Vec<TurnClient>,
    mapped_seen: HashSet<SocketAddr>,
    gathered: VecDeque<Gathered>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    ids: TransactionIds,
}

impl Gatherer {
    /// `base` is the socket's local address; with `relay_only` no
    /// server-reflexive candidates are offered (STUN servers are skipped).
    pub fn new(base: SocketAddr, relay_only: bool, seed: TransactionId) -> Self {
        Gatherer {
            base,
            relay_only,
            started: false,
            probes: Vec::new(),
            turns: Vec::new(),
            mapped_seen: HashSet::new(),
            gathered: VecDeque::new(),
            transmits: VecDeque::new(),
            ids: TransactionIds::new(seed),
        }
    }

    /// Starts gathering from the resolved servers (call once; an empty list
    /// finishes gathering).
    pub fn start(&mut self, now: Instant, servers: Vec<Server>) {
        self.started = true;
        for server in servers {
            match server {
                Server::Stun(addr) if self.relay_only => {
                    tracing::trace!(%addr, "relay only: STUN server skipped")
                }
                Server::Stun(server) => {
                    let id = self.ids.next_id();
                    let bytes =
                        Encoder::new(Class::Request, Method::Binding, id).finish(None, true);
                    self.transmits.push_back((server, bytes.clone()));
                    self.probes.push(Probe {
                        server,
                        id,
                        bytes,
                        next_send: now + INITIAL_RTO,
                        rto: INITIAL_RTO,
                        give_up: now + STUN_TIMEOUT,
                        done: false,
                    });
                }
                Server::Turn {
                    addr,
                    username,
                    password,
                } => {
                    let seed = self.ids.child();
                    self.turns
                        .push(TurnClient::new(addr, username, password, seed, now));
                }
            }
        }
        self.drain_turns();
    }

    /// Every probe answered or given up, every allocation settled.
    pub fn is_done(&self) -> bool {
        self.started
            && self.probes.iter().all(|p| p.done)
            && self.turns.iter().all(|t| t.is_settled())
    }

    pub fn poll_candidate(&mut self) -> Option<Gathered> {
        self.gathered.pop_front()
    }

    /// The next datagram to send from the socket.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.probes
            .iter()
            .filter(|p| !p.done)
            .map(|p| p.next_send.min(p.give_up))
            .chain(self.turns.iter().filter_map(|t| t.poll_timeout()))
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for p in self.probes.iter_mut().filter(|p| !p.done) {
            if now >= p.give_up {
                p.done = true;
                tracing::warn!(
                    server = %p.server,
                    "STUN server did not answer within {} s; no server-reflexive candidate from it",
                    STUN_TIMEOUT.as_secs()
                );
            } else if now >= p.next_send {
                self.transmits.push_back((p.server, p.bytes.clone()));
                p.rto = (p.rto * 2).min(MAX_RTO);
                p.next_send = now + p.rto;
            }
        }
        for t in &mut self.turns {
            t.handle_timeout(now);
        }
        self.drain_turns();
    }

    /// Handles a datagram `from` on the socket before the WebRTC engine may.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Incoming {
        let mut result = Incoming::NotMine;
        if let Some(t) = self.turns.iter_mut().find(|t| t.server() == from) {
            result = match t.handle_datagram(now, bytes) {
                turn::Incoming::Consumed => Incoming::Consumed,
                turn::Incoming::NotMine => Incoming::NotMine,
                turn::Incoming::Data { peer, data } => match t.relayed() {
                    Some(relayed) => Incoming::Relayed {
                        peer,
                        relayed,
                        data,
                    },
                    None => Incoming::Consumed,
                },
            };
            self.drain_turns();
        }
        if result != Incoming::NotMine {
            return result;
        }
        let Some(probe) = self.probes.iter_mut().find(|p| {
            !p.done && p.server == from && super::stun::transaction_of(bytes) == Some(p.id)
        }) else {
            return Incoming::NotMine;
        };
        let message = match Message::decode(bytes) {
            Ok(m) if m.is_response() && m.method == Method::Binding => m,
            Ok(_) => return Incoming::Consumed,
            Err(e) => {
                tracing::debug!(server = %from, "dropped a bad STUN response: {e}");
                return Incoming::Consumed;
            }
        };
        probe.done = true;
        if message.class == Class::Error {
            let (code, reason) = message.error_code().unwrap_or((0, "no ERROR-CODE"));
            tracing::warn!(server = %from, "STUN server refused the Binding request: {code} {reason}");
            return Incoming::Consumed;
        }
        match message
            .address(attr::XOR_MAPPED_ADDRESS)
            .or_else(|| message.address(attr::MAPPED_ADDRESS))
        {
            Some(mapped) => self.mapped(mapped, from),
            None => tracing::warn!(server = %from, "STUN response without a mapped address"),
        }
        Incoming::Consumed
    }

    fn mapped(&mut self, addr: SocketAddr, server: SocketAddr) {
        if self.relay_only {
            return;
        }
        if addr == self.base {
            tracing::debug!(%addr, %server, "mapped address is the host address (no NAT); not offered");
            return;
        }
        if addr.is_ipv4() != self.base.is_ipv4() || !self.mapped_seen.insert(addr) {
            return;
        }
        tracing::debug!(%addr, %server, "server-reflexive candidate");
        self.gathered.push_back(Gathered::ServerReflexive {
            addr,
            base: self.base,
        });
    }

    /// Whether `source` is one of our relayed addresses.
    pub fn is_relayed(&self, source: SocketAddr) -> bool {
        self.turns.iter().any(|t| t.relayed() == Some(source))
    }

    /// Sends `data` from relayed address `source` to `dest` through its TURN
    /// server; false if `source` is not a relayed address of ours.
    pub fn relay_send(
        &mut self,
        now: Instant,
        source: SocketAddr,
        dest: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Some(t) = self.turns.iter_mut().find(|t| t.relayed() == Some(source)) else {
            return false;
        };
        t.send_to(now, dest, data);
        self.drain_turns();
        true
    }

    /// The session is over: allocations are released.
    pub fn close(&mut self, now: Instant) {
        for t in &mut self.turns {
            t.close(now);
        }
        self.probes.iter_mut().for_each(|p| p.done = true);
        self.drain_turns();
    }

    fn drain_turns(&mut self) {
        let mut mapped = Vec::new();
        for t in &mut self.turns {
            let server = t.server();
            while let Some(bytes) = t.poll_transmit() {
                self.transmits.push_back((server, bytes));
            }
            while let Some(ev) = t.poll_event() {
                match ev {
                    TurnEvent::Allocated { relayed, mapped: m } => {
                        tracing::debug!(%server, %relayed, "TURN allocation: relay candidate");
                        self.gathered.push_back(Gathered::Relayed { addr: relayed });
                        mapped.extend(m.map(|m| (m, server)));
                    }
                    TurnEvent::Failed(reason) => tracing::warn!("{reason}"),
                }
            }
        }
        for (m, server) in mapped {
            self.mapped(m, server);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "10.0.0.2:5000";
    const STUN: &str = "192.0.2.1:3478";

    fn answer(req: &[u8], mapped: SocketAddr) -> Vec<u8> {
        let m = Message::decode(req).unwrap();
        Encoder::new(Class::Success, Method::Binding, m.transaction)
            .address(attr::XOR_MAPPED_ADDRESS, mapped)
            .finish(None, true)
    }

    #[test]
    fn stun_gives_a_server_reflexive_address() {
        let now = Instant::now();
        let mut g = Gatherer::new(BASE.parse().unwrap(), false, [1; 12]);
        assert!(!g.is_done());
        g.start(now, vec![Server::Stun(STUN.parse().unwrap())]);
        let (to, req) = g.poll_transmit().unwrap();
        assert_eq!(to, STUN.parse().unwrap());
        // A response from elsewhere, or another transaction, is not ours.
        let mapped: SocketAddr = "198.51.100.9:6000".parse().unwrap();
        let reply = answer(&req, mapped);
        assert_eq!(
            g.handle_datagram(now, "192.0.2.99:3478".parse().unwrap(), &reply),
            Incoming::NotMine
        );
        assert_eq!(g.handle_datagram(now, to, &reply), Incoming::Consumed);
        assert_eq!(
            g.poll_candidate(),
            Some(Gathered::ServerReflexive {
                addr: mapped,
                base: BASE.parse().unwrap()
            })
        );
        assert!(g.is_done());
        // Once done, the same response again goes to the engine.
        assert_eq!(g.handle_datagram(now, to, &reply), Incoming::NotMine);
    }

    #[test]
    fn no_nat_means_no_server_reflexive_candidate() {
        let now = Instant::now();
        let mut g = Gatherer::new(BASE.parse().unwrap(), false, [1; 12]);
        g.start(now, vec![Server::Stun(STUN.parse().unwrap())]);
        let (to, req) = g.poll_transmit().unwrap();
        g.handle_datagram(now, to, &answer(&req, BASE.parse().unwrap()));
        assert_eq!(g.poll_candidate(), None);
        assert!(g.is_done());
    }

    #[test]
    fn an_unanswered_stun_server_is_given_up_in_bounded_time() {
        let start = Instant::now();
        let mut g = Gatherer::new(BASE.parse().unwrap(), false, [1; 12]);
        g.start(start, vec![Server::Stun(STUN.parse().unwrap())]);
        let mut sent = 0;
        while let Some(t) = g.poll_timeout() {
            g.handle_timeout(t);
            while g.poll_transmit().is_some() {
                sent += 1;
            }
            assert!(t - start <= STUN_TIMEOUT);
        }
        assert!(g.is_done());
        assert!(sent >= 4, "{sent}");
        assert_eq!(g.poll_candidate(), None);
    }

    #[test]
    fn relay_only_skips_stun_and_an_empty_list_is_done_at_once() {
        let now = Instant::now();
        let mut g = Gatherer::new(BASE.parse().unwrap(), true, [1; 12]);
        g.start(now, vec![Server::Stun(STUN.parse().unwrap())]);
        assert_eq!(g.poll_transmit(), None);
        assert!(g.is_done());
        let mut g = Gatherer::new(BASE.parse().unwrap(), false, [1; 12]);
        g.start(now, Vec::new());
        assert!(g.is_done());
    }

    #[test]
    fn datagrams_from_a_turn_server_that_are_not_stun_go_to_the_engine() {
        let now = Instant::now();
        let server: SocketAddr = "192.0.2.7:3478".parse().unwrap();
        let mut g = Gatherer::new(BASE.parse().unwrap(), false, [1; 12]);
        g.start(
            now,
            vec![Server::Turn {
                addr: server,
                username: "u".into(),
                password: "p".into(),
            }],
        );
        assert_eq!(g.poll_transmit().map(|(to, _)| to), Some(server));
        assert_eq!(
            g.handle_datagram(now, server, &[0x16, 0xfe, 0xfd, 0, 0]),
            Incoming::NotMine
        );
        assert!(!g.is_done());
        assert!(!g.relay_send(now, "192.0.2.7:50000".parse().unwrap(), server, b"x"));
    }
}
