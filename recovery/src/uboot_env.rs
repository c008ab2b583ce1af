//! U-Boot's environment in its on-disk format, configured like
//! `fw_env.config`, read and written so that U-Boot and libubootenv's
//! `fw_printenv`/`fw_setenv` agree with us about every byte.
//!
//! Layout of one copy of `env_size` bytes at `offset`:
//! - single copy: `crc32 (u32 LE) | data`
//! - redundant:   `crc32 (u32 LE) | flags (u8) | data`
//!
//! `data` is `name=value\0` entries ended by an empty entry (`\0`), padded
//! with `0x00` (what U-Boot's `saveenv` pads with; libubootenv leaves the
//! padding unspecified and mkenvimage uses `0xff`: the CRC covers the whole
//! data area, so readers accept any padding). The CRC is zlib's crc32 of the
//! whole data area, stored little-endian (both of our targets are
//! little-endian, and U-Boot and libubootenv store it in host order).
//!
//! Which redundant copy is active is decided exactly as libubootenv 0.3.x
//! (`libuboot_load`) and U-Boot (`env_import_redund`) do it; see
//! [`choose_active`].
//!
//! Power cuts ([`UbootEnv::write`]): a redundant write only ever writes the
//! inactive copy, with the next flag value, then fsyncs. Cut before the
//! fsync completes: the written copy is torn or old, its CRC fails or its
//! flag is older, and the old copy stays active (the old environment, whole).
//! Cut after: the new copy is valid and newer, so it is active (the new
//! environment, whole). There is no state in between. A single-copy write
//! cut halfway leaves a bad CRC, which reads as the safe default
//! ([`Origin::SafeDefault`]); that is why appliances use two copies.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::env::Env;
use crate::storage::{FileStorage, Storage};

/// Largest `env_size` accepted from a config file. U-Boot environments are
/// 8 KiB–256 KiB; the bound keeps a typo from allocating gigabytes.
pub const MAX_ENV_SIZE: u64 = 16 << 20;

// ---------------------------------------------------------------------------
// fw_env.config

/// One line of `fw_env.config`: where one copy of the environment lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyConfig {
    /// Device or file holding this copy.
    pub device: PathBuf,
    /// Byte offset in `device`; negative counts back from the device's end
    /// (as libubootenv does).
    pub offset: i64,
    /// Size of the copy in bytes, header included.
    pub env_size: u64,
    /// Erase-sector size (kept for MTD parity; unused for files and block
    /// devices).
    pub sector_size: Option<u64>,
    /// Number of sectors (same).
    pub sectors: Option<u64>,
}

/// A parsed `fw_env.config`: one line is a single copy, two lines are the
/// redundant pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvConfig {
    copies: Vec<CopyConfig>,
}

/// A `fw_env.config` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read U-Boot env config {file}: {source}")]
    Read {
        /// The config file.
        file: String,
        /// The OS error.
        source: io::Error,
    },
    /// A line is malformed.
    #[error("{file}:{line}: {message}")]
    Line {
        /// The config file (or `<config>` for text).
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong, and what was expected.
        message: String,
    },
    /// No line names a device.
    #[error("{file}: no environment device (expected a line `DEVICE OFFSET ENV_SIZE [SECTOR_SIZE [SECTORS]]`)")]
    Empty {
        /// The config file.
        file: String,
    },
}

impl EnvConfig {
    /// A single copy.
    pub fn single(device: impl Into<PathBuf>, offset: i64, env_size: u64) -> EnvConfig {
        EnvConfig {
            copies: vec![CopyConfig {
                device: device.into(),
                offset,
                env_size,
                sector_size: None,
                sectors: None,
            }],
        }
    }

    /// A redundant pair of copies of the same size.
    pub fn redundant(
        first: (impl Into<PathBuf>, i64),
        second: (impl Into<PathBuf>, i64),
        env_size: u64,
    ) -> EnvConfig {
        let copy = |(device, offset): (PathBuf, i64)| CopyConfig {
            device,
            offset,
            env_size,
            sector_size: None,
            sectors: None,
        };
        EnvConfig {
            copies: vec![
                copy((first.0.into(), first.1)),
                copy((second.0.into(), second.1)),
            ],
        }
    }

    /// Reads and parses a `fw_env.config` file.
    pub fn load(path: &Path) -> Result<EnvConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        EnvConfig::parse(&text, &file)
    }

    /// Parses `fw_env.config` text; `file` names it in errors.
    ///
    /// Accepts what libubootenv accepts for files and block devices:
    /// `DEVICE OFFSET ENV_SIZE [SECTOR_SIZE [SECTORS]]`, with OFFSET a C
    /// integer (`0x` hex, leading-`0` octal, decimal, optional sign) and the
    /// sizes hexadecimal with or without `0x` (libubootenv scans them with
    /// `%zx`, so `4000` means 0x4000). `#` comments and blank lines are
    /// skipped. Stricter than libubootenv: a line it would silently skip or
    /// half-read is an error here, and MTD/UBI devices are refused.
    pub fn parse(text: &str, file: &str) -> Result<EnvConfig, ConfigError> {
        let mut copies = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let err = |message: String| ConfigError::Line {
                file: file.to_owned(),
                line,
                message,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            if !(3..=5).contains(&fields.len()) {
                return Err(err(format!(
                    "expected `DEVICE OFFSET ENV_SIZE [SECTOR_SIZE [SECTORS]]`, found {} field(s)",
                    fields.len()
                )));
            }
            let device = fields[0];
            if device.starts_with("/dev/mtd") || device.starts_with("/dev/ubi") {
                return Err(err(format!(
                    "device {device}: MTD and UBI devices are not supported (only files and block devices)"
                )));
            }
            let offset = parse_c_integer(fields[1])
                .ok_or_else(|| err(format!("offset {:?} is not an integer", fields[1])))?;
            let env_size = parse_hex(fields[2]).ok_or_else(|| {
                err(format!(
                    "env size {:?} is not a hexadecimal number",
                    fields[2]
                ))
            })?;
            if env_size <= REDUNDANT_HEADER as u64 {
                return Err(err(format!(
                    "env size {env_size:#x} is too small for the {REDUNDANT_HEADER}-byte header and a terminator"
                )));
            }
            if env_size > MAX_ENV_SIZE {
                return Err(err(format!(
                    "env size {env_size:#x} is larger than the {MAX_ENV_SIZE:#x} bytes accepted"
                )));
            }
            let optional_hex = |i: usize, what: &str| -> Result<Option<u64>, ConfigError> {
                match fields.get(i) {
                    None => Ok(None),
                    Some(s) => parse_hex(s)
                        .map(Some)
                        .ok_or_else(|| err(format!("{what} {s:?} is not a hexadecimal number"))),
                }
            };
            let sector_size = optional_hex(3, "sector size")?;
            let sectors = optional_hex(4, "sector count")?;
            if copies.len() == 2 {
                return Err(err(
                    "a third environment line; one line is a single copy, two are a redundant pair"
                        .to_owned(),
                ));
            }
            if let Some(first) = copies.first() {
                let first: &CopyConfig = first;
                if first.env_size != env_size {
                    return Err(err(format!(
                        "env size {env_size:#x} differs from the first copy's {:#x}; redundant copies must be the same size",
                        first.env_size
                    )));
                }
            }
            copies.push(CopyConfig {
                device: PathBuf::from(device),
                offset,
                env_size,
                sector_size,
                sectors,
            });
        }
        if copies.is_empty() {
            return Err(ConfigError::Empty {
                file: file.to_owned(),
            });
        }
        Ok(EnvConfig { copies })
    }

    /// The copies, in config order (copy 0, copy 1).
    pub fn copies(&self) -> &[CopyConfig] {
        &self.copies
    }

    /// Whether there are two copies.
    pub fn is_redundant(&self) -> bool {
        self.copies.len() == 2
    }

    /// Size of each copy in bytes.
    pub fn env_size(&self) -> u64 {
        self.copies[0].env_size
    }

    /// The config as `fw_env.config` text (for `fw_printenv -c`).
    pub fn to_config_text(&self) -> String {
        let mut out = String::from("# device offset env_size [sector_size [sectors]]\n");
        for c in &self.copies {
            let offset = if c.offset < 0 {
                format!("-{:#x}", c.offset.unsigned_abs())
            } else {
                format!("{:#x}", c.offset)
            };
            out.push_str(&format!(
                "{} {} {:#x}",
                c.device.display(),
                offset,
                c.env_size
            ));
            if let Some(s) = c.sector_size {
                out.push_str(&format!(" {s:#x}"));
                if let Some(n) = c.sectors {
                    out.push_str(&format!(" {n:#x}"));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// `%lli`: optional sign, then `0x` hex, `0` octal or decimal.
fn parse_c_integer(s: &str) -> Option<i64> {
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()?
    } else if rest.len() > 1 && rest.starts_with('0') {
        u64::from_str_radix(&rest[1..], 8).ok()?
    } else {
        rest.parse::<u64>().ok()?
    };
    if rest.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = i64::try_from(magnitude).ok()?;
    Some(if neg { -magnitude } else { magnitude })
}

/// `%zx`: hexadecimal with an optional `0x`.
fn parse_hex(s: &str) -> Option<u64> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

// ---------------------------------------------------------------------------
// The on-disk format

const SINGLE_HEADER: usize = 4;
const REDUNDANT_HEADER: usize = 5;

/// How the flag byte of a redundant pair orders the copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagScheme {
    /// Each write stores the active copy's flag + 1 (wrapping; 0 beats 255).
    /// libubootenv uses it for files, block devices, NAND and UBI: for us,
    /// always.
    Incremental,
    /// The new copy gets 1 ("active"), then the old copy's flag is cleared
    /// to 0 ("obsolete"); 255 (erased flash) counts as active. libubootenv
    /// uses it only for NOR flash; here for images U-Boot reads from NOR.
    Boolean,
}

/// Which copy of a redundant pair is active, given whether each CRC is
/// valid and each flag byte. `None` when neither is valid.
///
/// Mirrors libubootenv's `libuboot_load` (0.3.2 in Debian bookworm, same in
/// 0.3.7): a copy with a valid CRC beats one without; when both are valid the
/// larger flag wins, ties go to copy 0, and then
/// - incremental: 255 vs 0 is a wrap-around, so the copy holding 0 wins;
/// - boolean: a copy holding 255 wins (copy 1 first).
pub fn choose_active(valid: [bool; 2], flags: [u8; 2], scheme: FlagScheme) -> Option<usize> {
    match valid {
        [false, false] => None,
        [true, false] => Some(0),
        [false, true] => Some(1),
        [true, true] => {
            let mut current = if flags[1] > flags[0] { 1 } else { 0 };
            match scheme {
                FlagScheme::Boolean => {
                    if flags[1] == 0xff {
                        current = 1;
                    } else if flags[0] == 0xff {
                        current = 0;
                    }
                }
                FlagScheme::Incremental => {
                    if flags[0] == 0xff && flags[1] == 0 {
                        current = 1;
                    } else if flags[1] == 0xff && flags[0] == 0 {
                        current = 0;
                    }
                }
            }
            Some(current)
        }
    }
}

/// Why one copy's bytes are not an environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    /// The stored CRC does not match the data: torn write, never written,
    /// or another format.
    #[error("bad CRC (stored {stored:#010x}, computed {computed:#010x})")]
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the data area.
        computed: u32,
    },
    /// The entries never end with an empty entry (`\0\0`).
    #[error("no terminating empty entry (\\0\\0) in the {data_len}-byte data area")]
    NoTerminator {
        /// Size of the data area.
        data_len: usize,
    },
    /// An entry is not UTF-8.
    #[error("entry at data offset {offset} is not UTF-8")]
    NotUtf8 {
        /// Offset of the entry in the data area.
        offset: usize,
    },
    /// An entry has no `=`.
    #[error("entry at data offset {offset} has no '=': {entry:?}")]
    MissingEquals {
        /// Offset of the entry in the data area.
        offset: usize,
        /// The entry (at most 64 characters of it).
        entry: String,
    },
    /// An entry starts with `=`.
    #[error("entry at data offset {offset} has an empty name")]
    EmptyName {
        /// Offset of the entry in the data area.
        offset: usize,
    },
}

/// CRC-32 as zlib's `crc32(0, data, len)` (IEEE 802.3, reflected).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn header_len(redundant: bool) -> usize {
    if redundant {
        REDUNDANT_HEADER
    } else {
        SINGLE_HEADER
    }
}

/// Checks one copy's CRC; returns its flag byte (redundant) and data area.
fn check_crc(image: &[u8], redundant: bool) -> Result<(Option<u8>, &[u8]), CopyError> {
    let header = header_len(redundant);
    let (head, data) = image.split_at(header);
    let stored = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let computed = crc32(data);
    if stored != computed {
        return Err(CopyError::BadCrc { stored, computed });
    }
    Ok((redundant.then(|| head[4]), data))
}

/// Parses a data area: `name=value\0 … \0`. Later duplicates win, as in
/// libubootenv and U-Boot.
pub fn parse_data(data: &[u8]) -> Result<Env, CopyError> {
    let mut env = Env::new();
    let mut pos = 0;
    loop {
        let rest = data.get(pos..).unwrap_or(&[]);
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(CopyError::NoTerminator {
                data_len: data.len(),
            });
        };
        if len == 0 {
            return Ok(env);
        }
        let raw = &rest[..len];
        let entry = std::str::from_utf8(raw).map_err(|_| CopyError::NotUtf8 { offset: pos })?;
        let Some((name, value)) = entry.split_once('=') else {
            return Err(CopyError::MissingEquals {
                offset: pos,
                entry: entry.chars().take(64).collect(),
            });
        };
        if name.is_empty() {
            return Err(CopyError::EmptyName { offset: pos });
        }
        env.insert_from_disk(name.to_owned(), value.to_owned());
        pos += len + 1;
    }
}

/// Builds the data area for `env`: entries, terminator, `0x00` padding.
/// `None` when it does not fit in `data_len` bytes.
pub fn encode_data(env: &Env, data_len: usize) -> Option<Vec<u8>> {
    let mut data = Vec::with_capacity(data_len);
    for (name, value) in env.iter() {
        data.extend_from_slice(name.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    data.push(0);
    if data.len() > data_len {
        return None;
    }
    data.resize(data_len, 0);
    Some(data)
}

/// A whole copy: header (CRC, and the flag byte when `flags` is given) and
/// data, `env_size` bytes.
pub fn encode_image(env: &Env, env_size: usize, flags: Option<u8>) -> Option<Vec<u8>> {
    let header = header_len(flags.is_some());
    let data = encode_data(env, env_size.checked_sub(header)?)?;
    let mut image = Vec::with_capacity(env_size);
    image.extend_from_slice(&crc32(&data).to_le_bytes());
    if let Some(f) = flags {
        image.push(f);
    }
    image.extend_from_slice(&data);
    Some(image)
}

// ---------------------------------------------------------------------------
// Reading and writing through Storage

/// Where a copy lives, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyLocation {
    /// 0 or 1, in config order.
    pub index: usize,
    /// Device name.
    pub device: String,
    /// Resolved byte offset.
    pub offset: u64,
}

impl fmt::Display for CopyLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "env copy {} ({} at offset {:#x})",
            self.index, self.device, self.offset
        )
    }
}

/// A U-Boot environment that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A device could not be opened.
    #[error("cannot open U-Boot env device {device}: {source}")]
    Open {
        /// The device path.
        device: String,
        /// The OS error.
        source: io::Error,
    },
    /// Reading, writing or syncing a copy failed.
    #[error("{what} {at}: {source}")]
    Io {
        /// `"reading"`, `"writing"`, `"syncing"`, `"sizing"`.
        what: &'static str,
        /// The copy.
        at: CopyLocation,
        /// The OS error.
        source: io::Error,
    },
    /// A negative offset reaches before the start of the device.
    #[error("offset {offset} of {device} reaches before its start (device is {len} bytes)")]
    OffsetBeforeStart {
        /// The device.
        device: String,
        /// The configured offset.
        offset: i64,
        /// The device size.
        len: u64,
    },
    /// The active copy has a valid CRC but its entries are malformed.
    /// Not replaced by a default: a valid CRC means someone wrote this on
    /// purpose, and U-Boot would use it.
    #[error("{at} has a valid CRC but is malformed: {problem}")]
    Malformed {
        /// The copy.
        at: CopyLocation,
        /// What is wrong.
        problem: CopyError,
    },
    /// The environment does not fit in a copy.
    #[error("environment needs {needed} bytes but a copy holds {available} (env size {env_size:#x} minus the header)")]
    TooBig {
        /// Bytes needed for the entries and terminator.
        needed: usize,
        /// Data bytes available.
        available: usize,
        /// Configured env size.
        env_size: usize,
    },
}

/// Where the environment returned by [`UbootEnv::read`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A copy with a valid CRC.
    Copy {
        /// Which copy.
        index: usize,
        /// Its flag byte (redundant pairs only).
        flags: Option<u8>,
    },
    /// No copy has a valid CRC, so the environment is empty.
    ///
    /// Why an empty environment is the safe default: U-Boot itself, finding
    /// no valid copy, boots with its built-in default environment, which
    /// carries no `BOOT_ORDER`/`BOOT_x_LEFT`; the boot script then sets
    /// `BOOT_ORDER="A B"` and 3 tries per slot. The empty environment gives
    /// [`crate::boot`] the same inputs, so we predict what the bootloader
    /// does: slot A first, and because tries are still counted, slot B after
    /// A fails three times — both slots stay reachable and nothing is
    /// bricked. Nothing is written on read; the next write creates a valid
    /// copy.
    SafeDefault,
}

/// An environment read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The variables.
    pub env: Env,
    /// Which copy they came from.
    pub origin: Origin,
    /// Copies passed over and why (log these: a bad copy after a write that
    /// completed means failing storage).
    pub skipped: Vec<(CopyLocation, CopyError)>,
}

struct EnvCopy<S> {
    storage: S,
    offset: u64,
}

/// A U-Boot environment on one or two copies.
pub struct UbootEnv<S> {
    copies: Vec<EnvCopy<S>>,
    env_size: usize,
    scheme: FlagScheme,
}

/// What one read of all copies found.
struct Scan {
    images: Vec<Vec<u8>>,
    checked: Vec<Result<Option<u8>, CopyError>>,
    active: Option<usize>,
}

impl UbootEnv<FileStorage> {
    /// Opens the devices named by `config` for reading and writing.
    pub fn open(config: &EnvConfig) -> Result<UbootEnv<FileStorage>, EnvError> {
        UbootEnv::with_storage(config, FileStorage::open)
    }
}

impl<S: Storage> UbootEnv<S> {
    /// Builds the environment over storages opened by `open` (called once
    /// per copy, in config order), resolving negative offsets.
    pub fn with_storage(
        config: &EnvConfig,
        mut open: impl FnMut(&Path) -> io::Result<S>,
    ) -> Result<UbootEnv<S>, EnvError> {
        let mut copies = Vec::new();
        for c in config.copies() {
            let device = c.device.display().to_string();
            let mut storage = open(&c.device).map_err(|source| EnvError::Open {
                device: device.clone(),
                source,
            })?;
            let offset = if c.offset >= 0 {
                c.offset.unsigned_abs()
            } else {
                let len = storage.len().map_err(|source| EnvError::Io {
                    what: "sizing",
                    at: CopyLocation {
                        index: copies.len(),
                        device: device.clone(),
                        offset: 0,
                    },
                    source,
                })?;
                len.checked_sub(c.offset.unsigned_abs())
                    .ok_or(EnvError::OffsetBeforeStart {
                        device,
                        offset: c.offset,
                        len,
                    })?
            };
            copies.push(EnvCopy { storage, offset });
        }
        // The config parser bounds env_size far below usize::MAX.
        let env_size = usize::try_from(config.env_size()).unwrap_or(usize::MAX);
        Ok(UbootEnv {
            copies,
            env_size,
            scheme: FlagScheme::Incremental,
        })
    }

    /// Uses `scheme` for redundant flags instead of
    /// [`FlagScheme::Incremental`].
    pub fn with_flag_scheme(mut self, scheme: FlagScheme) -> UbootEnv<S> {
        self.scheme = scheme;
        self
    }

    /// Whether this environment has two copies.
    pub fn is_redundant(&self) -> bool {
        self.copies.len() == 2
    }

    /// The storages (for tests and crash recording).
    pub fn storages_mut(&mut self) -> impl Iterator<Item = &mut S> {
        self.copies.iter_mut().map(|c| &mut c.storage)
    }

    fn location(&self, index: usize) -> CopyLocation {
        CopyLocation {
            index,
            device: self.copies[index].storage.name().to_owned(),
            offset: self.copies[index].offset,
        }
    }

    fn scan(&mut self) -> Result<Scan, EnvError> {
        let redundant = self.is_redundant();
        let mut images = Vec::new();
        let mut checked = Vec::new();
        for i in 0..self.copies.len() {
            let mut image = vec![0u8; self.env_size];
            let copy = &mut self.copies[i];
            if let Err(source) = copy.storage.read_at(copy.offset, &mut image) {
                return Err(EnvError::Io {
                    what: "reading",
                    at: self.location(i),
                    source,
                });
            }
            checked.push(check_crc(&image, redundant).map(|(flags, _)| flags));
            images.push(image);
        }
        let active = if redundant {
            let valid = [checked[0].is_ok(), checked[1].is_ok()];
            let flags = [images[0][4], images[1][4]];
            choose_active(valid, flags, self.scheme)
        } else {
            checked[0].is_ok().then_some(0)
        };
        Ok(Scan {
            images,
            checked,
            active,
        })
    }

    /// Reads the active copy; see [`Origin::SafeDefault`] for what comes
    /// back when no copy is valid.
    pub fn read(&mut self) -> Result<Loaded, EnvError> {
        let scan = self.scan()?;
        let skipped = scan
            .checked
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().err().map(|e| (self.location(i), e.clone())))
            .collect();
        let Some(index) = scan.active else {
            return Ok(Loaded {
                env: Env::new(),
                origin: Origin::SafeDefault,
                skipped,
            });
        };
        let header = header_len(self.is_redundant());
        let env =
            parse_data(&scan.images[index][header..]).map_err(|problem| EnvError::Malformed {
                at: self.location(index),
                problem,
            })?;
        let flags = scan.checked[index].clone().unwrap_or(None);
        Ok(Loaded {
            env,
            origin: Origin::Copy { index, flags },
            skipped,
        })
    }

    /// Replaces the whole environment with `env` in one atomic step (for a
    /// redundant pair; see the module docs for each power-cut point).
    ///
    /// Redundant: the inactive copy gets `env` with the next flag value
    /// (incremental: active flag + 1, wrapping), then fsync. With no valid
    /// copy, copy 1 is written with copy 0's flag + 1, as libubootenv does.
    /// Boolean scheme: afterwards the old copy's flag is set to 0 and synced;
    /// a cut before that leaves both flags at 1, and the tie goes to copy 0,
    /// which is either the old or the new environment, each whole.
    pub fn write(&mut self, env: &Env) -> Result<(), EnvError> {
        let redundant = self.is_redundant();
        let header = header_len(redundant);
        let env_size = self.env_size;
        let available = env_size - header;
        let too_big = || {
            let needed = env
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>()
                + 1;
            EnvError::TooBig {
                needed,
                available,
                env_size,
            }
        };
        if !redundant {
            let image = encode_image(env, self.env_size, None).ok_or_else(too_big)?;
            return self.write_copy(0, 0, &image);
        }
        let scan = self.scan()?;
        let current = scan.active.unwrap_or(0);
        let current_flags = scan.images[current][4];
        let target = 1 - current;
        let flags = match self.scheme {
            FlagScheme::Incremental => current_flags.wrapping_add(1),
            FlagScheme::Boolean => 1,
        };
        let image = encode_image(env, self.env_size, Some(flags)).ok_or_else(too_big)?;
        self.write_copy(target, 0, &image)?;
        if self.scheme == FlagScheme::Boolean && scan.active.is_some() {
            self.write_copy(current, 4, &[0])?;
        }
        Ok(())
    }

    /// Writes `bytes` at `at` within copy `index`, then syncs it.
    fn write_copy(&mut self, index: usize, at: u64, bytes: &[u8]) -> Result<(), EnvError> {
        let copy = &mut self.copies[index];
        let offset = copy.offset + at;
        if let Err(source) = copy.storage.write_at(offset, bytes) {
            return Err(EnvError::Io {
                what: "writing",
                at: self.location(index),
                source,
            });
        }
        let copy = &mut self.copies[index];
        if let Err(source) = copy.storage.sync() {
            return Err(EnvError::Io {
                what: "syncing",
                at: self.location(index),
                source,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut e = Env::new();
        for (k, v) in pairs {
            e.set(k, v).unwrap();
        }
        e
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn config_parses_single_and_redundant_lines() {
        let text =
            "# comment\n\n/dev/mmcblk0 0x3fe000 0x2000\n  /dev/mmcblk0\t-0x2000  2000 200 1 \n";
        let cfg = EnvConfig::parse(text, "fw_env.config").unwrap();
        assert!(cfg.is_redundant());
        assert_eq!(cfg.env_size(), 0x2000);
        assert_eq!(cfg.copies()[0].offset, 0x3fe000);
        assert_eq!(cfg.copies()[1].offset, -0x2000);
        assert_eq!(cfg.copies()[1].sector_size, Some(0x200));
        assert_eq!(cfg.copies()[1].sectors, Some(1));
        let single = EnvConfig::parse("/boot/uboot.env 0 4000\n", "x").unwrap();
        assert!(!single.is_redundant());
        assert_eq!(single.env_size(), 0x4000, "sizes are hex even without 0x");
        assert_eq!(
            EnvConfig::parse("/f 010 4000", "x").unwrap().copies()[0].offset,
            8
        );
        assert_eq!(
            EnvConfig::parse("/f 4096 4000", "x").unwrap().copies()[0].offset,
            4096
        );
        let round = EnvConfig::parse(&cfg.to_config_text(), "x").unwrap();
        assert_eq!(round, cfg);
    }

    #[test]
    fn config_errors_name_file_and_line() {
        let cases = [
            ("/dev/mmcblk0 0x0\n", 1, "found 2 field"),
            ("#c\n/f 0 2000\n/f zz 2000\n", 3, "offset \"zz\""),
            ("/f 0 0x\n", 1, "env size"),
            ("/f 0 4\n", 1, "too small"),
            ("/f 0 2000 1 2 3\n", 1, "found 6 field"),
            ("/f 0 2000\n/f 2000 4000\n", 2, "differs"),
            ("/f 0 2000\n/f 2000 2000\n/f 4000 2000\n", 3, "third"),
            ("/dev/mtd0 0 2000\n", 1, "MTD"),
            ("/f 0 2000 q\n", 1, "sector size"),
            ("/f 0 -2000\n", 1, "env size"),
            ("/f 0 ffffffff\n", 1, "larger"),
        ];
        for (text, line, needle) in cases {
            let err = EnvConfig::parse(text, "fw_env.config").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("fw_env.config:{line}: ")) && msg.contains(needle),
                "{text:?} gave {msg:?}"
            );
        }
        let err = EnvConfig::parse("# nothing\n", "cfg").unwrap_err();
        assert!(err.to_string().contains("no environment device"), "{err}");
    }

    #[test]
    fn data_round_trips_and_pads_with_zero() {
        let e = env(&[("b", "2"), ("a", "x=y"), ("empty", "")]);
        let data = encode_data(&e, 32).unwrap();
        assert_eq!(&data[..19], b"a=x=y\0b=2\0empty=\0\0\0");
        assert!(data[17..].iter().all(|&b| b == 0));
        assert_eq!(parse_data(&data).unwrap(), e);
        assert!(encode_data(&e, 17).is_none());
        assert!(encode_data(&e, 18).is_some());
        assert_eq!(parse_data(&[0]).unwrap(), Env::new());
    }

    #[test]
    fn malformed_data_is_a_clear_error() {
        assert_eq!(
            parse_data(b"a=1\0b=2"),
            Err(CopyError::NoTerminator { data_len: 7 })
        );
        assert_eq!(
            parse_data(b"a=1"),
            Err(CopyError::NoTerminator { data_len: 3 })
        );
        assert_eq!(
            parse_data(b""),
            Err(CopyError::NoTerminator { data_len: 0 })
        );
        assert_eq!(
            parse_data(b"a=1\0\xff=2\0\0"),
            Err(CopyError::NotUtf8 { offset: 4 })
        );
        assert_eq!(
            parse_data(b"a=1\0junk\0\0"),
            Err(CopyError::MissingEquals {
                offset: 4,
                entry: "junk".into()
            })
        );
        assert_eq!(
            parse_data(b"=1\0\0"),
            Err(CopyError::EmptyName { offset: 0 })
        );
        // Later duplicates win, as in U-Boot.
        assert_eq!(parse_data(b"a=1\0a=2\0\0").unwrap(), env(&[("a", "2")]));
    }

    #[test]
    fn active_copy_choice_matches_libubootenv() {
        use FlagScheme::*;
        assert_eq!(choose_active([false, false], [0, 9], Incremental), None);
        assert_eq!(choose_active([true, false], [0, 9], Incremental), Some(0));
        assert_eq!(choose_active([false, true], [9, 0], Incremental), Some(1));
        assert_eq!(choose_active([true, true], [1, 2], Incremental), Some(1));
        assert_eq!(choose_active([true, true], [2, 1], Incremental), Some(0));
        assert_eq!(choose_active([true, true], [7, 7], Incremental), Some(0));
        assert_eq!(choose_active([true, true], [0xff, 0], Incremental), Some(1));
        assert_eq!(choose_active([true, true], [0, 0xff], Incremental), Some(0));
        assert_eq!(
            choose_active([true, true], [0xfe, 0xff], Incremental),
            Some(1)
        );
        assert_eq!(choose_active([true, true], [1, 0], Boolean), Some(0));
        assert_eq!(choose_active([true, true], [0, 1], Boolean), Some(1));
        assert_eq!(choose_active([true, true], [1, 1], Boolean), Some(0));
        assert_eq!(choose_active([true, true], [0xff, 1], Boolean), Some(0));
        assert_eq!(choose_active([true, true], [0xff, 0xff], Boolean), Some(1));
    }

    fn mem_env(redundant: bool) -> UbootEnv<MemStorage> {
        let cfg = if redundant {
            EnvConfig::redundant(("/mem", 0), ("/mem", -0x100), 0x100)
        } else {
            EnvConfig::single("/mem", 0x10, 0x100)
        };
        UbootEnv::with_storage(&cfg, |_| Ok(MemStorage::zeroed(0x300))).unwrap()
    }

    #[test]
    fn zeroed_devices_read_as_the_safe_default() {
        for redundant in [false, true] {
            let mut e = mem_env(redundant);
            let loaded = e.read().unwrap();
            assert_eq!(loaded.origin, Origin::SafeDefault);
            assert!(loaded.env.is_empty());
            assert_eq!(loaded.skipped.len(), if redundant { 2 } else { 1 });
        }
    }

    #[test]
    fn single_copy_write_then_read() {
        let mut e = mem_env(false);
        let vars = env(&[("BOOT_ORDER", "A B")]);
        e.write(&vars).unwrap();
        let loaded = e.read().unwrap();
        assert_eq!(loaded.env, vars);
        assert_eq!(
            loaded.origin,
            Origin::Copy {
                index: 0,
                flags: None
            }
        );
        let s = e.storages_mut().next().unwrap();
        assert_eq!(s.syncs, 1);
        assert!(s.bytes[..0x10].iter().all(|&b| b == 0), "offset respected");
        assert_eq!(
            &s.bytes[0x10..0x14],
            &crc32(&s.bytes[0x14..0x110]).to_le_bytes()
        );
    }

    #[test]
    fn redundant_writes_alternate_copies_and_increment_flags() {
        let mut e = mem_env(true);
        for (round, expect_index, expect_flag) in [(0, 1, 1u8), (1, 0, 2), (2, 1, 3)] {
            let vars = env(&[("round", &round.to_string())]);
            e.write(&vars).unwrap();
            let loaded = e.read().unwrap();
            assert_eq!(loaded.env, vars);
            assert_eq!(
                loaded.origin,
                Origin::Copy {
                    index: expect_index,
                    flags: Some(expect_flag)
                }
            );
        }
    }

    #[test]
    fn redundant_flag_wraps_from_255_to_0() {
        let mut e = mem_env(true);
        let img = encode_image(&env(&[("v", "old")]), 0x100, Some(0xff)).unwrap();
        let s = e.storages_mut().next().unwrap();
        s.write_at(0, &img).unwrap();
        let s = e.storages_mut().nth(1).unwrap();
        s.write_at(0x200, &img).unwrap();
        // Both valid with 255: copy 0 is active, so copy 1 gets 0 and wins.
        e.write(&env(&[("v", "new")])).unwrap();
        let loaded = e.read().unwrap();
        assert_eq!(loaded.env.get("v"), Some("new"));
        assert_eq!(
            loaded.origin,
            Origin::Copy {
                index: 1,
                flags: Some(0)
            }
        );
    }

    #[test]
    fn every_torn_redundant_write_leaves_old_or_new() {
        // Cut the write of the inactive copy after every byte count: the
        // result is always the old or the new environment, never a default.
        let old = env(&[("BOOT_ORDER", "A B"), ("BOOT_A_LEFT", "3")]);
        let new = env(&[("BOOT_ORDER", "B A"), ("BOOT_B_LEFT", "3")]);
        let cfg = EnvConfig::redundant(("/a", 0), ("/b", 0), 0x40);
        let fresh = || UbootEnv::with_storage(&cfg, |_| Ok(MemStorage::zeroed(0x40))).unwrap();
        let bytes = |e: &mut UbootEnv<MemStorage>| -> Vec<Vec<u8>> {
            e.storages_mut().map(|s| s.bytes.clone()).collect()
        };
        let mut base = fresh();
        base.write(&old).unwrap();
        base.write(&old).unwrap();
        let before = bytes(&mut base);
        base.write(&new).unwrap();
        let after = bytes(&mut base);
        let target = (0..2).find(|&i| before[i] != after[i]).unwrap();
        assert_eq!(
            before[1 - target],
            after[1 - target],
            "only one copy written"
        );
        for cut in 0..=after[target].len() {
            let mut state = before.clone();
            state[target][..cut].copy_from_slice(&after[target][..cut]);
            let mut storages = state
                .into_iter()
                .map(|bytes| MemStorage { bytes, syncs: 0 });
            let mut e = UbootEnv::with_storage(&cfg, |_| Ok(storages.next().unwrap())).unwrap();
            let got = e.read().unwrap().env;
            assert!(got == old || got == new, "cut at {cut}: {got:?}");
            if cut == after[target].len() {
                assert_eq!(got, new);
            }
        }
    }

    #[test]
    fn boolean_scheme_obsoletes_the_old_copy() {
        let mut e = mem_env(true).with_flag_scheme(FlagScheme::Boolean);
        e.write(&env(&[("v", "1")])).unwrap();
        e.write(&env(&[("v", "2")])).unwrap();
        let loaded = e.read().unwrap();
        assert_eq!(loaded.env.get("v"), Some("2"));
        assert_eq!(
            loaded.origin,
            Origin::Copy {
                index: 0,
                flags: Some(1)
            }
        );
        let s = e.storages_mut().next().unwrap();
        assert_eq!(s.bytes[0x200 + 4], 0, "copy 1 marked obsolete");
    }

    #[test]
    fn too_big_and_malformed_are_errors() {
        let mut e = mem_env(false);
        let big = env(&[("x", &"y".repeat(0x100))]);
        let err = e.write(&big).unwrap_err();
        assert!(err.to_string().contains("needs 260 bytes"), "{err}");
        let mut data = b"novalue\0\0".to_vec();
        data.resize(0x100 - 4, 0);
        let mut img = crc32(&data).to_le_bytes().to_vec();
        img.extend_from_slice(&data);
        e.storages_mut()
            .next()
            .unwrap()
            .write_at(0x10, &img)
            .unwrap();
        let err = e.read().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("env copy 0") && msg.contains("valid CRC") && msg.contains("no '='"),
            "{msg}"
        );
    }

    #[test]
    fn negative_offset_before_start_is_an_error() {
        let cfg = EnvConfig::single("/small", -0x1000, 0x100);
        let err = UbootEnv::with_storage(&cfg, |_| Ok(MemStorage::zeroed(0x100)))
            .err()
            .unwrap();
        assert!(err.to_string().contains("before its start"), "{err}");
    }
}
