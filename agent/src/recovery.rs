//! The agent's view of recovery: factory reset, installing an A/B update,
//! mark-good and the slot status, behind the small [`Recovery`] trait.
//!
//! [`AbRecovery`] is the real one, built from the recovery config that the
//! agent config's `recovery_config` names; without it the daemon uses
//! [`NotWired`], which only warns. Every method may block on disk IO: the
//! daemon calls them on blocking threads, never on its event loop.
//! [`AbRecovery`] runs one operation at a time, so a mark-good, an install
//! and a reset never interleave their bootloader-environment writes.

use intrust_recovery::boot::{BootState, Slot};
use intrust_recovery::config::Config as RecoveryConfig;
use intrust_recovery::factory_reset::{self, FactoryResetError};
use intrust_recovery::{bootenv, fetch, install, slots};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

pub use intrust_recovery::slots::Status as SlotsStatus;

/// A recovery operation that failed; the message says what and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecoveryError(pub String);

impl RecoveryError {
    fn msg(e: impl std::fmt::Display) -> RecoveryError {
        RecoveryError(e.to_string())
    }
}

/// Where an update bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateSource {
    /// A bundle file on this device (an absolute path).
    File(PathBuf),
    /// An `https://` URL, fetched by recovery (trusting only its
    /// `update_ca`).
    Url(String),
}

impl UpdateSource {
    /// Parses what a control request names: an `https://` URL or an
    /// absolute path. Other URLs (`http://`, …) are refused here, before
    /// anything starts.
    pub fn parse(text: &str) -> Result<UpdateSource, String> {
        if fetch::looks_like_url(text) {
            fetch::Url::parse(text).map_err(|e| e.to_string())?;
            return Ok(UpdateSource::Url(text.to_owned()));
        }
        let path = Path::new(text);
        if !path.is_absolute() {
            return Err(format!(
                "update source {text:?} must be an absolute path (intrustctl makes it one)"
            ));
        }
        Ok(UpdateSource::File(path.to_owned()))
    }
}

impl std::fmt::Display for UpdateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateSource::File(p) => write!(f, "{}", p.display()),
            UpdateSource::Url(u) => f.write_str(u),
        }
    }
}

/// An installed update, waiting for a reboot into `slot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The bundle's version.
    pub version: String,
    /// The slot written and activated: the next boot starts it.
    pub slot: Slot,
    /// Payload bytes written.
    pub bytes: u64,
}

/// What mark-good did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkGood {
    /// The booted slot got its tries back (one environment write).
    Marked(Slot),
    /// The booted slot already had all its tries: nothing was written.
    AlreadyGood(Slot),
}

/// What the agent needs from recovery. Every method may block.
pub trait Recovery: Send + Sync {
    /// Whether this is a real recovery. The daemon only calls
    /// [`mark_good`](Recovery::mark_good) on one that is.
    fn is_wired(&self) -> bool {
        true
    }

    /// Wipes the owner's data (the RESET gesture).
    fn factory_reset(&self) -> Result<(), RecoveryError>;

    /// Verifies and installs the bundle from `source` into the slot that is
    /// not booted and activates it; `progress` gets whole percents.
    fn apply_update(
        &self,
        source: &UpdateSource,
        progress: &mut dyn FnMut(u8),
    ) -> Result<UpdateOutcome, RecoveryError>;

    /// The booted slot works: give it its tries back, so the bootloader
    /// does not fall back to the other slot.
    fn mark_good(&self) -> Result<MarkGood, RecoveryError>;

    /// The slots: booted, boot order, pending, tries, last install error.
    fn status(&self) -> Result<SlotsStatus, RecoveryError>;
}

/// The real recovery, on the devices and bootloader environment of a
/// recovery config.
#[derive(Debug)]
pub struct AbRecovery {
    config: RecoveryConfig,
    /// One operation at a time (each reads, changes and writes the env).
    busy: Mutex<()>,
}

impl AbRecovery {
    /// Loads the recovery config; errors name its file and line.
    pub fn load(path: &Path) -> Result<AbRecovery, intrust_recovery::config::ConfigError> {
        RecoveryConfig::load(path).map(AbRecovery::new)
    }

    pub fn new(config: RecoveryConfig) -> AbRecovery {
        AbRecovery {
            config,
            busy: Mutex::new(()),
        }
    }

    pub fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finishes a factory reset a power cut interrupted; call at start,
    /// before anything reads the data area. `Ok(false)`: there was none.
    ///
    /// A data area that is missing or not a directory is not an error here
    /// (nothing can have been half wiped in it; a reset will report it), so
    /// the agent still starts and can be updated. An IO error is: the data
    /// may be half wiped, and the agent must not run on it.
    pub fn finish_interrupted_reset(&self) -> Result<bool, RecoveryError> {
        let _busy = self.lock();
        match factory_reset::finish_interrupted(&self.config) {
            Ok(None) => Ok(false),
            Ok(Some(report)) => {
                tracing::warn!(
                    removed = report.removed.len(),
                    kept = ?report.kept,
                    "finished a factory reset that was cut short"
                );
                Ok(true)
            }
            Err(
                e @ (FactoryResetError::DataMissing(_)
                | FactoryResetError::NotADirectory(_)
                | FactoryResetError::RootDirectory(_)),
            ) => {
                tracing::warn!(error = %e, "data area not usable; a factory reset will fail");
                Ok(false)
            }
            Err(e) => Err(RecoveryError(format!(
                "cannot finish a factory reset that was cut short: {e}"
            ))),
        }
    }
}

impl Recovery for AbRecovery {
    fn factory_reset(&self) -> Result<(), RecoveryError> {
        let _busy = self.lock();
        let report = factory_reset::factory_reset(&self.config).map_err(RecoveryError::msg)?;
        tracing::warn!(
            data = %self.config.data.display(),
            removed = report.removed.len(),
            kept = ?report.kept,
            finished_interrupted = report.finished_interrupted,
            "factory reset: data area wiped"
        );
        Ok(())
    }

    fn apply_update(
        &self,
        source: &UpdateSource,
        progress: &mut dyn FnMut(u8),
    ) -> Result<UpdateOutcome, RecoveryError> {
        let _busy = self.lock();
        let booted = slots::booted_slot(&self.config).map_err(RecoveryError::msg)?;
        let mut env = bootenv::open(&self.config.bootloader).map_err(RecoveryError::msg)?;
        let input: Box<dyn std::io::Read> = match source {
            UpdateSource::File(path) => {
                Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(
                    |e| RecoveryError(format!("cannot open bundle {}: {e}", path.display())),
                )?))
            }
            UpdateSource::Url(url) => Box::new(
                fetch::open(url, &self.config)
                    .map_err(|e| RecoveryError(format!("cannot fetch {url}: {e}")))?,
            ),
        };
        let mut last = None;
        let result = install::install(&self.config, input, booted, env.as_mut(), &mut |p| {
            let percent = p.percent();
            if last != Some(percent) {
                last = Some(percent);
                progress(percent);
            }
        });
        // Recorded like `intrust-recovery install` does, so its status shows
        // it too; recording is best effort, the install's result is what matters.
        let record = slots::record_last_error(
            &self.config,
            result.as_ref().err().map(|e| e.to_string()).as_deref(),
        );
        if let Err(e) = record {
            tracing::warn!(error = %e, "cannot record the install result");
        }
        let done = result.map_err(RecoveryError::msg)?;
        Ok(UpdateOutcome {
            version: done.version,
            slot: done.slot,
            bytes: done.bytes,
        })
    }

    fn mark_good(&self) -> Result<MarkGood, RecoveryError> {
        let _busy = self.lock();
        let booted = slots::booted_slot(&self.config).map_err(RecoveryError::msg)?;
        let mut env = bootenv::open(&self.config.bootloader).map_err(RecoveryError::msg)?;
        let vars = env.read().map_err(RecoveryError::msg)?;
        let mut state = BootState::from_env(&vars);
        let before = state.clone();
        state.mark_good(booted);
        // No write when nothing changes: the env lives on flash.
        if state == before {
            return Ok(MarkGood::AlreadyGood(booted));
        }
        slots::mark_good(booted, env.as_mut()).map_err(RecoveryError::msg)?;
        Ok(MarkGood::Marked(booted))
    }

    fn status(&self) -> Result<SlotsStatus, RecoveryError> {
        let _busy = self.lock();
        let booted = slots::booted_slot(&self.config).map_err(RecoveryError::msg)?;
        let mut env = bootenv::open(&self.config.bootloader).map_err(RecoveryError::msg)?;
        slots::status(&self.config, booted, env.as_mut()).map_err(RecoveryError::msg)
    }
}

/// No recovery config: a factory reset logs a loud warning and succeeds (so
/// the gesture path can be exercised), updates are refused.
#[derive(Debug, Default)]
pub struct NotWired;

/// Why updates are refused without a recovery config.
pub const NOT_WIRED: &str =
    "updates need recovery: set recovery_config in the agent config (intrustd.toml)";

impl Recovery for NotWired {
    fn is_wired(&self) -> bool {
        false
    }

    fn factory_reset(&self) -> Result<(), RecoveryError> {
        tracing::warn!("FACTORY RESET REQUESTED but not wired to recovery (no recovery_config): nothing was erased");
        Ok(())
    }

    fn apply_update(
        &self,
        _: &UpdateSource,
        _: &mut dyn FnMut(u8),
    ) -> Result<UpdateOutcome, RecoveryError> {
        Err(RecoveryError(NOT_WIRED.into()))
    }

    fn mark_good(&self) -> Result<MarkGood, RecoveryError> {
        Err(RecoveryError(NOT_WIRED.into()))
    }

    fn status(&self) -> Result<SlotsStatus, RecoveryError> {
        Err(RecoveryError(NOT_WIRED.into()))
    }
}

/// Records calls and plays a scripted recovery; for tests and simulated
/// rigs. Booted slot A; an update reports 0, 42 and 100 percent (it can be
/// held after 42 until [`release_updates`](Recorded::release_updates)) and
/// then succeeds into slot B, or fails with the message set by
/// [`fail_updates`](Recorded::fail_updates).
#[derive(Debug, Default)]
pub struct Recorded {
    calls: Mutex<Calls>,
    released: Condvar,
}

#[derive(Debug, Default)]
struct Calls {
    factory_resets: u32,
    updates: Vec<UpdateSource>,
    mark_goods: u32,
    fail_updates: Option<String>,
    hold_updates: bool,
    pending: Option<Slot>,
}

impl Recorded {
    fn calls_mut(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Factory resets so far.
    pub fn calls(&self) -> u32 {
        self.calls_mut().factory_resets
    }

    /// Sources of the updates started so far.
    pub fn updates(&self) -> Vec<UpdateSource> {
        self.calls_mut().updates.clone()
    }

    /// Mark-goods so far.
    pub fn mark_goods(&self) -> u32 {
        self.calls_mut().mark_goods
    }

    /// Later updates fail with `message` (`None`: they succeed).
    pub fn fail_updates(&self, message: Option<&str>) {
        self.calls_mut().fail_updates = message.map(str::to_owned);
    }

    /// Later updates stop at 42 % until released.
    pub fn hold_updates(&self) {
        self.calls_mut().hold_updates = true;
    }

    /// Lets held updates finish.
    pub fn release_updates(&self) {
        self.calls_mut().hold_updates = false;
        self.released.notify_all();
    }
}

impl Recovery for Recorded {
    fn factory_reset(&self) -> Result<(), RecoveryError> {
        self.calls_mut().factory_resets += 1;
        Ok(())
    }

    fn apply_update(
        &self,
        source: &UpdateSource,
        progress: &mut dyn FnMut(u8),
    ) -> Result<UpdateOutcome, RecoveryError> {
        self.calls_mut().updates.push(source.clone());
        progress(0);
        progress(42);
        let mut calls = self.calls_mut();
        while calls.hold_updates {
            calls = self.released.wait(calls).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(message) = &calls.fail_updates {
            return Err(RecoveryError(message.clone()));
        }
        calls.pending = Some(Slot::B);
        drop(calls);
        progress(100);
        Ok(UpdateOutcome {
            version: "2.0".into(),
            slot: Slot::B,
            bytes: 1000,
        })
    }

    fn mark_good(&self) -> Result<MarkGood, RecoveryError> {
        self.calls_mut().mark_goods += 1;
        Ok(MarkGood::Marked(Slot::A))
    }

    fn status(&self) -> Result<SlotsStatus, RecoveryError> {
        let pending = self.calls_mut().pending;
        Ok(SlotsStatus {
            booted: Slot::A,
            order: match pending {
                Some(_) => vec![Slot::B, Slot::A],
                None => vec![Slot::A, Slot::B],
            },
            pending,
            tries: slots::Tries { a: 3, b: 3 },
            last_error: None,
        })
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
        assert!(!NotWired.is_wired());
        let boxed: Box<dyn Recovery> = Box::new(Recorded::default());
        assert!(boxed.factory_reset().is_ok());
        assert!(boxed.is_wired());
    }

    #[test]
    fn not_wired_refuses_updates_and_says_how_to_wire_it() {
        let src = UpdateSource::File("/b".into());
        let err = NotWired.apply_update(&src, &mut |_| {}).unwrap_err();
        assert!(err.0.contains("recovery_config"), "{err}");
        assert!(NotWired.status().is_err());
    }

    #[test]
    fn sources_are_absolute_paths_or_https_urls() {
        assert_eq!(
            UpdateSource::parse("/tmp/u.bundle").unwrap(),
            UpdateSource::File("/tmp/u.bundle".into())
        );
        assert_eq!(
            UpdateSource::parse("https://updates.example.com/u.bundle").unwrap(),
            UpdateSource::Url("https://updates.example.com/u.bundle".into())
        );
        let err = UpdateSource::parse("http://example.com/u.bundle").unwrap_err();
        assert!(err.contains("http"), "{err}");
        let err = UpdateSource::parse("u.bundle").unwrap_err();
        assert!(err.contains("absolute path"), "{err}");
    }

    #[test]
    fn recorded_update_reports_progress_and_can_fail() {
        let r = Recorded::default();
        let src = UpdateSource::File("/b".into());
        let mut seen = Vec::new();
        let done = r.apply_update(&src, &mut |p| seen.push(p)).unwrap();
        assert_eq!(seen, [0, 42, 100]);
        assert_eq!(done.slot, Slot::B);
        assert_eq!(r.status().unwrap().pending, Some(Slot::B));
        r.fail_updates(Some("bad signature"));
        let err = r.apply_update(&src, &mut |_| {}).unwrap_err();
        assert_eq!(err.0, "bad signature");
        assert_eq!(r.updates().len(), 2);
    }
}
