//! What a test rig can do to a device under test, whatever the rig is.
//!
//! A [`Rig`] presses buttons and watches LEDs; scenarios are written only
//! against this trait, so the simulated board ([`crate::sim_rig::SimRig`]),
//! a QEMU guest or a bench with real GPIO lines are interchangeable. Times
//! are the rig's own clock ([`Mono`]); what the DUT itself reported, where a
//! rig can see it, is kept beside it and never mixed up with it.

use intrust_board::{Button, Edge, LedPattern, LedRole, Mono};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so that [`Rig`] can be used as `dyn Rig`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A predicate on LED patterns, for [`Rig::wait_for`].
pub type PatternPredicate<'a> = &'a (dyn Fn(&LedPattern) -> bool + Send + Sync);

/// One LED pattern as the rig saw it appear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    pub pattern: LedPattern,
    /// When the rig saw it (rig clock). For the pattern in effect at the
    /// start of an observation window, the window's start.
    pub rig_at: Mono,
    /// When the DUT says it set the pattern (its CLOCK_MONOTONIC, in µs),
    /// if the rig can see that. For a pattern known from a greeting
    /// (`hello`), the time of the greeting: it was set then or earlier.
    pub dut_at_us: Option<u64>,
}

/// One debounced button edge as the DUT reported it (sim and QEMU rigs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DutEdge {
    pub button: Button,
    pub edge: Edge,
    /// When the DUT handed the debounced edge to the agent (DUT clock, µs).
    pub dut_at_us: u64,
    /// When the rig received the report (rig clock).
    pub rig_at: Mono,
}

/// What a device says it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DutIdentity {
    pub id: String,
    pub board: String,
    /// `intrustd`, `control_protocol`, … as the DUT reports them.
    pub versions: BTreeMap<String, serde_json::Value>,
}

/// The parts of the DUT's status scenarios check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DutStatus {
    pub identity: DutIdentity,
    /// `unpaired`, `pairing`, … as the DUT names its state.
    pub state: String,
    pub pairing_window_open: bool,
    pub factory_reset_requests: u64,
}

/// What the record says about the rig.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RigInfo {
    /// `sim`, `qemu`, `gpio`, …
    pub kind: String,
    /// The machine the rig runs on.
    pub host: String,
    /// The command prefix the DUT runs under (e.g. a user-mode emulator).
    pub launcher: Option<String>,
}

/// How a scenario wants the DUT configured. A rig that cannot change the
/// DUT's settings must refuse settings it cannot honour, not ignore them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DutSettings {
    pub pairing_window: Duration,
    pub pair_min: Duration,
    pub pair_max: Duration,
    pub reset_arm: Duration,
    pub reset_cancel: Duration,
}

impl Default for DutSettings {
    /// The agent's documented defaults (`agent/intrustd.example.toml`).
    fn default() -> Self {
        DutSettings {
            pairing_window: Duration::from_secs(300),
            pair_min: Duration::from_millis(50),
            pair_max: Duration::from_millis(3000),
            reset_arm: Duration::from_millis(5000),
            reset_cancel: Duration::from_millis(30000),
        }
    }
}

/// The sequence of patterns an LED showed over a window. The first entry is
/// the pattern in effect when the window started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub led: LedRole,
    pub start: Mono,
    pub end: Mono,
    pub entries: Vec<Observation>,
}

impl Timeline {
    /// Changes after the window start (entries beyond the first).
    pub fn changes(&self) -> &[Observation] {
        self.entries.get(1..).unwrap_or(&[])
    }
}

/// A test rig wired to one device under test.
///
/// All times are the rig's clock ([`Rig::now`]). Methods fail when the rig
/// loses the DUT (process gone, socket closed); a pattern that does not show
/// up is not a failure of the rig, so `wait_for` returns `None` for it.
pub trait Rig: Send + Sync {
    /// Kind, host and launcher, for the test record.
    fn info(&self) -> RigInfo;

    /// The rig's clock.
    fn now(&self) -> Mono {
        Mono::now()
    }

    /// Pushes `button` down; returns when the rig did it.
    fn press(&self, button: Button) -> BoxFuture<'_, anyhow::Result<Mono>>;

    /// Lets `button` go; returns when the rig did it.
    fn release(&self, button: Button) -> BoxFuture<'_, anyhow::Result<Mono>>;

    /// Holds `button` for `duration`; returns the press and release times.
    fn hold(
        &self,
        button: Button,
        duration: Duration,
    ) -> BoxFuture<'_, anyhow::Result<(Mono, Mono)>> {
        Box::pin(async move {
            let pressed = self.press(button).await?;
            sleep_until(pressed + duration).await;
            let released = self.release(button).await?;
            Ok((pressed, released))
        })
    }

    /// The pattern `led` shows now.
    fn current(&self, led: LedRole) -> BoxFuture<'_, anyhow::Result<Observation>>;

    /// Watches `led` for `window` from now and returns what it showed.
    fn observe(&self, led: LedRole, window: Duration) -> BoxFuture<'_, anyhow::Result<Timeline>>;

    /// Waits until `led` shows a pattern for which `pred` holds (it may
    /// already), at most `timeout`. `None` if it did not within `timeout`.
    fn wait_for<'a>(
        &'a self,
        led: LedRole,
        pred: PatternPredicate<'a>,
        timeout: Duration,
    ) -> BoxFuture<'a, anyhow::Result<Option<Observation>>>;

    /// Debounced edges the DUT reported at or after `since` (rig clock), if
    /// this rig can see them; `None` for rigs that only see the pins.
    fn dut_edges_since(&self, since: Mono) -> Option<Vec<DutEdge>>;

    /// The DUT's state, as its control interface reports it.
    fn status(&self) -> BoxFuture<'_, anyhow::Result<DutStatus>>;

    /// Who the DUT is: id, board, versions.
    fn identity(&self) -> BoxFuture<'_, anyhow::Result<DutIdentity>> {
        Box::pin(async move { Ok(self.status().await?.identity) })
    }

    /// Closes the pairing window through the DUT's control interface.
    fn close_pairing_window(&self) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// Starts rigs, one fresh DUT per scenario.
pub trait RigFactory: Send + Sync {
    /// Kind, host and launcher, for records of scenarios whose rig did not start.
    fn info(&self) -> RigInfo;

    /// Brings up a DUT configured as `settings` asks and a rig wired to it.
    fn start<'a>(
        &'a self,
        settings: &'a DutSettings,
    ) -> BoxFuture<'a, anyhow::Result<Box<dyn Rig>>>;
}

/// Sleeps until the rig clock reads `at` (returns at once if it is past).
pub async fn sleep_until(at: Mono) {
    let left = at.saturating_since(Mono::now());
    if !left.is_zero() {
        tokio::time::sleep(left).await;
    }
}

/// The name of the machine the harness runs on.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
