//! Messages of the simulated board socket (ARCHITECTURE.md, "Simulated board
//! socket"): JSON lines, one object per line, at most [`MAX_LINE`] bytes.
//!
//! Shared by the server (in the agent) and clients (`intrustctl board`, HIL
//! rigs), so both sides agree on the format by construction.

use crate::{Button, Edge, LedPattern, LedRole};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version announced in `hello`.
pub const PROTOCOL: u32 = 1;

/// Longest line a client may send, newline excluded.
pub const MAX_LINE: usize = 4096;

/// Client → board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SimIn {
    /// `{"op":"press","button":"pair"}`
    Press { button: Button },
    /// `{"op":"release","button":"reset"}`
    Release { button: Button },
}

/// Board → client. `*_us` are CLOCK_MONOTONIC microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SimOut {
    /// First line on every connection: the board and its current LED patterns.
    Hello {
        protocol: u32,
        board: String,
        /// Buttons this socket can press.
        buttons: Vec<Button>,
        leds: BTreeMap<LedRole, LedPattern>,
        now_us: u64,
    },
    /// An LED got a new pattern.
    Led {
        led: LedRole,
        pattern: LedPattern,
        at_us: u64,
    },
    /// A debounced edge was handed to the agent (`at_us` = when).
    Button {
        button: Button,
        edge: Edge,
        at_us: u64,
    },
    /// The client's last line was rejected; the connection closes after this.
    Error { message: String },
}

impl SimOut {
    /// The message as one JSON line, newline included.
    pub fn to_line(&self) -> String {
        // Serializing these plain types cannot fail; fall back to an error line anyway.
        let mut s = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","message":"cannot encode message: {e}"}}"#)
        });
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_match_the_architecture_document() {
        assert_eq!(
            serde_json::to_string(&SimIn::Press {
                button: Button::Pair
            })
            .unwrap(),
            r#"{"op":"press","button":"pair"}"#
        );
        assert_eq!(
            serde_json::from_str::<SimIn>(r#"{"op":"release","button":"reset"}"#).unwrap(),
            SimIn::Release {
                button: Button::Reset
            }
        );
        let hello = SimOut::Hello {
            protocol: PROTOCOL,
            board: "sim".into(),
            buttons: vec![Button::Pair, Button::Reset],
            leds: [
                (LedRole::Status, LedPattern::On),
                (LedRole::Link, LedPattern::Off),
            ]
            .into_iter()
            .collect(),
            now_us: 5,
        };
        assert_eq!(
            hello.to_line(),
            concat!(
                r#"{"type":"hello","protocol":1,"board":"sim","buttons":["pair","reset"],"#,
                r#""leds":{"status":{"kind":"on"},"link":{"kind":"off"}},"now_us":5}"#,
                "\n"
            )
        );
        let led = SimOut::Led {
            led: LedRole::Status,
            pattern: LedPattern::blink_hz(1),
            at_us: 7,
        };
        assert_eq!(
            led.to_line(),
            "{\"type\":\"led\",\"led\":\"status\",\"pattern\":{\"kind\":\"blink\",\"on_ms\":500,\"off_ms\":500},\"at_us\":7}\n"
        );
        let b = SimOut::Button {
            button: Button::Pair,
            edge: Edge::Press,
            at_us: 9,
        };
        assert_eq!(
            b.to_line(),
            "{\"type\":\"button\",\"button\":\"pair\",\"edge\":\"press\",\"at_us\":9}\n"
        );
        for m in [
            hello,
            led,
            b,
            SimOut::Error {
                message: "x".into(),
            },
        ] {
            assert_eq!(serde_json::from_str::<SimOut>(&m.to_line()).unwrap(), m);
        }
    }

    #[test]
    fn malformed_input_is_rejected() {
        for bad in [
            r#"{"op":"push","button":"pair"}"#,
            r#"{"op":"press","button":"power"}"#,
            r#"{"op":"press"}"#,
            r#"{"op":"press","button":"pair","extra":1}"#,
            r#"["press"]"#,
            "press pair",
        ] {
            assert!(serde_json::from_str::<SimIn>(bad).is_err(), "{bad}");
        }
    }
}
