//! `recovery/boot/boot.cmd` run by real U-Boot (Debian's `u-boot-qemu` in
//! `qemu-system-aarch64 -M virt`) against the boot-selection model.
//!
//! One QEMU boot runs every case: the test writes a disk image holding a
//! driver script, the compiled `boot.scr` and one raw single-copy env area
//! per case (written by our `uboot_env` code, as `intrust-recovery` writes
//! it), stops autoboot on the serial console and sources the driver. For
//! each case the driver points `intrust_env_blk` at the case's area and
//! sources `boot.scr` with `intrust_env_store=raw` and `intrust_dry_run=1`:
//! U-Boot reads the area (`virtio read`, `env import -c`), decides, writes
//! the area back (`env export -c`, `virtio write`) and prints its decision
//! and `bootargs`. Each case must make `BootState::decide`'s decision, print
//! the model's kernel arguments, and leave an area that our parser reads
//! back as the model's state. Some areas are booted several times in a row
//! (U-Boot reading what U-Boot wrote), and the last case takes the distro
//! boot path's addresses (script and scratch both at `${loadaddr}`).
//! Then, in the same session, real boots (no dry run) on one more area: the
//! chosen slot's kernel is missing, so the script's `load`/`booti` fail and
//! it resets the board; U-Boot starts again and the test runs the script
//! again, following the model from B to A to "no tries" and back to B.
//! (`saveenv` is not run: QEMU 7.2's pflash times out U-Boot's writes.)
//!
//! Needs `qemu-system-aarch64` (Debian `qemu-system-arm`), U-Boot for QEMU
//! (`u-boot-qemu`) and `mkimage` (`u-boot-tools`); `cargo xtask test`
//! installs them. Without them this test fails.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use intrust_recovery::boot::{BootState, Decision, Slot, MAX_TRIES};
use intrust_recovery::uboot_env::{crc32, encode_image, EnvConfig, UbootEnv};
use intrust_recovery::Env;

const UBOOT_BIN: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
const QEMU: &str = "qemu-system-aarch64";

/// Env size of every area (hex in U-Boot, as in `fw_env.config`).
const ENV_SIZE: usize = 0x4000;
const BLOCK: usize = 512;
const AREA_BLOCKS: usize = ENV_SIZE / BLOCK;
/// Disk layout in 512-byte blocks: the two driver scripts, boot.scr, env
/// areas (one per case, then the one for the real boots).
const DRIVER_BLK: usize = 0;
const REAL_DRIVER_BLK: usize = 0x80;
const SCRIPT_BLK: usize = 0x100;
const SCRIPT_BLOCKS: usize = 0x100;
const FIRST_AREA_BLK: usize = 0x200;
/// RAM addresses (QEMU virt: 256 MiB at 0x40000000; U-Boot relocates
/// itself near the top): away from `${loadaddr}` (0x40200000) and the
/// kernel/ramdisk addresses.
const DRIVER_ADDR: &str = "0x46000000";
const SCRIPT_ADDR: &str = "0x47000000";
const SCRATCH_ADDR: &str = "0x48000000";

const ROOT_A: &str = "/dev/vda2";
const ROOT_B: &str = "/dev/vda3";
const BOOTARGS: &str = "console=ttyAMA0 rootwait";

/// Whole-session bound: a loaded 2-core machine runs it in a few seconds.
const SESSION_TIMEOUT: Duration = Duration::from_secs(90);

/// What a case's env area holds before the first boot.
#[derive(Debug, Clone)]
enum Area {
    /// A valid single-copy env with these variables (`None`: unset).
    Vars {
        order: Option<&'static str>,
        a: Option<&'static str>,
        b: Option<&'static str>,
        other: bool,
    },
    /// An area our reader rejects (bad CRC, erased, zeroed): the model
    /// reads it as an empty env.
    Invalid(&'static str),
}

struct Case {
    area: Area,
    /// Boots in a row on this area (each reads what the last one wrote).
    boots: usize,
    /// Source `boot.scr` from `${scriptaddr}` with the default scratch
    /// address (`${loadaddr}`, the same address), as distro boot does;
    /// otherwise from SCRIPT_ADDR with scratch at SCRATCH_ADDR.
    distro_path: bool,
}

impl Area {
    fn env(&self) -> Env {
        let mut e = Env::new();
        if let Area::Vars { order, a, b, other } = self {
            for (k, v) in [
                ("BOOT_ORDER", order),
                ("BOOT_A_LEFT", a),
                ("BOOT_B_LEFT", b),
            ] {
                if let Some(v) = v {
                    e.set(k, v).unwrap();
                }
            }
            if *other {
                e.set("intrust_note", "dropped by the script").unwrap();
            }
        }
        e
    }

    fn image(&self) -> Vec<u8> {
        match self {
            Area::Vars { .. } => encode_image(&self.env(), ENV_SIZE, None).unwrap(),
            Area::Invalid("bad crc") => {
                let mut e = Env::new();
                e.set("BOOT_ORDER", "B").unwrap();
                e.set("BOOT_B_LEFT", "3").unwrap();
                let mut img = encode_image(&e, ENV_SIZE, None).unwrap();
                img[0] ^= 1;
                img
            }
            Area::Invalid("erased") => vec![0xff; ENV_SIZE],
            Area::Invalid(_) => vec![0; ENV_SIZE],
        }
    }
}

/// The model's reading, with tries above `MAX_TRIES` counted as
/// `MAX_TRIES` as `recovery/boot/README.md` specifies (the model itself
/// never gets such values from us and does not clamp them).
fn model_state(env: &Env) -> BootState {
    let s = BootState::from_env(env);
    let mut clamped = Env::new();
    s.apply_to(&mut clamped);
    for slot in Slot::ALL {
        let t = s.tries_left(slot).min(MAX_TRIES);
        clamped.set(slot.tries_var(), &t.to_string()).unwrap();
    }
    BootState::from_env(&clamped)
}

fn cases() -> Vec<Case> {
    let one = |order, a, b| Case {
        area: Area::Vars {
            order,
            a,
            b,
            other: false,
        },
        boots: 1,
        distro_path: false,
    };
    let mut cases = Vec::new();
    // Every order with every try value the recovery writes (unset means 3).
    let orders = [
        None,
        Some(""),
        Some("A B"),
        Some("B A"),
        Some("B"),
        Some("A"),
        Some("junk"),
        Some("C junk B"),
        Some(" B  A "),
    ];
    let written = [None, Some("0"), Some("1"), Some("2"), Some("3")];
    for order in orders {
        for a in written {
            for b in written {
                cases.push(one(order, a, b));
            }
        }
    }
    // Values the recovery never writes: how each slot reads them and counts
    // Values the recovery never writes: how each slot reads them and counts
    // them down (the other slot has no tries, so a reading of 0 resets; or
    // one try, so a reading of 0 boots the other slot). Not here: a leading
    // tab or other non-space blank, which the model drops and the script
    // does not (see boot.cmd).
    let garbage = [
        "",
        "   ",
        "x",
        "2x",
        "03",
        "9",
        "12",
        "0x5",
        " 3",
        "-1",
        "3;reset",
        "09",
        "010",
        "0x10",
        "000000003",
        "123456789",
    ];
    for g in garbage {
        for other in ["0", "1"] {
            cases.push(one(Some("A B"), Some(g), Some(other)));
            cases.push(one(Some("B A"), Some(other), Some(g)));
        }
    }
    // Invalid areas, each after a case that leaves B chosen in U-Boot's
    // RAM: the script must not use those leftover values.
    for what in ["bad crc", "erased", "zeroed"] {
        cases.push(one(Some("B"), Some("0"), Some("2")));
        cases.push(Case {
            area: Area::Invalid(what),
            boots: 1,
            distro_path: false,
        });
    }
    // Histories: an update to B that never marks itself good falls back to
    // A; no tries anywhere resets, then boots; other variables are dropped.
    for (order, a, b, boots) in [
        (Some("B A"), Some("3"), Some("3"), 5),
        (Some("A B"), Some("0"), Some("0"), 3),
        (Some("B"), Some("1"), Some("1"), 3),
    ] {
        cases.push(Case {
            area: Area::Vars {
                order,
                a,
                b,
                other: true,
            },
            boots,
            distro_path: false,
        });
    }
    // Last: the distro boot addresses (script and scratch at ${loadaddr}).
    cases.push(Case {
        area: Area::Vars {
            order: Some("B A"),
            a: Some("3"),
            b: Some("2"),
            other: false,
        },
        boots: 2,
        distro_path: true,
    });
    cases
}

fn area_blk(i: usize) -> usize {
    FIRST_AREA_BLK + i * AREA_BLOCKS
}

/// The board settings both drivers set.
fn settings() -> String {
    let mut t = String::new();
    for (k, v) in [
        ("intrust_env_store", "raw"),
        ("intrust_env_iface", "virtio"),
        ("intrust_env_dev", "0"),
        ("intrust_root_A", ROOT_A),
        ("intrust_root_B", ROOT_B),
        ("intrust_load_A", "virtio 0:2"),
        ("intrust_load_B", "virtio 0:3"),
    ] {
        t.push_str(&format!("setenv {k} {v}\n"));
    }
    t.push_str(&format!("setenv intrust_bootargs \"{BOOTARGS}\"\n"));
    t.push_str(&format!("setenv intrust_env_blkcnt {AREA_BLOCKS:x}\n"));
    t.push_str(&format!("setenv intrust_env_size {ENV_SIZE:x}\n"));
    t
}

/// Every case with `intrust_dry_run=1`, in order, then `intrust-end`.
fn driver_text(cases: &[Case]) -> String {
    let mut t = settings();
    t.push_str("setenv intrust_dry_run 1\n");
    for (i, case) in cases.iter().enumerate() {
        t.push_str(&format!("setenv intrust_env_blk {:x}\n", area_blk(i)));
        let source = if case.distro_path {
            // The script's first env read overwrites it at ${loadaddr}
            // (U-Boot runs a copy): load it again for every boot.
            t.push_str("setenv intrust_env_addr\n");
            format!("virtio read ${{scriptaddr}} {SCRIPT_BLK:x} {SCRIPT_BLOCKS:x}\nsource ${{scriptaddr}}")
        } else {
            t.push_str(&format!("setenv intrust_env_addr {SCRATCH_ADDR}\n"));
            format!("source {SCRIPT_ADDR}")
        };
        for boot in 0..case.boots {
            t.push_str(&format!("echo \"intrust-case {i} {boot}\"\n{source}\n"));
        }
    }
    t.push_str("echo intrust-end\n");
    t
}

/// One real boot on area `area` as distro boot runs it: no dry run, script
/// and scratch at `${loadaddr}`. No kernel is there, so a chosen slot fails
/// to load and the script resets the board.
fn real_driver_text(area: usize) -> String {
    let mut t = settings();
    t.push_str("setenv intrust_dry_run\n");
    t.push_str(&format!(
        "setenv intrust_env_blk {:x}\nvirtio read ${{scriptaddr}} {SCRIPT_BLK:x} {SCRIPT_BLOCKS:x}\nsource ${{scriptaddr}}\necho intrust-real-returned\n",
        area_blk(area)
    ));
    t
}

/// The area of the real boots, and the boots: fall back from B to A, find
/// no tries, reset them, boot B again.
const REAL_START: (&str, &str, &str) = ("B A", "1", "1");
const REAL_BOOTS: usize = 4;

fn found(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

fn mkimage(text: &str, dir: &Path, name: &str) -> Vec<u8> {
    let src = dir.join(format!("{name}.cmd"));
    let out_path = dir.join(format!("{name}.scr"));
    std::fs::write(&src, text).unwrap();
    let out = Command::new("mkimage")
        .args([
            "-A", "arm64", "-T", "script", "-C", "none", "-n", name, "-d",
        ])
        .arg(&src)
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkimage {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(out_path).unwrap()
}

/// QEMU with its serial console on pipes; killed on drop.
struct Qemu {
    child: Child,
    stdin: ChildStdin,
    output: Receiver<Vec<u8>>,
    seen: Vec<u8>,
    deadline: Instant,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Qemu {
    fn start(disk: &Path) -> Qemu {
        let drive = format!("if=none,file={},format=raw,id=d", disk.display());
        let mut child = Command::new(QEMU)
            .args(["-M", "virt", "-cpu", "cortex-a57", "-m", "256"])
            .args(["-nographic", "-nic", "none", "-bios", UBOOT_BIN])
            .args(["-drive", &drive, "-device", "virtio-blk-device,drive=d"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Qemu {
            child,
            stdin,
            output,
            seen: Vec::new(),
            deadline: Instant::now() + SESSION_TIMEOUT,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).replace('\r', "")
    }

    /// Reads the console until `needle` appears at or after byte `from`
    /// and returns where it ends. Panics with the console so far if QEMU
    /// exits first or the session deadline passes.
    fn expect(&mut self, needle: &str, from: usize) -> usize {
        let pattern = needle.as_bytes();
        // Search only bytes not searched yet (with a needle's overlap).
        let mut start = from;
        loop {
            if self.seen.len() >= start + pattern.len() {
                if let Some(at) = self.seen[start..]
                    .windows(pattern.len())
                    .position(|w| w == pattern)
                {
                    return start + at + pattern.len();
                }
                start = self.seen.len() + 1 - pattern.len();
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "QEMU exited before U-Boot printed {needle:?}; console:\n{}",
                    self.text()
                ),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "U-Boot did not print {needle:?} within {SESSION_TIMEOUT:?}; console:\n{}",
                    self.text()
                ),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for QEMU to exit (after `poweroff`).
    fn wait_exit(&mut self) {
        while Instant::now() < self.deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("QEMU did not power off; console:\n{}", self.text());
    }
}

#[test]
fn uboot_runs_boot_cmd_and_makes_the_models_decision() {
    let missing: Vec<&str> = [
        (found(QEMU), "qemu-system-aarch64 (package qemu-system-arm)"),
        (
            Path::new(UBOOT_BIN).is_file(),
            "U-Boot for QEMU, /usr/lib/u-boot/qemu_arm64/u-boot.bin (package u-boot-qemu)",
        ),
        (found("mkimage"), "mkimage (package u-boot-tools)"),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, what)| what)
    .collect();
    assert!(
        missing.is_empty(),
        "missing {}: `cargo xtask test` installs qemu-system-arm, u-boot-qemu and u-boot-tools (or: apt-get install them)",
        missing.join(", ")
    );

    let started = Instant::now();
    let cases = cases();
    let tmp = tempfile::tempdir().unwrap();
    let boot_cmd = Path::new(env!("CARGO_MANIFEST_DIR")).join("boot/boot.cmd");
    let script = mkimage(
        &std::fs::read_to_string(&boot_cmd).unwrap(),
        tmp.path(),
        "boot",
    );
    let driver = mkimage(&driver_text(&cases), tmp.path(), "driver");
    let real_area = cases.len();
    let real_driver = mkimage(&real_driver_text(real_area), tmp.path(), "real");
    assert!(script.len() <= SCRIPT_BLOCKS * BLOCK, "boot.scr too big");
    assert!(
        driver.len() <= (REAL_DRIVER_BLK - DRIVER_BLK) * BLOCK,
        "driver too big"
    );
    assert!(
        real_driver.len() <= (SCRIPT_BLK - REAL_DRIVER_BLK) * BLOCK,
        "real driver too big"
    );
    let real_env = {
        let mut e = Env::new();
        e.set("BOOT_ORDER", REAL_START.0).unwrap();
        e.set("BOOT_A_LEFT", REAL_START.1).unwrap();
        e.set("BOOT_B_LEFT", REAL_START.2).unwrap();
        e
    };

    let disk: PathBuf = tmp.path().join("disk.img");
    let mut image = vec![0u8; area_blk(real_area + 1) * BLOCK];
    image[DRIVER_BLK * BLOCK..][..driver.len()].copy_from_slice(&driver);
    image[REAL_DRIVER_BLK * BLOCK..][..real_driver.len()].copy_from_slice(&real_driver);
    image[area_blk(real_area) * BLOCK..][..ENV_SIZE]
        .copy_from_slice(&encode_image(&real_env, ENV_SIZE, None).unwrap());
    image[SCRIPT_BLK * BLOCK..][..script.len()].copy_from_slice(&script);
    for (i, case) in cases.iter().enumerate() {
        image[area_blk(i) * BLOCK..][..ENV_SIZE].copy_from_slice(&case.area.image());
    }
    std::fs::write(&disk, &image).unwrap();
    // The areas read back as we meant them (valid ones as their vars,
    // invalid ones as no valid copy).
    for (i, case) in cases.iter().enumerate() {
        let got = read_area(&disk, i);
        assert_eq!(got, case.area.env(), "area {i} as written");
    }

    let mut qemu = Qemu::start(&disk);
    const AUTOBOOT: &str = "Hit any key to stop autoboot";
    let at = qemu.expect(AUTOBOOT, 0);
    qemu.type_line("");
    let at = qemu.expect("=> ", at);
    qemu.type_line(&format!(
        "virtio scan; virtio read {DRIVER_ADDR} {DRIVER_BLK:x} {:x}; virtio read {SCRIPT_ADDR} {SCRIPT_BLK:x} {SCRIPT_BLOCKS:x}; source {DRIVER_ADDR}",
        REAL_DRIVER_BLK - DRIVER_BLK
    ));
    let dry_end = qemu.expect("\nintrust-end", at);
    // Real boots: each ends in the script's `reset`, and U-Boot starts over.
    let real_cmd = format!(
        "virtio scan; virtio read {DRIVER_ADDR} {REAL_DRIVER_BLK:x} {:x}; source {DRIVER_ADDR}",
        SCRIPT_BLK - REAL_DRIVER_BLK
    );
    let mut real_segments = Vec::new();
    let mut at = qemu.expect("=> ", dry_end);
    for _ in 0..REAL_BOOTS {
        qemu.type_line(&real_cmd);
        let end = qemu.expect(AUTOBOOT, at);
        real_segments.push(String::from_utf8_lossy(&qemu.seen[at..end]).replace('\r', ""));
        qemu.type_line("");
        at = qemu.expect("=> ", end);
    }
    qemu.type_line("poweroff");
    qemu.wait_exit();
    let console = qemu.text();
    let dry_console = String::from_utf8_lossy(&qemu.seen[..dry_end]).replace('\r', "");
    drop(qemu);

    for bad in ["Unknown command", "syntax error", "Usage:"] {
        assert!(!console.contains(bad), "U-Boot said {bad:?}:\n{console}");
    }

    // Console lines per (case, boot).
    let mut lines: Vec<Vec<Vec<&str>>> = cases.iter().map(|c| vec![Vec::new(); c.boots]).collect();
    let mut current = None;
    for line in dry_console.lines() {
        if let Some(rest) = line.strip_prefix("intrust-case ") {
            let mut it = rest.split_whitespace().map(|n| n.parse::<usize>().unwrap());
            current = Some((it.next().unwrap(), it.next().unwrap()));
        } else if line == "intrust-end" {
            current = None;
        } else if let Some((i, k)) = current {
            lines[i][k].push(line);
        }
    }

    let mut checked = 0;
    for (i, case) in cases.iter().enumerate() {
        let mut model = model_state(&case.area.env());
        let mut expect_order = case.area.env().get("BOOT_ORDER").unwrap_or("").to_owned();
        if expect_order.is_empty() {
            expect_order = "A B".to_owned();
        }
        for (k, said) in lines[i].iter().enumerate() {
            let what = format!(
                "case {i} boot {k}, area {:?}: U-Boot said {said:#?}",
                case.area
            );
            let decision = model.decide();
            let tries = format!(
                "A={} B={}",
                model.tries_left(Slot::A),
                model.tries_left(Slot::B)
            );
            match decision {
                Decision::Boot(slot) => {
                    let root = if slot == Slot::A { ROOT_A } else { ROOT_B };
                    for want in [
                        format!("intrust-decision boot {slot}"),
                        format!("intrust-bootargs {BOOTARGS} root={root} intrust.slot={slot}"),
                        format!("intrust: booting slot {slot} (tries left: {tries})"),
                    ] {
                        assert!(said.contains(&want.as_str()), "expected {want:?}; {what}");
                    }
                    assert!(!said.contains(&"intrust-decision reset"), "{what}");
                }
                Decision::ResetTriesAndReboot => {
                    assert!(said.contains(&"intrust-decision reset"), "{what}");
                    assert!(
                        !said.iter().any(|l| l.starts_with("intrust-decision boot")),
                        "{what}"
                    );
                }
            }
            checked += 1;
        }
        // What U-Boot wrote back: the model's state, read by our parser;
        // the order as it was (or "A B" for an empty one), nothing else.
        let saved = read_area(&disk, i);
        let mut want = Env::new();
        want.set("BOOT_ORDER", &expect_order).unwrap();
        for slot in Slot::ALL {
            want.set(slot.tries_var(), &model.tries_left(slot).to_string())
                .unwrap();
        }
        assert_eq!(
            saved, want,
            "case {i} ({:?}): env written by U-Boot",
            case.area
        );
        assert_eq!(BootState::from_env(&saved), model, "case {i}");
    }
    let boots: usize = cases.iter().map(|c| c.boots).sum();
    assert_eq!(checked, boots);

    // The real boots: the decision, the tries it stored, and the reset.
    let mut model = BootState::from_env(&real_env);
    for (k, said) in real_segments.iter().enumerate() {
        let what = format!("real boot {k} from {REAL_START:?}; U-Boot said:\n{said}");
        assert!(!said.contains("intrust-real-returned"), "{what}");
        match model.decide() {
            Decision::Boot(slot) => {
                for want in [
                    format!(
                        "intrust: booting slot {slot} (tries left: A={} B={})",
                        model.tries_left(Slot::A),
                        model.tries_left(Slot::B)
                    ),
                    format!("intrust: booting slot {slot} failed; resetting"),
                ] {
                    assert!(said.contains(&want), "expected {want:?}; {what}");
                }
            }
            Decision::ResetTriesAndReboot => {
                assert!(said.contains("no slot has tries left"), "{what}");
                assert!(!said.contains("intrust: booting slot"), "{what}");
            }
        }
        checked += 1;
    }
    let saved = read_area(&disk, real_area);
    assert_eq!(BootState::from_env(&saved), model, "after the real boots");
    assert_eq!(saved.get("BOOT_ORDER"), Some(REAL_START.0));
    println!(
        "U-Boot made the model's decision in {checked} boots on {} env areas ({REAL_BOOTS} real boots that reset the board) in one QEMU session, {:.1} s",
        cases.len() + 1,
        started.elapsed().as_secs_f64()
    );
}

/// An area as `intrust-recovery` reads it: no valid copy reads as empty.
fn read_area(disk: &Path, i: usize) -> Env {
    let cfg = EnvConfig::single(disk, (area_blk(i) * BLOCK) as i64, ENV_SIZE as u64);
    let mut env = UbootEnv::open(&cfg).unwrap();
    env.read().unwrap().env
}

#[test]
fn invalid_areas_are_invalid() {
    // The invalid fixtures must really fail the CRC (else they test nothing).
    for what in ["bad crc", "erased", "zeroed"] {
        let img = Area::Invalid(what).image();
        let stored = u32::from_le_bytes([img[0], img[1], img[2], img[3]]);
        assert_ne!(stored, crc32(&img[4..]), "{what}");
    }
}
