//! `cargo xtask bench tunnel`: the WebRTC tunnel, in two halves.
//!
//! 1. Throughput on loopback, rounds interleaved, median of [`RUNS`]: a
//!    256 MiB HTTP GET through our tunnel (agent example `tunnel_bench
//!    download`: str0m-engine client, `serve_session`, hyper both ends)
//!    against a raw str0m data-channel pair (same example, same process) and
//!    a webrtc-rs pair (`bench/tunnel-baselines`, its own workspace and lock,
//!    built into `target/bench-baselines/` so the workspace never builds it).
//! 2. The real system (`intrust-hil bench tunnel`): flock, a release
//!    intrustd and hello-app; connect time from a Rust client and from
//!    headless Chromium, Chromium download/upload, intrustd's RSS. Its JSON
//!    lines pass straight through.
//!
//! Every child runs under a time limit; a part that fails says why and the
//! group fails after printing what it measured.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::figure;
use crate::cmd::{self, say, Limited};
use crate::{apt, web};

const BYTES: u64 = 256 << 20;
const RUNS: usize = 5;
/// One round of one side (a 256 MiB transfer, or two for `download`).
const ROUND_LIMIT: Duration = Duration::from_secs(240);
/// The whole real-system half.
const SYSTEM_LIMIT: Duration = Duration::from_secs(900);
const WEBRTC_RS: &str = "webrtc-rs 0.21.1";

pub fn run(root: &Path) -> Result<()> {
    let started = Instant::now();
    apt::ensure("bench tunnel (Chromium)", &["chromium", "chromium-driver"])?;
    web::build(root)?;
    cmd::run_log(cmd::cargo().current_dir(root).args([
        "build",
        "--release",
        "-p",
        "intrust-agent",
        "--bin",
        "intrustd",
        "--example",
        "tunnel_bench",
    ]))?;
    cmd::run_log(cmd::cargo().current_dir(root).args([
        "build",
        "--release",
        "-p",
        "flock",
        "-p",
        "hello-app",
        "-p",
        "intrust-hil",
    ]))?;
    let baselines = build_baselines(root)?;
    let release = crate::target_dir(root).join("release");
    let client = release.join("examples/tunnel_bench");

    let throughput = throughput(&client, &baselines);
    match &throughput {
        Ok(t) => print_throughput(t),
        Err(e) => say(format!("tunnel throughput failed: {e:#}")),
    }

    let system = cmd::run_limited(
        Command::new(release.join("intrust-hil"))
            .current_dir(root)
            .arg("--intrustd")
            .arg(release.join("intrustd"))
            .args(["bench", "tunnel", "--flock"])
            .arg(release.join("flock"))
            .arg("--hello-app")
            .arg(release.join("hello-app"))
            .arg("--client")
            .arg(&client)
            .arg("--portal")
            .arg(root.join("flock/web/dist"))
            .args(["--rust-runs", "20", "--sessions", "10"])
            .args(["--chromium-runs", "5", "--chromium-mib", "64"]),
        SYSTEM_LIMIT,
        false,
    );
    say(format!(
        "bench tunnel took {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    throughput.context("tunnel throughput")?;
    match system? {
        Limited::Exited(st, _) if st.success() => Ok(()),
        Limited::Exited(st, _) => bail!("intrust-hil bench tunnel failed ({st})"),
        Limited::TimedOut => bail!("intrust-hil bench tunnel took over {SYSTEM_LIMIT:?}"),
    }
}

/// `cargo build --release` of the baselines' own workspace.
fn build_baselines(root: &Path) -> Result<PathBuf> {
    let target = crate::target_dir(root).join("bench-baselines");
    cmd::run_log(
        cmd::cargo()
            .current_dir(root.join("bench/tunnel-baselines"))
            .args(["build", "--release", "--locked", "--target-dir"])
            .arg(&target),
    )
    .context("building the webrtc-rs baseline (bench/tunnel-baselines)")?;
    Ok(target.join("release/tunnel-baselines"))
}

/// Seconds per transfer of each side.
struct Throughput {
    tunnel: Vec<f64>,
    str0m_raw: Vec<f64>,
    webrtc_rs: Vec<f64>,
}

fn throughput(client: &Path, baseline: &Path) -> Result<Throughput> {
    let mut t = Throughput {
        tunnel: Vec::new(),
        str0m_raw: Vec::new(),
        webrtc_rs: Vec::new(),
    };
    let bytes = BYTES.to_string();
    for round in 1..=RUNS {
        say(format!("throughput round {round} of {RUNS}"));
        for v in
            json_lines(Command::new(client).args(["download", "--bytes", &bytes, "--runs", "1"]))?
        {
            let secs = secs_of(&v)?;
            match v["kind"].as_str() {
                Some("tunnel") => t.tunnel.push(secs),
                Some("str0m_raw") => t.str0m_raw.push(secs),
                _ => bail!("tunnel_bench printed {v}"),
            }
        }
        for v in json_lines(Command::new(baseline).args([
            "--bytes",
            &bytes,
            "--runs",
            "1",
            "--timeout-secs",
            "180",
        ]))? {
            t.webrtc_rs.push(secs_of(&v)?);
        }
    }
    for (name, v) in [
        ("tunnel", &t.tunnel),
        ("raw str0m", &t.str0m_raw),
        ("webrtc-rs", &t.webrtc_rs),
    ] {
        if v.len() != RUNS {
            bail!("{name}: {} of {RUNS} runs reported", v.len());
        }
    }
    Ok(t)
}

fn secs_of(v: &Value) -> Result<f64> {
    v["secs"]
        .as_f64()
        .filter(|s| *s > 0.0)
        .with_context(|| format!("no time in {v}"))
}

/// Runs `cmd` under [`ROUND_LIMIT`]; its stdout as JSON objects.
fn json_lines(cmd: &mut Command) -> Result<Vec<Value>> {
    match cmd::run_limited(cmd, ROUND_LIMIT, true)? {
        Limited::Exited(st, out) if st.success() => out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l:?}")))
            .collect(),
        Limited::Exited(st, _) => bail!("`{}` failed ({st})", cmd::display(cmd)),
        Limited::TimedOut => bail!(
            "`{}` did not finish within {ROUND_LIMIT:?}",
            cmd::display(cmd)
        ),
    }
}

fn mbps(secs: f64) -> f64 {
    BYTES as f64 / 1e6 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

fn print_throughput(t: &Throughput) {
    let ours = median(t.tunnel.iter().map(|s| mbps(*s)).collect());
    let raw = median(t.str0m_raw.iter().map(|s| mbps(*s)).collect());
    let wrs = median(t.webrtc_rs.iter().map(|s| mbps(*s)).collect());
    let ours_note = "256 MiB HTTP/1.1 GET through the tunnel on loopback (str0m-engine client, \
                     serve_session, hyper client on an `http/1.1` channel, hyper upstream \
                     streaming 64 KiB frames), request sent to last body byte; MB = 10^6 bytes";
    let lines = [
        throughput_line(
            "download_vs_str0m_raw",
            ours,
            "raw str0m 0.25 data channel",
            raw,
            format!(
                "{ours_note}; baseline: two bare str0m Rtc loops (one thread and UDP socket \
                 each, the engine's 256 KiB SCTP buffer and 128 KiB high-water mark) pushing \
                 256 MiB of 64 KiB binary messages on one ordered reliable channel, channel \
                 open to last byte received; same process, rounds interleaved; median of {RUNS}"
            ),
        ),
        throughput_line(
            "download_vs_webrtc_rs",
            ours,
            WEBRTC_RS,
            wrs,
            format!(
                "{ours_note}; baseline: a {WEBRTC_RS} (`webrtc` crate, tokio, ring) peer pair \
                 on 127.0.0.1 pushing 256 MiB of 64 KiB messages on one ordered reliable \
                 channel with a 16 MiB send-buffer limit, channel open to last byte received \
                 (bench/tunnel-baselines); rounds interleaved; median of {RUNS}"
            ),
        ),
    ];
    for l in &lines {
        println!("{l}");
    }
    eprintln!();
    eprintln!("tunnel throughput: 256 MiB on loopback, median of {RUNS}");
    for (name, v) in [
        ("our tunnel (HTTP GET)", ours),
        ("raw str0m data channel", raw),
        (WEBRTC_RS, wrs),
    ] {
        eprintln!("  {name:<28} {v:>8.1} MB/s");
    }
    eprintln!(
        "  ratios: {:.2}x raw str0m, {:.2}x webrtc-rs",
        ours / raw,
        ours / wrs
    );
}

fn throughput_line(
    metric: &str,
    value: f64,
    baseline: &str,
    baseline_value: f64,
    note: String,
) -> String {
    figure(&[
        ("bench", json!("tunnel")),
        ("metric", json!(metric)),
        ("value", json!(round(value, 1))),
        ("unit", json!("MB/s")),
        ("better", json!("higher")),
        ("baseline", json!(baseline)),
        ("baseline_value", json!(round(baseline_value, 1))),
        ("ratio", json!(round(value / baseline_value, 3))),
        ("runs", json!(RUNS)),
        ("note", json!(note)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_lines_are_bench_md_objects() {
        let line = throughput_line("download_vs_webrtc_rs", 60.0, WEBRTC_RS, 20.0, "n".into());
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["bench"], "tunnel");
        assert_eq!(v["ratio"], json!(3.0));
        assert_eq!(v["better"], "higher");
        assert_eq!(v["runs"], json!(RUNS));
        assert!(
            line.starts_with(r#"{"bench":"tunnel","metric":"download_vs_webrtc_rs","value":60.0,"#)
        );
    }

    #[test]
    fn median_and_rate() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!((mbps(BYTES as f64 / 1e6) - 1.0).abs() < 1e-9);
    }
}
