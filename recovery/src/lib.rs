//! A/B slots, boot counting, rollback, signed update bundles and factory
//! reset. Built so far: the bootloader environment layer, the
//! boot-selection model, signed bundles, the recovery config, install,
//! status, mark-good and rollback; factory reset and the agent's `Recovery`
//! trait (in `intrust-agent`) come in later slices.
//!
//! - [`storage`]: the device or file an environment lives on (positional
//!   read/write and fsync), small enough to wrap in a crash recorder.
//! - [`env`]: environment variables as a validated map, shared by both
//!   bootloaders.
//! - [`uboot_env`]: U-Boot's on-disk environment (CRC32, single or redundant
//!   copies with a flag byte), configured like `fw_env.config`, compatible
//!   with `fw_printenv`/`fw_setenv` (libubootenv) both ways.
//! - [`grubenv`]: GRUB's 1024-byte environment block.
//! - [`boot`]: the sans-IO boot-selection model (`BOOT_ORDER`,
//!   `BOOT_x_LEFT`, as RAUC's U-Boot integration does it) with `activate`,
//!   `mark_good` and `mark_bad`; each is one change to one environment, so
//!   the caller stores it with one atomic write.
//! - [`bundle`]: signed update bundles (format in `BUNDLE.md`): create,
//!   and a streaming reader that verifies before handing out payload bytes.
//! - [`config`]: the recovery config (board, trusted keys, slots, data
//!   area, bootloader env backend).
//! - [`bootenv`]: the configured environment (U-Boot or GRUB) behind one
//!   read/write trait.
//! - [`install`]: the install steps with their power-cut safety argument.
//! - [`slots`]: booted slot, status, mark-good, rollback, last error.

pub mod boot;
pub mod bootenv;
pub mod bundle;
pub mod config;
pub mod crash;
pub mod env;
pub mod factory_reset;
pub mod fetch;
pub mod grubenv;
pub mod install;
pub mod slots;
pub mod storage;
pub mod uboot_env;

pub use env::{Env, VarError};
