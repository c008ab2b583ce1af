//! The two sockets a rig talks to, as an outside observer reads them.
//!
//! These types are written from the contract in `ARCHITECTURE.md`, not
//! imported from the agent: if the agent drifts from the documented format,
//! the harness notices. Only what the harness uses is parsed; unknown fields
//! are ignored so that additions to the protocol do not break old rigs.

use intrust_board::{Button, Edge, LedPattern, LedRole};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest line either socket may send (the contract says 4096 bytes; we
/// accept a little more before calling the peer broken).
pub const MAX_LINE: usize = 8192;

/// Client → agent on the simulated board socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SimOp {
    pub op: SimOpKind,
    pub button: Button,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimOpKind {
    Press,
    Release,
}

/// Agent → client on the simulated board socket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SimEvent {
    Hello {
        protocol: u32,
        board: String,
        #[serde(default)]
        buttons: Vec<Button>,
        leds: BTreeMap<LedRole, LedPattern>,
        now_us: u64,
    },
    Led {
        led: LedRole,
        pattern: LedPattern,
        at_us: u64,
    },
    Button {
        button: Button,
        edge: Edge,
        at_us: u64,
    },
    Error {
        message: String,
    },
}

/// Rig → agent on the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    Status,
    Pairing { action: PairingAction },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairingAction {
    Open,
    Close,
}

/// Agent → rig on the control socket: `{"ok":true,"result":…}` or
/// `{"ok":false,"error":"…"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ControlResponse {
    pub ok: bool,
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    #[serde(default)]
    pub error: Option<String>,
}

/// STATUS as documented in `ARCHITECTURE.md`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Status {
    pub state: String,
    pub device_id: String,
    pub board: String,
    pub versions: BTreeMap<String, serde_json::Value>,
    pub leds: BTreeMap<LedRole, LedPattern>,
    pub pairing_window: PairingWindow,
    pub factory_reset_requests: u64,
    #[serde(default)]
    pub sim_socket: Option<String>,
    pub uptime_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PairingWindow {
    pub open: bool,
    #[serde(default)]
    pub closes_in_ms: Option<u64>,
}

impl ControlResponse {
    /// The `result` of a successful response parsed as [`Status`], or an
    /// error naming what the agent said or what was malformed.
    pub fn into_status(self) -> Result<Status, String> {
        if !self.ok {
            return Err(format!(
                "intrustd refused the request: {}",
                self.error.as_deref().unwrap_or("(no error message)")
            ));
        }
        let result = self.result.ok_or("response has ok:true but no result")?;
        serde_json::from_value(result).map_err(|e| format!("malformed STATUS in response: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_ops_serialize_as_documented() {
        let op = SimOp {
            op: SimOpKind::Press,
            button: Button::Pair,
        };
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            r#"{"op":"press","button":"pair"}"#
        );
        let op = SimOp {
            op: SimOpKind::Release,
            button: Button::Reset,
        };
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            r#"{"op":"release","button":"reset"}"#
        );
    }

    #[test]
    fn sim_events_parse_as_documented() {
        let hello = r#"{"type":"hello","protocol":1,"board":"sim","buttons":["pair","reset"],"leds":{"status":{"kind":"blink","on_ms":500,"off_ms":500},"link":{"kind":"off"}},"now_us":12}"#;
        match serde_json::from_str::<SimEvent>(hello).unwrap() {
            SimEvent::Hello {
                protocol,
                leds,
                now_us,
                ..
            } => {
                assert_eq!((protocol, now_us), (1, 12));
                assert_eq!(leds[&LedRole::Link], LedPattern::Off);
            }
            other => panic!("{other:?}"),
        }
        let led = r#"{"type":"led","led":"status","pattern":{"kind":"on"},"at_us":5}"#;
        assert_eq!(
            serde_json::from_str::<SimEvent>(led).unwrap(),
            SimEvent::Led {
                led: LedRole::Status,
                pattern: LedPattern::On,
                at_us: 5
            }
        );
        let b = r#"{"type":"button","button":"reset","edge":"release","at_us":7}"#;
        assert_eq!(
            serde_json::from_str::<SimEvent>(b).unwrap(),
            SimEvent::Button {
                button: Button::Reset,
                edge: Edge::Release,
                at_us: 7
            }
        );
        assert!(serde_json::from_str::<SimEvent>(r#"{"type":"led","led":"status"}"#).is_err());
    }

    #[test]
    fn control_requests_and_status_follow_the_contract() {
        assert_eq!(
            serde_json::to_string(&ControlRequest::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlRequest::Pairing {
                action: PairingAction::Close
            })
            .unwrap(),
            r#"{"cmd":"pairing","action":"close"}"#
        );
        let line = r#"{"ok":true,"result":{"state":"unpaired","device_id":"abc","board":"sim","versions":{"intrustd":"0.1.0","control_protocol":1},"leds":{"status":{"kind":"off"},"link":{"kind":"off"}},"pairing_window":{"open":false,"closes_in_ms":null},"factory_reset_requests":0,"sim_socket":"/x","uptime_ms":3}}"#;
        let st = serde_json::from_str::<ControlResponse>(line)
            .unwrap()
            .into_status()
            .unwrap();
        assert_eq!(st.device_id, "abc");
        assert!(!st.pairing_window.open);
        let err = serde_json::from_str::<ControlResponse>(r#"{"ok":false,"error":"nope"}"#)
            .unwrap()
            .into_status()
            .unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
