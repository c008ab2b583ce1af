//! What an LED shows: off, on, a blink at a rate, or a repeating sequence.
//!
//! Bounded on purpose (`heapless`): a pattern fits in a fixed buffer, so it
//! can be handed to the kernel's `pattern` trigger or a timer thread without
//! allocating. Parsing rejects empty sequences and zero durations.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Most steps a [`LedPattern::Sequence`] may have.
pub const MAX_STEPS: usize = 16;

/// One step of a sequence: the LED is `on` (or off) for `ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub on: bool,
    pub ms: u32,
}

/// An LED pattern. JSON form: `{"kind":"off"}`, `{"kind":"on"}`,
/// `{"kind":"blink","on_ms":500,"off_ms":500}`,
/// `{"kind":"sequence","steps":[{"on":true,"ms":100},{"on":false,"ms":900}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "RawPattern")]
pub enum LedPattern {
    #[default]
    Off,
    On,
    Blink {
        on_ms: u32,
        off_ms: u32,
    },
    /// Repeats forever.
    Sequence {
        steps: heapless::Vec<Step, MAX_STEPS>,
    },
}

/// Longest single step we accept (one hour): longer is a bug, not a pattern.
const MAX_STEP_MS: u32 = 3_600_000;

impl LedPattern {
    /// A blink at `hz` with a 50% duty cycle.
    pub fn blink_hz(hz: u32) -> LedPattern {
        let half = (500 / hz.max(1)).max(1);
        LedPattern::Blink {
            on_ms: half,
            off_ms: half,
        }
    }

    /// A sequence from `(on, ms)` pairs. Panics if there are more than
    /// [`MAX_STEPS`]: only for patterns written in code.
    pub fn sequence(steps: &[(bool, u32)]) -> LedPattern {
        let mut v = heapless::Vec::new();
        for &(on, ms) in steps {
            v.push(Step { on, ms })
                .expect("pattern in code has too many steps");
        }
        LedPattern::Sequence { steps: v }
    }

    /// The pattern as steps over one period; `Off`/`On` are a single step
    /// of zero length (they never change).
    pub fn steps(&self) -> heapless::Vec<Step, MAX_STEPS> {
        let mut v = heapless::Vec::new();
        match self {
            LedPattern::Off => {
                let _ = v.push(Step { on: false, ms: 0 });
            }
            LedPattern::On => {
                let _ = v.push(Step { on: true, ms: 0 });
            }
            LedPattern::Blink { on_ms, off_ms } => {
                let _ = v.push(Step {
                    on: true,
                    ms: *on_ms,
                });
                let _ = v.push(Step {
                    on: false,
                    ms: *off_ms,
                });
            }
            LedPattern::Sequence { steps } => v = steps.clone(),
        }
        v
    }

    /// Whether the LED is lit at `elapsed` after the pattern started.
    pub fn is_on_at(&self, elapsed: Duration) -> bool {
        match self {
            LedPattern::Off => false,
            LedPattern::On => true,
            _ => {
                let steps = self.steps();
                let period: u64 = steps.iter().map(|s| s.ms as u64).sum();
                if period == 0 {
                    return false;
                }
                let mut t = (elapsed.as_millis() as u64) % period;
                for s in &steps {
                    if t < s.ms as u64 {
                        return s.on;
                    }
                    t -= s.ms as u64;
                }
                false
            }
        }
    }

    fn validate(self) -> Result<LedPattern, String> {
        match &self {
            LedPattern::Off | LedPattern::On => {}
            LedPattern::Blink { on_ms, off_ms } => {
                for (name, v) in [("on_ms", on_ms), ("off_ms", off_ms)] {
                    if *v == 0 || *v > MAX_STEP_MS {
                        return Err(format!("blink {name} must be 1..={MAX_STEP_MS}, got {v}"));
                    }
                }
            }
            LedPattern::Sequence { steps } => {
                if steps.is_empty() {
                    return Err("sequence needs at least one step".into());
                }
                if let Some(s) = steps.iter().find(|s| s.ms == 0 || s.ms > MAX_STEP_MS) {
                    return Err(format!(
                        "sequence step ms must be 1..={MAX_STEP_MS}, got {}",
                        s.ms
                    ));
                }
            }
        }
        Ok(self)
    }
}

impl std::fmt::Display for LedPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedPattern::Off => f.write_str("off"),
            LedPattern::On => f.write_str("on"),
            LedPattern::Blink { on_ms, off_ms } => write!(f, "blink {on_ms}/{off_ms} ms"),
            LedPattern::Sequence { steps } => {
                f.write_str("sequence")?;
                for s in steps {
                    write!(f, " {}{}", if s.on { "+" } else { "-" }, s.ms)?;
                }
                Ok(())
            }
        }
    }
}

/// Unvalidated wire form; `LedPattern` deserializes through it.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawPattern {
    Off,
    On,
    Blink {
        on_ms: u32,
        off_ms: u32,
    },
    Sequence {
        steps: heapless::Vec<Step, MAX_STEPS>,
    },
}

impl TryFrom<RawPattern> for LedPattern {
    type Error = String;
    fn try_from(r: RawPattern) -> Result<Self, String> {
        match r {
            RawPattern::Off => LedPattern::Off,
            RawPattern::On => LedPattern::On,
            RawPattern::Blink { on_ms, off_ms } => LedPattern::Blink { on_ms, off_ms },
            RawPattern::Sequence { steps } => LedPattern::Sequence { steps },
        }
        .validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        for p in [
            LedPattern::Off,
            LedPattern::On,
            LedPattern::blink_hz(2),
            LedPattern::sequence(&[(true, 100), (false, 900)]),
        ] {
            let s = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<LedPattern>(&s).unwrap(), p, "{s}");
        }
        assert_eq!(
            serde_json::to_string(&LedPattern::Blink {
                on_ms: 1,
                off_ms: 2
            })
            .unwrap(),
            r#"{"kind":"blink","on_ms":1,"off_ms":2}"#
        );
    }

    #[test]
    fn malformed_patterns_are_rejected_with_reason() {
        for (bad, why) in [
            (r#"{"kind":"blink","on_ms":0,"off_ms":5}"#, "on_ms"),
            (r#"{"kind":"sequence","steps":[]}"#, "at least one"),
            (
                r#"{"kind":"sequence","steps":[{"on":true,"ms":0}]}"#,
                "step ms",
            ),
            (r#"{"kind":"strobe"}"#, "unknown variant"),
            (r#"{"on_ms":1}"#, "kind"),
        ] {
            let err = serde_json::from_str::<LedPattern>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let too_many = format!(
            r#"{{"kind":"sequence","steps":[{}]}}"#,
            vec![r#"{"on":true,"ms":1}"#; MAX_STEPS + 1].join(",")
        );
        assert!(serde_json::from_str::<LedPattern>(&too_many).is_err());
    }

    #[test]
    fn is_on_at_follows_the_steps() {
        let p = LedPattern::sequence(&[(true, 100), (false, 100), (true, 100), (false, 700)]);
        let on = |ms| p.is_on_at(Duration::from_millis(ms));
        assert!(on(0) && !on(150) && on(250) && !on(500) && on(1000));
        assert!(!LedPattern::Off.is_on_at(Duration::from_secs(1)));
        assert!(LedPattern::On.is_on_at(Duration::ZERO));
    }
}
