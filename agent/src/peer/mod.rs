//! The peer engine: WebRTC sessions with browsers and the tunnel that
//! carries app HTTP over their data channels.
//!
//! - [`config`]: `[peer]` in the daemon config (bind address, apps);
//! - [`engine`]: the engine-neutral traits (a session from a remote offer,
//!   candidates, channel events, message I/O with back-pressure);
//! - [`str0m_engine`]: the implementation on `str0m` (sans-IO `Rtc` driven
//!   by one tokio task and one UDP socket per session);
//! - [`ice`]: srflx (STUN) and relay (TURN over UDP) candidate gathering,
//!   sans-IO, driven by the str0m driver on the session's socket;
//! - [`stream`]: a data channel as a tokio byte stream;
//! - [`tunnel`]: the tunnel protocol (the `control` channel and one
//!   HTTP/1.1 connection per `http/1.1 APP` channel, proxied with hyper);
//! - [`host`]: browser sessions from rendezvous signalling, admitted by an
//!   `Authenticator` (`--insecure-open` until login exists);
//! - [`service`]: the daemon's peer connection (flock link + host) from
//!   `[rendezvous]` and `[peer]`.
//!
//! Invariants: nothing outside [`str0m_engine`] names a `str0m` type; the
//! tunnel only sees [`engine::SessionEvent`] and [`stream::ChannelStream`].

pub mod config;
pub mod engine;
pub mod host;
pub mod ice;
pub mod service;
pub mod str0m_engine;
pub mod stream;
pub mod tunnel;
pub mod udp;
