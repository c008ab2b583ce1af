//! The HIL scenarios: each one a function of a [`Rig`] and a [`Recorder`],
//! run on a fresh DUT configured as the scenario asks.
//!
//! Scenarios record what they see as measurements with limits and return
//! early (`Ok`) when the rest would be meaningless; `Err` means the rig lost
//! the DUT, and makes the run `ERROR`. Timing limits leave room for a busy
//! CI machine; the exact figures are in the record.

use crate::expect;
use crate::record::{DutRecord, Limits, Record, Recorder, RigRecord};
use crate::rig::{sleep_until, BoxFuture, DutSettings, Observation, Rig, RigFactory};
use crate::taps::{percentile, run_taps};
use intrust_board::{Button, Edge, LedPattern, LedRole, Mono};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// A scenario's body.
pub type ScenarioFn =
    for<'a> fn(&'a dyn Rig, &'a mut Recorder) -> BoxFuture<'a, anyhow::Result<()>>;

pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    /// How the DUT must be configured.
    pub settings: fn() -> DutSettings,
    /// Longest the body may take (the rig's startup is not included).
    pub timeout: Duration,
    pub run: ScenarioFn,
}

/// Pairing window length for the scenarios that wait for it to close.
const SHORT_WINDOW: Duration = Duration::from_secs(3);
/// Length of the taps in `led-latency` (a PAIR press counts from 50 ms).
pub const LATENCY_TAP: Duration = Duration::from_millis(60);
pub const LATENCY_TAPS: usize = 50;
/// Limits for the DUT's debounced-edge → LED latency in this scenario. They
/// catch a broken or blocked LED path, not a slow machine: the median must
/// be within the 5 ms target, the p99 within what a person perceives as
/// instant (CI machines are shared and noisy). The p99 ≤ 5 ms target itself
/// is measured, not asserted, by `intrust-hil bench board` over ≥ 1,000
/// presses.
pub const LATENCY_P50_LIMIT_MS: f64 = 5.0;
pub const LATENCY_P99_LIMIT_MS: f64 = 50.0;
/// Armed seen this long after pressing RESET (configured: 5 s).
const ARMED_WINDOW_S: (f64, f64) = (4.9, 5.6);
/// Armed reset cancelled this long after pressing RESET (configured: 30 s).
const CANCEL_WINDOW_S: (f64, f64) = (29.9, 30.6);
/// The same two delays on the DUT's clock, from the report of its debounced
/// press edge: no transport in between, so tighter. The agent times the
/// gesture from the edge itself, which precedes the report by the debounce
/// time, hence the lower bound below 5 s.
const ARMED_DUT_S: (f64, f64) = (4.9, 5.3);
const CANCEL_DUT_S: (f64, f64) = (29.9, 30.3);

fn default_settings() -> DutSettings {
    DutSettings::default()
}

fn short_window_settings() -> DutSettings {
    DutSettings {
        pairing_window: SHORT_WINDOW,
        ..DutSettings::default()
    }
}

pub static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "boot-unpaired",
        summary: "after boot the status LED shows unpaired (blink 500/500) and link is off",
        settings: default_settings,
        timeout: Duration::from_secs(20),
        run: |rig, rec| Box::pin(boot_unpaired(rig, rec)),
    },
    Scenario {
        name: "pair-window",
        summary: "a 200 ms PAIR press opens the pairing window (double blink) until it times out",
        settings: short_window_settings,
        timeout: Duration::from_secs(30),
        run: |rig, rec| Box::pin(pair_window(rig, rec)),
    },
    Scenario {
        name: "reset-arm-release",
        summary: "RESET held 5.5 s arms (fast blink) at ~5 s; release requests a factory reset",
        settings: default_settings,
        timeout: Duration::from_secs(30),
        run: |rig, rec| Box::pin(reset_arm_release(rig, rec)),
    },
    Scenario {
        name: "reset-cancel",
        summary: "RESET held 31 s arms at ~5 s, cancels at ~30 s; release does nothing",
        settings: default_settings,
        timeout: Duration::from_secs(60),
        run: |rig, rec| Box::pin(reset_cancel(rig, rec)),
    },
    Scenario {
        name: "bounce",
        summary: "bursts of 5 ms bounces on PAIR and RESET change nothing",
        settings: default_settings,
        timeout: Duration::from_secs(30),
        run: |rig, rec| Box::pin(bounce(rig, rec)),
    },
    Scenario {
        name: "led-latency",
        summary: "50 PAIR taps: debounced edge to LED change p50 <= 5 ms, p99 <= 50 ms (and rig end-to-end)",
        settings: default_settings,
        timeout: Duration::from_secs(120),
        run: |rig, rec| Box::pin(led_latency(rig, rec)),
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Runs `scenario` on a fresh rig from `factory` and returns its record.
/// Never fails: a rig that does not start is an `ERROR` record.
pub async fn run(factory: &dyn RigFactory, scenario: &Scenario) -> Record {
    let mut rec = Recorder::new(scenario.name);
    let unknown = DutRecord {
        id: None,
        board: None,
        versions: BTreeMap::new(),
    };
    rec.step("start rig");
    let rig = match factory.start(&(scenario.settings)()).await {
        Ok(rig) => rig,
        Err(e) => {
            return rec.finish(
                unknown,
                RigRecord::from(&factory.info()),
                Some(format!("{e:#}")),
            )
        }
    };
    let rig_record = RigRecord::from(&rig.info());
    rec.step("identify DUT");
    let dut = match rig.identity().await {
        Ok(id) => {
            rec.check(
                "device_id",
                json!(id.id),
                json!("non-empty"),
                !id.id.is_empty(),
            );
            DutRecord::from(&id)
        }
        Err(e) => return rec.finish(unknown, rig_record, Some(format!("{e:#}"))),
    };
    let outcome = tokio::time::timeout(scenario.timeout, (scenario.run)(&*rig, &mut rec)).await;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("{e:#}")),
        Err(_) => Some(format!(
            "scenario did not finish within {:?}",
            scenario.timeout
        )),
    };
    rec.finish(dut, rig_record, error)
}

fn secs_between(later: Mono, earlier: Mono) -> f64 {
    later.saturating_since(earlier).as_secs_f64()
}

fn ms_between(later: Mono, earlier: Mono) -> f64 {
    later.saturating_since(earlier).as_secs_f64() * 1000.0
}

fn pattern_json(p: &LedPattern) -> serde_json::Value {
    serde_json::to_value(p).unwrap_or(serde_json::Value::Null)
}

/// Step: the DUT is idle and unpaired. Returns false if it is not.
async fn expect_idle_unpaired(rig: &dyn Rig, rec: &mut Recorder) -> anyhow::Result<bool> {
    rec.step("idle and unpaired");
    let seen = rig
        .wait_for(
            LedRole::Status,
            &expect::is_unpaired,
            Duration::from_secs(3),
        )
        .await?;
    let now = rig.current(LedRole::Status).await?;
    let ok = rec.check(
        "status_led",
        pattern_json(&now.pattern),
        pattern_json(&expect::unpaired()),
        seen.is_some(),
    );
    let st = rig.status().await?;
    let ok = rec.check_eq("state", &st.state.as_str(), &"unpaired") && ok;
    rec.measure(
        "factory_reset_requests",
        Some(st.factory_reset_requests as f64),
        "",
        Some(Limits::exactly(0.0)),
    );
    Ok(ok)
}

/// `boot-unpaired`
pub async fn boot_unpaired(rig: &dyn Rig, rec: &mut Recorder) -> anyhow::Result<()> {
    expect_idle_unpaired(rig, rec).await?;
    let st = rig.status().await?;
    rec.check_eq("pairing_window_open", &st.pairing_window_open, &false);
    rec.step("link LED off");
    let link = rig.current(LedRole::Link).await?;
    rec.check_eq("link_led", &link.pattern, &LedPattern::Off);
    Ok(())
}

/// `pair-window`
pub async fn pair_window(rig: &dyn Rig, rec: &mut Recorder) -> anyhow::Result<()> {
    if !expect_idle_unpaired(rig, rec).await? {
        return Ok(());
    }
    rec.step("tap PAIR for 200 ms");
    let (_, released) = rig.hold(Button::Pair, Duration::from_millis(200)).await?;
    let shown = rig
        .wait_for(LedRole::Status, &expect::is_pairing, Duration::from_secs(1))
        .await?;
    let now = rig.current(LedRole::Status).await?;
    rec.check(
        "status_led",
        pattern_json(&now.pattern),
        json!(expect::PAIRING_DESCRIPTION),
        shown.is_some(),
    );
    let Some(shown) = shown else { return Ok(()) };
    rec.measure(
        "pairing_shown_after_release",
        Some(ms_between(shown.rig_at, released)),
        "ms",
        Some(Limits::between(0.0, 500.0)),
    );
    let st = rig.status().await?;
    rec.check_eq("pairing_window_open", &st.pairing_window_open, &true);

    rec.step("still open just before the window ends");
    sleep_until(shown.rig_at + SHORT_WINDOW - Duration::from_millis(300)).await;
    let now = rig.current(LedRole::Status).await?;
    rec.check(
        "status_led",
        pattern_json(&now.pattern),
        json!(expect::PAIRING_DESCRIPTION),
        expect::is_pairing(&now.pattern),
    );

    rec.step("window times out");
    let deadline = shown.rig_at + SHORT_WINDOW + Duration::from_millis(1500);
    let closed = rig
        .wait_for(
            LedRole::Status,
            &expect::is_unpaired,
            deadline.saturating_since(Mono::now()),
        )
        .await?;
    let window = SHORT_WINDOW.as_secs_f64();
    rec.measure(
        "window_open_s",
        closed
            .as_ref()
            .map(|c| secs_between(c.rig_at, shown.rig_at)),
        "s",
        Some(Limits::between(window - 0.1, window + 0.6)),
    );
    if let (Some(from), Some(to)) = (shown.dut_at_us, closed.as_ref().and_then(|c| c.dut_at_us)) {
        rec.measure(
            "window_open_dut_s",
            Some(to.saturating_sub(from) as f64 / 1e6),
            "s",
            Some(Limits::between(window - 0.05, window + 0.5)),
        );
    }
    let st = rig.status().await?;
    rec.check_eq("pairing_window_open", &st.pairing_window_open, &false);
    rec.check_eq("state", &st.state.as_str(), &"unpaired");
    Ok(())
}

/// Where the rig sees the DUT's own timestamps: seconds from the debounced
/// RESET press (reported after `pressed`) to the LED change `led`.
fn measure_dut_delay(
    rig: &dyn Rig,
    rec: &mut Recorder,
    name: &str,
    pressed: Mono,
    led: &Observation,
    limits: (f64, f64),
) {
    let Some(edges) = rig.dut_edges_since(pressed) else {
        return;
    };
    let edge = edges
        .iter()
        .find(|e| e.button == Button::Reset && e.edge == Edge::Press);
    if let (Some(edge), Some(led_us)) = (edge, led.dut_at_us) {
        let secs = led_us.saturating_sub(edge.dut_at_us) as f64 / 1e6;
        rec.measure(
            name,
            Some(secs),
            "s",
            Some(Limits::between(limits.0, limits.1)),
        );
    }
}

/// Presses RESET and waits for the armed pattern; records when it came.
/// Returns the press time and whether it armed.
async fn press_reset_until_armed(
    rig: &dyn Rig,
    rec: &mut Recorder,
) -> anyhow::Result<(Mono, bool)> {
    rec.step("hold RESET until armed");
    let pressed = rig.press(Button::Reset).await?;
    let armed = rig
        .wait_for(
            LedRole::Status,
            &expect::is_reset_armed,
            Duration::from_millis(7500),
        )
        .await?;
    rec.measure(
        "armed_after_s",
        armed.as_ref().map(|a| secs_between(a.rig_at, pressed)),
        "s",
        Some(Limits::between(ARMED_WINDOW_S.0, ARMED_WINDOW_S.1)),
    );
    if let Some(a) = &armed {
        measure_dut_delay(rig, rec, "armed_after_dut_s", pressed, a, ARMED_DUT_S);
    }
    if armed.is_none() {
        let now = rig.current(LedRole::Status).await?;
        rec.note(format!(
            "status LED shows {} instead of the armed fast blink",
            now.pattern
        ));
    }
    Ok((pressed, armed.is_some()))
}

/// Polls the DUT's reset request count until it reaches `want` or `timeout`.
async fn reset_requests_after(rig: &dyn Rig, want: u64, timeout: Duration) -> anyhow::Result<u64> {
    let deadline = Mono::now() + timeout;
    loop {
        let n = rig.status().await?.factory_reset_requests;
        if n >= want || Mono::now() >= deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `reset-arm-release`
pub async fn reset_arm_release(rig: &dyn Rig, rec: &mut Recorder) -> anyhow::Result<()> {
    if !expect_idle_unpaired(rig, rec).await? {
        return Ok(());
    }
    let (pressed, armed) = press_reset_until_armed(rig, rec).await?;
    if !armed {
        rig.release(Button::Reset).await?;
        return Ok(());
    }
    rec.step("release at 5.5 s");
    sleep_until(pressed + Duration::from_millis(5500)).await;
    let released = rig.release(Button::Reset).await?;
    let not_armed = |p: &LedPattern| !expect::is_reset_armed(p);
    let left = rig
        .wait_for(LedRole::Status, &not_armed, Duration::from_secs(2))
        .await?;
    rec.measure(
        "left_armed_after_release_ms",
        left.as_ref().map(|l| ms_between(l.rig_at, released)),
        "ms",
        Some(Limits::between(0.0, 1000.0)),
    );
    if let Some(l) = &left {
        rec.note(format!("status LED after release: {}", l.pattern));
    }
    rec.step("factory reset requested");
    let n = reset_requests_after(rig, 1, Duration::from_secs(2)).await?;
    rec.measure(
        "factory_reset_requests",
        Some(n as f64),
        "",
        Some(Limits::exactly(1.0)),
    );
    Ok(())
}

/// `reset-cancel`
pub async fn reset_cancel(rig: &dyn Rig, rec: &mut Recorder) -> anyhow::Result<()> {
    if !expect_idle_unpaired(rig, rec).await? {
        return Ok(());
    }
    let before = rig.current(LedRole::Status).await?.pattern;
    let (pressed, armed) = press_reset_until_armed(rig, rec).await?;
    if !armed {
        rig.release(Button::Reset).await?;
        return Ok(());
    }
    rec.step("still holding at 30 s cancels");
    let same = |p: &LedPattern| *p == before;
    let back = rig
        .wait_for(
            LedRole::Status,
            &same,
            (pressed + Duration::from_secs(32)).saturating_since(Mono::now()),
        )
        .await?;
    rec.measure(
        "cancelled_after_s",
        back.as_ref().map(|b| secs_between(b.rig_at, pressed)),
        "s",
        Some(Limits::between(CANCEL_WINDOW_S.0, CANCEL_WINDOW_S.1)),
    );
    if let Some(b) = &back {
        measure_dut_delay(rig, rec, "cancelled_after_dut_s", pressed, b, CANCEL_DUT_S);
    }
    let now = rig.current(LedRole::Status).await?;
    rec.check(
        "status_led",
        pattern_json(&now.pattern),
        pattern_json(&before),
        now.pattern == before,
    );

    rec.step("release at 31 s does nothing");
    sleep_until(pressed + Duration::from_secs(31)).await;
    rig.release(Button::Reset).await?;
    let after = rig.observe(LedRole::Status, Duration::from_secs(1)).await?;
    rec.measure(
        "status_led_changes",
        Some(after.changes().len() as f64),
        "",
        Some(Limits::exactly(0.0)),
    );
    let n = rig.status().await?.factory_reset_requests;
    rec.measure(
        "factory_reset_requests",
        Some(n as f64),
        "",
        Some(Limits::exactly(0.0)),
    );
    Ok(())
}

/// `bounce`
pub async fn bounce(rig: &dyn Rig, rec: &mut Recorder) -> anyhow::Result<()> {
    if !expect_idle_unpaired(rig, rec).await? {
        return Ok(());
    }
    for button in [Button::Pair, Button::Reset] {
        rec.step(&format!("20 bounces of 5 ms on {button}"));
        let start = Mono::now();
        let burst = async {
            for i in 0..20 {
                if i % 2 == 0 {
                    rig.press(button).await?;
                } else {
                    rig.release(button).await?;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(())
        };
        let window = Duration::from_millis(1000);
        let (burst, status, link) = tokio::join!(
            burst,
            rig.observe(LedRole::Status, window),
            rig.observe(LedRole::Link, window)
        );
        burst?;
        let (status, link) = (status?, link?);
        rec.measure(
            "status_led_changes",
            Some(status.changes().len() as f64),
            "",
            Some(Limits::exactly(0.0)),
        );
        rec.measure(
            "link_led_changes",
            Some(link.changes().len() as f64),
            "",
            Some(Limits::exactly(0.0)),
        );
        if let Some(edges) = rig.dut_edges_since(start) {
            let n = edges.iter().filter(|e| e.button == button).count();
            rec.measure("debounced_edges", Some(n as f64), "", None);
        }
    }
    rec.step("nothing happened");
    let st = rig.status().await?;
    rec.check_eq("state", &st.state.as_str(), &"unpaired");
    rec.check_eq("pairing_window_open", &st.pairing_window_open, &false);
    rec.measure(
        "factory_reset_requests",
        Some(st.factory_reset_requests as f64),
        "",
        Some(Limits::exactly(0.0)),
    );
    Ok(())
}

/// `led-latency`
pub async fn led_latency(rig: &dyn Rig, rec: &mut Recorder) -> anyhow::Result<()> {
    if !expect_idle_unpaired(rig, rec).await? {
        return Ok(());
    }
    rec.step(&format!(
        "{LATENCY_TAPS} PAIR taps of {} ms",
        LATENCY_TAP.as_millis()
    ));
    let run = run_taps(rig, LATENCY_TAPS, LATENCY_TAP, |_| {}).await?;
    rec.measure(
        "taps_that_opened_the_window",
        Some(run.samples.len() as f64),
        "",
        Some(Limits::exactly(LATENCY_TAPS as f64)),
    );
    rec.step("debounced release edge to LED change (DUT clock)");
    let dut = run.dut_ms();
    match rig.dut_edges_since(Mono::now()) {
        Some(_) => {
            rec.measure(
                "samples",
                Some(dut.len() as f64),
                "",
                Some(Limits::exactly(run.samples.len() as f64)),
            );
            rec.measure(
                "button_to_led_p50_ms",
                percentile(&dut, 50.0),
                "ms",
                Some(Limits::at_most(LATENCY_P50_LIMIT_MS)),
            );
            rec.measure(
                "button_to_led_p99_ms",
                percentile(&dut, 99.0),
                "ms",
                Some(Limits::at_most(LATENCY_P99_LIMIT_MS)),
            );
            rec.measure("button_to_led_max_ms", percentile(&dut, 100.0), "ms", None);
        }
        None => rec.note("this rig cannot see the DUT's debounced edges"),
    }
    rec.step("release sent to LED change seen (rig clock, includes debounce)");
    let e2e = run.e2e_ms();
    rec.measure(
        "button_to_led_e2e_p50_ms",
        percentile(&e2e, 50.0),
        "ms",
        None,
    );
    rec.measure(
        "button_to_led_e2e_p99_ms",
        percentile(&e2e, 99.0),
        "ms",
        None,
    );
    rec.measure(
        "button_to_led_e2e_max_ms",
        percentile(&e2e, 100.0),
        "ms",
        None,
    );
    Ok(())
}
