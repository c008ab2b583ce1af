//! The appliance state machine (sans-IO): facts and gestures in, the state,
//! LED patterns, actions and the next deadline out.
//!
//! It keeps facts (booted, paired, window deadline, peers, update, error,
//! reset armed), not a single state: the shown [`State`] is derived from
//! them by a fixed priority, so clearing one fact returns to whatever the
//! others say (e.g. a cancelled reset goes back to the prior state).

use crate::gestures::Gesture;
use intrust_board::{LedPattern, LedRole, Mono};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// What the appliance shows, by priority (highest first):
/// FactoryResetArmed > Updating > Error > PairingWindow > PeerConnected >
/// Paired/Unpaired > Booting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Booting,
    Unpaired,
    PairingWindow,
    Paired,
    PeerConnected,
    Updating { percent: u8 },
    Error { message: String },
    FactoryResetArmed,
}

/// The state's name alone, as it appears in status JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Booting,
    Unpaired,
    PairingWindow,
    Paired,
    PeerConnected,
    Updating,
    Error,
    FactoryResetArmed,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Booting => "booting",
            StateName::Unpaired => "unpaired",
            StateName::PairingWindow => "pairing_window",
            StateName::Paired => "paired",
            StateName::PeerConnected => "peer_connected",
            StateName::Updating => "updating",
            StateName::Error => "error",
            StateName::FactoryResetArmed => "factory_reset_armed",
        }
    }
}

impl std::fmt::Display for StateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl State {
    pub fn name(&self) -> StateName {
        match self {
            State::Booting => StateName::Booting,
            State::Unpaired => StateName::Unpaired,
            State::PairingWindow => StateName::PairingWindow,
            State::Paired => StateName::Paired,
            State::PeerConnected => StateName::PeerConnected,
            State::Updating { .. } => StateName::Updating,
            State::Error { .. } => StateName::Error,
            State::FactoryResetArmed => StateName::FactoryResetArmed,
        }
    }

    /// The pattern for `role` in this state. The link LED is on only while
    /// a peer is connected.
    pub fn led(&self, role: LedRole) -> LedPattern {
        match role {
            LedRole::Link => match self {
                State::PeerConnected => LedPattern::On,
                _ => LedPattern::Off,
            },
            LedRole::Status => match self {
                State::Booting => LedPattern::sequence(&[(true, 100), (false, 900)]),
                State::Unpaired => LedPattern::Blink {
                    on_ms: 500,
                    off_ms: 500,
                },
                State::PairingWindow => {
                    LedPattern::sequence(&[(true, 100), (false, 100), (true, 100), (false, 700)])
                }
                State::Paired | State::PeerConnected => LedPattern::On,
                State::Updating { .. } => LedPattern::Blink {
                    on_ms: 125,
                    off_ms: 125,
                },
                State::Error { .. } => LedPattern::sequence(&[
                    (true, 100),
                    (false, 100),
                    (true, 100),
                    (false, 100),
                    (true, 100),
                    (false, 1100),
                ]),
                State::FactoryResetArmed => LedPattern::Blink {
                    on_ms: 50,
                    off_ms: 50,
                },
            },
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Updating { percent } => write!(f, "updating ({percent}%)"),
            State::Error { message } => write!(f, "error: {message}"),
            other => f.write_str(other.name().as_str()),
        }
    }
}

/// What happens to the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Startup is done; whether the device has an owner.
    BootFinished {
        paired: bool,
    },
    Gesture(Gesture),
    /// Control API: open (or restart) the pairing window.
    OpenPairingWindow,
    /// Control API: close the pairing window now.
    ClosePairingWindow,
    /// The device got an owner (pairing succeeded) or lost it.
    Paired(bool),
    PeerCount(u32),
    UpdateProgress {
        percent: u8,
    },
    UpdateFinished,
    SetError(String),
    ClearError,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The owner asked for a factory reset (RESET held, then released).
    FactoryReset,
}

/// The state machine.
#[derive(Debug)]
pub struct Appliance {
    window: Duration,
    booted: bool,
    paired: bool,
    window_closes: Option<Mono>,
    peers: u32,
    update: Option<u8>,
    error: Option<String>,
    reset_armed: bool,
    actions: VecDeque<Action>,
}

impl Appliance {
    /// `window` is how long a pairing window stays open.
    pub fn new(window: Duration) -> Appliance {
        Appliance {
            window,
            booted: false,
            paired: false,
            window_closes: None,
            peers: 0,
            update: None,
            error: None,
            reset_armed: false,
            actions: VecDeque::new(),
        }
    }

    pub fn handle_input(&mut self, input: Input, now: Mono) {
        self.handle_timeout(now);
        match input {
            Input::BootFinished { paired } => {
                self.booted = true;
                self.paired = paired;
            }
            Input::Gesture(g) => match g {
                Gesture::PairPress => self.open_window(now),
                Gesture::ResetArmed => self.reset_armed = true,
                Gesture::ResetCancelled => self.reset_armed = false,
                Gesture::ResetRequested => {
                    // Only an armed reset may fire; a stray request is ignored.
                    if std::mem::take(&mut self.reset_armed) {
                        self.actions.push_back(Action::FactoryReset);
                    }
                }
            },
            Input::OpenPairingWindow => self.open_window(now),
            Input::ClosePairingWindow => self.window_closes = None,
            Input::Paired(p) => self.paired = p,
            Input::PeerCount(n) => self.peers = n,
            Input::UpdateProgress { percent } => self.update = Some(percent.min(100)),
            Input::UpdateFinished => self.update = None,
            Input::SetError(m) => self.error = Some(m),
            Input::ClearError => self.error = None,
        }
    }

    /// The pairing window needs a booted device: before that there is no
    /// one to pair with.
    fn open_window(&mut self, now: Mono) {
        if self.booted {
            self.window_closes = Some(now + self.window);
        }
    }

    /// When [`handle_timeout`](Appliance::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Mono> {
        self.window_closes
    }

    /// Advances time; the pairing window closes at exactly its deadline.
    pub fn handle_timeout(&mut self, now: Mono) {
        if self.window_closes.is_some_and(|t| now >= t) {
            self.window_closes = None;
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn state(&self) -> State {
        if self.reset_armed {
            State::FactoryResetArmed
        } else if let Some(percent) = self.update {
            State::Updating { percent }
        } else if let Some(message) = &self.error {
            State::Error {
                message: message.clone(),
            }
        } else if self.window_closes.is_some() {
            State::PairingWindow
        } else if !self.booted {
            State::Booting
        } else if self.peers > 0 {
            State::PeerConnected
        } else if self.paired {
            State::Paired
        } else {
            State::Unpaired
        }
    }

    /// When the pairing window closes, if it is open.
    pub fn pairing_window_closes_at(&self) -> Option<Mono> {
        self.window_closes
    }

    /// The pattern of every LED role.
    pub fn leds(&self) -> BTreeMap<LedRole, LedPattern> {
        let s = self.state();
        LedRole::ALL.iter().map(|&r| (r, s.led(r))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    fn ms(v: u64) -> Mono {
        Mono::from_millis(v)
    }

    fn booted(paired: bool) -> Appliance {
        let mut a = Appliance::new(WINDOW);
        assert_eq!(a.state(), State::Booting);
        a.handle_input(Input::BootFinished { paired }, ms(0));
        a
    }

    #[test]
    fn boot_goes_to_unpaired_or_paired() {
        assert_eq!(booted(false).state(), State::Unpaired);
        assert_eq!(booted(true).state(), State::Paired);
    }

    #[test]
    fn pair_press_opens_window_that_closes_at_exactly_the_deadline() {
        let mut a = booted(false);
        a.handle_input(Input::Gesture(Gesture::PairPress), ms(1000));
        assert_eq!(a.state(), State::PairingWindow);
        assert_eq!(a.poll_timeout(), Some(ms(301_000)));
        a.handle_timeout(ms(300_999));
        assert_eq!(a.state(), State::PairingWindow);
        a.handle_timeout(ms(301_000));
        assert_eq!(a.state(), State::Unpaired);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn second_press_restarts_the_window() {
        let mut a = booted(true);
        a.handle_input(Input::Gesture(Gesture::PairPress), ms(0));
        a.handle_input(Input::Gesture(Gesture::PairPress), ms(100_000));
        assert_eq!(a.poll_timeout(), Some(ms(400_000)));
        a.handle_timeout(ms(300_000));
        assert_eq!(a.state(), State::PairingWindow);
    }

    #[test]
    fn control_opens_and_closes_the_window() {
        let mut a = booted(true);
        a.handle_input(Input::OpenPairingWindow, ms(5));
        assert_eq!(a.state(), State::PairingWindow);
        a.handle_input(Input::ClosePairingWindow, ms(6));
        assert_eq!(a.state(), State::Paired);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn no_window_while_booting() {
        let mut a = Appliance::new(WINDOW);
        a.handle_input(Input::Gesture(Gesture::PairPress), ms(0));
        a.handle_input(Input::OpenPairingWindow, ms(0));
        assert_eq!(a.state(), State::Booting);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn custom_window_length() {
        let mut a = Appliance::new(Duration::from_secs(2));
        a.handle_input(Input::BootFinished { paired: false }, ms(0));
        a.handle_input(Input::OpenPairingWindow, ms(10));
        assert_eq!(a.poll_timeout(), Some(ms(2010)));
    }

    #[test]
    fn input_after_the_deadline_closes_the_window_first() {
        let mut a = booted(false);
        a.handle_input(Input::OpenPairingWindow, ms(0));
        a.handle_input(Input::PeerCount(0), ms(300_000));
        assert_eq!(a.state(), State::Unpaired);
    }

    #[test]
    fn peers_light_the_link_led() {
        let mut a = booted(true);
        assert_eq!(a.leds()[&LedRole::Link], LedPattern::Off);
        a.handle_input(Input::PeerCount(2), ms(1));
        assert_eq!(a.state(), State::PeerConnected);
        assert_eq!(a.leds()[&LedRole::Link], LedPattern::On);
        assert_eq!(a.leds()[&LedRole::Status], LedPattern::On);
        a.handle_input(Input::PeerCount(0), ms(2));
        assert_eq!(a.state(), State::Paired);
        assert_eq!(a.leds()[&LedRole::Link], LedPattern::Off);
    }

    #[test]
    fn reset_armed_then_requested_emits_factory_reset() {
        let mut a = booted(true);
        a.handle_input(Input::Gesture(Gesture::ResetArmed), ms(5000));
        assert_eq!(a.state(), State::FactoryResetArmed);
        assert_eq!(
            a.leds()[&LedRole::Status],
            LedPattern::Blink {
                on_ms: 50,
                off_ms: 50
            }
        );
        assert_eq!(a.poll_action(), None);
        a.handle_input(Input::Gesture(Gesture::ResetRequested), ms(6000));
        assert_eq!(a.poll_action(), Some(Action::FactoryReset));
        assert_eq!(a.poll_action(), None);
        assert_eq!(a.state(), State::Paired);
    }

    #[test]
    fn unarmed_reset_request_is_ignored() {
        let mut a = booted(true);
        a.handle_input(Input::Gesture(Gesture::ResetRequested), ms(0));
        assert_eq!(a.poll_action(), None);
    }

    #[test]
    fn reset_cancelled_returns_to_the_prior_state() {
        for prior in [
            Input::PeerCount(1),
            Input::OpenPairingWindow,
            Input::SetError("disk".into()),
        ] {
            let mut a = booted(true);
            a.handle_input(prior.clone(), ms(0));
            let before = a.state();
            a.handle_input(Input::Gesture(Gesture::ResetArmed), ms(5000));
            assert_eq!(a.state(), State::FactoryResetArmed);
            a.handle_input(Input::Gesture(Gesture::ResetCancelled), ms(30000));
            assert_eq!(a.state(), before, "{prior:?}");
            assert_eq!(a.poll_action(), None);
        }
    }

    #[test]
    fn priorities() {
        let mut a = booted(false);
        a.handle_input(Input::PeerCount(1), ms(0));
        assert_eq!(a.state(), State::PeerConnected);
        a.handle_input(Input::OpenPairingWindow, ms(0));
        assert_eq!(a.state(), State::PairingWindow);
        a.handle_input(Input::SetError("no network".into()), ms(0));
        assert_eq!(
            a.state(),
            State::Error {
                message: "no network".into()
            }
        );
        a.handle_input(Input::UpdateProgress { percent: 42 }, ms(0));
        assert_eq!(a.state(), State::Updating { percent: 42 });
        a.handle_input(Input::Gesture(Gesture::ResetArmed), ms(0));
        assert_eq!(a.state(), State::FactoryResetArmed);
        a.handle_input(Input::Gesture(Gesture::ResetCancelled), ms(0));
        a.handle_input(Input::UpdateFinished, ms(0));
        assert_eq!(a.state().name(), StateName::Error);
        a.handle_input(Input::ClearError, ms(0));
        assert_eq!(a.state(), State::PairingWindow);
        a.handle_input(Input::ClosePairingWindow, ms(0));
        assert_eq!(a.state(), State::PeerConnected);
    }

    #[test]
    fn update_progress_is_clamped() {
        let mut a = booted(true);
        a.handle_input(Input::UpdateProgress { percent: 250 }, ms(0));
        assert_eq!(a.state(), State::Updating { percent: 100 });
    }

    #[test]
    fn paired_input_changes_idle_state() {
        let mut a = booted(false);
        a.handle_input(Input::Paired(true), ms(0));
        assert_eq!(a.state(), State::Paired);
    }

    #[test]
    fn led_table() {
        use LedPattern as P;
        let status = |s: State| s.led(LedRole::Status);
        assert_eq!(
            status(State::Booting),
            P::sequence(&[(true, 100), (false, 900)])
        );
        assert_eq!(
            status(State::Unpaired),
            P::Blink {
                on_ms: 500,
                off_ms: 500
            }
        );
        assert_eq!(
            status(State::PairingWindow),
            P::sequence(&[(true, 100), (false, 100), (true, 100), (false, 700)])
        );
        assert_eq!(status(State::Paired), P::On);
        assert_eq!(status(State::PeerConnected), P::On);
        assert_eq!(
            status(State::Updating { percent: 1 }),
            P::Blink {
                on_ms: 125,
                off_ms: 125
            }
        );
        assert!(
            matches!(status(State::Error { message: String::new() }), P::Sequence { ref steps } if steps.len() == 6)
        );
        assert_eq!(
            status(State::FactoryResetArmed),
            P::Blink {
                on_ms: 50,
                off_ms: 50
            }
        );
        // Every state's status pattern is distinct, so the LED tells them apart.
        let all = [
            State::Booting,
            State::Unpaired,
            State::PairingWindow,
            State::Paired,
            State::Updating { percent: 0 },
            State::Error {
                message: String::new(),
            },
            State::FactoryResetArmed,
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.led(LedRole::Link), P::Off);
            for b in &all[i + 1..] {
                assert_ne!(status(a.clone()), status(b.clone()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn state_names_serialize_snake_case() {
        assert_eq!(
            serde_json::to_string(&StateName::PairingWindow).unwrap(),
            "\"pairing_window\""
        );
        assert_eq!(
            serde_json::to_string(&StateName::FactoryResetArmed).unwrap(),
            format!("\"{}\"", StateName::FactoryResetArmed.as_str())
        );
    }
}
