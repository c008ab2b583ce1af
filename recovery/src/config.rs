//! The recovery config file (TOML): which board this is, which keys may sign
//! bundles, where slots A and B and the data area are, and which bootloader
//! environment holds the boot selection.
//!
//! Invariants after [`Config::parse`]: at least one trusted key; both slots
//! have a `rootfs`; no device path is used twice (a slot, the other slot and
//! the data area never alias, so installing into one can never write
//! another). Errors name the file and the line of the offending key.
//!
//! ```toml
//! board = "rpi4"
//! trusted_keys = ["58cf6a41…"]          # 64 hex digits each
//! data = "/data"                       # mounted data partition; updates never write it
//! # data_keep = ["identity"]            # entries of `data` a factory reset keeps
//! # booted_slot = "A"                   # tests: instead of /proc/cmdline
//! # cmdline = "/proc/cmdline"           # where `intrust.slot=A|B` is read
//! # state_dir = "/var/lib/intrust-recovery"   # last install error
//! # update_ca = "/etc/intrust/update-ca.pem"   # trusted CAs for https:// bundles
//!
//! [slots.A]
//! rootfs = { device = "/dev/mmcblk0p2" }            # size: the device's
//! kernel = { device = "/dev/mmcblk0p1", size = 33554432 }
//! [slots.B]
//! rootfs = { device = "/dev/mmcblk0p3" }
//! kernel = { device = "/dev/mmcblk0p6", size = 33554432 }
//!
//! [bootloader]
//! kind = "uboot"                        # or "grub" with grubenv = "…"
//! fw_env_config = "/etc/fw_env.config"
//! ```

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::boot::Slot;
use crate::bundle::{Part, PublicKey};

/// What factory reset keeps when the config does not say: the factory
/// identity.
pub const DEFAULT_DATA_KEEP: &str = "identity";

/// Where `intrust.slot=` is read by default.
pub const DEFAULT_CMDLINE: &str = "/proc/cmdline";

/// A parsed, checked recovery config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The board name bundles must be `compatible` with.
    pub board: String,
    /// Keys whose bundles are installed.
    pub trusted_keys: Vec<PublicKey>,
    /// The data area: the directory the data partition is mounted on.
    /// Updates never write it; factory reset empties it except
    /// [`Config::data_keep`].
    pub data: PathBuf,
    /// Names of entries directly in `data` that factory reset keeps (the
    /// factory identity). Single file names: no `/`, not `.`/`..`, not
    /// starting with `.wipe-` (the reset's trash). Default `["identity"]`.
    pub data_keep: Vec<String>,
    /// Slot A's devices.
    pub slot_a: SlotConfig,
    /// Slot B's devices.
    pub slot_b: SlotConfig,
    /// The bootloader environment.
    pub bootloader: Bootloader,
    /// Overrides the booted slot (tests, or boards without the cmdline arg).
    pub booted_slot: Option<Slot>,
    /// Kernel command line file holding `intrust.slot=`.
    pub cmdline: PathBuf,
    /// Where the last install error is kept, if anywhere.
    pub state_dir: Option<PathBuf>,
    /// PEM file of the CA certificates trusted for `install https://…`
    /// (no system roots: without it, URLs are refused).
    pub update_ca: Option<PathBuf>,
}

/// The devices of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotConfig {
    /// The root file system device.
    pub rootfs: Device,
    /// The kernel device, if the board has one per slot.
    pub kernel: Option<Device>,
}

impl SlotConfig {
    /// The device for `part`.
    pub fn device(&self, part: Part) -> Option<&Device> {
        match part {
            Part::Rootfs => Some(&self.rootfs),
            Part::Kernel => self.kernel.as_ref(),
        }
    }
}

/// A block device, partition or file an image is written to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Its path; it must exist (never created).
    pub device: PathBuf,
    /// Usable bytes; `None` means the size of the device or file.
    pub size: Option<u64>,
}

/// The bootloader environment backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Bootloader {
    /// U-Boot environment described by a `fw_env.config`.
    Uboot {
        /// Path of the `fw_env.config`.
        fw_env_config: PathBuf,
    },
    /// GRUB environment file.
    Grub {
        /// Path of the `grubenv` file.
        grubenv: PathBuf,
    },
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read recovery config {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The OS error.
        source: io::Error,
    },
    /// Malformed or invalid.
    #[error("{file}:{line}: {message}")]
    Invalid {
        /// The file (or `<config>`).
        file: String,
        /// 1-based line (1 when the problem is the whole file).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    board: toml::Spanned<String>,
    trusted_keys: toml::Spanned<Vec<KeyHex>>,
    data: toml::Spanned<PathBuf>,
    data_keep: Option<toml::Spanned<Vec<String>>>,
    slots: RawSlots,
    bootloader: Bootloader,
    booted_slot: Option<SlotName>,
    cmdline: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    update_ca: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlots {
    #[serde(rename = "A")]
    a: RawSlot,
    #[serde(rename = "B")]
    b: RawSlot,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlot {
    rootfs: toml::Spanned<Device>,
    kernel: Option<toml::Spanned<Device>>,
}

struct KeyHex(PublicKey);

impl<'de> Deserialize<'de> for KeyHex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyHex, D::Error> {
        let text = String::deserialize(d)?;
        PublicKey::from_hex(&text)
            .map(KeyHex)
            .map_err(|e| serde::de::Error::custom(format!("trusted key {text:?}: {e}")))
    }
}

struct SlotName(Slot);

impl<'de> Deserialize<'de> for SlotName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SlotName, D::Error> {
        match String::deserialize(d)?.as_str() {
            "A" => Ok(SlotName(Slot::A)),
            "B" => Ok(SlotName(Slot::B)),
            other => Err(serde::de::Error::custom(format!(
                "slot {other:?}: expected \"A\" or \"B\""
            ))),
        }
    }
}

impl Config {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(&text, &file)
    }

    /// Parses and checks config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let invalid = |at: usize, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            line: line_of(text, at),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            invalid(at, e.message().trim().to_owned())
        })?;
        if raw.board.get_ref().trim().is_empty() {
            return Err(invalid(raw.board.span().start, "board is empty".into()));
        }
        if raw.trusted_keys.get_ref().is_empty() {
            return Err(invalid(
                raw.trusted_keys.span().start,
                "trusted_keys is empty: no bundle could ever be installed".into(),
            ));
        }
        // Every device path once: installing into one must never write another.
        let mut seen: Vec<(&Path, &str)> = vec![(raw.data.get_ref(), "data")];
        let mut devices = vec![
            (&raw.slots.a.rootfs, "slots.A.rootfs"),
            (&raw.slots.b.rootfs, "slots.B.rootfs"),
        ];
        if let Some(k) = &raw.slots.a.kernel {
            devices.push((k, "slots.A.kernel"));
        }
        if let Some(k) = &raw.slots.b.kernel {
            devices.push((k, "slots.B.kernel"));
        }
        for (device, name) in devices {
            let path = device.get_ref().device.as_path();
            if let Some((_, other)) = seen.iter().find(|(p, _)| *p == path) {
                return Err(invalid(
                    device.span().start,
                    format!("{name} uses {} which {other} already uses", path.display()),
                ));
            }
            if device.get_ref().size == Some(0) {
                return Err(invalid(device.span().start, format!("{name} has size 0")));
            }
            seen.push((path, name));
        }
        let data_keep = match raw.data_keep {
            None => vec![DEFAULT_DATA_KEEP.to_owned()],
            Some(keep) => {
                for name in keep.get_ref() {
                    if let Err(why) = check_keep_name(name) {
                        return Err(invalid(
                            keep.span().start,
                            format!("data_keep entry {name:?}: {why}"),
                        ));
                    }
                }
                keep.into_inner()
            }
        };
        let slot = |s: RawSlot| SlotConfig {
            rootfs: s.rootfs.into_inner(),
            kernel: s.kernel.map(toml::Spanned::into_inner),
        };
        Ok(Config {
            board: raw.board.into_inner(),
            trusted_keys: raw
                .trusted_keys
                .into_inner()
                .into_iter()
                .map(|k| k.0)
                .collect(),
            data: raw.data.into_inner(),
            data_keep,
            slot_a: slot(raw.slots.a),
            slot_b: slot(raw.slots.b),
            bootloader: raw.bootloader,
            booted_slot: raw.booted_slot.map(|s| s.0),
            cmdline: raw
                .cmdline
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CMDLINE)),
            state_dir: raw.state_dir,
            update_ca: raw.update_ca,
        })
    }

    /// The devices of `slot`.
    pub fn slot(&self, slot: Slot) -> &SlotConfig {
        match slot {
            Slot::A => &self.slot_a,
            Slot::B => &self.slot_b,
        }
    }
}

/// Why `name` cannot be a `data_keep` entry.
fn check_keep_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        Err("must name an entry of the data area")
    } else if name.contains('/') || name.contains('\0') {
        Err("must be a single name directly in the data area, without '/'")
    } else if name.starts_with(crate::factory_reset::TRASH_PREFIX) {
        Err("names starting with .wipe- are the factory reset's trash")
    } else {
        Ok(())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "58cf6a418f07272df3843352bdb1c2e25f8eff9820f0d2baea9425d5a0cfd5b0";

    fn good() -> String {
        format!(
            r#"board = "sim"
trusted_keys = ["{KEY}"]
data = "/dev/data"
booted_slot = "A"

[slots.A]
rootfs = {{ device = "/dev/a-root" }}
kernel = {{ device = "/dev/a-kern", size = 4096 }}

[slots.B]
rootfs = {{ device = "/dev/b-root" }}

[bootloader]
kind = "uboot"
fw_env_config = "/etc/fw_env.config"
"#
        )
    }

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(&good(), "c.toml").unwrap();
        assert_eq!(c.board, "sim");
        assert_eq!(c.trusted_keys, vec![PublicKey::from_hex(KEY).unwrap()]);
        assert_eq!(c.booted_slot, Some(Slot::A));
        assert_eq!(c.cmdline, PathBuf::from(DEFAULT_CMDLINE));
        assert_eq!(c.data_keep, vec!["identity".to_owned()]);
        let keep = good().replace(
            "[slots.A]",
            "data_keep = [\"identity\", \"lost+found\"]\n[slots.A]",
        );
        assert_eq!(
            Config::parse(&keep, "c").unwrap().data_keep,
            vec!["identity".to_owned(), "lost+found".to_owned()]
        );
        assert_eq!(c.slot(Slot::A).kernel.as_ref().unwrap().size, Some(4096));
        assert_eq!(c.slot(Slot::B).device(Part::Kernel), None);
        assert_eq!(
            c.bootloader,
            Bootloader::Uboot {
                fw_env_config: "/etc/fw_env.config".into()
            }
        );
        let grub = good().replace(
            "kind = \"uboot\"\nfw_env_config = \"/etc/fw_env.config\"",
            "kind = \"grub\"\ngrubenv = \"/boot/grubenv\"",
        );
        assert!(matches!(
            Config::parse(&grub, "c").unwrap().bootloader,
            Bootloader::Grub { .. }
        ));
    }

    fn err(text: &str) -> (usize, String) {
        match Config::parse(text, "c.toml") {
            Err(ConfigError::Invalid { line, message, .. }) => (line, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        let (line, msg) = err(&good().replace(KEY, "abcd"));
        assert_eq!(line, 2, "{msg}");
        assert!(msg.contains("64 hex digits"), "{msg}");
        let (line, msg) = err(&good().replace("/dev/b-root", "/dev/a-root"));
        assert_eq!(line, 11, "{msg}");
        assert!(msg.contains("slots.B.rootfs") && msg.contains("slots.A.rootfs"));
        let (line, msg) = err(&good().replace("/dev/a-kern", "/dev/data"));
        assert_eq!(line, 8, "{msg}");
        let (line, msg) = err(&good().replace("booted_slot = \"A\"", "booted_slot = \"C\""));
        assert_eq!(line, 4, "{msg}");
        let (line, _) = err(&good().replace("size = 4096", "size = -1"));
        assert_eq!(line, 8);
        let (line, _) = err(&good().replace("kind = \"uboot\"", "kind = \"lilo\""));
        assert!(line >= 13);
        let (line, msg) = err(&good().replace(&format!("\"{KEY}\""), ""));
        assert_eq!(line, 2);
        assert!(msg.contains("trusted_keys is empty"));
        let (line, msg) = err(&good().replace("[slots.A]", "[slots.A]\nsurprise = 1"));
        assert_eq!(line, 7, "{msg}");
        assert!(msg.contains("unknown field `surprise`"), "{msg}");
        let (line, msg) = err(&good().replace("[slots.A]", "data_keep = [\"../x\"]\n[slots.A]"));
        assert_eq!(line, 6, "{msg}");
        assert!(msg.contains("data_keep entry \"../x\""), "{msg}");
        let (_, msg) = err(&good().replace("[slots.A]", "data_keep = [\".wipe-0\"]\n[slots.A]"));
        assert!(msg.contains("trash"), "{msg}");
        let (_, msg) = err("board = \"x\"\n");
        assert!(msg.contains("missing field"), "{msg}");
    }
}
