//! The browser client in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `cargo xtask test`): WebRTC itself on
//! loopback, then the portal served by the real `flock` binary, its name
//! checks, and its signalling reaching a fake device (a Rust client of
//! flock's device protocol). Nothing leaves 127.0.0.1; every wait is bounded.
//! On failure a screenshot lands in `target/browser-shots/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flock_proto::device::{self, DeviceToFlock, FlockToDevice};
use flock_proto::identity::DeviceKey;
use flock_proto::DeviceName;
use futures_util::{SinkExt, StreamExt};
use intrust_hil::browser::flock::{self, Flock};
use intrust_hil::browser::Browser;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const T: Duration = Duration::from_secs(15);

/// The flock binary and the built portal, prepared once per test process.
fn flock_and_portal() -> (PathBuf, PathBuf) {
    static READY: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        let bin = flock::build_flock_for_tests().map_err(|e| format!("{e:#}"))?;
        let dist = flock::portal_dist().map_err(|e| format!("{e:#}"))?;
        Ok((bin, dist))
    });
    match r {
        Ok(v) => v.clone(),
        Err(e) => panic!("cannot serve the portal: {e}"),
    }
}

async fn browser() -> Browser {
    let started = Instant::now();
    let b = Browser::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start Chromium: {e:#}"));
    eprintln!("Chromium started in {:.1?}", started.elapsed());
    b
}

/// Two RTCPeerConnections in one page, exchanging only loopback
/// candidates, echo a message over a data channel; `window.result` says
/// which candidate pair carried it. `start()` runs it (after the test has
/// granted the capture permission that unlocks loopback candidates).
const LOOPBACK_PAGE: &str = r#"<!doctype html><title>webrtc loopback</title><script>
const loopback = (c) => { const a = c.candidate.split(" ")[4]; return a === "127.0.0.1" || a === "::1"; };
window.start = () => (async () => {
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  const gathered = [];
  const trickle = (from, to) => from.addEventListener("icecandidate", (e) => {
    if (!e.candidate || !e.candidate.candidate) return;
    gathered.push(e.candidate.candidate);
    if (loopback(e.candidate)) to.addIceCandidate(e.candidate);
  });
  trickle(a, b); trickle(b, a);
  b.addEventListener("datachannel", (e) => { e.channel.onmessage = (m) => e.channel.send("echo:" + m.data); });
  const ch = a.createDataChannel("probe");
  const opened = new Promise((r) => ch.onopen = r);
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  await opened;
  const echo = new Promise((r) => ch.onmessage = (m) => r(m.data));
  ch.send("ping");
  const reply = await echo;
  const stats = new Map(); (await a.getStats()).forEach((s) => stats.set(s.id, s));
  let pair = null;
  for (const s of stats.values()) if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  const local = pair && stats.get(pair.localCandidateId), remote = pair && stats.get(pair.remoteCandidateId);
  window.result = { reply, gathered,
    local: local && { type: local.candidateType, address: local.address, protocol: local.protocol },
    remote: remote && { type: remote.candidateType, address: remote.address } };
})().catch((e) => { window.result = { error: String(e) }; });
</script>"#;

#[tokio::test]
async fn webrtc_data_channel_works_on_loopback() {
    let started = Instant::now();
    let (bin, _) = flock_and_portal();
    // flock serves the probe page: a secure context on 127.0.0.1, so the
    // capture permission (and with it loopback candidates) can be granted.
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), LOOPBACK_PAGE).unwrap();
    let f = Flock::start(&bin, web.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let b = browser().await;
    let url = f.url();
    let result = b
        .scenario("webrtc-loopback", async |b| {
            b.goto(&url).await?;
            b.allow_all_interfaces().await?;
            b.execute("window.start(); return true", vec![]).await?;
            b.wait_for("the loopback data channel echo", "window.result", T)
                .await
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("loopback WebRTC: {result}");
    assert_eq!(result.get("error"), None, "{result}");
    assert_eq!(result["reply"], "echo:ping");
    assert_eq!(result["local"]["type"], "host", "{result}");
    let loopback = |v: &Value| v == "127.0.0.1" || v == "::1";
    assert!(loopback(&result["local"]["address"]), "{result}");
    assert!(loopback(&result["remote"]["address"]), "{result}");
    b.close().await.unwrap();
    eprintln!(
        "webrtc_data_channel_works_on_loopback took {:.1?}",
        started.elapsed()
    );
}

/// The status line's text once it is not "Connecting…" any more.
const SETTLED_STATUS: &str = "(() => { const s = document.getElementById('status'); \
     return s && s.textContent && !s.textContent.startsWith('Connecting') \
     ? { text: s.textContent, error: s.classList.contains('error') } : null; })()";

async fn connect_to(b: &Browser, name: &str) -> anyhow::Result<()> {
    let input = b.find("#device").await?;
    b.clear(&input).await?;
    b.type_into(&input, name).await?;
    b.click(&b.find("#go").await?).await
}

#[tokio::test]
async fn portal_loads_and_explains_bad_and_unknown_names() {
    let started = Instant::now();
    let (bin, dist) = flock_and_portal();
    let f = Flock::start(&bin, &dist).unwrap_or_else(|e| panic!("{e:#}"));
    let b = browser().await;
    let url = f.url();
    b.scenario("portal-names", async |b| {
        b.goto(&url).await?;
        b.wait_for("the portal script to run", "document.readyState === 'complete'", T)
            .await?;
        let label = b.text(&b.find("label[for=device]").await?).await?;
        anyhow::ensure!(label == "Appliance name", "label is {label:?}");
        b.find("input#device").await?;
        let shot = b.screenshot("portal").await?;
        eprintln!("portal screenshot: {}", shot.display());

        connect_to(b, "-not-a-name-").await?;
        let s = b
            .wait_for("the invalid-name message", SETTLED_STATUS, T)
            .await?;
        let text = s["text"].as_str().unwrap_or_default();
        anyhow::ensure!(
            text.contains("is not an appliance name") && s["error"] == true,
            "invalid name gave {s}"
        );

        connect_to(b, "nobody-home").await?;
        let s = b
            .wait_for(
                "the unknown-or-offline message",
                "(() => { const s = document.getElementById('status'); \
                 return s && s.textContent.includes('online') ? { text: s.textContent, error: s.classList.contains('error') } : null; })()",
                T,
            )
            .await?;
        anyhow::ensure!(
            s["text"]
                .as_str()
                .unwrap_or_default()
                .starts_with("No appliance with that name is online")
                && s["error"] == true,
            "unknown name gave {s}"
        );
        b.screenshot("portal-unknown").await?;
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nflock log:\n{}", f.log()));
    b.close().await.unwrap();
    eprintln!(
        "portal_loads_and_explains_bad_and_unknown_names took {:.1?}",
        started.elapsed()
    );
}

type Ws = WebSocketStream<TcpStream>;

/// A device registered with flock under `name`, with a fresh P-256 key.
async fn fake_device(addr: SocketAddr, name: &str) -> Ws {
    let tcp = timeout(T, TcpStream::connect(addr)).await.unwrap().unwrap();
    let (mut ws, _) = timeout(
        T,
        tokio_tungstenite::client_async(format!("ws://{addr}/device"), tcp),
    )
    .await
    .unwrap()
    .unwrap();
    let FlockToDevice::Challenge { nonce } = from_flock(&mut ws).await else {
        panic!("flock sent no challenge")
    };
    let key = DeviceKey::generate().unwrap();
    let name = DeviceName::new(name).unwrap();
    let hello = DeviceToFlock::Hello {
        signature: key.sign_challenge(&nonce, &name).unwrap(),
        public_key: key.public_key(),
        name,
    };
    to_flock(&mut ws, &hello).await;
    let verdict = from_flock(&mut ws).await;
    assert!(
        matches!(verdict, FlockToDevice::Registered { .. }),
        "{verdict:?}"
    );
    ws
}

async fn from_flock(ws: &mut Ws) -> FlockToDevice {
    loop {
        match timeout(T, ws.next())
            .await
            .expect("nothing from flock in time")
        {
            Some(Ok(Message::Binary(b))) => match device::decode(&b).unwrap() {
                FlockToDevice::Ping => to_flock(ws, &DeviceToFlock::Pong).await,
                m => return m,
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a binary frame from flock, got {other:?}"),
        }
    }
}

async fn to_flock(ws: &mut Ws, m: &DeviceToFlock) {
    ws.send(Message::Binary(device::encode(m).unwrap().into()))
        .await
        .unwrap();
}

#[tokio::test]
async fn portal_offer_and_trickled_candidates_reach_the_device() {
    let started = Instant::now();
    let (bin, dist) = flock_and_portal();
    let f = Flock::start(&bin, &dist).unwrap_or_else(|e| panic!("{e:#}"));
    let mut dev = fake_device(f.addr, "living-room").await;
    let b = browser().await;
    let url = f.url();
    b.scenario("portal-offer", async |b| {
        b.goto(&url).await?;
        b.allow_all_interfaces().await?;
        connect_to(b, "living-room").await
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    // The offer, then host candidates by trickle (flock relays both).
    let FlockToDevice::SessionOffer { session, sdp } = from_flock(&mut dev).await else {
        panic!("the device got no offer")
    };
    assert!(sdp.starts_with("v=0"), "{sdp}");
    assert!(
        sdp.lines()
            .any(|l| l.starts_with("m=application") && l.contains("webrtc-datachannel")),
        "no data channel section in the offer:\n{sdp}"
    );
    assert!(sdp.contains("a=ice-ufrag:") && sdp.contains("a=fingerprint:sha-256"));
    let mut candidates = Vec::new();
    let mut end_seen = false;
    while !end_seen {
        match from_flock(&mut dev).await {
            FlockToDevice::Candidate {
                session: s,
                candidate,
                sdp_mid,
            } => {
                assert_eq!(s, session);
                match candidate {
                    Some(c) => {
                        assert!(c.starts_with("candidate:"), "{c}");
                        assert!(sdp_mid.is_some(), "candidate without sdp_mid: {c}");
                        candidates.push(c);
                    }
                    None => end_seen = true,
                }
            }
            other => panic!("expected candidates, got {other:?}"),
        }
    }
    eprintln!("offer of {} bytes, candidates: {candidates:#?}", sdp.len());
    assert!(
        candidates.iter().any(|c| c.contains(" 127.0.0.1 ")),
        "no loopback host candidate: {candidates:?}"
    );
    b.execute(
        "return document.querySelector('#steps li[data-step=signalling]').dataset.state",
        vec![],
    )
    .await
    .map(|v| assert_eq!(v, json!("active"), "signalling step while waiting"))
    .unwrap();

    // The device declines: the page tells the person and re-enables Connect.
    to_flock(
        &mut dev,
        &DeviceToFlock::SessionClosed {
            session,
            reason: "declined by the test device".into(),
        },
    )
    .await;
    let s = b
        .scenario("portal-closed", async |b| {
            b.wait_for("the page to report the closed session", SETTLED_STATUS, T)
                .await
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(s["error"], Value::Bool(true), "{s}");
    eprintln!("after the device closed the session the page says: {s}");
    let enabled = b
        .execute("return !document.getElementById('go').disabled", vec![])
        .await
        .unwrap();
    assert_eq!(enabled, json!(true));
    b.close().await.unwrap();
    eprintln!(
        "portal_offer_and_trickled_candidates_reach_the_device took {:.1?}",
        started.elapsed()
    );
}
