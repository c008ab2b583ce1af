//! The Intrustd appliance agent: configuration, state directory, button
//! gestures, the appliance state machine and its LED policy, updates and
//! factory reset through recovery, the local control API and the daemon
//! shell that ties them to a board.
//!
//! `gestures`, `appliance` and `update` are sans-IO (time comes in as
//! `Mono`); the `daemon` module is the only place that reads clocks and
//! does IO for them.

pub mod appliance;
pub mod config;
pub mod control;
pub mod daemon;
pub mod gestures;
pub mod logging;
pub mod peer;
pub mod recovery;
pub mod rendezvous;
pub mod report;
pub mod state_dir;
pub mod update;
