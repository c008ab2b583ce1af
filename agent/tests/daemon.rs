//! End-to-end tests of the real `intrustd` binary: a temp config with a sim
//! board, driven over the control and sim sockets. Every wait is bounded.

use intrust_agent::appliance::{State, StateName};
use intrust_agent::control::{ControlClient, Response, Status};
use intrust_board::sim::{SimClient, SimOut};
use intrust_board::{Button, Edge, LedPattern, LedRole};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

struct Agent {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Agent {
    fn control(&self) -> PathBuf {
        self.dir.path().join("run/control.sock")
    }
    fn sim(&self) -> PathBuf {
        self.dir.path().join("run/sim.sock")
    }
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn config_text(dir: &Path, extra: &str) -> String {
        format!(
            "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/run/control.sock\"\nsim_socket = \"{d}/run/sim.sock\"\nboard = \"sim\"\n{extra}",
            d = dir.display()
        )
    }

    /// Starts intrustd with a temp config plus `extra` TOML; waits for the
    /// control socket.
    async fn start(extra: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("intrustd.toml");
        std::fs::write(&config, Self::config_text(dir.path(), extra)).unwrap();
        let child = spawn(&config, &dir.path().join("stderr"));
        let agent = Agent {
            dir,
            child: Some(child),
        };
        let t0 = Instant::now();
        loop {
            if ControlClient::connect(agent.control()).await.is_ok() {
                break;
            }
            assert!(
                t0.elapsed() < WAIT,
                "control socket did not appear; stderr:\n{}",
                agent.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        agent
    }

    async fn status(&self) -> Status {
        let mut c = ControlClient::connect(self.control()).await.unwrap();
        tokio::time::timeout(WAIT, c.status())
            .await
            .expect("status timed out")
            .unwrap()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_bounded(&mut child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(config: &Path, stderr: &Path) -> Child {
    spawn_env(config, std::fs::File::create(stderr).unwrap(), &[])
}

fn spawn_env(config: &Path, stderr: std::fs::File, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_intrustd"));
    cmd.arg("--config")
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > WAIT {
            let _ = child.kill();
            panic!("intrustd did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads sim messages until `f` matches one; returns it.
async fn sim_until(sim: &mut SimClient, what: &str, mut f: impl FnMut(&SimOut) -> bool) -> SimOut {
    let fut = async {
        loop {
            let m = sim.next().await.unwrap().expect("sim socket closed");
            if f(&m) {
                return m;
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn hello(sim: &mut SimClient) -> SimOut {
    sim_until(sim, "hello", |m| matches!(m, SimOut::Hello { .. })).await
}

fn status_led(p: LedPattern) -> impl FnMut(&SimOut) -> bool {
    move |m| matches!(m, SimOut::Led { led: LedRole::Status, pattern, .. } if *pattern == p)
}

#[tokio::test]
async fn status_pair_tap_and_clean_shutdown() {
    let mut agent = Agent::start("").await;
    let s = agent.status().await;
    assert_eq!(s.state, StateName::Unpaired);
    assert_eq!(s.board, "sim");
    assert_eq!(s.device_id.len(), 32);
    assert_eq!(s.sim_socket.as_deref(), Some(agent.sim().as_path()));
    assert_eq!(
        s.leds[&LedRole::Status],
        State::Unpaired.led(LedRole::Status)
    );
    assert_eq!(s.leds[&LedRole::Link], LedPattern::Off);
    assert!(!s.pairing_window.open);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(agent.control()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let mut sim = SimClient::connect(agent.sim()).await.unwrap();
    match hello(&mut sim).await {
        SimOut::Hello { leds, .. } => {
            assert_eq!(leds[&LedRole::Status], State::Unpaired.led(LedRole::Status))
        }
        _ => unreachable!(),
    }
    sim.press(Button::Pair).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    sim.release(Button::Pair).await.unwrap();
    let released = sim_until(&mut sim, "PAIR release", |m| {
        matches!(
            m,
            SimOut::Button {
                button: Button::Pair,
                edge: Edge::Release,
                ..
            }
        )
    })
    .await;
    let led = sim_until(
        &mut sim,
        "pairing pattern",
        status_led(State::PairingWindow.led(LedRole::Status)),
    )
    .await;
    if let (SimOut::Button { at_us: a, .. }, SimOut::Led { at_us: b, .. }) = (&released, &led) {
        // The target is a p99 of 5 ms (see the HIL benchmark); here only a
        // loose bound, so a loaded test machine does not fail it.
        assert!(b.saturating_sub(*a) < 500_000, "edge→LED took {} µs", b - a);
    }
    let s = agent.status().await;
    assert_eq!(s.state, StateName::PairingWindow);
    assert!(s.pairing_window.open && s.pairing_window.closes_in_ms.unwrap() > 290_000);

    // Closing over the control socket goes back to unpaired.
    let s = ControlClient::connect(agent.control())
        .await
        .unwrap()
        .pairing(false)
        .await
        .unwrap();
    assert_eq!(s.state, StateName::Unpaired);
    sim_until(
        &mut sim,
        "unpaired pattern",
        status_led(State::Unpaired.led(LedRole::Status)),
    )
    .await;

    let code = agent.terminate();
    assert_eq!(code.code(), Some(0), "stderr:\n{}", agent.stderr());
    assert!(!agent.control().exists(), "control socket left behind");
    assert!(!agent.sim().exists(), "sim socket left behind");
}

#[tokio::test]
async fn device_id_is_kept_across_restarts_and_corruption_stops_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, Agent::config_text(dir.path(), "")).unwrap();
    let mut a = Agent {
        child: Some(spawn(&config, &dir.path().join("stderr"))),
        dir,
    };
    let t0 = Instant::now();
    while ControlClient::connect(a.control()).await.is_err() {
        assert!(t0.elapsed() < WAIT, "{}", a.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = a.status().await.device_id;
    assert_eq!(a.terminate().code(), Some(0));
    a.child = Some(spawn(&config, &a.dir.path().join("stderr")));
    let t0 = Instant::now();
    while ControlClient::connect(a.control()).await.is_err() {
        assert!(t0.elapsed() < WAIT, "{}", a.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.status().await.device_id, id);
    assert_eq!(a.terminate().code(), Some(0));

    let id_file = a.dir.path().join("state/device-id");
    std::fs::write(&id_file, "not an id\n").unwrap();
    let mut child = spawn(&config, &a.dir.path().join("stderr"));
    let code = wait_bounded(&mut child);
    assert_ne!(code.code(), Some(0));
    let err = a.stderr();
    assert!(
        err.contains(&id_file.display().to_string()) && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&id_file).unwrap(),
        "not an id\n",
        "must not be overwritten"
    );
}

#[tokio::test]
async fn garbage_on_either_socket_gets_an_error_and_the_daemon_keeps_answering() {
    let mut agent = Agent::start("").await;
    for garbage in [
        &b"{\"cmd\":\"reboot\"}\n"[..],
        b"\xff\xfe not json\n",
        &[b'a'; 5000][..],
    ] {
        let mut s = tokio::net::UnixStream::connect(agent.control())
            .await
            .unwrap();
        s.write_all(garbage).await.unwrap();
        let _ = s.write_all(b"\n").await;
        let mut out = String::new();
        tokio::time::timeout(WAIT, s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        let r: Response =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out:?}: {e}"));
        assert!(!r.ok && r.error.is_some(), "{out}");
        assert_eq!(agent.status().await.state, StateName::Unpaired);
    }
    for garbage in [&b"{\"op\":\"explode\"}\n"[..], b"nonsense\n"] {
        let mut sim = SimClient::connect(agent.sim()).await.unwrap();
        hello(&mut sim).await;
        sim.send_raw(garbage).await.unwrap();
        sim_until(&mut sim, "error", |m| matches!(m, SimOut::Error { .. })).await;
        assert_eq!(agent.status().await.state, StateName::Unpaired);
    }
    assert!(
        agent.stderr().contains("malformed request"),
        "{}",
        agent.stderr()
    );
    assert_eq!(agent.terminate().code(), Some(0));
}

#[tokio::test]
async fn reset_hold_arms_and_release_requests_a_factory_reset() {
    let mut agent = Agent::start("[buttons]\nreset_arm_ms = 300\nreset_cancel_ms = 3000\n").await;
    let mut sim = SimClient::connect(agent.sim()).await.unwrap();
    hello(&mut sim).await;
    sim.press(Button::Reset).await.unwrap();
    sim_until(
        &mut sim,
        "armed pattern",
        status_led(State::FactoryResetArmed.led(LedRole::Status)),
    )
    .await;
    assert_eq!(agent.status().await.state, StateName::FactoryResetArmed);
    sim.release(Button::Reset).await.unwrap();
    sim_until(
        &mut sim,
        "back to unpaired",
        status_led(State::Unpaired.led(LedRole::Status)),
    )
    .await;
    let s = agent.status().await;
    assert_eq!(s.factory_reset_requests, 1);
    // The reset runs on a blocking thread: its warning may come a moment later.
    let t0 = Instant::now();
    while !agent.stderr().contains("not wired") {
        assert!(t0.elapsed() < WAIT, "{}", agent.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn malformed_config_fails_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "board = \"sim\"\n\n[buttons]\npair_min_ms = \"soon\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_intrustd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:4:", config.display())), "{err}");
    // Unknown key: line and the key's name.
    std::fs::write(&config, "bored = \"sim\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_intrustd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":1:") && err.contains("bored"), "{err}");
}

#[test]
fn check_config_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, Agent::config_text(dir.path(), "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_intrustd"))
        .args(["--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("state").exists(),
        "--check-config must not touch the state dir"
    );
    std::fs::write(&config, "board = \"no-such-board\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_intrustd"))
        .args(["--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-board"));
    let out = Command::new(env!("CARGO_BIN_EXE_intrustd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn intrustctl_says_when_the_agent_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_intrustctl"))
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is intrustd running?") && err.contains(&sock.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn intrustctl_status_pairing_and_tap() {
    let mut agent = Agent::start("").await;
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_intrustctl"))
            .arg("--socket")
            .arg(agent.control())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let human = ctl(&["status"]);
    assert!(
        human.contains("state:           unpaired") && human.contains("blink 500/500 ms"),
        "{human}"
    );
    let json: Status = serde_json::from_str(&ctl(&["status", "--json"])).unwrap();
    assert_eq!(json.state, StateName::Unpaired);
    assert!(ctl(&["pairing", "open"]).contains("open, closes in"));
    assert_eq!(agent.status().await.state, StateName::PairingWindow);
    ctl(&["pairing", "close"]);
    ctl(&["board", "tap", "pair", "--ms", "100"]);
    assert_eq!(agent.status().await.state, StateName::PairingWindow);
    assert_eq!(agent.terminate().code(), Some(0));
}

#[test]
fn systemd_ready_status_watchdog_and_journal_priorities() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, Agent::config_text(dir.path(), "")).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let env = [
        ("NOTIFY_SOCKET", notify_path.display().to_string()),
        ("WATCHDOG_USEC", "200000".to_string()),
        ("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino())),
    ];
    let mut child = spawn_env(&config, stderr, &env);
    let mut seen = String::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while !(seen.contains("READY=1")
        && seen.contains("STATUS=state: unpaired")
        && seen.contains("WATCHDOG=1"))
    {
        assert!(t0.elapsed() < WAIT, "notifications so far: {seen:?}");
        if let Ok(n) = notify.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_bounded(&mut child).code(), Some(0));
    let log = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(log.lines().count() >= 2, "{log}");
    for line in log.lines() {
        assert!(
            line.starts_with("<6>") || line.starts_with("<4>"),
            "no priority prefix: {line:?}\n{log}"
        );
        assert!(!line.contains('\x1b'), "ANSI in journal output: {line:?}");
    }
}

#[tokio::test]
async fn control_socket_refuses_other_users() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to connect as another uid");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let mut agent = Agent::start("").await;
    // Open the path to everyone, so only the SO_PEERCRED check stands in the way.
    for p in [
        agent.dir.path().to_owned(),
        agent.dir.path().join("run"),
        agent.control(),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_intrustctl"))
        .arg("--socket")
        .arg(agent.control())
        .arg("status")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("permission denied: uid 65534"), "{err}");
    assert_eq!(agent.status().await.state, StateName::Unpaired);
    assert_eq!(agent.terminate().code(), Some(0));
}
