//! The browser client in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `cargo xtask test`): WebRTC itself on
//! loopback, then the portal served by the real `flock` binary, its name
//! checks, and its signalling reaching a fake device (a Rust client of
//! flock's device protocol), and the whole path from the portal through a
//! real intrustd to an app. Every server listens on 127.0.0.1 and nothing
//! leaves the machine; every wait is bounded; the tests run one at a time
//! (each starts its own Chromium). On failure a screenshot lands in
//! `target/browser-shots/`.

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

/// Held for the whole of each test: the tests run one at a time. Each
/// starts its own Chromium (plus flock, and for the end-to-end test
/// intrustd and two servers); side by side on a small machine they starve
/// each other's ICE checks and timers.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
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
    let _serial = one_at_a_time().await;
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
    // Only loopback candidates are signalled, so the remote is loopback:
    // from any local host address (Linux routes a datagram to 127.0.0.1
    // through `lo` whatever its source, and Chromium may select such a
    // pair, e.g. 192.0.2.2 → 127.0.0.1, when its check succeeds first).
    // Under load a check can arrive before the trickled candidate: the
    // remote is then peer-reflexive and Chromium hides its address; a
    // socket bound to loopback can only have talked to loopback.
    assert!(
        loopback(&result["remote"]["address"])
            || (result["remote"]["type"] == "prflx"
                && result["remote"]["address"] == ""
                && loopback(&result["local"]["address"])),
        "{result}"
    );
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
    let _serial = one_at_a_time().await;
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
    let _serial = one_at_a_time().await;
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

/// The appliance's name at flock in the end-to-end test.
const E2E_DEVICE: &str = "e2e-box";
/// Size of the large download.
const BIG: usize = 16 << 20;
/// The whole end-to-end test, builds aside.
const E2E_LIMIT: Duration = Duration::from_secs(90);

/// The portal once connected: every step done, the apps listed, the route.
const CONNECTED: &str = "(() => { \
    const steps = [...document.querySelectorAll('#steps li')].map((li) => li.dataset.state); \
    const section = document.getElementById('apps-section'); \
    const route = document.getElementById('route'); \
    const status = document.getElementById('status'); \
    if (status.classList.contains('error')) return { error: status.textContent, steps }; \
    if (section.hidden || !steps.every((s) => s === 'done')) return null; \
    return { steps, status: status.textContent, route: route.hidden ? null : route.textContent, \
      apps: [...document.querySelectorAll('#apps li')].map((li) => ({ \
        name: li.querySelector('span') && li.querySelector('span').textContent, \
        href: li.querySelector('a') && li.querySelector('a').href })) }; })()";

/// Starts, in the page, a second connection with the library itself
/// (`/intrust.js`) and fetches through it; `window.e2e` gets the results
/// (or `{error}`).
const LIBRARY_FETCHES: &str = r#"
window.e2e = null;
(async () => {
  const lib = await import("/intrust.js");
  const a = await lib.connect(location.origin, arguments[0]);
  window.e2eAppliance = a;
  const out = { device: a.device, apps: a.apps, route: await a.route() };
  let r = await a.fetch("hello", "/");
  out.page = { status: r.status, type: r.headers.get("content-type"), text: await r.text() };
  r = await a.fetch("hello", "/api/counter");
  out.counter = { status: r.status, type: r.headers.get("content-type"), json: await r.json() };
  r = await a.fetch("hello", "/picture.svg");
  out.picture = { status: r.status, type: r.headers.get("content-type"), text: await r.text() };
  r = await a.fetch("hello", "/no-such-page");
  out.missing = { status: r.status };
  return out;
})().then((v) => { window.e2e = v; }, (e) => { window.e2e = { error: String(e && e.stack || e) }; });
return true;
"#;

/// The large download through the library's connection; `window.e2eBig`
/// gets its length, SHA-256 (hex) and time.
const BIG_DOWNLOAD: &str = r#"
window.e2eBig = null;
(async () => {
  const t0 = performance.now();
  const r = await window.e2eAppliance.fetch("big", "/blob");
  const buf = await r.arrayBuffer();
  const ms = performance.now() - t0;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  return { status: r.status, length: buf.byteLength, sha256: hex, ms,
           declared: r.headers.get("content-length") };
})().then((v) => { window.e2eBig = v; }, (e) => { window.e2eBig = { error: String(e && e.stack || e) }; });
return true;
"#;

/// What the page knows of its service worker registrations.
const SW_DIAGNOSIS: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const regs = await navigator.serviceWorker.getRegistrations();
  return { page: location.pathname, registrations: regs.map((r) => ({ scope: r.scope,
    active: r.active && r.active.state, waiting: !!r.waiting, installing: !!r.installing })) };
})().then(done, (e) => done({ error: String(e) }));
"#;

/// The app page opened through the service worker, once it shows the
/// counter (polled through the tunnel) and the picture has loaded.
/// The app page is up through the service worker: its style sheet applied,
/// its script polling with XMLHttpRequest ("live"), its WebSocket open and
/// echoing, its picture loaded.
const APP_RENDERED: &str = "(() => { \
    const c = document.getElementById('clicks'), s = document.getElementById('state'), \
          img = document.getElementById('picture'), ws = document.getElementById('ws'), \
          echo = document.getElementById('echo'), h1 = document.querySelector('h1'); \
    if (!c || !s || !img || !ws || !echo || !h1) return null; \
    if (s.textContent.startsWith('error')) return { error: s.textContent }; \
    if (s.textContent !== 'live' || !/^[0-9]+$/.test(c.textContent) || !img.complete || img.naturalWidth === 0) return null; \
    if (ws.textContent !== 'open' || echo.textContent !== 'echo:ping') return null; \
    return { path: location.pathname, title: document.title, clicks: Number(c.textContent), \
             requests: document.getElementById('requests').textContent, img: img.naturalWidth, \
             h1: h1.textContent, h1_color: getComputedStyle(h1).color, ws: ws.textContent, echo: echo.textContent, \
             greeting: document.getElementById('greeting').textContent, \
             controlled: !!navigator.serviceWorker.controller }; })()";

fn sha256_hex(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything the end-to-end test runs, for its failure messages.
struct E2eLogs<'a> {
    flock: &'a Flock,
    agent: &'a intrust_hil::browser::stack::Appliance,
    app: &'a intrust_hil::browser::stack::HelloApp,
}

impl E2eLogs<'_> {
    fn dump(&self) -> String {
        format!(
            "\n--- intrustd log (end) ---\n{}\n--- flock log ---\n{}\n--- hello-app log (end) ---\n{}",
            self.agent.process.log_tail(60),
            self.flock.log(),
            self.app.process.log_tail(20)
        )
    }
}

/// The whole path in a real Chromium: the portal connects to a real
/// intrustd through a real flock, the library fetches the example app's
/// page, JSON and picture and a 16 MiB download (SHA-256 checked), and
/// the app page opened through the service worker renders and counts a
/// click.
#[tokio::test]
async fn portal_connects_and_the_app_works_through_the_tunnel() {
    use intrust_hil::browser::stack::{self, Appliance, BlobServer, HelloApp};

    // Builds first (no-ops when current); the time limit starts after them.
    let (flock_bin, dist) = flock_and_portal();
    let intrustd = intrust_hil::daemon::build_intrustd_for_tests()
        .unwrap_or_else(|e| panic!("cannot build intrustd: {e:#}"));
    let hello_bin = stack::build_bin_for_tests("hello-app", "hello-app")
        .unwrap_or_else(|e| panic!("cannot build hello-app: {e:#}"));
    let _serial = one_at_a_time().await;
    let started = Instant::now();

    let app = HelloApp::start(&hello_bin).unwrap_or_else(|e| panic!("{e:#}"));
    let blob = std::sync::Arc::new(stack::deterministic_bytes(BIG, 0x1e2e_b16d));
    let expected_sha = sha256_hex(&blob);
    let big = BlobServer::start(blob.clone()).unwrap_or_else(|e| panic!("{e:#}"));
    let f = Flock::start(&flock_bin, &dist).unwrap_or_else(|e| panic!("{e:#}"));
    let mut agent = Appliance::start(
        &intrustd,
        f.addr,
        E2E_DEVICE,
        &[("hello", app.addr), ("big", big.addr)],
    )
    .unwrap_or_else(|e| panic!("{e:#}\nflock log:\n{}", f.log()));
    agent
        .process
        .wait_until("registration with flock", T, |_| {
            f.has_registered(E2E_DEVICE)
        })
        .unwrap_or_else(|e| panic!("{e:#}\nflock log:\n{}", f.log()));
    eprintln!(
        "hello-app, blob server, flock and intrustd up, {E2E_DEVICE} registered, in {:.1?}",
        started.elapsed()
    );

    let b = browser().await;
    let url = f.url();
    let logs = E2eLogs {
        flock: &f,
        agent: &agent,
        app: &app,
    };
    let run = b.scenario("e2e", async |b| {
        // The portal: name, Connect, all steps done, the app list, a direct route.
        b.goto(&url).await?;
        b.wait_for(
            "the portal script to run",
            "document.readyState === 'complete'",
            T,
        )
        .await?;
        b.allow_all_interfaces().await?;
        connect_to(b, E2E_DEVICE).await?;
        let connected = match b.wait_for("the portal to connect", CONNECTED, T).await {
            Ok(v) => v,
            Err(e) => {
                let sw = b.execute_async(SW_DIAGNOSIS, vec![]).await;
                return Err(e.context(format!("the portal's service worker: {sw:?}")));
            }
        };
        eprintln!("portal connected: {connected}");
        anyhow::ensure!(
            connected.get("error").is_none(),
            "the portal failed: {connected}"
        );
        let apps = connected["apps"].as_array().cloned().unwrap_or_default();
        let hello = apps
            .iter()
            .find(|a| a["name"] == "hello")
            .ok_or_else(|| anyhow::anyhow!("hello is not in the app list: {connected}"))?;
        anyhow::ensure!(
            apps.iter().any(|a| a["name"] == "big"),
            "big is not in the app list: {connected}"
        );
        let href = hello["href"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(
            href.ends_with("/app/hello/"),
            "hello has no Open link into the service worker's scope: {connected}"
        );
        let route = connected["route"].as_str().unwrap_or_default();
        anyhow::ensure!(
            route.starts_with("Direct"),
            "the route is not direct: {connected}"
        );
        let shot = b.screenshot("e2e-portal-connected").await?;
        eprintln!("portal screenshot: {}", shot.display());

        // The library, from the page: a second connection, then fetches.
        b.execute(LIBRARY_FETCHES, vec![json!(E2E_DEVICE)]).await?;
        let r = b.wait_for("the library's fetches", "window.e2e", T).await?;
        anyhow::ensure!(r.get("error").is_none(), "library fetches failed: {r}");
        anyhow::ensure!(r["route"] == "direct", "library route: {}", r["route"]);
        anyhow::ensure!(
            r["page"]["status"] == 200
                && r["page"]["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("text/html"))
                && r["page"]["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("<h1>hello from the appliance</h1>")),
            "the app's page through the tunnel: {}",
            r["page"]
        );
        let c = &r["counter"];
        anyhow::ensure!(
            c["status"] == 200
                && c["type"] == "application/json"
                && c["json"]["clicks"].is_u64()
                && c["json"]["requests"].as_u64().is_some_and(|n| n >= 2),
            "the counter through the tunnel: {c}"
        );
        let p = &r["picture"];
        anyhow::ensure!(
            p["status"] == 200
                && p["type"] == "image/svg+xml"
                && p["text"].as_str().is_some_and(|t| t.starts_with("<svg")),
            "the picture through the tunnel: {p}"
        );
        anyhow::ensure!(
            r["missing"]["status"] == 404,
            "a missing page: {}",
            r["missing"]
        );
        eprintln!(
            "library fetches: page {} bytes, counter {}, picture {} bytes, 404 passed through",
            r["page"]["text"].as_str().map_or(0, str::len),
            c["json"],
            p["text"].as_str().map_or(0, str::len)
        );

        // A large download, checked end to end by SHA-256.
        b.execute(BIG_DOWNLOAD, vec![]).await?;
        let d = b
            .wait_for(
                "the 16 MiB download",
                "window.e2eBig",
                Duration::from_secs(45),
            )
            .await?;
        anyhow::ensure!(d.get("error").is_none(), "the large download failed: {d}");
        anyhow::ensure!(
            d["status"] == 200 && d["length"] == json!(BIG),
            "the large download: {d}"
        );
        anyhow::ensure!(
            d["sha256"] == expected_sha.as_str(),
            "the large download arrived corrupted: {d}, expected SHA-256 {expected_sha}"
        );
        let ms = d["ms"].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "16 MiB through the tunnel intact in {:.0} ms: {:.1} MB/s",
            ms,
            BIG as f64 / 1e6 / (ms / 1000.0)
        );

        // The app page through the service worker, in a new tab.
        let portal = b.window().await?;
        // The Open link's target, in a tab of its own (the link itself
        // opens one with noopener, whose handle chromedriver loses).
        let tab = b.new_tab().await?;
        b.switch_to(&tab).await?;
        b.goto(&href).await?;
        let page = b
            .wait_for("the app page to render through the tunnel", APP_RENDERED, T)
            .await?;
        anyhow::ensure!(page.get("error").is_none(), "the app page: {page}");
        anyhow::ensure!(
            page["path"] == "/app/hello/" && page["controlled"] == true,
            "the app page is not served by the service worker: {page}"
        );
        anyhow::ensure!(
            page["h1_color"] == "rgb(32, 96, 160)",
            "the app's style sheet (style.css) was not applied: {page}"
        );
        anyhow::ensure!(
            page["greeting"] == "",
            "no guest book cookie yet, so no greeting: {page}"
        );
        let before = page["clicks"].as_u64().unwrap_or(0);
        b.click(&b.find("#click").await?).await?;
        let after = b
            .wait_for(
                "the click to count",
                &format!(
                    "(() => {{ const n = Number(document.getElementById('clicks').textContent); \
                     return n > {before} ? n : null; }})()"
                ),
                T,
            )
            .await?;
        eprintln!("app page through the service worker: {page}; after a click: {after}");
        // The picture is redrawn from the counter: wait until it has loaded.
        b.wait_for(
            "the redrawn picture",
            "(() => { const i = document.getElementById('picture'); \
             return i.src.includes('?n=') && i.complete && i.naturalWidth > 0; })()",
            T,
        )
        .await?;
        let shot = b.screenshot("e2e-app-page").await?;
        eprintln!("app page screenshot: {}", shot.display());
        // A form post: the app answers 303 to "/" with a cookie; the page it
        // redirects to (still in the tunnel) greets by that cookie.
        let name = b.find("#name").await?;
        b.type_into(&name, "Ada").await?;
        b.execute("document.getElementById('sign').requestSubmit();", vec![])
            .await?;
        let greeted = b
            .wait_for(
                "the guest book's redirect to greet by the cookie",
                "(() => { const g = document.getElementById('greeting'); \
                 return g && g.textContent.startsWith('Welcome back') \
                   ? { greeting: g.textContent, path: location.pathname, \
                       controlled: !!navigator.serviceWorker.controller } : null; })()",
                T,
            )
            .await?;
        anyhow::ensure!(
            greeted["greeting"] == "Welcome back, Ada."
                && greeted["path"] == "/app/hello/"
                && greeted["controlled"] == true,
            "after the form post: {greeted}"
        );
        let after_post = b
            .wait_for("the page to be live again after the post", APP_RENDERED, T)
            .await?;
        eprintln!(
            "form post, redirect and cookie through the tunnel: {greeted}; page: {after_post}"
        );
        b.switch_to(&portal).await?;

        // Leaving the portal closes its peer connections; the device must
        // notice at once (DTLS close_notify / SCTP abort), not at the 30 s
        // silence timeout, and drop the sessions.
        let peers = |agent: &intrust_hil::browser::stack::Appliance| -> anyhow::Result<usize> {
            let out = std::process::Command::new(intrustd.with_file_name("intrustctl"))
                .arg("--socket")
                .arg(&agent.control_socket)
                .args(["peers", "--json"])
                .output()?;
            anyhow::ensure!(out.status.success(), "intrustctl peers failed: {out:?}");
            let list: Value = serde_json::from_slice(&out.stdout)?;
            Ok(list.as_array().map_or(0, Vec::len))
        };
        let before = peers(logs.agent)?;
        anyhow::ensure!(
            before >= 1,
            "the portal's sessions are listed before it closes"
        );
        b.goto("about:blank").await?;
        let closed_at = Instant::now();
        loop {
            let n = peers(logs.agent)?;
            if n == 0 {
                break;
            }
            anyhow::ensure!(
                closed_at.elapsed() < Duration::from_secs(5),
                "{n} session(s) still listed 5 s after the portal page went away"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "the device dropped the portal's {before} session(s) {:.0?} after the page went away",
            closed_at.elapsed()
        );
        Ok(())
    });
    let result = timeout(E2E_LIMIT.saturating_sub(started.elapsed()), run).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e:#}{}", logs.dump()),
        Err(_) => panic!(
            "the end-to-end test took longer than {E2E_LIMIT:?}{}",
            logs.dump()
        ),
    }
    let peers = std::process::Command::new(intrustd.with_file_name("intrustctl"))
        .arg("--socket")
        .arg(&agent.control_socket)
        .arg("status")
        .output();
    if let Ok(out) = peers {
        eprintln!(
            "intrustctl status:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    b.close().await.unwrap();
    let _ = logs;
    drop(agent);
    drop(f);
    drop(big);
    drop(app);
    eprintln!(
        "portal_connects_and_the_app_works_through_the_tunnel took {:.1?}",
        started.elapsed()
    );
}
