//! The device's P-256 identity key, which proves its name to flock.
//!
//! Invariants: the key is generated once (first start) and kept as PKCS#8
//! DER in the state directory, written atomically; a file that does not
//! parse is an error naming it and is never replaced (a new key would lose
//! the name at flock, which is bound to the first key).
//!
//! Hook for factory provisioning: devices will get their identity at the
//! factory (`intrust-factory`); [`load_or_create`] is the one place that
//! picks the key, so a provisioned key file takes precedence there when
//! that lands.

use flock_proto::identity::{DeviceKey, IdentityError};

use crate::state_dir::{StateDir, StateError};

/// The key file in the state directory (PKCS#8 DER, mode 0600).
pub const KEY_FILE: &str = "flock-key.pk8";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot generate a device key: {0}")]
    Generate(IdentityError),
}

/// The device key, generated and stored on first start.
pub fn load_or_create(state: &StateDir) -> Result<DeviceKey, KeyError> {
    let path = state.file(KEY_FILE);
    if let Some(der) = state.read(KEY_FILE)? {
        return DeviceKey::from_pkcs8(&der).map_err(|e| {
            KeyError::State(StateError::Corrupt {
                path,
                reason: e.to_string(),
            })
        });
    }
    let key = DeviceKey::generate().map_err(KeyError::Generate)?;
    let der = key.to_pkcs8().map_err(KeyError::Generate)?;
    state.write(KEY_FILE, &der)?;
    tracing::info!(file = %path.display(), "generated the device's flock identity key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::open(t.path()).unwrap();
        let a = load_or_create(&sd).unwrap();
        let b = load_or_create(&sd).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sd.file(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_key_is_an_error_naming_the_file_and_is_kept() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::open(t.path()).unwrap();
        std::fs::write(sd.file(KEY_FILE), b"junk").unwrap();
        let err = load_or_create(&sd).err().expect("must fail").to_string();
        assert!(
            err.contains(&sd.file(KEY_FILE).display().to_string()),
            "{err}"
        );
        assert!(err.contains("corrupt"), "{err}");
        assert_eq!(std::fs::read(sd.file(KEY_FILE)).unwrap(), b"junk");
    }
}
