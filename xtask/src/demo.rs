//! `cargo xtask demo`: the whole system on this machine. Builds the agent,
//! flock, the portal and the example app, then starts, in this order, the
//! example app (`examples/hello-app`), flock (portal + rendezvous) and
//! `intrustd` on a simulated board, registered with flock as `demo` and
//! publishing the app as `hello` (`--insecure-open`: no login yet). Then
//! it prints what to open and runs `intrustctl board watch` in the
//! foreground so LED changes show live. Ctrl-C (or `--for SECS`) stops
//! everything; each service runs in its own process group, which is
//! signalled as a whole, so nothing outlives the demo.
//!
//! An agent without the peer wiring (no `--insecure-open` in
//! `intrustd --help`) gets the board-only config; flock and the app still
//! start, and the demo says that the portal cannot reach it.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, say};
use crate::{apt, signals, web};

/// Debian packages the demo needs: none (Node.js for the portal comes
/// through `web::build`; on loopback no TURN server is needed).
const PACKAGES: &[&str] = &[];
/// Longest path a Unix socket address takes (sun_path is 108 bytes).
const MAX_SOCKET_PATH: usize = 107;
/// flock's port when free (else any free port, announced).
const FLOCK_PORT: u16 = 8470;
/// The example app's port when free (else any free port).
const APP_PORT: u16 = 8471;
/// The name the demo appliance registers with flock.
const DEVICE: &str = "demo";
/// The name the example app is published under.
const APP: &str = "hello";
/// How long each service may take to become ready.
const READY: Duration = Duration::from_secs(20);

/// The demo's files, all under `target/demo/`.
struct Layout {
    dir: PathBuf,
    config: PathBuf,
    state: PathBuf,
    control: PathBuf,
    sim: PathBuf,
    log: PathBuf,
    flock_config: PathBuf,
    registry: PathBuf,
    flock_log: PathBuf,
    app_log: PathBuf,
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
            flock_config: dir.join("flock.toml"),
            registry: dir.join("registry.json"),
            flock_log: dir.join("flock.log"),
            app_log: dir.join("hello-app.log"),
            dir,
        }
    }

    /// The agent's config; with `peer`, also `[rendezvous]` and `[peer]`.
    fn config_text(&self, peer: Option<(u16, u16)>) -> String {
        // Same keys as agent/intrustd.example.toml; paths absolute because
        // the sockets are announced to other terminals.
        let mut text = format!(
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
        );
        if let Some((flock_port, app_port)) = peer {
            text.push_str(&format!(
                "\n\
                 [rendezvous]\n\
                 flock_url = \"ws://127.0.0.1:{flock_port}/device\"\n\
                 name = \"{DEVICE}\"\n\
                 \n\
                 [peer]\n\
                 bind = \"127.0.0.1\"\n\
                 \n\
                 [peer.apps]\n\
                 {APP} = \"127.0.0.1:{app_port}\"\n"
            ));
        }
        text
    }

    /// flock on loopback, plain HTTP, no STUN/TURN (host candidates do).
    fn flock_config_text(&self, root: &Path, port: u16) -> String {
        format!(
            "# Written by `cargo xtask demo`; rewritten on every run.\n\
             listen = \"127.0.0.1:{port}\"\n\
             registry = {:?}\n\
             web_root = {:?}\n",
            self.registry.display().to_string(),
            root.join("flock/web/dist").display().to_string(),
        )
    }
}

/// `preferred` if nothing listens there, else a free port from the
/// kernel other than `avoid`; and whether it is the preferred one.
fn pick_port(preferred: u16, avoid: u16) -> Result<(u16, bool)> {
    if preferred != avoid && TcpListener::bind((Ipv4Addr::LOCALHOST, preferred)).is_ok() {
        return Ok((preferred, true));
    }
    loop {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
        let port = l.local_addr()?.port();
        if port != avoid {
            return Ok((port, false));
        }
    }
}

/// Whether this `intrustd` has the peer wiring (rendezvous, tunnel).
fn agent_has_peer(intrustd: &Path) -> bool {
    cmd::probe(Command::new(intrustd).arg("--help"))
        .is_some_and(|(_, help)| help.contains("--insecure-open"))
}

pub fn run(root: &Path, for_secs: Option<u64>) -> Result<()> {
    apt::ensure("demo", PACKAGES)?;
    cmd::run_log(cmd::cargo().current_dir(root).args([
        "build",
        "-p",
        "intrust-agent",
        "--bins",
        "-p",
        "flock",
        "-p",
        "hello-app",
    ]))?;
    web::build(root)?;
    let bin = crate::target_dir(root).join("debug");
    let (intrustd, intrustctl) = (bin.join("intrustd"), bin.join("intrustctl"));
    let (flock, hello) = (bin.join("flock"), bin.join("hello-app"));
    if !root.join("flock/web/dist/index.html").is_file() {
        bail!("the portal build left no flock/web/dist/index.html");
    }

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
    let (flock_port, preferred) = pick_port(FLOCK_PORT, 0)?;
    if !preferred {
        say(format!(
            "port {FLOCK_PORT} is taken: flock listens on 127.0.0.1:{flock_port} instead"
        ));
    }
    let (app_port, preferred) = pick_port(APP_PORT, flock_port)?;
    if !preferred {
        say(format!(
            "port {APP_PORT} is taken: the example app listens on 127.0.0.1:{app_port} instead"
        ));
    }
    let peer = agent_has_peer(&intrustd);
    if !peer {
        say(
            "note: this intrustd has no --insecure-open (no rendezvous or tunnel yet): \
             board-only agent; flock and the example app still start",
        );
    }

    // A fresh appliance every run: unpaired, a new key, so also a fresh
    // registry (the old one binds `demo` to last run's key).
    if l.state.exists() {
        fs::remove_dir_all(&l.state).with_context(|| format!("removing {}", l.state.display()))?;
    }
    fs::create_dir_all(&l.dir).with_context(|| format!("creating {}", l.dir.display()))?;
    for stale in [&l.control, &l.sim, &l.registry] {
        let _ = fs::remove_file(stale);
    }
    let agent_config = l.config_text(peer.then_some((flock_port, app_port)));
    fs::write(&l.config, agent_config)
        .with_context(|| format!("writing {}", l.config.display()))?;
    fs::write(&l.flock_config, l.flock_config_text(root, flock_port))
        .with_context(|| format!("writing {}", l.flock_config.display()))?;
    say(format!(
        "wrote {} and {}",
        rel(root, &l.config).display(),
        rel(root, &l.flock_config).display()
    ));
    if peer {
        // A config the agent refuses fails here, with its own message.
        cmd::output(
            Command::new(rel(root, &intrustd))
                .current_dir(root)
                .arg("--config")
                .arg(rel(root, &l.config))
                .arg("--check-config"),
        )?;
    }

    signals::catch();
    let mut demo = Demo {
        services: Vec::new(),
        watch: None,
    };
    let result = (|| {
        let app_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, app_port));
        demo.start(
            root,
            "hello-app",
            Command::new(rel(root, &hello)).arg(app_addr.to_string()),
            &l.app_log,
        )?;
        demo.wait_ready("hello-app", |_| {
            http_get(app_addr, "/").is_ok_and(|(s, _)| s == 200)
        })?;

        let flock_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, flock_port));
        demo.start(
            root,
            "flock",
            Command::new(rel(root, &flock))
                .arg("--config")
                .arg(rel(root, &l.flock_config)),
            &l.flock_log,
        )?;
        demo.wait_ready("flock", |_| {
            http_get(flock_addr, "/").is_ok_and(|(s, _)| s == 200)
        })?;

        let mut daemon_cmd = Command::new(rel(root, &intrustd));
        daemon_cmd.arg("--config").arg(rel(root, &l.config));
        if peer {
            daemon_cmd.arg("--insecure-open");
        }
        demo.start(root, "intrustd", &mut daemon_cmd, &l.log)?;
        let control = l.control.clone();
        demo.wait_ready("intrustd", move |_| UnixStream::connect(&control).is_ok())?;
        let registered = peer && demo.wait_registered(&l.registry);
        demo.run(
            root,
            &l,
            &intrustctl,
            for_secs,
            flock_port,
            app_port,
            peer,
            registered,
        )
    })();
    let stopped = demo.stop();
    result.and(stopped)
}

/// A background service: its own process group, output in a log file.
struct Service {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

struct Demo {
    /// In start order; stopped in reverse.
    services: Vec<Service>,
    watch: Option<Child>,
}

impl Demo {
    fn start(
        &mut self,
        root: &Path,
        name: &'static str,
        cmd: &mut Command,
        log_path: &Path,
    ) -> Result<()> {
        let log =
            File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
        cmd.current_dir(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Own process group: Ctrl-C reaches the watcher and us; we stop
            // the services ourselves, after the watcher, so none outlives
            // the demo.
            .process_group(0);
        say(format!(
            "$ {}  (log: {})",
            cmd::display(cmd),
            rel(root, log_path).display()
        ));
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        self.services.push(Service {
            name,
            child: Some(child),
            log: log_path.to_path_buf(),
        });
        Ok(())
    }

    /// Polls `ready` until it holds, the last started service exits, we
    /// are interrupted, or `READY` passes.
    fn wait_ready(&mut self, name: &str, mut ready: impl FnMut(&mut Self) -> bool) -> Result<()> {
        let deadline = Instant::now() + READY;
        loop {
            if ready(self) {
                say(format!("{name} is ready"));
                return Ok(());
            }
            self.check_services()?;
            if signals::received().is_some() {
                bail!("interrupted while waiting for {name}");
            }
            if Instant::now() >= deadline {
                let log = self
                    .services
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| tail(&s.log))
                    .unwrap_or_default();
                bail!(
                    "{name} was not ready within {} s; its log:\n{log}",
                    READY.as_secs()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) until flock's registry holds the demo's name, which
    /// flock writes before it answers `Registered`. A miss is a warning:
    /// the board part of the demo still works.
    fn wait_registered(&mut self, registry: &Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        let needle = format!("\"{DEVICE}\"");
        while Instant::now() < deadline && signals::received().is_none() {
            if fs::read_to_string(registry).is_ok_and(|t| t.contains(&needle)) {
                say(format!("the appliance registered with flock as {DEVICE:?}"));
                return true;
            }
            if self.check_services().is_err() {
                return false;
            }
            sleep(Duration::from_millis(100));
        }
        say(
            "warning: the appliance did not register with flock within 15 s \
             (see target/demo/intrustd.log and target/demo/flock.log)",
        );
        false
    }

    /// An error naming the first service that has exited, with its log.
    fn check_services(&mut self) -> Result<()> {
        for s in &mut self.services {
            if let Some(status) = try_wait(&mut s.child)? {
                bail!(
                    "{} exited ({status}); the end of its log:\n{}",
                    s.name,
                    tail(&s.log)
                );
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        root: &Path,
        l: &Layout,
        intrustctl: &Path,
        for_secs: Option<u64>,
        flock_port: u16,
        app_port: u16,
        peer: bool,
        registered: bool,
    ) -> Result<()> {
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

        say("the appliance agent is running on a simulated board.");
        let portal = format!("http://127.0.0.1:{flock_port}/");
        eprintln!();
        if peer {
            eprintln!("  Open {portal} in a browser, enter `{DEVICE}`, then open the app `{APP}`.");
            eprintln!(
                "  Everything on its page comes through the WebRTC tunnel: the style sheet,\n  \
                 script and picture, a click counter (XMLHttpRequest, fetch and a WebSocket)\n  \
                 and a guest book form whose cookie the page greets you by."
            );
            if !registered {
                eprintln!(
                    "  (The appliance has not registered yet; the portal may say it is offline.)"
                );
            }
        } else {
            eprintln!(
                "  The portal is at {portal}, but this intrustd has no rendezvous or tunnel\n  \
                 yet (no --insecure-open), so `{DEVICE}` shows as offline there."
            );
        }
        eprintln!(
            "  The example app directly (no tunnel): http://127.0.0.1:{app_port}/\n  \
             flock (portal + signalling): 127.0.0.1:{flock_port}; the app: 127.0.0.1:{app_port}."
        );

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
            "\n  Logs: {}, {}, {}\n  LED and button events follow; Ctrl-C stops the demo.\n",
            rel(root, &l.log).display(),
            rel(root, &l.flock_log).display(),
            rel(root, &l.app_log).display(),
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
            self.check_services()?;
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

    /// Stops the watcher, then the services in reverse start order:
    /// SIGTERM to each process group (the watcher gets our own
    /// SIGINT/SIGTERM forwarded), SIGKILL after 5 s. Errors if one had to
    /// be killed or failed.
    fn stop(&mut self) -> Result<()> {
        let forwarded = signals::received().unwrap_or(libc::SIGTERM);
        if let Some(watch) = self.watch.as_mut() {
            if watch.try_wait()?.is_none() {
                signals::send(watch.id() as i32, forwarded);
            }
        }
        let mut result = stop_child(&mut self.watch, "intrustctl board watch", false);
        for s in self.services.iter_mut().rev() {
            if let Some(c) = s.child.as_mut() {
                if c.try_wait()?.is_none() {
                    signals::send(-(c.id() as i32), libc::SIGTERM);
                }
            }
            let stopped = stop_child(&mut s.child, s.name, true);
            result = result.and(stopped);
        }
        if result.is_ok() {
            say("demo stopped");
        }
        result
    }
}

impl Drop for Demo {
    /// Last resort (a panic): no child outlives the demo.
    fn drop(&mut self) {
        if let Some(c) = self.watch.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for c in self.services.iter_mut().filter_map(|s| s.child.as_mut()) {
            signals::send(-(c.id() as i32), libc::SIGKILL);
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

/// Waits up to 5 s for a signalled child, then kills it (its whole process
/// group when `group`; the group id stays ours until the leader is reaped).
fn stop_child(child: &mut Option<Child>, name: &str, group: bool) -> Result<()> {
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
    if group {
        signals::send(-(c.id() as i32), libc::SIGKILL);
    } else {
        let _ = c.kill();
    }
    let _ = c.wait();
    *child = None;
    bail!("{name} did not stop within 5 s of SIGTERM and was killed")
}

/// A plain HTTP/1.1 GET (readiness checks): status code and body.
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("not an HTTP response")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((code, body.to_string()))
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
