//! The daemon's configuration file (`intrustd --config FILE`, TOML).
//!
//! Every field has a documented default, unknown keys are rejected, and a bad
//! file fails with its path, line and column. A parsed [`Config`] is valid:
//! thresholds are ordered and non-zero (see [`Config::validate`]).

use crate::peer::config::PeerConfig;
use flock_proto::DeviceName;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration. See `agent/intrustd.example.toml` for a
/// commented example with every default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the agent keeps its files (device id, pairing state).
    /// Default: `/var/lib/intrustd`.
    pub state_dir: PathBuf,
    /// Board profile: a built-in name (`"sim"`, …) or a path to a profile
    /// file. Default: `"sim"` (real appliances set their board's profile).
    pub board: String,
    /// Root under which the board's sysfs and `/dev` paths are looked up;
    /// tests point it at a temporary tree. Default: `/`.
    pub board_root: PathBuf,
    /// The local control socket (`intrustctl`, test rigs).
    /// Default: `/run/intrustd/control.sock`.
    pub control_socket: PathBuf,
    /// The simulated board's socket, served when the profile has sim
    /// backends. Default: `/run/intrustd/sim.sock`.
    pub sim_socket: PathBuf,
    /// The recovery config (A/B slots, bootloader environment, data area):
    /// with it, RESET really resets and `intrustctl update` installs
    /// updates; without it (the default) both only warn or are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_config: Option<PathBuf>,
    pub pairing: PairingConfig,
    pub buttons: ButtonsConfig,
    pub log: LogConfig,
    /// `[rendezvous]`: the flock service this appliance registers with.
    /// Without it the agent runs without the peer connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendezvous: Option<RendezvousSection>,
    /// `[peer]`: the sessions' bind address and the apps the tunnel reaches.
    pub peer: PeerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/intrustd"),
            board: "sim".into(),
            board_root: PathBuf::from("/"),
            control_socket: PathBuf::from("/run/intrustd/control.sock"),
            sim_socket: PathBuf::from("/run/intrustd/sim.sock"),
            recovery_config: None,
            pairing: PairingConfig::default(),
            buttons: ButtonsConfig::default(),
            log: LogConfig::default(),
            rendezvous: None,
            peer: PeerConfig::default(),
        }
    }
}

/// `[rendezvous]`: where flock is and the name this appliance registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RendezvousSection {
    /// `ws://HOST:PORT/device` or `wss://HOST/device`.
    pub flock_url: String,
    /// The appliance's name at flock (what people type in the portal):
    /// 3-63 characters of a-z, 0-9 and `-`, not starting or ending with `-`.
    pub name: String,
    /// PEM file of the CAs trusted for `wss://` (required for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl RendezvousSection {
    /// The name as flock's type; [`Config::validate`] has checked it.
    pub fn device_name(&self) -> Result<DeviceName, String> {
        DeviceName::new(self.name.as_str())
            .map_err(|e| format!("rendezvous.name {:?} is not a device name: {e}", self.name))
    }

    fn validate(&self) -> Result<(), String> {
        self.device_name()?;
        let url = self.flock_url.trim();
        if url.starts_with("wss://") {
            if self.ca_file.is_none() {
                return Err(format!(
                    "rendezvous.flock_url {url:?} is wss://, which needs rendezvous.ca_file (PEM) to trust"
                ));
            }
        } else if !url.starts_with("ws://") {
            return Err(format!(
                "rendezvous.flock_url {url:?} must start with ws:// or wss://"
            ));
        }
        if self
            .ca_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err("rendezvous.ca_file must not be empty (leave it out for none)".into());
        }
        Ok(())
    }
}

/// `[pairing]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairingConfig {
    /// How long the pairing window stays open after a PAIR press. Default: 300.
    pub window_secs: u64,
}

impl Default for PairingConfig {
    fn default() -> Self {
        PairingConfig { window_secs: 300 }
    }
}

impl PairingConfig {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }
}

/// `[buttons]`: gesture thresholds, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ButtonsConfig {
    /// Shortest PAIR press that counts (shorter is a bounce or a brush). Default: 50.
    pub pair_min_ms: u64,
    /// Longest PAIR press that counts (longer is a stuck or leaned-on button). Default: 3000.
    pub pair_max_ms: u64,
    /// How long RESET must be held to arm a factory reset. Default: 5000.
    pub reset_arm_ms: u64,
    /// Holding RESET this long cancels an armed reset. Default: 30000.
    pub reset_cancel_ms: u64,
}

impl Default for ButtonsConfig {
    fn default() -> Self {
        ButtonsConfig {
            pair_min_ms: 50,
            pair_max_ms: 3000,
            reset_arm_ms: 5000,
            reset_cancel_ms: 30000,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` overrides it.
    /// Default: `info`.
    pub level: LogLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A config file that could not be read, parsed or validated. The message
/// names the file and, for syntax and type errors, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value that parses but makes no sense; `line` is where the
    /// offending key is set, if it is set in the file at all.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => line_col(text, span.start),
                None => (1, 1),
            };
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            line: key_line(text, &message),
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Checks what the types cannot: non-zero and ordered thresholds,
    /// non-empty names.
    pub fn validate(&self) -> Result<(), String> {
        let b = &self.buttons;
        if self.board.trim().is_empty() {
            return Err("board must name a profile or a profile file".into());
        }
        if self.pairing.window_secs == 0 {
            return Err("pairing.window_secs must be at least 1".into());
        }
        if b.pair_min_ms >= b.pair_max_ms {
            return Err(format!(
                "buttons.pair_min_ms ({}) must be less than buttons.pair_max_ms ({})",
                b.pair_min_ms, b.pair_max_ms
            ));
        }
        if b.reset_arm_ms == 0 {
            return Err("buttons.reset_arm_ms must be at least 1".into());
        }
        if b.reset_arm_ms >= b.reset_cancel_ms {
            return Err(format!(
                "buttons.reset_arm_ms ({}) must be less than buttons.reset_cancel_ms ({})",
                b.reset_arm_ms, b.reset_cancel_ms
            ));
        }
        if self
            .recovery_config
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err("recovery_config must not be empty (leave it out for none)".into());
        }
        for (name, p) in [
            ("state_dir", &self.state_dir),
            ("control_socket", &self.control_socket),
            ("sim_socket", &self.sim_socket),
        ] {
            if p.as_os_str().is_empty() {
                return Err(format!("{name} must not be empty"));
            }
        }
        if let Some(r) = &self.rendezvous {
            r.validate()?;
        }
        self.peer.validate()
    }
}

/// The line where the key a validation message starts with (`table.key` or
/// `key`) is set, found by a plain scan of the (already parsed) text.
fn key_line(text: &str, message: &str) -> Option<usize> {
    let field = message.split_whitespace().next()?.trim_end_matches(':');
    let (table, key) = match field.split_once('.') {
        Some((t, k)) => (t, k),
        None => ("", field),
    };
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = h.trim().to_owned();
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if (current == table && k == key) || (current.is_empty() && k == field) {
            return Some(i + 1);
        }
    }
    None
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/intrustd.toml"))
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.state_dir, Path::new("/var/lib/intrustd"));
        assert_eq!(c.control_socket, Path::new("/run/intrustd/control.sock"));
        assert_eq!(c.sim_socket, Path::new("/run/intrustd/sim.sock"));
        assert_eq!(c.pairing.window_secs, 300);
        assert_eq!(
            (
                c.buttons.pair_min_ms,
                c.buttons.pair_max_ms,
                c.buttons.reset_arm_ms,
                c.buttons.reset_cancel_ms
            ),
            (50, 3000, 5000, 30000)
        );
        assert_eq!(c.log.level, LogLevel::Info);
        assert_eq!(c.recovery_config, None);
    }

    #[test]
    fn recovery_config_is_a_path() {
        let c = parse("recovery_config = \"/etc/intrust/recovery.toml\"\n").unwrap();
        assert_eq!(
            c.recovery_config.as_deref(),
            Some(Path::new("/etc/intrust/recovery.toml"))
        );
        let err = parse("board = \"sim\"\nrecovery_config = \"\"\n").unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { line: Some(2), .. }),
            "{err}"
        );
    }

    #[test]
    fn example_file_parses_and_matches_defaults() {
        let text = include_str!("../intrustd.example.toml");
        let c = parse(text).unwrap();
        // The example documents the defaults; if they drift, one of the two is wrong.
        assert_eq!(c, Config::default());
    }

    #[test]
    fn partial_tables_keep_other_defaults() {
        let c = parse("board = \"/etc/board.toml\"\n[buttons]\npair_max_ms = 2000\n").unwrap();
        assert_eq!(c.board, "/etc/board.toml");
        assert_eq!(c.buttons.pair_max_ms, 2000);
        assert_eq!(c.buttons.pair_min_ms, 50);
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let err = parse("state_dir = \"/x\"\n\nboard = \n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/intrustd.toml:3:"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let err = parse("board = \"sim\"\n[pairing]\nwindow_sec = 10\n").unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                ConfigError::Parse {
                    line: 3,
                    column: 1,
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.contains("window_sec"), "{text}");
    }

    #[test]
    fn wrong_type_and_bad_level_are_rejected_with_line() {
        let err = parse("[buttons]\n\npair_min_ms = \"fast\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 3, .. }), "{err}");
        let err = parse("[log]\nlevel = \"loud\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("loud"), "{err}");
    }

    #[test]
    fn unordered_thresholds_are_rejected() {
        let err = parse("[buttons]\npair_min_ms = 3000\npair_max_ms = 50\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("buttons.pair_min_ms"), "{err}");
        let err = parse("[buttons]\nreset_arm_ms = 40000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("reset_arm_ms"), "{err}");
        let err = parse("[pairing]\nwindow_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("window_secs"), "{err}");
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let err = Config::load(Path::new("/nonexistent/intrustd.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/intrustd.toml"), "{err}");
    }

    #[test]
    fn rendezvous_and_peer_sections() {
        let c = parse(
            "[rendezvous]\nflock_url = \"ws://127.0.0.1:8470/device\"\nname = \"box-1\"\n\
             [peer]\nbind = \"10.0.0.2\"\n[peer.apps]\nhello = \"127.0.0.1:8080\"\n",
        )
        .unwrap();
        let r = c.rendezvous.as_ref().unwrap();
        assert_eq!(r.device_name().unwrap().as_str(), "box-1");
        assert_eq!(r.ca_file, None);
        assert_eq!(c.peer.bind.to_string(), "10.0.0.2");
        assert_eq!(c.peer.apps["hello"].to_string(), "127.0.0.1:8080");
        // Absent: no peer connection.
        assert_eq!(parse("").unwrap().rendezvous, None);
    }

    #[test]
    fn bad_rendezvous_values_name_the_key_and_line() {
        let err = parse(
            "board = \"sim\"\n[rendezvous]\nflock_url = \"ws://f/device\"\nname = \"Box_1\"\n",
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { line: Some(4), .. }),
            "{err}"
        );
        assert!(err.to_string().contains("rendezvous.name"), "{err}");
        let err =
            parse("[rendezvous]\nflock_url = \"http://f/device\"\nname = \"box\"\n").unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { line: Some(2), .. }),
            "{err}"
        );
        assert!(err.to_string().contains("ws://"), "{err}");
        let err = parse("[rendezvous]\nflock_url = \"wss://f/device\"\nname = \"box\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rendezvous.ca_file"), "{err}");
        // A missing key is a parse error naming it.
        let err = parse("[rendezvous]\nname = \"box\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("flock_url"), "{err}");
        let err = parse("[peer]\nbind = \"0.0.0.0\"\n").unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { line: Some(2), .. }),
            "{err}"
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
