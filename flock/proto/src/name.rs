//! Device names: the key of flock's registry and what a person types.
//! Invariant: a `DeviceName` always holds 3–63 chars of `[a-z0-9-]`, not
//! starting or ending with `-` (checked on construction and on decode).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated device name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceName(String);

/// Why a string is not a device name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("device name must be 3 to 63 characters long, not {0}")]
    Length(usize),
    #[error("device name may only contain a-z, 0-9 and '-', found {0:?}")]
    Char(char),
    #[error("device name must not start or end with '-'")]
    Dash,
}

impl DeviceName {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 63;

    /// Checks `name` against the rule.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::Char(c));
        }
        // Only ASCII is left, so bytes are chars.
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&name.len()) {
            return Err(NameError::Length(name.len()));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(NameError::Dash);
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl std::str::FromStr for DeviceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl From<DeviceName> for String {
    fn from(n: DeviceName) -> String {
        n.0
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for n in ["abc", "my-box-1", "a1b", &"x".repeat(63)] {
            assert!(DeviceName::new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(DeviceName::new("ab"), Err(NameError::Length(2)));
        assert_eq!(DeviceName::new("x".repeat(64)), Err(NameError::Length(64)));
        assert_eq!(DeviceName::new("Abc"), Err(NameError::Char('A')));
        assert_eq!(DeviceName::new("a_bc"), Err(NameError::Char('_')));
        assert_eq!(DeviceName::new("äbc"), Err(NameError::Char('ä')));
        assert_eq!(DeviceName::new("-abc"), Err(NameError::Dash));
        assert_eq!(DeviceName::new("abc-"), Err(NameError::Dash));
        assert_eq!(DeviceName::new(""), Err(NameError::Length(0)));
    }

    #[test]
    fn decode_checks_the_rule() {
        assert!(serde_json::from_str::<DeviceName>("\"ok-name\"").is_ok());
        assert!(serde_json::from_str::<DeviceName>("\"Bad\"").is_err());
    }
}
