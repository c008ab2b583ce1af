//! Scenarios against a scripted rig, without any daemon: proves the
//! scenarios depend on the `Rig` trait only, and that a DUT that misbehaves
//! gives a FAIL record (not a PASS, not an ERROR).

use intrust_board::{Button, LedPattern, LedRole, Mono};
use intrust_hil::record::Outcome;
use intrust_hil::rig::{
    BoxFuture, DutEdge, DutIdentity, DutSettings, DutStatus, Observation, PatternPredicate, Rig,
    RigFactory, RigInfo, Timeline,
};
use intrust_hil::scenarios;
use std::collections::BTreeMap;
use std::time::Duration;

/// A DUT whose LEDs never change.
struct StuckRig {
    status: LedPattern,
    link: LedPattern,
}

impl StuckRig {
    fn obs(&self, led: LedRole) -> Observation {
        let pattern = match led {
            LedRole::Status => self.status.clone(),
            LedRole::Link => self.link.clone(),
        };
        Observation {
            pattern,
            rig_at: Mono::now(),
            dut_at_us: None,
        }
    }
}

impl Rig for StuckRig {
    fn info(&self) -> RigInfo {
        RigInfo {
            kind: "stuck".into(),
            host: "test".into(),
            launcher: None,
        }
    }
    fn press(&self, _: Button) -> BoxFuture<'_, anyhow::Result<Mono>> {
        Box::pin(async { Ok(Mono::now()) })
    }
    fn release(&self, _: Button) -> BoxFuture<'_, anyhow::Result<Mono>> {
        Box::pin(async { Ok(Mono::now()) })
    }
    fn current(&self, led: LedRole) -> BoxFuture<'_, anyhow::Result<Observation>> {
        Box::pin(async move { Ok(self.obs(led)) })
    }
    fn observe(&self, led: LedRole, window: Duration) -> BoxFuture<'_, anyhow::Result<Timeline>> {
        Box::pin(async move {
            let start = Mono::now();
            Ok(Timeline {
                led,
                start,
                end: start + window,
                entries: vec![self.obs(led)],
            })
        })
    }
    fn wait_for<'a>(
        &'a self,
        led: LedRole,
        pred: PatternPredicate<'a>,
        _timeout: Duration,
    ) -> BoxFuture<'a, anyhow::Result<Option<Observation>>> {
        // Nothing ever changes, so there is no point in waiting.
        Box::pin(async move {
            let o = self.obs(led);
            Ok(pred(&o.pattern).then_some(o))
        })
    }
    fn dut_edges_since(&self, _: Mono) -> Option<Vec<DutEdge>> {
        None
    }
    fn status(&self) -> BoxFuture<'_, anyhow::Result<DutStatus>> {
        Box::pin(async {
            Ok(DutStatus {
                identity: DutIdentity {
                    id: "stuck-1".into(),
                    board: "test".into(),
                    versions: BTreeMap::new(),
                },
                state: "unpaired".into(),
                pairing_window_open: false,
                factory_reset_requests: 0,
            })
        })
    }
    fn close_pairing_window(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

struct StuckFactory(LedPattern);

impl RigFactory for StuckFactory {
    fn info(&self) -> RigInfo {
        RigInfo {
            kind: "stuck".into(),
            host: "test".into(),
            launcher: None,
        }
    }
    fn start<'a>(&'a self, _: &'a DutSettings) -> BoxFuture<'a, anyhow::Result<Box<dyn Rig>>> {
        Box::pin(async move {
            Ok(Box::new(StuckRig {
                status: self.0.clone(),
                link: LedPattern::Off,
            }) as Box<dyn Rig>)
        })
    }
}

struct BrokenFactory;

impl RigFactory for BrokenFactory {
    fn info(&self) -> RigInfo {
        RigInfo {
            kind: "broken".into(),
            host: "test".into(),
            launcher: Some("nothing".into()),
        }
    }
    fn start<'a>(&'a self, _: &'a DutSettings) -> BoxFuture<'a, anyhow::Result<Box<dyn Rig>>> {
        Box::pin(async { Err(anyhow::anyhow!("no DUT on this bench")) })
    }
}

#[tokio::test]
async fn a_dut_showing_the_wrong_pattern_fails_with_the_reason() {
    let factory = StuckFactory(LedPattern::On);
    let rec = scenarios::run(&factory, scenarios::find("boot-unpaired").unwrap()).await;
    assert_eq!(rec.outcome, Outcome::Fail);
    assert_eq!(rec.dut.id.as_deref(), Some("stuck-1"));
    let problem = rec.first_problem().unwrap();
    assert!(
        problem.contains("status_led") && problem.contains("\"on\""),
        "{problem}"
    );
    // The record round-trips through JSON with the same verdict.
    let json = serde_json::to_string(&rec).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["outcome"], "FAIL");
    assert_eq!(v["rig"]["kind"], "stuck");
}

#[tokio::test]
async fn a_dut_that_never_arms_fails_reset_scenarios() {
    let factory = StuckFactory(LedPattern::Blink {
        on_ms: 500,
        off_ms: 500,
    });
    for name in ["reset-arm-release", "reset-cancel", "pair-window"] {
        let rec = scenarios::run(&factory, scenarios::find(name).unwrap()).await;
        assert_eq!(rec.outcome, Outcome::Fail, "{name}: {rec:#?}");
    }
    // A DUT whose LEDs never change does pass the boot and bounce checks.
    for name in ["boot-unpaired", "bounce"] {
        let rec = scenarios::run(&factory, scenarios::find(name).unwrap()).await;
        assert_eq!(
            rec.outcome,
            Outcome::Pass,
            "{name}: {:?}",
            rec.first_problem()
        );
    }
}

#[tokio::test]
async fn a_rig_that_does_not_start_is_an_error_record() {
    let rec = scenarios::run(&BrokenFactory, scenarios::find("bounce").unwrap()).await;
    assert_eq!(rec.outcome, Outcome::Error);
    assert_eq!(rec.rig.launcher.as_deref(), Some("nothing"));
    assert!(rec.dut.id.is_none());
    assert_eq!(
        rec.steps[0].message.as_deref(),
        Some("no DUT on this bench")
    );
}
