//! Deterministic tests of the link core: no sockets, no sleeps.

use std::sync::Arc;
use std::time::Duration;

use flock_proto::device::{self, DeviceToFlock, FlockToDevice};
use flock_proto::identity::{verify_challenge, DeviceKey};
use flock_proto::{DeviceName, IceServer};
use intrust_board::Mono;

use super::backoff::Jitter;
use super::link::{Link, Output, Timing};
use super::{LinkStatus, SignallingCommand, SignallingEvent};

fn name() -> DeviceName {
    DeviceName::new("box-1").unwrap()
}

fn ms(n: u64) -> Mono {
    Mono::from_millis(n)
}

fn drain(l: &mut Link) -> Vec<Output> {
    std::iter::from_fn(|| l.poll_output()).collect()
}

fn sent(outs: &[Output]) -> Vec<DeviceToFlock> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit(f) => Some(device::decode(f).unwrap()),
            _ => None,
        })
        .collect()
}

fn frame(m: &FlockToDevice) -> Vec<u8> {
    device::encode(m).unwrap()
}

fn turn(user: &str) -> Vec<IceServer> {
    vec![IceServer {
        urls: vec!["turn:127.0.0.1:3478".into()],
        username: Some(user.into()),
        credential: Some("c2VjcmV0".into()),
    }]
}

/// A link that is connected and has answered a challenge; returns the key.
fn connected(now: Mono) -> (Link, Arc<DeviceKey>) {
    let key = Arc::new(DeviceKey::generate().unwrap());
    let mut l = Link::new(name(), key.clone(), Timing::default(), Jitter::seeded(3));
    l.start(now);
    assert_eq!(drain(&mut l), vec![Output::Connect]);
    assert_eq!(l.status(), &LinkStatus::Connecting);
    l.handle_connected(now);
    (l, key)
}

fn registered(now: Mono) -> Link {
    let (mut l, _) = connected(now);
    l.handle_frame(now, &frame(&FlockToDevice::Challenge { nonce: [5; 32] }));
    l.handle_frame(
        now,
        &frame(&FlockToDevice::Registered {
            ice_servers: turn("1:a"),
        }),
    );
    drain(&mut l);
    assert!(l.status().is_registered());
    l
}

#[test]
fn answers_the_challenge_with_a_valid_signature() {
    let (mut l, key) = connected(ms(0));
    let nonce = [42u8; 32];
    l.handle_frame(ms(1), &frame(&FlockToDevice::Challenge { nonce }));
    let msgs = sent(&drain(&mut l));
    let [DeviceToFlock::Hello {
        name: n,
        public_key,
        signature,
    }] = msgs.as_slice()
    else {
        panic!("{msgs:?}")
    };
    assert_eq!(n, &name());
    assert_eq!(public_key, &key.public_key());
    verify_challenge(public_key, &nonce, n, signature).unwrap();
    assert!(verify_challenge(public_key, &[0; 32], n, signature).is_err());

    l.handle_frame(
        ms(2),
        &frame(&FlockToDevice::Registered {
            ice_servers: turn("1:a"),
        }),
    );
    assert_eq!(
        drain(&mut l),
        vec![Output::Event(SignallingEvent::IceServers(turn("1:a")))]
    );
    assert_eq!(l.status(), &LinkStatus::Registered { name: name() });
    assert_eq!(l.status().describe(ms(2)), "registered as box-1");
}

#[test]
fn a_resent_registered_updates_the_ice_servers() {
    let mut l = registered(ms(0));
    assert_eq!(l.ice_servers(), turn("1:a").as_slice());
    l.handle_frame(
        ms(300_000),
        &frame(&FlockToDevice::Registered {
            ice_servers: turn("2:b"),
        }),
    );
    assert_eq!(
        drain(&mut l),
        vec![Output::Event(SignallingEvent::IceServers(turn("2:b")))]
    );
    assert_eq!(l.ice_servers(), turn("2:b").as_slice());
    assert!(l.status().is_registered());
    // Offers carry the latest list.
    l.handle_frame(
        ms(300_001),
        &frame(&FlockToDevice::SessionOffer {
            session: 9,
            sdp: "v=0".into(),
        }),
    );
    assert_eq!(
        drain(&mut l),
        vec![Output::Event(SignallingEvent::Offer {
            session: 9,
            sdp: "v=0".into(),
            ice_servers: turn("2:b"),
        })]
    );
}

#[test]
fn relays_sessions_both_ways_and_answers_pings() {
    let mut l = registered(ms(0));
    l.handle_frame(ms(1), &frame(&FlockToDevice::Ping));
    assert_eq!(sent(&drain(&mut l)), vec![DeviceToFlock::Pong]);
    l.handle_frame(
        ms(2),
        &frame(&FlockToDevice::Candidate {
            session: 4,
            candidate: None,
            sdp_mid: Some("0".into()),
        }),
    );
    l.handle_frame(
        ms(3),
        &frame(&FlockToDevice::SessionClosed {
            session: 4,
            reason: "gone".into(),
        }),
    );
    assert_eq!(
        drain(&mut l),
        vec![
            Output::Event(SignallingEvent::Candidate {
                session: 4,
                candidate: None,
                sdp_mid: Some("0".into())
            }),
            Output::Event(SignallingEvent::Closed {
                session: 4,
                reason: "gone".into()
            }),
        ]
    );
    for (cmd, msg) in [
        (
            SignallingCommand::Answer {
                session: 4,
                sdp: "a".into(),
            },
            DeviceToFlock::SessionAnswer {
                session: 4,
                sdp: "a".into(),
            },
        ),
        (
            SignallingCommand::Candidate {
                session: 4,
                candidate: Some("candidate:1".into()),
                sdp_mid: None,
            },
            DeviceToFlock::Candidate {
                session: 4,
                candidate: Some("candidate:1".into()),
                sdp_mid: None,
            },
        ),
        (
            SignallingCommand::Close {
                session: 4,
                reason: "bye".into(),
            },
            DeviceToFlock::SessionClosed {
                session: 4,
                reason: "bye".into(),
            },
        ),
    ] {
        l.handle_command(ms(4), cmd);
        assert_eq!(sent(&drain(&mut l)), vec![msg]);
    }
}

#[test]
fn commands_while_not_registered_are_dropped() {
    let (mut l, _) = connected(ms(0));
    l.handle_command(
        ms(1),
        SignallingCommand::Answer {
            session: 1,
            sdp: "x".into(),
        },
    );
    assert!(drain(&mut l).is_empty());
}

#[test]
fn garbage_closes_and_backs_off_then_reconnects() {
    let (mut l, _) = connected(ms(0));
    l.handle_frame(ms(10), b"\x01\xff\xff\xff junk");
    assert_eq!(drain(&mut l), vec![Output::Close]);
    let LinkStatus::Retrying { error, retry_at } = l.status().clone() else {
        panic!("{:?}", l.status())
    };
    assert!(error.contains("undecodable"), "{error}");
    // First transport delay: within [50, 100] ms.
    assert!(retry_at >= ms(60) && retry_at <= ms(110), "{retry_at:?}");
    assert_eq!(l.poll_timeout(), Some(retry_at));
    l.handle_timeout(retry_at - Duration::from_millis(1));
    assert!(drain(&mut l).is_empty());
    l.handle_timeout(retry_at);
    assert_eq!(drain(&mut l), vec![Output::Connect]);
    assert_eq!(l.status(), &LinkStatus::Connecting);
}

#[test]
fn out_of_turn_messages_are_protocol_errors() {
    let (mut l, _) = connected(ms(0));
    l.handle_frame(
        ms(1),
        &frame(&FlockToDevice::SessionOffer {
            session: 1,
            sdp: "x".into(),
        }),
    );
    assert_eq!(drain(&mut l), vec![Output::Close]);
    assert!(
        matches!(l.status(), LinkStatus::Retrying { error, .. } if error.contains("before its challenge"))
    );
    // A text frame on a registered link.
    let mut l = registered(ms(0));
    l.handle_unexpected(ms(1), "a text frame");
    assert_eq!(
        drain(&mut l),
        vec![Output::Close, Output::Event(SignallingEvent::Disconnected)]
    );
}

#[test]
fn rejected_is_visible_and_backs_off_long() {
    let (mut l, _) = connected(ms(0));
    l.handle_frame(ms(1), &frame(&FlockToDevice::Challenge { nonce: [1; 32] }));
    drain(&mut l);
    l.handle_frame(
        ms(2),
        &frame(&FlockToDevice::Rejected {
            reason: "name box-1 is taken".into(),
        }),
    );
    assert_eq!(drain(&mut l), vec![Output::Close]);
    let LinkStatus::Rejected { reason, retry_at } = l.status().clone() else {
        panic!("{:?}", l.status())
    };
    assert_eq!(reason, "name box-1 is taken");
    assert!(
        retry_at >= ms(30_002) && retry_at <= ms(60_002),
        "{retry_at:?}"
    );
    let text = l.status().describe(ms(2));
    assert!(
        text.starts_with("rejected: name box-1 is taken (retrying in "),
        "{text}"
    );
    // flock's close afterwards changes nothing.
    l.handle_disconnected(ms(3), "closed".into());
    assert!(drain(&mut l).is_empty());
    assert_eq!(l.poll_timeout(), Some(retry_at));
    // The retry keeps showing the rejection until a verdict; a refused dial
    // keeps it too.
    l.handle_timeout(retry_at);
    assert_eq!(drain(&mut l), vec![Output::Connect]);
    assert!(matches!(l.status(), LinkStatus::Rejected { .. }));
    l.handle_disconnected(retry_at, "refused".into());
    assert!(matches!(l.status(), LinkStatus::Rejected { .. }));
}

#[test]
fn silence_pings_then_gives_up() {
    let mut l = registered(ms(0));
    let t = Timing::default();
    let ping_at = ms(0) + t.ping_after;
    assert_eq!(l.poll_timeout(), Some(ping_at));
    l.handle_timeout(ping_at);
    assert_eq!(sent(&drain(&mut l)), vec![DeviceToFlock::Ping]);
    let dead_at = ms(0) + t.dead_after;
    assert_eq!(l.poll_timeout(), Some(dead_at));
    l.handle_timeout(dead_at);
    assert_eq!(
        drain(&mut l),
        vec![Output::Close, Output::Event(SignallingEvent::Disconnected)]
    );
    assert!(matches!(l.status(), LinkStatus::Retrying { error, .. } if error.contains("silent")));
}

#[test]
fn a_pong_counts_as_life() {
    let mut l = registered(ms(0));
    let t = Timing::default();
    l.handle_timeout(ms(0) + t.ping_after);
    drain(&mut l);
    let later = ms(0) + t.ping_after + Duration::from_secs(1);
    l.handle_frame(later, &frame(&FlockToDevice::Pong));
    assert_eq!(l.poll_timeout(), Some(later + t.ping_after));
}

#[test]
fn registration_and_connect_deadlines() {
    let (mut l, _) = connected(ms(0));
    let t = Timing::default();
    l.handle_timeout(ms(0) + t.register_timeout);
    assert_eq!(drain(&mut l), vec![Output::Close]);
    let at = l.poll_timeout().unwrap();
    l.handle_timeout(at);
    assert_eq!(drain(&mut l), vec![Output::Connect]);
    l.handle_timeout(at + t.connect_timeout);
    assert_eq!(drain(&mut l), vec![Output::Close]);
    assert!(
        matches!(l.status(), LinkStatus::Retrying { error, .. } if error.contains("timed out"))
    );
}

#[test]
fn failures_grow_the_delay_and_a_stable_registration_resets_it() {
    let key = Arc::new(DeviceKey::generate().unwrap());
    let t = Timing::default();
    let mut l = Link::new(name(), key, t, Jitter::seeded(11));
    let mut now = ms(0);
    l.start(now);
    let mut delays = Vec::new();
    for _ in 0..8 {
        drain(&mut l);
        l.handle_disconnected(now, "refused".into());
        let at = l.poll_timeout().unwrap();
        delays.push(at.saturating_since(now));
        now = at;
        l.handle_timeout(now);
    }
    for (i, d) in delays.iter().enumerate() {
        let ceiling = (t.transport.initial * (1 << i)).min(t.transport.max);
        assert!(*d >= ceiling / 2 && *d <= ceiling, "delay {i}: {d:?}");
    }
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(4)));
    // Registered for longer than `stable_after`, then lost: back to the first delay.
    drain(&mut l);
    l.handle_connected(now);
    l.handle_frame(now, &frame(&FlockToDevice::Challenge { nonce: [2; 32] }));
    l.handle_frame(
        now,
        &frame(&FlockToDevice::Registered {
            ice_servers: vec![],
        }),
    );
    now = now + t.stable_after;
    l.handle_disconnected(now, "reset".into());
    let d = l.poll_timeout().unwrap().saturating_since(now);
    assert!(d <= t.transport.initial, "{d:?}");
}

#[test]
fn frames_after_close_are_ignored() {
    let (mut l, _) = connected(ms(0));
    l.handle_frame(ms(1), b"junk");
    drain(&mut l);
    let before = l.status().clone();
    l.handle_frame(ms(2), b"junk");
    l.handle_frame(ms(2), &frame(&FlockToDevice::Ping));
    assert!(drain(&mut l).is_empty());
    assert_eq!(l.status(), &before);
}
