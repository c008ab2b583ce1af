//! The HIL scenarios end to end: a real `intrustd` (built first if needed)
//! with the simulated board, one fresh daemon per scenario.
//!
//! `INTRUST_HIL_INTRUSTD` names another binary (e.g. the aarch64 build) and
//! `INTRUST_HIL_LAUNCHER` a command prefix for it (e.g.
//! `qemu-aarch64 -L /usr/aarch64-linux-gnu`). Records go to
//! `target/hil-records/`; a failing test prints its record.

use intrust_hil::record::{self, Outcome};
use intrust_hil::scenarios;
use intrust_hil::sim_rig::SimRigFactory;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The daemon binary, built once per test process.
fn factory() -> SimRigFactory {
    static INTRUSTD: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let bin = INTRUSTD.get_or_init(|| {
        intrust_hil::daemon::build_intrustd_for_tests().map_err(|e| format!("{e:#}"))
    });
    match bin {
        Ok(path) => SimRigFactory::new(
            path.clone(),
            std::env::var("INTRUST_HIL_LAUNCHER").ok().as_deref(),
        ),
        Err(e) => panic!("cannot get an intrustd to test: {e}"),
    }
}

async fn passes(name: &str) {
    let scenario = scenarios::find(name).unwrap_or_else(|| panic!("no scenario {name}"));
    let factory = factory();
    // The scenario has its own timeout; this one also bounds the rig's startup.
    let limit = scenario.timeout + factory.startup_timeout + Duration::from_secs(10);
    let record = tokio::time::timeout(limit, scenarios::run(&factory, scenario))
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {limit:?}"));
    let path = record.write_to(&record::default_dir());
    assert_eq!(
        record.outcome,
        Outcome::Pass,
        "{name}: {}\nrecord {path:?}:\n{}",
        record.first_problem().unwrap_or_default(),
        serde_json::to_string_pretty(&record).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_unpaired() {
    passes("boot-unpaired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_window() {
    passes("pair-window").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_arm_release() {
    passes("reset-arm-release").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_cancel() {
    passes("reset-cancel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounce() {
    passes("bounce").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn led_latency() {
    passes("led-latency").await;
}
