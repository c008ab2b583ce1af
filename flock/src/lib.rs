//! flock, the rendezvous service: devices keep one authenticated
//! connection here, browsers reach it from the portal page, and flock
//! relays WebRTC signalling between one browser session and the named
//! device, nothing else. It is untrusted by design: it never sees a
//! password, a token or app data (see `ARCHITECTURE.md`, "Peer connection").
//!
//! - [`core`]: the sans-IO state machine (registry, sessions, limits);
//! - [`registry`], [`rate`], [`turn`]: its parts;
//! - [`server`], [`http`], [`config`]: the tokio shell and the `flock` binary's setup;
//! - [`proto`]: the wire types (the `flock-proto` crate).

pub mod config;
pub mod core;
pub mod http;
pub mod rate;
pub mod registry;
pub mod server;

pub use flock_proto as proto;
