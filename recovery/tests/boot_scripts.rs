//! The boot scripts in `recovery/boot/` against the boot-selection model:
//! `boot.cmd` compiles with `mkimage`, `grub.cfg` passes
//! `grub-script-check`, and GRUB itself (`grub-emu`) runs `grub.cfg` on
//! grubenv files written by our `grubenv` module for every combination in
//! a table, making the decision `BootState::decide` makes. The U-Boot
//! script's defaults and try-down table are checked against the model's
//! constants here; `uboot_qemu.rs` runs it in U-Boot under QEMU.
//!
//! Needs Debian's `u-boot-tools`, `grub-common` and `grub-emu` (`cargo
//! xtask test` installs them); without them these tests fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use intrust_recovery::boot::{BootState, Decision, Slot, DEFAULT_TRIES, MAX_TRIES};
use intrust_recovery::{grubenv, Env};

fn boot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("boot")
}

fn tool(name: &str, package: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed: it is in Debian's `{package}` package, which `cargo xtask test` installs (or: apt-get install {package})"
    );
    Command::new(name)
}

#[test]
fn uboot_script_compiles_with_mkimage() {
    let tmp = tempfile::tempdir().unwrap();
    let scr = tmp.path().join("boot.scr");
    let cmd = boot_dir().join("boot.cmd");
    let out = tool("mkimage", "u-boot-tools")
        .args(["-A", "arm64", "-T", "script", "-C", "none", "-n", "intrust"])
        .arg("-d")
        .arg(&cmd)
        .arg(&scr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkimage failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = std::fs::read(&scr).unwrap();
    let source = std::fs::read(&cmd).unwrap();
    // Legacy image header: magic, then os/arch/type/comp at 28..32.
    assert_eq!(&image[..4], &[0x27, 0x05, 0x19, 0x56], "not a U-Boot image");
    assert_eq!(image[29], 22, "arch is not arm64");
    assert_eq!(image[30], 6, "type is not script");
    assert_eq!(image[31], 0, "compressed");
    // Script payload: a length table (one length, then 0), then the text.
    let len = u32::from_be_bytes([image[64], image[65], image[66], image[67]]) as usize;
    assert_eq!(len, source.len());
    assert_eq!(&image[72..72 + len], &source[..]);
}

#[test]
fn uboot_script_uses_the_models_constants() {
    let text = std::fs::read_to_string(boot_dir().join("boot.cmd")).unwrap();
    let ladder: Vec<String> = (1..=MAX_TRIES).map(|n| n.to_string()).collect();
    let expect = [
        format!("for n in {}; do", ladder.join(" ")),
        format!("test -n \"${{BOOT_A_LEFT}}\" || setenv BOOT_A_LEFT {DEFAULT_TRIES}"),
        format!("test -n \"${{BOOT_B_LEFT}}\" || setenv BOOT_B_LEFT {DEFAULT_TRIES}"),
        format!("-gt {MAX_TRIES}; then setenv intrust_a {MAX_TRIES}"),
        format!("  setenv BOOT_A_LEFT {DEFAULT_TRIES}\n  setenv BOOT_B_LEFT {DEFAULT_TRIES}\n"),
        "intrust.slot=${intrust_slot}".to_owned(),
        "root=${intrust_root}".to_owned(),
        "saveenv".to_owned(),
        "env import -c".to_owned(),
        "env export -c".to_owned(),
    ];
    for e in expect {
        assert!(text.contains(&e), "boot.cmd lacks {e:?}");
    }
}

#[test]
fn grub_config_passes_grub_script_check() {
    let out = tool("grub-script-check", "grub-common")
        .arg(boot_dir().join("grub.cfg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grub-script-check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And a broken copy fails, so the check means something.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("grub.cfg");
    let text = std::fs::read_to_string(boot_dir().join("grub.cfg")).unwrap();
    std::fs::write(&broken, text.replacen("fi\n", "\n", 1)).unwrap();
    let out = Command::new("grub-script-check")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn grub_config_try_table_matches_the_model() {
    let text = std::fs::read_to_string(boot_dir().join("grub.cfg")).unwrap();
    for n in 1..=MAX_TRIES {
        let step = format!(
            "[ \"${{intrust_left}}\" = {n} ]; then set intrust_left={}",
            n - 1
        );
        assert!(text.contains(&step), "grub.cfg lacks {step:?}");
    }
    assert!(text.contains(&format!("set BOOT_A_LEFT={DEFAULT_TRIES}; fi")));
}

/// One grubenv case: `None` leaves the variable unset.
struct Case {
    order: Option<&'static str>,
    a: Option<&'static str>,
    b: Option<&'static str>,
}

impl Case {
    fn env(&self) -> Env {
        let mut e = Env::new();
        for (k, v) in [
            ("BOOT_ORDER", self.order),
            ("BOOT_A_LEFT", self.a),
            ("BOOT_B_LEFT", self.b),
        ] {
            if let Some(v) = v {
                e.set(k, v).unwrap();
            }
        }
        e
    }
}

#[test]
fn grub_makes_the_models_decision_for_every_case() {
    // Tries above MAX_TRIES are never written, and the scripts clamp them
    // (the model would count down from them): not in the table.
    let orders = [
        None,
        Some(""),
        Some("A B"),
        Some("B A"),
        Some("B"),
        Some("junk"),
        Some("C junk B"),
    ];
    let tries = [
        None,
        Some(""),
        Some("0"),
        Some("1"),
        Some("2"),
        Some("3"),
        Some("9"),
        Some("x"),
        Some("2x"),
        Some("03"),
    ];
    let mut cases = Vec::new();
    for order in orders {
        for a in tries {
            for b in tries {
                cases.push(Case { order, a, b });
            }
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let mut wrapper = String::from("set intrust_dry_run=1\n");
    for (i, case) in cases.iter().enumerate() {
        let file = tmp.path().join(format!("grubenv-{i}"));
        grubenv::write_file(&file, &case.env()).unwrap();
        wrapper.push_str(&format!(
            "echo \"intrust-case {i}\"\nset intrust_envfile=(host){}\nsource (host){}\n",
            file.display(),
            boot_dir().join("grub.cfg").display()
        ));
    }
    wrapper.push_str("echo intrust-end\nhalt\n");
    let grub_dir = tmp.path().join("grub");
    std::fs::create_dir(&grub_dir).unwrap();
    std::fs::write(grub_dir.join("grub.cfg"), wrapper).unwrap();
    std::fs::write(tmp.path().join("device.map"), "").unwrap();
    let out = tool("grub-emu", "grub-emu")
        .arg("-d")
        .arg(&grub_dir)
        .arg("-m")
        .arg(tmp.path().join("device.map"))
        .args(["-r", "host"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = strip_terminal(&String::from_utf8_lossy(&out.stdout));
    assert!(
        text.contains("intrust-end"),
        "grub-emu did not finish:\n{text}"
    );

    let mut per_case: Vec<Vec<&str>> = vec![Vec::new(); cases.len()];
    let mut current = None;
    for line in text.lines() {
        if let Some(i) = line.strip_prefix("intrust-case ") {
            current = Some(i.trim().parse::<usize>().unwrap());
        } else if let Some(i) = current {
            per_case[i].push(line);
        }
    }
    for (case, lines) in cases.iter().zip(&per_case) {
        let what = format!(
            "BOOT_ORDER={:?} BOOT_A_LEFT={:?} BOOT_B_LEFT={:?}: grub said {lines:?}",
            case.order, case.a, case.b
        );
        let mut model = BootState::from_env(&case.env());
        let decision = model.decide();
        let saved = format!(
            "intrust-saved BOOT_A_LEFT={} BOOT_B_LEFT={}",
            model.tries_left(Slot::A),
            model.tries_left(Slot::B)
        );
        assert!(
            lines.contains(&saved.as_str()),
            "expected {saved:?}; {what}"
        );
        match decision {
            Decision::Boot(slot) => {
                let root = if slot == Slot::A {
                    "/dev/sda2"
                } else {
                    "/dev/sda3"
                };
                for want in [
                    format!("intrust-decision boot {slot}"),
                    format!("intrust-args root={root} intrust.slot={slot}"),
                ] {
                    assert!(lines.contains(&want.as_str()), "expected {want:?}; {what}");
                }
                assert!(!lines.contains(&"intrust-decision reset"), "{what}");
            }
            Decision::ResetTriesAndReboot => {
                assert!(lines.contains(&"intrust-decision reset"), "{what}");
                assert!(
                    !lines.iter().any(|l| l.starts_with("intrust-decision boot")),
                    "{what}"
                );
            }
        }
    }
}

/// grub-emu's console output without colour escapes and carriage returns.
fn strip_terminal(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
