//! `cargo xtask bench update`: the same 256 MiB random image installed into
//! a file slot three ways in one run — `intrust-recovery install` (signed
//! bundle, single-copy U-Boot env file), a `dd | tee >(sha256sum) | dd
//! conv=fsync` pipeline (the floor: copy, hash, fsync) and `rauc install`
//! (Debian's RAUC, plain bundle, raw slot, noop bootloader, its D-Bus
//! service on a private bus) — median of 3 each, rounds interleaved.
//!
//! Everything lives in `target/bench-update/`; the private dbus-daemon and
//! every RAUC service are children of this process, stopped by their pid
//! when the group ends or fails. If RAUC cannot run here, its figures are
//! printed with `baseline_value: null` and a note saying why.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::figure;
use crate::apt;
use crate::cmd::{self, say};

const PAYLOAD_LEN: u64 = 256 << 20;
const RUNS: usize = 3;
const BOARD: &str = "intrust-bench";
const ENV_SIZE: usize = 0x4000;

/// One measured run: wall time and (where measured) peak RSS.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    rss_mib: Option<f64>,
    /// Largest anonymous RSS seen while sampling every 10 ms (RAUC only).
    anon_mib: Option<f64>,
}

pub fn run(root: &Path) -> Result<()> {
    apt::ensure(
        "bench update (RAUC baseline)",
        &["rauc", "squashfs-tools", "openssl", "dbus-daemon"],
    )?;
    cmd::run_log(cmd::cargo().current_dir(root).args([
        "build",
        "--release",
        "-p",
        "intrust-recovery",
    ]))?;
    let recovery = crate::target_dir(root).join("release/intrust-recovery");
    let dir = crate::target_dir(root).join("bench-update");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir)?;
    let payload = dir.join("payload.img");
    say(format!("writing {} MiB of random bytes", PAYLOAD_LEN >> 20));
    io::copy(
        &mut File::open("/dev/urandom")?.take(PAYLOAD_LEN),
        &mut File::create(&payload)?,
    )?;

    let ours = Ours::prepare(&recovery, &dir, &payload)?;
    let dd = Dd::prepare(&dir, &payload)?;
    let mut rauc = match Rauc::prepare(&dir, &payload) {
        Ok(r) => Ok(r),
        Err(e) => {
            say(format!("RAUC baseline unavailable: {e:#}"));
            Err(format!("RAUC could not run here: {e:#}"))
        }
    };

    let (mut our_runs, mut dd_runs, mut rauc_runs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=RUNS {
        say(format!("round {round} of {RUNS}"));
        our_runs.push(ours.install()?);
        dd_runs.push(dd.copy()?);
        if let Ok(r) = &mut rauc {
            match r.install() {
                Ok(s) => rauc_runs.push(s),
                Err(e) => {
                    say(format!("rauc install failed: {e:#}"));
                    rauc = Err(format!("rauc install failed here: {e:#}"));
                }
            }
        }
    }
    let rauc_note = match &rauc {
        Ok(r) => r.note(),
        Err(why) => why.clone(),
    };
    drop(rauc); // stops the private bus

    let ours_s = median(our_runs.iter().map(|s| s.secs));
    let ours_rss = median(our_runs.iter().filter_map(|s| s.rss_mib));
    let dd_s = median(dd_runs.iter().map(|s| s.secs));
    let rauc_s = (rauc_runs.len() == RUNS).then(|| median(rauc_runs.iter().map(|s| s.secs)));
    let rauc_rss =
        (rauc_runs.len() == RUNS).then(|| median(rauc_runs.iter().filter_map(|s| s.rss_mib)));
    let rauc_anon = median(rauc_runs.iter().filter_map(|s| s.anon_mib));
    let rss_detail = if rauc_anon.is_nan() {
        String::new()
    } else {
        format!(
            "; RAUC's anonymous RSS peaked at {:.1} MiB (sampled every 10 ms), the rest of its peak \
             is file-backed pages (VmHWM counts both)",
            rauc_anon
        )
    };

    let ours_note = "intrust-recovery install of a signed bundle from a file (verify, stream + \
                     SHA-256 in one pass, fsync, U-Boot env file activated); slots are regular \
                     files, page cache warm";
    let lines = [
        line(
            "install_256mib_vs_dd_sha256",
            ours_s,
            "s",
            "dd | tee >(sha256sum) | dd conv=fsync",
            Some(dd_s),
            format!(
                "{ours_note}; baseline: bash -c 'dd if=payload bs=1M | tee >(sha256sum > sum) \
                 | dd of=slot bs=1M conv=fsync,notrunc'"
            ),
            3,
        ),
        line(
            "install_256mib_vs_rauc",
            ours_s,
            "s",
            "rauc install (Debian rauc)",
            rauc_s,
            format!("{ours_note}; baseline: {rauc_note}"),
            3,
        ),
        line(
            "install_peak_rss_mib",
            ours_rss,
            "MiB",
            "rauc service peak RSS (VmHWM)",
            rauc_rss,
            format!(
                "ours: ru_maxrss of the intrust-recovery process; RAUC: VmHWM of a fresh \
                 `rauc service` (it does the install; the `rauc install` client only asks) \
                 after one install{rss_detail}; {rauc_note}"
            ),
            2,
        ),
    ];
    for l in &lines {
        println!("{l}");
    }

    let show =
        |v: Option<f64>, unit: &str| v.map_or("—".to_string(), |v| format!("{v:.3} {unit}"));
    eprintln!();
    eprintln!("update: 256 MiB into a file slot, median of {RUNS}");
    eprintln!("  {:<34} {:>12} {:>12}", "", "time", "peak RSS");
    eprintln!(
        "  {:<34} {:>12} {:>12}",
        "intrust-recovery install",
        show(Some(ours_s), "s"),
        show(Some(ours_rss), "MiB")
    );
    eprintln!(
        "  {:<34} {:>12} {:>12}",
        "dd | tee >(sha256sum) | dd fsync",
        show(Some(dd_s), "s"),
        "—"
    );
    eprintln!(
        "  {:<34} {:>12} {:>12}",
        "rauc install",
        show(rauc_s, "s"),
        show(rauc_rss, "MiB")
    );
    Ok(())
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

fn line(
    metric: &str,
    value: f64,
    unit: &str,
    baseline: &str,
    baseline_value: Option<f64>,
    note: String,
    places: i32,
) -> String {
    let (base, ratio) = match baseline_value {
        Some(b) if b > 0.0 => (json!(round(b, places)), json!(round(value / b, 3))),
        _ => (Value::Null, Value::Null),
    };
    figure(&[
        ("bench", json!("update")),
        ("metric", json!(metric)),
        ("value", json!(round(value, places))),
        ("unit", json!(unit)),
        ("better", json!("lower")),
        ("baseline", json!(baseline)),
        ("baseline_value", base),
        ("ratio", ratio),
        ("runs", json!(RUNS)),
        ("note", json!(note)),
    ])
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A regular file of `len` zero bytes standing in for a slot device.
fn slot_file(path: &Path, len: u64) -> Result<()> {
    File::create(path)
        .and_then(|f| f.set_len(len))
        .with_context(|| format!("creating slot file {}", path.display()))
}

/// Waits for `child` and returns its status and peak RSS (`ru_maxrss`).
fn wait_rusage(child: Child) -> Result<(ExitStatus, f64)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our child, reaped here once.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e).context("waiting for the install");
        }
    }
    // std must not wait for it again; the pid is reaped.
    std::mem::forget(child);
    // ru_maxrss is in KiB on Linux.
    Ok((
        ExitStatus::from_raw(status),
        usage.ru_maxrss as f64 / 1024.0,
    ))
}

struct Ours {
    recovery: PathBuf,
    config: PathBuf,
    bundle: PathBuf,
    log: PathBuf,
}

impl Ours {
    fn prepare(recovery: &Path, dir: &Path, payload: &Path) -> Result<Ours> {
        let d = dir.join("ours");
        fs::create_dir_all(d.join("data"))?;
        let key = d.join("key.pk8");
        let public = cmd::output(
            Command::new(recovery)
                .args(["bundle", "keygen", "-o"])
                .arg(&key),
        )?;
        let bundle = d.join("update.bundle");
        cmd::run_log(
            Command::new(recovery)
                .args(["bundle", "create", "--key"])
                .arg(&key)
                .args(["--board", BOARD, "--version", "1", "--rootfs"])
                .arg(payload)
                .arg("-o")
                .arg(&bundle),
        )?;
        slot_file(&d.join("a-root"), PAYLOAD_LEN)?;
        slot_file(&d.join("b-root"), PAYLOAD_LEN)?;
        fs::write(d.join("uboot.env"), vec![0u8; ENV_SIZE])?;
        fs::write(
            d.join("fw_env.config"),
            format!("{} 0x0 {ENV_SIZE:#x}\n", d.join("uboot.env").display()),
        )?;
        let config = d.join("recovery.toml");
        fs::write(
            &config,
            format!(
                "board = \"{BOARD}\"\ntrusted_keys = [\"{}\"]\ndata = \"{}\"\nbooted_slot = \"A\"\n\n\
                 [slots.A]\nrootfs = {{ device = \"{}\" }}\n\n[slots.B]\nrootfs = {{ device = \"{}\" }}\n\n\
                 [bootloader]\nkind = \"uboot\"\nfw_env_config = \"{}\"\n",
                public.trim(),
                d.join("data").display(),
                d.join("a-root").display(),
                d.join("b-root").display(),
                d.join("fw_env.config").display(),
            ),
        )?;
        Ok(Ours {
            recovery: recovery.to_path_buf(),
            config,
            bundle,
            log: d.join("install.log"),
        })
    }

    fn install(&self) -> Result<Sample> {
        let mut c = Command::new(&self.recovery);
        c.args(["install", "--config"])
            .arg(&self.config)
            .arg(&self.bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&self.log)?);
        say(format!("$ {}", cmd::display(&c)));
        let started = Instant::now();
        let child = c.spawn().context("starting intrust-recovery")?;
        let (status, rss) = wait_rusage(child)?;
        let secs = started.elapsed().as_secs_f64();
        if !status.success() {
            bail!(
                "intrust-recovery install failed ({status}): {}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(Sample {
            secs,
            rss_mib: Some(rss),
            anon_mib: None,
        })
    }
}

struct Dd {
    script: String,
    dir: PathBuf,
}

impl Dd {
    fn prepare(dir: &Path, payload: &Path) -> Result<Dd> {
        let d = dir.join("dd");
        fs::create_dir_all(&d)?;
        slot_file(&d.join("slot"), PAYLOAD_LEN)?;
        Ok(Dd {
            script: format!(
                "dd if='{}' bs=1M status=none | tee >(sha256sum > sum) \
                 | dd of=slot bs=1M conv=fsync,notrunc status=none",
                payload.display()
            ),
            dir: d,
        })
    }

    fn copy(&self) -> Result<Sample> {
        let mut c = Command::new("bash");
        c.arg("-c").arg(&self.script).current_dir(&self.dir);
        let started = Instant::now();
        cmd::run_log(&mut c)?;
        Ok(Sample {
            secs: started.elapsed().as_secs_f64(),
            rss_mib: None,
            anon_mib: None,
        })
    }
}

/// A child stopped (SIGTERM, then SIGKILL after 5 s) and reaped on drop.
struct Guard(Option<Child>, &'static str);

impl Guard {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(mut child) = self.0.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill on our own child's pid, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        say(format!("{} did not stop on SIGTERM; killing it", self.1));
        let _ = child.kill();
        let _ = child.wait();
    }
}

struct Rauc {
    dir: PathBuf,
    bus_address: String,
    bundle: PathBuf,
    version: String,
    // Last: dropped after everything that talks to it.
    _bus: Guard,
}

impl Rauc {
    fn prepare(dir: &Path, payload: &Path) -> Result<Rauc> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("rauc install mounts its bundle on a loop device, which needs root");
        }
        let d = dir.join("rauc");
        let content = d.join("bundle");
        fs::create_dir_all(&content)?;
        fs::create_dir_all(d.join("mnt"))?;
        fs::create_dir_all(d.join("data"))?;
        let version = cmd::output(Command::new("rauc").arg("--version"))?
            .trim()
            .to_string();
        cmd::run_log(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
                .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "30"])
                .args(["-subj", "/CN=intrust bench signer"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,digitalSignature,keyCertSign"])
                .current_dir(&d)
                .stderr(Stdio::null()),
        )?;
        fs::hard_link(payload, content.join("rootfs.img"))
            .or_else(|_| fs::copy(payload, content.join("rootfs.img")).map(|_| ()))?;
        fs::write(
            content.join("manifest.raucm"),
            format!(
                "[update]\ncompatible={BOARD}\nversion=1\n\n[bundle]\nformat=plain\n\n\
                 [image.rootfs]\nfilename=rootfs.img\n"
            ),
        )?;
        let bundle = d.join("update.raucb");
        // Uncompressed squashfs: random data does not compress, and our
        // bundle is not compressed either.
        cmd::run_log(
            Command::new("rauc")
                .args(["bundle", "--cert=cert.pem", "--key=key.pem"])
                .arg("--mksquashfs-args=-noI -noD -noF -noX")
                .arg(&content)
                .arg(&bundle)
                .current_dir(&d),
        )?;
        slot_file(&d.join("slot-a"), PAYLOAD_LEN)?;
        slot_file(&d.join("slot-b"), PAYLOAD_LEN)?;
        fs::write(
            d.join("system.conf"),
            format!(
                "[system]\ncompatible={BOARD}\nbootloader=noop\nbundle-formats=plain\n\
                 data-directory={data}\n\n[keyring]\npath={cert}\n\n\
                 [slot.rootfs.0]\ndevice={a}\ntype=raw\nbootname=A\n\n\
                 [slot.rootfs.1]\ndevice={b}\ntype=raw\nbootname=B\n",
                data = d.join("data").display(),
                cert = d.join("cert.pem").display(),
                a = d.join("slot-a").display(),
                b = d.join("slot-b").display(),
            ),
        )?;
        // A private bus; rauc picks the session bus when
        // DBUS_STARTER_BUS_TYPE=session (as RAUC's own tests run it).
        let socket = d.join("bus");
        let bus_address = format!("unix:path={}", socket.display());
        let mut c = Command::new("dbus-daemon");
        c.args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address={bus_address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        say(format!("$ {}", cmd::display(&c)));
        let bus = Guard(
            Some(c.spawn().context("starting dbus-daemon")?),
            "dbus-daemon",
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!(
                    "dbus-daemon did not create {} within 10 s",
                    socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Rauc {
            dir: d,
            bus_address,
            bundle,
            version,
            _bus: bus,
        })
    }

    fn rauc(&self) -> Command {
        let mut c = Command::new("rauc");
        c.env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address)
            .env("DBUS_STARTER_BUS_TYPE", "session")
            .arg(format!("--conf={}", self.dir.join("system.conf").display()))
            .arg(format!("--mount={}", self.dir.join("mnt").display()))
            .current_dir(&self.dir);
        c
    }

    /// One install against a fresh service, so its VmHWM is this install's.
    fn install(&mut self) -> Result<Sample> {
        let mut c = self.rauc();
        c.args(["service", "--override-boot-slot=A"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.dir.join("service.log"))?);
        say(format!("$ {}", cmd::display(&c)));
        let service = Guard(
            Some(c.spawn().context("starting rauc service")?),
            "rauc service",
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = self
                .rauc()
                .arg("status")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "rauc service did not answer on the private bus within 10 s: {}",
                    fs::read_to_string(self.dir.join("service.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut c = self.rauc();
        c.arg("install").arg(&self.bundle);
        // VmHWM counts mapped file pages too; sample the anonymous part so
        // the note can say which kind RAUC's peak is.
        let pid = service.pid();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = 0f64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(v) = proc_status_mib(pid, "RssAnon:") {
                        peak = peak.max(v);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak
            })
        };
        let started = Instant::now();
        let result = cmd::run_log(&mut c);
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let anon = sampler.join().unwrap_or(0.0);
        result?;
        let rss = proc_status_mib(pid, "VmHWM:")?;
        drop(service);
        Ok(Sample {
            secs,
            rss_mib: Some(rss),
            anon_mib: Some(anon),
        })
    }

    fn note(&self) -> String {
        format!(
            "{}, plain bundle (uncompressed squashfs, signature checked over the whole bundle \
             before copying), raw slot on a regular file, noop bootloader, service on a private \
             D-Bus",
            self.version
        )
    }
}

/// A `kB` field (`VmHWM:`, `RssAnon:`) of a live process's /proc status.
fn proc_status_mib(pid: u32, field: &str) -> Result<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0].into_iter()), 4.0);
        assert!(median(std::iter::empty()).is_nan());
    }

    #[test]
    fn lines_follow_bench_md() {
        let l = line("m", 2.0, "s", "peer", Some(4.0), "n".into(), 3);
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["ratio"], json!(0.5));
        assert!(l.starts_with(r#"{"bench":"update","metric":"m","value":2.0,"unit":"s","better":"lower","baseline":"peer","baseline_value":4.0,"ratio":0.5,"runs":3,"note":"n"}"#));
        let l = line("m", 2.0, "s", "peer", None, "why".into(), 3);
        let v: Value = serde_json::from_str(&l).unwrap();
        assert!(v["baseline_value"].is_null() && v["ratio"].is_null());
    }
}
