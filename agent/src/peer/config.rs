//! `[peer]` in the daemon's config: where session sockets bind and which
//! apps the tunnel reaches.
//!
//! ```toml
//! [peer]
//! bind = "192.168.1.20"          # host candidate (one address for now)
//! [peer.apps]
//! notes = "127.0.0.1:8080"       # TCP upstream
//! photos = "unix:/run/photos.sock"
//! ```
//!
//! Invariant: a parsed [`PeerConfig`] is valid (see [`PeerConfig::validate`]):
//! a concrete bind address, app names usable in channel labels, upstreams
//! that are a socket address or an absolute Unix socket path.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::str0m_engine::{Str0mConfig, Str0mEngine, MAX_SCTP_SEND_BUFFER};
use super::tunnel::{TunnelConfig, Upstream};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeerConfig {
    /// Local address of the sessions' UDP sockets, offered as the host
    /// candidate. Default `127.0.0.1` (reachable only from the device
    /// itself); set the LAN address. All interfaces, srflx and relay
    /// candidates come with ICE gathering.
    pub bind: IpAddr,
    /// App name → upstream (`HOST:PORT`, `tcp:HOST:PORT` or `unix:/PATH`).
    pub apps: BTreeMap<String, UpstreamSpec>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            apps: BTreeMap::new(),
        }
    }
}

impl PeerConfig {
    /// What the types cannot check; the message starts with the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.bind.is_unspecified() {
            return Err(format!(
                "peer.bind ({}) must be one concrete address: it is the host candidate",
                self.bind
            ));
        }
        for name in self.apps.keys() {
            if !app_name_ok(name) {
                return Err(format!(
                    "peer.apps: app name {name:?} must be 1-63 characters of a-z, 0-9 and -"
                ));
            }
        }
        Ok(())
    }

    pub fn engine(&self) -> Str0mEngine {
        Str0mEngine::new(Str0mConfig {
            bind: self.bind,
            sctp_send_buffer: MAX_SCTP_SEND_BUFFER,
            ..Str0mConfig::default()
        })
    }

    pub fn tunnel(&self, device: &str) -> Arc<TunnelConfig> {
        Arc::new(TunnelConfig {
            device: device.to_string(),
            apps: self
                .apps
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        })
    }
}

fn app_name_ok(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An [`Upstream`] as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UpstreamSpec(pub Upstream);

impl FromStr for UpstreamSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "upstream {s:?}: a Unix socket path must be absolute"
                ));
            }
            return Ok(UpstreamSpec(Upstream::Unix(PathBuf::from(path))));
        }
        let addr = s.strip_prefix("tcp:").unwrap_or(s);
        addr.parse::<SocketAddr>()
            .map(|a| UpstreamSpec(Upstream::Tcp(a)))
            .map_err(|_| {
                format!(
                    "upstream {s:?} is not HOST:PORT (an IP address), tcp:HOST:PORT or unix:/PATH"
                )
            })
    }
}

impl TryFrom<String> for UpstreamSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<UpstreamSpec> for String {
    fn from(u: UpstreamSpec) -> String {
        u.to_string()
    }
}

impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Upstream::Tcp(a) => write!(f, "{a}"),
            Upstream::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apps_and_round_trips() {
        let text = r#"
bind = "192.168.1.20"
[apps]
notes = "127.0.0.1:8080"
web = "tcp:[::1]:80"
photos = "unix:/run/photos.sock"
"#;
        let c: PeerConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.bind, "192.168.1.20".parse::<IpAddr>().unwrap());
        assert_eq!(
            c.apps["photos"].0,
            Upstream::Unix("/run/photos.sock".into())
        );
        assert_eq!(c.apps["web"].0, Upstream::Tcp("[::1]:80".parse().unwrap()));
        // Serialized forms read back the same (the daemon's Config is Serialize).
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"unix:/run/photos.sock\""), "{json}");
        let again: PeerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(again, c);
        let tunnel = c.tunnel("box");
        assert_eq!(tunnel.apps.len(), 3);
    }

    #[test]
    fn rejects_bad_values_with_the_key() {
        for (text, want) in [
            ("[apps]\nx = \"localhost:80\"", "not HOST:PORT"),
            ("[apps]\nx = \"unix:run/x.sock\"", "must be absolute"),
        ] {
            let e = toml::from_str::<PeerConfig>(text).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let mut c = PeerConfig {
            bind: "0.0.0.0".parse().unwrap(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("peer.bind"));
        c.bind = "10.0.0.1".parse().unwrap();
        c.apps.insert(
            "Bad Name".into(),
            UpstreamSpec(Upstream::Tcp("127.0.0.1:1".parse().unwrap())),
        );
        assert!(c.validate().unwrap_err().starts_with("peer.apps"));
    }
}
