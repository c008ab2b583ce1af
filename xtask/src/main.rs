//! `cargo xtask`: the one entry point for people and CI. Each command
//! installs the Debian packages it needs (apt-get, via sudo when not root),
//! then builds and runs things. Arguments are parsed by hand to keep this
//! crate quick to compile.

mod apt;
mod bench;
mod cmd;
mod cross;
mod demo;
mod signals;
mod test;
mod web;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How a step ended when it did not fail.
pub enum Outcome {
    Done,
    /// Part of the step could not run yet (e.g. a binary still a stub).
    Skipped(String),
}

const HELP: &str = "\
cargo xtask: build, test, demo and measure the Intrustd appliance agent

Usage: cargo xtask <COMMAND> [OPTIONS]

Commands:
  demo [--for SECS]   the whole system: an example app, flock with the portal,
                      intrustd on a simulated board; prints what to open and
                      shows the LEDs (Ctrl-C stops; --for after SECS seconds)
  test [--no-cross]   what CI runs: browser client and workspace tests, then the aarch64 build
                      run under QEMU (--no-cross skips that part)
  cross               build aarch64 binaries into target/cross/dist/, run
                      intrustd --version and a HIL scenario under qemu-aarch64
  bench [GROUP]       benchmarks, one JSON line per figure on stdout;
                      groups: board, footprint, update (default: all)
  lint                cargo fmt --check and clippy -D warnings
  help                this text (also -h, --help; `cargo xtask CMD --help`)

Commands install missing Debian 12 packages with apt-get (through sudo when
not root) and say so first.
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        cmd::say(format!("error: {e:#}"));
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let root = workspace_root()?;
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => {
            print!("{HELP}");
            bail!("no command given");
        }
    };
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return Ok(());
    }
    match command {
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            Ok(())
        }
        "demo" => {
            let mut for_secs = None;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--for" => {
                        let v = it.next().context("--for needs a number of seconds")?;
                        let secs: u64 = v
                            .parse()
                            .with_context(|| format!("--for {v:?}: not a number of seconds"))?;
                        for_secs = Some(secs);
                    }
                    other => {
                        bail!("demo: unexpected argument {other:?} (see `cargo xtask demo --help`)")
                    }
                }
            }
            demo::run(&root, for_secs)
        }
        "test" => {
            let mut cross = true;
            for a in rest {
                match a.as_str() {
                    "--no-cross" => cross = false,
                    other => {
                        bail!("test: unexpected argument {other:?} (see `cargo xtask test --help`)")
                    }
                }
            }
            test::run(&root, cross)
        }
        "cross" => {
            no_args("cross", rest)?;
            let started = std::time::Instant::now();
            let outcome = cross::run(&root)?;
            let took = fmt_secs(started.elapsed());
            match outcome {
                Outcome::Done => cmd::say(format!("cross: all done in {took}")),
                Outcome::Skipped(why) => cmd::say(format!("cross: done in {took}, but {why}")),
            }
            Ok(())
        }
        "bench" => match rest {
            [] => bench::run(&root, None),
            [group] => bench::run(&root, Some(group)),
            _ => bail!("bench takes at most one group (see `cargo xtask bench --help`)"),
        },
        "lint" => {
            no_args("lint", rest)?;
            lint(&root)
        }
        other => bail!("unknown command {other:?}; `cargo xtask --help` lists the commands"),
    }
}

fn no_args(command: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        Some(a) => bail!("{command}: unexpected argument {a:?} (see `cargo xtask --help`)"),
        None => Ok(()),
    }
}

fn lint(root: &Path) -> Result<()> {
    let hint = "missing rustfmt or clippy? `rustup component add rustfmt clippy`";
    cmd::run(
        cmd::cargo()
            .current_dir(root)
            .args(["fmt", "--all", "--check"]),
    )
    .context(hint)?;
    cmd::run(cmd::cargo().current_dir(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .context(hint)
}

/// The workspace root: the parent of this crate's folder.
fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest has no parent folder")
}

/// Where cargo puts host builds: `$CARGO_TARGET_DIR` or `target/`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}
