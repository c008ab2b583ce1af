//! The agent's view of recovery: the one thing it asks of it today is a
//! factory reset. `intrust-recovery` (A/B update issue) will implement
//! [`Recovery`]; until then the daemon uses [`NotWired`], which only warns.

use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
#[error("factory reset failed: {0}")]
pub struct RecoveryError(pub String);

/// What the agent needs from recovery. Called off the async runtime (it may
/// block on disk IO).
pub trait Recovery: Send + Sync {
    fn factory_reset(&self) -> Result<(), RecoveryError>;
}

/// Factory reset is not wired to recovery yet: logs a loud warning and
/// succeeds, so the rest of the gesture path can be exercised.
#[derive(Debug, Default)]
pub struct NotWired;

impl Recovery for NotWired {
    fn factory_reset(&self) -> Result<(), RecoveryError> {
        tracing::warn!("FACTORY RESET REQUESTED but not wired to recovery yet: nothing was erased");
        Ok(())
    }
}

/// Records calls; for tests and simulated rigs.
#[derive(Debug, Default)]
pub struct Recorded {
    calls: Mutex<u32>,
}

impl Recorded {
    pub fn calls(&self) -> u32 {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Recovery for Recorded {
    fn factory_reset(&self) -> Result<(), RecoveryError> {
        *self.calls.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_counts_and_not_wired_succeeds() {
        let r = Recorded::default();
        r.factory_reset().unwrap();
        r.factory_reset().unwrap();
        assert_eq!(r.calls(), 2);
        assert!(NotWired.factory_reset().is_ok());
        let boxed: Box<dyn Recovery> = Box::new(Recorded::default());
        assert!(boxed.factory_reset().is_ok());
    }
}
