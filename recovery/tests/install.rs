//! Installing bundles into regular files standing in for slot devices, with
//! a single-copy U-Boot env file: the good path through the binary, and
//! every kind of bad bundle rejected with a clear error before activation,
//! the active slot, the data area and (for errors found before writing) the
//! env byte-identical afterwards.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use intrust_recovery::boot::{BootState, Slot};
use intrust_recovery::bootenv::{self, EnvStore};
use intrust_recovery::bundle::{self, BundleError, ImageSource, Part, SigningKey};
use intrust_recovery::config::{Bootloader, Config};
use intrust_recovery::env::Env;
use intrust_recovery::install::{self, InstallError, Progress};
use proptest::prelude::*;

const ROOT_LEN: usize = 64 * 1024;
const KERN_LEN: usize = 16 * 1024;
const ENV_SIZE: usize = 0x4000;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn test_key() -> SigningKey {
    SigningKey::from_pkcs8(&std::fs::read(fixture("test-key.pk8")).unwrap()).unwrap()
}

/// A device tree in a temp dir: slot files, data, env, config.
struct Rig {
    dir: tempfile::TempDir,
    config_path: PathBuf,
}

/// Everything an install must not change (env: see each test).
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    a_root: Vec<u8>,
    a_kern: Vec<u8>,
    data: Vec<u8>,
    env: Vec<u8>,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("a-root"), vec![0xaa; ROOT_LEN]).unwrap();
        std::fs::write(p("a-kern"), vec![0xab; KERN_LEN]).unwrap();
        std::fs::write(p("b-root"), vec![0; ROOT_LEN]).unwrap();
        std::fs::write(p("b-kern"), vec![0; KERN_LEN]).unwrap();
        std::fs::write(p("data"), b"user data, never touched").unwrap();
        std::fs::write(p("uboot.env"), vec![0; ENV_SIZE]).unwrap();
        std::fs::write(
            p("fw_env.config"),
            format!("{} 0x0 {ENV_SIZE:#x}\n", p("uboot.env").display()),
        )
        .unwrap();
        let key = std::fs::read_to_string(fixture("test-key.pub")).unwrap();
        let config = format!(
            r#"board = "sim"
trusted_keys = ["{key}"]
data = "{data}"
booted_slot = "A"
state_dir = "{state}"

[slots.A]
rootfs = {{ device = "{ar}" }}
kernel = {{ device = "{ak}" }}

[slots.B]
rootfs = {{ device = "{br}" }}
kernel = {{ device = "{bk}", size = {KERN_LEN} }}

[bootloader]
kind = "uboot"
fw_env_config = "{fw}"
"#,
            key = key.trim(),
            data = p("data").display(),
            state = p("state").display(),
            ar = p("a-root").display(),
            ak = p("a-kern").display(),
            br = p("b-root").display(),
            bk = p("b-kern").display(),
            fw = p("fw_env.config").display(),
        );
        let config_path = p("recovery.toml");
        std::fs::write(&config_path, config).unwrap();
        let rig = Rig { dir, config_path };
        // A device that booted A once and marked it good.
        let mut env = rig.env();
        let mut vars = Env::new();
        vars.set("bootcmd", "run intrust_boot").unwrap();
        BootState::default().apply_to(&mut vars);
        env.write(&vars).unwrap();
        rig
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    fn env(&self) -> Box<dyn EnvStore> {
        bootenv::open(&self.config().bootloader).unwrap()
    }

    fn boot_state(&self) -> BootState {
        BootState::from_env(&self.env().read().unwrap())
    }

    fn snapshot(&self) -> Snapshot {
        let r = |n: &str| std::fs::read(self.path(n)).unwrap();
        Snapshot {
            a_root: r("a-root"),
            a_kern: r("a-kern"),
            data: r("data"),
            env: r("uboot.env"),
        }
    }

    fn install(&self, bundle: &[u8]) -> Result<install::Installed, InstallError> {
        let config = self.config();
        let mut env = self.env();
        install::install(&config, bundle, Slot::A, env.as_mut(), &mut |_| {})
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_intrust-recovery"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn config_arg(&self) -> &str {
        self.config_path.to_str().unwrap()
    }
}

fn source(part: Part, data: Vec<u8>) -> ImageSource<'static> {
    ImageSource {
        part,
        open: Box::new(move || {
            Ok(Box::new(std::io::Cursor::new(data.clone())) as Box<dyn std::io::Read>)
        }),
    }
}

fn make_bundle(key: &SigningKey, board: &str, rootfs: &[u8], kernel: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    bundle::create(
        key,
        "2.0",
        board,
        &mut [
            source(Part::Rootfs, rootfs.to_vec()),
            source(Part::Kernel, kernel.to_vec()),
        ],
        &mut out,
    )
    .unwrap();
    out
}

fn good_bundle() -> Vec<u8> {
    make_bundle(&test_key(), "sim", &[0x5a; 40_000], &[0x6b; 3000])
}

/// The env after step 3 alone: the target B marked bad, nothing else.
fn env_with_b_marked_bad(rig: &Rig, before: &Snapshot) -> Vec<u8> {
    let scratch = tempfile::tempdir().unwrap();
    let env_path = scratch.path().join("env");
    std::fs::write(&env_path, &before.env).unwrap();
    let mut env = bootenv::open(&Bootloader::Uboot {
        fw_env_config: {
            let c = scratch.path().join("fw_env.config");
            std::fs::write(&c, format!("{} 0x0 {ENV_SIZE:#x}\n", env_path.display())).unwrap();
            c
        },
    })
    .unwrap();
    let mut vars = env.read().unwrap();
    let mut state = BootState::from_env(&vars);
    state.mark_bad(Slot::B);
    state.apply_to(&mut vars);
    env.write(&vars).unwrap();
    let _ = rig;
    std::fs::read(&env_path).unwrap()
}

#[test]
fn bundle_create_install_status_through_the_binary() {
    let rig = Rig::new();
    let rootfs: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let kernel = vec![0x42; 5000];
    std::fs::write(rig.path("rootfs.img"), &rootfs).unwrap();
    std::fs::write(rig.path("kernel.img"), &kernel).unwrap();
    let bundle_path = rig.path("update.bundle");
    let out = rig.run(
        &[
            "bundle",
            "create",
            "--key",
            fixture("test-key.pk8").to_str().unwrap(),
            "--board",
            "sim",
            "--version",
            "2.0",
            "--rootfs",
            rig.path("rootfs.img").to_str().unwrap(),
            "--kernel",
            rig.path("kernel.img").to_str().unwrap(),
            "-o",
            bundle_path.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let before = rig.snapshot();

    let out = rig.run(
        &[
            "install",
            "--config",
            rig.config_arg(),
            bundle_path.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "installed 2.0 into slot B\n"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("progress 0\n"), "{stderr}");
    assert!(stderr.ends_with("progress 100\n"), "{stderr}");

    let b_root = std::fs::read(rig.path("b-root")).unwrap();
    assert_eq!(&b_root[..rootfs.len()], &rootfs[..]);
    let b_kern = std::fs::read(rig.path("b-kern")).unwrap();
    assert_eq!(&b_kern[..kernel.len()], &kernel[..]);
    let after = rig.snapshot();
    assert_eq!(after.a_root, before.a_root);
    assert_eq!(after.a_kern, before.a_kern);
    assert_eq!(after.data, before.data);
    assert_eq!(
        rig.env().read().unwrap().get("bootcmd"),
        Some("run intrust_boot")
    );

    let out = rig.run(&["status", "--config", rig.config_arg(), "--json"], None);
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status,
        serde_json::json!({
            "booted": "A", "order": ["B", "A"], "pending": "B",
            "tries": {"A": 3, "B": 3}, "last_error": null
        })
    );

    // The same bundle from standard input, then rollback to A.
    let bytes = std::fs::read(&bundle_path).unwrap();
    let out = rig.run(
        &["install", "--config", rig.config_arg(), "-"],
        Some(&bytes),
    );
    assert!(out.status.success(), "{out:?}");
    let out = rig.run(&["rollback", "--config", rig.config_arg()], None);
    assert!(out.status.success(), "{out:?}");
    // The pending update is cancelled: the booted A boots next.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "slot A boots next\n");
    let out = rig.run(&["mark-good", "--config", rig.config_arg()], None);
    assert!(out.status.success(), "{out:?}");
    let out = rig.run(&["status", "--config", rig.config_arg()], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "booted=A\norder=A B\npending=\ntries.A=3\ntries.B=3\nlast_error=\n"
    );
}

#[test]
fn a_failed_install_is_reported_and_rollback_to_the_bad_slot_refused() {
    let rig = Rig::new();
    let mut bundle = good_bundle();
    let last = bundle.len() - 1;
    bundle[last] ^= 1;
    let out = rig.run(
        &["install", "--config", rig.config_arg(), "-"],
        Some(&bundle),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SHA-256 mismatch"), "{stderr}");
    assert!(stderr.contains("slot B stays marked bad"), "{stderr}");
    let out = rig.run(&["status", "--config", rig.config_arg(), "--json"], None);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["order"], serde_json::json!(["A", "B"]));
    assert_eq!(status["pending"], serde_json::Value::Null);
    assert_eq!(status["tries"]["B"], 0);
    assert!(status["last_error"]
        .as_str()
        .unwrap()
        .contains("SHA-256 mismatch"));
    let out = rig.run(&["rollback", "--config", rig.config_arg()], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to roll back to slot B"),
        "{stderr}"
    );
    // A good install clears the recorded error.
    let out = rig.run(
        &["install", "--config", rig.config_arg(), "-"],
        Some(&good_bundle()),
    );
    assert!(out.status.success(), "{out:?}");
    let out = rig.run(&["status", "--config", rig.config_arg(), "--json"], None);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["last_error"], serde_json::Value::Null);
}

#[test]
fn progress_reaches_the_total() {
    let rig = Rig::new();
    let mut seen = Vec::new();
    let config = rig.config();
    let mut env = rig.env();
    let done = install::install(
        &config,
        &good_bundle()[..],
        Slot::A,
        env.as_mut(),
        &mut |p| seen.push(p),
    )
    .unwrap();
    assert_eq!(done.bytes, 43_000);
    assert_eq!(
        seen.first(),
        Some(&Progress {
            done: 0,
            total: 43_000
        })
    );
    assert_eq!(
        seen.last(),
        Some(&Progress {
            done: 43_000,
            total: 43_000
        })
    );
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));
}

/// How much of the env a rejected bundle may have changed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum EnvAfter {
    /// Rejected before anything was written.
    Untouched,
    /// Rejected while streaming: slot B was marked bad (step 3) first.
    BMarkedBad,
}

fn assert_rejected(rig: &Rig, bundle: &[u8], expect: EnvAfter, check: impl Fn(&InstallError)) {
    let before = rig.snapshot();
    let err = rig.install(bundle).unwrap_err();
    check(&err);
    let after = rig.snapshot();
    assert_eq!(after.a_root, before.a_root, "active rootfs changed");
    assert_eq!(after.a_kern, before.a_kern, "active kernel changed");
    assert_eq!(after.data, before.data, "data area changed");
    let env = match expect {
        EnvAfter::Untouched => before.env.clone(),
        EnvAfter::BMarkedBad => env_with_b_marked_bad(rig, &before),
    };
    assert!(
        after.env == env,
        "env is not as expected ({expect:?}) after: {err}"
    );
    let state = rig.boot_state();
    assert_eq!(state.primary(), Slot::A, "not activated");
}

#[test]
fn truncated_bundles_are_rejected() {
    let rig = Rig::new();
    let good = good_bundle();
    let manifest_end = 48 + u32::from_be_bytes(good[12..16].try_into().unwrap()) as usize;
    for (cut, expect, what) in [
        (0, EnvAfter::Untouched, "header"),
        (20, EnvAfter::Untouched, "header"),
        (60, EnvAfter::Untouched, "manifest"),
        (manifest_end + 10, EnvAfter::Untouched, "signature"),
        (manifest_end + 64 + 100, EnvAfter::BMarkedBad, "payload"),
        (good.len() - 1, EnvAfter::BMarkedBad, "payload"),
    ] {
        assert_rejected(&rig, &good[..cut], expect, |e| {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("truncated: it ended inside the {what}")),
                "cut at {cut}: {msg}"
            );
        });
    }
}

#[test]
fn bad_signature_unknown_key_and_wrong_board_write_nothing() {
    let rig = Rig::new();
    let good = good_bundle();
    let mut flipped = good.clone();
    flipped[60] ^= 0x20;
    assert_rejected(&rig, &flipped, EnvAfter::Untouched, |e| {
        assert!(
            matches!(e, InstallError::Bundle(BundleError::BadSignature(_))),
            "{e}"
        );
        assert!(e.to_string().contains("bad signature"));
    });
    let stranger = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap();
    let unknown = make_bundle(&stranger, "sim", b"root", b"kern");
    assert_rejected(&rig, &unknown, EnvAfter::Untouched, |e| {
        assert!(
            matches!(e, InstallError::Bundle(BundleError::UnknownKey(k)) if *k == stranger.public_key()),
            "{e}"
        );
        assert!(e.to_string().contains("unknown key"));
    });
    let other_board = make_bundle(&test_key(), "rpi4", b"root", b"kern");
    assert_rejected(&rig, &other_board, EnvAfter::Untouched, |e| {
        assert_eq!(
            e.to_string(),
            "bundle rejected, nothing written: it is for board \"rpi4\", this is \"sim\""
        );
    });
}

#[test]
fn images_larger_than_the_slot_write_nothing() {
    let rig = Rig::new();
    let big_root = make_bundle(&test_key(), "sim", &vec![1; ROOT_LEN + 1], b"k");
    assert_rejected(&rig, &big_root, EnvAfter::Untouched, |e| {
        assert!(
            matches!(e, InstallError::TooLarge { part: Part::Rootfs, size, capacity, .. }
                if *size == ROOT_LEN as u64 + 1 && *capacity == ROOT_LEN as u64),
            "{e}"
        );
        assert!(e.to_string().contains("larger than slot B's"), "{e}");
    });
    let big_kern = make_bundle(&test_key(), "sim", b"r", &vec![1; KERN_LEN + 1]);
    assert_rejected(&rig, &big_kern, EnvAfter::Untouched, |e| {
        assert!(
            matches!(
                e,
                InstallError::TooLarge {
                    part: Part::Kernel,
                    ..
                }
            ),
            "{e}"
        );
    });
    // Exactly the slot size fits.
    let exact = make_bundle(&test_key(), "sim", &vec![7; ROOT_LEN], &vec![8; KERN_LEN]);
    rig.install(&exact).unwrap();
    assert_eq!(
        std::fs::read(rig.path("b-root")).unwrap(),
        vec![7; ROOT_LEN]
    );
}

#[test]
fn payload_hash_mismatch_and_trailing_data_are_caught_before_activation() {
    let rig = Rig::new();
    let good = good_bundle();
    let payload_start = good.len() - 43_000;
    for at in [
        payload_start,
        payload_start + 39_999,
        payload_start + 40_000,
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0xff;
        let part = if at < payload_start + 40_000 {
            Part::Rootfs
        } else {
            Part::Kernel
        };
        assert_rejected(&rig, &bad, EnvAfter::BMarkedBad, |e| {
            assert!(
                matches!(e, InstallError::Payload { target: Slot::B, source: BundleError::HashMismatch { part: p, .. } } if *p == part),
                "{e}"
            );
        });
    }
    let mut long = good.clone();
    long.extend_from_slice(b"extra");
    assert_rejected(&rig, &long, EnvAfter::BMarkedBad, |e| {
        assert!(e.to_string().contains("data after the last image"), "{e}");
    });
}

#[test]
fn garbage_headers_write_nothing() {
    let rig = Rig::new();
    let good = good_bundle();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"#!/bin/sh\nrm -rf /\n".repeat(10), "bad magic"),
        (vec![0; 4096], "bad magic"),
        (
            [&good[..8], &[0, 9], &good[10..]].concat(),
            "unsupported bundle format version 9",
        ),
        (
            [&good[..10], &[0x80, 0], &good[12..]].concat(),
            "unknown flags",
        ),
        (
            [&good[..12], &[0xff; 4], &good[16..]].concat(),
            "manifest length 4294967295",
        ),
        (
            [&good[..12], &[0; 4], &good[16..]].concat(),
            "manifest length 0",
        ),
    ];
    for (bytes, expect) in cases {
        assert_rejected(&rig, &bytes, EnvAfter::Untouched, |e| {
            assert!(e.to_string().contains(expect), "{e}");
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Truncating a small bundle anywhere, or flipping any bits of any byte,
    /// is rejected before activation with the active slot untouched.
    #[test]
    fn any_truncation_or_flip_is_rejected(
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        truncate in any::<bool>(),
    ) {
        let rig = Rig::new();
        let good = make_bundle(&test_key(), "sim", &[3; 300], &[4; 50]);
        let bad = if truncate {
            good[..cut.index(good.len())].to_vec()
        } else {
            let mut b = good.clone();
            b[at.index(good.len())] ^= mask;
            b
        };
        let before = rig.snapshot();
        let result = rig.install(&bad);
        prop_assert!(result.is_err());
        let after = rig.snapshot();
        prop_assert_eq!(&after.a_root, &before.a_root);
        prop_assert_eq!(&after.a_kern, &before.a_kern);
        prop_assert_eq!(&after.data, &before.data);
        prop_assert!(after.env == before.env || after.env == env_with_b_marked_bad(&rig, &before));
        prop_assert_eq!(rig.boot_state().primary(), Slot::A);
    }
}
