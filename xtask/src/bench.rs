//! `cargo xtask bench [GROUP]`: each group prints one JSON object per figure
//! on stdout (format in /work/shared/BENCH.md, kept in the README); builds
//! and tools write to stderr.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::cmd::{self, say};
use crate::cross;

mod tunnel;
mod update;

pub const GROUPS: &[(&str, &str)] = &[
    (
        "board",
        "button press to LED change on the simulated board (p50, p99)",
    ),
    (
        "footprint",
        "sizes of the stripped aarch64 intrustd, intrustctl and intrust-recovery",
    ),
    (
        "tunnel",
        "256 MiB through the WebRTC tunnel vs raw str0m and webrtc-rs; connect time (Rust, Chromium), Chromium download/upload, intrustd RSS",
    ),
    (
        "update",
        "install 256 MiB into a file slot: intrust-recovery vs dd | sha256sum and rauc (time, peak RSS)",
    ),
];

pub fn run(root: &Path, group: Option<&str>) -> Result<()> {
    if let Some(g) = group {
        if !GROUPS.iter().any(|(n, _)| *n == g) {
            let names: Vec<&str> = GROUPS.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown bench group {g:?}; the groups are: {}",
                names.join(", ")
            );
        }
    }
    match group {
        None => {
            for (name, _) in GROUPS {
                run_group(root, name)?;
            }
            Ok(())
        }
        Some(g) => run_group(root, g),
    }
}

fn run_group(root: &Path, group: &str) -> Result<()> {
    say(format!("bench group {group}"));
    match group {
        "board" => board(root),
        "footprint" => footprint(root),
        "tunnel" => tunnel::run(root),
        "update" => update::run(root),
        other => {
            let names: Vec<&str> = GROUPS.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown bench group {other:?}; the groups are: {}",
                names.join(", ")
            )
        }
    }
}

/// The HIL measures it: its stdout JSON lines pass straight through.
fn board(root: &Path) -> Result<()> {
    cmd::run_log(cmd::cargo().current_dir(root).args([
        "build",
        "--release",
        "-p",
        "intrust-agent",
        "-p",
        "intrust-hil",
    ]))?;
    let release = crate::target_dir(root).join("release");
    cmd::run(
        Command::new(release.join("intrust-hil"))
            .current_dir(root)
            .arg("--intrustd")
            .arg(release.join("intrustd"))
            .args(["bench", "board", "--presses", "1000"]),
    )
}

fn footprint(root: &Path) -> Result<()> {
    cross::install()?;
    let bins = cross::build_dist(root)?;
    for b in bins.iter().filter(|b| b.name != "intrust-hil") {
        let line = figure(&[
            ("bench", json!("footprint")),
            (
                "metric",
                json!(format!(
                    "size_{}_mib",
                    b.name.trim_start_matches("intrust-")
                )),
            ),
            ("value", json!((b.mib() * 1000.0).round() / 1000.0)),
            ("unit", json!("MiB")),
            ("better", json!("lower")),
            ("baseline", Value::Null),
            ("baseline_value", Value::Null),
            ("ratio", Value::Null),
            ("runs", json!(1)),
            (
                "note",
                json!(format!(
                    "{} release build, stripped ({} bytes)",
                    cross::TARGET,
                    b.bytes
                )),
            ),
        ]);
        println!("{line}");
    }
    Ok(())
}

/// One JSON object with the keys in BENCH.md's order (serde_json's map
/// would sort them).
fn figure(fields: &[(&str, Value)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_keeps_key_order_and_is_valid_json() {
        let line = figure(&[
            ("bench", json!("footprint")),
            ("metric", json!("size_\"x\"_mib")),
            ("value", json!(1.5)),
            ("ratio", Value::Null),
        ]);
        assert_eq!(
            line,
            r#"{"bench":"footprint","metric":"size_\"x\"_mib","value":1.5,"ratio":null}"#
        );
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["value"], json!(1.5));
    }
}
