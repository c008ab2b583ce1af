//! ICE candidate gathering beyond the host candidate: server-reflexive
//! addresses from STUN Binding requests and relayed addresses from TURN
//! allocations, both on a session's own UDP socket.
//!
//! - [`stun`]: the STUN message codec (RFC 8489), with the TURN attributes;
//! - [`turn`]: a sans-IO TURN client for one allocation (RFC 8656);
//! - [`gather`]: a sans-IO gatherer for one session (STUN probes and TURN
//!   clients, and the relayed data path);
//! - this module: the ICE server URLs flock hands out (RFC 7064/7065).
//!
//! Invariant: nothing here does IO or names a `str0m` type; the str0m
//! driver resolves names, owns the socket and feeds the gatherer.

pub mod gather;
pub mod stun;
pub mod turn;

use std::fmt;

/// The default STUN/TURN port (RFC 8489 §9).
pub const DEFAULT_PORT: u16 = 3478;

/// One usable ICE server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceUrl {
    /// `stun:host[:port]`
    Stun { host: String, port: u16 },
    /// `turn:host[:port][?transport=udp]` (UDP to the server).
    Turn { host: String, port: u16 },
}

/// Why a URL is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not a stun: or turn: URL")]
    Scheme(String),
    #[error("{0:?} is not supported (only UDP to the TURN server: no turns:, no transport=tcp)")]
    Unsupported(String),
    #[error("{url:?} is malformed: {reason}")]
    Malformed { url: String, reason: &'static str },
}

impl fmt::Display for IceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, host, port) = match self {
            IceUrl::Stun { host, port } => ("stun", host, port),
            IceUrl::Turn { host, port } => ("turn", host, port),
        };
        if host.contains(':') {
            write!(f, "{scheme}:[{host}]:{port}")
        } else {
            write!(f, "{scheme}:{host}:{port}")
        }
    }
}

impl IceUrl {
    pub fn parse(url: &str) -> Result<IceUrl, UrlError> {
        let url = url.trim();
        let malformed = |reason| UrlError::Malformed {
            url: url.to_string(),
            reason,
        };
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| UrlError::Scheme(url.to_string()))?;
        let turn = match scheme.to_ascii_lowercase().as_str() {
            "stun" => false,
            "turn" => true,
            "stuns" | "turns" => return Err(UrlError::Unsupported(url.to_string())),
            _ => return Err(UrlError::Scheme(url.to_string())),
        };
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        if let Some(q) = query {
            if !turn {
                return Err(malformed("a stun: URL has no query"));
            }
            match q.to_ascii_lowercase().strip_prefix("transport=") {
                Some("udp") => {}
                Some(_) => return Err(UrlError::Unsupported(url.to_string())),
                None => return Err(malformed("the only query is transport=")),
            }
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| malformed("unclosed IPv6 bracket"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| malformed("junk after ]"))?,
                ),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(malformed("no usable host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| malformed("the port is not a number in 1..=65535"))?,
        };
        let host = host.to_string();
        Ok(if turn {
            IceUrl::Turn { host, port }
        } else {
            IceUrl::Stun { host, port }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_urls_flock_hands_out() {
        let stun = |h: &str, p| IceUrl::Stun {
            host: h.into(),
            port: p,
        };
        let turn = |h: &str, p| IceUrl::Turn {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            IceUrl::parse("stun:stun.example.org"),
            Ok(stun("stun.example.org", 3478))
        );
        assert_eq!(
            IceUrl::parse("stun:10.0.0.1:19302"),
            Ok(stun("10.0.0.1", 19302))
        );
        assert_eq!(
            IceUrl::parse("turn:t.example:3479"),
            Ok(turn("t.example", 3479))
        );
        assert_eq!(
            IceUrl::parse("turn:t.example?transport=udp"),
            Ok(turn("t.example", 3478))
        );
        assert_eq!(IceUrl::parse("TURN:[::1]:5000"), Ok(turn("::1", 5000)));
        assert_eq!(
            IceUrl::parse("stun:[2001:db8::1]"),
            Ok(stun("2001:db8::1", 3478))
        );
        assert_eq!(turn("::1", 5).to_string(), "turn:[::1]:5");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for url in ["turns:t.example:5349", "turn:t.example?transport=tcp"] {
            assert!(
                matches!(IceUrl::parse(url), Err(UrlError::Unsupported(_))),
                "{url}"
            );
        }
        for url in ["http://x", "x", ""] {
            assert!(
                matches!(IceUrl::parse(url), Err(UrlError::Scheme(_))),
                "{url}"
            );
        }
        for url in [
            "stun:",
            "stun:h:0",
            "stun:h:99999",
            "stun:h:x",
            "stun:[::1",
            "stun:[::1]x",
            "turn:h?foo=bar",
            "stun:h?transport=udp",
            "turn:user@h",
        ] {
            assert!(
                matches!(IceUrl::parse(url), Err(UrlError::Malformed { .. })),
                "{url}"
            );
        }
    }
}
