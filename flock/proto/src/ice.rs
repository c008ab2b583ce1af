//! One STUN/TURN server entry, shaped like the browser's `RTCIceServer`.
//! Invariant: in JSON an absent username/credential is omitted (a browser
//! would turn `null` into the string "null"); postcard always carries all
//! three fields because it is not self-describing.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

/// A STUN or TURN server with optional (short-lived) credentials. Its
/// `Debug` hides the credential, so logs and test failures never show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Serialize for IceServer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            let mut st = s.serialize_struct("IceServer", 3)?;
            st.serialize_field("urls", &self.urls)?;
            st.serialize_field("username", &self.username)?;
            st.serialize_field("credential", &self.credential)?;
            return st.end();
        }
        let len = 1 + self.username.is_some() as usize + self.credential.is_some() as usize;
        let mut st = s.serialize_struct("IceServer", len)?;
        st.serialize_field("urls", &self.urls)?;
        if let Some(u) = &self.username {
            st.serialize_field("username", u)?;
        }
        if let Some(c) = &self.credential {
            st.serialize_field("credential", c)?;
        }
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_credential() {
        let turn = IceServer {
            urls: vec!["turn:example.test:3478".into()],
            username: Some("1700000000:ab".into()),
            credential: Some("s3cret-credential".into()),
        };
        let shown = format!("{turn:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("<hidden>") && shown.contains("1700000000:ab"),
            "{shown}"
        );
    }

    #[test]
    fn json_omits_missing_credentials() {
        let stun = IceServer {
            urls: vec!["stun:example.test:3478".into()],
            username: None,
            credential: None,
        };
        let json = serde_json::to_string(&stun).unwrap();
        assert_eq!(json, r#"{"urls":["stun:example.test:3478"]}"#);
        assert_eq!(serde_json::from_str::<IceServer>(&json).unwrap(), stun);
    }

    #[test]
    fn postcard_round_trips_both_shapes() {
        for s in [
            IceServer {
                urls: vec!["stun:a".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:a".into(), "turns:b".into()],
                username: Some("1700000000:abc".into()),
                credential: Some("c2VjcmV0".into()),
            },
        ] {
            let bytes = postcard::to_allocvec(&s).unwrap();
            assert_eq!(postcard::from_bytes::<IceServer>(&bytes).unwrap(), s);
        }
    }
}
