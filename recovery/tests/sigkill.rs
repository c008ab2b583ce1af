//! The real binary killed mid-install: `intrust-recovery install` writes a
//! bundle into regular files standing in for slot B while slot A is booted,
//! and is SIGKILLed at seeded random moments. After every kill, `status
//! --json` works, the boot model on the env file picks A (byte-identical)
//! or B holding the bundle's images completely, the data area is
//! untouched, and a new install then succeeds. Runs alternate between a
//! redundant and a single-copy U-Boot env.
//!
//! A SIGKILL loses no write the process issued (the page cache keeps it),
//! but it can stop a write between pages, so this checks the write order
//! of the real process, not power cuts (those are `crash_states.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use intrust_recovery::boot::{BootState, Decision, Slot, DEFAULT_TRIES};
use intrust_recovery::bundle::{self, ImageSource, Part, SigningKey};
use intrust_recovery::crash::SplitMix64;
use intrust_recovery::env::Env;
use intrust_recovery::uboot_env::{EnvConfig, UbootEnv};

const ROOT_LEN: usize = 3 << 20;
const KERN_LEN: usize = 512 << 10;
const ENV_SIZE: u64 = 0x4000;
const RUNS: u64 = 20;
const SEED: u64 = 0x5eed_0fc0_ffee;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

struct Rig {
    dir: tempfile::TempDir,
    rootfs: Vec<u8>,
    kernel: Vec<u8>,
    a_root: Vec<u8>,
    a_kern: Vec<u8>,
    data: Vec<u8>,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let rig = Rig {
            dir,
            rootfs: pattern(ROOT_LEN - 4321, 0x5b),
            kernel: pattern(KERN_LEN - 99, 0x6c),
            a_root: pattern(ROOT_LEN, 0xa1),
            a_kern: pattern(KERN_LEN, 0xa2),
            data: pattern(64 << 10, 0xd0),
        };
        let key = std::fs::read_to_string(fixture("test-key.pub")).unwrap();
        let p = |n: &str| rig.path(n).display().to_string();
        std::fs::write(
            rig.path("recovery.toml"),
            format!(
                r#"board = "sim"
trusted_keys = ["{key}"]
data = "{data}"
booted_slot = "A"

[slots.A]
rootfs = {{ device = "{ar}" }}
kernel = {{ device = "{ak}" }}

[slots.B]
rootfs = {{ device = "{br}" }}
kernel = {{ device = "{bk}" }}

[bootloader]
kind = "uboot"
fw_env_config = "{fw}"
"#,
                key = key.trim(),
                data = p("data"),
                ar = p("a-root"),
                ak = p("a-kern"),
                br = p("b-root"),
                bk = p("b-kern"),
                fw = p("fw_env.config"),
            ),
        )
        .unwrap();
        let signer =
            SigningKey::from_pkcs8(&std::fs::read(fixture("test-key.pk8")).unwrap()).unwrap();
        let image = |part, data: Vec<u8>| ImageSource {
            part,
            open: Box::new(move || {
                Ok(Box::new(std::io::Cursor::new(data.clone())) as Box<dyn std::io::Read>)
            }),
        };
        let mut out = Vec::new();
        bundle::create(
            &signer,
            "2.0",
            "sim",
            &mut [
                image(Part::Rootfs, rig.rootfs.clone()),
                image(Part::Kernel, rig.kernel.clone()),
            ],
            &mut out,
        )
        .unwrap();
        std::fs::write(rig.path("update.bundle"), out).unwrap();
        rig
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Slot A good and booted, B holding an older release, env "A B" with
    /// 3 tries each (both redundant copies valid).
    fn reset(&self, redundant: bool) {
        let w = |n: &str, bytes: &[u8]| std::fs::write(self.path(n), bytes).unwrap();
        w("a-root", &self.a_root);
        w("a-kern", &self.a_kern);
        w("b-root", &pattern(ROOT_LEN, 0xb1));
        w("b-kern", &pattern(KERN_LEN, 0xb2));
        w("data", &self.data);
        w("uboot.env", &vec![0; 2 * ENV_SIZE as usize]);
        let env = self.path("uboot.env");
        let config = if redundant {
            EnvConfig::redundant((&env, 0), (&env, ENV_SIZE as i64), ENV_SIZE)
        } else {
            EnvConfig::single(&env, 0, ENV_SIZE)
        };
        w("fw_env.config", config.to_config_text().as_bytes());
        let mut vars = Env::new();
        vars.set("bootcmd", "run intrust_boot").unwrap();
        BootState::default().apply_to(&mut vars);
        let mut env = UbootEnv::open(&config).unwrap();
        env.write(&vars).unwrap();
        env.write(&vars).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_intrust-recovery"));
        cmd.args(args)
            .arg("--config")
            .arg(self.path("recovery.toml"))
            .stdin(Stdio::null());
        cmd
    }

    fn install(&self) -> Command {
        let mut cmd = self.command(&["install"]);
        cmd.arg(self.path("update.bundle"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    fn status(&self) -> serde_json::Value {
        let out: Output = self.command(&["status", "--json"]).output().unwrap();
        assert!(out.status.success(), "status failed: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The slot the bootloader boots first; any B it would boot before
    /// falling back to A must be complete. Checks A and the data area.
    fn boot(&self, what: &str) -> Slot {
        let read = |n: &str| std::fs::read(self.path(n)).unwrap();
        assert!(
            read("a-root") == self.a_root,
            "slot A rootfs changed: {what}"
        );
        assert!(
            read("a-kern") == self.a_kern,
            "slot A kernel changed: {what}"
        );
        assert!(read("data") == self.data, "data area changed: {what}");
        let config = EnvConfig::load(&self.path("fw_env.config")).unwrap();
        let env = UbootEnv::open(&config).unwrap().read().unwrap().env;
        let b_complete = read("b-root")[..self.rootfs.len()] == self.rootfs[..]
            && read("b-kern")[..self.kernel.len()] == self.kernel[..];
        let mut state = BootState::from_env(&env);
        let mut first = None;
        for _ in 0..(2 * DEFAULT_TRIES + 2) {
            match state.decide() {
                Decision::ResetTriesAndReboot => continue,
                Decision::Boot(Slot::A) => {
                    first.get_or_insert(Slot::A);
                    break;
                }
                Decision::Boot(Slot::B) => {
                    first.get_or_insert(Slot::B);
                    assert!(b_complete, "slot B would boot half written: {what}");
                }
            }
        }
        first.unwrap_or_else(|| panic!("no slot boots: {what}"))
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let rig = Rig::new();
    // How long one install takes here, so kills spread over all of it.
    rig.reset(true);
    let started = Instant::now();
    assert!(rig.install().status().unwrap().success());
    let full = started.elapsed();
    assert_eq!(rig.boot("uninterrupted install"), Slot::B);

    let mut rng = SplitMix64(SEED);
    let window = full.as_micros() as u64 * 6 / 5 + 1;
    let (mut booted_a, mut booted_b, mut b_marked_bad) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(45);
    for run in 0..RUNS {
        let redundant = run % 2 == 0;
        rig.reset(redundant);
        let delay = Duration::from_micros(rng.next_u64() % window);
        let mut child = rig.install().spawn().unwrap();
        std::thread::sleep(delay);
        // SIGKILL; an install that already finished is simply reaped.
        let _ = child.kill();
        let exit = child.wait().unwrap();
        let what = format!(
            "run {run} ({} env), killed after {delay:?} of ~{full:?}, exit {exit}",
            if redundant { "redundant" } else { "single" }
        );

        let status = rig.status();
        assert_eq!(status["booted"], "A", "{what}: {status}");
        match rig.boot(&what) {
            Slot::A => booted_a += 1,
            Slot::B => booted_b += 1,
        }
        if status["tries"]["B"] == 0 {
            b_marked_bad += 1;
        }
        // Nothing is wedged: the next install completes and activates B.
        assert!(rig.install().status().unwrap().success(), "{what}");
        assert_eq!(rig.status()["pending"], "B", "{what}");
        assert_eq!(rig.boot(&what), Slot::B, "{what}");
        assert!(Instant::now() < deadline, "too slow: stopped at {what}");
    }
    println!(
        "SIGKILL runs: {RUNS} (install takes ~{full:?}); afterwards A booted {booted_a} times \
         ({b_marked_bad} with B marked bad mid-install), the complete B {booted_b} times"
    );
}
