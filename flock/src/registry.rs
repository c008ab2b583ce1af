//! The name → public key registry: first come, first bound. Invariant: a
//! name, once bound, keeps its key for the life of the file; the file is
//! replaced atomically (temp, fsync, rename, fsync dir), so a crash leaves
//! the old or the new registry, never a torn one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use flock_proto::identity::PUBLIC_KEY_LEN;
use flock_proto::DeviceName;
use serde::{Deserialize, Serialize};

/// Bound names and their SEC1 public keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    names: BTreeMap<DeviceName, Vec<u8>>,
}

/// What looking a name up says about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The name is bound to this key.
    Same,
    /// The name is bound to another key.
    Other,
    /// The name is free.
    Free,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    /// name → hex of the SEC1 uncompressed public key
    devices: BTreeMap<DeviceName, String>,
}

/// Why a registry file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("registry version {0} is not supported (expected 1)")]
    Version(u32),
    #[error("registry entry {0:?} does not hold a 65-byte hex public key")]
    Key(String),
    #[error("cannot read or write the registry {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl Registry {
    pub fn check(&self, name: &DeviceName, key: &[u8]) -> Binding {
        match self.names.get(name) {
            Some(k) if k == key => Binding::Same,
            Some(_) => Binding::Other,
            None => Binding::Free,
        }
    }

    /// Binds a free name; returns false (and changes nothing) if it is taken.
    pub fn bind(&mut self, name: DeviceName, key: Vec<u8>) -> bool {
        if self.names.contains_key(&name) {
            return false;
        }
        self.names.insert(name, key);
        true
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let file = File {
            version: 1,
            devices: self
                .names
                .iter()
                .map(|(n, k)| (n.clone(), k.iter().map(|b| format!("{b:02x}")).collect()))
                .collect(),
        };
        let mut v = serde_json::to_vec_pretty(&file).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RegistryError> {
        let file: File = serde_json::from_slice(bytes)?;
        if file.version != 1 {
            return Err(RegistryError::Version(file.version));
        }
        let mut names = BTreeMap::new();
        for (name, hex) in file.devices {
            let key = parse_hex(&hex)
                .filter(|k| k.len() == PUBLIC_KEY_LEN && k[0] == 4)
                .ok_or_else(|| RegistryError::Key(name.to_string()))?;
            names.insert(name, key);
        }
        Ok(Self { names })
    }

    /// Reads `path`; a missing file is an empty registry.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        match std::fs::read(path) {
            Ok(b) => Self::from_bytes(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(RegistryError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Replaces `path` with `bytes`: temp file, fsync, rename, fsync directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let io = |source| RegistryError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Vec<u8> {
        let mut k = vec![b; 65];
        k[0] = 4;
        k
    }

    #[test]
    fn first_key_wins_and_round_trips() {
        let mut r = Registry::default();
        let n = DeviceName::new("box-1").unwrap();
        assert_eq!(r.check(&n, &key(1)), Binding::Free);
        assert!(r.bind(n.clone(), key(1)));
        assert!(!r.bind(n.clone(), key(2)));
        assert_eq!(r.check(&n, &key(1)), Binding::Same);
        assert_eq!(r.check(&n, &key(2)), Binding::Other);
        assert_eq!(Registry::from_bytes(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn bad_files_are_named_errors() {
        assert!(matches!(
            Registry::from_bytes(b"{"),
            Err(RegistryError::Json(_))
        ));
        assert!(matches!(
            Registry::from_bytes(br#"{"version":2,"devices":{}}"#),
            Err(RegistryError::Version(2))
        ));
        assert!(matches!(
            Registry::from_bytes(br#"{"version":1,"devices":{"box-1":"zz"}}"#),
            Err(RegistryError::Key(_))
        ));
        assert!(matches!(
            Registry::from_bytes(br#"{"version":1,"devices":{"BAD":"00"}}"#),
            Err(RegistryError::Json(_))
        ));
    }

    #[test]
    fn atomic_write_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        assert!(Registry::load(&path).unwrap().is_empty());
        let mut r = Registry::default();
        r.bind(DeviceName::new("abc").unwrap(), key(3));
        write_atomic(&path, &r.to_bytes()).unwrap();
        assert_eq!(Registry::load(&path).unwrap(), r);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
