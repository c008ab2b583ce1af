//! The LED patterns the product promises, as the harness recognises them.
//!
//! Written from the product's description, not taken from the agent's LED
//! policy, so that a change there that breaks the promise shows up here.
//! Where the promise is a shape ("double blink") rather than exact timings,
//! the shape is checked.

use intrust_board::LedPattern;

/// Unpaired: a slow blink, 500 ms on, 500 ms off.
pub fn unpaired() -> LedPattern {
    LedPattern::Blink {
        on_ms: 500,
        off_ms: 500,
    }
}

/// Factory reset armed: a fast blink, 50 ms on, 50 ms off.
pub fn reset_armed() -> LedPattern {
    LedPattern::Blink {
        on_ms: 50,
        off_ms: 50,
    }
}

pub fn is_unpaired(p: &LedPattern) -> bool {
    *p == unpaired()
}

pub fn is_reset_armed(p: &LedPattern) -> bool {
    *p == reset_armed()
}

/// Pairing window open: a double blink, i.e. a repeating sequence that
/// lights the LED twice per period.
pub fn is_pairing(p: &LedPattern) -> bool {
    flashes_per_period(p) == Some(2)
}

/// How the record describes what [`is_pairing`] accepts.
pub const PAIRING_DESCRIPTION: &str = "double blink (a sequence with two flashes per period)";

/// Number of separate flashes in one period of a sequence (runs of lit
/// steps, counted around the wrap); `None` for anything but a sequence.
pub fn flashes_per_period(p: &LedPattern) -> Option<usize> {
    let LedPattern::Sequence { steps } = p else {
        return None;
    };
    let lit: Vec<bool> = steps.iter().filter(|s| s.ms > 0).map(|s| s.on).collect();
    if lit.iter().all(|&on| on) {
        return Some(usize::from(!lit.is_empty()));
    }
    // Count off→on transitions cyclically.
    Some(
        (0..lit.len())
            .filter(|&i| lit[i] && !lit[(i + lit.len() - 1) % lit.len()])
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_blink_is_two_flashes_whatever_the_timing() {
        let double = LedPattern::sequence(&[(true, 100), (false, 100), (true, 100), (false, 700)]);
        assert!(is_pairing(&double));
        // Split steps and a flash across the wrap still count as one flash.
        let wrapped = LedPattern::sequence(&[
            (true, 50),
            (false, 100),
            (true, 100),
            (false, 700),
            (true, 50),
        ]);
        assert!(is_pairing(&wrapped));
        assert!(!is_pairing(&LedPattern::sequence(&[
            (true, 100),
            (false, 900)
        ])));
        assert!(!is_pairing(&LedPattern::sequence(
            &[(true, 100), (false, 100)].repeat(3)
        )));
        assert!(!is_pairing(&unpaired()));
        assert!(!is_pairing(&LedPattern::On));
        assert_eq!(
            flashes_per_period(&LedPattern::sequence(&[(true, 10)])),
            Some(1)
        );
    }

    #[test]
    fn unpaired_and_armed_are_exact() {
        assert!(is_unpaired(&LedPattern::Blink {
            on_ms: 500,
            off_ms: 500
        }));
        assert!(!is_unpaired(&LedPattern::Blink {
            on_ms: 500,
            off_ms: 400
        }));
        assert!(is_reset_armed(&LedPattern::blink_hz(10)));
        assert!(!is_reset_armed(&unpaired()));
    }
}
