//! Test support shared by the agent's integration tests: the real `flock`
//! binary, built on demand and started on loopback; a real coturn
//! (`coturn`) and network namespaces for NAT topologies (`netns`).
#![allow(dead_code)] // each test file uses a part

pub mod app;
pub mod coturn;
pub mod netns;
pub mod transfer;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long flock may take to print its listening line.
const T: Duration = Duration::from_secs(15);

/// `flock` next to this test's target directory, built if stale.
pub fn flock_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            // <target>/<profile>/deps/<test>
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test binary in <target>/<profile>/deps");
            let target = profile_dir.parent().expect("target directory");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_owned(),
                Some(p) => p.to_owned(),
            };
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "flock",
                    "--bin",
                    "flock",
                    "--profile",
                ])
                .arg(&profile)
                .arg("--target-dir")
                .arg(target)
                .stdin(Stdio::null())
                .status()
                .expect("cannot run cargo to build flock");
            assert!(status.success(), "cargo build -p flock failed");
            profile_dir.join("flock")
        })
        .clone()
}

/// A running flock, killed when dropped.
pub struct FlockProc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for FlockProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts flock listening on `listen` (port 0: any) with `extra` appended to
/// its config; returns once it is accepting.
pub fn start_flock(dir: &Path, listen: SocketAddr, extra: &str) -> FlockProc {
    let config = dir.join("flock.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nregistry = \"{}\"\nweb_root = \"{}\"\n{extra}",
            dir.join("registry.json").display(),
            dir.join("web").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(flock_bin())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(T).expect("flock did not start in time");
    let addr = line
        .trim()
        .strip_prefix("flock listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    FlockProc { child, addr }
}
