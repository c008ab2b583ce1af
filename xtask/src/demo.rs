//! `cargo xtask demo`: the appliance agent on a simulated board, on this
//! machine. Starts `intrustd` with a config under `target/demo/`, then runs
//! `intrustctl board watch` in the foreground so LED changes show live.
//! Ctrl-C (or `--for SECS`) stops both; the daemon never outlives us.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, say};
use crate::{apt, signals};

/// Debian packages the demo needs (none yet; the rendezvous issue adds coturn).
const PACKAGES: &[&str] = &[];
/// Longest path a Unix socket address takes (sun_path is 108 bytes).
const MAX_SOCKET_PATH: usize = 107;

fn signal(child: &Child, sig: libc::c_int) {
    signals::send(child.id() as i32, sig);
}

/// The demo's files, all under `target/demo/`.
struct Layout {
    dir: PathBuf,
    config: PathBuf,
    state: PathBuf,
    control: PathBuf,
    sim: PathBuf,
    log: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Layout {
        let dir = crate::target_dir(root).join("demo");
        Layout {
            config: dir.join("intrustd.toml"),
            state: dir.join("state"),
            control: dir.join("control.sock"),
            sim: dir.join("sim.sock"),
            log: dir.join("intrustd.log"),
            dir,
        }
    }

    fn config_text(&self) -> String {
        // Same keys as agent/intrustd.example.toml; paths absolute because
        // the sockets are announced to other terminals.
        format!(
            "# Written by `cargo xtask demo`; rewritten on every run.\n\
             state_dir = {:?}\n\
             board = \"sim\"\n\
             control_socket = {:?}\n\
             sim_socket = {:?}\n\
             \n\
             [pairing]\n\
             window_secs = 120\n\
             \n\
             [log]\n\
             level = \"info\"\n",
            self.state.display().to_string(),
            self.control.display().to_string(),
            self.sim.display().to_string(),
        )
    }
}

pub fn run(root: &Path, for_secs: Option<u64>) -> Result<()> {
    apt::ensure("demo", PACKAGES)?;
    cmd::run_log(
        cmd::cargo()
            .current_dir(root)
            .args(["build", "-p", "intrust-agent", "--bins"]),
    )?;
    let bin = crate::target_dir(root).join("debug");
    let (intrustd, intrustctl) = (bin.join("intrustd"), bin.join("intrustctl"));

    let l = Layout::new(root);
    for sock in [&l.control, &l.sim] {
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "the socket path {} is longer than a Unix socket allows ({MAX_SOCKET_PATH} bytes); \
                 clone the project to a shorter path or set CARGO_TARGET_DIR",
                sock.display()
            );
        }
    }
    if UnixStream::connect(&l.control).is_ok() {
        bail!(
            "a demo agent is already listening on {}; stop the other `cargo xtask demo` first",
            l.control.display()
        );
    }
    // A fresh appliance every run: unpaired, no state from last time.
    if l.state.exists() {
        fs::remove_dir_all(&l.state).with_context(|| format!("removing {}", l.state.display()))?;
    }
    fs::create_dir_all(&l.dir).with_context(|| format!("creating {}", l.dir.display()))?;
    for stale in [&l.control, &l.sim] {
        let _ = fs::remove_file(stale);
    }
    fs::write(&l.config, l.config_text())
        .with_context(|| format!("writing {}", l.config.display()))?;
    say(format!("wrote {}", rel(root, &l.config).display()));

    signals::catch();
    let log = File::create(&l.log).with_context(|| format!("creating {}", l.log.display()))?;
    let mut daemon_cmd = Command::new(rel(root, &intrustd));
    daemon_cmd
        .current_dir(root)
        .arg("--config")
        .arg(rel(root, &l.config))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Own process group: Ctrl-C reaches the watcher and us; we stop the
        // daemon ourselves, after the watcher, so it never outlives the demo.
        .process_group(0);
    say(format!(
        "$ {}  (log: {})",
        cmd::display(&daemon_cmd),
        rel(root, &l.log).display()
    ));
    let daemon = daemon_cmd
        .spawn()
        .with_context(|| format!("starting {}", intrustd.display()))?;
    let mut demo = Demo {
        daemon: Some(daemon),
        watch: None,
    };

    let result = demo.run(root, &l, &intrustctl, for_secs);
    let stopped = demo.stop();
    result.and(stopped)
}

struct Demo {
    daemon: Option<Child>,
    watch: Option<Child>,
}

impl Demo {
    fn run(
        &mut self,
        root: &Path,
        l: &Layout,
        intrustctl: &Path,
        for_secs: Option<u64>,
    ) -> Result<()> {
        self.wait_for_control(l)?;
        let ctl = rel(root, intrustctl);
        let sock = rel(root, &l.control);
        let ctl_cmd = |args: &str| format!("{} --socket {} {args}", ctl.display(), sock.display());

        let status = cmd::output(
            Command::new(&ctl)
                .current_dir(root)
                .arg("--socket")
                .arg(&sock)
                .arg("status"),
        );
        match status {
            Ok(out) => print!("{out}"),
            // The smoke run must prove the control API answers.
            Err(e) if for_secs.is_some() => return Err(e),
            Err(e) => say(format!("warning: {e:#}")),
        }

        // Later issues start more of the demo here, in this order: the
        // rendezvous (flock + coturn) and the example app; each becomes a
        // child stopped in `Demo::stop` like the daemon.

        say("the appliance agent is running on a simulated board.");
        let tries = [
            (ctl_cmd("status"), "appliance state, LEDs, pairing window"),
            (
                ctl_cmd("board tap pair"),
                "PAIR press: opens the pairing window",
            ),
            (
                ctl_cmd("board hold reset --ms 6000"),
                "hold RESET 6 s: arms, then requests a factory reset",
            ),
        ];
        let width = tries.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
        eprintln!("\n  In another terminal, in {}:\n", root.display());
        for (c, what) in &tries {
            eprintln!("    {c:<width$}  # {what}");
        }
        eprintln!(
            "\n  Agent log: {}\n  LED and button events follow; Ctrl-C stops the demo.\n",
            rel(root, &l.log).display()
        );

        let mut watch_cmd = Command::new(&ctl);
        watch_cmd
            .current_dir(root)
            .arg("--socket")
            .arg(&sock)
            .args(["board", "watch"]);
        say(format!("$ {}", cmd::display(&watch_cmd)));
        self.watch = Some(
            watch_cmd
                .spawn()
                .context("starting intrustctl board watch")?,
        );

        let deadline = for_secs.map(|s| Instant::now() + Duration::from_secs(s));
        loop {
            if signals::received().is_some() {
                eprintln!();
                say("stopping the demo");
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                say(format!(
                    "{} s are up, stopping the demo",
                    for_secs.unwrap_or(0)
                ));
                return Ok(());
            }
            if let Some(status) = try_wait(&mut self.daemon)? {
                bail!(
                    "intrustd exited ({status}); the end of its log:\n{}",
                    tail(&l.log)
                );
            }
            if let Some(status) = try_wait(&mut self.watch)? {
                // Ctrl-C reaches the watcher too; our flag may lag a moment.
                sleep(Duration::from_millis(50));
                if status.success() || signals::received().is_some() {
                    say("intrustctl board watch ended");
                    return Ok(());
                }
                bail!("intrustctl board watch failed ({status})");
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the agent accepts connections on its control socket.
    fn wait_for_control(&mut self, l: &Layout) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if UnixStream::connect(&l.control).is_ok() {
                return Ok(());
            }
            if let Some(status) = try_wait(&mut self.daemon)? {
                bail!(
                    "intrustd exited at start ({status}); its log:\n{}",
                    tail(&l.log)
                );
            }
            if signals::received().is_some() {
                bail!("interrupted while waiting for intrustd");
            }
            if Instant::now() >= deadline {
                bail!(
                    "intrustd did not open its control socket {} within 20 s; its log:\n{}",
                    l.control.display(),
                    tail(&l.log)
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Stops the watcher, then the daemon: SIGTERM (our own SIGINT/SIGTERM
    /// forwarded), SIGKILL after 5 s. Errors if the daemon had to be killed.
    fn stop(&mut self) -> Result<()> {
        let forwarded = signals::received().unwrap_or(libc::SIGTERM);
        if let Some(watch) = self.watch.as_mut() {
            if watch.try_wait()?.is_none() {
                signal(watch, forwarded);
            }
        }
        let watch_ok = stop_child(&mut self.watch, "intrustctl board watch").is_ok();
        if let Some(d) = self.daemon.as_mut() {
            if d.try_wait()?.is_none() {
                signal(d, libc::SIGTERM);
            }
        }
        let daemon = stop_child(&mut self.daemon, "intrustd");
        if watch_ok && daemon.is_ok() {
            say("demo stopped");
        }
        daemon
    }
}

impl Drop for Demo {
    /// Last resort (a panic): no child outlives the demo.
    fn drop(&mut self) {
        for c in [self.watch.as_mut(), self.daemon.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn try_wait(child: &mut Option<Child>) -> Result<Option<ExitStatus>> {
    match child.as_mut() {
        Some(c) => {
            let status = c.try_wait()?;
            if status.is_some() {
                *child = None;
            }
            Ok(status)
        }
        None => Ok(None),
    }
}

/// Waits up to 5 s for a signalled child, then kills it.
fn stop_child(child: &mut Option<Child>, name: &str) -> Result<()> {
    let Some(c) = child.as_mut() else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(status) = c.try_wait()? {
            *child = None;
            // Ended by our SIGTERM/SIGINT without a handler is a clean stop too.
            let by_signal = matches!(status.signal(), Some(libc::SIGTERM | libc::SIGINT));
            if status.success() || by_signal {
                return Ok(());
            }
            bail!("{name} exited with {status} when asked to stop");
        }
        sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    *child = None;
    bail!("{name} did not stop within 5 s of SIGTERM and was killed")
}

fn rel(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf())
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .is_err()
    {
        return format!("(cannot read {})", path.display());
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}
