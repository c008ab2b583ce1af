//! Repeated PAIR taps and their latencies, for the `led-latency` scenario
//! and the board benchmark.
//!
//! Each tap: wait for the unpaired pattern, press PAIR for a tap's length,
//! release, wait for the pairing pattern, close the window over the control
//! interface. Two latencies per tap: the DUT's own (debounced release edge →
//! LED change, both DUT timestamps) where the rig can see it, and the rig's
//! end to end (release sent → LED change received, which includes the
//! board's debounce).

use crate::expect;
use crate::rig::{sleep_until, Rig};
use anyhow::bail;
use intrust_board::{Button, Edge, LedRole, Mono};
use std::time::Duration;

/// How long a tap waits for the pairing pattern before calling it missed.
const TAP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for the DUT's edge report after the LED change.
const EDGE_REPORT_TIMEOUT: Duration = Duration::from_millis(500);

/// Latencies of one tap, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TapSample {
    /// Debounced release edge → LED change (DUT clock); `None` if the rig
    /// cannot see the DUT's edges or the report was missing.
    pub dut_ms: Option<f64>,
    /// Release sent → LED change received (rig clock).
    pub e2e_ms: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TapRun {
    pub samples: Vec<TapSample>,
    /// Taps after which the pairing pattern did not appear.
    pub missed: usize,
    pub elapsed: Duration,
}

impl TapRun {
    pub fn dut_ms(&self) -> Vec<f64> {
        self.samples.iter().filter_map(|s| s.dut_ms).collect()
    }
    pub fn e2e_ms(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.e2e_ms).collect()
    }
}

/// Runs `count` taps of length `tap`; `progress` is called after each.
pub async fn run_taps(
    rig: &dyn Rig,
    count: usize,
    tap: Duration,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<TapRun> {
    let started = std::time::Instant::now();
    let mut run = TapRun::default();
    for i in 0..count {
        if rig
            .wait_for(LedRole::Status, &expect::is_unpaired, TAP_TIMEOUT)
            .await?
            .is_none()
        {
            let now = rig.current(LedRole::Status).await?;
            bail!(
                "before tap {}: the status LED shows {} instead of the unpaired pattern",
                i + 1,
                now.pattern
            );
        }
        let pressed = rig.press(Button::Pair).await?;
        sleep_until(pressed + tap).await;
        let released = rig.release(Button::Pair).await?;
        let Some(shown) = rig
            .wait_for(LedRole::Status, &expect::is_pairing, TAP_TIMEOUT)
            .await?
        else {
            run.missed += 1;
            progress(i + 1);
            continue;
        };
        let e2e_ms = ms(shown.rig_at.saturating_since(released));
        let dut_ms = match shown.dut_at_us {
            Some(led_us) => release_edge_us(rig, released)
                .await
                .map(|edge_us| (led_us as f64 - edge_us as f64) / 1000.0),
            None => None,
        };
        run.samples.push(TapSample { dut_ms, e2e_ms });
        rig.close_pairing_window().await?;
        progress(i + 1);
    }
    run.elapsed = started.elapsed();
    Ok(run)
}

/// The DUT's timestamp of the first debounced PAIR release reported after
/// `released`, waiting a little for the report if it trails the LED change.
async fn release_edge_us(rig: &dyn Rig, released: Mono) -> Option<u64> {
    let deadline = Mono::now() + EDGE_REPORT_TIMEOUT;
    loop {
        let edges = rig.dut_edges_since(released)?;
        if let Some(e) = edges
            .iter()
            .find(|e| e.button == Button::Pair && e.edge == Edge::Release)
        {
            return Some(e.dut_at_us);
        }
        if Mono::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (nearest rank) of `values`; `None` if empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
