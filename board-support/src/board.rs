//! Assembly: opens every LED and button of a [`Profile`] with its backend
//! and hands the agent one map of [`Led`]s and one stream of [`ButtonEvent`]s.
//!
//! Either everything opens or `open` fails with the first error (naming the
//! profile and the hardware); nothing is left half-running after an error
//! except reader tasks that end as soon as the returned channel is dropped.

use crate::profile::{ButtonBackend, LedBackend, Profile};
use crate::sim::{SimConfig, SimServerHandle};
use crate::{evdev, gpio, sim, sysfs, BoardError, ButtonEvent, Led, LedRole};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Capacity of the button event channel. Humans press buttons slowly; a full
/// channel only means the agent is stuck, and then readers wait.
pub const EVENT_CHANNEL: usize = 64;

/// Where the backends find their files.
#[derive(Debug, Clone)]
pub struct BoardOptions {
    /// Prefix for `/sys` and `/dev` paths; `/` on a real board, a temp dir in tests.
    pub root: PathBuf,
    /// Socket for `sim` backends; required if the profile uses any.
    pub sim_socket: Option<PathBuf>,
}

impl Default for BoardOptions {
    fn default() -> Self {
        BoardOptions {
            root: PathBuf::from("/"),
            sim_socket: None,
        }
    }
}

/// An opened board.
pub struct Board {
    /// The profile's board name.
    pub name: String,
    /// One LED per role in the profile (`status` is always there).
    pub leds: BTreeMap<LedRole, Box<dyn Led>>,
    /// Debounced button edges, in order per button.
    pub events: mpsc::Receiver<ButtonEvent>,
    /// The simulated board socket, if the profile uses `sim` backends.
    pub sim: Option<SimServerHandle>,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board")
            .field("name", &self.name)
            .field("leds", &self.leds.keys().collect::<Vec<_>>())
            .field("sim", &self.sim)
            .finish_non_exhaustive()
    }
}

impl Board {
    /// Opens all hardware of `profile`. Must be called inside a tokio runtime
    /// (button readers are tasks; the sim socket is served by tasks).
    pub fn open(profile: &Profile, opts: &BoardOptions) -> Result<Board, BoardError> {
        let pname = format!("{} ({})", profile.name, profile.origin);
        let (tx, events) = mpsc::channel(EVENT_CHANNEL);

        let mut sim_leds = BTreeMap::new();
        let sim = if profile.uses_sim() {
            let Some(socket) = &opts.sim_socket else {
                return Err(BoardError::Profile(format!(
                    "board profile {pname} uses the simulated board (`sim` backend) but no sim socket path was given"
                )));
            };
            let cfg = SimConfig {
                board: profile.name.clone(),
                leds: profile
                    .leds
                    .iter()
                    .filter(|l| l.backend == LedBackend::Sim)
                    .map(|l| l.role)
                    .collect(),
                buttons: profile
                    .buttons
                    .iter()
                    .filter(|b| b.backend == ButtonBackend::Sim)
                    .map(|b| (b.role, b.debounce))
                    .collect(),
            };
            let (handle, leds) = sim::start(socket, &cfg, tx.clone())?;
            sim_leds.extend(leds);
            Some(handle)
        } else {
            None
        };

        let mut leds: BTreeMap<LedRole, Box<dyn Led>> = BTreeMap::new();
        for l in &profile.leds {
            let led: Box<dyn Led> = match &l.backend {
                LedBackend::Sysfs { name } => {
                    Box::new(sysfs::SysfsLed::open(&opts.root, name, &pname)?)
                }
                LedBackend::Gpio {
                    chip,
                    line,
                    active_low,
                } => Box::new(gpio::GpioLed::open(
                    &opts.root,
                    chip,
                    *line,
                    *active_low,
                    &pname,
                )?),
                LedBackend::Sim => match sim_leds.remove(&l.role) {
                    Some(s) => Box::new(s),
                    None => {
                        return Err(BoardError::Other(format!(
                            "board profile {pname}: sim LED {} missing",
                            l.role
                        )))
                    }
                },
            };
            leds.insert(l.role, led);
        }

        for b in &profile.buttons {
            match &b.backend {
                ButtonBackend::Gpio {
                    chip,
                    line,
                    active_low,
                    bias,
                } => {
                    let cfg = gpio::GpioButton {
                        chip: chip.clone(),
                        line: *line,
                        active_low: *active_low,
                        bias: *bias,
                        debounce: b.debounce,
                    };
                    gpio::spawn_button(&opts.root, &cfg, b.role, &pname, tx.clone())?;
                }
                ButtonBackend::Evdev {
                    device_name, code, ..
                } => {
                    evdev::spawn_button(
                        &opts.root,
                        device_name,
                        *code,
                        b.role,
                        b.debounce,
                        &pname,
                        tx.clone(),
                    )?;
                }
                ButtonBackend::Sim => {} // served by the sim socket above
            }
        }
        Ok(Board {
            name: profile.name.clone(),
            leds,
            events,
            sim,
        })
    }

    /// The LED roles this board has, in order (`status` first).
    pub fn led_roles(&self) -> Vec<LedRole> {
        self.leds.keys().copied().collect()
    }

    /// The LED for `role`, if the board has one.
    pub fn led(&mut self, role: LedRole) -> Option<&mut (dyn Led + 'static)> {
        self.leds.get_mut(&role).map(|b| b.as_mut())
    }
}
