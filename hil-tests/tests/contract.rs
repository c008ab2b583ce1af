//! The harness reads the agent's sockets with its own types (written from
//! ARCHITECTURE.md); these tests check that they agree with the agent's and
//! the board's own types, and that the config the rig writes is one the
//! agent accepts. A failure here means one side drifted from the contract.

use intrust_agent::config::Config;
use intrust_agent::control;
use intrust_board::sim::{SimIn, SimOut};
use intrust_board::{Button, Edge, LedPattern, LedRole};
use intrust_hil::daemon::{sim_config, DutPaths};
use intrust_hil::rig::DutSettings;
use intrust_hil::wire::{
    ControlRequest, ControlResponse, PairingAction, SimEvent, SimOp, SimOpKind,
};
use std::path::Path;
use std::time::Duration;

#[test]
fn sim_socket_messages_agree_with_board_support() {
    for (op, button) in [
        (SimOpKind::Press, Button::Pair),
        (SimOpKind::Release, Button::Reset),
    ] {
        let line = serde_json::to_string(&SimOp { op, button }).unwrap();
        let theirs: SimIn = serde_json::from_str(&line).unwrap();
        let expected = match op {
            SimOpKind::Press => SimIn::Press { button },
            SimOpKind::Release => SimIn::Release { button },
        };
        assert_eq!(theirs, expected, "{line}");
    }
    let hello = SimOut::Hello {
        protocol: 1,
        board: "sim".into(),
        buttons: vec![Button::Pair, Button::Reset],
        leds: [
            (LedRole::Status, LedPattern::blink_hz(1)),
            (LedRole::Link, LedPattern::Off),
        ]
        .into_iter()
        .collect(),
        now_us: 42,
    };
    match serde_json::from_str::<SimEvent>(&hello.to_line()).unwrap() {
        SimEvent::Hello {
            protocol,
            board,
            leds,
            now_us,
            ..
        } => {
            assert_eq!((protocol, board.as_str(), now_us), (1, "sim", 42));
            assert_eq!(leds[&LedRole::Status], LedPattern::blink_hz(1));
        }
        other => panic!("{other:?}"),
    }
    let led = SimOut::Led {
        led: LedRole::Link,
        pattern: LedPattern::On,
        at_us: 7,
    };
    assert_eq!(
        serde_json::from_str::<SimEvent>(&led.to_line()).unwrap(),
        SimEvent::Led {
            led: LedRole::Link,
            pattern: LedPattern::On,
            at_us: 7
        }
    );
    let b = SimOut::Button {
        button: Button::Pair,
        edge: Edge::Release,
        at_us: 9,
    };
    assert_eq!(
        serde_json::from_str::<SimEvent>(&b.to_line()).unwrap(),
        SimEvent::Button {
            button: Button::Pair,
            edge: Edge::Release,
            at_us: 9
        }
    );
    let e = SimOut::Error {
        message: "bad".into(),
    };
    assert_eq!(
        serde_json::from_str::<SimEvent>(&e.to_line()).unwrap(),
        SimEvent::Error {
            message: "bad".into()
        }
    );
}

#[test]
fn control_messages_agree_with_the_agent() {
    for (ours, theirs) in [
        (ControlRequest::Status, control::Request::Status),
        (
            ControlRequest::Pairing {
                action: PairingAction::Close,
            },
            control::Request::Pairing {
                action: control::PairingAction::Close,
            },
        ),
        (
            ControlRequest::Pairing {
                action: PairingAction::Open,
            },
            control::Request::Pairing {
                action: control::PairingAction::Open,
            },
        ),
    ] {
        let line = serde_json::to_string(&ours).unwrap();
        assert_eq!(
            serde_json::from_str::<control::Request>(&line).unwrap(),
            theirs,
            "{line}"
        );
    }
    // The STATUS example of ARCHITECTURE.md, through the agent's type and back to ours.
    let documented = r#"{"state":"unpaired","device_id":"d","board":"sim","versions":{"intrustd":"0.1.0","control_protocol":1},"leds":{"status":{"kind":"blink","on_ms":500,"off_ms":500},"link":{"kind":"off"}},"pairing_window":{"open":false,"closes_in_ms":null},"factory_reset_requests":0,"sim_socket":"/path","uptime_ms":5}"#;
    let status: control::Status = serde_json::from_str(documented).unwrap();
    let line = serde_json::to_string(&control::Response::ok(status)).unwrap();
    let ours = serde_json::from_str::<ControlResponse>(&line)
        .unwrap()
        .into_status()
        .unwrap();
    assert_eq!(
        (ours.state.as_str(), ours.device_id.as_str()),
        ("unpaired", "d")
    );
    assert_eq!(ours.versions["control_protocol"], 1);
    assert_eq!(ours.leds[&LedRole::Status], LedPattern::blink_hz(1));
    let line = serde_json::to_string(&control::Response::error("no such command")).unwrap();
    let err = serde_json::from_str::<ControlResponse>(&line)
        .unwrap()
        .into_status()
        .unwrap_err();
    assert!(err.contains("no such command"), "{err}");
}

#[test]
fn the_rig_config_is_one_the_agent_accepts() {
    let paths = DutPaths::under(Path::new("/tmp/intrust-hil-x"));
    let settings = DutSettings {
        pairing_window: Duration::from_secs(3),
        ..DutSettings::default()
    };
    let text = sim_config(&paths, &settings, "debug");
    let config = Config::parse(&text, &paths.config).unwrap();
    assert_eq!(config.board, "sim");
    assert_eq!(config.state_dir, paths.state_dir);
    assert_eq!(config.control_socket, paths.control_socket);
    assert_eq!(config.sim_socket, paths.sim_socket);
    assert_eq!(config.board_root, paths.board_root);
    assert_eq!(config.pairing.window_secs, 3);
    assert_eq!(config.buttons.reset_arm_ms, 5000);
    assert_eq!(config.log.level.as_str(), "debug");
}
