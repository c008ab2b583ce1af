//! Power cuts during an update, checked state by state: slot A is good and
//! booted; a bundle is installed into B and activated through a
//! [`Recorder`], the bootloader boots B (saving its tries), and B marks
//! itself good. For every crash state the recorder produces (per-device
//! fsync barriers, in-flight writes landed in any subset of 512-byte
//! sectors), the bootloader model reads the env as found on "disk" and:
//!
//! - every slot it would boot before falling back to A is whole: A with its
//!   bytes intact, or B holding the bundle's images completely;
//! - the data area is byte-identical;
//! - the env parses and is the one before or after the write in flight.
//!
//! Both U-Boot layouts are checked. Redundant copies (the layout to ship)
//! always read as a whole env. A single copy cut during a write can fail its
//! CRC and read as the safe default (`Origin::SafeDefault`: U-Boot's built-in
//! env, order "A B", 3 tries each), which boots A: still the old good slot,
//! so the invariant holds, but an activation or mark-good in flight is lost
//! (the device comes back on A), which is why boards use two copies.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;

use intrust_recovery::boot::{BootState, Decision, Slot, DEFAULT_TRIES};
use intrust_recovery::bootenv::EnvStore;
use intrust_recovery::bundle::{self, ImageSource, Part, SigningKey};
use intrust_recovery::config::Config;
use intrust_recovery::crash::{CrashState, Disk, Op, Recorder, RecordingStorage, SECTOR};
use intrust_recovery::env::Env;
use intrust_recovery::install;
use intrust_recovery::slots;
use intrust_recovery::uboot_env::{EnvConfig, Origin, UbootEnv};

const ROOT_LEN: usize = 16 * 1024;
const KERN_LEN: usize = 4 * 1024;
const ENV_SIZE: u64 = 0x2000;
const SEED: u64 = 0x1a2b_3c4d;

const A_ROOT: &str = "/dev/a-root";
const A_KERN: &str = "/dev/a-kern";
const B_ROOT: &str = "/dev/b-root";
const B_KERN: &str = "/dev/b-kern";
const DATA: &str = "/dev/data";
const ENV_DEV: &str = "/dev/env";

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn config() -> Config {
    let key = std::fs::read_to_string(fixture("test-key.pub")).unwrap();
    Config::parse(
        &format!(
            r#"board = "sim"
trusted_keys = ["{key}"]
data = "{DATA}"
booted_slot = "A"

[slots.A]
rootfs = {{ device = "{A_ROOT}" }}
kernel = {{ device = "{A_KERN}" }}

[slots.B]
rootfs = {{ device = "{B_ROOT}" }}
kernel = {{ device = "{B_KERN}" }}

[bootloader]
kind = "uboot"
fw_env_config = "/etc/fw_env.config"
"#,
            key = key.trim()
        ),
        "<test>",
    )
    .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Single,
    Redundant,
}

impl Layout {
    fn env_config(self) -> EnvConfig {
        match self {
            Layout::Single => EnvConfig::single(ENV_DEV, 0, ENV_SIZE),
            Layout::Redundant => {
                EnvConfig::redundant((ENV_DEV, 0), (ENV_DEV, ENV_SIZE as i64), ENV_SIZE)
            }
        }
    }
}

/// The bundle's images and the devices' starting contents.
struct Scenario {
    layout: Layout,
    rootfs: Vec<u8>,
    kernel: Vec<u8>,
    initial: HashMap<&'static str, Vec<u8>>,
}

fn source(part: Part, data: Vec<u8>) -> ImageSource<'static> {
    ImageSource {
        part,
        open: Box::new(move || {
            Ok(Box::new(std::io::Cursor::new(data.clone())) as Box<dyn std::io::Read>)
        }),
    }
}

impl Scenario {
    fn new(layout: Layout) -> Scenario {
        // Odd lengths, so the last sector of each image is partial.
        let rootfs = pattern(12_345, 0x51);
        let kernel = pattern(3_001, 0x77);
        // A good and booted: order "A B", 3 tries each (B holds an older
        // release), written twice so both redundant copies are valid.
        let setup = Recorder::new();
        setup
            .add_device(ENV_DEV, vec![0; 2 * ENV_SIZE as usize])
            .unwrap();
        let mut vars = Env::new();
        vars.set("bootcmd", "run intrust_boot").unwrap();
        BootState::default().apply_to(&mut vars);
        let mut env =
            UbootEnv::with_storage(&layout.env_config(), |p| setup.open(&p.to_string_lossy()))
                .unwrap();
        env.write(&vars).unwrap();
        env.write(&vars).unwrap();
        let initial = HashMap::from([
            (A_ROOT, pattern(ROOT_LEN, 0xa1)),
            (A_KERN, pattern(KERN_LEN, 0xa2)),
            (B_ROOT, pattern(ROOT_LEN, 0xb1)),
            (B_KERN, pattern(KERN_LEN, 0xb2)),
            (DATA, pattern(4096, 0xd0)),
            (ENV_DEV, setup.live(ENV_DEV).unwrap()),
        ]);
        Scenario {
            layout,
            rootfs,
            kernel,
            initial,
        }
    }

    fn bundle(&self) -> Vec<u8> {
        let key = SigningKey::from_pkcs8(&std::fs::read(fixture("test-key.pk8")).unwrap()).unwrap();
        let mut out = Vec::new();
        bundle::create(
            &key,
            "2.0",
            "sim",
            &mut [
                source(Part::Rootfs, self.rootfs.clone()),
                source(Part::Kernel, self.kernel.clone()),
            ],
            &mut out,
        )
        .unwrap();
        out
    }

    fn recorder(&self) -> Recorder {
        let r = Recorder::new();
        for name in [A_ROOT, A_KERN, B_ROOT, B_KERN, DATA, ENV_DEV] {
            r.add_device(name, self.initial[name].clone()).unwrap();
        }
        r
    }

    fn env_on(&self, r: &Recorder) -> UbootEnv<RecordingStorage> {
        UbootEnv::with_storage(&self.layout.env_config(), |p| r.open(&p.to_string_lossy())).unwrap()
    }

    /// The env as the bootloader finds it on `disk`.
    fn env_of(&self, disk: &Disk) -> (Env, Origin) {
        let mut env =
            UbootEnv::with_storage(&self.layout.env_config(), |p| disk.storage(p)).unwrap();
        let loaded = env.read().expect("the env on disk must parse");
        (loaded.env, loaded.origin)
    }

    fn b_is_complete(&self, disk: &Disk) -> bool {
        disk.get(B_ROOT).unwrap()[..self.rootfs.len()] == self.rootfs[..]
            && disk.get(B_KERN).unwrap()[..self.kernel.len()] == self.kernel[..]
    }
}

/// What the crash states of one phase did.
#[derive(Debug, Default)]
struct Tally {
    states: usize,
    distinct: usize,
    boots_a: usize,
    boots_b: usize,
    safe_default: usize,
}

/// Checks one crash state; `pre`/`post` are the envs with none / all of the
/// in-flight writes landed.
fn check(
    s: &Scenario,
    state: &CrashState,
    disk: &Disk,
    (pre, post): (&Env, &Env),
    env_dev: usize,
    tally: &mut Tally,
) {
    let what = || {
        let (landed, total) = state.landed_count();
        format!(
            "{:?} layout, crash after op {} with {landed} of {total} in-flight sectors landed ({:?})",
            s.layout, state.at, state.choice
        )
    };
    for name in [A_ROOT, A_KERN, DATA] {
        assert!(
            disk.get(name).unwrap() == &s.initial[name][..],
            "{name} changed: {}",
            what()
        );
    }
    let (env, origin) = s.env_of(disk);
    match origin {
        Origin::Copy { .. } => assert!(
            env == *pre || env == *post,
            "env is neither the old nor the new one: {}\n{env}",
            what()
        ),
        Origin::SafeDefault => {
            assert_eq!(s.layout, Layout::Single, "no valid copy: {}", what());
            assert!(
                state.in_flight_on(env_dev),
                "safe default without an env write in flight: {}",
                what()
            );
            tally.safe_default += 1;
        }
    }
    // Boot as the bootloader would, each boot failing, until A (the old
    // good slot, which marks itself good) is reached.
    let mut boot = BootState::from_env(&env);
    let mut first = None;
    for _ in 0..(2 * DEFAULT_TRIES + 2) {
        match boot.decide() {
            Decision::ResetTriesAndReboot => continue,
            Decision::Boot(Slot::A) => {
                first.get_or_insert(Slot::A);
                break;
            }
            Decision::Boot(Slot::B) => {
                first.get_or_insert(Slot::B);
                assert!(
                    s.b_is_complete(disk),
                    "slot B would boot half written: {}",
                    what()
                );
            }
        }
    }
    match first {
        Some(Slot::A) => tally.boots_a += 1,
        Some(Slot::B) => tally.boots_b += 1,
        None => panic!("no slot boots: {}", what()),
    }
    tally.states += 1;
}

/// Checks every crash state with a crash point in `ops`, writes torn at
/// `tear` bytes.
fn check_phase(s: &Scenario, r: &Recorder, ops: std::ops::Range<usize>, tear: u64) -> Tally {
    let mut tally = Tally::default();
    let mut distinct = HashSet::new();
    let env_dev = r.device(ENV_DEV).unwrap();
    let mut extremes: HashMap<usize, (Env, Env)> = HashMap::new();
    for state in r.crash_states_torn_at(ops, SEED, tear) {
        let (pre, post) = extremes
            .entry(state.at)
            .or_insert_with(|| {
                let mut none = state.clone();
                none.landed.iter_mut().for_each(|l| *l = false);
                let mut all = state.clone();
                all.landed.iter_mut().for_each(|l| *l = true);
                (s.env_of(&r.disk(&none)).0, s.env_of(&r.disk(&all)).0)
            })
            .clone();
        let disk = r.disk(&state);
        let mut h = DefaultHasher::new();
        for name in [B_ROOT, B_KERN, ENV_DEV] {
            disk.get(name).hash(&mut h);
        }
        distinct.insert(h.finish());
        check(s, &state, &disk, (&pre, &post), env_dev, &mut tally);
    }
    tally.distinct = distinct.len();
    tally
}

/// Runs the update on a recorder and checks its crash states, per phase.
fn run(layout: Layout, tear: u64) -> Vec<(&'static str, Tally)> {
    let s = Scenario::new(layout);
    let r = s.recorder();
    let env_dev = r.device(ENV_DEV).unwrap();
    let mut env = s.env_on(&r);

    let done = install::install_on(
        &config(),
        &s.bundle()[..],
        Slot::A,
        &mut env,
        &mut r.clone(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(done.slot, Slot::B);
    let installed = r.len();
    // Activation is install's last env write; everything before it is the
    // mark-bad write and the streaming.
    let ops = r.ops();
    let activation = ops
        .iter()
        .rposition(|op| matches!(op, Op::Write { device, .. } if *device == env_dev))
        .unwrap();
    assert!(
        ops[..activation]
            .iter()
            .any(|op| matches!(op, Op::Sync { device } if *device != env_dev)),
        "slot writes were synced before the activation"
    );

    // The bootloader boots B and saves B's tries (U-Boot's saveenv writes
    // the same format the same way).
    let mut vars = EnvStore::read(&mut env).unwrap();
    let mut boot = BootState::from_env(&vars);
    assert_eq!(boot.decide(), Decision::Boot(Slot::B));
    boot.apply_to(&mut vars);
    EnvStore::write(&mut env, &vars).unwrap();
    let booted = r.len();

    // B runs and marks itself good.
    slots::mark_good(Slot::B, &mut env).unwrap();
    let end = r.len();
    let after = BootState::from_env(&EnvStore::read(&mut env).unwrap());
    assert_eq!(after.order(), &[Slot::B, Slot::A]);
    assert_eq!(after.tries_left(Slot::B), DEFAULT_TRIES);

    vec![
        ("install", check_phase(&s, &r, 0..activation, tear)),
        (
            "activation",
            check_phase(&s, &r, activation..installed, tear),
        ),
        ("bootloader", check_phase(&s, &r, installed..booted, tear)),
        ("mark-good", check_phase(&s, &r, booted..end, tear)),
    ]
}

/// Sector-atomic media (the model for eMMC and disks), and a weaker one
/// that tears every 16 bytes (a card without power-loss protection).
const TEARS: [u64; 2] = [SECTOR, 16];

#[test]
fn every_crash_state_boots_the_old_good_slot_or_the_complete_new_one() {
    let mut total = 0;
    let mut distinct = 0;
    for tear in TEARS {
        for layout in [Layout::Redundant, Layout::Single] {
            let phases = run(layout, tear);
            for (phase, t) in &phases {
                println!(
                    "{layout:?} env, tearing at {tear} bytes, {phase}: {} crash states ({} distinct), first boot A in {}, B in {}, safe default env in {}",
                    t.states, t.distinct, t.boots_a, t.boots_b, t.safe_default
                );
                assert!(t.states > 0, "{phase}: no crash states");
                total += t.states;
                distinct += t.distinct;
            }
            let sum = |f: fn(&Tally) -> usize| phases.iter().map(|(_, t)| f(t)).sum::<usize>();
            // The test sees both outcomes, so it can fail either way.
            assert!(sum(|t| t.boots_a) > 0 && sum(|t| t.boots_b) > 0);
            let safe_default = sum(|t| t.safe_default);
            match (layout, tear) {
                (Layout::Redundant, _) => assert_eq!(safe_default, 0),
                // Our writes change only the env's first sector (CRC and the
                // BOOT_* variables, sorted first, single digits), so on a
                // sector-atomic medium even a single copy is never torn.
                (Layout::Single, SECTOR) => assert_eq!(safe_default, 0),
                (Layout::Single, _) => assert!(safe_default > 0),
            }
        }
    }
    println!("crash states tried: {total} ({distinct} distinct device states, summed over phases)");
    assert!(total >= 1000, "only {total} crash states");
}
