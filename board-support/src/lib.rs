//! Board support: everything that touches the appliance's hardware.
//!
//! The agent sees two small things: [`Led`]s it can give a [`LedPattern`],
//! and a stream of debounced [`ButtonEvent`]s. Which backend sits behind them
//! (GPIO character device, sysfs LED class, evdev, the simulated board) is
//! decided once, from a board [`profile`]. Timestamps are [`Mono`]: the
//! kernel's CLOCK_MONOTONIC, so kernel edge timestamps and our own agree.
//!
//! Entry point for the agent: [`Profile::resolve`] (a built-in name or a
//! path), then [`Board::open`], which must run inside a tokio runtime:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use intrust_board::{Board, BoardOptions, LedPattern, LedRole, Profile};
//! let profile = Profile::resolve("sim")?;
//! let opts = BoardOptions { sim_socket: Some("/run/intrustd/board.sock".into()), ..Default::default() };
//! let mut board = Board::open(&profile, &opts)?;
//! if let Some(led) = board.leds.get_mut(&LedRole::Status) {
//!     led.set(&LedPattern::blink_hz(1))?;
//! }
//! while let Some(ev) = board.events.recv().await {
//!     println!("{} {:?} at {:?}", ev.button, ev.edge, ev.at);
//! }
//! # Ok(()) }
//! ```
//!
//! Modules: [`profile`] (TOML board profiles), [`debounce`] (sans-IO
//! debouncer), backends [`gpio`], [`sysfs`], [`evdev`], [`sim`] (simulated
//! board socket, its wire types and a client).

mod blinker;
mod board;
mod button_task;
pub mod debounce;
pub mod evdev;
pub mod gpio;
pub mod mono;
pub mod pattern;
pub mod profile;
pub mod sim;
pub mod sysfs;

pub use board::{Board, BoardOptions, EVENT_CHANNEL};
pub use debounce::Debouncer;
pub use mono::Mono;
pub use pattern::{LedPattern, Step, MAX_STEPS};
pub use profile::{Profile, ProfileError};
pub use sim::SimServerHandle;

use serde::{Deserialize, Serialize};

/// The buttons an appliance has, by role. Profiles map roles to hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Button {
    /// Opens the pairing window (proof of physical access).
    Pair,
    /// Held long, arms a factory reset.
    Reset,
}

impl Button {
    pub const ALL: [Button; 2] = [Button::Pair, Button::Reset];

    pub fn name(self) -> &'static str {
        match self {
            Button::Pair => "pair",
            Button::Reset => "reset",
        }
    }
}

impl std::fmt::Display for Button {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Button {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pair" => Ok(Button::Pair),
            "reset" => Ok(Button::Reset),
            other => Err(format!(
                "unknown button {other:?} (expected \"pair\" or \"reset\")"
            )),
        }
    }
}

/// The LEDs an appliance has, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedRole {
    /// The main LED: shows the appliance state. Every board has one.
    Status,
    /// Optional second LED: on while a browser is connected.
    Link,
}

impl LedRole {
    pub const ALL: [LedRole; 2] = [LedRole::Status, LedRole::Link];

    pub fn name(self) -> &'static str {
        match self {
            LedRole::Status => "status",
            LedRole::Link => "link",
        }
    }
}

impl std::fmt::Display for LedRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LedRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "status" => Ok(LedRole::Status),
            "link" => Ok(LedRole::Link),
            other => Err(format!(
                "unknown LED {other:?} (expected \"status\" or \"link\")"
            )),
        }
    }
}

/// Which way a button moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    Press,
    Release,
}

/// One debounced edge of one button. `at` is when the edge happened (the
/// kernel's timestamp where the backend has one), not when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonEvent {
    pub button: Button,
    pub edge: Edge,
    pub at: Mono,
}

/// Something that shows an [`LedPattern`]. Backends that cannot blink in
/// hardware (GPIO lines) run their own timer; the sysfs LED class hands the
/// pattern to the kernel's `timer`/`pattern` triggers.
pub trait Led: Send {
    /// Shows `pattern` from now on, replacing the previous one.
    fn set(&mut self, pattern: &LedPattern) -> Result<(), BoardError>;
}

/// Errors from opening or driving board hardware. Each names the thing
/// (chip, line, LED, device) and the profile it came from where known.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("{0}")]
    Profile(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl BoardError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BoardError::Io {
            what: what.into(),
            source,
        }
    }
}
