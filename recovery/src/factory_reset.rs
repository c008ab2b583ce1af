//! Factory reset: empty the data area (personas, tokens, app data) except
//! the entries the config keeps (the factory identity), so a power cut at
//! any point leaves either the old data or a reset that the next call
//! finishes.
//!
//! Invariants: only entries directly in the data directory are moved, and
//! only within it; symbolic links are moved and deleted as links, never
//! followed, so nothing outside the data area is touched. Kept entries are
//! never opened, moved or rewritten. The data directory itself (its mode and
//! owner, the mount point) stays.
//!
//! The steps, and what is on disk if power is cut right after each:
//!
//! | step | on disk after it | the next [`factory_reset`] or [`finish_interrupted`] |
//! |---|---|---|
//! | 1. check the data directory | nothing changed | — |
//! | 2. `mkdir .wipe-<n>` in it, fsync the directory — **the commit point** | all data, plus an empty trash dir | finds the trash: the reset was asked for, so it runs it to the end |
//! | 3. rename every entry not kept (and not a trash dir) into the trash | some entries moved, the rest in place | moves the rest, deletes the trash |
//! | 4. fsync the data directory | renames durable: only kept entries and the trash | deletes the trash |
//! | 5. delete the trash dirs (recursively, without following links) | some trash left | deletes the rest |
//! | 6. fsync the data directory | the kept entries only | nothing to do |
//!
//! Before step 2 a cut loses nothing; from step 2 on the reset always
//! completes on the next call. A trash dir is a real directory (not a
//! link) named `.wipe-<n>`; the agent calls [`finish_interrupted`] before it
//! reads the data area at start, so it never runs on half-wiped data.
//! The data area starts empty except the kept entries: whoever uses it
//! creates its layout (the agent creates its state directory at start).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;

/// Name prefix of the trash directories inside the data area.
pub const TRASH_PREFIX: &str = ".wipe-";

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ResetReport {
    /// Entries of the data area that were wiped, sorted (file names;
    /// lossy UTF-8).
    pub removed: Vec<String>,
    /// Kept entries that were there, sorted.
    pub kept: Vec<String>,
    /// An earlier reset had been cut short (its trash was there) and this
    /// call finished it.
    pub finished_interrupted: bool,
}

/// Why a factory reset did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum FactoryResetError {
    /// The data directory does not exist.
    #[error("data area {} does not exist (is the data partition mounted? `data` in the recovery config must name its mount directory)", .0.display())]
    DataMissing(PathBuf),
    /// The data path is not a directory.
    #[error("data area {} is not a directory (`data` in the recovery config must name the directory the data partition is mounted on, not a device)", .0.display())]
    NotADirectory(PathBuf),
    /// The data path is the root directory: refusing to wipe the system.
    #[error("data area is {}: refusing to wipe the whole system; set `data` in the recovery config to the data partition's mount directory", .0.display())]
    RootDirectory(PathBuf),
    /// A file system operation failed. Nothing outside the data area was
    /// touched; if the reset had been committed, the next call finishes it.
    #[error("factory reset: {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FactoryResetError {
    let path = path.to_owned();
    move |source| FactoryResetError::Io { what, path, source }
}

/// Wipes the configured data area except `data_keep` (see the module docs
/// for the steps). Finishes an interrupted reset on the way.
pub fn factory_reset(config: &Config) -> Result<ResetReport, FactoryResetError> {
    reset_dir(&config.data, &config.data_keep)
}

/// Finishes a reset that a power cut interrupted, if there is one; `None`
/// when the data area holds no trash (the normal start). Call before
/// reading the data area.
pub fn finish_interrupted(config: &Config) -> Result<Option<ResetReport>, FactoryResetError> {
    check_dir(&config.data)?;
    if trash_dirs(&config.data)?.is_empty() {
        return Ok(None);
    }
    reset_dir(&config.data, &config.data_keep).map(Some)
}

/// [`factory_reset`] for a directory and keep list.
pub fn reset_dir(data: &Path, keep: &[String]) -> Result<ResetReport, FactoryResetError> {
    check_dir(data)?;
    let mut report = ResetReport::default();
    let mut trash = trash_dirs(data)?;
    report.finished_interrupted = !trash.is_empty();
    // Step 2: the commit point.
    let target = match trash.first() {
        Some(t) => t.clone(),
        None => {
            let t = data.join(format!("{TRASH_PREFIX}0"));
            fs::create_dir(&t).map_err(io_err("creating", &t))?;
            sync_dir(data)?;
            trash.push(t.clone());
            t
        }
    };
    // Step 3.
    for (name, path) in entries(data)? {
        if trash.contains(&path) {
            continue;
        }
        let shown = name.to_string_lossy().into_owned();
        if keep.iter().any(|k| OsString::from(k) == name) {
            report.kept.push(shown);
            continue;
        }
        let dest = free_name(&target, &name)?;
        fs::rename(&path, &dest).map_err(io_err("moving into the trash", &path))?;
        report.removed.push(shown);
    }
    // Step 4.
    sync_dir(data)?;
    // Step 5. `remove_dir_all` does not follow symbolic links.
    for t in &trash {
        fs::remove_dir_all(t).map_err(io_err("deleting", t))?;
    }
    // Step 6.
    sync_dir(data)?;
    report.removed.sort();
    report.kept.sort();
    Ok(report)
}

fn check_dir(data: &Path) -> Result<(), FactoryResetError> {
    let meta = match fs::metadata(data) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(FactoryResetError::DataMissing(data.to_owned()))
        }
        Err(e) => return Err(io_err("reading", data)(e)),
    };
    if !meta.is_dir() {
        return Err(FactoryResetError::NotADirectory(data.to_owned()));
    }
    let canonical = fs::canonicalize(data).map_err(io_err("resolving", data))?;
    if canonical.parent().is_none() {
        return Err(FactoryResetError::RootDirectory(data.to_owned()));
    }
    Ok(())
}

/// The data area's entries with their paths.
fn entries(data: &Path) -> Result<Vec<(OsString, PathBuf)>, FactoryResetError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(data).map_err(io_err("listing", data))? {
        let entry = entry.map_err(io_err("listing", data))?;
        out.push((entry.file_name(), entry.path()));
    }
    Ok(out)
}

/// Trash dirs left in the data area: real directories named `.wipe-…`.
fn trash_dirs(data: &Path) -> Result<Vec<PathBuf>, FactoryResetError> {
    let mut out = Vec::new();
    for (name, path) in entries(data)? {
        if !name.to_string_lossy().starts_with(TRASH_PREFIX) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
        if meta.file_type().is_dir() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// `trash/name`, or `trash/name.<k>` when an earlier pass already moved an
/// entry of that name there.
fn free_name(trash: &Path, name: &OsString) -> Result<PathBuf, FactoryResetError> {
    let mut candidate = trash.join(name);
    let mut k = 0u32;
    loop {
        match fs::symlink_metadata(&candidate) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(candidate),
            Err(e) => return Err(io_err("reading", &candidate)(e)),
            Ok(_) => {
                k += 1;
                let mut n = name.clone();
                n.push(format!(".{k}"));
                candidate = trash.join(n);
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), FactoryResetError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}
