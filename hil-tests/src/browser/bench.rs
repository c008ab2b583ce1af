//! `intrust-hil bench tunnel`: the tunnel through the real system on
//! loopback — `hello-app`, `flock` serving the portal and a release
//! `intrustd` registered with it — measured from a Rust client (the agent's
//! `tunnel_bench` example, run as a child) and from a headless Chromium using
//! the portal's library (`/intrust.js`). Figures: `connect_rust_ms`,
//! `rss_idle_mib`, `rss_10_sessions_mib`, `connect_chromium_ms`,
//! `chromium_download_mbps`, `chromium_upload_mbps`.
//!
//! Each part is bounded in time; a part that fails prints its figures with
//! a `null` value and the error in `note`, the others still run, and
//! [`tunnel`] then returns the failure.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use super::flock::Flock;
use super::stack::{Appliance, HelloApp};
use super::Browser;
use crate::bench::BenchLine;

const DEVICE: &str = "bench-box";
/// Startup and registration with flock.
const READY: Duration = Duration::from_secs(30);
/// Everything here comes from 127.0.0.1: lift flock's per-source limits
/// (60 new connections a minute, 8 sessions per device) out of the way.
const FLOCK_LIMITS: &str =
    "[limits]\nconnections_per_minute = 100000\nconnections_per_source = 1000\nsessions_per_device = 64\n";
/// Quiet time before a memory reading.
const SETTLE: Duration = Duration::from_secs(1);

/// What to run and how much.
#[derive(Debug, Clone)]
pub struct TunnelBench {
    pub intrustd: PathBuf,
    pub flock: PathBuf,
    pub hello_app: PathBuf,
    /// The agent's `tunnel_bench` example.
    pub client: PathBuf,
    /// The built portal (`flock/web/dist`).
    pub portal: PathBuf,
    pub rust_runs: usize,
    pub sessions: usize,
    pub chromium_runs: usize,
    /// Bytes per Chromium download and upload.
    pub chromium_bytes: u64,
}

/// Runs every part; returns the figures (also on failure of a part, whose
/// figures then have no value) and whether all parts worked.
pub async fn tunnel(cfg: &TunnelBench) -> (Vec<BenchLine>, anyhow::Result<()>) {
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    let stack = match Stack::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            let why = format!("{e:#}");
            for m in ALL_METRICS {
                lines.push(missing(m, &why));
            }
            return (lines, Err(e));
        }
    };

    // Idle memory first, before any session has touched the allocator.
    std::thread::sleep(SETTLE);
    let idle = memory(stack.agent.process.id());
    match &idle {
        Ok(m) => lines.push(line(
            "rss_idle_mib",
            Some(m.rss_mib),
            "MiB",
            1,
            format!(
                "intrustd (release, sim board, --insecure-open) VmRSS after start and \
                 registration with flock, no session; VmHWM {:.1} MiB",
                m.hwm_mib
            ),
        )),
        Err(e) => {
            lines.push(missing("rss_idle_mib", &format!("{e:#}")));
            failed.push(format!("rss_idle_mib: {e:#}"));
        }
    }

    match connect_rust(cfg, &stack) {
        Ok(ms) => lines.push(line(
            "connect_rust_ms",
            Some(median(&ms)),
            "ms",
            ms.len(),
            format!(
                "Rust client (str0m engine) through flock /signal to intrustd: WebSocket \
                 connect to the first byte of GET / from hello-app on a fresh `http/1.1 hello` \
                 channel, new session each run; median of {} (min {:.1}, max {:.1})",
                ms.len(),
                min(&ms),
                max(&ms)
            ),
        )),
        Err(e) => {
            lines.push(missing("connect_rust_ms", &format!("{e:#}")));
            failed.push(format!("connect_rust_ms: {e:#}"));
        }
    }

    match sessions_rss(cfg, &stack) {
        Ok(m) => lines.push(line(
            "rss_10_sessions_mib",
            Some(m.rss_mib),
            "MiB",
            1,
            format!(
                "intrustd VmRSS with {} Rust-client sessions connected through flock, each \
                 with its control channel open and one GET done; VmHWM {:.1} MiB{}",
                cfg.sessions,
                m.hwm_mib,
                idle.as_ref().map_or(String::new(), |i| format!(
                    " ({:+.1} MiB over idle)",
                    m.rss_mib - i.rss_mib
                ))
            ),
        )),
        Err(e) => {
            lines.push(missing("rss_10_sessions_mib", &format!("{e:#}")));
            failed.push(format!("rss_10_sessions_mib: {e:#}"));
        }
    }

    match chromium(cfg, &stack).await {
        Ok(runs) => {
            let connect: Vec<f64> = runs.iter().map(|r| r.connect_ms).collect();
            let down: Vec<f64> = runs.iter().map(|r| r.download_mbps).collect();
            let up: Vec<f64> = runs.iter().map(|r| r.upload_mbps).collect();
            let n = runs.len();
            let mib = cfg.chromium_bytes as f64 / (1 << 20) as f64;
            lines.push(line(
                "connect_chromium_ms",
                Some(median(&connect)),
                "ms",
                n,
                format!(
                    "headless Chromium, the portal's library (/intrust.js from flock): \
                     connect() to the first body byte of GET / from hello-app; median of {n} \
                     (min {:.1}, max {:.1})",
                    min(&connect),
                    max(&connect)
                ),
            ));
            lines.push(line(
                "chromium_download_mbps",
                Some(median(&down)),
                "MB/s",
                n,
                format!(
                    "headless Chromium, library fetch of {mib:.0} MiB from hello-app \
                     /bytes through flock-signalled intrustd, body read as a stream; \
                     MB = 10^6 bytes; median of {n} (min {:.1}, max {:.1})",
                    min(&down),
                    max(&down)
                ),
            ));
            lines.push(line(
                "chromium_upload_mbps",
                Some(median(&up)),
                "MB/s",
                n,
                format!(
                    "headless Chromium, library fetch POST of a {mib:.0} MiB Uint8Array to \
                     hello-app /upload (counted by the app) until its answer; MB = 10^6 bytes; \
                     median of {n} (min {:.1}, max {:.1})",
                    min(&up),
                    max(&up)
                ),
            ));
        }
        Err(e) => {
            let why = format!("{e:#}");
            for m in [
                "connect_chromium_ms",
                "chromium_download_mbps",
                "chromium_upload_mbps",
            ] {
                lines.push(missing(m, &why));
            }
            failed.push(format!("chromium: {why}"));
        }
    }

    let result = if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "parts of bench tunnel failed:\n{}\n--- intrustd log (end) ---\n{}",
            failed.join("\n"),
            stack.agent.process.log_tail(30)
        ))
    };
    (lines, result)
}

const ALL_METRICS: [&str; 6] = [
    "rss_idle_mib",
    "connect_rust_ms",
    "rss_10_sessions_mib",
    "connect_chromium_ms",
    "chromium_download_mbps",
    "chromium_upload_mbps",
];

fn unit_of(metric: &str) -> (&'static str, &'static str) {
    match metric {
        "connect_rust_ms" | "connect_chromium_ms" => ("ms", "lower"),
        "chromium_download_mbps" | "chromium_upload_mbps" => ("MB/s", "higher"),
        _ => ("MiB", "lower"),
    }
}

fn static_name(metric: &str) -> &'static str {
    ALL_METRICS
        .iter()
        .find(|m| **m == metric)
        .copied()
        .unwrap_or("unknown")
}

fn line(
    metric: &str,
    value: Option<f64>,
    unit: &'static str,
    runs: usize,
    note: String,
) -> BenchLine {
    BenchLine {
        bench: "tunnel",
        metric: static_name(metric),
        value: value.map(|v| (v * 100.0).round() / 100.0),
        unit,
        better: unit_of(metric).1,
        baseline: None,
        baseline_value: None,
        ratio: None,
        runs,
        note,
    }
}

fn missing(metric: &str, why: &str) -> BenchLine {
    line(
        metric,
        None,
        unit_of(metric).0,
        0,
        format!("not measured: {}", why.lines().next().unwrap_or(why)),
    )
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// hello-app, flock and intrustd, up and registered.
struct Stack {
    _app: HelloApp,
    flock: Flock,
    agent: Appliance,
}

impl Stack {
    fn start(cfg: &TunnelBench) -> anyhow::Result<Stack> {
        let app = HelloApp::start(&cfg.hello_app)?;
        let flock = Flock::start_with(&cfg.flock, &cfg.portal, FLOCK_LIMITS)?;
        let mut agent = Appliance::start(&cfg.intrustd, flock.addr, DEVICE, &[("hello", app.addr)])
            .with_context(|| format!("flock log:\n{}", flock.log()))?;
        agent
            .process
            .wait_until("registration with flock", READY, |_| {
                flock.has_registered(DEVICE)
            })
            .with_context(|| format!("flock log:\n{}", flock.log()))?;
        Ok(Stack {
            _app: app,
            flock,
            agent,
        })
    }
}

/// One reading of a process's memory.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_mib: f64,
    hwm_mib: f64,
}

fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib = |key: &str| -> anyhow::Result<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .with_context(|| format!("{path} has no {key}"))
    };
    Ok(Memory {
        rss_mib: kib("VmRSS:")? / 1024.0,
        hwm_mib: kib("VmHWM:")? / 1024.0,
    })
}

/// The Rust client as a child: its JSON lines arrive on a channel; it is
/// killed (and reaped) when dropped.
struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Client {
    fn spawn(cfg: &TunnelBench, stack: &Stack, args: &[String]) -> anyhow::Result<Client> {
        let dir = tempfile::Builder::new()
            .prefix("intrust-bench-client-")
            .tempdir()?;
        let stderr = dir.path().join("client.stderr");
        let mut child = Command::new(&cfg.client)
            .args(args)
            .args(["--flock", &stack.flock.addr.to_string(), "--device", DEVICE])
            .args(["--app", "hello"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("cannot start {}", cfg.client.display()))?;
        let out = child.stdout.take().context("no stdout pipe")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Client {
            child,
            lines,
            stderr,
            _dir: dir,
        })
    }

    /// The next JSON line, within `limit`.
    fn next(&mut self, limit: Duration) -> anyhow::Result<Option<Value>> {
        match self.lines.recv_timeout(limit) {
            Ok(l) => Ok(Some(
                serde_json::from_str(&l).with_context(|| format!("client printed {l:?}"))?,
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait()?;
                if status.success() {
                    Ok(None)
                } else {
                    bail!("the Rust client failed ({status}): {}", self.stderr_text())
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "the Rust client said nothing for {limit:?}: {}",
                self.stderr_text()
            ),
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect_rust(cfg: &TunnelBench, stack: &Stack) -> anyhow::Result<Vec<f64>> {
    let mut c = Client::spawn(
        cfg,
        stack,
        &["connect".into(), "--runs".into(), cfg.rust_runs.to_string()],
    )?;
    let mut ms = Vec::new();
    while let Some(v) = c.next(Duration::from_secs(30))? {
        if let Some(m) = v["ms"].as_f64() {
            ms.push(m);
        }
    }
    if ms.len() != cfg.rust_runs {
        bail!(
            "the Rust client reported {} of {} connects",
            ms.len(),
            cfg.rust_runs
        );
    }
    Ok(ms)
}

fn sessions_rss(cfg: &TunnelBench, stack: &Stack) -> anyhow::Result<Memory> {
    let mut c = Client::spawn(
        cfg,
        stack,
        &[
            "sessions".into(),
            "--count".into(),
            cfg.sessions.to_string(),
        ],
    )?;
    let ready = c
        .next(Duration::from_secs(60))?
        .context("the Rust client ended before its sessions were up")?;
    if ready["kind"] != "sessions_ready" {
        bail!("the Rust client said {ready} instead of sessions_ready");
    }
    std::thread::sleep(SETTLE);
    let m = memory(stack.agent.process.id())?;
    // Closing its stdin ends the sessions.
    if let Some(mut stdin) = c.child.stdin.take() {
        let _ = stdin.flush();
    }
    let _ = c.next(Duration::from_secs(10));
    Ok(m)
}

/// One Chromium run.
#[derive(Debug, Clone, Copy)]
struct ChromiumRun {
    connect_ms: f64,
    download_mbps: f64,
    upload_mbps: f64,
}

/// In the portal's page: a new connection with the library, `GET /` to its
/// first body byte, then a download read as a stream and an upload; sets
/// `window.benchRun`.
const CHROMIUM_RUN: &str = r#"
window.benchRun = null;
const [device, bytes] = [arguments[0], arguments[1]];
(async () => {
  const lib = await import("/intrust.js");
  const t0 = performance.now();
  const a = await lib.connect(location.origin, device);
  let r = await a.fetch("hello", "/");
  const reader = r.body.getReader();
  const first = await reader.read();
  const connectMs = performance.now() - t0;
  if (r.status !== 200 || first.done) throw new Error(`GET / answered ${r.status}`);
  while (!(await reader.read()).done) {}
  let t = performance.now();
  r = await a.fetch("hello", `/bytes?n=${bytes}`);
  if (r.status !== 200) throw new Error(`GET /bytes answered ${r.status}`);
  let got = 0;
  const body = r.body.getReader();
  for (;;) { const c = await body.read(); if (c.done) break; got += c.value.byteLength; }
  const downloadMs = performance.now() - t;
  if (got !== bytes) throw new Error(`the download ended after ${got} of ${bytes} bytes`);
  const payload = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 4096) payload[i] = i & 255;
  t = performance.now();
  r = await a.fetch("hello", "/upload", { method: "POST", body: payload });
  const j = await r.json();
  const uploadMs = performance.now() - t;
  if (j.bytes !== bytes) throw new Error(`the app counted ${JSON.stringify(j)} of ${bytes} uploaded bytes`);
  a.close();
  return { connectMs, downloadMs, uploadMs, bytes };
})().then((v) => { window.benchRun = v; }, (e) => { window.benchRun = { error: String(e && e.stack || e) }; });
return true;
"#;

async fn chromium(cfg: &TunnelBench, stack: &Stack) -> anyhow::Result<Vec<ChromiumRun>> {
    let b = Browser::start().await?;
    let url = stack.flock.url();
    let bytes = cfg.chromium_bytes;
    // Generous: a slow machine moving the bytes at 2 MB/s both ways.
    let limit = Duration::from_secs(30 + 2 * bytes / 2_000_000);
    let runs = b
        .scenario("bench-tunnel", async |b| {
            b.goto(&url).await?;
            b.wait_for(
                "the portal page to load",
                "document.readyState === 'complete'",
                Duration::from_secs(15),
            )
            .await?;
            b.allow_all_interfaces().await?;
            let mut runs = Vec::new();
            // One unmeasured run warms up Chromium's WebRTC stack and the page.
            for i in 0..=cfg.chromium_runs {
                let started = Instant::now();
                b.execute(CHROMIUM_RUN, vec![json!(DEVICE), json!(bytes)])
                    .await?;
                let r = b
                    .wait_for("a Chromium bench run", "window.benchRun", limit)
                    .await?;
                if let Some(e) = r.get("error") {
                    bail!("Chromium run {i}: {e}");
                }
                let ms = |k: &str| r[k].as_f64().with_context(|| format!("no {k} in {r}"));
                let mbps = |ms: f64| bytes as f64 / 1e6 / (ms / 1000.0);
                let run = ChromiumRun {
                    connect_ms: ms("connectMs")?,
                    download_mbps: mbps(ms("downloadMs")?),
                    upload_mbps: mbps(ms("uploadMs")?),
                };
                eprintln!(
                    "chromium run {i}{}: connect {:.1} ms, download {:.1} MB/s, upload {:.1} MB/s ({:.1?})",
                    if i == 0 { " (warm-up)" } else { "" },
                    run.connect_ms,
                    run.download_mbps,
                    run.upload_mbps,
                    started.elapsed()
                );
                if i > 0 {
                    runs.push(run);
                }
            }
            Ok(runs)
        })
        .await;
    let _ = b.close().await;
    runs
}

/// The figures' table for stderr.
pub fn table(lines: &[BenchLine]) -> String {
    let mut out = String::from("\ntunnel (real flock + intrustd on loopback)\n");
    for l in lines {
        let v = l
            .value
            .map_or("—".to_string(), |v| format!("{v:.2} {}", l.unit));
        out.push_str(&format!(
            "  {:<26} {:>14}  (runs {})\n",
            l.metric, v, l.runs
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!((min(&[2.0, 1.0]), max(&[2.0, 1.0])), (1.0, 2.0));
    }

    #[test]
    fn memory_of_this_process_is_read_from_proc() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.rss_mib > 0.0 && m.rss_mib <= m.hwm_mib, "{m:?}");
        assert!(memory(u32::MAX).is_err());
    }

    #[test]
    fn figures_carry_units_and_a_missing_one_says_why() {
        let l = line("connect_rust_ms", Some(10.126), "ms", 20, "n".into());
        assert_eq!(
            (l.metric, l.value, l.better),
            ("connect_rust_ms", Some(10.13), "lower")
        );
        let m = missing("chromium_upload_mbps", "Chromium did not start\nmore");
        assert_eq!(
            (m.metric, m.unit, m.better),
            ("chromium_upload_mbps", "MB/s", "higher")
        );
        assert_eq!((m.value, m.runs), (None, 0));
        assert_eq!(m.note, "not measured: Chromium did not start");
        let json: Value = serde_json::from_str(&m.to_string()).unwrap();
        assert_eq!(json["value"], Value::Null);
        assert_eq!(json["bench"], "tunnel");
    }
}
