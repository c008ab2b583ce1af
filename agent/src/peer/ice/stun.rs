//! The STUN message codec (RFC 8489) with the attributes TURN (RFC 8656)
//! needs: messages are decoded from untrusted bytes into [`Message`] (every
//! length checked, never a panic) and encoded with [`Encoder`], optionally
//! with MESSAGE-INTEGRITY (HMAC-SHA1) and FINGERPRINT (CRC-32).
//!
//! Only the client side is implemented: a decoded message with an unknown
//! comprehension-required attribute is an error (RFC 8489 §7.3.3 says to
//! discard such a response).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;
use md5::{Digest, Md5};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// The STUN/TURN methods the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Binding,
    Allocate,
    Refresh,
    Send,
    Data,
    CreatePermission,
    ChannelBind,
}

impl Method {
    fn code(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
        }
    }

    fn from_code(code: u16) -> Option<Method> {
        Some(match code {
            0x001 => Method::Binding,
            0x003 => Method::Allocate,
            0x004 => Method::Refresh,
            0x006 => Method::Send,
            0x007 => Method::Data,
            0x008 => Method::CreatePermission,
            0x009 => Method::ChannelBind,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// A transaction id: 96 random bits.
pub type TransactionId = [u8; 12];

pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;

    /// Comprehension-required attributes this decoder knows (the rest of
    /// 0x0000..=0x7FFF makes a message undecodable).
    pub(super) const KNOWN_REQUIRED: &[u16] = &[
        MAPPED_ADDRESS,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        CHANNEL_NUMBER,
        LIFETIME,
        XOR_PEER_ADDRESS,
        DATA,
        REALM,
        NONCE,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT,
        REQUESTED_TRANSPORT,
        DONT_FRAGMENT,
        MESSAGE_INTEGRITY_SHA256,
        PASSWORD_ALGORITHM,
        USERHASH,
        XOR_MAPPED_ADDRESS,
        RESERVATION_TOKEN,
        PRIORITY,
        USE_CANDIDATE,
    ];
}

/// Why bytes are not a usable STUN message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("not a STUN message: {0}")]
    NotStun(&'static str),
    #[error(
        "STUN message truncated: header says {declared} bytes of attributes, {present} present"
    )]
    Truncated { declared: usize, present: usize },
    #[error("STUN attribute 0x{typ:04x} runs past the end of the message")]
    AttributePastEnd { typ: u16 },
    #[error("STUN attribute 0x{typ:04x} is malformed: {reason}")]
    BadAttribute { typ: u16, reason: &'static str },
    #[error("unknown comprehension-required STUN attribute 0x{0:04x}")]
    UnknownRequired(u16),
    #[error("unknown STUN method 0x{0:03x}")]
    UnknownMethod(u16),
    #[error("STUN FINGERPRINT does not match")]
    BadFingerprint,
    #[error("STUN MESSAGE-INTEGRITY is missing")]
    NoIntegrity,
    #[error("STUN MESSAGE-INTEGRITY does not match (wrong credentials?)")]
    BadIntegrity,
}

/// A decoded attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    MappedAddress(SocketAddr),
    XorMappedAddress(SocketAddr),
    XorRelayedAddress(SocketAddr),
    XorPeerAddress(SocketAddr),
    Username(String),
    Realm(String),
    Nonce(String),
    Software(String),
    ErrorCode {
        code: u16,
        reason: String,
    },
    UnknownAttributes(Vec<u16>),
    Lifetime(u32),
    Data(Vec<u8>),
    ChannelNumber(u16),
    RequestedTransport(u8),
    Priority(u32),
    MessageIntegrity([u8; 20]),
    Fingerprint(u32),
    /// Any other attribute (comprehension-optional, or a required one this
    /// client never needs to read).
    Other {
        typ: u16,
        value: Vec<u8>,
    },
}

/// A decoded STUN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub class: Class,
    pub method: Method,
    pub transaction: TransactionId,
    /// In order; attributes after MESSAGE-INTEGRITY other than FINGERPRINT
    /// are dropped (RFC 8489 §14.5).
    pub attributes: Vec<Attribute>,
    /// Byte offset of MESSAGE-INTEGRITY's header, for [`verify_integrity`].
    integrity_at: Option<usize>,
}

/// Whether the bytes look like STUN at all (RFC 7983 demultiplexing: first
/// byte 0..=3, and the magic cookie).
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] < 4 && bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// The transaction id of bytes that look like STUN, without decoding more.
pub fn transaction_of(bytes: &[u8]) -> Option<TransactionId> {
    if !is_stun(bytes) {
        return None;
    }
    bytes[8..HEADER_LEN].try_into().ok()
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Message {
    /// Decodes one message; checks framing, attribute lengths and, when
    /// present, FINGERPRINT.
    pub fn decode(bytes: &[u8]) -> Result<Message, StunError> {
        if bytes.len() < HEADER_LEN {
            return Err(StunError::NotStun("shorter than the 20-byte header"));
        }
        let typ = be16(bytes, 0);
        if typ & 0xC000 != 0 {
            return Err(StunError::NotStun("the first two bits are not zero"));
        }
        if be32(bytes, 4) != MAGIC_COOKIE {
            return Err(StunError::NotStun("wrong magic cookie"));
        }
        let declared = be16(bytes, 2) as usize;
        if !declared.is_multiple_of(4) {
            return Err(StunError::NotStun("length is not a multiple of 4"));
        }
        let present = bytes.len() - HEADER_LEN;
        if declared > present {
            return Err(StunError::Truncated { declared, present });
        }
        let bytes = &bytes[..HEADER_LEN + declared];
        let method_code = (typ & 0x000F) | ((typ & 0x00E0) >> 1) | ((typ & 0x3E00) >> 2);
        let class = match ((typ >> 4) & 1) | ((typ >> 7) & 2) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let method = Method::from_code(method_code).ok_or(StunError::UnknownMethod(method_code))?;
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&bytes[8..HEADER_LEN]);

        let mut attributes = Vec::new();
        let mut integrity_at = None;
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            if bytes.len() - at < 4 {
                return Err(StunError::AttributePastEnd { typ: 0 });
            }
            let typ = be16(bytes, at);
            let len = be16(bytes, at + 2) as usize;
            let start = at + 4;
            let end = start + len;
            if end > bytes.len() {
                return Err(StunError::AttributePastEnd { typ });
            }
            let value = &bytes[start..end];
            let next = start + len.div_ceil(4) * 4;
            if typ == attr::FINGERPRINT {
                if len != 4 {
                    return Err(StunError::BadAttribute {
                        typ,
                        reason: "FINGERPRINT is not 4 bytes",
                    });
                }
                if next != bytes.len() {
                    return Err(StunError::BadAttribute {
                        typ,
                        reason: "FINGERPRINT is not the last attribute",
                    });
                }
                // The CRC covers the message up to FINGERPRINT, with the
                // length field as it is (FINGERPRINT is included).
                let want = CRC32.checksum(&bytes[..at]) ^ FINGERPRINT_XOR;
                let got = be32(value, 0);
                if got != want {
                    return Err(StunError::BadFingerprint);
                }
                attributes.push(Attribute::Fingerprint(got));
            } else if integrity_at.is_none() {
                if typ == attr::MESSAGE_INTEGRITY {
                    integrity_at = Some(at);
                }
                attributes.push(decode_attribute(typ, value, &transaction)?);
            }
            at = next;
        }
        Ok(Message {
            class,
            method,
            transaction,
            attributes,
            integrity_at,
        })
    }

    pub fn is_response(&self) -> bool {
        matches!(self.class, Class::Success | Class::Error)
    }

    /// The first attribute `f` maps to something.
    pub fn find<T>(&self, f: impl FnMut(&Attribute) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(f)
    }

    pub fn error_code(&self) -> Option<(u16, &str)> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::ErrorCode { code, reason } => Some((*code, reason.as_str())),
            _ => None,
        })
    }

    pub fn text(&self, typ: u16) -> Option<&str> {
        self.attributes.iter().find_map(|a| match (typ, a) {
            (attr::REALM, Attribute::Realm(s))
            | (attr::NONCE, Attribute::Nonce(s))
            | (attr::USERNAME, Attribute::Username(s))
            | (attr::SOFTWARE, Attribute::Software(s)) => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn address(&self, typ: u16) -> Option<SocketAddr> {
        self.attributes.iter().find_map(|a| match (typ, a) {
            (attr::XOR_MAPPED_ADDRESS, Attribute::XorMappedAddress(s))
            | (attr::MAPPED_ADDRESS, Attribute::MappedAddress(s))
            | (attr::XOR_RELAYED_ADDRESS, Attribute::XorRelayedAddress(s))
            | (attr::XOR_PEER_ADDRESS, Attribute::XorPeerAddress(s)) => Some(*s),
            _ => None,
        })
    }
}

/// Checks MESSAGE-INTEGRITY of `bytes` (the message `message` was decoded
/// from) against `key` (RFC 8489 §14.5: the HMAC covers the message up to
/// the attribute, with the length field pointing just past it).
pub fn verify_integrity(bytes: &[u8], message: &Message, key: &[u8]) -> Result<(), StunError> {
    let at = message.integrity_at.ok_or(StunError::NoIntegrity)?;
    let Some(Attribute::MessageIntegrity(got)) = message
        .attributes
        .iter()
        .find(|a| matches!(a, Attribute::MessageIntegrity(_)))
    else {
        return Err(StunError::NoIntegrity);
    };
    let want = integrity(&bytes[..at], key);
    if aws_lc_rs::constant_time::verify_slices_are_equal(&want, got).is_err() {
        return Err(StunError::BadIntegrity);
    }
    Ok(())
}

/// HMAC-SHA1 over `prefix` (a message up to MESSAGE-INTEGRITY) with the
/// length field set to include the 24-byte attribute.
fn integrity(prefix: &[u8], key: &[u8]) -> [u8; 20] {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&prefix[..HEADER_LEN]);
    let len = (prefix.len() - HEADER_LEN + 24) as u16;
    header[2..4].copy_from_slice(&len.to_be_bytes());
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(&header);
    ctx.update(&prefix[HEADER_LEN..]);
    let tag = ctx.sign();
    let mut out = [0u8; 20];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The long-term credential key: MD5(username ":" realm ":" password)
/// (RFC 8489 §9.2.2; the strings are used as given, without SASLprep, as
/// coturn does for ASCII credentials).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

fn text(typ: u16, value: &[u8], max: usize) -> Result<String, StunError> {
    if value.len() > max {
        return Err(StunError::BadAttribute {
            typ,
            reason: "text longer than allowed",
        });
    }
    String::from_utf8(value.to_vec()).map_err(|_| StunError::BadAttribute {
        typ,
        reason: "text is not UTF-8",
    })
}

fn fixed<const N: usize>(typ: u16, value: &[u8]) -> Result<[u8; N], StunError> {
    value.try_into().map_err(|_| StunError::BadAttribute {
        typ,
        reason: "wrong length",
    })
}

fn decode_attribute(
    typ: u16,
    value: &[u8],
    transaction: &TransactionId,
) -> Result<Attribute, StunError> {
    Ok(match typ {
        attr::MAPPED_ADDRESS => Attribute::MappedAddress(address(typ, value, None)?),
        attr::XOR_MAPPED_ADDRESS => {
            Attribute::XorMappedAddress(address(typ, value, Some(transaction))?)
        }
        attr::XOR_RELAYED_ADDRESS => {
            Attribute::XorRelayedAddress(address(typ, value, Some(transaction))?)
        }
        attr::XOR_PEER_ADDRESS => {
            Attribute::XorPeerAddress(address(typ, value, Some(transaction))?)
        }
        attr::USERNAME => Attribute::Username(text(typ, value, 513)?),
        attr::REALM => Attribute::Realm(text(typ, value, 763)?),
        attr::NONCE => Attribute::Nonce(text(typ, value, 763)?),
        attr::SOFTWARE => Attribute::Software(text(typ, value, 763)?),
        attr::ERROR_CODE => {
            if value.len() < 4 {
                return Err(StunError::BadAttribute {
                    typ,
                    reason: "ERROR-CODE shorter than 4 bytes",
                });
            }
            let class = (value[2] & 0x07) as u16;
            let number = value[3] as u16;
            if !(3..=6).contains(&class) || number > 99 {
                return Err(StunError::BadAttribute {
                    typ,
                    reason: "ERROR-CODE out of range",
                });
            }
            Attribute::ErrorCode {
                code: class * 100 + number,
                reason: String::from_utf8_lossy(&value[4..]).into_owned(),
            }
        }
        attr::UNKNOWN_ATTRIBUTES => {
            if !value.len().is_multiple_of(2) {
                return Err(StunError::BadAttribute {
                    typ,
                    reason: "odd length",
                });
            }
            Attribute::UnknownAttributes(value.chunks(2).map(|c| be16(c, 0)).collect())
        }
        attr::LIFETIME => Attribute::Lifetime(u32::from_be_bytes(fixed(typ, value)?)),
        attr::PRIORITY => Attribute::Priority(u32::from_be_bytes(fixed(typ, value)?)),
        attr::DATA => Attribute::Data(value.to_vec()),
        attr::CHANNEL_NUMBER => {
            let v: [u8; 4] = fixed(typ, value)?;
            Attribute::ChannelNumber(u16::from_be_bytes([v[0], v[1]]))
        }
        attr::REQUESTED_TRANSPORT => {
            let v: [u8; 4] = fixed(typ, value)?;
            Attribute::RequestedTransport(v[0])
        }
        attr::MESSAGE_INTEGRITY => Attribute::MessageIntegrity(fixed(typ, value)?),
        _ if typ < 0x8000 && !attr::KNOWN_REQUIRED.contains(&typ) => {
            return Err(StunError::UnknownRequired(typ))
        }
        _ => Attribute::Other {
            typ,
            value: value.to_vec(),
        },
    })
}

fn address(typ: u16, value: &[u8], xor: Option<&TransactionId>) -> Result<SocketAddr, StunError> {
    let bad = |reason| StunError::BadAttribute { typ, reason };
    if value.len() < 4 {
        return Err(bad("address shorter than 4 bytes"));
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = be16(value, 2);
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (value[1], value.len()) {
        (0x01, 8) => {
            let mut o: [u8; 4] = value[4..8].try_into().map_err(|_| bad("IPv4 length"))?;
            if xor.is_some() {
                for (b, c) in o.iter_mut().zip(cookie) {
                    *b ^= c;
                }
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (0x02, 20) => {
            let mut o: [u8; 16] = value[4..20].try_into().map_err(|_| bad("IPv6 length"))?;
            if let Some(t) = xor {
                let pad = cookie.iter().chain(t.iter());
                for (b, c) in o.iter_mut().zip(pad) {
                    *b ^= c;
                }
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        (0x01 | 0x02, _) => return Err(bad("address length does not fit its family")),
        _ => return Err(bad("unknown address family")),
    };
    Ok(SocketAddr::new(ip, port))
}

fn encode_address(addr: SocketAddr, transaction: &TransactionId) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut v = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(1);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(cookie).map(|(b, c)| b ^ c));
        }
        IpAddr::V6(ip) => {
            v.push(2);
            v.extend_from_slice(&port.to_be_bytes());
            let pad = cookie.iter().chain(transaction.iter());
            v.extend(ip.octets().iter().zip(pad).map(|(b, c)| b ^ c));
        }
    }
    v
}

/// Builds one message; attributes in the order added, padded with zeros.
pub struct Encoder {
    buf: Vec<u8>,
    transaction: TransactionId,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("len", &self.buf.len())
            .finish()
    }
}

impl Encoder {
    pub fn new(class: Class, method: Method, transaction: TransactionId) -> Encoder {
        let m = method.code();
        let c = match class {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        };
        let typ = (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 1) << 4)
            | ((c & 2) << 7);
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&typ.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction);
        Encoder { buf, transaction }
    }

    pub fn raw(mut self, typ: u16, value: &[u8]) -> Encoder {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = value.len().next_multiple_of(4) - value.len();
        self.buf.extend(std::iter::repeat_n(0, pad));
        self.set_len();
        self
    }

    pub fn address(self, typ: u16, addr: SocketAddr) -> Encoder {
        let v = encode_address(addr, &self.transaction);
        self.raw(typ, &v)
    }

    pub fn u32(self, typ: u16, value: u32) -> Encoder {
        self.raw(typ, &value.to_be_bytes())
    }

    pub fn text(self, typ: u16, value: &str) -> Encoder {
        self.raw(typ, value.as_bytes())
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends MESSAGE-INTEGRITY with `key` (if any) and FINGERPRINT (if
    /// asked) and returns the message.
    pub fn finish(mut self, key: Option<&[u8]>, fingerprint: bool) -> Vec<u8> {
        if let Some(key) = key {
            let tag = integrity(&self.buf, key);
            self = self.raw(attr::MESSAGE_INTEGRITY, &tag);
        }
        if fingerprint {
            let len = (self.buf.len() - HEADER_LEN + 8) as u16;
            self.buf[2..4].copy_from_slice(&len.to_be_bytes());
            let crc = CRC32.checksum(&self.buf) ^ FINGERPRINT_XOR;
            self = self.raw(attr::FINGERPRINT, &crc.to_be_bytes());
        }
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

    // RFC 5769 §2.1 .. §2.4.
    fn sample_request() -> Vec<u8> {
        hex("000100582112a442b7e7a701bc34d686fa87dfae
             802200105354554e207465737420636c69656e74
             002400046e0001ff
             80290008932ff9b151263b36
             000600096576746a3a68367659202020
             000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2
             80280004e57a3bcf")
    }
    fn sample_ipv4_response() -> Vec<u8> {
        hex("0101003c2112a442b7e7a701bc34d686fa87dfae
             8022000b7465737420766563746f7220
             002000080001a147e112a643
             000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7
             80280004c07d4c96")
    }
    fn sample_ipv6_response() -> Vec<u8> {
        hex("010100482112a442b7e7a701bc34d686fa87dfae
             8022000b7465737420766563746f7220
             002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9
             00080014a382954e4be67bf11784c97c8292c275bfe3ed41
             80280004c8fb0b4c")
    }
    fn sample_long_term_request() -> Vec<u8> {
        hex("000100602112a442 78ad3433c6ad72c029da412e
             00060012e3839ee38388e383aae38383e382afe382b90000
             0015001c662f2f3439396b39353464364f4c33346f4c394653547679363473 41
             0014000b6578616d706c652e6f726700
             00080014f67024656dd64a3e02b8e0712e85c9a28ca89666")
    }
    const LT_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";

    #[test]
    fn rfc5769_sample_request() {
        let bytes = sample_request();
        let m = Message::decode(&bytes).unwrap();
        assert_eq!((m.class, m.method), (Class::Request, Method::Binding));
        assert_eq!(m.text(attr::USERNAME), Some("evtj:h6vY"));
        assert_eq!(m.text(attr::SOFTWARE), Some("STUN test client"));
        assert!(m.attributes.contains(&Attribute::Priority(0x6e0001ff)));
        verify_integrity(&bytes, &m, SHORT_TERM_PASSWORD.as_bytes()).unwrap();
        assert_eq!(
            verify_integrity(&bytes, &m, b"wrong"),
            Err(StunError::BadIntegrity)
        );
    }

    #[test]
    fn rfc5769_ipv4_and_ipv6_responses() {
        for (bytes, want) in [
            (sample_ipv4_response(), "192.0.2.1:32853"),
            (
                sample_ipv6_response(),
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            ),
        ] {
            let m = Message::decode(&bytes).unwrap();
            assert_eq!((m.class, m.method), (Class::Success, Method::Binding));
            assert_eq!(
                m.address(attr::XOR_MAPPED_ADDRESS),
                Some(want.parse().unwrap())
            );
            assert_eq!(m.text(attr::SOFTWARE), Some("test vector"));
            verify_integrity(&bytes, &m, SHORT_TERM_PASSWORD.as_bytes()).unwrap();
        }
    }

    #[test]
    fn rfc5769_long_term_request_and_its_encoding() {
        let bytes = sample_long_term_request();
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(m.text(attr::USERNAME), Some(LT_USERNAME));
        assert_eq!(m.text(attr::REALM), Some("example.org"));
        assert_eq!(m.text(attr::NONCE), Some("f//499k954d6OL34oL9FSTvy64sA"));
        let key = long_term_key(LT_USERNAME, "example.org", "TheMatrIX");
        verify_integrity(&bytes, &m, &key).unwrap();
        let wrong = long_term_key(LT_USERNAME, "example.org", "TheMatrIx");
        assert_eq!(
            verify_integrity(&bytes, &m, &wrong),
            Err(StunError::BadIntegrity)
        );
        // This sample pads with zeros, as the encoder does: byte for byte.
        let encoded = Encoder::new(Class::Request, Method::Binding, m.transaction)
            .text(attr::USERNAME, LT_USERNAME)
            .text(attr::NONCE, "f//499k954d6OL34oL9FSTvy64sA")
            .text(attr::REALM, "example.org")
            .finish(Some(&key), false);
        assert_eq!(encoded, bytes);
    }

    #[test]
    fn encoded_addresses_and_fingerprint_round_trip() {
        let t = [7u8; 12];
        for a in ["192.0.2.1:32853", "[2001:db8::1]:9"] {
            let addr: SocketAddr = a.parse().unwrap();
            let bytes = Encoder::new(Class::Success, Method::Allocate, t)
                .address(attr::XOR_RELAYED_ADDRESS, addr)
                .u32(attr::LIFETIME, 600)
                .finish(Some(b"k"), true);
            let m = Message::decode(&bytes).unwrap();
            assert_eq!(m.address(attr::XOR_RELAYED_ADDRESS), Some(addr));
            assert!(m.attributes.contains(&Attribute::Lifetime(600)));
            verify_integrity(&bytes, &m, b"k").unwrap();
        }
    }

    #[test]
    fn rejects_malformed_messages() {
        let good = sample_ipv4_response();
        // Truncated: shorter than the header, and shorter than declared.
        assert!(matches!(
            Message::decode(&good[..10]),
            Err(StunError::NotStun(_))
        ));
        assert!(matches!(
            Message::decode(&good[..good.len() - 4]),
            Err(StunError::Truncated { .. })
        ));
        // Wrong magic cookie.
        let mut b = good.clone();
        b[4] ^= 1;
        assert_eq!(
            Message::decode(&b),
            Err(StunError::NotStun("wrong magic cookie"))
        );
        // Length not a multiple of 4.
        let mut b = good.clone();
        b[3] = 0x3b;
        assert!(matches!(Message::decode(&b), Err(StunError::NotStun(_))));
        // An attribute running past the end (SOFTWARE claims 0xff bytes).
        let mut b = good.clone();
        b[22] = 0;
        b[23] = 0xff;
        assert_eq!(
            Message::decode(&b),
            Err(StunError::AttributePastEnd {
                typ: attr::SOFTWARE
            })
        );
        // A flipped payload bit: FINGERPRINT catches it.
        let mut b = good.clone();
        b[30] ^= 1;
        assert_eq!(Message::decode(&b), Err(StunError::BadFingerprint));
        // A bad MESSAGE-INTEGRITY with a recomputed FINGERPRINT.
        let t = [1u8; 12];
        let bytes = Encoder::new(Class::Success, Method::Binding, t)
            .address(attr::XOR_MAPPED_ADDRESS, "10.0.0.1:5".parse().unwrap())
            .finish(Some(b"right"), true);
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(
            verify_integrity(&bytes, &m, b"wrong"),
            Err(StunError::BadIntegrity)
        );
        // No MESSAGE-INTEGRITY at all.
        let bytes = Encoder::new(Class::Success, Method::Binding, t).finish(None, false);
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(
            verify_integrity(&bytes, &m, b"k"),
            Err(StunError::NoIntegrity)
        );
    }

    #[test]
    fn rejects_unknown_required_but_keeps_optional_attributes() {
        let t = [2u8; 12];
        let bytes = Encoder::new(Class::Success, Method::Binding, t)
            .raw(0x7777, b"x")
            .finish(None, false);
        assert_eq!(
            Message::decode(&bytes),
            Err(StunError::UnknownRequired(0x7777))
        );
        let bytes = Encoder::new(Class::Success, Method::Binding, t)
            .raw(0x8777, b"xyz")
            .finish(None, true);
        let m = Message::decode(&bytes).unwrap();
        assert!(m.attributes.contains(&Attribute::Other {
            typ: 0x8777,
            value: b"xyz".to_vec()
        }));
    }

    #[test]
    fn rejects_bad_attribute_values() {
        let t = [3u8; 12];
        for (typ, value) in [
            (attr::XOR_MAPPED_ADDRESS, &[0u8, 1, 0, 0, 1, 2][..]),
            (attr::XOR_MAPPED_ADDRESS, &[0u8, 9, 0, 0, 1, 2, 3, 4][..]),
            (attr::LIFETIME, &[0u8, 1][..]),
            (attr::ERROR_CODE, &[0u8, 0, 9, 1][..]),
            (attr::REALM, &[0xffu8, 0xfe][..]),
        ] {
            let bytes = Encoder::new(Class::Success, Method::Allocate, t)
                .raw(typ, value)
                .finish(None, false);
            assert!(
                matches!(Message::decode(&bytes), Err(StunError::BadAttribute { .. })),
                "0x{typ:04x} {value:?}"
            );
        }
    }

    #[test]
    fn error_codes() {
        let bytes = Encoder::new(Class::Error, Method::Allocate, [4u8; 12])
            .raw(attr::ERROR_CODE, b"\0\0\x04\x01Unauthorized")
            .text(attr::REALM, "r")
            .text(attr::NONCE, "n")
            .finish(None, true);
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(m.class, Class::Error);
        assert_eq!(m.error_code(), Some((401, "Unauthorized")));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn random_attributes_after_a_valid_header_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..160)
        ) {
            let mut bytes = Encoder::new(Class::Success, Method::Allocate, [5u8; 12]).finish(None, false);
            let len = (body.len() / 4 * 4) as u16;
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&body);
            if let Ok(m) = Message::decode(&bytes) {
                let _ = verify_integrity(&bytes, &m, b"k");
            }
        }
    }
}
