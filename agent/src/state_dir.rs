//! The agent's state directory: every file the agent keeps lives here.
//!
//! Invariants: the directory is mode 0700; files are replaced atomically
//! (temp file in the same directory, write, fsync, rename, fsync the
//! directory), so a power cut leaves the old or the new content, never a mix.
//! A file that does not parse is an error naming it; it is never overwritten.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File holding the device id (32 lowercase hex digits and a newline).
pub const DEVICE_ID_FILE: &str = "device-id";
/// Marker file: present once the device has been paired. Stand-in until
/// pairing is implemented.
pub const PAIRED_FILE: &str = "paired";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {} is corrupt: {reason}; it was left as is (move it away to start over, which gives the device a new identity)", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{} exists but is not a directory", path.display())]
    NotADirectory { path: PathBuf },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Io { what, path, source }
}

/// A 128-bit random device id, shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId([u8; 16]);

impl DeviceId {
    pub fn from_bytes(b: [u8; 16]) -> DeviceId {
        DeviceId(b)
    }

    /// Parses exactly 32 lowercase hex digits.
    pub fn parse(s: &str) -> Result<DeviceId, String> {
        if s.len() != 32 {
            return Err(format!(
                "expected 32 lowercase hex digits, found {} bytes",
                s.len()
            ));
        }
        let mut out = [0u8; 16];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hi = hex_val(chunk[0]);
            let lo = hex_val(chunk[1]);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = h << 4 | l,
                _ => return Err(format!("expected lowercase hex digits, found {:?}", s)),
            }
        }
        Ok(DeviceId(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Fills `buf` from the kernel's random source (getrandom(2)).
pub fn os_random(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically and durably. The file gets mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    // A leftover from a crash of this same pid is stale: remove it.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The opened state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens `path`, creating it (and parents) with mode 0700 if needed, and
    /// tightens an existing directory to 0700.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        match fs::metadata(path) {
            Ok(m) if !m.is_dir() => {
                return Err(StateError::NotADirectory {
                    path: path.to_owned(),
                })
            }
            Ok(m) => {
                if m.permissions().mode() & 0o777 != 0o700 {
                    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                        .map_err(io_err("cannot set mode 0700 on state directory", path))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(io_err("cannot create state directory", path))?;
                // `mode` is filtered by the umask; make sure.
                fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                    .map_err(io_err("cannot set mode 0700 on state directory", path))?;
            }
            Err(e) => {
                return Err(StateError::Io {
                    what: "cannot open state directory",
                    path: path.to_owned(),
                    source: e,
                })
            }
        }
        Ok(StateDir {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Atomically replaces the file `name` in the directory.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let p = self.file(name);
        write_atomic(&p, bytes).map_err(io_err("cannot write state file", &p))
    }

    /// The file's content, or `None` if it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let p = self.file(name);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Io {
                what: "cannot read state file",
                path: p,
                source: e,
            }),
        }
    }

    /// The device id, generated from the OS random source on first start.
    pub fn device_id(&self) -> Result<DeviceId, StateError> {
        self.device_id_with(os_random)
    }

    /// [`StateDir::device_id`] with the random source injected.
    pub fn device_id_with(
        &self,
        random: impl FnOnce(&mut [u8]) -> io::Result<()>,
    ) -> Result<DeviceId, StateError> {
        let path = self.file(DEVICE_ID_FILE);
        if let Some(bytes) = self.read(DEVICE_ID_FILE)? {
            let corrupt = |reason: String| StateError::Corrupt {
                path: path.clone(),
                reason,
            };
            let text = std::str::from_utf8(&bytes).map_err(|_| corrupt("not UTF-8 text".into()))?;
            let text = text.strip_suffix('\n').unwrap_or(text);
            return DeviceId::parse(text).map_err(corrupt);
        }
        let mut b = [0u8; 16];
        random(&mut b).map_err(io_err(
            "cannot read random bytes for a new device id in",
            &path,
        ))?;
        let id = DeviceId(b);
        self.write(DEVICE_ID_FILE, format!("{id}\n").as_bytes())?;
        tracing::info!(device_id = %id, file = %path.display(), "generated a new device id");
        Ok(id)
    }

    /// Whether the device has been paired (the `paired` marker file exists).
    pub fn is_paired(&self) -> Result<bool, StateError> {
        let p = self.file(PAIRED_FILE);
        match fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StateError::Io {
                what: "cannot check state file",
                path: p,
                source: e,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(b: u8) -> impl FnOnce(&mut [u8]) -> io::Result<()> {
        move |buf: &mut [u8]| {
            buf.fill(b);
            Ok(())
        }
    }

    #[test]
    fn creates_directory_0700_and_tightens_existing() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/state");
        let sd = StateDir::open(&p).unwrap();
        assert_eq!(
            fs::metadata(sd.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::open(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("state");
        fs::write(&p, "x").unwrap();
        let err = StateDir::open(&p).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn device_id_is_generated_once_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::open(t.path()).unwrap();
        let id = sd.device_id_with(fixed(0xab)).unwrap();
        assert_eq!(id.to_string(), "ab".repeat(16));
        // A second start reads the file; the random source is not used.
        let again = sd
            .device_id_with(|_| panic!("must not generate again"))
            .unwrap();
        assert_eq!(again, id);
        assert_eq!(
            fs::read_to_string(sd.file(DEVICE_ID_FILE)).unwrap(),
            format!("{id}\n")
        );
        let mode = fs::metadata(sd.file(DEVICE_ID_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn os_random_gives_distinct_ids() {
        let t1 = tempfile::tempdir().unwrap();
        let t2 = tempfile::tempdir().unwrap();
        let a = StateDir::open(t1.path()).unwrap().device_id().unwrap();
        let b = StateDir::open(t2.path()).unwrap().device_id().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn corrupt_device_id_is_an_error_and_is_not_overwritten() {
        for garbage in [
            &b"hello"[..],
            b"",
            b"\xff\xfe\x00\x01",
            b"ABABABABABABABABABABABABABABABAB\n",
            b"abababababababababababababababab\n\n",
            b"zzabababababababababababababababab",
        ] {
            let t = tempfile::tempdir().unwrap();
            let sd = StateDir::open(t.path()).unwrap();
            fs::write(sd.file(DEVICE_ID_FILE), garbage).unwrap();
            let err = sd.device_id_with(fixed(1)).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, StateError::Corrupt { .. }),
                "{garbage:?}: {text}"
            );
            assert!(
                text.contains(&sd.file(DEVICE_ID_FILE).display().to_string()),
                "{text}"
            );
            assert_eq!(fs::read(sd.file(DEVICE_ID_FILE)).unwrap(), garbage);
        }
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_files() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::open(t.path()).unwrap();
        sd.write("x", b"one").unwrap();
        sd.write("x", b"two").unwrap();
        assert_eq!(sd.read("x").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(sd.read("missing").unwrap(), None);
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x")]);
    }

    #[test]
    fn write_into_missing_directory_fails_cleanly() {
        let t = tempfile::tempdir().unwrap();
        assert!(write_atomic(&t.path().join("nope/x"), b"1").is_err());
    }

    #[test]
    fn paired_marker() {
        let t = tempfile::tempdir().unwrap();
        let sd = StateDir::open(t.path()).unwrap();
        assert!(!sd.is_paired().unwrap());
        sd.write(PAIRED_FILE, b"").unwrap();
        assert!(sd.is_paired().unwrap());
    }
}
