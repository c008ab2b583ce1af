//! Test records in the spirit of OpenHTF: one JSON document per scenario
//! run, with the DUT, the rig, and steps holding measurements with limits.
//!
//! A [`Recorder`] collects steps while a scenario runs; a measurement outside
//! its limits fails its step and the run (`FAIL`), an error that stops the
//! scenario makes it `ERROR`. Records are written atomically (temp file,
//! fsync, rename), so a reader never sees half a record.

use crate::rig::{DutIdentity, RigInfo};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Pass,
    Fail,
    Error,
}

impl Outcome {
    /// The worse of two outcomes (ERROR > FAIL > PASS).
    pub fn worst(self, other: Outcome) -> Outcome {
        fn rank(o: Outcome) -> u8 {
            match o {
                Outcome::Pass => 0,
                Outcome::Fail => 1,
                Outcome::Error => 2,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Error => "ERROR",
        })
    }
}

/// Inclusive numeric limits; either side may be open.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub low: Option<f64>,
    pub high: Option<f64>,
}

impl Limits {
    pub fn between(low: f64, high: f64) -> Limits {
        Limits {
            low: Some(low),
            high: Some(high),
        }
    }
    pub fn at_most(high: f64) -> Limits {
        Limits {
            low: None,
            high: Some(high),
        }
    }
    pub fn at_least(low: f64) -> Limits {
        Limits {
            low: Some(low),
            high: None,
        }
    }
    pub fn exactly(v: f64) -> Limits {
        Limits::between(v, v)
    }
    pub fn contains(&self, v: f64) -> bool {
        !v.is_nan() && self.low.is_none_or(|l| v >= l) && self.high.is_none_or(|h| v <= h)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub name: String,
    /// A number, or for checks of a non-numeric value (an LED pattern, a
    /// state name) that value; `null` when nothing was observed.
    pub value: serde_json::Value,
    pub unit: Option<String>,
    pub limits: Option<Limits>,
    /// For non-numeric checks: what the value had to be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<serde_json::Value>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub measurements: Vec<Measurement>,
    pub outcome: Outcome,
    /// Milliseconds from the start of the run.
    pub started_ms: u64,
    pub duration_ms: u64,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DutRecord {
    pub id: Option<String>,
    pub board: Option<String>,
    pub versions: BTreeMap<String, serde_json::Value>,
}

impl From<&DutIdentity> for DutRecord {
    fn from(d: &DutIdentity) -> Self {
        DutRecord {
            id: Some(d.id.clone()),
            board: Some(d.board.clone()),
            versions: d.versions.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RigRecord {
    pub kind: String,
    pub host: String,
    pub launcher: Option<String>,
}

impl From<&RigInfo> for RigRecord {
    fn from(r: &RigInfo) -> Self {
        RigRecord {
            kind: r.kind.clone(),
            host: r.host.clone(),
            launcher: r.launcher.clone(),
        }
    }
}

/// One scenario run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub dut: DutRecord,
    pub rig: RigRecord,
    pub scenario: String,
    /// RFC 3339, UTC, milliseconds.
    pub started_at: String,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
    pub outcome: Outcome,
    pub steps: Vec<Step>,
}

impl Record {
    /// The first failed or errored measurement or step, as one line.
    pub fn first_problem(&self) -> Option<String> {
        for step in &self.steps {
            if let Some(m) = step
                .measurements
                .iter()
                .find(|m| m.outcome != Outcome::Pass)
            {
                return Some(format!("{}: {}", step.name, describe(m)));
            }
            if step.outcome != Outcome::Pass {
                return Some(format!(
                    "{}: {}",
                    step.name,
                    step.message.as_deref().unwrap_or("failed")
                ));
            }
        }
        None
    }

    /// `<scenario>-<unix-ms>.json`
    pub fn file_name(&self) -> String {
        format!("{}-{}.json", self.scenario, self.started_unix_ms)
    }

    /// Writes the record into `dir` (created if missing) atomically;
    /// returns the file's path.
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create record directory {}", dir.display()))?;
        let path = dir.join(self.file_name());
        let tmp = dir.join(format!(".{}.tmp", self.file_name()));
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("cannot write test record {}", path.display()))?;
        Ok(path)
    }
}

fn describe(m: &Measurement) -> String {
    let unit = m
        .unit
        .as_deref()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    let want = match (&m.limits, &m.expected) {
        (Some(l), _) => format!(
            "outside [{}, {}]",
            l.low.map_or("-inf".into(), |v| v.to_string()),
            l.high.map_or("+inf".into(), |v| v.to_string())
        ),
        (None, Some(e)) => format!("expected {e}"),
        (None, None) => String::new(),
    };
    format!("{} = {}{unit} {want}", m.name, m.value)
        .trim_end()
        .to_owned()
}

/// Collects steps and measurements while a scenario runs. Measurements go
/// into the current step; [`Recorder::step`] closes it and opens the next.
pub struct Recorder {
    scenario: String,
    started: Instant,
    started_unix_ms: u64,
    steps: Vec<Step>,
    current: Option<(Step, Instant)>,
}

impl Recorder {
    pub fn new(scenario: &str) -> Recorder {
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Recorder {
            scenario: scenario.to_owned(),
            started: Instant::now(),
            started_unix_ms,
            steps: Vec::new(),
            current: None,
        }
    }

    /// Starts a step named `name`, ending the current one.
    pub fn step(&mut self, name: &str) {
        self.end_step(None);
        let step = Step {
            name: name.to_owned(),
            measurements: Vec::new(),
            outcome: Outcome::Pass,
            started_ms: self.started.elapsed().as_millis() as u64,
            duration_ms: 0,
            message: None,
        };
        self.current = Some((step, Instant::now()));
    }

    fn current(&mut self) -> &mut Step {
        if self.current.is_none() {
            self.step("main");
        }
        match &mut self.current {
            Some((s, _)) => s,
            None => unreachable!("a step was just opened"),
        }
    }

    /// Adds a note to the current step.
    pub fn note(&mut self, message: impl Into<String>) {
        let msg = message.into();
        let s = self.current();
        s.message = Some(match s.message.take() {
            Some(old) => format!("{old}; {msg}"),
            None => msg,
        });
    }

    /// Records a number against `limits` (`None`: informational). `None` as
    /// the value means nothing was observed, which fails any limit.
    pub fn measure(
        &mut self,
        name: &str,
        value: Option<f64>,
        unit: &str,
        limits: Option<Limits>,
    ) -> bool {
        let ok = match (value, &limits) {
            (_, None) => true,
            (Some(v), Some(l)) => l.contains(v),
            (None, Some(_)) => false,
        };
        // Microsecond resolution for seconds, nanoseconds for milliseconds:
        // more digits are float noise.
        let value = value
            .map(|v| (v * 1e6).round() / 1e6)
            .and_then(serde_json::Number::from_f64)
            .map_or(serde_json::Value::Null, serde_json::Value::Number);
        self.push(Measurement {
            name: name.to_owned(),
            value,
            unit: (!unit.is_empty()).then(|| unit.to_owned()),
            limits,
            expected: None,
            outcome: if ok { Outcome::Pass } else { Outcome::Fail },
        });
        ok
    }

    /// Records a non-numeric observation that must equal `expected`.
    pub fn check_eq<T: Serialize>(&mut self, name: &str, value: &T, expected: &T) -> bool {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        let expected = serde_json::to_value(expected).unwrap_or(serde_json::Value::Null);
        self.check(name, value.clone(), expected.clone(), value == expected)
    }

    /// Records a non-numeric observation, `ok` saying whether it is what
    /// `expected` describes.
    pub fn check(
        &mut self,
        name: &str,
        value: serde_json::Value,
        expected: serde_json::Value,
        ok: bool,
    ) -> bool {
        self.push(Measurement {
            name: name.to_owned(),
            value,
            unit: None,
            limits: None,
            expected: Some(expected),
            outcome: if ok { Outcome::Pass } else { Outcome::Fail },
        });
        ok
    }

    fn push(&mut self, m: Measurement) {
        let s = self.current();
        if m.outcome != Outcome::Pass {
            s.outcome = s.outcome.worst(m.outcome);
        }
        s.measurements.push(m);
    }

    fn end_step(&mut self, error: Option<String>) {
        if let Some((mut s, t0)) = self.current.take() {
            s.duration_ms = t0.elapsed().as_millis() as u64;
            if let Some(e) = error {
                s.outcome = Outcome::Error;
                s.message = Some(match s.message.take() {
                    Some(old) => format!("{old}; {e}"),
                    None => e,
                });
            }
            self.steps.push(s);
        }
    }

    /// Ends the run. `error` is why the scenario stopped early, if it did;
    /// it goes into the step that was running (or a step of its own).
    pub fn finish(mut self, dut: DutRecord, rig: RigRecord, error: Option<String>) -> Record {
        if error.is_some() && self.current.is_none() {
            self.step("scenario");
        }
        self.end_step(error);
        let outcome = self
            .steps
            .iter()
            .fold(Outcome::Pass, |o, s| o.worst(s.outcome));
        Record {
            dut,
            rig,
            scenario: self.scenario,
            started_at: rfc3339_utc_ms(self.started_unix_ms),
            started_unix_ms: self.started_unix_ms,
            duration_ms: self.started.elapsed().as_millis() as u64,
            outcome,
            steps: self.steps,
        }
    }
}

/// `1970-01-01T00:00:00.000Z` for a Unix time in milliseconds.
pub fn rfc3339_utc_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// `target/hil-records`: under `$CARGO_TARGET_DIR`, else the `target`
/// directory the running executable was built into, else `./target`.
pub fn default_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("hil-records");
    }
    let exe = std::env::current_exe().ok();
    let target = exe.as_deref().and_then(|e| {
        e.ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "target"))
    });
    target.unwrap_or(Path::new("target")).join("hil-records")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rig() -> RigRecord {
        RigRecord {
            kind: "sim".into(),
            host: "h".into(),
            launcher: None,
        }
    }

    fn dut() -> DutRecord {
        DutRecord {
            id: Some("d1".into()),
            board: Some("sim".into()),
            versions: BTreeMap::new(),
        }
    }

    #[test]
    fn record_json_has_the_documented_shape_and_reads_back() {
        let mut r = Recorder::new("pair-window");
        r.step("press");
        assert!(r.measure("latency", Some(1.5), "ms", Some(Limits::at_most(5.0))));
        assert!(r.measure("info", Some(3.0), "", None));
        r.step("pattern");
        assert!(r.check_eq("status", &"blink", &"blink"));
        let rec = r.finish(dut(), rig(), None);
        assert_eq!(rec.outcome, Outcome::Pass);

        let dir = tempfile::tempdir().unwrap();
        let path = rec.write_to(&dir.path().join("records")).unwrap();
        assert_eq!(
            path.file_name().unwrap().to_string_lossy(),
            format!("pair-window-{}.json", rec.started_unix_ms)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["scenario"], "pair-window");
        assert_eq!(v["outcome"], "PASS");
        assert_eq!(v["dut"]["id"], "d1");
        assert_eq!(v["rig"]["kind"], "sim");
        assert!(v["rig"]["launcher"].is_null());
        assert!(v["started_at"].as_str().unwrap().ends_with('Z'));
        let m = &v["steps"][0]["measurements"][0];
        assert_eq!(m["name"], "latency");
        assert_eq!(m["value"], 1.5);
        assert_eq!(m["unit"], "ms");
        assert!(m["limits"]["low"].is_null());
        assert_eq!(m["limits"]["high"], 5.0);
        assert_eq!(m["outcome"], "PASS");
        assert!(v["steps"][0]["measurements"][1]["limits"].is_null());
        for key in [
            "name",
            "measurements",
            "outcome",
            "started_ms",
            "duration_ms",
            "message",
        ] {
            assert!(v["steps"][1].get(key).is_some(), "step lacks {key}");
        }
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rec);
        // Nothing but the record is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("records"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn a_value_outside_its_limits_fails_step_and_run() {
        let mut r = Recorder::new("x");
        r.step("ok");
        r.measure("a", Some(1.0), "ms", Some(Limits::between(0.0, 2.0)));
        r.step("bad");
        assert!(!r.measure(
            "armed_after",
            Some(6.1),
            "s",
            Some(Limits::between(4.9, 5.6))
        ));
        r.measure("later", Some(1.0), "s", None);
        let rec = r.finish(dut(), rig(), None);
        assert_eq!(rec.outcome, Outcome::Fail);
        assert_eq!(rec.steps[0].outcome, Outcome::Pass);
        assert_eq!(rec.steps[1].outcome, Outcome::Fail);
        assert_eq!(rec.steps[1].measurements[0].outcome, Outcome::Fail);
        let problem = rec.first_problem().unwrap();
        assert!(
            problem.contains("armed_after = 6.1 s outside [4.9, 5.6]"),
            "{problem}"
        );
    }

    #[test]
    fn missing_values_and_mismatches_fail_errors_win() {
        let mut r = Recorder::new("x");
        assert!(!r.measure("never_seen", None, "s", Some(Limits::at_least(0.0))));
        assert!(!r.check_eq("state", &"paired", &"unpaired"));
        let rec = r.finish(dut(), rig(), None);
        assert_eq!(rec.outcome, Outcome::Fail);
        assert!(rec.steps[0].measurements[0].value.is_null());

        let mut r = Recorder::new("x");
        r.step("wait");
        r.measure("m", Some(9.0), "", Some(Limits::at_most(1.0)));
        let rec = r.finish(dut(), rig(), Some("sim socket closed".into()));
        assert_eq!(rec.outcome, Outcome::Error);
        assert_eq!(rec.steps[0].message.as_deref(), Some("sim socket closed"));

        let rec = Recorder::new("x").finish(dut(), rig(), Some("rig did not start".into()));
        assert_eq!((rec.outcome, rec.steps.len()), (Outcome::Error, 1));
    }

    #[test]
    fn limits_are_inclusive_and_reject_nan() {
        assert!(Limits::between(1.0, 2.0).contains(1.0) && Limits::between(1.0, 2.0).contains(2.0));
        assert!(!Limits::at_most(1.0).contains(f64::NAN));
        assert!(Limits::exactly(50.0).contains(50.0) && !Limits::exactly(50.0).contains(49.0));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_utc_ms(1_764_168_000_000),
            "2025-11-26T14:40:00.000Z"
        );
    }
}
