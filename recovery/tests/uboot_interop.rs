//! Interoperation with libubootenv's `fw_printenv`/`fw_setenv` (Debian
//! package `libubootenv-tool`): what we write they read, what they write we
//! read, both pick the same copy when one is corrupt, and the redundant flag
//! byte stays in step over alternating writes, across its 255 → 0 wrap.

use std::path::{Path, PathBuf};
use std::process::Command;

use intrust_recovery::uboot_env::{encode_image, EnvConfig, Origin, UbootEnv};
use intrust_recovery::Env;

const ENV_SIZE: u64 = 0x4000;

/// The tool's path; fails (not skips) when it is missing, so a test run
/// without it cannot pass by accident.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "{name} not found on PATH: `cargo xtask test` installs Debian's libubootenv-tool \
             (by hand: apt-get install libubootenv-tool)"
        )
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    device: PathBuf,
    config_path: PathBuf,
    config: EnvConfig,
}

impl Fixture {
    fn new(redundant: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("uboot.env");
        // Room before, between and after the copies, to catch offset slips.
        std::fs::write(&device, vec![0xa5u8; 0x10000]).unwrap();
        let config = if redundant {
            EnvConfig::redundant((&device, 0x1000), (&device, 0x8000), ENV_SIZE)
        } else {
            EnvConfig::single(&device, 0x1000, ENV_SIZE)
        };
        let config_path = dir.path().join("fw_env.config");
        std::fs::write(&config_path, config.to_config_text()).unwrap();
        // Our parser reads what we gave the tools.
        assert_eq!(EnvConfig::load(&config_path).unwrap(), config);
        Fixture {
            _dir: dir,
            device,
            config_path,
            config,
        }
    }

    fn ours(&self) -> UbootEnv<intrust_recovery::storage::FileStorage> {
        UbootEnv::open(&self.config).unwrap()
    }

    /// `fw_printenv -c CONFIG` as sorted `name=value` lines.
    fn printenv(&self) -> Result<Vec<String>, String> {
        let out = Command::new(tool("fw_printenv"))
            .arg("-c")
            .arg(&self.config_path)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        if !out.status.success() {
            return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
        }
        // Debug builds also print "Environment OK, copy N": no '=' in it.
        let mut lines: Vec<String> = stdout
            .lines()
            .filter(|l| l.contains('='))
            .map(str::to_owned)
            .collect();
        lines.sort();
        Ok(lines)
    }

    /// `fw_setenv -c CONFIG NAME [VALUE]` (no value deletes).
    fn setenv(&self, name: &str, value: Option<&str>) {
        let mut cmd = Command::new(tool("fw_setenv"));
        cmd.arg("-c").arg(&self.config_path).arg(name);
        if let Some(v) = value {
            cmd.arg(v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "fw_setenv {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn flag_bytes(&self) -> [u8; 2] {
        let bytes = std::fs::read(&self.device).unwrap();
        [bytes[0x1000 + 4], bytes[0x8000 + 4]]
    }

    fn corrupt(&self, copy_offset: usize) {
        let mut bytes = std::fs::read(&self.device).unwrap();
        bytes[copy_offset + 100] ^= 0xff;
        std::fs::write(&self.device, bytes).unwrap();
    }
}

fn env(pairs: &[(&str, &str)]) -> Env {
    let mut e = Env::new();
    for (k, v) in pairs {
        e.set(k, v).unwrap();
    }
    e
}

fn lines(e: &Env) -> Vec<String> {
    let mut l: Vec<String> = e.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    l
}

fn check_untouched_margins(device: &Path, redundant: bool) {
    let bytes = std::fs::read(device).unwrap();
    assert!(bytes[..0x1000].iter().all(|&b| b == 0xa5));
    let end0 = 0x1000 + ENV_SIZE as usize;
    if redundant {
        assert!(bytes[end0..0x8000].iter().all(|&b| b == 0xa5));
        assert!(bytes[0x8000 + ENV_SIZE as usize..]
            .iter()
            .all(|&b| b == 0xa5));
    } else {
        assert!(bytes[end0..].iter().all(|&b| b == 0xa5));
    }
}

#[test]
fn single_copy_both_ways() {
    let fx = Fixture::new(false);
    let ours = env(&[
        ("BOOT_ORDER", "A B"),
        ("BOOT_A_LEFT", "3"),
        ("bootargs", "console=ttyS0,115200 root=/dev/mmcblk0p2 rw"),
        ("empty", ""),
    ]);
    fx.ours().write(&ours).unwrap();
    assert_eq!(fx.printenv().unwrap(), lines(&ours));

    fx.setenv("BOOT_A_LEFT", Some("2"));
    fx.setenv("added", Some("x=y z"));
    fx.setenv("bootargs", None);
    let loaded = fx.ours().read().unwrap();
    assert_eq!(
        loaded.origin,
        Origin::Copy {
            index: 0,
            flags: None
        }
    );
    let expected = env(&[
        ("BOOT_ORDER", "A B"),
        ("BOOT_A_LEFT", "2"),
        ("added", "x=y z"),
        ("empty", ""),
    ]);
    assert_eq!(loaded.env, expected);
    check_untouched_margins(&fx.device, false);
}

#[test]
fn redundant_alternating_writes_keep_flags_in_step() {
    let fx = Fixture::new(true);
    let mut expected = Env::new();
    let mut last_flag: Option<u8> = None;
    for round in 0..8u8 {
        let value = format!("r{round}");
        if round % 2 == 0 {
            expected.set("round", &value).unwrap();
            fx.ours().write(&expected).unwrap();
        } else {
            fx.setenv("round", Some(&value));
            expected.set("round", &value).unwrap();
        }
        assert_eq!(fx.printenv().unwrap(), lines(&expected), "round {round}");
        let loaded = fx.ours().read().unwrap();
        assert_eq!(loaded.env, expected, "round {round}");
        let Origin::Copy {
            index,
            flags: Some(flag),
        } = loaded.origin
        else {
            panic!("round {round}: {:?}", loaded.origin);
        };
        // Every write, by either tool, lands on the other copy with the
        // next flag value.
        if let Some(prev) = last_flag {
            assert_eq!(flag, prev.wrapping_add(1), "round {round}");
        }
        assert_eq!(fx.flag_bytes()[index], flag);
        last_flag = Some(flag);
    }
    check_untouched_margins(&fx.device, true);
}

#[test]
fn redundant_flag_wrap_from_255_agrees() {
    let fx = Fixture::new(true);
    // Start both copies valid at flags 0xfd/0xfe so writes cross 0xff → 0.
    let mut bytes = std::fs::read(&fx.device).unwrap();
    let old = env(&[("round", "start")]);
    for (off, flag) in [(0x1000usize, 0xfdu8), (0x8000, 0xfe)] {
        let img = encode_image(&old, ENV_SIZE as usize, Some(flag)).unwrap();
        bytes[off..off + img.len()].copy_from_slice(&img);
    }
    std::fs::write(&fx.device, bytes).unwrap();
    assert_eq!(fx.printenv().unwrap(), lines(&old));

    let mut expected = old;
    for (round, want_flags) in [
        (0u8, [0xff, 0xfe]),
        (1, [0xff, 0x00]),
        (2, [0x01, 0x00]),
        (3, [0x01, 0x02]),
    ] {
        let value = format!("r{round}");
        expected.set("round", &value).unwrap();
        if round % 2 == 0 {
            fx.setenv("round", Some(&value));
        } else {
            fx.ours().write(&expected).unwrap();
        }
        assert_eq!(fx.flag_bytes(), want_flags, "round {round}");
        assert_eq!(fx.printenv().unwrap(), lines(&expected), "round {round}");
        assert_eq!(fx.ours().read().unwrap().env, expected, "round {round}");
    }
}

#[test]
fn one_corrupt_copy_both_tools_use_the_other() {
    let fx = Fixture::new(true);
    let first = env(&[("gen", "1")]);
    let second = env(&[("gen", "2")]);
    fx.ours().write(&first).unwrap();
    fx.ours().write(&second).unwrap();
    let Origin::Copy { index: newest, .. } = fx.ours().read().unwrap().origin else {
        panic!("no valid copy");
    };
    fx.corrupt(if newest == 0 { 0x1000 } else { 0x8000 });

    assert_eq!(fx.printenv().unwrap(), lines(&first));
    let loaded = fx.ours().read().unwrap();
    assert_eq!(loaded.env, first);
    assert_eq!(loaded.skipped.len(), 1);
    assert_eq!(loaded.skipped[0].0.index, newest);
    assert!(loaded.skipped[0].1.to_string().contains("bad CRC"));

    // fw_setenv repairs by writing over the corrupt copy; we read that.
    fx.setenv("gen", Some("3"));
    let loaded = fx.ours().read().unwrap();
    assert_eq!(loaded.env, env(&[("gen", "3")]));
    assert!(loaded.skipped.is_empty());
    assert!(matches!(loaded.origin, Origin::Copy { index, .. } if index == newest));

    // And the other way round: corrupt what fw_setenv wrote, write with ours.
    fx.corrupt(if newest == 0 { 0x1000 } else { 0x8000 });
    assert_eq!(fx.printenv().unwrap(), lines(&first));
    fx.ours().write(&env(&[("gen", "4")])).unwrap();
    assert_eq!(fx.printenv().unwrap(), vec!["gen=4".to_owned()]);
}

#[test]
fn both_copies_corrupt_is_the_safe_default_and_tools_refuse() {
    let fx = Fixture::new(true);
    fx.ours().write(&env(&[("gen", "1")])).unwrap();
    fx.ours().write(&env(&[("gen", "2")])).unwrap();
    fx.corrupt(0x1000);
    fx.corrupt(0x8000);
    let loaded = fx.ours().read().unwrap();
    assert_eq!(loaded.origin, Origin::SafeDefault);
    assert!(loaded.env.is_empty());
    assert_eq!(loaded.skipped.len(), 2);
    // fw_printenv has no valid copy either and, without a default env file,
    // says so and fails.
    let err = fx.printenv().unwrap_err();
    assert!(err.contains("Cannot read environment"), "{err}");
    // A write from us makes a valid environment the tool reads.
    let fresh = env(&[("BOOT_ORDER", "A B")]);
    fx.ours().write(&fresh).unwrap();
    assert_eq!(fx.printenv().unwrap(), lines(&fresh));
}
