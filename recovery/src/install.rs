//! Installing a bundle into the inactive slot: verify everything that can be
//! verified before writing, mark the target bad, stream and hash the images
//! in one pass, fsync, and activate with one atomic env write.
//!
//! Invariants: the booted (active) slot's devices and the data area are
//! never opened for writing (the config forbids aliased devices); the env is
//! written at most twice, first only to set the target's tries to 0, last
//! to activate it, and the second write happens only after every image was
//! whole, matched its SHA-256 and was fsynced. Every write and fsync goes
//! through [`Storage`] (slot devices opened by an [`OpenStorage`]), so
//! `tests/crash_states.rs` replays the power-cut states of all these steps
//! with [`crate::crash`]; `tests/sigkill.rs` kills the real binary
//! mid-install.
//!
//! # Safety argument: what is on disk if power is cut right here
//!
//! | step | what happens | power cut here leaves |
//! |---|---|---|
//! | 1. verify | read header, manifest, signature; check board, parts, sizes | nothing written: old env, both slots as before |
//! | 2. booted | booted slot from cmdline/config, target = the other | nothing written |
//! | 3. mark bad | one env write: target's tries = 0 (order kept) | old env or new env, each whole (`uboot_env`'s redundant write / grubenv's rename); either way the booted slot still boots: it was bootable before and only the target's tries changed |
//! | 4. stream | images written into the target's devices, hashed as read | target half written, but it has 0 tries, so the bootloader never picks it; booted slot untouched |
//! | 5. fsync + compare | each device fsynced; each image's hash compared at its end, trailing bytes refused | as 4; on a mismatch we stop here with an error, so the env keeps the target marked bad |
//! | 6. activate | one env write: target first in the order with fresh tries | old env (target still bad, booted slot boots) or new env (target boots, and after its tries fall back to the booted slot, which keeps its tries); whole either way |

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::boot::{BootState, Slot};
use crate::bootenv::{EnvStore, EnvStoreError};
use crate::bundle::{Bundle, BundleError, Part};
use crate::config::{Config, Device};
use crate::storage::{FileDevices, OpenStorage, Storage};

/// Largest chunk held in memory while streaming.
pub const BUFFER_LEN: usize = 1 << 20;

/// Why an install failed. Variants say whether anything was written.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Rejected while verifying: nothing was written.
    #[error("bundle rejected, nothing written: {0}")]
    Bundle(BundleError),
    /// The bundle is for another board: nothing was written.
    #[error("bundle rejected, nothing written: it is for board {bundle:?}, this is {board:?}")]
    WrongBoard {
        /// The manifest's `compatible`.
        bundle: String,
        /// The config's `board`.
        board: String,
    },
    /// The target slot has no device for an image: nothing was written.
    #[error("bundle rejected, nothing written: it has a {part} image but slot {slot} has no {part} device in the config")]
    NoDevice {
        /// The image's part.
        part: Part,
        /// The target slot.
        slot: Slot,
    },
    /// An image does not fit: nothing was written.
    #[error("bundle rejected, nothing written: {part} image is {size} bytes, larger than slot {slot}'s {device} ({capacity} bytes)")]
    TooLarge {
        /// The image's part.
        part: Part,
        /// Its size.
        size: u64,
        /// The target slot.
        slot: Slot,
        /// The device.
        device: String,
        /// Its usable size.
        capacity: u64,
    },
    /// A device could not be opened, sized, written or synced (opening and
    /// sizing happen before anything is written).
    #[error("{what} {device}: {source}")]
    Device {
        /// What was being done.
        what: &'static str,
        /// The device.
        device: String,
        /// The OS error.
        source: io::Error,
    },
    /// The booted slot could not be determined: nothing was written.
    #[error("nothing written: {0}")]
    Booted(String),
    /// The env could not be read or written.
    #[error(transparent)]
    Env(#[from] EnvStoreError),
    /// The payload was bad (truncated, hash mismatch, trailing data) after
    /// the target had been marked bad and partly written.
    #[error("bundle rejected while writing slot {target} (slot {target} stays marked bad, slot {} untouched, not activated): {source}", target.other())]
    Payload {
        /// The slot being written.
        target: Slot,
        /// What was wrong.
        source: BundleError,
    },
}

/// Progress of the streaming step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Payload bytes written so far.
    pub done: u64,
    /// Payload bytes in total.
    pub total: u64,
}

impl Progress {
    /// Whole percent done (100 for an empty payload).
    pub fn percent(&self) -> u8 {
        if self.total == 0 {
            return 100;
        }
        // done <= total, so this is at most 100.
        (u128::from(self.done) * 100 / u128::from(self.total)) as u8
    }
}

/// A finished install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The bundle's version.
    pub version: String,
    /// The slot written and activated.
    pub slot: Slot,
    /// Payload bytes written.
    pub bytes: u64,
}

/// Installs the bundle read from `input` into the slot that is not
/// `booted`, writing the slot's device nodes; see the module docs for the
/// steps and their safety argument.
pub fn install(
    config: &Config,
    input: impl Read,
    booted: Slot,
    env: &mut dyn EnvStore,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, InstallError> {
    install_on(config, input, booted, env, &mut FileDevices, progress)
}

/// [`install`] with the slot devices opened by `devices` (a crash recorder
/// in tests), so every write and fsync of an install goes through
/// [`Storage`].
pub fn install_on(
    config: &Config,
    input: impl Read,
    booted: Slot,
    env: &mut dyn EnvStore,
    devices: &mut dyn OpenStorage,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, InstallError> {
    // 1. Verify: nothing is written before this block ends.
    let mut bundle = Bundle::open(input, &config.trusted_keys).map_err(InstallError::Bundle)?;
    let manifest = bundle.manifest().clone();
    if manifest.compatible != config.board {
        return Err(InstallError::WrongBoard {
            bundle: manifest.compatible,
            board: config.board.clone(),
        });
    }
    // 2. Target.
    let target = booted.other();
    let slot = config.slot(target);
    let mut targets = Vec::new();
    for image in &manifest.images {
        let device = slot.device(image.part).ok_or(InstallError::NoDevice {
            part: image.part,
            slot: target,
        })?;
        let (storage, capacity) = open_device(devices, device)?;
        if image.size > capacity {
            return Err(InstallError::TooLarge {
                part: image.part,
                size: image.size,
                slot: target,
                device: device.device.display().to_string(),
                capacity,
            });
        }
        targets.push((storage, device.device.display().to_string()));
    }
    let mut vars = env.read()?;

    // 3. Mark the target bad: from here on it is never booted until step 6.
    let mut state = BootState::from_env(&vars);
    state.mark_bad(target);
    state.apply_to(&mut vars);
    env.write(&vars)?;

    // 4. + 5. Stream, hash in the same pass, fsync, compare.
    let payload_err = |source| InstallError::Payload { target, source };
    let total = manifest.payload_len();
    let mut done = 0u64;
    let mut buf = vec![0u8; BUFFER_LEN];
    progress(Progress { done, total });
    for (storage, name) in &mut targets {
        let Some(mut image) = bundle.next_image() else {
            break;
        };
        let device_err = |what, source| InstallError::Device {
            what,
            device: name.clone(),
            source,
        };
        let mut offset = 0u64;
        loop {
            let chunk = image.read_chunk(&mut buf).map_err(payload_err)?;
            if chunk.is_empty() {
                break;
            }
            storage
                .write_at(offset, chunk)
                .map_err(|e| device_err("writing", e))?;
            offset += chunk.len() as u64;
            done += chunk.len() as u64;
            progress(Progress { done, total });
        }
        image.finish().map_err(payload_err)?;
        // Durable before the activation below is even issued: an fsync only
        // orders this device's writes, so it must complete first.
        storage.sync().map_err(|e| device_err("syncing", e))?;
    }
    bundle.finish().map_err(payload_err)?;

    // 6. Activate: order and tries in one write.
    let mut state = BootState::from_env(&vars);
    state.activate(target);
    state.apply_to(&mut vars);
    env.write(&vars)?;
    Ok(Installed {
        version: manifest.version,
        slot: target,
        bytes: done,
    })
}

/// Opens a slot device for writing (never creating or truncating it) and
/// returns its usable size.
fn open_device(
    devices: &mut dyn OpenStorage,
    device: &Device,
) -> Result<(Box<dyn Storage>, u64), InstallError> {
    let name = device.device.display().to_string();
    let err = |what, source| InstallError::Device {
        what,
        device: name.clone(),
        source,
    };
    let mut storage = devices
        .open(&device.device)
        .map_err(|e| err("opening", e))?;
    let len = storage.len().map_err(|e| err("sizing", e))?;
    let capacity = match device.size {
        Some(size) if size > len => {
            return Err(err(
                "checking",
                io::Error::other(format!(
                    "configured size {size} is larger than the device ({len} bytes)"
                )),
            ))
        }
        Some(size) => size,
        None => len,
    };
    Ok((storage, capacity))
}

/// Reads a bundle from `path`, or standard input for `-`.
pub fn open_input(path: &Path) -> io::Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin().lock()));
    }
    Ok(Box::new(io::BufReader::new(File::open(path)?)))
}

/// Writes progress for people (a terminal: one rewritten line) or programs
/// (`progress N` lines, one per whole percent).
pub struct ProgressPrinter<W> {
    out: W,
    terminal: bool,
    last: Option<u8>,
}

impl<W: Write> ProgressPrinter<W> {
    /// A printer writing to `out`.
    pub fn new(out: W, terminal: bool) -> ProgressPrinter<W> {
        ProgressPrinter {
            out,
            terminal,
            last: None,
        }
    }

    /// Prints `p` if its percentage changed. Output errors are ignored:
    /// progress must never fail an install.
    pub fn update(&mut self, p: Progress) {
        let percent = p.percent();
        if self.last == Some(percent) {
            return;
        }
        self.last = Some(percent);
        let _ = if self.terminal {
            let end = if percent == 100 { "\n" } else { "" };
            write!(
                self.out,
                "\rinstalling: {percent:3}% ({:.1} of {:.1} MiB){end}",
                p.done as f64 / 1048576.0,
                p.total as f64 / 1048576.0
            )
        } else {
            writeln!(self.out, "progress {percent}")
        };
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_bounded() {
        let p = |done, total| Progress { done, total }.percent();
        assert_eq!(p(0, 0), 100);
        assert_eq!(p(0, 10), 0);
        assert_eq!(p(5, 10), 50);
        assert_eq!(p(u64::MAX, u64::MAX), 100);
    }

    #[test]
    fn printer_writes_each_percent_once() {
        let mut out = Vec::new();
        let mut printer = ProgressPrinter::new(&mut out, false);
        for done in [0, 1, 2, 50, 100] {
            printer.update(Progress { done, total: 100 });
            printer.update(Progress { done, total: 100 });
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "progress 0\nprogress 1\nprogress 2\nprogress 50\nprogress 100\n"
        );
    }
}
