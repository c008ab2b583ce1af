//! flock ↔ browser messages: JSON objects tagged by `"type"`, one per
//! WebSocket text frame, at most [`MAX_MESSAGE`] bytes.
//! Invariant: [`decode`] rejects unknown types, oversize text and invalid
//! device names with a [`JsonError`] and never panics.

use serde::{Deserialize, Serialize};

use crate::{DeviceName, IceServer, MAX_MESSAGE};

/// Browser → flock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BrowserToFlock {
    Connect {
        device: DeviceName,
    },
    Offer {
        sdp: String,
    },
    /// `candidate: null` = end of candidates.
    Candidate {
        #[serde(default)]
        candidate: Option<String>,
        #[serde(default)]
        sdp_mid: Option<String>,
    },
}

/// flock → browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FlockToBrowser {
    /// `session` stays below 2^53 so JavaScript numbers hold it exactly.
    Session {
        session: u64,
        ice_servers: Vec<IceServer>,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        candidate: Option<String>,
        sdp_mid: Option<String>,
    },
    Closed {
        reason: String,
    },
    Error {
        message: String,
    },
}

/// Why a browser message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Encodes one message as JSON text.
pub fn encode<T: Serialize>(msg: &T) -> Result<String, JsonError> {
    let text = serde_json::to_string(msg)?;
    if text.len() > MAX_MESSAGE {
        return Err(JsonError::TooLarge(text.len()));
    }
    Ok(text)
}

/// Decodes one message from JSON text.
pub fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, JsonError> {
    if text.len() > MAX_MESSAGE {
        return Err(JsonError::TooLarge(text.len()));
    }
    Ok(serde_json::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_the_documented_shapes() {
        let m: BrowserToFlock = decode(r#"{"type":"connect","device":"box-1"}"#).unwrap();
        assert_eq!(
            m,
            BrowserToFlock::Connect {
                device: DeviceName::new("box-1").unwrap()
            }
        );
        let m: BrowserToFlock =
            decode(r#"{"type":"candidate","candidate":null,"sdp_mid":"0"}"#).unwrap();
        assert_eq!(
            m,
            BrowserToFlock::Candidate {
                candidate: None,
                sdp_mid: Some("0".into())
            }
        );
        let s = encode(&FlockToBrowser::Session {
            session: 3,
            ice_servers: vec![IceServer {
                urls: vec!["turn:t".into()],
                username: Some("u".into()),
                credential: Some("c".into()),
            }],
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"type":"session","session":3,"ice_servers":[{"urls":["turn:t"],"username":"u","credential":"c"}]}"#
        );
        assert_eq!(
            encode(&FlockToBrowser::Error {
                message: "x".into()
            })
            .unwrap(),
            r#"{"type":"error","message":"x"}"#
        );
    }

    #[test]
    fn rejects_unknown_types_and_bad_input() {
        for bad in [
            r#"{"type":"answer","sdp":"x"}"#,
            r#"{"type":"nope"}"#,
            r#"{"device":"box-1"}"#,
            r#"{"type":"connect","device":"BAD"}"#,
            r#"{"type":"connect"}"#,
            "not json",
            "",
            "[]",
        ] {
            assert!(decode::<BrowserToFlock>(bad).is_err(), "{bad}");
        }
        let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(MAX_MESSAGE));
        assert!(matches!(
            decode::<BrowserToFlock>(&big),
            Err(JsonError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(s in ".{0,300}") {
            let _ = decode::<BrowserToFlock>(&s);
        }
    }
}
