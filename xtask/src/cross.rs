//! The appliance build: aarch64 binaries made with Debian's rustc-web and
//! its arm64 std (no rustup target needed), stripped into
//! `target/cross/dist/`, then run under QEMU user mode: `intrustd --version`,
//! `intrust-hil list`, and one simulated-board HIL scenario in which the
//! emulated aarch64 `intrustd` is the device under test, driven by the host's
//! harness (as a real rig drives a real board).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, say, Limited};
use crate::{apt, Outcome};

/// Debian 12 packages of the recipe (`rustc-web` and the arm64 std are from
/// bookworm-security; the linker is configured in `.cargo/config.toml`).
pub const PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev:arm64",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-user",
];
pub const TARGET: &str = "aarch64-unknown-linux-gnu";
/// Debian's rustc-web; rustup's rustc has no aarch64 std here.
const RUSTC: &str = "/usr/bin/rustc";
const STRIP: &str = "aarch64-linux-gnu-strip";
/// The aarch64 libraries for qemu's `-L` (dynamic loader and libc).
pub const SYSROOT: &str = "/usr/aarch64-linux-gnu";
/// A separate target dir: other rustc, other artefacts.
const TARGET_DIR: &str = "target/cross";
const HIL_SCENARIO: &str = "boot-unpaired";
/// Time limits under emulation, so a hang fails CI instead of stalling it.
const VERSION_LIMIT: Duration = Duration::from_secs(60);
const LIST_LIMIT: Duration = Duration::from_secs(120);
const SCENARIO_LIMIT: Duration = Duration::from_secs(180);

/// Binaries of the appliance and the packages that build them.
const BINARIES: &[&str] = &["intrustd", "intrustctl", "intrust-recovery", "intrust-hil"];
const PACKAGES_BUILT: &[&str] = &["intrust-agent", "intrust-recovery", "intrust-hil"];

pub struct Binary {
    pub name: &'static str,
    /// Relative to the workspace root.
    pub path: PathBuf,
    pub bytes: u64,
}

impl Binary {
    pub fn mib(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0)
    }
}

pub fn install() -> Result<()> {
    apt::ensure_foreign_arch("arm64")?;
    apt::ensure("cross build", PACKAGES)
}

/// Builds the release binaries for aarch64 and strips them into `dist/`.
pub fn build_dist(root: &Path) -> Result<Vec<Binary>> {
    let started = Instant::now();
    let mut build = cmd::cargo();
    build
        .current_dir(root)
        .env("RUSTC", RUSTC)
        .env("CARGO_TARGET_DIR", TARGET_DIR)
        .args(["build", "--release", "--target", TARGET]);
    for p in PACKAGES_BUILT {
        build.args(["-p", p]);
    }
    cmd::run_log(&mut build)?;
    say(format!(
        "aarch64 build took {:.0} s",
        started.elapsed().as_secs_f64()
    ));

    // Paths relative to the workspace root: shorter echoes.
    let release = Path::new(TARGET_DIR).join(TARGET).join("release");
    let dist = Path::new(TARGET_DIR).join("dist");
    std::fs::create_dir_all(root.join(&dist))
        .with_context(|| format!("creating {}", dist.display()))?;
    let mut out = Vec::new();
    for name in BINARIES {
        let built = release.join(name);
        let path = dist.join(name);
        cmd::run_log(
            Command::new(STRIP)
                .current_dir(root)
                .arg("-o")
                .arg(&path)
                .arg(&built),
        )?;
        let bytes = std::fs::metadata(root.join(&path))
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        out.push(Binary { name, path, bytes });
    }
    Ok(out)
}

/// `qemu-aarch64 -L SYSROOT` as a command line prefix (also handed to the
/// HIL as its launcher for intrustd).
fn qemu() -> Command {
    let mut c = Command::new("qemu-aarch64");
    c.args(["-L", SYSROOT]);
    c
}

/// `cargo xtask cross`: install, build, strip, sizes, run under QEMU.
/// Returns `Skipped` when the HIL binary is still a stub.
pub fn run(root: &Path) -> Result<Outcome> {
    install()?;
    let bins = build_dist(root)?;
    say("stripped aarch64 binaries:");
    for b in &bins {
        eprintln!(
            "    {:<12} {:>6.2} MiB  {}",
            b.name,
            b.mib(),
            b.path.display()
        );
    }
    let dist = |name: &str| PathBuf::from(TARGET_DIR).join("dist").join(name);

    // The agent must start on the target architecture and know its version.
    let mut version = qemu();
    version
        .current_dir(root)
        .arg(dist("intrustd"))
        .arg("--version");
    let out = match cmd::run_limited(&mut version, VERSION_LIMIT, true)? {
        Limited::Exited(status, out) if status.success() => out,
        Limited::Exited(status, out) => {
            bail!("`intrustd --version` under qemu-aarch64 failed ({status}); it printed {out:?}")
        }
        Limited::TimedOut => bail!(
            "`intrustd --version` under qemu-aarch64 did not finish within {} s",
            VERSION_LIMIT.as_secs()
        ),
    };
    print!("{out}");
    let want = env!("CARGO_PKG_VERSION");
    if !out.contains(want) {
        bail!(
            "`intrustd --version` under qemu-aarch64 printed {out:?}, expected the version {want}"
        );
    }

    hil_scenario(root, &dist("intrust-hil"), &dist("intrustd"))
}

/// One HIL scenario on the simulated board: the aarch64 agent under QEMU is
/// the device under test; the harness is the host's build, as on a real rig.
/// (The aarch64 harness itself is only listed under QEMU: qemu-user on this
/// kind of machine hangs when an emulated program creates a thread, and the
/// harness needs threads to start and watch the agent; see cross/README.md.)
fn hil_scenario(root: &Path, hil: &Path, intrustd: &Path) -> Result<Outcome> {
    let mut list = qemu();
    list.current_dir(root).arg(hil).arg("list");
    match cmd::run_limited(&mut list, LIST_LIMIT, true)? {
        Limited::Exited(status, out) if status.success() => {
            if !out
                .lines()
                .any(|l| l.split_whitespace().next() == Some(HIL_SCENARIO))
            {
                bail!("`intrust-hil list` does not offer the scenario {HIL_SCENARIO}:\n{out}");
            }
        }
        Limited::Exited(status, out) => {
            bail!("`intrust-hil list` under qemu-aarch64 failed ({status}):\n{out}")
        }
        Limited::TimedOut => bail!(
            "`intrust-hil list` under qemu-aarch64 did not finish within {} s",
            LIST_LIMIT.as_secs()
        ),
    }

    let launcher = format!("qemu-aarch64 -L {SYSROOT}");
    let records = PathBuf::from(TARGET_DIR).join("hil-records");
    let mut build = Command::new("cargo");
    build.current_dir(root).args([
        "build",
        "--quiet",
        "-p",
        "intrust-hil",
        "--bin",
        "intrust-hil",
    ]);
    cmd::run(&mut build).context("building the host's intrust-hil")?;
    let mut scenario = Command::new(root.join("target/debug/intrust-hil"));
    scenario
        .current_dir(root)
        .args(["--rig", "sim", "--intrustd"])
        .arg(intrustd)
        .args(["--launcher", &launcher, "--record-dir"])
        .arg(&records)
        .args(["run", HIL_SCENARIO]);
    let failed = match cmd::run_limited(&mut scenario, SCENARIO_LIMIT, false)? {
        Limited::Exited(status, _) if status.success() => return Ok(Outcome::Done),
        Limited::Exited(status, _) => format!("failed ({status})"),
        Limited::TimedOut => format!(
            "did not finish within {} s and was stopped",
            SCENARIO_LIMIT.as_secs()
        ),
    };
    bail!(
        "HIL scenario {HIL_SCENARIO} under qemu-aarch64 {failed}; records are in {}",
        records.display()
    )
}
