//! The agent's side of A/B updates (sans-IO): which install is running,
//! how the last one ended, which slot waits for a reboot, and mark-good.
//!
//! Invariants: at most one install runs at a time (a second is refused,
//! never queued); a result is accepted only for the running install;
//! mark-good is asked for at most once per agent start, and only with a
//! real recovery. The daemon carries out the work on blocking threads and
//! feeds the results back here; this module returns the appliance inputs
//! they cause (LED "updating" while running, the error state on failure).

use crate::appliance::Input;
use crate::control::{MarkGoodState, SlotsInfo, UpdateResult, UpdateStatus};
use crate::recovery::{MarkGood, RecoveryError, SlotsStatus, UpdateOutcome, UpdateSource};
use intrust_recovery::boot::Slot;

/// Update bookkeeping; see the module docs.
#[derive(Debug)]
pub struct Updates {
    wired: bool,
    /// The running install: its number and source.
    running: Option<(u64, String)>,
    attempts: u64,
    last: Option<UpdateResult>,
    pending: Option<Slot>,
    mark_good: MarkGoodState,
}

impl Updates {
    /// `wired`: whether a real recovery is there (else nothing is shown
    /// and installs are refused).
    pub fn new(wired: bool) -> Updates {
        Updates {
            wired,
            running: None,
            attempts: 0,
            last: None,
            pending: None,
            mark_good: MarkGoodState::Waiting,
        }
    }

    /// Starts install number N (returned) from `source`, with the input
    /// that shows it. Refused while one runs, or without recovery.
    pub fn start(&mut self, source: &UpdateSource) -> Result<(u64, Input), String> {
        if !self.wired {
            return Err(crate::recovery::NOT_WIRED.into());
        }
        if let Some((n, src)) = &self.running {
            return Err(format!(
                "an update is already running (#{n} from {src}); wait for it to finish"
            ));
        }
        self.attempts += 1;
        self.running = Some((self.attempts, source.to_string()));
        Ok((self.attempts, Input::UpdateProgress { percent: 0 }))
    }

    /// Progress of install `attempt`; `None` if that is not the running one.
    pub fn progress(&self, attempt: u64, percent: u8) -> Option<Input> {
        (self.running.as_ref().map(|r| r.0) == Some(attempt))
            .then_some(Input::UpdateProgress { percent })
    }

    /// Install `attempt` ended. Returns the inputs for the appliance: the
    /// update is over, and the error state is set (failure) or cleared
    /// (success: the owner's last action worked). Empty for a stale result.
    pub fn finish(
        &mut self,
        attempt: u64,
        result: Result<UpdateOutcome, RecoveryError>,
    ) -> Vec<Input> {
        let Some((n, source)) = self.running.take_if(|r| r.0 == attempt) else {
            return Vec::new();
        };
        let (last, error) = match result {
            Ok(done) => {
                self.pending = Some(done.slot);
                (
                    UpdateResult {
                        attempt: n,
                        source,
                        ok: true,
                        version: Some(done.version),
                        slot: Some(done.slot.name().into()),
                        error: None,
                    },
                    Input::ClearError,
                )
            }
            Err(e) => (
                UpdateResult {
                    attempt: n,
                    source,
                    ok: false,
                    version: None,
                    slot: None,
                    error: Some(e.0.clone()),
                },
                Input::SetError(format!("update failed: {e}")),
            ),
        };
        self.last = Some(last);
        vec![Input::UpdateFinished, error]
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Whether to run mark-good now: true exactly once, and only with a
    /// real recovery. Call when the agent is up and healthy.
    pub fn take_mark_good(&mut self) -> bool {
        if !self.wired || self.mark_good != MarkGoodState::Waiting {
            return false;
        }
        self.mark_good = MarkGoodState::Running;
        true
    }

    /// Mark-good ended.
    pub fn mark_good_finished(&mut self, result: Result<MarkGood, RecoveryError>) {
        self.mark_good = match result {
            Ok(MarkGood::Marked(s)) => MarkGoodState::Marked {
                slot: s.name().into(),
            },
            Ok(MarkGood::AlreadyGood(s)) => MarkGoodState::AlreadyGood {
                slot: s.name().into(),
            },
            Err(e) => MarkGoodState::Failed { error: e.0 },
        };
    }

    /// Learns the pending slot from recovery (e.g. an update installed
    /// before the agent restarted).
    pub fn slots_read(&mut self, slots: &SlotsStatus) {
        if !self.is_running() {
            self.pending = slots.pending;
        }
    }

    /// What status shows; `None` without recovery.
    pub fn status(&self, slots: Option<&SlotsStatus>) -> Option<UpdateStatus> {
        self.wired.then(|| UpdateStatus {
            running: self.running.is_some(),
            attempts: self.attempts,
            last: self.last.clone(),
            pending_slot: self.pending.map(|s| s.name().to_owned()),
            mark_good: self.mark_good.clone(),
            slots: slots.map(SlotsInfo::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appliance::{Appliance, State, StateName};
    use intrust_board::Mono;
    use std::time::Duration;

    fn src() -> UpdateSource {
        UpdateSource::File("/u.bundle".into())
    }

    fn ok() -> Result<UpdateOutcome, RecoveryError> {
        Ok(UpdateOutcome {
            version: "2.0".into(),
            slot: Slot::B,
            bytes: 10,
        })
    }

    fn booted_app() -> Appliance {
        let mut a = Appliance::new(Duration::from_secs(300));
        a.handle_input(Input::BootFinished { paired: true }, Mono::from_millis(0));
        a
    }

    fn feed(a: &mut Appliance, inputs: impl IntoIterator<Item = Input>) {
        for i in inputs {
            a.handle_input(i, Mono::from_millis(1));
        }
    }

    #[test]
    fn progress_drives_updating_and_success_leaves_a_pending_slot() {
        let mut u = Updates::new(true);
        let mut app = booted_app();
        let (n, input) = u.start(&src()).unwrap();
        feed(&mut app, [input]);
        assert_eq!(app.state(), State::Updating { percent: 0 });
        feed(&mut app, u.progress(n, 42));
        assert_eq!(app.state(), State::Updating { percent: 42 });
        assert_eq!(u.progress(n + 1, 99), None, "not the running install");
        let s = u.status(None).unwrap();
        assert!(s.running);
        assert_eq!(s.attempts, 1);
        feed(&mut app, u.finish(n, ok()));
        assert_eq!(app.state(), State::Paired);
        let s = u.status(None).unwrap();
        assert!(!s.running);
        assert_eq!(s.pending_slot.as_deref(), Some("B"));
        let last = s.last.unwrap();
        assert!(last.ok);
        assert_eq!(
            (last.attempt, last.slot.as_deref(), last.source.as_str()),
            (1, Some("B"), "/u.bundle")
        );
    }

    #[test]
    fn failure_shows_the_error_and_the_next_success_clears_it() {
        let mut u = Updates::new(true);
        let mut app = booted_app();
        let (n, input) = u.start(&src()).unwrap();
        feed(&mut app, [input]);
        feed(
            &mut app,
            u.finish(n, Err(RecoveryError("SHA-256 mismatch".into()))),
        );
        assert_eq!(
            app.state(),
            State::Error {
                message: "update failed: SHA-256 mismatch".into()
            }
        );
        let last = u.status(None).unwrap().last.unwrap();
        assert!(!last.ok);
        assert_eq!(last.error.as_deref(), Some("SHA-256 mismatch"));
        let (n, input) = u.start(&src()).unwrap();
        feed(&mut app, [input]);
        assert_eq!(app.state().name(), StateName::Updating);
        feed(&mut app, u.finish(n, ok()));
        assert_eq!(app.state(), State::Paired);
    }

    #[test]
    fn one_install_at_a_time_and_stale_results_are_ignored() {
        let mut u = Updates::new(true);
        let (n, _) = u.start(&src()).unwrap();
        let err = u.start(&src()).unwrap_err();
        assert!(err.contains("already running"), "{err}");
        assert!(u.finish(n + 7, ok()).is_empty());
        assert!(u.is_running());
        assert_eq!(u.finish(n, ok()).len(), 2);
        assert!(u.finish(n, ok()).is_empty(), "a result counts once");
        assert!(u.start(&src()).is_ok());
    }

    #[test]
    fn mark_good_runs_once_and_only_with_recovery() {
        let mut u = Updates::new(true);
        assert_eq!(u.status(None).unwrap().mark_good, MarkGoodState::Waiting);
        assert!(u.take_mark_good());
        assert!(!u.take_mark_good());
        u.mark_good_finished(Ok(MarkGood::AlreadyGood(Slot::A)));
        assert!(!u.take_mark_good());
        assert_eq!(
            u.status(None).unwrap().mark_good,
            MarkGoodState::AlreadyGood { slot: "A".into() }
        );
        let mut n = Updates::new(false);
        assert!(!n.take_mark_good());
        assert_eq!(n.status(None), None);
        assert!(n.start(&src()).unwrap_err().contains("recovery_config"));
    }
}
