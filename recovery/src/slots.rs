//! The A/B slots as the running system sees them: which slot is booted,
//! the status report, `mark-good` and `rollback`, and the last install
//! error. Each change is one [`EnvStore::write`]; rollback refuses a
//! non-booted slot with no tries left, because that is a slot an install
//! marked bad (maybe half written) or one that failed to boot.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::boot::{BootState, Slot};
use crate::bootenv::{EnvStore, EnvStoreError};
use crate::config::Config;

/// Kernel command line argument naming the booted slot.
pub const CMDLINE_ARG: &str = "intrust.slot=";

/// File in the state directory holding the last install error.
pub const LAST_ERROR_FILE: &str = "last-install-error";

/// Why a slot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The booted slot is not known.
    #[error("cannot tell which slot is booted: {0}")]
    BootedUnknown(String),
    /// The environment could not be read or written.
    #[error(transparent)]
    Env(#[from] EnvStoreError),
    /// Rollback to a slot that must not be booted.
    #[error("refusing to roll back to slot {0}: it has no tries left (an install marked it bad or it failed to boot); install a bundle instead")]
    RollbackToBadSlot(Slot),
    /// The state directory could not be written.
    #[error("writing {path}: {source}")]
    State {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The booted slot: the config's `booted_slot`, else `intrust.slot=` on
/// the kernel command line file.
pub fn booted_slot(config: &Config) -> Result<Slot, SlotError> {
    if let Some(slot) = config.booted_slot {
        return Ok(slot);
    }
    let text = std::fs::read_to_string(&config.cmdline).map_err(|e| {
        SlotError::BootedUnknown(format!("reading {}: {e}", config.cmdline.display()))
    })?;
    parse_cmdline(&text).ok_or_else(|| {
        SlotError::BootedUnknown(format!(
            "no {CMDLINE_ARG}A or {CMDLINE_ARG}B in {} (the boot script must pass it, or set booted_slot in the config)",
            config.cmdline.display()
        ))
    })
}

/// The slot named by the last `intrust.slot=` argument, if it is A or B.
pub fn parse_cmdline(text: &str) -> Option<Slot> {
    let value = text
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix(CMDLINE_ARG))
        .next_back()?;
    match value {
        "A" => Some(Slot::A),
        "B" => Some(Slot::B),
        _ => None,
    }
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The booted slot.
    pub booted: Slot,
    /// Slots in boot order.
    pub order: Vec<Slot>,
    /// The slot the bootloader boots next when it differs from the booted
    /// one (an activated update waiting for a reboot, or a rollback).
    pub pending: Option<Slot>,
    /// Tries left per slot.
    pub tries: Tries,
    /// The last failed install's error, if one is recorded.
    pub last_error: Option<String>,
}

/// Tries left per slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tries {
    /// Slot A.
    #[serde(rename = "A")]
    pub a: u8,
    /// Slot B.
    #[serde(rename = "B")]
    pub b: u8,
}

impl Serialize for Slot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Reads the status.
pub fn status(config: &Config, booted: Slot, env: &mut dyn EnvStore) -> Result<Status, SlotError> {
    let state = BootState::from_env(&env.read()?);
    let next = next_boot(&state);
    Ok(Status {
        booted,
        order: state.order().to_vec(),
        pending: (next != booted).then_some(next),
        tries: Tries {
            a: state.tries_left(Slot::A),
            b: state.tries_left(Slot::B),
        },
        last_error: last_error(config),
    })
}

/// The booted slot works: give it its tries back (one env write).
pub fn mark_good(booted: Slot, env: &mut dyn EnvStore) -> Result<(), SlotError> {
    let mut vars = env.read()?;
    let mut state = BootState::from_env(&vars);
    state.mark_good(booted);
    state.apply_to(&mut vars);
    env.write(&vars)?;
    Ok(())
}

/// Switches to the slot other than the one that boots next (one env write)
/// and returns it: from a running update back to the old slot, or, while an
/// update waits for its reboot, back to the booted slot (cancelling it).
/// Refused when that slot is not the booted one and has no tries left.
pub fn rollback(booted: Slot, env: &mut dyn EnvStore) -> Result<Slot, SlotError> {
    let mut vars = env.read()?;
    let mut state = BootState::from_env(&vars);
    let target = next_boot(&state).other();
    if target != booted && state.tries_left(target) == 0 {
        return Err(SlotError::RollbackToBadSlot(target));
    }
    state.activate(target);
    state.apply_to(&mut vars);
    env.write(&vars)?;
    Ok(target)
}

/// The slot the bootloader picks next: the first in the order with tries
/// (the primary when none has tries, as after the reset-and-retry).
fn next_boot(state: &BootState) -> Slot {
    state
        .order()
        .iter()
        .copied()
        .find(|s| state.tries_left(*s) > 0)
        .unwrap_or(state.primary())
}

/// The recorded last install error (none without a state directory).
pub fn last_error(config: &Config) -> Option<String> {
    let dir = config.state_dir.as_ref()?;
    std::fs::read_to_string(dir.join(LAST_ERROR_FILE))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// Records `error` as the last install error, or clears it (`None`).
/// Written atomically: temp file, fsync, rename, fsync directory.
pub fn record_last_error(config: &Config, error: Option<&str>) -> Result<(), SlotError> {
    let Some(dir) = &config.state_dir else {
        return Ok(());
    };
    let path = dir.join(LAST_ERROR_FILE);
    let fail = |path: &Path, source| SlotError::State {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    match error {
        None => match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(fail(&path, e)),
        },
        Some(text) => {
            let tmp: PathBuf = dir.join(format!("{LAST_ERROR_FILE}.tmp"));
            let mut file = std::fs::File::create(&tmp).map_err(|e| fail(&tmp, e))?;
            file.write_all(format!("{text}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| fail(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| fail(&path, e))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Env;

    struct MemEnv(Env, usize);

    impl EnvStore for MemEnv {
        fn read(&mut self) -> Result<Env, EnvStoreError> {
            Ok(self.0.clone())
        }
        fn write(&mut self, env: &Env) -> Result<(), EnvStoreError> {
            self.0 = env.clone();
            self.1 += 1;
            Ok(())
        }
    }

    #[test]
    fn cmdline_names_the_slot() {
        assert_eq!(
            parse_cmdline("root=/dev/x intrust.slot=B quiet\n"),
            Some(Slot::B)
        );
        assert_eq!(
            parse_cmdline("intrust.slot=A intrust.slot=B"),
            Some(Slot::B)
        );
        assert_eq!(parse_cmdline("intrust.slot=C"), None);
        assert_eq!(parse_cmdline("rauc.slot=A"), None);
    }

    #[test]
    fn rollback_refuses_a_bad_slot_and_mark_good_restores_tries() {
        let mut env = MemEnv(Env::new(), 0);
        let mut state = BootState::default();
        state.mark_bad(Slot::B);
        state.apply_to(&mut env.0);
        assert!(matches!(
            rollback(Slot::A, &mut env),
            Err(SlotError::RollbackToBadSlot(Slot::B))
        ));
        assert_eq!(env.1, 0, "a refused rollback writes nothing");
        let mut state = BootState::from_env(&env.0);
        state.activate(Slot::B);
        state.decide();
        state.apply_to(&mut env.0);
        mark_good(Slot::B, &mut env).unwrap();
        assert_eq!(BootState::from_env(&env.0).tries_left(Slot::B), 3);
        assert_eq!(rollback(Slot::B, &mut env).unwrap(), Slot::A);
        assert_eq!(BootState::from_env(&env.0).order(), &[Slot::A, Slot::B]);
        // An update waiting for its reboot is cancelled back to the booted slot,
        // even when that slot has used its tries.
        let mut state = BootState::from_env(&env.0);
        state.mark_bad(Slot::A);
        state.activate(Slot::B);
        state.apply_to(&mut env.0);
        assert_eq!(rollback(Slot::A, &mut env).unwrap(), Slot::A);
        assert_eq!(BootState::from_env(&env.0).order(), &[Slot::A, Slot::B]);
    }
}
