//! GRUB's environment block (`grubenv`): the header
//! `# GRUB Environment Block\n`, then `name=value\n` lines (a `\` escapes the
//! next character, so `\\` and `\`+newline), padded with `#` to the block
//! size, 1024 bytes for files made by `grub-editenv`. Parsed and escaped as
//! GRUB's `lib/envblk.c` does, but strictly: a broken line is an error.
//!
//! Power cuts: [`write_file`] writes a temp file, fsyncs it, renames it over
//! the old one and fsyncs the directory, so a cut leaves the old or the new
//! file, each whole (on a journaling file system; FAT, where an ESP usually
//! lives, does not promise an atomic rename). [`GrubEnvBlock::write`]
//! rewrites a fixed block in place, as GRUB's own `save_env` does: there is
//! no checksum, so a cut mid-write can leave a mix of old and new lines;
//! use it only where the block is one atomically written sector.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::env::{check_name, Env};
use crate::storage::Storage;

/// The first line of every environment block.
pub const HEADER: &str = "# GRUB Environment Block\n";

/// Size of a `grubenv` file as `grub-editenv` creates it.
pub const FILE_BLOCK_SIZE: usize = 1024;

/// What is wrong with a block's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The block does not start with [`HEADER`].
    #[error("missing header {HEADER:?}")]
    NoHeader,
    /// A line has no `=` before its end.
    #[error("line at byte {offset} has no '=': {line:?}")]
    MissingEquals {
        /// Byte offset of the line in the block.
        offset: usize,
        /// The line (at most 64 characters, lossy).
        line: String,
    },
    /// A line runs to the end of the block without a newline.
    #[error("line at byte {offset} does not end with a newline before the end of the block")]
    Unterminated {
        /// Byte offset of the line.
        offset: usize,
    },
    /// A line is not UTF-8.
    #[error("line at byte {offset} is not UTF-8")]
    NotUtf8 {
        /// Byte offset of the line.
        offset: usize,
    },
    /// A line's name is empty or holds a NUL byte.
    #[error("line at byte {offset} has an invalid name {name:?}")]
    BadName {
        /// Byte offset of the line.
        offset: usize,
        /// The name.
        name: String,
    },
    /// The variables do not fit in the block.
    #[error("environment needs {needed} bytes but the block holds {size}")]
    TooBig {
        /// Bytes needed (header and lines).
        needed: usize,
        /// Block size.
        size: usize,
    },
}

/// A `grubenv` that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GrubEnvError {
    /// An I/O step failed.
    #[error("{what} {target}: {source}")]
    Io {
        /// What was being done (`"reading"`, `"writing"`, …).
        what: &'static str,
        /// The file or device.
        target: String,
        /// The OS error.
        source: io::Error,
    },
    /// The bytes are not a valid block.
    #[error("GRUB environment block {target}: {problem}")]
    Block {
        /// The file or device.
        target: String,
        /// What is wrong.
        problem: BlockError,
    },
}

/// Parses a block. Lines starting with `#` (the padding included) are
/// skipped, as GRUB does.
pub fn parse(block: &[u8]) -> Result<Env, BlockError> {
    let body = block
        .strip_prefix(HEADER.as_bytes())
        .ok_or(BlockError::NoHeader)?;
    let base = HEADER.len();
    let mut env = Env::new();
    let mut pos = 0;
    while pos < body.len() {
        let start = pos;
        // Find the line end, stepping over escaped characters.
        let mut end = None;
        let mut i = pos;
        while i < body.len() {
            match body[i] {
                b'\\' => i += 2,
                b'\n' => {
                    end = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        if body[start] == b'#' {
            // Comment or padding: skip to after its newline (or the end).
            pos = end.map_or(body.len(), |e| e + 1);
            continue;
        }
        let offset = base + start;
        let end = end.ok_or(BlockError::Unterminated { offset })?;
        let line = &body[start..end];
        let Some(eq) = line.iter().position(|&b| b == b'=') else {
            return Err(BlockError::MissingEquals {
                offset,
                line: String::from_utf8_lossy(line).chars().take(64).collect(),
            });
        };
        let name = std::str::from_utf8(&line[..eq]).map_err(|_| BlockError::NotUtf8 { offset })?;
        if check_name(name).is_err() {
            return Err(BlockError::BadName {
                offset,
                name: name.to_owned(),
            });
        }
        let mut value = Vec::with_capacity(line.len() - eq);
        let mut raw = line[eq + 1..].iter();
        while let Some(&b) = raw.next() {
            if b == b'\\' {
                // A trailing `\` cannot happen (it would escape the newline),
                // so `next` is always there; be safe anyway.
                if let Some(&escaped) = raw.next() {
                    value.push(escaped);
                }
            } else {
                value.push(b);
            }
        }
        let value = String::from_utf8(value).map_err(|_| BlockError::NotUtf8 { offset })?;
        if value.contains('\0') {
            return Err(BlockError::NotUtf8 { offset });
        }
        env.insert_from_disk(name.to_owned(), value);
        pos = end + 1;
    }
    Ok(env)
}

/// Encodes `env` as a block of exactly `size` bytes (`#`-padded).
pub fn encode(env: &Env, size: usize) -> Result<Vec<u8>, BlockError> {
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(HEADER.as_bytes());
    for (name, value) in env.iter() {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        for &b in value.as_bytes() {
            if b == b'\\' || b == b'\n' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'\n');
    }
    if out.len() > size {
        return Err(BlockError::TooBig {
            needed: out.len(),
            size,
        });
    }
    out.resize(size, b'#');
    Ok(out)
}

/// Reads a `grubenv` file.
pub fn read_file(path: &Path) -> Result<Env, GrubEnvError> {
    let target = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| GrubEnvError::Io {
        what: "reading",
        target: target.clone(),
        source,
    })?;
    parse(&bytes).map_err(|problem| GrubEnvError::Block { target, problem })
}

/// Replaces the `grubenv` file at `path` with `env` in a
/// [`FILE_BLOCK_SIZE`]-byte block: temp file in the same directory, fsync,
/// rename, fsync the directory.
pub fn write_file(path: &Path, env: &Env) -> Result<(), GrubEnvError> {
    let target = path.display().to_string();
    let block = encode(env, FILE_BLOCK_SIZE).map_err(|problem| GrubEnvError::Block {
        target: target.clone(),
        problem,
    })?;
    let io_err = |what: &'static str| {
        let target = target.clone();
        move |source| GrubEnvError::Io {
            what,
            target,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))
        .map_err(io_err("naming"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".new");
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("creating a temp file for"))?;
    f.write_all(&block).map_err(io_err("writing"))?;
    f.sync_all().map_err(io_err("syncing"))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err("renaming the temp file over"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing the directory of"))?;
    Ok(())
}

/// A `grubenv` block at a fixed place on a device, rewritten in place.
pub struct GrubEnvBlock<S> {
    storage: S,
    offset: u64,
    size: usize,
}

impl<S: Storage> GrubEnvBlock<S> {
    /// The block of `size` bytes at `offset` in `storage`.
    pub fn new(storage: S, offset: u64, size: usize) -> GrubEnvBlock<S> {
        GrubEnvBlock {
            storage,
            offset,
            size,
        }
    }

    /// The storage (for tests and crash recording).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Reads and parses the block.
    pub fn read(&mut self) -> Result<Env, GrubEnvError> {
        let mut block = vec![0u8; self.size];
        self.storage
            .read_at(self.offset, &mut block)
            .map_err(|source| GrubEnvError::Io {
                what: "reading",
                target: self.storage.name().to_owned(),
                source,
            })?;
        parse(&block).map_err(|problem| GrubEnvError::Block {
            target: self.storage.name().to_owned(),
            problem,
        })
    }

    /// Rewrites the whole block in place, then syncs (not atomic: see the
    /// module docs).
    pub fn write(&mut self, env: &Env) -> Result<(), GrubEnvError> {
        let target = self.storage.name().to_owned();
        let block = encode(env, self.size).map_err(|problem| GrubEnvError::Block {
            target: target.clone(),
            problem,
        })?;
        self.storage
            .write_at(self.offset, &block)
            .map_err(|source| GrubEnvError::Io {
                what: "writing",
                target: target.clone(),
                source,
            })?;
        self.storage.sync().map_err(|source| GrubEnvError::Io {
            what: "syncing",
            target,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn block(body: &str) -> Vec<u8> {
        let mut b = format!("{HEADER}{body}").into_bytes();
        b.resize(FILE_BLOCK_SIZE, b'#');
        b
    }

    #[test]
    fn encodes_as_grub_editenv_does() {
        let mut env = Env::new();
        env.set("BOOT_ORDER", "A B").unwrap();
        env.set("path", r"C:\x").unwrap();
        let b = encode(&env, FILE_BLOCK_SIZE).unwrap();
        assert_eq!(b.len(), 1024);
        let text = String::from_utf8(b.clone()).unwrap();
        let lines = "# GRUB Environment Block\nBOOT_ORDER=A B\npath=C:\\\\x\n";
        assert!(text.starts_with(lines), "{text:?}");
        assert!(text[lines.len()..].bytes().all(|c| c == b'#'));
        assert_eq!(parse(&b).unwrap(), env);
    }

    #[test]
    fn parses_comments_escapes_and_padding() {
        let env = parse(&block("# a comment\na=1\nb=x\\\ny\\\\z\n")).unwrap();
        assert_eq!(env.get("a"), Some("1"));
        assert_eq!(env.get("b"), Some("x\ny\\z"));
        // Re-encoding keeps the escaped newline.
        assert_eq!(parse(&encode(&env, 1024).unwrap()).unwrap(), env);
        // A block of any size with only the header is empty.
        assert!(parse(HEADER.as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn malformed_blocks_are_clear_errors() {
        assert_eq!(parse(b"# GRUB Env"), Err(BlockError::NoHeader));
        assert_eq!(parse(&[0u8; 1024]), Err(BlockError::NoHeader));
        assert!(matches!(
            parse(&block("a=1\nnoequals\n")),
            Err(BlockError::MissingEquals { offset: 29, .. })
        ));
        let mut unterminated = HEADER.as_bytes().to_vec();
        unterminated.extend_from_slice(b"a=1");
        assert_eq!(
            parse(&unterminated),
            Err(BlockError::Unterminated { offset: 25 })
        );
        assert!(matches!(
            parse(&block("=1\n")),
            Err(BlockError::BadName { .. })
        ));
        assert!(matches!(
            parse(&block("a=\u{0}\n")),
            Err(BlockError::NotUtf8 { .. })
        ));
        let mut bad_utf8 = block("");
        bad_utf8[25..29].copy_from_slice(b"a=\xff\n");
        assert!(matches!(parse(&bad_utf8), Err(BlockError::NotUtf8 { .. })));
        let mut env = Env::new();
        env.set("x", &"y".repeat(1000)).unwrap();
        assert!(matches!(
            encode(&env, 1024),
            Err(BlockError::TooBig { needed: 1028, .. })
        ));
    }

    #[test]
    fn file_replacement_is_whole_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        let mut env = Env::new();
        env.set("BOOT_A_LEFT", "3").unwrap();
        write_file(&path, &env).unwrap();
        env.set("BOOT_A_LEFT", "2").unwrap();
        write_file(&path, &env).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024);
        assert_eq!(read_file(&path).unwrap(), env);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("grubenv")]);
        std::fs::write(&path, b"garbage").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("grubenv") && err.contains("missing header"),
            "{err}"
        );
        let err = read_file(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.starts_with("reading ") && err.contains("nope"), "{err}");
    }

    #[test]
    fn fixed_block_in_place() {
        let mut blk = GrubEnvBlock::new(MemStorage::zeroed(4096), 2048, 1024);
        assert!(matches!(
            blk.read(),
            Err(GrubEnvError::Block {
                problem: BlockError::NoHeader,
                ..
            })
        ));
        let mut env = Env::new();
        env.set("BOOT_ORDER", "B A").unwrap();
        blk.write(&env).unwrap();
        assert_eq!(blk.read().unwrap(), env);
        let s = blk.storage_mut();
        assert_eq!(s.syncs, 1);
        assert!(s.bytes[..2048].iter().all(|&b| b == 0));
        assert!(s.bytes[3072..].iter().all(|&b| b == 0));
    }
}
