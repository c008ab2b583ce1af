//! Deterministic tests of the core: no sockets, no sleeps, a counting RNG.

use std::net::{IpAddr, Ipv4Addr};

use flock_proto::identity::DeviceKey;
use proptest::prelude::*;

use super::*;

/// What the shell would do with one output: send a frame or close.
type Out = (ConnId, Result<Frame, String>);

struct CountingRng(u8);

impl RandomSource for CountingRng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

struct H {
    f: Flock,
    now: Instant,
    next_conn: ConnId,
    saved: Vec<Vec<u8>>,
    events: Vec<Event>,
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

fn name(s: &str) -> DeviceName {
    DeviceName::new(s).unwrap()
}

impl H {
    fn new() -> Self {
        Self::with(CoreConfig {
            limits: Limits::default(),
            stun_urls: vec!["stun:stun.test:3478".into()],
            turn: Some(TurnConfig {
                urls: vec!["turn:turn.test:3478".into()],
                secret: b"s3cret".to_vec(),
                ttl: Duration::from_secs(600),
            }),
        })
    }

    fn with(config: CoreConfig) -> Self {
        let now = Instant::now();
        Self {
            f: Flock::new(
                config,
                Registry::default(),
                Box::new(CountingRng(0)),
                now,
                1_700_000_000,
            ),
            now,
            next_conn: 1,
            saved: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Drains outputs: sends and closes; registry saves and logs are kept.
    fn drain(&mut self) -> Vec<Out> {
        let mut v = Vec::new();
        while let Some(o) = self.f.poll_output() {
            match o {
                Output::Send { conn, frame } => v.push((conn, Ok(frame))),
                Output::Close { conn, reason } => v.push((conn, Err(reason))),
                Output::SaveRegistry(b) => self.saved.push(b),
                Output::Log(e) => self.events.push(e),
            }
        }
        v
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.f.timeout(self.now);
    }

    fn open(&mut self, kind: Kind, peer: IpAddr) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.f.open(id, kind, peer, self.now);
        id
    }

    fn device_frames(&mut self, conn: ConnId) -> Vec<FlockToDevice> {
        let all = self.drain();
        all.into_iter()
            .filter(|(c, _)| *c == conn)
            .filter_map(|(_, f)| match f {
                Ok(Frame::Binary(b)) => Some(device::decode(&b).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn send_device(&mut self, conn: ConnId, m: &DeviceToFlock) {
        let b = device::encode(m).unwrap();
        self.f.frame(conn, Frame::Binary(b), self.now);
    }

    fn send_browser(&mut self, conn: ConnId, m: &BrowserToFlock) {
        let t = browser::encode(m).unwrap();
        self.f.frame(conn, Frame::Text(t), self.now);
    }

    /// Opens a device connection and registers `n` with `key`.
    fn register(&mut self, n: &str, key: &DeviceKey, peer: IpAddr) -> (ConnId, FlockToDevice) {
        let c = self.open(Kind::Device, peer);
        let nonce = match self.device_frames(c).as_slice() {
            [FlockToDevice::Challenge { nonce }] => *nonce,
            other => panic!("expected a challenge, got {other:?}"),
        };
        let sig = key.sign_challenge(&nonce, &name(n)).unwrap();
        self.send_device(
            c,
            &DeviceToFlock::Hello {
                name: name(n),
                public_key: key.public_key(),
                signature: sig,
            },
        );
        let mut frames = self.device_frames(c);
        (c, frames.remove(0))
    }

    fn browser_connect(&mut self, n: &str, peer: IpAddr) -> (ConnId, Vec<Out>) {
        let b = self.open(Kind::Browser, peer);
        self.send_browser(b, &BrowserToFlock::Connect { device: name(n) });
        (b, self.drain())
    }
}

fn closed(out: &[Out], conn: ConnId) -> bool {
    out.iter().any(|(c, r)| *c == conn && r.is_err())
}

fn text(out: &[Out], conn: ConnId) -> Vec<FlockToBrowser> {
    out.iter()
        .filter(|(c, _)| *c == conn)
        .filter_map(|(_, f)| match f {
            Ok(Frame::Text(t)) => Some(browser::decode(t).unwrap()),
            _ => None,
        })
        .collect()
}

fn binary(out: &[Out], conn: ConnId) -> Vec<FlockToDevice> {
    out.iter()
        .filter(|(c, _)| *c == conn)
        .filter_map(|(_, f)| match f {
            Ok(Frame::Binary(b)) => Some(device::decode(b).unwrap()),
            _ => None,
        })
        .collect()
}

#[test]
fn registration_binds_the_first_key_and_saves_first() {
    let mut h = H::new();
    let key = DeviceKey::generate().unwrap();
    let (_, reply) = h.register("box-1", &key, ip(1));
    let FlockToDevice::Registered { ice_servers } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(ice_servers.len(), 2);
    assert_eq!(ice_servers[0].username, None);
    let user = ice_servers[1].username.as_deref().unwrap();
    assert!(user.starts_with("1700000600:"), "{user}");
    assert_eq!(h.saved.len(), 1);
    assert!(
        Registry::from_bytes(&h.saved[0])
            .unwrap()
            .check(&name("box-1"), &key.public_key())
            == Binding::Same
    );

    // Squatting with another key is refused; the first device is untouched.
    let thief = DeviceKey::generate().unwrap();
    let c = h.open(Kind::Device, ip(2));
    let nonce = match h.device_frames(c)[0] {
        FlockToDevice::Challenge { nonce } => nonce,
        ref o => panic!("{o:?}"),
    };
    h.send_device(
        c,
        &DeviceToFlock::Hello {
            name: name("box-1"),
            public_key: thief.public_key(),
            signature: thief.sign_challenge(&nonce, &name("box-1")).unwrap(),
        },
    );
    let out = h.drain();
    assert!(matches!(binary(&out, c)[0], FlockToDevice::Rejected { .. }));
    assert!(closed(&out, c));
    assert_eq!(h.saved.len(), 1);
    assert!(h.f.is_online(&name("box-1")));
}

#[test]
fn a_signature_for_another_nonce_is_refused() {
    let mut h = H::new();
    let key = DeviceKey::generate().unwrap();
    let c = h.open(Kind::Device, ip(1));
    h.drain();
    h.send_device(
        c,
        &DeviceToFlock::Hello {
            name: name("box-1"),
            public_key: key.public_key(),
            signature: key.sign_challenge(&[0; 32], &name("box-1")).unwrap(),
        },
    );
    let out = h.drain();
    assert!(matches!(binary(&out, c)[0], FlockToDevice::Rejected { .. }));
    assert!(closed(&out, c));
    assert!(h.saved.is_empty());
}

#[test]
fn hello_must_come_within_ten_seconds() {
    let mut h = H::new();
    let d = h.open(Kind::Device, ip(1));
    let b = h.open(Kind::Browser, ip(1));
    h.drain();
    assert_eq!(h.f.poll_timeout(), Some(h.now + Duration::from_secs(10)));
    h.advance(Duration::from_millis(9_999));
    assert!(h.drain().is_empty());
    h.advance(Duration::from_millis(1));
    let out = h.drain();
    assert!(closed(&out, d) && closed(&out, b));
    assert_eq!(h.f.connection_count(), 0);
}

#[test]
fn signalling_is_relayed_between_one_browser_and_its_device() {
    let mut h = H::new();
    let key = DeviceKey::generate().unwrap();
    let (d, _) = h.register("box-1", &key, ip(1));
    let key2 = DeviceKey::generate().unwrap();
    let (d2, _) = h.register("box-2", &key2, ip(2));
    let (b, out) = h.browser_connect("box-1", ip(9));
    let msgs = text(&out, b);
    let [FlockToBrowser::Session {
        session,
        ice_servers,
    }] = msgs.as_slice()
    else {
        panic!("{out:?}")
    };
    let session = *session;
    assert_eq!(ice_servers.len(), 2);
    h.send_browser(
        b,
        &BrowserToFlock::Offer {
            sdp: "offer".into(),
        },
    );
    let out = h.drain();
    assert_eq!(
        binary(&out, d),
        [FlockToDevice::SessionOffer {
            session,
            sdp: "offer".into()
        }]
    );
    assert!(binary(&out, d2).is_empty());
    h.send_browser(
        b,
        &BrowserToFlock::Candidate {
            candidate: Some("cand-b".into()),
            sdp_mid: Some("0".into()),
        },
    );
    let out = h.drain();
    assert_eq!(
        binary(&out, d),
        [FlockToDevice::Candidate {
            session,
            candidate: Some("cand-b".into()),
            sdp_mid: Some("0".into())
        }]
    );
    // Another device cannot speak into this session.
    h.send_device(
        d2,
        &DeviceToFlock::SessionAnswer {
            session,
            sdp: "evil".into(),
        },
    );
    assert!(text(&h.drain(), b).is_empty());
    h.send_device(
        d,
        &DeviceToFlock::SessionAnswer {
            session,
            sdp: "answer".into(),
        },
    );
    h.send_device(
        d,
        &DeviceToFlock::Candidate {
            session,
            candidate: None,
            sdp_mid: None,
        },
    );
    let out = h.drain();
    assert_eq!(
        text(&out, b),
        [
            FlockToBrowser::Answer {
                sdp: "answer".into()
            },
            FlockToBrowser::Candidate {
                candidate: None,
                sdp_mid: None
            }
        ]
    );
    // A second answer is ignored, not relayed.
    h.send_device(
        d,
        &DeviceToFlock::SessionAnswer {
            session,
            sdp: "again".into(),
        },
    );
    assert!(text(&h.drain(), b).is_empty());
    // The browser leaves: the device hears of it.
    h.f.closed(b, h.now);
    let out = h.drain();
    assert!(matches!(
        binary(&out, d).as_slice(),
        [FlockToDevice::SessionClosed { session: s, .. }] if *s == session
    ));
}

#[test]
fn device_disconnect_closes_its_sessions_only() {
    let mut h = H::new();
    let (d1, _) = h.register("box-1", &DeviceKey::generate().unwrap(), ip(1));
    let (_d2, _) = h.register("box-2", &DeviceKey::generate().unwrap(), ip(2));
    let (b1, _) = h.browser_connect("box-1", ip(9));
    let (b2, _) = h.browser_connect("box-2", ip(9));
    h.f.closed(d1, h.now);
    let out = h.drain();
    assert!(matches!(
        text(&out, b1).as_slice(),
        [FlockToBrowser::Closed { .. }]
    ));
    assert!(closed(&out, b1));
    assert!(!out.iter().any(|(c, _)| *c == b2));
    assert!(!h.f.is_online(&name("box-1")));
    assert!(h.f.is_online(&name("box-2")));
}

#[test]
fn unknown_device_is_an_error() {
    let mut h = H::new();
    let (b, out) = h.browser_connect("nobody", ip(9));
    assert!(matches!(
        text(&out, b).as_slice(),
        [FlockToBrowser::Error { .. }]
    ));
    assert!(closed(&out, b));
}

#[test]
fn same_name_and_key_replaces_the_old_connection() {
    let mut h = H::new();
    let key = DeviceKey::generate().unwrap();
    let (old, _) = h.register("box-1", &key, ip(1));
    let (b, _) = h.browser_connect("box-1", ip(9));
    let c = h.open(Kind::Device, ip(1));
    let nonce = match h.device_frames(c)[0] {
        FlockToDevice::Challenge { nonce } => nonce,
        ref o => panic!("{o:?}"),
    };
    h.send_device(
        c,
        &DeviceToFlock::Hello {
            name: name("box-1"),
            public_key: key.public_key(),
            signature: key.sign_challenge(&nonce, &name("box-1")).unwrap(),
        },
    );
    let out = h.drain();
    assert!(closed(&out, old));
    assert!(closed(&out, b), "sessions over the old link end");
    assert!(matches!(
        binary(&out, c)[0],
        FlockToDevice::Registered { .. }
    ));
    assert_eq!(h.saved.len(), 1, "no new binding");
    // The old connection's late close does not take the new one down.
    h.f.closed(old, h.now);
    h.drain();
    assert!(h.f.is_online(&name("box-1")));
    let (b2, out) = h.browser_connect("box-1", ip(9));
    assert!(matches!(text(&out, b2)[0], FlockToBrowser::Session { .. }));
}

#[test]
fn browser_cannot_switch_device_or_skip_steps() {
    let mut h = H::new();
    h.register("box-1", &DeviceKey::generate().unwrap(), ip(1));
    h.register("box-2", &DeviceKey::generate().unwrap(), ip(1));
    let (b, _) = h.browser_connect("box-1", ip(9));
    h.send_browser(
        b,
        &BrowserToFlock::Connect {
            device: name("box-2"),
        },
    );
    let out = h.drain();
    assert!(matches!(
        text(&out, b).as_slice(),
        [FlockToBrowser::Error { .. }]
    ));
    assert!(closed(&out, b));

    let b = h.open(Kind::Browser, ip(9));
    h.send_browser(b, &BrowserToFlock::Offer { sdp: "x".into() });
    assert!(closed(&h.drain(), b));

    let (b, _) = h.browser_connect("box-1", ip(9));
    h.send_browser(
        b,
        &BrowserToFlock::Candidate {
            candidate: None,
            sdp_mid: None,
        },
    );
    assert!(closed(&h.drain(), b));
}

#[test]
fn garbage_cuts_only_that_connection() {
    let mut h = H::new();
    let (d, _) = h.register("box-1", &DeviceKey::generate().unwrap(), ip(1));
    let (b, _) = h.browser_connect("box-1", ip(9));
    let (b_bad, _) = h.browser_connect("box-1", ip(9));
    h.f.frame(b_bad, Frame::Text("{\"type\":\"nope\"}".into()), h.now);
    let out = h.drain();
    assert!(closed(&out, b_bad));
    assert!(!closed(&out, b) && !closed(&out, d));

    let (d_bad, _) = h.register("box-3", &DeviceKey::generate().unwrap(), ip(3));
    h.f.frame(d_bad, Frame::Binary(vec![1, 0xff, 0xff]), h.now);
    h.f.frame(
        d,
        Frame::Binary(device::encode(&DeviceToFlock::Ping).unwrap()),
        h.now,
    );
    let out = h.drain();
    assert!(closed(&out, d_bad));
    assert_eq!(binary(&out, d), [FlockToDevice::Pong]);
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::CutOff { conn, .. } if *conn == d_bad)));

    // Wrong frame kinds and oversize frames.
    let (d3, _) = h.register("box-4", &DeviceKey::generate().unwrap(), ip(4));
    h.f.frame(d3, Frame::Text("hi".into()), h.now);
    assert!(closed(&h.drain(), d3));
    let (b3, _) = h.browser_connect("box-1", ip(9));
    h.f.frame(b3, Frame::Text("x".repeat(MAX_MESSAGE + 1)), h.now);
    assert!(closed(&h.drain(), b3));
    assert!(h.f.is_online(&name("box-1")));
}

#[test]
fn flood_is_cut_and_connection_rate_is_per_source() {
    let mut h = H::new();
    let (d, _) = h.register("box-1", &DeviceKey::generate().unwrap(), ip(1));
    let ping = device::encode(&DeviceToFlock::Ping).unwrap();
    let burst = h.f.limits().messages_per_second * 2;
    // The hello took one token.
    for _ in 0..burst - 1 {
        h.f.frame(d, Frame::Binary(ping.clone()), h.now);
    }
    assert!(!closed(&h.drain(), d));
    h.f.frame(d, Frame::Binary(ping.clone()), h.now);
    assert!(closed(&h.drain(), d));

    // Connections per minute, per source.
    let per_min = h.f.limits().connections_per_minute;
    let mut refused = 0;
    for _ in 0..per_min + 5 {
        let id = h.next_conn;
        h.next_conn += 1;
        if !h.f.open(id, Kind::Browser, ip(50), h.now) {
            refused += 1;
        }
        h.f.closed(id, h.now);
    }
    assert!(refused >= 5, "refused {refused}");
    let id = h.next_conn;
    assert!(
        h.f.open(id, Kind::Browser, ip(51), h.now),
        "another source is fine"
    );
    h.drain();
}

#[test]
fn sessions_per_device_are_bounded() {
    let mut h = H::new();
    h.register("box-1", &DeviceKey::generate().unwrap(), ip(1));
    let max = h.f.limits().sessions_per_device;
    for _ in 0..max {
        let (b, out) = h.browser_connect("box-1", ip(9));
        assert!(!closed(&out, b));
    }
    let (b, out) = h.browser_connect("box-1", ip(9));
    assert!(matches!(
        text(&out, b).as_slice(),
        [FlockToBrowser::Error { .. }]
    ));
}

#[test]
fn pings_idle_cut_and_credential_refresh() {
    let mut h = H::new();
    let (d, _) = h.register("box-1", &DeviceKey::generate().unwrap(), ip(1));
    h.advance(Duration::from_secs(15));
    assert_eq!(h.device_frames(d), [FlockToDevice::Ping]);
    h.send_device(d, &DeviceToFlock::Pong);
    h.drain();
    // TTL 600 s: fresh credentials at half of it.
    h.now += Duration::from_secs(284);
    h.send_device(d, &DeviceToFlock::Pong);
    h.advance(Duration::from_secs(1));
    let frames = h.device_frames(d);
    assert!(
        frames
            .iter()
            .any(|m| matches!(m, FlockToDevice::Registered { .. })),
        "{frames:?}"
    );
    // Silence for three intervals: cut.
    h.advance(Duration::from_secs(43));
    assert!(!closed(&h.drain(), d));
    h.advance(Duration::from_secs(1));
    assert!(closed(&h.drain(), d));
    assert!(!h.f.is_online(&name("box-1")));
}

#[test]
fn registrations_per_source_are_bounded() {
    let mut h = H::with(CoreConfig {
        limits: Limits {
            registrations_per_hour: 2,
            ..Limits::default()
        },
        ..CoreConfig::default()
    });
    for n in ["aaa", "bbb"] {
        let (_, r) = h.register(n, &DeviceKey::generate().unwrap(), ip(1));
        assert!(matches!(r, FlockToDevice::Registered { .. }));
    }
    let (_, r) = h.register("ccc", &DeviceKey::generate().unwrap(), ip(1));
    assert!(matches!(r, FlockToDevice::Rejected { .. }));
    let (_, r) = h.register("ccc", &DeviceKey::generate().unwrap(), ip(2));
    assert!(matches!(r, FlockToDevice::Registered { .. }));
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Frame::Binary),
        ".{0,64}".prop_map(Frame::Text),
        Just(Frame::Text(r#"{"type":"connect","device":"box-1"}"#.into())),
        Just(Frame::Text(r#"{"type":"offer","sdp":"x"}"#.into())),
        Just(Frame::Text(
            r#"{"type":"candidate","candidate":null}"#.into()
        )),
        (0u64..4).prop_map(|s| Frame::Binary(
            device::encode(&DeviceToFlock::SessionAnswer {
                session: s,
                sdp: "a".into()
            })
            .unwrap()
        )),
        (0u64..4).prop_map(|s| Frame::Binary(
            device::encode(&DeviceToFlock::SessionClosed {
                session: s,
                reason: "r".into()
            })
            .unwrap()
        )),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Open(bool, u8),
    Frame(u8, Frame),
    Close(u8),
    Wait(u16),
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (any::<bool>(), 0u8..4).prop_map(|(d, p)| Step::Open(d, p)),
        4 => (0u8..8, arb_frame()).prop_map(|(c, f)| Step::Frame(c, f)),
        1 => (0u8..8).prop_map(Step::Close),
        1 => (0u16..5000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Random peers never panic the core, and an honest device and
    /// browser on their own connections still complete their exchange.
    #[test]
    fn random_frames_leave_honest_peers_alone(steps in proptest::collection::vec(arb_step(), 0..60)) {
        let mut h = H::new();
        let key = DeviceKey::generate().unwrap();
        let (d, _) = h.register("box-1", &key, ip(200));
        let (b, _) = h.browser_connect("box-1", ip(201));
        let honest = [d, b];
        let mut opened: Vec<ConnId> = Vec::new();
        for step in steps {
            match step {
                Step::Open(dev, p) => {
                    let kind = if dev { Kind::Device } else { Kind::Browser };
                    opened.push(h.open(kind, ip(p)));
                }
                Step::Frame(i, f) => {
                    if let Some(&c) = opened.get(i as usize) {
                        h.f.frame(c, f, h.now);
                    }
                }
                Step::Close(i) => {
                    if let Some(&c) = opened.get(i as usize) {
                        h.f.closed(c, h.now);
                    }
                }
                // Stays under the honest peers' timeouts.
                Step::Wait(ms) => {
                    h.now += Duration::from_millis(u64::from(ms) / 20);
                    h.f.timeout(h.now);
                }
            }
            let out = h.drain();
            for c in honest {
                prop_assert!(!closed(&out, c), "honest conn {} closed: {:?}", c, out);
            }
        }
        h.send_browser(b, &BrowserToFlock::Offer { sdp: "o".into() });
        let out = h.drain();
        let offer = binary(&out, d);
        let [FlockToDevice::SessionOffer { session, .. }] = offer.as_slice() else {
            return Err(TestCaseError::fail(format!("no offer: {out:?}")));
        };
        h.send_device(d, &DeviceToFlock::SessionAnswer { session: *session, sdp: "a".into() });
        let out = h.drain();
        prop_assert_eq!(text(&out, b), [FlockToBrowser::Answer { sdp: "a".into() }]);
    }
}
