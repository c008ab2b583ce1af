//! The sans-IO core of the device's flock link: frames, connection events,
//! commands and the current time go in; frames to send, connect/close
//! requests, events for the peer engine and the next deadline come out.
//!
//! Invariants: at most one connection is in use at a time and the core
//! tells the shell when to open and when to drop it; every failure (refused,
//! closed, garbage, silence, `Rejected`) ends in `Waiting` with a backoff
//! deadline, never in a tight loop and never in a panic; session traffic is
//! only sent while registered (session ids are only meaningful on the
//! connection flock gave them on).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use flock_proto::device::{self, DeviceToFlock, FlockToDevice};
use flock_proto::identity::DeviceKey;
use flock_proto::{DeviceName, IceServer};
use intrust_board::Mono;

use super::backoff::{Backoff, BackoffPolicy, Jitter};
use super::{LinkStatus, SignallingCommand, SignallingEvent};

/// Timing of the link; [`Timing::default`] is what the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Dialing (TCP, TLS, WebSocket handshake) must finish within this.
    pub connect_timeout: Duration,
    /// From connected to `Registered`/`Rejected` (flock's own hello
    /// deadline is 10 s after its challenge).
    pub register_timeout: Duration,
    /// Silence after which the device sends its own `Ping`.
    pub ping_after: Duration,
    /// Silence after which the connection is given up (flock pings every 15 s).
    pub dead_after: Duration,
    /// A registration that lasted this long resets the transport backoff.
    pub stable_after: Duration,
    pub transport: BackoffPolicy,
    pub rejected: BackoffPolicy,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connect_timeout: Duration::from_secs(10),
            register_timeout: Duration::from_secs(15),
            ping_after: Duration::from_secs(20),
            dead_after: Duration::from_secs(45),
            stable_after: Duration::from_secs(10),
            transport: BackoffPolicy::TRANSPORT,
            rejected: BackoffPolicy::REJECTED,
        }
    }
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a new connection to flock (dropping any old one); report the
    /// result with [`Link::handle_connected`] or [`Link::handle_disconnected`].
    Connect,
    /// Send this binary frame on the current connection.
    Transmit(Vec<u8>),
    /// Drop the current connection (or the dial in progress); the core has
    /// already moved on, so do not report its end.
    Close,
    /// Hand this to the peer engine.
    Event(SignallingEvent),
}

#[derive(Debug)]
enum State {
    /// Waiting for the shell's dial.
    Connecting {
        deadline: Mono,
    },
    AwaitChallenge {
        deadline: Mono,
    },
    AwaitVerdict {
        deadline: Mono,
    },
    Registered {
        since: Mono,
        last_heard: Mono,
        pinged: bool,
    },
    /// Backing off; `Connect` is emitted at `until`.
    Waiting {
        until: Mono,
    },
}

/// The link's state machine. Create with [`Link::new`], then call
/// [`Link::start`] once.
pub struct Link {
    name: DeviceName,
    key: Arc<DeviceKey>,
    timing: Timing,
    transport: Backoff,
    rejected: Backoff,
    jitter: Jitter,
    state: State,
    status: LinkStatus,
    ice_servers: Vec<IceServer>,
    out: VecDeque<Output>,
}

impl Link {
    pub fn new(name: DeviceName, key: Arc<DeviceKey>, timing: Timing, jitter: Jitter) -> Link {
        Link {
            name,
            key,
            transport: Backoff::new(timing.transport),
            rejected: Backoff::new(timing.rejected),
            timing,
            jitter,
            state: State::Waiting { until: Mono::ZERO },
            status: LinkStatus::Connecting,
            ice_servers: Vec::new(),
            out: VecDeque::new(),
        }
    }

    /// Asks for the first connection.
    pub fn start(&mut self, now: Mono) {
        self.connect(now);
    }

    /// The connection state, for `intrustctl status`.
    pub fn status(&self) -> &LinkStatus {
        &self.status
    }

    /// The STUN/TURN servers of the latest `Registered` (empty before).
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.ice_servers
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Link::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Mono> {
        Some(match self.state {
            State::Connecting { deadline }
            | State::AwaitChallenge { deadline }
            | State::AwaitVerdict { deadline } => deadline,
            State::Registered {
                last_heard, pinged, ..
            } => {
                if pinged {
                    last_heard + self.timing.dead_after
                } else {
                    last_heard + self.timing.ping_after
                }
            }
            State::Waiting { until } => until,
        })
    }

    pub fn handle_timeout(&mut self, now: Mono) {
        match self.state {
            State::Waiting { until } if now >= until => self.connect(now),
            State::Connecting { deadline } if now >= deadline => {
                self.fail(now, "connecting to flock timed out".into())
            }
            State::AwaitChallenge { deadline } | State::AwaitVerdict { deadline }
                if now >= deadline =>
            {
                self.fail(
                    now,
                    "flock did not complete the registration in time".into(),
                )
            }
            State::Registered {
                since,
                last_heard,
                pinged,
            } => {
                if now >= last_heard + self.timing.dead_after {
                    self.fail(now, "flock went silent".into());
                } else if !pinged && now >= last_heard + self.timing.ping_after {
                    self.send(&DeviceToFlock::Ping);
                    self.state = State::Registered {
                        since,
                        last_heard,
                        pinged: true,
                    };
                }
            }
            _ => {}
        }
    }

    /// The shell's dial succeeded.
    pub fn handle_connected(&mut self, now: Mono) {
        if let State::Connecting { .. } = self.state {
            self.state = State::AwaitChallenge {
                deadline: now + self.timing.register_timeout,
            };
        }
    }

    /// The dial failed, or the connection ended (closed by flock, reset,
    /// read error). Ignored when no connection is in use.
    pub fn handle_disconnected(&mut self, now: Mono, reason: String) {
        match self.state {
            State::Waiting { .. } => {}
            _ => self.lost(now, reason),
        }
    }

    /// The connection carried something that is not a binary frame.
    pub fn handle_unexpected(&mut self, now: Mono, what: &str) {
        if !matches!(self.state, State::Waiting { .. } | State::Connecting { .. }) {
            self.fail(
                now,
                format!("flock sent {what}, which the protocol does not use"),
            );
        }
    }

    /// One binary frame from flock.
    pub fn handle_frame(&mut self, now: Mono, frame: &[u8]) {
        let msg = match device::decode::<FlockToDevice>(frame) {
            Ok(m) => m,
            Err(e) => {
                if !matches!(self.state, State::Waiting { .. } | State::Connecting { .. }) {
                    self.fail(now, format!("undecodable frame from flock: {e}"));
                }
                return;
            }
        };
        match (&mut self.state, msg) {
            (State::Waiting { .. } | State::Connecting { .. }, _) => {}
            (_, FlockToDevice::Ping) => {
                self.heard(now);
                self.send(&DeviceToFlock::Pong);
            }
            (State::AwaitChallenge { .. }, FlockToDevice::Challenge { nonce }) => {
                match self.key.sign_challenge(&nonce, &self.name) {
                    Ok(signature) => {
                        let hello = DeviceToFlock::Hello {
                            name: self.name.clone(),
                            public_key: self.key.public_key(),
                            signature,
                        };
                        self.send(&hello);
                        if let State::AwaitChallenge { deadline } = self.state {
                            self.state = State::AwaitVerdict { deadline };
                        }
                    }
                    Err(e) => self.fail(now, format!("cannot sign flock's challenge: {e}")),
                }
            }
            (
                State::AwaitVerdict { .. } | State::Registered { .. },
                FlockToDevice::Registered { ice_servers },
            ) => {
                if let State::AwaitVerdict { .. } = self.state {
                    tracing::info!(name = %self.name, "registered with flock");
                    self.state = State::Registered {
                        since: now,
                        last_heard: now,
                        pinged: false,
                    };
                    self.status = LinkStatus::Registered {
                        name: self.name.clone(),
                    };
                    self.rejected.reset();
                } else {
                    tracing::debug!("flock refreshed the ICE servers");
                    self.heard(now);
                }
                self.ice_servers = ice_servers.clone();
                self.out
                    .push_back(Output::Event(SignallingEvent::IceServers(ice_servers)));
            }
            (_, FlockToDevice::Rejected { reason }) => {
                tracing::error!(
                    name = %self.name,
                    %reason,
                    "flock rejected this device's registration; the agent keeps running and \
                     tries again later (if the name is taken by another device, configure another \
                     [rendezvous] name)"
                );
                self.out.push_back(Output::Close);
                let until = now + self.rejected.next_delay(self.jitter.next_u64());
                self.state = State::Waiting { until };
                self.status = LinkStatus::Rejected {
                    reason,
                    retry_at: until,
                };
            }
            (State::Registered { .. }, FlockToDevice::Pong) => self.heard(now),
            (State::Registered { .. }, FlockToDevice::SessionOffer { session, sdp }) => {
                self.heard(now);
                let ice_servers = self.ice_servers.clone();
                self.out.push_back(Output::Event(SignallingEvent::Offer {
                    session,
                    sdp,
                    ice_servers,
                }));
            }
            (
                State::Registered { .. },
                FlockToDevice::Candidate {
                    session,
                    candidate,
                    sdp_mid,
                },
            ) => {
                self.heard(now);
                self.out
                    .push_back(Output::Event(SignallingEvent::Candidate {
                        session,
                        candidate,
                        sdp_mid,
                    }));
            }
            (State::Registered { .. }, FlockToDevice::SessionClosed { session, reason }) => {
                self.heard(now);
                self.out
                    .push_back(Output::Event(SignallingEvent::Closed { session, reason }));
            }
            (_, other) => {
                let what = match other {
                    FlockToDevice::Challenge { .. } => "Challenge",
                    FlockToDevice::Registered { .. } => "Registered",
                    FlockToDevice::SessionOffer { .. } => "SessionOffer",
                    FlockToDevice::Candidate { .. } => "Candidate",
                    FlockToDevice::SessionClosed { .. } => "SessionClosed",
                    FlockToDevice::Pong => "Pong",
                    FlockToDevice::Ping | FlockToDevice::Rejected { .. } => "a message",
                };
                let when = match self.state {
                    State::AwaitChallenge { .. } => "before its challenge",
                    State::AwaitVerdict { .. } => "before registering the device",
                    _ => "out of turn",
                };
                self.fail(now, format!("flock sent {what} {when}"));
            }
        }
    }

    /// A command from the peer engine. Dropped (and logged) unless
    /// registered: its session belonged to an earlier connection.
    pub fn handle_command(&mut self, _now: Mono, cmd: SignallingCommand) {
        if !matches!(self.state, State::Registered { .. }) {
            tracing::debug!(
                session = cmd.session(),
                "not registered with flock; dropped a signalling command"
            );
            return;
        }
        let msg = match cmd {
            SignallingCommand::Answer { session, sdp } => {
                DeviceToFlock::SessionAnswer { session, sdp }
            }
            SignallingCommand::Candidate {
                session,
                candidate,
                sdp_mid,
            } => DeviceToFlock::Candidate {
                session,
                candidate,
                sdp_mid,
            },
            SignallingCommand::Close { session, reason } => {
                DeviceToFlock::SessionClosed { session, reason }
            }
        };
        self.send(&msg);
    }

    fn send(&mut self, msg: &DeviceToFlock) {
        match device::encode(msg) {
            Ok(frame) => self.out.push_back(Output::Transmit(frame)),
            // Only an SDP over 64 KiB gets here: that session fails, the link stays.
            Err(e) => tracing::warn!(error = %e, "a message for flock cannot be encoded; dropped"),
        }
    }

    fn heard(&mut self, now: Mono) {
        if let State::Registered { since, .. } = self.state {
            self.state = State::Registered {
                since,
                last_heard: now,
                pinged: false,
            };
        }
    }

    fn connect(&mut self, now: Mono) {
        self.state = State::Connecting {
            deadline: now + self.timing.connect_timeout,
        };
        if !matches!(self.status, LinkStatus::Rejected { .. }) {
            self.status = LinkStatus::Connecting;
        }
        self.out.push_back(Output::Connect);
    }

    /// Our side gives the connection up: tell the shell to drop it.
    fn fail(&mut self, now: Mono, reason: String) {
        self.out.push_back(Output::Close);
        self.lost(now, reason);
    }

    /// The connection is gone: back off and try again.
    fn lost(&mut self, now: Mono, reason: String) {
        if let State::Registered { since, .. } = self.state {
            if now.saturating_since(since) >= self.timing.stable_after {
                self.transport.reset();
            }
            self.out
                .push_back(Output::Event(SignallingEvent::Disconnected));
        }
        let delay = self.transport.next_delay(self.jitter.next_u64());
        let until = now + delay;
        tracing::warn!(
            error = %reason,
            retry_in_ms = delay.as_millis() as u64,
            "flock link lost"
        );
        self.state = State::Waiting { until };
        self.status = match std::mem::replace(&mut self.status, LinkStatus::Connecting) {
            // A rejection stays visible until the next verdict.
            LinkStatus::Rejected { reason, .. } => LinkStatus::Rejected {
                reason,
                retry_at: until,
            },
            _ => LinkStatus::Retrying {
                error: reason,
                retry_at: until,
            },
        };
    }
}
