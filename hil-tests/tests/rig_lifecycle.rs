//! The SimRig's own promises: a daemon that dies at start is explained with
//! its stderr, a daemon that never gets ready is given up on in bounded
//! time, and no daemon outlives its rig.

use intrust_hil::rig::{DutSettings, Rig};
use intrust_hil::sim_rig::{SimRig, SimRigFactory};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-intrustd");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn start_error(factory: &SimRigFactory) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(SimRig::start(factory, &DutSettings::default())) {
        Ok(_) => panic!("the rig started"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_daemon_that_exits_at_start_is_explained_with_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script(dir.path(), "echo \"config: no such board\" >&2\nexit 1");
    let err = start_error(&SimRigFactory::new(bin, None));
    assert!(
        err.contains("intrustd exited with exit status: 1 before its control socket appeared"),
        "{err}"
    );
    assert!(err.contains("config: no such board"), "{err}");
}

#[test]
fn a_daemon_that_never_gets_ready_is_given_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let bin = script(dir.path(), "exec sleep 600");
    let mut factory = SimRigFactory::new(bin, None);
    factory.startup_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = start_error(&factory);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        err.contains("control socket is not ready after 300ms"),
        "{err}"
    );
    assert!(err.contains("still running"), "{err}");
}

#[test]
fn a_launcher_prefix_is_used_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    // `env` as a launcher runs the program unchanged; the fake fails with its argv.
    let bin = script(dir.path(), "echo \"argv: $*\" >&2\nexit 2");
    let factory = SimRigFactory::new(bin, Some("  env   "));
    assert_eq!(
        intrust_hil::rig::RigFactory::info(&factory)
            .launcher
            .as_deref(),
        Some("env")
    );
    let err = start_error(&factory);
    assert!(err.contains("argv: --config "), "{err}");
    assert!(err.contains("intrustd.toml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_dies_with_its_rig() {
    let bin = match intrust_hil::daemon::build_intrustd_for_tests() {
        Ok(bin) => bin,
        Err(e) => panic!("cannot get an intrustd to test: {e:#}"),
    };
    let rig = SimRig::start(&SimRigFactory::new(bin, None), &DutSettings::default())
        .await
        .unwrap();
    let pid = rig.pid();
    let config = rig.paths().config.clone();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(!rig.identity().await.unwrap().id.is_empty());
    drop(rig);
    // Killed and reaped, and its directory removed.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "intrustd {pid} outlived its rig"
    );
    assert!(!config.exists());
}
