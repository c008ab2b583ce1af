//! The wire contract between flock, devices and browsers (see the "Peer
//! connection" section of the repository's `ARCHITECTURE.md`).
//!
//! Job: types and codecs only, no I/O. Invariants: every decoded value is
//! valid (names checked, sizes bounded to [`MAX_MESSAGE`]); decoding never
//! panics on any input; the device protocol is versioned by a leading
//! `u16` ([`device::PROTOCOL_VERSION`]).

pub mod browser;
pub mod device;
mod ice;
pub mod identity;
mod name;
pub mod turn;

pub use ice::IceServer;
pub use name::{DeviceName, NameError};

/// Largest encoded message on either protocol, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;
