//! flock ↔ device messages: postcard over WebSocket binary frames.
//!
//! A frame is `u16 version` followed by one enum value, at most
//! [`MAX_MESSAGE`] bytes. Invariants: [`decode`] rejects other versions,
//! trailing bytes, oversize frames and invalid names with a [`CodecError`]
//! and never panics; [`encode`] refuses to produce a frame the other side
//! would reject for its size.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{DeviceName, IceServer, MAX_MESSAGE};

/// The version this crate speaks; the first field of every frame.
pub const PROTOCOL_VERSION: u16 = 1;

/// Device → flock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceToFlock {
    /// Answer to [`FlockToDevice::Challenge`]: `signature` is ECDSA P-256
    /// SHA-256 (ASN.1 DER) over [`crate::identity::challenge_message`];
    /// `public_key` is SEC1 uncompressed (65 bytes).
    Hello {
        name: DeviceName,
        public_key: Vec<u8>,
        signature: Vec<u8>,
    },
    SessionAnswer {
        session: u64,
        sdp: String,
    },
    /// `candidate: None` = end of candidates.
    Candidate {
        session: u64,
        candidate: Option<String>,
        sdp_mid: Option<String>,
    },
    SessionClosed {
        session: u64,
        reason: String,
    },
    Ping,
    Pong,
}

/// flock → device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlockToDevice {
    Challenge {
        nonce: [u8; 32],
    },
    /// Sent after a good `Hello`, and again with fresh credentials before
    /// the previous ones expire; the device uses the latest.
    Registered {
        ice_servers: Vec<IceServer>,
    },
    /// Followed by close.
    Rejected {
        reason: String,
    },
    SessionOffer {
        session: u64,
        sdp: String,
    },
    /// `candidate: None` = end of candidates.
    Candidate {
        session: u64,
        candidate: Option<String>,
        sdp_mid: Option<String>,
    },
    SessionClosed {
        session: u64,
        reason: String,
    },
    Ping,
    Pong,
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("frame is empty or too short for the version field")]
    NoVersion,
    #[error("protocol version {0} is not supported (this side speaks {PROTOCOL_VERSION})")]
    Version(u16),
    #[error("malformed message: {0}")]
    Malformed(postcard::Error),
    #[error("{0} unexpected bytes after the message")]
    Trailing(usize),
}

/// Encodes `msg` as one frame (version + message).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = postcard::to_allocvec(&(PROTOCOL_VERSION, msg)).map_err(CodecError::Malformed)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Decodes one frame; any flaw is an error, never a panic.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, CodecError> {
    if frame.len() > MAX_MESSAGE {
        return Err(CodecError::TooLarge(frame.len()));
    }
    let (version, rest) =
        postcard::take_from_bytes::<u16>(frame).map_err(|_| CodecError::NoVersion)?;
    if version != PROTOCOL_VERSION {
        return Err(CodecError::Version(version));
    }
    let (msg, rest) = postcard::take_from_bytes::<T>(rest).map_err(CodecError::Malformed)?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> DeviceToFlock {
        DeviceToFlock::Hello {
            name: DeviceName::new("box-1").unwrap(),
            public_key: vec![4; 65],
            signature: vec![1, 2, 3],
        }
    }

    #[test]
    fn round_trip() {
        let msgs = [
            hello(),
            DeviceToFlock::SessionAnswer {
                session: 7,
                sdp: "v=0".into(),
            },
            DeviceToFlock::Candidate {
                session: u64::MAX,
                candidate: None,
                sdp_mid: Some("0".into()),
            },
            DeviceToFlock::Ping,
        ];
        for m in msgs {
            assert_eq!(decode::<DeviceToFlock>(&encode(&m).unwrap()).unwrap(), m);
        }
        let m = FlockToDevice::Challenge { nonce: [9; 32] };
        assert_eq!(decode::<FlockToDevice>(&encode(&m).unwrap()).unwrap(), m);
    }

    #[test]
    fn version_is_the_first_field() {
        let bytes = encode(&DeviceToFlock::Ping).unwrap();
        assert_eq!(bytes[0], 1);
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(matches!(
            decode::<DeviceToFlock>(&v2),
            Err(CodecError::Version(2))
        ));
    }

    #[test]
    fn rejects_truncated_and_trailing() {
        let bytes = encode(&hello()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<DeviceToFlock>(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode::<DeviceToFlock>(&long),
            Err(CodecError::Trailing(1))
        ));
        assert!(matches!(
            decode::<DeviceToFlock>(&[]),
            Err(CodecError::NoVersion)
        ));
    }

    #[test]
    fn rejects_garbage_and_bad_names() {
        assert!(decode::<DeviceToFlock>(&[1, 0xff, 0xff, 0xff]).is_err());
        // A Hello whose name breaks the rule is refused at decode.
        let bad = postcard::to_allocvec(&(
            1u16,
            0u32, // variant index of Hello
            "Bad Name",
            vec![4u8; 65],
            vec![1u8],
        ))
        .unwrap();
        assert!(matches!(
            decode::<DeviceToFlock>(&bad),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn size_bound_on_both_sides() {
        let big = DeviceToFlock::SessionAnswer {
            session: 1,
            sdp: "a".repeat(MAX_MESSAGE),
        };
        assert!(matches!(encode(&big), Err(CodecError::TooLarge(_))));
        assert!(matches!(
            decode::<DeviceToFlock>(&vec![0u8; MAX_MESSAGE + 1]),
            Err(CodecError::TooLarge(_))
        ));
        // A length prefix claiming far more than is there must not allocate it.
        let mut lie = vec![1u8, 1, 7];
        lie.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode::<DeviceToFlock>(&lie).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<DeviceToFlock>(&bytes);
            let _ = decode::<FlockToDevice>(&bytes);
        }
    }
}
