//! Factory reset against real directories: what goes, what stays, an
//! interrupted reset finished by the next call, bad data paths, symbolic
//! links, and the `factory-reset` subcommand.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use intrust_recovery::config::Config;
use intrust_recovery::factory_reset::{
    factory_reset, finish_interrupted, FactoryResetError, TRASH_PREFIX,
};

const KEY: &str = "58cf6a418f07272df3843352bdb1c2e25f8eff9820f0d2baea9425d5a0cfd5b0";
const IDENTITY_KEY: &[u8] = b"-----BEGIN EC PRIVATE KEY-----\nfactory\x00\xff bytes\n";

struct Area {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    outside: PathBuf,
    config_file: PathBuf,
}

impl Area {
    /// A data area with personas, tokens, apps and the factory identity,
    /// and a directory outside it that links point into.
    fn new(keep: Option<&str>) -> Area {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let data = root.join("data");
        let outside = root.join("outside");
        for d in [
            "data/identity",
            "data/personas/alice",
            "data/apps/photos/db",
            "outside/secret-dir",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(data.join("identity/device.key"), IDENTITY_KEY).unwrap();
        fs::write(data.join("identity/device-id"), "0123456789abcdef\n").unwrap();
        fs::write(data.join("personas/alice/opaque-record"), b"record").unwrap();
        fs::write(data.join("tokens"), b"t1\nt2\n").unwrap();
        fs::write(data.join("apps/photos/db/photos.sqlite"), vec![7u8; 10_000]).unwrap();
        fs::write(data.join(".hidden"), b"dotfile").unwrap();
        fs::write(outside.join("precious"), b"outside file").unwrap();
        fs::write(outside.join("secret-dir/inner"), b"outside dir").unwrap();
        let config_file = root.join("recovery.toml");
        let keep_line = keep
            .map(|k| format!("data_keep = {k}\n"))
            .unwrap_or_default();
        fs::write(
            &config_file,
            format!(
                r#"board = "sim"
trusted_keys = ["{KEY}"]
data = "{data}"
{keep_line}booted_slot = "A"
[slots.A]
rootfs = {{ device = "{root}/a" }}
[slots.B]
rootfs = {{ device = "{root}/b" }}
[bootloader]
kind = "grub"
grubenv = "{root}/grubenv"
"#,
                data = data.display(),
                root = root.display(),
            ),
        )
        .unwrap();
        Area {
            _tmp: tmp,
            root,
            data,
            outside,
            config_file,
        }
    }

    fn config(&self) -> Config {
        Config::load(&self.config_file).unwrap()
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn assert_only_identity(&self) {
        assert_eq!(self.names(), vec!["identity"]);
        assert_eq!(
            fs::read(self.data.join("identity/device.key")).unwrap(),
            IDENTITY_KEY
        );
        assert_eq!(
            fs::read(self.data.join("identity/device-id")).unwrap(),
            b"0123456789abcdef\n"
        );
        // Nothing outside the data area was touched.
        assert_eq!(
            fs::read(self.outside.join("precious")).unwrap(),
            b"outside file"
        );
        assert_eq!(
            fs::read(self.outside.join("secret-dir/inner")).unwrap(),
            b"outside dir"
        );
    }
}

#[test]
fn wipes_everything_but_the_identity() {
    let area = Area::new(None);
    let report = factory_reset(&area.config()).unwrap();
    area.assert_only_identity();
    assert_eq!(
        report.removed,
        vec![".hidden", "apps", "personas", "tokens"]
    );
    assert_eq!(report.kept, vec!["identity"]);
    assert!(!report.finished_interrupted);
    // Again: nothing left to do, still fine.
    let again = factory_reset(&area.config()).unwrap();
    assert!(again.removed.is_empty());
    area.assert_only_identity();
}

#[test]
fn configured_keep_list_is_honoured() {
    let area = Area::new(Some(r#"["identity", "tokens"]"#));
    let report = factory_reset(&area.config()).unwrap();
    assert_eq!(report.kept, vec!["identity", "tokens"]);
    assert_eq!(area.names(), vec!["identity", "tokens"]);
    assert_eq!(fs::read(area.data.join("tokens")).unwrap(), b"t1\nt2\n");
}

#[test]
fn symlinks_are_removed_never_followed() {
    let area = Area::new(None);
    symlink(
        area.outside.join("precious"),
        area.data.join("link-to-file"),
    )
    .unwrap();
    symlink(
        area.outside.join("secret-dir"),
        area.data.join("link-to-dir"),
    )
    .unwrap();
    symlink(&area.outside, area.data.join("apps/photos/escape")).unwrap();
    symlink("/nonexistent/target", area.data.join("dangling")).unwrap();
    // A link named like a trash dir is not one: it is wiped as a link.
    symlink(&area.outside, area.data.join(format!("{TRASH_PREFIX}7"))).unwrap();
    factory_reset(&area.config()).unwrap();
    area.assert_only_identity();
    assert!(area.outside.join("secret-dir").is_dir());
}

#[test]
fn interrupted_reset_completes_on_the_next_call() {
    // Power cut after step 3 had moved some entries: a trash dir holding
    // personas, the rest still in place.
    let area = Area::new(None);
    let trash = area.data.join(format!("{TRASH_PREFIX}0"));
    fs::create_dir(&trash).unwrap();
    fs::rename(area.data.join("personas"), trash.join("personas")).unwrap();
    // The agent must finish it before reading anything.
    let report = finish_interrupted(&area.config()).unwrap().unwrap();
    assert!(report.finished_interrupted);
    assert_eq!(report.removed, vec![".hidden", "apps", "tokens"]);
    area.assert_only_identity();
    assert_eq!(finish_interrupted(&area.config()).unwrap(), None);
}

#[test]
fn interrupted_reset_with_recreated_names_and_several_trash_dirs() {
    // A cut during step 5 left half-deleted trash, something recreated a
    // name that is also in the trash, and an older trash dir is around.
    let area = Area::new(None);
    let t0 = area.data.join(format!("{TRASH_PREFIX}0"));
    let t3 = area.data.join(format!("{TRASH_PREFIX}3"));
    fs::create_dir_all(t0.join("tokens")).unwrap();
    fs::write(t0.join("tokens/old"), b"x").unwrap();
    fs::create_dir_all(t3.join("deep/er")).unwrap();
    let report = factory_reset(&area.config()).unwrap();
    assert!(report.finished_interrupted);
    area.assert_only_identity();
}

#[test]
fn no_trash_means_nothing_to_finish() {
    let area = Area::new(None);
    assert_eq!(finish_interrupted(&area.config()).unwrap(), None);
    assert!(area.names().contains(&"personas".to_owned()));
}

fn config_with_data(area: &Area, data: &Path) -> Config {
    let mut c = area.config();
    c.data = data.to_owned();
    c
}

#[test]
fn missing_or_non_directory_data_is_a_clear_error() {
    let area = Area::new(None);
    let missing = area.root.join("not-mounted");
    let e = factory_reset(&config_with_data(&area, &missing)).unwrap_err();
    assert!(matches!(e, FactoryResetError::DataMissing(_)), "{e:?}");
    assert!(e.to_string().contains("not-mounted") && e.to_string().contains("mounted"));
    assert!(finish_interrupted(&config_with_data(&area, &missing)).is_err());

    let file = area.root.join("a-device");
    fs::write(&file, b"block device stand-in").unwrap();
    let e = factory_reset(&config_with_data(&area, &file)).unwrap_err();
    assert!(matches!(e, FactoryResetError::NotADirectory(_)), "{e:?}");
    assert!(e.to_string().contains("not a directory"), "{e}");
    assert_eq!(fs::read(&file).unwrap(), b"block device stand-in");

    let e = factory_reset(&config_with_data(&area, Path::new("/"))).unwrap_err();
    assert!(matches!(e, FactoryResetError::RootDirectory(_)), "{e:?}");
    // The real data area was not touched by any of these.
    assert!(area.names().contains(&"personas".to_owned()));
}

fn recovery(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_intrust-recovery"));
    c.args(args).stdin(Stdio::null());
    c
}

#[test]
fn cli_refuses_without_yes_when_not_on_a_terminal() {
    let area = Area::new(None);
    let config = area.config_file.to_str().unwrap();
    let out = recovery(&["factory-reset", "--config", config])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(area.names().contains(&"personas".to_owned()));
}

#[test]
fn cli_wipes_with_yes() {
    let area = Area::new(None);
    let config = area.config_file.to_str().unwrap();
    let out = recovery(&["factory-reset", "--config", config, "--yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("wiped 4"), "{stdout}");
    area.assert_only_identity();

    fs::remove_dir_all(&area.data).unwrap();
    let out = recovery(&["factory-reset", "--config", config, "--yes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
}
