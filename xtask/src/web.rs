//! The browser client in `flock/web/` (TypeScript): installs Node.js from
//! Debian when the machine has none, then `npm ci`, type-check, unit tests
//! and the bundle into `flock/web/dist/` (which flock serves as the portal).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::apt;
use crate::cmd::{self, say};

/// Debian's Node.js and npm, used only when `node`/`npm` are not on PATH.
const PACKAGES: &[&str] = &["nodejs", "npm"];

pub fn ensure_node() -> Result<()> {
    if cmd::on_path("node") && cmd::on_path("npm") {
        return Ok(());
    }
    say("Node.js or npm not found on PATH: installing Debian's");
    apt::ensure("browser client", PACKAGES)
}

fn npm(dir: &Path, args: &[&str]) -> Result<()> {
    cmd::run(Command::new("npm").current_dir(dir).args(args))
        .with_context(|| format!("npm {} in {}", args.join(" "), dir.display()))
}

/// `npm ci` (only when `node_modules` is missing or older than the lock
/// file), type-check, unit tests, bundle.
pub fn test_and_build(root: &Path) -> Result<()> {
    ensure_node()?;
    let dir = root.join("flock/web");
    install(&dir)?;
    npm(&dir, &["run", "--silent", "typecheck"])?;
    npm(&dir, &["test"])?;
    npm(&dir, &["run", "--silent", "build"])
}

/// `npm ci` when needed, then the bundle only (the portal for the demo).
pub fn build(root: &Path) -> Result<()> {
    ensure_node()?;
    let dir = root.join("flock/web");
    install(&dir)?;
    npm(&dir, &["run", "--silent", "build"])
}

fn install(dir: &Path) -> Result<()> {
    let stamp = dir.join("node_modules/.package-lock.json");
    let lock = dir.join("package-lock.json");
    let fresh = match (std::fs::metadata(&stamp), std::fs::metadata(&lock)) {
        (Ok(s), Ok(l)) => match (s.modified(), l.modified()) {
            (Ok(s), Ok(l)) => s >= l,
            _ => false,
        },
        _ => false,
    };
    if fresh {
        return Ok(());
    }
    npm(dir, &["ci", "--no-audit", "--no-fund"])
}
