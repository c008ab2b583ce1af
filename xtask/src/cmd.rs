//! Running external programs: every command is echoed before it runs, and a
//! failure names the command and its exit status.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A message from the xtask itself (stderr, so stdout stays for results
/// such as benchmark JSON lines and test output).
pub fn say(msg: impl AsRef<str>) {
    let msg = msg.as_ref();
    if io::stderr().is_terminal() {
        eprintln!("\x1b[1mxtask:\x1b[0m {msg}");
    } else {
        eprintln!("xtask: {msg}");
    }
}

/// The cargo that runs us (same toolchain), falling back to `cargo`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// Shell-like rendering of a command, environment overrides first.
pub fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            parts.push(format!(
                "{}={}",
                k.to_string_lossy(),
                quote(&v.to_string_lossy())
            ));
        }
    }
    let prog = cmd.get_program().to_string_lossy().into_owned();
    // `$CARGO` is a full toolchain path; people type `cargo`.
    let prog = if prog.ends_with("/cargo") {
        "cargo".to_string()
    } else {
        prog
    };
    parts.push(prog);
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn echo(cmd: &Command) {
    say(format!("$ {}", display(cmd)));
}

fn check(cmd: &Command, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{}` failed ({status})", display(cmd))
    }
}

/// Runs with inherited stdin/stdout/stderr (output streams as it comes).
pub fn run(cmd: &mut Command) -> Result<()> {
    echo(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    check(cmd, status)
}

/// Runs a tool whose stdout is a log, not a result (apt-get, builds): its
/// stdout goes to our stderr so that our stdout carries only results.
pub fn run_log(cmd: &mut Command) -> Result<()> {
    let _ = io::stdout().flush();
    let err = io::stderr().as_fd().try_clone_to_owned()?;
    cmd.stdout(Stdio::from(err));
    run(cmd)
}

/// Runs and captures stdout (stderr is inherited); fails on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    echo(cmd);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    check(cmd, out.status)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Captures stdout without echoing; `None` if the program cannot be started.
pub fn probe(cmd: &mut Command) -> Option<(ExitStatus, String)> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    Some((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Whether `prog` is found on PATH.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(prog).is_file()))
}

/// How a time-limited run ended.
pub enum Limited {
    Exited(ExitStatus, String),
    TimedOut,
}

/// Runs in its own process group, stdin closed, for at most `limit`. On
/// timeout, or on our SIGINT/SIGTERM (caught while it runs), the whole group
/// (the program and whatever it started, e.g. an agent under QEMU) gets
/// SIGTERM, then SIGKILL after 5 s. With `capture`, stdout is returned
/// instead of shown. An interruption is an error.
pub fn run_limited(cmd: &mut Command, limit: Duration, capture: bool) -> Result<Limited> {
    echo(cmd);
    cmd.stdin(Stdio::null()).process_group(0);
    if capture {
        cmd.stdout(Stdio::piped());
    }
    crate::signals::catch();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    // Read in a thread so a chatty child never blocks on a full pipe.
    let reader = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    });
    let collect = |reader: Option<std::thread::JoinHandle<String>>| {
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    };
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Limited::Exited(status, collect(reader)));
        }
        let interrupted = crate::signals::received();
        if interrupted.is_some() || Instant::now() >= deadline {
            let group = -(child.id() as i32);
            crate::signals::send(group, libc::SIGTERM);
            let grace = Instant::now() + Duration::from_secs(5);
            while child.try_wait()?.is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
            // The group may outlive its leader; its id stays reserved until
            // we reap the leader, so kill the group before waiting.
            crate::signals::send(group, libc::SIGKILL);
            let _ = child.wait();
            drop(reader); // its pipe is closed now; nothing to wait for
            if let Some(sig) = interrupted {
                bail!("`{}` interrupted (signal {sig})", display(cmd));
            }
            return Ok(Limited::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
