//! The configured bootloader environment behind one small trait, so install,
//! status, mark-good and rollback do not care whether it is U-Boot's or
//! GRUB's. Every [`EnvStore::write`] is the backend's one atomic write (see
//! `uboot_env` and `grubenv` for what a power cut leaves).

use std::path::PathBuf;

use crate::config::Bootloader;
use crate::env::Env;
use crate::grubenv;
use crate::storage::Storage;
use crate::uboot_env::{EnvConfig, UbootEnv};

/// A bootloader environment error, as text naming the device or file.
#[derive(Debug, thiserror::Error)]
#[error("bootloader environment: {0}")]
pub struct EnvStoreError(pub String);

/// Reads and replaces a whole environment.
pub trait EnvStore {
    /// The current variables (a U-Boot env with no valid copy reads as
    /// empty, the bootloader's safe default).
    fn read(&mut self) -> Result<Env, EnvStoreError>;

    /// Replaces the environment with `env` in one atomic write.
    fn write(&mut self, env: &Env) -> Result<(), EnvStoreError>;
}

impl<S: Storage> EnvStore for UbootEnv<S> {
    fn read(&mut self) -> Result<Env, EnvStoreError> {
        UbootEnv::read(self)
            .map(|loaded| loaded.env)
            .map_err(|e| EnvStoreError(e.to_string()))
    }

    fn write(&mut self, env: &Env) -> Result<(), EnvStoreError> {
        UbootEnv::write(self, env).map_err(|e| EnvStoreError(e.to_string()))
    }
}

/// A `grubenv` file.
#[derive(Debug, Clone)]
pub struct GrubEnvFile(pub PathBuf);

impl EnvStore for GrubEnvFile {
    fn read(&mut self) -> Result<Env, EnvStoreError> {
        grubenv::read_file(&self.0).map_err(|e| EnvStoreError(e.to_string()))
    }

    fn write(&mut self, env: &Env) -> Result<(), EnvStoreError> {
        grubenv::write_file(&self.0, env).map_err(|e| EnvStoreError(e.to_string()))
    }
}

/// Opens the environment the config names.
pub fn open(bootloader: &Bootloader) -> Result<Box<dyn EnvStore>, EnvStoreError> {
    match bootloader {
        Bootloader::Uboot { fw_env_config } => {
            let config =
                EnvConfig::load(fw_env_config).map_err(|e| EnvStoreError(e.to_string()))?;
            let env = UbootEnv::open(&config).map_err(|e| EnvStoreError(e.to_string()))?;
            Ok(Box::new(env))
        }
        Bootloader::Grub { grubenv } => Ok(Box::new(GrubEnvFile(grubenv.clone()))),
    }
}
