//! LEDs of the kernel's LED class (`/sys/class/leds/<name>/`).
//!
//! Patterns are handed to the kernel where it can run them: `timer` trigger
//! for blinks, `pattern` trigger for sequences; if the kernel lacks the
//! `pattern` trigger, a software timer writes `brightness`. Every `set` first
//! stops whatever the previous pattern started.

use crate::blinker::Blinker;
use crate::{BoardError, Led, LedPattern};
use std::path::{Path, PathBuf};

/// One LED-class LED.
#[derive(Debug)]
pub struct SysfsLed {
    name: String,
    dir: PathBuf,
    max_brightness: u32,
    has_pattern_trigger: bool,
    soft: Option<Blinker>,
}

impl SysfsLed {
    /// Opens `<root>/sys/class/leds/<name>/`; `profile` names the board
    /// profile in errors.
    pub fn open(root: &Path, name: &str, profile: &str) -> Result<SysfsLed, BoardError> {
        let dir = root.join("sys/class/leds").join(name);
        if !dir.is_dir() {
            return Err(BoardError::Other(format!(
                "board profile {profile}: LED {name:?} not found ({} is not a directory; is the LED driver loaded?)",
                dir.display()
            )));
        }
        let max_path = dir.join("max_brightness");
        let text = std::fs::read_to_string(&max_path).map_err(|e| {
            BoardError::io(
                format!(
                    "board profile {profile}: LED {name:?}: reading {}",
                    max_path.display()
                ),
                e,
            )
        })?;
        let max_brightness = text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| {
                BoardError::Other(format!(
                "board profile {profile}: LED {name:?}: {} holds {:?}, expected a positive number",
                max_path.display(),
                text.trim()
            ))
            })?;
        let trig_path = dir.join("trigger");
        let triggers = std::fs::read_to_string(&trig_path).map_err(|e| {
            BoardError::io(
                format!(
                    "board profile {profile}: LED {name:?}: reading {}",
                    trig_path.display()
                ),
                e,
            )
        })?;
        let has_pattern_trigger = available_triggers(&triggers).any(|t| t == "pattern");
        Ok(SysfsLed {
            name: name.to_string(),
            dir,
            max_brightness,
            has_pattern_trigger,
            soft: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether sequences run in the kernel (`pattern` trigger) rather than a thread.
    pub fn has_pattern_trigger(&self) -> bool {
        self.has_pattern_trigger
    }

    fn write(&self, file: &str, value: &str) -> Result<(), BoardError> {
        write_attr(&self.dir, file, value).map_err(|e| {
            BoardError::io(
                format!(
                    "LED {:?}: writing {:?} to {}",
                    self.name,
                    value,
                    self.dir.join(file).display()
                ),
                e,
            )
        })
    }
}

fn write_attr(dir: &Path, file: &str, value: &str) -> std::io::Result<()> {
    // One write call: sysfs attributes take the whole value per write.
    std::fs::write(dir.join(file), value.as_bytes())
}

/// Trigger names in a `trigger` file: `none [timer] pattern` → none, timer, pattern.
pub fn available_triggers(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace()
        .map(|t| t.trim_start_matches('[').trim_end_matches(']'))
}

/// The kernel `pattern` trigger's text for a sequence: brightness/duration
/// pairs; each step is held (`b ms`) then jumps (`b 0`), since the kernel
/// ramps linearly between consecutive entries.
pub fn kernel_pattern(pattern: &LedPattern, max_brightness: u32) -> String {
    pattern
        .steps()
        .iter()
        .map(|s| {
            let b = if s.on { max_brightness } else { 0 };
            format!("{b} {} {b} 0", s.ms)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Led for SysfsLed {
    fn set(&mut self, pattern: &LedPattern) -> Result<(), BoardError> {
        self.soft = None;
        match pattern {
            LedPattern::Off | LedPattern::On => {
                self.write("trigger", "none")?;
                let b = if *pattern == LedPattern::On {
                    self.max_brightness
                } else {
                    0
                };
                self.write("brightness", &b.to_string())
            }
            LedPattern::Blink { on_ms, off_ms } => {
                // The kernel creates delay_on/delay_off when the timer trigger is set.
                self.write("trigger", "timer")?;
                self.write("delay_on", &on_ms.to_string())?;
                self.write("delay_off", &off_ms.to_string())
            }
            LedPattern::Sequence { .. } if self.has_pattern_trigger => {
                self.write("trigger", "pattern")?;
                self.write("pattern", &kernel_pattern(pattern, self.max_brightness))?;
                // -1 repeats forever (the default, but a previous user may have changed it).
                self.write("repeat", "-1")
            }
            LedPattern::Sequence { .. } => {
                self.write("trigger", "none")?;
                let dir = self.dir.clone();
                let on_value = self.max_brightness.to_string();
                let blinker = Blinker::start(pattern, self.name.clone(), move |on| {
                    write_attr(&dir, "brightness", if on { &on_value } else { "0" })
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| {
                    BoardError::io(format!("LED {:?}: starting its timer thread", self.name), e)
                })?;
                self.soft = Some(blinker);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn led_tree(triggers: &str) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sys/class/leds/blue:heartbeat");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("brightness"), "0\n").unwrap();
        std::fs::write(dir.join("max_brightness"), "255\n").unwrap();
        std::fs::write(dir.join("trigger"), triggers).unwrap();
        (root, dir)
    }

    fn read(dir: &Path, f: &str) -> String {
        std::fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn on_off_blink_and_sequence_use_the_kernel_triggers() {
        let (root, dir) = led_tree("none [heartbeat] timer pattern\n");
        let mut led = SysfsLed::open(root.path(), "blue:heartbeat", "odroid-hc2").unwrap();
        assert!(led.has_pattern_trigger());
        led.set(&LedPattern::On).unwrap();
        assert_eq!(
            (
                read(&dir, "trigger").as_str(),
                read(&dir, "brightness").as_str()
            ),
            ("none", "255")
        );
        led.set(&LedPattern::Off).unwrap();
        assert_eq!(read(&dir, "brightness"), "0");
        led.set(&LedPattern::Blink {
            on_ms: 100,
            off_ms: 900,
        })
        .unwrap();
        assert_eq!(read(&dir, "trigger"), "timer");
        assert_eq!(
            (
                read(&dir, "delay_on").as_str(),
                read(&dir, "delay_off").as_str()
            ),
            ("100", "900")
        );
        led.set(&LedPattern::sequence(&[
            (true, 100),
            (false, 100),
            (true, 100),
            (false, 700),
        ]))
        .unwrap();
        assert_eq!(read(&dir, "trigger"), "pattern");
        assert_eq!(
            read(&dir, "pattern"),
            "255 100 255 0 0 100 0 0 255 100 255 0 0 700 0 0"
        );
        assert_eq!(read(&dir, "repeat"), "-1");
    }

    #[test]
    fn without_pattern_trigger_a_thread_writes_brightness_until_replaced() {
        let (root, dir) = led_tree("[none] timer heartbeat\n");
        let mut led = SysfsLed::open(root.path(), "blue:heartbeat", "p").unwrap();
        assert!(!led.has_pattern_trigger());
        led.set(&LedPattern::sequence(&[(true, 5), (false, 5)]))
            .unwrap();
        assert_eq!(read(&dir, "trigger"), "none");
        let (mut saw_on, mut saw_off) = (false, false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(saw_on && saw_off) && Instant::now() < deadline {
            match read(&dir, "brightness").as_str() {
                "255" => saw_on = true,
                "0" => saw_off = true,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(saw_on && saw_off);
        led.set(&LedPattern::On).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(read(&dir, "brightness"), "255", "the timer thread stopped");
        assert!(!dir.join("pattern").exists());
    }

    #[test]
    fn missing_led_or_bad_files_name_the_led_and_profile() {
        let root = tempfile::tempdir().unwrap();
        let e = SysfsLed::open(root.path(), "ACT", "rpi4")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("rpi4") && e.contains("\"ACT\"") && e.contains("sys/class/leds/ACT"),
            "{e}"
        );
        let (root, dir) = led_tree("none\n");
        std::fs::write(dir.join("max_brightness"), "lots\n").unwrap();
        let e = SysfsLed::open(root.path(), "blue:heartbeat", "p")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("max_brightness") && e.contains("lots"), "{e}");
        std::fs::remove_file(dir.join("trigger")).unwrap();
        std::fs::write(dir.join("max_brightness"), "1\n").unwrap();
        let e = SysfsLed::open(root.path(), "blue:heartbeat", "p")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("trigger"), "{e}");
    }

    #[test]
    fn trigger_list_parsing() {
        let t: Vec<_> = available_triggers("none rc-feedback [timer] pattern\n").collect();
        assert_eq!(t, vec!["none", "rc-feedback", "timer", "pattern"]);
    }
}
