//! Sans-IO trailing debouncer for one button, like the kernel's GPIO debounce.
//!
//! Raw edges (level + [`Mono`] time) go in; a stable [`ButtonEvent`] comes out
//! only once the line has kept its new level for the whole period. Invariants:
//! events strictly alternate press/release starting from the initial level, a
//! bounce shorter than the period never produces one, and an event's `at` is
//! the time of the raw edge that started the now-stable level.

use crate::{Button, ButtonEvent, Edge, Mono};
use std::collections::VecDeque;
use std::time::Duration;

/// Debounces one button. Drive it with [`handle_edge`](Self::handle_edge) and
/// [`handle_timeout`](Self::handle_timeout); read [`poll_event`](Self::poll_event)
/// after each call and sleep until [`poll_timeout`](Self::poll_timeout).
#[derive(Debug, Clone)]
pub struct Debouncer {
    button: Button,
    period: Duration,
    /// Last level handed out (or the initial level).
    stable: bool,
    /// Last raw level seen.
    raw: bool,
    /// When the current raw level started.
    raw_since: Mono,
    /// `raw_since + period` while `raw != stable`.
    deadline: Option<Mono>,
    out: VecDeque<ButtonEvent>,
}

impl Debouncer {
    /// A debouncer whose button starts released.
    pub fn new(button: Button, period: Duration) -> Debouncer {
        Debouncer::with_level(button, period, false)
    }

    /// A debouncer whose button starts `pressed` (read from the line at open),
    /// so a button held at boot does not produce a spurious press.
    pub fn with_level(button: Button, period: Duration, pressed: bool) -> Debouncer {
        Debouncer {
            button,
            period,
            stable: pressed,
            raw: pressed,
            raw_since: Mono::ZERO,
            deadline: None,
            out: VecDeque::new(),
        }
    }

    pub fn button(&self) -> Button {
        self.button
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// The debounced level: what the last emitted event said.
    pub fn is_pressed(&self) -> bool {
        self.stable
    }

    /// A raw edge: the line is now `pressed` since `at`. Repeated levels are
    /// ignored (backends may report the same level twice after a lost edge).
    pub fn handle_edge(&mut self, pressed: bool, at: Mono) {
        // A raw edge arriving after the deadline means the old level held
        // long enough: settle it first, even if nobody called handle_timeout.
        self.handle_timeout(at);
        if pressed == self.raw {
            return;
        }
        // Timestamps from two sources may disagree by a hair; never go back.
        let at = at.max(self.raw_since);
        self.raw = pressed;
        self.raw_since = at;
        self.deadline = if self.raw == self.stable {
            None
        } else {
            Some(at + self.period)
        };
        // A zero period settles immediately.
        self.handle_timeout(at);
    }

    /// Time has reached `now`: settles the pending level if it held for the
    /// whole period.
    pub fn handle_timeout(&mut self, now: Mono) {
        if let Some(deadline) = self.deadline {
            if now >= deadline {
                self.deadline = None;
                self.stable = self.raw;
                self.out.push_back(ButtonEvent {
                    button: self.button,
                    edge: if self.stable {
                        Edge::Press
                    } else {
                        Edge::Release
                    },
                    at: self.raw_since,
                });
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Mono> {
        self.deadline
    }

    /// The next debounced event, oldest first.
    pub fn poll_event(&mut self) -> Option<ButtonEvent> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn ms(n: u64) -> Mono {
        Mono(n * MS)
    }

    fn drain(d: &mut Debouncer) -> Vec<ButtonEvent> {
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    #[test]
    fn clean_press_and_release_are_reported_at_the_raw_edge_time() {
        let mut d = Debouncer::new(Button::Pair, Duration::from_millis(20));
        d.handle_edge(true, ms(100));
        assert_eq!(d.poll_timeout(), Some(ms(120)));
        d.handle_timeout(ms(119));
        assert!(d.poll_event().is_none(), "too early");
        d.handle_timeout(ms(120));
        assert_eq!(
            drain(&mut d),
            vec![ButtonEvent {
                button: Button::Pair,
                edge: Edge::Press,
                at: ms(100)
            }]
        );
        assert!(d.is_pressed());
        assert_eq!(d.poll_timeout(), None);
        d.handle_edge(false, ms(500));
        d.handle_timeout(ms(520));
        assert_eq!(
            drain(&mut d),
            vec![ButtonEvent {
                button: Button::Pair,
                edge: Edge::Release,
                at: ms(500)
            }]
        );
    }

    #[test]
    fn bounces_restart_the_period_and_the_event_carries_the_last_edge() {
        let mut d = Debouncer::new(Button::Reset, Duration::from_millis(20));
        // Contact bounce: press, release, press within a few ms.
        d.handle_edge(true, ms(0));
        d.handle_edge(false, ms(3));
        assert_eq!(
            d.poll_timeout(),
            None,
            "back at the stable level: nothing pending"
        );
        d.handle_edge(true, ms(5));
        d.handle_timeout(ms(24));
        assert!(d.poll_event().is_none());
        d.handle_timeout(ms(25));
        let ev = drain(&mut d);
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].edge, ev[0].at), (Edge::Press, ms(5)));
    }

    #[test]
    fn a_burst_that_starts_and_ends_released_produces_nothing() {
        let mut d = Debouncer::new(Button::Pair, Duration::from_millis(10));
        for i in 0..10 {
            d.handle_edge(i % 2 == 0, ms(i));
        }
        d.handle_timeout(ms(1_000));
        assert!(drain(&mut d).is_empty());
        assert!(!d.is_pressed());
    }

    #[test]
    fn an_edge_after_the_deadline_settles_the_old_level_first() {
        let mut d = Debouncer::new(Button::Pair, Duration::from_millis(10));
        d.handle_edge(true, ms(0));
        // No handle_timeout call: the release arrives long after.
        d.handle_edge(false, ms(50));
        d.handle_timeout(ms(60));
        let edges: Vec<_> = drain(&mut d).iter().map(|e| (e.edge, e.at)).collect();
        assert_eq!(edges, vec![(Edge::Press, ms(0)), (Edge::Release, ms(50))]);
    }

    #[test]
    fn zero_period_passes_edges_through_and_repeats_are_ignored() {
        let mut d = Debouncer::new(Button::Pair, Duration::ZERO);
        d.handle_edge(true, ms(1));
        d.handle_edge(true, ms(2));
        d.handle_edge(false, ms(3));
        let edges: Vec<_> = drain(&mut d).iter().map(|e| (e.edge, e.at)).collect();
        assert_eq!(edges, vec![(Edge::Press, ms(1)), (Edge::Release, ms(3))]);
    }

    #[test]
    fn initial_level_pressed_reports_only_the_release() {
        let mut d = Debouncer::with_level(Button::Reset, Duration::from_millis(5), true);
        d.handle_edge(true, ms(1));
        d.handle_edge(false, ms(10));
        d.handle_timeout(ms(15));
        let edges: Vec<_> = drain(&mut d).iter().map(|e| e.edge).collect();
        assert_eq!(edges, vec![Edge::Release]);
    }

    /// Runs `gaps` (ns between consecutive raw edges, levels alternating from
    /// pressed) through a debouncer; returns events and the final raw level.
    fn run(period_ns: u64, gaps: &[u64], settle: bool) -> (Vec<ButtonEvent>, bool, Vec<Mono>) {
        let mut d = Debouncer::new(Button::Pair, Duration::from_nanos(period_ns));
        let mut t = Mono(1_000);
        let mut level = false;
        let mut edge_times = Vec::new();
        let mut events = Vec::new();
        for gap in gaps {
            t = Mono(t.0 + gap);
            // Callers normally wake at poll_timeout; do so when it falls in the gap.
            if let Some(dl) = d.poll_timeout() {
                if dl <= t {
                    d.handle_timeout(dl);
                }
            }
            level = !level;
            d.handle_edge(level, t);
            edge_times.push(t);
            events.extend(std::iter::from_fn(|| d.poll_event()));
        }
        if settle {
            d.handle_timeout(Mono(t.0 + period_ns));
            events.extend(std::iter::from_fn(|| d.poll_event()));
            assert_eq!(
                d.is_pressed(),
                level,
                "settled level must match the raw level"
            );
        }
        (events, level, edge_times)
    }

    proptest! {
        #[test]
        fn pulses_shorter_than_the_period_never_produce_events(
            period in 1u64..50_000_000,
            raw_gaps in proptest::collection::vec(0u64..u64::MAX, 0..40),
        ) {
            // Every gap (and so every pulse) is shorter than the period.
            let mut gaps: Vec<u64> = raw_gaps.iter().map(|g| g % period).collect();
            // Start and end released: an even number of edges.
            if gaps.len() % 2 == 1 { gaps.pop(); }
            let (events, level, _) = run(period, &gaps, true);
            prop_assert!(!level);
            prop_assert!(events.is_empty(), "{events:?}");
        }

        #[test]
        fn stable_levels_are_reported_exactly_and_in_order(
            period in 0u64..20_000_000,
            gaps in proptest::collection::vec(0u64..60_000_000, 0..40),
        ) {
            let (events, _level, edge_times) = run(period, &gaps, true);
            // Alternating, starting with a press.
            for (i, e) in events.iter().enumerate() {
                let want = if i % 2 == 0 { Edge::Press } else { Edge::Release };
                prop_assert_eq!(e.edge, want);
            }
            // Each event's `at` is a raw edge whose level then held for the period.
            for e in &events {
                let idx = edge_times.iter().rposition(|t| *t == e.at);
                prop_assert!(idx.is_some(), "event at {:?} is not a raw edge", e.at);
                if let Some(next) = idx.and_then(|i| edge_times.get(i + 1)) {
                    prop_assert!(next.0 - e.at.0 >= period, "level did not hold");
                }
            }
            // Events are in time order.
            prop_assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
        }
    }
}
