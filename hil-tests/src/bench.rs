//! `intrust-hil bench board`: PAIR taps as fast as the gestures allow, with
//! the figures printed as BENCH.md lines (stdout) and a table (stderr).

use crate::rig::{DutSettings, RigFactory};
use crate::taps::{percentile, run_taps, TapRun};
use serde::Serialize;
use std::time::Duration;

/// Tap length for the benchmark: just over the 50 ms a PAIR press needs.
pub const BENCH_TAP: Duration = Duration::from_millis(55);

/// Runs `presses` taps on a fresh DUT and returns the taps.
pub async fn board(factory: &dyn RigFactory, presses: usize) -> anyhow::Result<TapRun> {
    let rig = factory.start(&DutSettings::default()).await?;
    let step = (presses / 10).max(1);
    run_taps(&*rig, presses, BENCH_TAP, |done| {
        if done % step == 0 {
            eprintln!("bench board: {done}/{presses} presses");
        }
    })
    .await
}

/// One figure in the format of BENCH.md (fields in its order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchLine {
    pub bench: &'static str,
    pub metric: &'static str,
    pub value: Option<f64>,
    pub unit: &'static str,
    pub better: &'static str,
    pub baseline: Option<String>,
    pub baseline_value: Option<f64>,
    pub ratio: Option<f64>,
    pub runs: usize,
    pub note: String,
}

impl std::fmt::Display for BenchLine {
    /// The line as printed: one JSON object, no newline.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}

/// The BENCH.md lines for a run, in print order.
pub fn lines(run: &TapRun, presses: usize) -> Vec<BenchLine> {
    let dut = run.dut_ms();
    let e2e = run.e2e_ms();
    let line = |metric: &'static str, value: Option<f64>, note: String| BenchLine {
        bench: "board",
        metric,
        value: value.map(round3),
        unit: "ms",
        better: "lower",
        baseline: None,
        baseline_value: None,
        ratio: None,
        runs: presses,
        note,
    };
    let server = format!(
        "sim board, {} PAIR taps of {} ms ({} timed, {} missed): debounced release edge to LED change, intrustd's own timestamps",
        presses,
        BENCH_TAP.as_millis(),
        dut.len(),
        run.missed
    );
    let e2e_note = format!(
        "sim board, {} PAIR taps of {} ms: rig sends release to rig receives the LED change, includes the board's debounce",
        presses,
        BENCH_TAP.as_millis()
    );
    vec![
        line(
            "button_to_led_p50_ms",
            percentile(&dut, 50.0),
            server.clone(),
        ),
        line("button_to_led_p99_ms", percentile(&dut, 99.0), server),
        line("button_to_led_e2e_p99_ms", percentile(&e2e, 99.0), e2e_note),
    ]
}

/// The human table.
pub fn table(run: &TapRun) -> String {
    let row = |name: &str, v: &[f64]| {
        let f = |p| percentile(v, p).map_or("-".to_owned(), |x| format!("{x:.3}"));
        format!(
            "{name:<34} {:>6} {:>9} {:>9} {:>9}\n",
            v.len(),
            f(50.0),
            f(99.0),
            f(100.0)
        )
    };
    let mut s = format!(
        "{:<34} {:>6} {:>9} {:>9} {:>9}\n",
        "latency (ms)", "n", "p50", "p99", "max"
    );
    s += &row("debounced edge -> LED (intrustd)", &run.dut_ms());
    s += &row("release sent -> LED seen (rig)", &run.e2e_ms());
    s += &format!(
        "missed taps: {}, wall time: {:.1} s\n",
        run.missed,
        run.elapsed.as_secs_f64()
    );
    s
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taps::TapSample;

    #[test]
    fn bench_lines_follow_bench_md() {
        let run = TapRun {
            samples: (1..=100)
                .map(|i| TapSample {
                    dut_ms: Some(f64::from(i) / 100.0),
                    e2e_ms: 20.0,
                })
                .collect(),
            missed: 0,
            elapsed: Duration::from_secs(1),
        };
        let printed: Vec<String> = lines(&run, 100).iter().map(|l| l.to_string()).collect();
        // BENCH.md's field order, one object per line.
        assert!(
            printed[0].starts_with(r#"{"bench":"board","metric":"button_to_led_p50_ms","value":0.5,"unit":"ms","better":"lower","#),
            "{}",
            printed[0]
        );
        let lines: Vec<serde_json::Value> = printed
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let metrics: Vec<_> = lines
            .iter()
            .map(|l| l["metric"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            metrics,
            [
                "button_to_led_p50_ms",
                "button_to_led_p99_ms",
                "button_to_led_e2e_p99_ms"
            ]
        );
        for l in &lines {
            assert_eq!(l["bench"], "board");
            assert_eq!(l["unit"], "ms");
            assert_eq!(l["runs"], 100);
            assert!(
                l["baseline"].is_null() && l["baseline_value"].is_null() && l["ratio"].is_null()
            );
            assert!(!l["note"].as_str().unwrap().is_empty());
            assert_eq!(l["better"], "lower");
        }
        assert_eq!(lines[0]["value"], 0.5);
        assert_eq!(lines[1]["value"], 0.99);
        assert_eq!(lines[2]["value"], 20.0);
    }
}
