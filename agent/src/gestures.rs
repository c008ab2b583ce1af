//! Button gesture recognizer (sans-IO): debounced edges in, gestures out.
//!
//! Time comes only from the events' `at` and from [`Gestures::handle_timeout`];
//! the recognizer never reads a clock. Invariants: a PAIR press counts only
//! when press→release lasts `pair_min..=pair_max`; RESET goes
//! Up → Down → Armed (at `reset_arm`) → Requested on release, or Cancelled if
//! still held at `reset_cancel` (then the release does nothing).

use crate::config::ButtonsConfig;
use intrust_board::{Button, ButtonEvent, Edge, Mono};
use std::collections::VecDeque;
use std::time::Duration;

/// What a person did with the buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gesture {
    /// PAIR pressed and released within the accepted duration.
    PairPress,
    /// RESET has been held long enough; releasing it now resets.
    ResetArmed,
    /// RESET released while armed: do the factory reset.
    ResetRequested,
    /// RESET held too long: the armed reset is off.
    ResetCancelled,
}

/// Thresholds, usually from [`ButtonsConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GestureConfig {
    pub pair_min: Duration,
    pub pair_max: Duration,
    pub reset_arm: Duration,
    pub reset_cancel: Duration,
}

impl From<&ButtonsConfig> for GestureConfig {
    fn from(b: &ButtonsConfig) -> Self {
        GestureConfig {
            pair_min: Duration::from_millis(b.pair_min_ms),
            pair_max: Duration::from_millis(b.pair_max_ms),
            reset_arm: Duration::from_millis(b.reset_arm_ms),
            reset_cancel: Duration::from_millis(b.reset_cancel_ms),
        }
    }
}

impl Default for GestureConfig {
    fn default() -> Self {
        GestureConfig::from(&ButtonsConfig::default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reset {
    Up,
    Down { since: Mono },
    Armed { since: Mono },
    Cancelled,
}

/// The recognizer. Feed it with [`handle_event`](Gestures::handle_event) and
/// [`handle_timeout`](Gestures::handle_timeout); drain
/// [`poll_gesture`](Gestures::poll_gesture) after each.
#[derive(Debug)]
pub struct Gestures {
    cfg: GestureConfig,
    pair_down: Option<Mono>,
    reset: Reset,
    out: VecDeque<Gesture>,
}

impl Gestures {
    pub fn new(cfg: GestureConfig) -> Gestures {
        Gestures {
            cfg,
            pair_down: None,
            reset: Reset::Up,
            out: VecDeque::new(),
        }
    }

    /// One debounced edge. Repeated presses (or releases) of the same button
    /// are ignored: the first press counts.
    pub fn handle_event(&mut self, ev: ButtonEvent) {
        // Deadlines that passed before this edge happened come first, so a
        // late-delivered release cannot skip the arm or cancel step.
        self.handle_timeout(ev.at);
        match (ev.button, ev.edge) {
            (Button::Pair, Edge::Press) => {
                if self.pair_down.is_none() {
                    self.pair_down = Some(ev.at);
                }
            }
            (Button::Pair, Edge::Release) => {
                if let Some(down) = self.pair_down.take() {
                    let held = ev.at.saturating_since(down);
                    if held >= self.cfg.pair_min && held <= self.cfg.pair_max {
                        self.out.push_back(Gesture::PairPress);
                    } else {
                        tracing::debug!(
                            held_ms = held.as_millis() as u64,
                            "PAIR press outside the accepted duration, ignored"
                        );
                    }
                }
            }
            (Button::Reset, Edge::Press) => {
                if self.reset == Reset::Up {
                    self.reset = Reset::Down { since: ev.at };
                }
            }
            (Button::Reset, Edge::Release) => {
                if let Reset::Armed { .. } = self.reset {
                    self.out.push_back(Gesture::ResetRequested);
                }
                self.reset = Reset::Up;
            }
        }
    }

    /// When [`handle_timeout`](Gestures::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Mono> {
        match self.reset {
            Reset::Down { since } => Some(since + self.cfg.reset_arm),
            Reset::Armed { since } => Some(since + self.cfg.reset_cancel),
            Reset::Up | Reset::Cancelled => None,
        }
    }

    /// Advances time to `now`. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Mono) {
        if let Reset::Down { since } = self.reset {
            if now >= since + self.cfg.reset_arm {
                self.reset = Reset::Armed { since };
                self.out.push_back(Gesture::ResetArmed);
            }
        }
        if let Reset::Armed { since } = self.reset {
            if now >= since + self.cfg.reset_cancel {
                self.reset = Reset::Cancelled;
                self.out.push_back(Gesture::ResetCancelled);
            }
        }
    }

    pub fn poll_gesture(&mut self) -> Option<Gesture> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(button: Button, edge: Edge, ms: u64) -> ButtonEvent {
        ButtonEvent {
            button,
            edge,
            at: Mono::from_millis(ms),
        }
    }

    fn drain(g: &mut Gestures) -> Vec<Gesture> {
        std::iter::from_fn(|| g.poll_gesture()).collect()
    }

    fn pair_press(held_ms: u64) -> Vec<Gesture> {
        let mut g = Gestures::new(GestureConfig::default());
        g.handle_event(ev(Button::Pair, Edge::Press, 1000));
        assert_eq!(g.poll_timeout(), None, "PAIR needs no timer");
        g.handle_event(ev(Button::Pair, Edge::Release, 1000 + held_ms));
        drain(&mut g)
    }

    #[test]
    fn pair_press_bounds_are_inclusive() {
        assert_eq!(pair_press(49), vec![]);
        assert_eq!(pair_press(50), vec![Gesture::PairPress]);
        assert_eq!(pair_press(100), vec![Gesture::PairPress]);
        assert_eq!(pair_press(3000), vec![Gesture::PairPress]);
        assert_eq!(pair_press(3001), vec![]);
        assert_eq!(pair_press(0), vec![]);
    }

    #[test]
    fn pair_release_without_press_and_double_press() {
        let mut g = Gestures::new(GestureConfig::default());
        g.handle_event(ev(Button::Pair, Edge::Release, 100));
        assert_eq!(drain(&mut g), vec![]);
        // The first press counts: 10 ms → 5000 ms is too long even though the
        // second press is only 100 ms before the release.
        g.handle_event(ev(Button::Pair, Edge::Press, 10));
        g.handle_event(ev(Button::Pair, Edge::Press, 4900));
        g.handle_event(ev(Button::Pair, Edge::Release, 5000));
        assert_eq!(drain(&mut g), vec![]);
    }

    #[test]
    fn reset_released_before_arm_does_nothing() {
        let mut g = Gestures::new(GestureConfig::default());
        g.handle_event(ev(Button::Reset, Edge::Press, 0));
        assert_eq!(g.poll_timeout(), Some(Mono::from_millis(5000)));
        g.handle_timeout(Mono::from_millis(4999));
        g.handle_event(ev(Button::Reset, Edge::Release, 4999));
        assert_eq!(drain(&mut g), vec![]);
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn reset_arms_at_five_seconds_and_release_requests() {
        let mut g = Gestures::new(GestureConfig::default());
        g.handle_event(ev(Button::Reset, Edge::Press, 1000));
        g.handle_timeout(Mono::from_millis(5999));
        assert_eq!(drain(&mut g), vec![]);
        g.handle_timeout(Mono::from_millis(6000));
        assert_eq!(drain(&mut g), vec![Gesture::ResetArmed]);
        assert_eq!(g.poll_timeout(), Some(Mono::from_millis(31000)));
        g.handle_timeout(Mono::from_millis(6000));
        assert_eq!(drain(&mut g), vec![], "a repeated timeout changes nothing");
        g.handle_event(ev(Button::Reset, Edge::Release, 7000));
        assert_eq!(drain(&mut g), vec![Gesture::ResetRequested]);
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn reset_held_to_cancel_then_release_does_nothing() {
        let mut g = Gestures::new(GestureConfig::default());
        g.handle_event(ev(Button::Reset, Edge::Press, 0));
        g.handle_timeout(Mono::from_millis(5000));
        g.handle_timeout(Mono::from_millis(29999));
        assert_eq!(drain(&mut g), vec![Gesture::ResetArmed]);
        g.handle_timeout(Mono::from_millis(30000));
        assert_eq!(drain(&mut g), vec![Gesture::ResetCancelled]);
        assert_eq!(g.poll_timeout(), None);
        g.handle_event(ev(Button::Reset, Edge::Release, 40000));
        assert_eq!(drain(&mut g), vec![]);
        // And the next hold works again.
        g.handle_event(ev(Button::Reset, Edge::Press, 50000));
        g.handle_event(ev(Button::Reset, Edge::Release, 56000));
        assert_eq!(
            drain(&mut g),
            vec![Gesture::ResetArmed, Gesture::ResetRequested]
        );
    }

    #[test]
    fn late_release_without_timeouts_still_goes_through_arm_and_cancel() {
        let mut g = Gestures::new(GestureConfig::default());
        g.handle_event(ev(Button::Reset, Edge::Press, 0));
        g.handle_event(ev(Button::Reset, Edge::Release, 31000));
        assert_eq!(
            drain(&mut g),
            vec![Gesture::ResetArmed, Gesture::ResetCancelled]
        );
    }

    #[test]
    fn pair_and_reset_are_independent() {
        let mut g = Gestures::new(GestureConfig::default());
        g.handle_event(ev(Button::Reset, Edge::Press, 0));
        g.handle_event(ev(Button::Pair, Edge::Press, 100));
        g.handle_event(ev(Button::Pair, Edge::Release, 300));
        g.handle_event(ev(Button::Reset, Edge::Release, 5500));
        assert_eq!(
            drain(&mut g),
            vec![
                Gesture::PairPress,
                Gesture::ResetArmed,
                Gesture::ResetRequested
            ]
        );
    }

    #[test]
    fn thresholds_come_from_config() {
        let cfg = GestureConfig::from(&ButtonsConfig {
            pair_min_ms: 10,
            pair_max_ms: 20,
            reset_arm_ms: 100,
            reset_cancel_ms: 200,
        });
        let mut g = Gestures::new(cfg);
        g.handle_event(ev(Button::Pair, Edge::Press, 0));
        g.handle_event(ev(Button::Pair, Edge::Release, 15));
        g.handle_event(ev(Button::Reset, Edge::Press, 0));
        assert_eq!(g.poll_timeout(), Some(Mono::from_millis(100)));
        g.handle_timeout(Mono::from_millis(200));
        assert_eq!(
            drain(&mut g),
            vec![
                Gesture::PairPress,
                Gesture::ResetArmed,
                Gesture::ResetCancelled
            ]
        );
    }

    fn arb_event() -> impl Strategy<Value = (bool, bool, u64, bool)> {
        (any::<bool>(), any::<bool>(), 0u64..40_000, any::<bool>())
    }

    proptest! {
        #[test]
        fn random_sequences_never_panic_and_never_pair_on_short_presses(
            steps in proptest::collection::vec(arb_event(), 0..64)
        ) {
            let cfg = GestureConfig::default();
            let mut g = Gestures::new(cfg);
            let mut now = Mono::ZERO;
            let mut pair_down: Option<Mono> = None;
            for (is_pair, is_press, dt, timeout) in steps {
                now = now + Duration::from_millis(dt);
                if timeout {
                    g.handle_timeout(now);
                } else {
                    let button = if is_pair { Button::Pair } else { Button::Reset };
                    let edge = if is_press { Edge::Press } else { Edge::Release };
                    g.handle_event(ButtonEvent { button, edge, at: now });
                    if is_pair {
                        match edge {
                            Edge::Press => { pair_down.get_or_insert(now); }
                            Edge::Release => {
                                let down = pair_down.take();
                                let counted = down.is_some_and(|d| {
                                    let held = now.saturating_since(d);
                                    held >= cfg.pair_min && held <= cfg.pair_max
                                });
                                let got = std::iter::from_fn(|| g.poll_gesture())
                                    .filter(|x| *x == Gesture::PairPress)
                                    .count();
                                prop_assert_eq!(got, counted as usize);
                            }
                        }
                    }
                }
                // PairPress only ever comes from a PAIR release (checked above).
                while let Some(x) = g.poll_gesture() {
                    prop_assert!(x != Gesture::PairPress);
                }
            }
        }

        #[test]
        fn arbitrary_times_never_panic(
            events in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<u64>()), 0..32)
        ) {
            // Out-of-order and extreme timestamps must not panic (saturating math).
            let mut g = Gestures::new(GestureConfig::default());
            for (p, press, t) in events {
                let button = if p { Button::Pair } else { Button::Reset };
                let edge = if press { Edge::Press } else { Edge::Release };
                g.handle_event(ButtonEvent { button, edge, at: Mono(t) });
                if let Some(d) = g.poll_timeout() { g.handle_timeout(d); }
                while g.poll_gesture().is_some() {}
            }
        }
    }
}
