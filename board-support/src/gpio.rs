//! GPIO character-device backend (uAPI v2 via `gpiocdev`): LEDs on output
//! lines, buttons on input lines with both-edge detection.
//!
//! Chips are named (`gpiochip0`) or found by label (`pinctrl-bcm2711`). LED
//! patterns other than on/off run on a software timer thread. Buttons use
//! the kernel's debounce when the request accepts it, else the software
//! debouncer; edge timestamps are the kernel's CLOCK_MONOTONIC ones.

use crate::blinker::Blinker;
use crate::button_task::{self, RawEdge};
use crate::profile::Bias;
use crate::{BoardError, Button, ButtonEvent, Led, LedPattern, Mono};
use gpiocdev::line::{EdgeDetection, EdgeKind, EventClock, Value};
use gpiocdev::request::Request;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Consumer name shown by `gpioinfo` for our lines.
const CONSUMER: &str = "intrustd";

/// Finds the character device of `chip`: `<root>/dev/<chip>` if it is a
/// GPIO chip, else the chip under `<root>/dev` whose label is `chip`.
pub fn find_chip(root: &Path, chip: &str, profile: &str) -> Result<PathBuf, BoardError> {
    let dev = root.join("dev");
    let direct = dev.join(chip);
    if !chip.contains('/') && gpiocdev::chip::is_chip(&direct).is_ok() {
        return Ok(direct);
    }
    let mut present = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dev) {
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("gpiochip"))
            })
            .collect();
        paths.sort();
        for p in paths {
            let Ok(c) = gpiocdev::Chip::from_path(&p) else {
                continue;
            };
            let Ok(info) = c.info() else { continue };
            if info.label == chip {
                return Ok(p);
            }
            present.push(format!("{} ({:?})", info.name, info.label));
        }
    }
    Err(BoardError::Other(format!(
        "board profile {profile}: GPIO chip {chip:?} not found: no GPIO chip {} and no chip labelled {chip:?} (present: {})",
        direct.display(),
        if present.is_empty() { "none".to_string() } else { present.join(", ") }
    )))
}

/// Checks the line exists on the chip, for an error that names both.
fn check_line(path: &Path, chip: &str, line: u32, profile: &str) -> Result<(), BoardError> {
    let c = gpiocdev::Chip::from_path(path).map_err(|e| {
        BoardError::Other(format!(
            "board profile {profile}: GPIO chip {chip:?} ({}): {e}",
            path.display()
        ))
    })?;
    let info = c.info().map_err(|e| {
        BoardError::Other(format!(
            "board profile {profile}: GPIO chip {chip:?} ({}): {e}",
            path.display()
        ))
    })?;
    if line >= info.num_lines {
        return Err(BoardError::Other(format!(
            "board profile {profile}: GPIO chip {chip:?} ({}) has lines 0..{}, no line {line}",
            path.display(),
            info.num_lines
        )));
    }
    Ok(())
}

fn request_err(profile: &str, chip: &str, line: u32, what: &str, e: gpiocdev::Error) -> BoardError {
    BoardError::Other(format!(
        "board profile {profile}: GPIO chip {chip:?} line {line}: cannot request it as {what}: {e}"
    ))
}

/// An LED on a GPIO output line.
pub struct GpioLed {
    what: String,
    line: u32,
    req: Arc<Request>,
    soft: Option<Blinker>,
}

impl std::fmt::Debug for GpioLed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpioLed")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl GpioLed {
    /// Requests `line` of `chip` as an output, initially off.
    pub fn open(
        root: &Path,
        chip: &str,
        line: u32,
        active_low: bool,
        profile: &str,
    ) -> Result<GpioLed, BoardError> {
        let path = find_chip(root, chip, profile)?;
        check_line(&path, chip, line, profile)?;
        let mut b = Request::builder();
        b.on_chip(&path)
            .with_consumer(CONSUMER)
            .with_line(line)
            .as_output(Value::Inactive);
        if active_low {
            b.as_active_low();
        }
        let req = b
            .request()
            .map_err(|e| request_err(profile, chip, line, "an LED output", e))?;
        Ok(GpioLed {
            what: format!("GPIO {chip} line {line}"),
            line,
            req: Arc::new(req),
            soft: None,
        })
    }
}

fn level(on: bool) -> Value {
    if on {
        Value::Active
    } else {
        Value::Inactive
    }
}

impl Led for GpioLed {
    fn set(&mut self, pattern: &LedPattern) -> Result<(), BoardError> {
        self.soft = None;
        match pattern {
            LedPattern::Off | LedPattern::On => self
                .req
                .set_value(self.line, level(*pattern == LedPattern::On))
                .map_err(|e| BoardError::Other(format!("LED on {}: {e}", self.what))),
            _ => {
                let (req, line) = (self.req.clone(), self.line);
                let b = Blinker::start(pattern, self.what.clone(), move |on| {
                    req.set_value(line, level(on)).map_err(|e| e.to_string())
                })
                .map_err(|e| {
                    BoardError::io(
                        format!("LED on {}: starting its timer thread", self.what),
                        e,
                    )
                })?;
                self.soft = Some(b);
                Ok(())
            }
        }
    }
}

impl Drop for GpioLed {
    fn drop(&mut self) {
        // Stop the timer before the line is released.
        self.soft = None;
    }
}

/// A button on a GPIO input line; fields as in the profile.
#[derive(Debug, Clone)]
pub struct GpioButton {
    pub chip: String,
    pub line: u32,
    pub active_low: bool,
    pub bias: Bias,
    pub debounce: Duration,
}

/// Requests the button line (both edges, bias, kernel debounce if accepted)
/// and starts a reader thread and a debouncing task sending into `events`.
/// Must be called inside a tokio runtime.
pub fn spawn_button(
    root: &Path,
    cfg: &GpioButton,
    button: Button,
    profile: &str,
    events: mpsc::Sender<ButtonEvent>,
) -> Result<(), BoardError> {
    let path = find_chip(root, &cfg.chip, profile)?;
    check_line(&path, &cfg.chip, cfg.line, profile)?;
    let build = |kernel_debounce: bool| {
        let mut b = Request::builder();
        b.on_chip(&path)
            .with_consumer(CONSUMER)
            .with_line(cfg.line)
            .as_input()
            .with_edge_detection(EdgeDetection::BothEdges)
            // The uAPI v2 default, made explicit: timestamps must be `Mono`.
            .with_event_clock(EventClock::Monotonic);
        match cfg.bias {
            Bias::AsIs => {}
            Bias::PullUp => {
                b.with_bias(gpiocdev::line::Bias::PullUp);
            }
            Bias::PullDown => {
                b.with_bias(gpiocdev::line::Bias::PullDown);
            }
            Bias::Disabled => {
                b.with_bias(gpiocdev::line::Bias::Disabled);
            }
        }
        if cfg.active_low {
            b.as_active_low();
        }
        if kernel_debounce {
            b.with_debounce_period(cfg.debounce);
        }
        b.request()
    };
    // Kernel debounce first (the events then come already debounced); a
    // chip or kernel that refuses it gets our software debouncer instead.
    let (req, soft_period) = match build(true) {
        Ok(r) => (r, Duration::ZERO),
        Err(e) => {
            tracing::info!(chip = %cfg.chip, line = cfg.line, error = %e, "kernel debounce refused; debouncing in software");
            let r = build(false)
                .map_err(|e| request_err(profile, &cfg.chip, cfg.line, "a button input", e))?;
            (r, cfg.debounce)
        }
    };
    let initial = matches!(req.value(cfg.line), Ok(Value::Active));
    let (raw_tx, raw_rx) = mpsc::channel(64);
    button_task::spawn(button, soft_period, initial, raw_rx, events, None);
    let what = format!("GPIO {} line {}", cfg.chip, cfg.line);
    std::thread::Builder::new()
        .name(format!("gpio {button}"))
        .spawn(move || read_edges(req, what, button, raw_tx))
        .map_err(|e| {
            BoardError::io(
                format!("button {button}: starting the GPIO reader thread"),
                e,
            )
        })?;
    Ok(())
}

fn read_edges(req: Request, what: String, button: Button, raw: mpsc::Sender<RawEdge>) {
    loop {
        // Wake up now and then to notice that the board was dropped.
        match req.wait_edge_event(Duration::from_millis(500)) {
            Ok(false) => {
                if raw.is_closed() {
                    return;
                }
                continue;
            }
            Ok(true) => {}
            Err(e) => {
                tracing::error!(line = %what, %button, error = %e, "button input stops");
                return;
            }
        }
        match req.read_edge_event() {
            Ok(ev) => {
                // Rising = inactive -> active (active_low is applied by the kernel).
                let edge = RawEdge {
                    pressed: ev.kind == EdgeKind::Rising,
                    at: Mono::from_nanos(ev.timestamp_ns),
                };
                if raw.blocking_send(edge).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(line = %what, %button, error = %e, "button input stops");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_chip_is_named_with_the_profile() {
        let root = tempfile::tempdir().unwrap();
        let e = find_chip(root.path(), "gpiochip7", "rpi4")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rpi4") && e.contains("\"gpiochip7\"") && e.contains("present: none"),
            "{e}"
        );
        let e = GpioLed::open(root.path(), "pinctrl-bcm2711", 42, false, "rpi4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pinctrl-bcm2711") && e.contains("rpi4"), "{e}");
    }

    #[tokio::test]
    async fn a_missing_chip_fails_the_button_too() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        // A regular file named like a chip is not a chip.
        std::fs::write(root.path().join("dev/gpiochip0"), "").unwrap();
        let cfg = GpioButton {
            chip: "gpiochip0".into(),
            line: 17,
            active_low: true,
            bias: Bias::PullUp,
            debounce: Duration::from_millis(20),
        };
        let (tx, _rx) = mpsc::channel(1);
        let e = spawn_button(root.path(), &cfg, Button::Pair, "rpi4", tx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpiochip0") && e.contains("rpi4"), "{e}");
    }
}
