//! The byte store a bootloader environment lives on: a block device, a
//! partition or a plain file, addressed by offset. Writes are not durable
//! until [`Storage::sync`] returns; every write path in this crate orders its
//! writes and syncs so that a power cut between any two calls leaves a valid
//! environment (see the write paths' docs).
//!
//! The trait is deliberately small (positional read, positional write, sync,
//! length) so that a recording backend ([`crate::crash`]) can log each write
//! and each sync and produce the states a power cut could leave. Everything
//! recovery writes goes through it: environments and, opened with an
//! [`OpenStorage`], the slot devices an install writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A device or file read and written at byte offsets.
pub trait Storage {
    /// A name for error messages (usually the path).
    fn name(&self) -> &str;

    /// Size in bytes (for a block device: the device size).
    fn len(&mut self) -> io::Result<u64>;

    /// Whether the store is zero bytes long.
    fn is_empty(&mut self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Fills `buf` from `offset`; a short read is an error
    /// (`UnexpectedEof`).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Writes all of `data` at `offset`. Not durable until [`Storage::sync`].
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes every earlier write durable (fsync).
    fn sync(&mut self) -> io::Result<()>;
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn len(&mut self) -> io::Result<u64> {
        (**self).len()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, data)
    }
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
}

/// Opens devices by path for reading and writing, never creating them: the
/// real device nodes ([`FileDevices`]) or a crash recorder's devices.
pub trait OpenStorage {
    /// Opens `path`; a missing device is an error.
    fn open(&mut self, path: &Path) -> io::Result<Box<dyn Storage>>;
}

/// Opens device nodes and files as [`FileStorage`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FileDevices;

impl OpenStorage for FileDevices {
    fn open(&mut self, path: &Path) -> io::Result<Box<dyn Storage>> {
        Ok(Box::new(FileStorage::open(path)?))
    }
}

/// [`Storage`] on a file or block device node.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    path: PathBuf,
    name: String,
}

impl FileStorage {
    /// Opens `path` for reading and writing. It must exist: an environment
    /// device is never created by accident.
    pub fn open(path: &Path) -> io::Result<FileStorage> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(FileStorage::from_file(file, path))
    }

    /// Opens `path` read-only; writes fail with `PermissionDenied`-like errors
    /// from the OS.
    pub fn open_read_only(path: &Path) -> io::Result<FileStorage> {
        let file = File::open(path)?;
        Ok(FileStorage::from_file(file, path))
    }

    fn from_file(file: File, path: &Path) -> FileStorage {
        FileStorage {
            file,
            path: path.to_path_buf(),
            name: path.display().to_string(),
        }
    }

    /// The path this storage was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Storage for FileStorage {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&mut self) -> io::Result<u64> {
        use std::io::{Seek, SeekFrom};
        // Seeking to the end works for regular files and block devices alike
        // (metadata().len() is 0 for a block device node).
        let end = self.file.seek(SeekFrom::End(0))?;
        self.file.seek(SeekFrom::Start(0))?;
        Ok(end)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}

/// [`Storage`] in memory, for tests and for building images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemStorage {
    /// The bytes; writes past the end grow it (like a file).
    pub bytes: Vec<u8>,
    /// Number of completed [`Storage::sync`] calls.
    pub syncs: usize,
}

impl MemStorage {
    /// A store of `len` zero bytes.
    pub fn zeroed(len: usize) -> MemStorage {
        MemStorage {
            bytes: vec![0; len],
            syncs: 0,
        }
    }
}

impl Storage for MemStorage {
    fn name(&self) -> &str {
        "<memory>"
    }

    fn len(&mut self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = self.bytes.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(data.len()).ok_or_else(eof)?;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[start..end].copy_from_slice(data);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.syncs += 1;
        Ok(())
    }
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_storage_reads_back_writes_at_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev");
        std::fs::write(&path, vec![0u8; 64]).unwrap();
        let mut s = FileStorage::open(&path).unwrap();
        s.write_at(10, b"hello").unwrap();
        s.sync().unwrap();
        let mut buf = [0u8; 5];
        s.read_at(10, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(s.len().unwrap(), 64);
        let mut past = [0u8; 8];
        let err = s.read_at(60, &mut past).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn file_storage_does_not_create_missing_devices() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FileStorage::open(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn mem_storage_short_read_is_an_error() {
        let mut s = MemStorage::zeroed(4);
        let mut buf = [0u8; 5];
        assert!(s.read_at(0, &mut buf).is_err());
        s.write_at(6, b"x").unwrap();
        assert_eq!(s.bytes, vec![0, 0, 0, 0, 0, 0, b'x']);
    }
}
