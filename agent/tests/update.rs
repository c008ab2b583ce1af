//! The real `intrustd` and `intrustctl` with recovery wired: regular files
//! stand in for the slot devices, a single-copy U-Boot env file holds the
//! boot selection and a directory is the data area. Covers mark-good at
//! start, `intrustctl update apply|status`, a failed install shown as the
//! error state until `intrustctl error clear`, a RESET gesture wiping the
//! data area, and a broken recovery config stopping the start.

use intrust_agent::appliance::StateName;
use intrust_agent::control::{ControlClient, MarkGoodState, Status};
use intrust_board::sim::SimClient;
use intrust_board::Button;
use intrust_recovery::boot::{BootState, Slot};
use intrust_recovery::bootenv::{self, EnvStore};
use intrust_recovery::bundle::{self, ImageSource, Part, SigningKey};
use intrust_recovery::config::Bootloader;
use intrust_recovery::env::Env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);
const ROOT_LEN: usize = 64 * 1024;
const ENV_SIZE: usize = 0x4000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../recovery/tests/fixtures")
        .join(name)
}

/// A device in a temp dir, and intrustd running on it.
struct Device {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Device {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Slot files, data area, env (slot A booted once: 2 tries left, so
    /// mark-good has something to do) and both configs.
    fn new() -> Device {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("a-root"), vec![0xaa; ROOT_LEN]).unwrap();
        std::fs::write(p("b-root"), vec![0; ROOT_LEN]).unwrap();
        std::fs::create_dir(p("data")).unwrap();
        std::fs::write(p("data/identity"), "factory identity").unwrap();
        std::fs::write(p("data/owner.json"), "{\"owner\":\"someone\"}").unwrap();
        std::fs::create_dir(p("data/apps")).unwrap();
        std::fs::write(p("data/apps/notes.db"), "notes").unwrap();
        std::fs::write(p("uboot.env"), vec![0; ENV_SIZE]).unwrap();
        std::fs::write(
            p("fw_env.config"),
            format!("{} 0x0 {ENV_SIZE:#x}\n", p("uboot.env").display()),
        )
        .unwrap();
        let key = std::fs::read_to_string(fixture("test-key.pub")).unwrap();
        std::fs::write(
            p("recovery.toml"),
            format!(
                r#"board = "sim"
trusted_keys = ["{key}"]
data = "{data}"
booted_slot = "A"
state_dir = "{state}"

[slots.A]
rootfs = {{ device = "{ar}" }}

[slots.B]
rootfs = {{ device = "{br}" }}

[bootloader]
kind = "uboot"
fw_env_config = "{fw}"
"#,
                key = key.trim(),
                data = p("data").display(),
                state = p("recovery-state").display(),
                ar = p("a-root").display(),
                br = p("b-root").display(),
                fw = p("fw_env.config").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            p("intrustd.toml"),
            format!(
                "state_dir = \"{d}/state\"\ncontrol_socket = \"{d}/run/control.sock\"\n\
                 sim_socket = \"{d}/run/sim.sock\"\nboard = \"sim\"\n\
                 recovery_config = \"{d}/recovery.toml\"\n\
                 [buttons]\nreset_arm_ms = 300\nreset_cancel_ms = 5000\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let device = Device { dir, child: None };
        let mut vars = Env::new();
        let mut state = BootState::default();
        state.decide(); // the bootloader booted A once
        state.apply_to(&mut vars);
        device.env().write(&vars).unwrap();
        assert_eq!(device.boot_state().tries_left(Slot::A), 2);
        device
    }

    fn env(&self) -> Box<dyn EnvStore> {
        bootenv::open(&Bootloader::Uboot {
            fw_env_config: self.path("fw_env.config"),
        })
        .unwrap()
    }

    fn boot_state(&self) -> BootState {
        BootState::from_env(&self.env().read().unwrap())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_intrustd"))
            .arg("--config")
            .arg(self.path("intrustd.toml"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("stderr")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    async fn start(&mut self) {
        self.spawn();
        let t0 = Instant::now();
        while ControlClient::connect(self.path("run/control.sock"))
            .await
            .is_err()
        {
            assert!(
                t0.elapsed() < WAIT,
                "control socket did not appear; stderr:\n{}",
                self.stderr()
            );
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("intrustd exited with {status}; stderr:\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_intrustctl"))
            .arg("--socket")
            .arg(self.path("run/control.sock"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    async fn status(&self) -> Status {
        let mut c = ControlClient::connect(self.path("run/control.sock"))
            .await
            .unwrap();
        tokio::time::timeout(WAIT, c.status())
            .await
            .expect("status timed out")
            .unwrap()
    }

    async fn status_until(&self, what: &str, f: impl Fn(&Status) -> bool) -> Status {
        let t0 = Instant::now();
        loop {
            let s = self.status().await;
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < WAIT,
                "timed out waiting for {what}; status {s:?}\nstderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn make_bundle(rootfs: &[u8]) -> Vec<u8> {
    let key = SigningKey::from_pkcs8(&std::fs::read(fixture("test-key.pk8")).unwrap()).unwrap();
    let data = rootfs.to_vec();
    let mut out = Vec::new();
    bundle::create(
        &key,
        "2.0",
        "sim",
        &mut [ImageSource {
            part: Part::Rootfs,
            open: Box::new(move || {
                Ok(Box::new(std::io::Cursor::new(data.clone())) as Box<dyn std::io::Read>)
            }),
        }],
        &mut out,
    )
    .unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn mark_good_update_apply_status_error_clear_and_factory_reset() {
    let mut dev = Device::new();
    dev.start().await;

    // Mark-good once the agent is up: A gets its tries back.
    let s = dev
        .status_until("mark-good", |s| {
            !matches!(
                s.update.as_ref().map(|u| &u.mark_good),
                Some(MarkGoodState::Waiting | MarkGoodState::Running)
            )
        })
        .await;
    assert_eq!(
        s.update.unwrap().mark_good,
        MarkGoodState::Marked { slot: "A".into() }
    );
    assert_eq!(dev.boot_state().tries_left(Slot::A), 3);

    // A good bundle: progress, then slot B waits for the reboot.
    let rootfs: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let bundle_path = dev.path("update.bundle");
    std::fs::write(&bundle_path, make_bundle(&rootfs)).unwrap();
    let out = dev.ctl(&["update", "apply", bundle_path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}\n{}", dev.stderr());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("progress "), "{stdout}");
    assert!(
        stdout.ends_with("installed 2.0 into slot B; it starts on the next reboot\n"),
        "{stdout}"
    );
    let b_root = std::fs::read(dev.path("b-root")).unwrap();
    assert_eq!(&b_root[..rootfs.len()], &rootfs[..]);
    assert_eq!(
        std::fs::read(dev.path("a-root")).unwrap(),
        vec![0xaa; ROOT_LEN]
    );
    assert_eq!(dev.boot_state().order(), &[Slot::B, Slot::A]);

    let out = dev.ctl(&["update", "status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let s: Status = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s.state, StateName::Unpaired);
    let u = s.update.unwrap();
    assert_eq!(u.pending_slot.as_deref(), Some("B"));
    let slots = u.slots.unwrap();
    assert_eq!(
        (slots.booted.as_str(), slots.pending.as_deref()),
        ("A", Some("B"))
    );
    assert_eq!(slots.order, ["B", "A"]);
    let out = dev.ctl(&["update", "status"]);
    assert!(
        text(&out.stdout).contains("pending:         slot B on the next reboot"),
        "{}",
        text(&out.stdout)
    );

    // A corrupted bundle: non-zero exit, the error state, until cleared.
    let mut bad = make_bundle(&rootfs);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(dev.path("bad.bundle"), bad).unwrap();
    let out = dev.ctl(&["update", "apply", dev.path("bad.bundle").to_str().unwrap()]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("update failed") && stderr.contains("SHA-256 mismatch"),
        "{stderr}"
    );
    let s = dev.status().await;
    assert_eq!(s.state, StateName::Error);
    assert!(s.error.unwrap().contains("SHA-256 mismatch"));
    let out = dev.ctl(&["error", "clear"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(dev.status().await.state, StateName::Unpaired);
    let out = dev.ctl(&["update", "apply", "/nonexistent/u.bundle"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot find the bundle"),
        "{out:?}"
    );

    // RESET held past the arm time, then released: the data area is wiped
    // except the factory identity.
    let mut sim = SimClient::connect(dev.path("run/sim.sock")).await.unwrap();
    sim.press(Button::Reset).await.unwrap();
    dev.status_until("armed", |s| s.state == StateName::FactoryResetArmed)
        .await;
    sim.release(Button::Reset).await.unwrap();
    let t0 = Instant::now();
    while dev.path("data/owner.json").exists() {
        assert!(t0.elapsed() < WAIT, "data not wiped:\n{}", dev.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = dev
        .status_until("reset counted", |s| s.factory_reset_requests == 1)
        .await;
    assert_ne!(s.state, StateName::Error, "{s:?}");
    let left: Vec<_> = std::fs::read_dir(dev.path("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["identity"]);
    assert_eq!(
        std::fs::read_to_string(dev.path("data/identity")).unwrap(),
        "factory identity"
    );

    let mut child = dev.child.take().unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < WAIT, "intrustd did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "{}", dev.stderr());
}

#[tokio::test]
async fn a_broken_recovery_config_stops_the_start_with_file_and_line() {
    let mut dev = Device::new();
    let config = std::fs::read_to_string(dev.path("recovery.toml")).unwrap();
    std::fs::write(
        dev.path("recovery.toml"),
        config.replace("booted_slot = \"A\"", "booted_slot = \"C\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_intrustd"))
        .arg("--config")
        .arg(dev.path("intrustd.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let want = format!("{}:4:", dev.path("recovery.toml").display());
    assert!(text(&out.stderr).contains(&want), "{out:?}");
    dev.spawn();
    let mut child = dev.child.take().unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < WAIT, "intrustd did not stop");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(1));
    assert!(dev.stderr().contains(&want), "{}", dev.stderr());
    assert!(!dev.path("run/control.sock").exists());
}
