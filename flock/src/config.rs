//! `flock.toml`: where flock listens, its TLS key, registry, portal files,
//! STUN/TURN servers and limits. Invariant: a config that parses is
//! complete (every limit has a value, TURN has a secret); a malformed one
//! is reported as `file:line:column: what`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::{CoreConfig, Limits, TurnConfig};

/// The parsed configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// e.g. `"0.0.0.0:443"`; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// The name → key registry (JSON, written atomically).
    pub registry: PathBuf,
    /// The portal's built files; `/` serves `index.html` from here.
    #[serde(default = "default_web_root")]
    pub web_root: PathBuf,
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub stun_urls: Vec<String>,
    pub turn: Option<Turn>,
    #[serde(default)]
    pub limits: LimitsFile,
}

fn default_web_root() -> PathBuf {
    PathBuf::from("flock/web/dist")
}

/// PEM files for TLS (without them flock speaks plain HTTP/WebSocket,
/// for tests and for running behind a TLS proxy).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// coturn with `use-auth-secret` and `static-auth-secret = SECRET`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub urls: Vec<String>,
    pub secret: String,
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
}

fn default_ttl() -> u64 {
    3600
}

/// `[limits]`; every field is optional (defaults in [`Limits`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub hello_timeout_secs: Option<u64>,
    pub connections_per_minute: Option<u32>,
    pub connections_per_source: Option<u32>,
    pub max_connections: Option<usize>,
    pub messages_per_second: Option<u32>,
    pub sessions_per_device: Option<usize>,
    pub registrations_per_hour: Option<u32>,
    pub max_registry: Option<usize>,
    pub send_queue: Option<usize>,
    pub ping_interval_secs: Option<u64>,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses `text`; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            ConfigError::Syntax {
                path: path.into(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let invalid = |message: &str| ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        };
        if let Some(t) = &config.turn {
            if t.secret.is_empty() {
                return Err(invalid("turn.secret must not be empty"));
            }
            if t.urls.is_empty() {
                return Err(invalid("turn.urls must name at least one TURN server"));
            }
            if t.ttl_secs < 60 {
                return Err(invalid("turn.ttl_secs must be at least 60"));
            }
        }
        let l = config.core().limits;
        if l.ping_interval.is_zero() || l.hello_timeout.is_zero() {
            return Err(invalid(
                "limits.ping_interval_secs and hello_timeout_secs must be positive",
            ));
        }
        if l.send_queue == 0 {
            return Err(invalid("limits.send_queue must be positive"));
        }
        Ok(config)
    }

    /// The part the sans-IO core needs.
    pub fn core(&self) -> CoreConfig {
        let d = Limits::default();
        let f = &self.limits;
        CoreConfig {
            limits: Limits {
                hello_timeout: f
                    .hello_timeout_secs
                    .map_or(d.hello_timeout, Duration::from_secs),
                connections_per_minute: f
                    .connections_per_minute
                    .unwrap_or(d.connections_per_minute),
                connections_per_source: f
                    .connections_per_source
                    .unwrap_or(d.connections_per_source),
                max_connections: f.max_connections.unwrap_or(d.max_connections),
                messages_per_second: f.messages_per_second.unwrap_or(d.messages_per_second),
                sessions_per_device: f.sessions_per_device.unwrap_or(d.sessions_per_device),
                registrations_per_hour: f
                    .registrations_per_hour
                    .unwrap_or(d.registrations_per_hour),
                max_registry: f.max_registry.unwrap_or(d.max_registry),
                send_queue: f.send_queue.unwrap_or(d.send_queue),
                ping_interval: f
                    .ping_interval_secs
                    .map_or(d.ping_interval, Duration::from_secs),
            },
            stun_urls: self.stun_urls.clone(),
            turn: self.turn.as_ref().map(|t| TurnConfig {
                urls: t.urls.clone(),
                secret: t.secret.as_bytes().to_vec(),
                ttl: Duration::from_secs(t.ttl_secs),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config() {
        let c = Config::parse(
            r#"
listen = "127.0.0.1:8443"
registry = "/var/lib/flock/registry.json"
web_root = "/srv/portal"
stun_urls = ["stun:turn.example:3478"]

[tls]
cert = "cert.pem"
key = "key.pem"

[turn]
urls = ["turn:turn.example:3478?transport=udp"]
secret = "s3cret"
ttl_secs = 600

[limits]
messages_per_second = 5
"#,
            "flock.toml",
        )
        .unwrap();
        let core = c.core();
        assert_eq!(core.limits.messages_per_second, 5);
        assert_eq!(core.limits.hello_timeout, Duration::from_secs(10));
        assert_eq!(core.turn.unwrap().ttl, Duration::from_secs(600));
        assert!(c.tls.is_some());
    }

    #[test]
    fn minimal_config_has_defaults() {
        let c = Config::parse("listen = \"0.0.0.0:80\"\nregistry = \"r.json\"\n", "f").unwrap();
        assert_eq!(c.web_root, PathBuf::from("flock/web/dist"));
        assert!(c.turn.is_none() && c.tls.is_none());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = Config::parse(
            "listen = \"0.0.0.0:80\"\nregistry = \"r.json\"\n[limits]\nbogus = 1\n",
            "flock.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("flock.toml:4:1: "), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = Config::parse("listen = \"nope\"\nregistry = \"r\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml:1:10: "), "{e}");
        let e = Config::parse("listen = \n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml:1:"), "{e}");
        let e = Config::parse(
            "listen = \"0.0.0.0:1\"\nregistry = \"r\"\n[turn]\nurls = []\nsecret = \"x\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("turn.urls"), "{e}");
    }
}
