//! Running a real `intrustd` for a rig: where the binary is, the config it
//! gets, and the process's life.
//!
//! Every DUT lives in its own temporary directory (state, sockets, config,
//! captured output). The process is killed when [`Daemon`] is dropped, and
//! also if the harness itself dies (`PR_SET_PDEATHSIG`), so no daemon
//! outlives its test.

use crate::rig::DutSettings;
use anyhow::{bail, Context};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;

/// Environment variable naming the `intrustd` binary to run.
pub const INTRUSTD_ENV: &str = "INTRUST_HIL_INTRUSTD";

/// How many bytes of the daemon's stderr go into error messages.
const STDERR_TAIL: u64 = 2000;

/// Where `intrustd` is: `explicit` (`--intrustd`), else `$INTRUST_HIL_INTRUSTD`,
/// else next to the running executable (`target/debug/intrustd` for
/// `target/debug/intrust-hil` and for `target/debug/deps/<test>`).
pub fn locate_intrustd(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return check_file(p, "--intrustd");
    }
    if let Some(p) = std::env::var_os(INTRUSTD_ENV) {
        return check_file(Path::new(&p), INTRUSTD_ENV);
    }
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    match beside_exe(&exe) {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => bail!(
            "intrustd not found at {} (next to {}); build it with `cargo build -p intrust-agent --bin intrustd`, \
             or name it with --intrustd PATH or {INTRUSTD_ENV}",
            p.display(),
            exe.display()
        ),
        None => bail!("cannot tell where intrustd is from {}; use --intrustd PATH", exe.display()),
    }
}

fn check_file(p: &Path, source: &str) -> anyhow::Result<PathBuf> {
    if p.is_file() {
        Ok(p.to_owned())
    } else {
        bail!(
            "intrustd given by {source} does not exist or is not a file: {}",
            p.display()
        )
    }
}

/// `dir/intrustd` for an executable in `dir`, or in `dir/deps` (test binaries).
pub fn beside_exe(exe: &Path) -> Option<PathBuf> {
    let mut dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent()?;
    }
    Some(dir.join("intrustd"))
}

/// The files of one DUT, all under its temporary directory.
#[derive(Debug, Clone)]
pub struct DutPaths {
    pub root: PathBuf,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub board_root: PathBuf,
    pub control_socket: PathBuf,
    pub sim_socket: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl DutPaths {
    pub fn under(root: &Path) -> DutPaths {
        DutPaths {
            root: root.to_owned(),
            config: root.join("intrustd.toml"),
            state_dir: root.join("state"),
            board_root: root.join("board"),
            control_socket: root.join("control.sock"),
            sim_socket: root.join("sim.sock"),
            stdout: root.join("intrustd.stdout"),
            stderr: root.join("intrustd.stderr"),
        }
    }
}

/// The config file for a simulated-board DUT, in the format of
/// `agent/intrustd.example.toml`.
pub fn sim_config(paths: &DutPaths, settings: &DutSettings, log_level: &str) -> String {
    let q = |p: &Path| toml_string(&p.to_string_lossy());
    // A window shorter than a second cannot be configured; round up.
    let window_secs = settings.pairing_window.as_millis().div_ceil(1000).max(1);
    format!(
        "# Written by intrust-hil for one scenario.\n\
         state_dir = {}\n\
         board = \"sim\"\n\
         board_root = {}\n\
         control_socket = {}\n\
         sim_socket = {}\n\
         \n\
         [pairing]\n\
         window_secs = {window_secs}\n\
         \n\
         [buttons]\n\
         pair_min_ms = {}\n\
         pair_max_ms = {}\n\
         reset_arm_ms = {}\n\
         reset_cancel_ms = {}\n\
         \n\
         [log]\n\
         level = {}\n",
        q(&paths.state_dir),
        q(&paths.board_root),
        q(&paths.control_socket),
        q(&paths.sim_socket),
        settings.pair_min.as_millis(),
        settings.pair_max.as_millis(),
        settings.reset_arm.as_millis(),
        settings.reset_cancel.as_millis(),
        toml_string(log_level),
    )
}

/// A TOML basic string (JSON string escaping is valid TOML).
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A running `intrustd`. Killed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Mutex<Child>,
    stderr_path: PathBuf,
    /// The command line, for messages.
    pub command: String,
}

impl Daemon {
    /// Starts `launcher… intrustd --config CONFIG`, with stdout and stderr
    /// captured to files.
    pub fn spawn(intrustd: &Path, launcher: &[String], paths: &DutPaths) -> anyhow::Result<Daemon> {
        let stdout = File::create(&paths.stdout)
            .with_context(|| format!("cannot create {}", paths.stdout.display()))?;
        let stderr = File::create(&paths.stderr)
            .with_context(|| format!("cannot create {}", paths.stderr.display()))?;
        let mut argv: Vec<String> = launcher.to_vec();
        argv.push(intrustd.to_string_lossy().into_owned());
        argv.push("--config".into());
        argv.push(paths.config.to_string_lossy().into_owned());
        let command = argv.join(" ");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET");
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{command}`"))?;
        Ok(Daemon {
            child: Mutex::new(child),
            stderr_path: paths.stderr.clone(),
            command,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// The exit status if the process has ended.
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    /// The last part of what the daemon wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        read_tail(&self.stderr_path, STDERR_TAIL)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.stderr_path.display()))
    }

    /// An explanation to append to an error: whether the daemon is still
    /// running, and the tail of its stderr.
    pub fn diagnosis(&self) -> String {
        let tail = self.stderr_tail();
        let tail = if tail.trim().is_empty() {
            "(empty)".to_owned()
        } else {
            tail
        };
        match self.exited() {
            Some(st) => format!("intrustd exited with {st}; its stderr: {tail}"),
            None => format!("intrustd is still running; its stderr ends: {tail}"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

/// Up to `max` bytes from the end of `path`, lossily decoded.
fn read_tail(path: &Path, max: u64) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Ok(if start > 0 {
        format!("…{text}")
    } else {
        text
    })
}

/// In tests: makes sure the `intrustd` next to the test binary is built and
/// current, by running `cargo build -p intrust-agent --bin intrustd` for the
/// same profile and target directory (a no-op when it is), unless
/// `$INTRUST_HIL_INTRUSTD` names a binary. Returns the binary's path.
pub fn build_intrustd_for_tests() -> anyhow::Result<PathBuf> {
    if std::env::var_os(INTRUSTD_ENV).is_some() {
        return locate_intrustd(None);
    }
    let exe = std::env::current_exe().context("cannot find the running test executable")?;
    let mut args: Vec<std::ffi::OsString> = [
        "build",
        "--quiet",
        "-p",
        "intrust-agent",
        "--bin",
        "intrustd",
    ]
    .map(Into::into)
    .to_vec();
    if let Some((target_dir, profile)) = build_dirs(&exe) {
        args.extend([
            "--profile".into(),
            profile.into(),
            "--target-dir".into(),
            target_dir.into(),
        ]);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let shown = format!(
        "{} {}",
        cargo.to_string_lossy(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new(&cargo)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{shown}` to build intrustd for the HIL scenarios"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}), so the HIL scenarios cannot run:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    locate_intrustd(None)
}

/// The target directory and cargo profile a binary at `exe` was built in:
/// `<target>/<debug|release|profile>/[deps/]<exe>`.
fn build_dirs(exe: &Path) -> Option<(PathBuf, String)> {
    let mut dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent()?;
    }
    let profile = match dir.file_name()?.to_str()? {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    };
    Some((dir.parent()?.to_owned(), profile))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn intrustd_is_looked_up_beside_the_binary_or_its_deps_dir() {
        assert_eq!(
            beside_exe(Path::new("/t/debug/intrust-hil")).unwrap(),
            Path::new("/t/debug/intrustd")
        );
        assert_eq!(
            beside_exe(Path::new("/t/debug/deps/scenarios-abc")).unwrap(),
            Path::new("/t/debug/intrustd")
        );
        let err = locate_intrustd(Some(Path::new("/nonexistent/intrustd")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--intrustd") && err.contains("/nonexistent/intrustd"),
            "{err}"
        );
    }

    #[test]
    fn tests_build_intrustd_in_their_own_profile_and_target_dir() {
        assert_eq!(
            build_dirs(Path::new("/w/target/debug/deps/scenarios-1")).unwrap(),
            (PathBuf::from("/w/target"), "dev".to_owned())
        );
        assert_eq!(
            build_dirs(Path::new("/t/release/deps/scenarios-1")).unwrap(),
            (PathBuf::from("/t"), "release".to_owned())
        );
    }

    #[test]
    fn config_has_every_key_of_the_agent_format() {
        let paths = DutPaths::under(Path::new("/tmp/x \"y\""));
        let settings = DutSettings {
            pairing_window: Duration::from_millis(2500),
            ..DutSettings::default()
        };
        let text = sim_config(&paths, &settings, "debug");
        for line in [
            r#"state_dir = "/tmp/x \"y\"/state""#,
            r#"board = "sim""#,
            r#"sim_socket = "/tmp/x \"y\"/sim.sock""#,
            "window_secs = 3",
            "pair_min_ms = 50",
            "pair_max_ms = 3000",
            "reset_arm_ms = 5000",
            "reset_cancel_ms = 30000",
            r#"level = "debug""#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn stderr_tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e");
        std::fs::write(&p, "abcdefghij").unwrap();
        assert_eq!(read_tail(&p, 4).unwrap(), "…ghij");
        assert_eq!(read_tail(&p, 40).unwrap(), "abcdefghij");
    }
}
