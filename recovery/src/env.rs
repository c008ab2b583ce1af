//! A bootloader environment as a typed map of variables, shared by the U-Boot
//! and GRUB backends. Invariant: every name and value set through the public
//! API can be stored by both formats and read back unchanged (names are
//! non-empty and hold no `=`, NUL or newline; values hold no NUL or newline).

use std::collections::BTreeMap;
use std::fmt;

/// Why a name or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VarError {
    /// The name is empty.
    #[error("variable name is empty")]
    EmptyName,
    /// The name contains a character no bootloader environment can hold.
    #[error("variable name {name:?} contains {what}")]
    BadName {
        /// The refused name.
        name: String,
        /// `"'='"`, `"a NUL byte"` or `"a newline"`.
        what: &'static str,
    },
    /// The value contains a character no bootloader environment can hold.
    #[error("value of {name:?} contains {what}")]
    BadValue {
        /// The variable being set.
        name: String,
        /// `"a NUL byte"` or `"a newline"`.
        what: &'static str,
    },
}

/// Environment variables, sorted by name (U-Boot's `env export` sorts too,
/// so an image written here is byte-stable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// An empty environment.
    pub fn new() -> Env {
        Env::default()
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Sets `name` to `value` after checking both.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), VarError> {
        check_name(name)?;
        check_value(name, value)?;
        self.vars.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    /// Removes `name`; returns its old value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.vars.remove(name)
    }

    /// Variables in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Inserts what a format parser found on disk. Formats may legitimately
    /// hold values the public API refuses (U-Boot values with a newline, set
    /// from the U-Boot shell), and they are kept so a rewrite loses nothing.
    pub(crate) fn insert_from_disk(&mut self, name: String, value: String) {
        self.vars.insert(name, value);
    }
}

impl fmt::Display for Env {
    /// `name=value` lines, as `fw_printenv` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in self.iter() {
            writeln!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), VarError> {
    if name.is_empty() {
        return Err(VarError::EmptyName);
    }
    let what = if name.contains('=') {
        "'='"
    } else if name.contains('\0') {
        "a NUL byte"
    } else if name.contains('\n') {
        "a newline"
    } else {
        return Ok(());
    };
    Err(VarError::BadName {
        name: name.to_owned(),
        what,
    })
}

fn check_value(name: &str, value: &str) -> Result<(), VarError> {
    let what = if value.contains('\0') {
        "a NUL byte"
    } else if value.contains('\n') {
        "a newline"
    } else {
        return Ok(());
    };
    Err(VarError::BadValue {
        name: name.to_owned(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_refuses_what_no_format_can_hold() {
        let mut env = Env::new();
        assert_eq!(env.set("", "x"), Err(VarError::EmptyName));
        assert!(matches!(
            env.set("a=b", "x"),
            Err(VarError::BadName { what: "'='", .. })
        ));
        assert!(matches!(
            env.set("a\nb", "x"),
            Err(VarError::BadName { .. })
        ));
        assert!(matches!(env.set("a\0", "x"), Err(VarError::BadName { .. })));
        assert!(matches!(
            env.set("a", "x\ny"),
            Err(VarError::BadValue { .. })
        ));
        assert!(matches!(
            env.set("a", "x\0"),
            Err(VarError::BadValue { .. })
        ));
        assert!(env.is_empty());
        env.set("a", "x=y z").unwrap();
        env.set("a", "").unwrap();
        assert_eq!(env.get("a"), Some(""));
        assert_eq!(env.to_string(), "a=\n");
    }
}
