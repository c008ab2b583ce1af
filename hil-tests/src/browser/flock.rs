//! The real `flock` binary for browser tests: built with cargo if needed,
//! serving the built portal (`flock/web/dist`) on 127.0.0.1 with a fresh
//! registry, no STUN/TURN (host candidates only, nothing leaves loopback).
//! The process is killed when [`Flock`] is dropped or this process dies.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// Environment variable naming another `flock` binary.
pub const FLOCK_ENV: &str = "INTRUST_FLOCK";

const START: Duration = Duration::from_secs(20);

/// A running flock.
pub struct Flock {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Flock {
    /// Starts `flock` serving `web_root`.
    pub fn start(bin: &Path, web_root: &Path) -> anyhow::Result<Flock> {
        Flock::start_with(bin, web_root, "")
    }

    /// Like [`Flock::start`], with `extra` appended to its config file
    /// (benchmarks raise the per-source `[limits]`).
    pub fn start_with(bin: &Path, web_root: &Path, extra: &str) -> anyhow::Result<Flock> {
        let dir = tempfile::Builder::new()
            .prefix("intrust-flock-")
            .tempdir()
            .context("cannot create flock's directory")?;
        let config = dir.path().join("flock.toml");
        let q = |p: &Path| toml_string(&p.to_string_lossy());
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nregistry = {}\nweb_root = {}\n{extra}",
                q(&dir.path().join("registry.json")),
                q(web_root)
            ),
        )
        .with_context(|| format!("cannot write {}", config.display()))?;
        let stderr = std::fs::File::create(dir.path().join("flock.stderr"))
            .context("cannot create flock's log file")?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = BufReader::new(out).read_line(&mut line);
            }
            let _ = tx.send(line);
        });
        let mut flock = Flock {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        let line = rx.recv_timeout(START).unwrap_or_default();
        let Some(addr) = line
            .trim()
            .strip_prefix("flock listening on ")
            .and_then(|a| a.parse().ok())
        else {
            bail!(
                "flock did not start (first line {line:?}); its log:\n{}",
                flock.log()
            );
        };
        flock.addr = addr;
        Ok(flock)
    }

    /// `http://127.0.0.1:PORT/`, where the portal is.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Whether `name` is in flock's registry (flock writes it there before
    /// it answers the device's `Hello` with `Registered`).
    pub fn has_registered(&self, name: &str) -> bool {
        std::fs::read_to_string(self.dir.path().join("registry.json"))
            .is_ok_and(|t| t.contains(&format!("\"{name}\"")))
    }

    /// What flock logged so far (for error messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("flock.stderr")).unwrap_or_default()
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn toml_string(s: &str) -> String {
    // TOML basic strings take JSON escapes.
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The built portal, `flock/web/dist`. If it is missing and the web
/// client's packages are installed, builds it with `npm run build`;
/// otherwise says that `cargo xtask test` builds it.
pub fn portal_dist() -> anyhow::Result<PathBuf> {
    let web = workspace_root().join("flock/web");
    let dist = web.join("dist");
    if dist.join("index.html").is_file() && dist.join("portal.js").is_file() {
        return Ok(dist);
    }
    if !web.join("node_modules").is_dir() {
        bail!(
            "the portal is not built ({} has no index.html/portal.js) and flock/web has no node_modules: \
             run `cargo xtask test` (it builds the portal first) or `npm ci && npm run build` in flock/web",
            dist.display()
        );
    }
    let out = Command::new("npm")
        .args(["run", "--silent", "build"])
        .current_dir(&web)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `npm run build` in flock/web (is Node.js installed? `cargo xtask test` installs it)")?;
    if !out.status.success() || !dist.join("index.html").is_file() {
        bail!(
            "`npm run build` in flock/web failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(dist)
}

/// The `flock` binary: `$INTRUST_FLOCK`, else built with cargo into the
/// target directory and profile of the running test.
pub fn build_flock_for_tests() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(FLOCK_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("{FLOCK_ENV} names {}, which does not exist", p.display());
    }
    let exe = std::env::current_exe().context("cannot find the running test executable")?;
    let (target_dir, profile) = build_dirs(&exe)
        .with_context(|| format!("cannot tell the target directory from {}", exe.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
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
        .arg(&target_dir)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .context("cannot run cargo to build flock for the browser tests")?;
    if !out.status.success() {
        bail!(
            "`cargo build -p flock` failed ({}), so the browser tests cannot run:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = if profile == "dev" { "debug" } else { &profile };
    let bin = target_dir.join(dir).join("flock");
    if !bin.is_file() {
        bail!("cargo built flock but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// `<target>/<debug|release|profile>/[deps/]<exe>` → (target, cargo profile).
pub(crate) fn build_dirs(exe: &Path) -> Option<(PathBuf, String)> {
    let mut dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent()?;
    }
    let profile = match dir.file_name()?.to_str()? {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    };
    Some((dir.parent()?.to_owned(), profile))
}
