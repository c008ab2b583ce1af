//! `cargo xtask test`: what CI runs (`.ci/run`). Host packages, the
//! browser client's tests and bundle, the workspace tests, the aarch64 build run under QEMU, then a summary with
//! the time of each step. Any failed step makes the exit status non-zero.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::cmd::{self, say};
use crate::{apt, cross, web, Outcome};

/// Debian packages the host tests need beyond Rust and a C compiler.
/// (The app and update issues add crun, nix-bin, rauc…)
pub const HOST_PACKAGES: &[&str] = &[
    // fw_printenv/fw_setenv: recovery's U-Boot env interop tests.
    "libubootenv-tool",
    // mkimage: recovery/boot/boot.cmd is compiled to a U-Boot script image.
    "u-boot-tools",
    // grub-script-check and grub-emu: recovery/boot/grub.cfg is checked and
    // run by GRUB itself against the Rust boot model.
    "grub-common",
    "grub-emu",
    // U-Boot for QEMU's virt machine and the emulator: recovery/boot/boot.cmd
    // runs in real U-Boot against the Rust boot model.
    "qemu-system-arm",
    "u-boot-qemu",
    // Headless Chromium driven over WebDriver: hil-tests' browser tests.
    "chromium",
    "chromium-driver",
    // turnserver: the agent's TURN and NAT tests (agent/tests/peer_turn.rs, nat.rs) use a real coturn.
    "coturn",
    // nft: the NATs in the agent's NAT tests (masquerade, dropped UDP).
    "nftables",
    // ip (netns, veth): the network namespaces of the agent's NAT tests.
    "iproute2",
];

struct Step {
    name: &'static str,
    took: Duration,
    outcome: Result<Outcome>,
}

pub fn run(root: &Path, cross: bool) -> Result<()> {
    let mut steps = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<Outcome>| {
        say(format!("step: {name}"));
        let started = Instant::now();
        let outcome = f();
        if let Err(e) = &outcome {
            say(format!("step {name} failed: {e:#}"));
        }
        let ok = outcome.is_ok();
        steps.push(Step {
            name,
            took: started.elapsed(),
            outcome,
        });
        ok
    };

    let deps_ok = step("host packages", &mut || {
        apt::ensure("host tests", HOST_PACKAGES)?;
        Ok(Outcome::Done)
    });
    // The browser client before the Rust tests: flock serves its bundle.
    step("browser client (npm)", &mut || {
        web::test_and_build(root)?;
        Ok(Outcome::Done)
    });
    if deps_ok {
        // `test result:` lines stream straight to the terminal.
        step("cargo test", &mut || {
            cmd::run(cmd::cargo().current_dir(root).args([
                "test",
                "--workspace",
                "--all-targets",
                // Every test binary runs, so one CI run reports all failures.
                "--no-fail-fast",
            ]))?;
            Ok(Outcome::Done)
        });
    }
    // Independent of the host tests: run it even when they fail, for a
    // fuller CI report.
    if cross {
        step("cross (aarch64 + qemu)", &mut || cross::run(root));
    }

    eprintln!("\nxtask test summary:");
    let mut failed = 0;
    for s in &steps {
        let what = match &s.outcome {
            Ok(Outcome::Done) => "ok".to_string(),
            Ok(Outcome::Skipped(why)) => format!("ok, part skipped: {why}"),
            Err(_) => {
                failed += 1;
                "FAILED".to_string()
            }
        };
        eprintln!("  {:<24} {:>8}  {what}", s.name, fmt_duration(s.took));
    }
    if !cross {
        eprintln!(
            "  {:<24} {:>8}  skipped (--no-cross)",
            "cross (aarch64 + qemu)", "-"
        );
    }
    if failed > 0 {
        bail!("{failed} step(s) failed");
    }
    Ok(())
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}
