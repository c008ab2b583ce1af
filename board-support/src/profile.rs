//! Board profiles: which hardware plays which LED and button role.
//!
//! A profile is a TOML file (`board-support/profiles/*.toml`, embedded in the
//! crate, or any path). Parsing is strict (`deny_unknown_fields`) and is
//! followed by validation; a [`Profile`] value is always complete and
//! consistent (a `status` LED, `pair` and `reset` buttons, no duplicate role).
//! Errors name the file, line and column.

use crate::{BoardError, Button, LedRole};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// The embedded profiles, by name.
const BUILTIN: &[(&str, &str)] = &[
    ("sim", include_str!("../profiles/sim.toml")),
    ("qemu-virt", include_str!("../profiles/qemu-virt.toml")),
    ("odroid-hc2", include_str!("../profiles/odroid-hc2.toml")),
    ("rpi4", include_str!("../profiles/rpi4.toml")),
];

/// Debounce periods we accept, in ms. Below 1 ms the software debouncer
/// does nothing useful; above 250 ms a short press would be swallowed.
pub const DEBOUNCE_MS_RANGE: std::ops::RangeInclusive<u32> = 1..=250;

/// A validated board profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The board's name (`[board] name`), e.g. `odroid-hc2`.
    pub name: String,
    pub description: String,
    /// Where the line/LED/key names were taken from (device trees, schematics).
    pub sources: Vec<String>,
    pub leds: Vec<LedConfig>,
    pub buttons: Vec<ButtonConfig>,
    /// Where the profile came from: `builtin:<name>` or the file path.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedConfig {
    pub role: LedRole,
    pub backend: LedBackend,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedBackend {
    /// `/sys/class/leds/<name>/`.
    Sysfs { name: String },
    /// A GPIO line driven as an output. `chip` is a name (`gpiochip0`) or label.
    Gpio {
        chip: String,
        line: u32,
        active_low: bool,
    },
    /// The simulated board socket.
    Sim,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonConfig {
    pub role: Button,
    pub backend: ButtonBackend,
    pub debounce: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonBackend {
    /// A GPIO input line with both-edge detection.
    Gpio {
        chip: String,
        line: u32,
        active_low: bool,
        bias: Bias,
    },
    /// A key of an input device (e.g. `gpio-keys`), found by device name.
    Evdev {
        device_name: String,
        key: String,
        code: u16,
    },
    /// The simulated board socket.
    Sim,
}

/// Bias of a GPIO input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    /// Leave whatever the firmware/device tree set up.
    #[default]
    AsIs,
    PullUp,
    PullDown,
    Disabled,
}

/// What went wrong with a profile, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    /// `builtin:<name>` or the file path.
    pub file: String,
    /// 1-based line and column, when the error has a place in the file.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ProfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => {
                write!(f, "board profile {}:{l}:{c}: {}", self.file, self.message)
            }
            (Some(l), None) => write!(f, "board profile {}:{l}: {}", self.file, self.message),
            _ => write!(f, "board profile {}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ProfileError {}

impl From<ProfileError> for BoardError {
    fn from(e: ProfileError) -> BoardError {
        BoardError::Profile(e.to_string())
    }
}

impl Profile {
    /// Names of the profiles built into the crate.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// A profile built into the crate, by name (`sim`, `qemu-virt`, `odroid-hc2`, `rpi4`).
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Profile::parse(text, &format!("builtin:{n}")),
            None => Err(ProfileError {
                file: format!("builtin:{name}"),
                line: None,
                column: None,
                message: format!(
                    "no built-in board profile {name:?} (built in: {})",
                    Profile::builtin_names().join(", ")
                ),
            }),
        }
    }

    /// A profile from a TOML file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
            file: path.display().to_string(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
        })?;
        Profile::parse(&text, &path.display().to_string())
    }

    /// `name_or_path` is a built-in name, or a path if it contains `/` or ends in `.toml`.
    pub fn resolve(name_or_path: &str) -> Result<Profile, ProfileError> {
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            Profile::load(Path::new(name_or_path))
        } else {
            Profile::builtin(name_or_path)
        }
    }

    /// Parses and validates profile text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let err_at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = match span {
                Some(s) => {
                    let (l, c) = line_col(text, s.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ProfileError {
                file: origin.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawProfile =
            toml::from_str(text).map_err(|e| err_at(e.span(), e.message().trim().to_string()))?;
        validate(raw, origin).map_err(|(span, msg)| err_at(span, msg))
    }

    /// Whether any LED or button uses the simulated board (then a sim socket is needed).
    pub fn uses_sim(&self) -> bool {
        self.leds.iter().any(|l| l.backend == LedBackend::Sim)
            || self.buttons.iter().any(|b| b.backend == ButtonBackend::Sim)
    }

    pub fn led(&self, role: LedRole) -> Option<&LedConfig> {
        self.leds.iter().find(|l| l.role == role)
    }

    pub fn button(&self, role: Button) -> Option<&ButtonConfig> {
        self.buttons.iter().find(|b| b.role == role)
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    board: RawBoard,
    #[serde(default)]
    led: Vec<Spanned<RawLed>>,
    #[serde(default)]
    button: Vec<Spanned<RawButton>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    sources: Vec<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum LedKind {
    Sysfs,
    Gpio,
    Sim,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ButtonKind {
    Gpio,
    Evdev,
    Sim,
}

/// Flat on purpose: serde cannot combine `deny_unknown_fields` with a
/// flattened backend enum, and checking per backend here gives better errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLed {
    role: Spanned<LedRole>,
    backend: LedKind,
    name: Option<Spanned<String>>,
    chip: Option<Spanned<String>>,
    line: Option<Spanned<u32>>,
    active_low: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawButton {
    role: Spanned<Button>,
    backend: ButtonKind,
    chip: Option<Spanned<String>>,
    line: Option<Spanned<u32>>,
    active_low: Option<Spanned<bool>>,
    bias: Option<Spanned<Bias>>,
    device_name: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    debounce_ms: Option<Spanned<u32>>,
}

type Invalid = (Option<std::ops::Range<usize>>, String);

fn required<T: Clone>(
    v: &Option<Spanned<T>>,
    table: &Spanned<impl Sized>,
    what: &str,
) -> Result<T, Invalid> {
    match v {
        Some(s) => Ok(s.get_ref().clone()),
        None => Err((Some(table.span()), format!("{what} is missing"))),
    }
}

/// Rejects a field that has no meaning for the chosen backend.
fn unused<T>(v: &Option<Spanned<T>>, field: &str, ctx: &str) -> Result<(), Invalid> {
    match v {
        Some(s) => Err((Some(s.span()), format!("`{field}` does not apply to {ctx}"))),
        None => Ok(()),
    }
}

fn non_empty(
    s: String,
    span: Option<std::ops::Range<usize>>,
    field: &str,
) -> Result<String, Invalid> {
    if s.trim().is_empty() {
        Err((span, format!("`{field}` must not be empty")))
    } else {
        Ok(s)
    }
}

fn validate(raw: RawProfile, origin: &str) -> Result<Profile, Invalid> {
    let name = raw.board.name.get_ref().clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err((
            Some(raw.board.name.span()),
            format!("board name {name:?} must be non-empty letters, digits, '-' or '_'"),
        ));
    }

    let mut leds: Vec<LedConfig> = Vec::new();
    for l in &raw.led {
        let r = l.get_ref();
        let role = *r.role.get_ref();
        if leds.iter().any(|x| x.role == role) {
            return Err((
                Some(r.role.span()),
                format!("LED role `{role}` is given twice"),
            ));
        }
        let backend = match r.backend {
            LedKind::Sysfs => {
                let ctx = format!("sysfs LED `{role}`");
                unused(&r.chip, "chip", &ctx)?;
                unused(&r.line, "line", &ctx)?;
                unused(&r.active_low, "active_low", &ctx)?;
                let n = required(&r.name, l, &format!("`name` of {ctx}"))?;
                let span = r.name.as_ref().map(|s| s.span());
                if n.contains('/') || n == "." || n == ".." {
                    return Err((
                        span,
                        format!("sysfs LED name {n:?} must be a single directory name"),
                    ));
                }
                LedBackend::Sysfs {
                    name: non_empty(n, span, "name")?,
                }
            }
            LedKind::Gpio => {
                let ctx = format!("GPIO LED `{role}`");
                unused(&r.name, "name", &ctx)?;
                let chip = required(&r.chip, l, &format!("`chip` of {ctx}"))?;
                let chip = non_empty(chip, r.chip.as_ref().map(|s| s.span()), "chip")?;
                let line = required(&r.line, l, &format!("`line` of {ctx}"))?;
                let active_low = r.active_low.as_ref().map(|s| *s.get_ref()).unwrap_or(false);
                LedBackend::Gpio {
                    chip,
                    line,
                    active_low,
                }
            }
            LedKind::Sim => {
                let ctx = format!("sim LED `{role}`");
                unused(&r.name, "name", &ctx)?;
                unused(&r.chip, "chip", &ctx)?;
                unused(&r.line, "line", &ctx)?;
                unused(&r.active_low, "active_low", &ctx)?;
                LedBackend::Sim
            }
        };
        leds.push(LedConfig { role, backend });
    }
    if !leds.iter().any(|l| l.role == LedRole::Status) {
        return Err((
            None,
            "a `status` LED is required ([[led]] role = \"status\")".into(),
        ));
    }

    let mut buttons: Vec<ButtonConfig> = Vec::new();
    for b in &raw.button {
        let r = b.get_ref();
        let role = *r.role.get_ref();
        if buttons.iter().any(|x| x.role == role) {
            return Err((
                Some(r.role.span()),
                format!("button role `{role}` is given twice"),
            ));
        }
        let debounce_ms = required(
            &r.debounce_ms,
            b,
            &format!("`debounce_ms` of button `{role}`"),
        )?;
        if !DEBOUNCE_MS_RANGE.contains(&debounce_ms) {
            return Err((
                r.debounce_ms.as_ref().map(|s| s.span()),
                format!(
                    "debounce_ms = {debounce_ms} is out of range {}..={}",
                    DEBOUNCE_MS_RANGE.start(),
                    DEBOUNCE_MS_RANGE.end()
                ),
            ));
        }
        let backend = match r.backend {
            ButtonKind::Gpio => {
                let ctx = format!("GPIO button `{role}`");
                unused(&r.device_name, "device_name", &ctx)?;
                unused(&r.key, "key", &ctx)?;
                let chip = required(&r.chip, b, &format!("`chip` of {ctx}"))?;
                let chip = non_empty(chip, r.chip.as_ref().map(|s| s.span()), "chip")?;
                let line = required(&r.line, b, &format!("`line` of {ctx}"))?;
                let active_low = r.active_low.as_ref().map(|s| *s.get_ref()).unwrap_or(false);
                let bias = r.bias.as_ref().map(|s| *s.get_ref()).unwrap_or_default();
                ButtonBackend::Gpio {
                    chip,
                    line,
                    active_low,
                    bias,
                }
            }
            ButtonKind::Evdev => {
                let ctx = format!("evdev button `{role}`");
                unused(&r.chip, "chip", &ctx)?;
                unused(&r.line, "line", &ctx)?;
                unused(&r.active_low, "active_low", &ctx)?;
                unused(&r.bias, "bias", &ctx)?;
                let device_name = required(&r.device_name, b, &format!("`device_name` of {ctx}"))?;
                let device_name = non_empty(
                    device_name,
                    r.device_name.as_ref().map(|s| s.span()),
                    "device_name",
                )?;
                let key = required(&r.key, b, &format!("`key` of {ctx}"))?;
                let code = crate::evdev::key_code(&key)
                    .map_err(|msg| (r.key.as_ref().map(|s| s.span()), msg))?;
                ButtonBackend::Evdev {
                    device_name,
                    key,
                    code,
                }
            }
            ButtonKind::Sim => {
                let ctx = format!("sim button `{role}`");
                unused(&r.chip, "chip", &ctx)?;
                unused(&r.line, "line", &ctx)?;
                unused(&r.active_low, "active_low", &ctx)?;
                unused(&r.bias, "bias", &ctx)?;
                unused(&r.device_name, "device_name", &ctx)?;
                unused(&r.key, "key", &ctx)?;
                ButtonBackend::Sim
            }
        };
        buttons.push(ButtonConfig {
            role,
            backend,
            debounce: Duration::from_millis(debounce_ms.into()),
        });
    }
    for need in Button::ALL {
        if !buttons.iter().any(|b| b.role == need) {
            return Err((
                None,
                format!("a `{need}` button is required ([[button]] role = \"{need}\")"),
            ));
        }
    }
    // Two roles on one GPIO line would fight over the line request.
    let mut lines: Vec<(&str, u32, String)> = Vec::new();
    for (what, chip, line) in leds
        .iter()
        .filter_map(|l| match &l.backend {
            LedBackend::Gpio { chip, line, .. } => Some((format!("LED `{}`", l.role), chip, *line)),
            _ => None,
        })
        .chain(buttons.iter().filter_map(|b| match &b.backend {
            ButtonBackend::Gpio { chip, line, .. } => {
                Some((format!("button `{}`", b.role), chip, *line))
            }
            _ => None,
        }))
    {
        if let Some((_, _, other)) = lines
            .iter()
            .find(|(c, l, _)| *c == chip.as_str() && *l == line)
        {
            return Err((
                None,
                format!("{what} and {other} both use GPIO {chip} line {line}"),
            ));
        }
        lines.push((chip.as_str(), line, what));
    }

    Ok(Profile {
        name,
        description: raw.board.description,
        sources: raw.board.sources,
        leds,
        buttons,
        origin: origin.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_builtin_profiles_parse_and_are_complete() {
        for name in Profile::builtin_names() {
            let p = Profile::builtin(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.name, name);
            assert!(p.led(LedRole::Status).is_some());
            assert!(p.button(Button::Pair).is_some() && p.button(Button::Reset).is_some());
            assert!(
                !p.sources.is_empty(),
                "{name}: cite where the pins come from"
            );
            assert_eq!(p.origin, format!("builtin:{name}"));
        }
        let sim = Profile::builtin("sim").unwrap();
        assert!(sim.uses_sim());
        assert!(sim.leds.iter().all(|l| l.backend == LedBackend::Sim));
        assert_eq!(sim.leds.len(), 2);
        assert!(sim
            .buttons
            .iter()
            .all(|b| b.debounce == Duration::from_millis(10)));
        let rpi = Profile::builtin("rpi4").unwrap();
        assert!(!rpi.uses_sim());
        let qemu = Profile::builtin("qemu-virt").unwrap();
        assert!(matches!(
            &qemu.button(Button::Pair).unwrap().backend,
            ButtonBackend::Evdev { key, code: 116, .. } if key == "KEY_POWER"
        ));
    }

    #[test]
    fn unknown_builtin_lists_the_known_ones() {
        let e = Profile::builtin("nope").unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("odroid-hc2"), "{e}");
    }

    const GOOD: &str = r#"
[board]
name = "t"
[[led]]
role = "status"
backend = "sim"
[[button]]
role = "pair"
backend = "sim"
debounce_ms = 10
[[button]]
role = "reset"
backend = "sim"
debounce_ms = 10
"#;

    fn err(text: &str) -> ProfileError {
        Profile::parse(text, "t.toml").unwrap_err()
    }

    #[test]
    fn minimal_profile_parses() {
        let p = Profile::parse(GOOD, "t.toml").unwrap();
        assert_eq!(p.leds.len(), 1);
        assert!(p.led(LedRole::Link).is_none());
    }

    #[test]
    fn unknown_field_error_names_file_line_and_column() {
        let text = GOOD.replace(
            "debounce_ms = 10\n[[button]]",
            "debounce_ms = 10\ncolour = 1\n[[button]]",
        );
        let e = err(&text);
        assert_eq!(e.file, "t.toml");
        assert_eq!(e.line, Some(11), "{e}");
        assert_eq!(e.column, Some(1), "{e}");
        let s = e.to_string();
        assert!(
            s.starts_with("board profile t.toml:11:1:") && s.contains("colour"),
            "{s}"
        );
    }

    #[test]
    fn syntax_and_type_errors_have_a_place() {
        let e = err("[board]\nname = \n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = err(&GOOD.replace("debounce_ms = 10", "debounce_ms = \"ten\""));
        assert_eq!(e.line, Some(10), "{e}");
        let e = err(&GOOD.replace("role = \"pair\"", "role = \"power\""));
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.message.contains("power"), "{e}");
    }

    #[test]
    fn validation_errors() {
        let cases: Vec<(String, &str, Option<usize>)> = vec![
            (GOOD.replace("role = \"status\"", "role = \"link\""), "`status` LED is required", None),
            (GOOD.replace("role = \"reset\"", "role = \"pair\""), "given twice", Some(12)),
            (
                GOOD.replace("role = \"reset\"\nbackend = \"sim\"\ndebounce_ms = 10\n", "role = \"reset\"\nbackend = \"sim\"\ndebounce_ms = 0\n"),
                "out of range",
                Some(14),
            ),
            (GOOD.replace("debounce_ms = 10\n[[button]]", "debounce_ms = 9999\n[[button]]"), "out of range", Some(10)),
            (GOOD.replace("backend = \"sim\"\n[[button]]", "backend = \"gpio\"\n[[button]]"), "`chip` of GPIO LED", Some(4)),
            (
                GOOD.replace("role = \"status\"\nbackend = \"sim\"", "role = \"status\"\nbackend = \"sim\"\nline = 3"),
                "`line` does not apply",
                Some(7),
            ),
            (
                GOOD.replace(
                    "role = \"pair\"\nbackend = \"sim\"",
                    "role = \"pair\"\nbackend = \"evdev\"\ndevice_name = \"gpio-keys\"\nkey = \"KEY_NOPE\"",
                ),
                "KEY_NOPE",
                Some(11),
            ),
            (GOOD.replace("name = \"t\"", "name = \"a b\""), "board name", Some(3)),
            (
                GOOD.replace("role = \"status\"\nbackend = \"sim\"", "role = \"status\"\nbackend = \"sysfs\"\nname = \"../x\""),
                "single directory",
                Some(7),
            ),
        ];
        for (text, want, line) in cases {
            let e = err(&text);
            assert!(e.message.contains(want), "want {want:?}, got {e}");
            assert_eq!(e.line, line, "{e}");
        }
    }

    #[test]
    fn two_roles_on_one_gpio_line_are_rejected() {
        let text = GOOD
            .replace(
                "role = \"status\"\nbackend = \"sim\"",
                "role = \"status\"\nbackend = \"gpio\"\nchip = \"c\"\nline = 4",
            )
            .replace(
                "role = \"pair\"\nbackend = \"sim\"",
                "role = \"pair\"\nbackend = \"gpio\"\nchip = \"c\"\nline = 4",
            );
        let e = err(&text);
        assert!(e.message.contains("both use GPIO c line 4"), "{e}");
    }

    #[test]
    fn load_from_a_path_and_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, GOOD).unwrap();
        let p = Profile::resolve(path.to_str().unwrap()).unwrap();
        assert_eq!(p.origin, path.display().to_string());
        let e = Profile::load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(
            e.to_string().contains("missing.toml") && e.message.contains("cannot read"),
            "{e}"
        );
        assert_eq!(Profile::resolve("sim").unwrap().name, "sim");
    }
}
