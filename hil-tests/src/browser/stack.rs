//! The rest of the system for end-to-end browser tests: the example app
//! (`examples/hello-app`), small upstreams made by the test, and a real
//! `intrustd` on a simulated board registered with a [`Flock`]. Every
//! process runs in its own process group, logs to a file in its own temp
//! directory, and is killed (group and all) when dropped or when the test
//! process dies.
//!
//! [`Flock`]: super::flock::Flock

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::flock::{build_dirs, workspace_root};

/// How long a service may take to become ready.
const READY: Duration = Duration::from_secs(20);

/// Builds `bin` of `package` with cargo into the target directory and
/// profile of the running test (a no-op when current); returns its path.
pub fn build_bin_for_tests(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running test executable")?;
    let (target_dir, profile) = build_dirs(&exe)
        .with_context(|| format!("cannot tell the target directory from {}", exe.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin, "--profile"])
        .arg(&profile)
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run cargo to build {bin}"))?;
    if !out.status.success() {
        bail!(
            "`cargo build -p {package} --bin {bin}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = if profile == "dev" { "debug" } else { &profile };
    let path = target_dir.join(dir).join(bin);
    if !path.is_file() {
        bail!("cargo built {bin} but {} does not exist", path.display());
    }
    Ok(path)
}

/// A child process in its own process group, output in a log file.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Process> {
        let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env_remove("NOTIFY_SOCKET")
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// Its process id (benchmarks read its memory from `/proc`).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log.display()))
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Polls `ready` every 50 ms until it holds; an error with the log if
    /// the process exits or `limit` passes first.
    pub fn wait_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut ready: impl FnMut(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Some(st) = self.exited() {
                bail!(
                    "{} exited ({st}) before {what}; its log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            if started.elapsed() >= limit {
                bail!(
                    "{} did not reach {what} within {limit:?}; its log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill has no memory effects; the group is the child's own
            // (started as group leader, not yet reaped, so the id is not reused).
            unsafe {
                libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// The example app on a free loopback port.
pub struct HelloApp {
    pub process: Process,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl HelloApp {
    pub fn start(bin: &Path) -> anyhow::Result<HelloApp> {
        let dir = tempfile::Builder::new()
            .prefix("intrust-hello-")
            .tempdir()?;
        let addr = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg(addr.to_string());
        let mut process = Process::spawn("hello-app", cmd, &dir.path().join("hello-app.log"))?;
        process.wait_until("listening", READY, |p| {
            p.log().contains("hello-app listening on")
        })?;
        Ok(HelloApp {
            process,
            addr,
            _dir: dir,
        })
    }
}

/// A free loopback address (bound once, then released).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?)
}

/// A tiny HTTP/1.1 upstream on loopback that answers every request with
/// `body` (`application/octet-stream`, with Content-Length) and closes the
/// connection. Stops when dropped.
pub struct BlobServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl BlobServer {
    pub fn start(body: Arc<Vec<u8>>) -> anyhow::Result<BlobServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind the blob server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let body = body.clone();
                        std::thread::spawn(move || {
                            let _ = serve_blob(s, &body);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(BlobServer { addr, stop })
    }
}

impl Drop for BlobServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_blob(s: TcpStream, body: &[u8]) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    // The request head (no body is expected).
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut w = s;
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    w.write_all(body)?;
    w.flush()?;
    // Let the client finish reading before the socket goes away.
    let mut sink = [0u8; 64];
    let _ = r.read(&mut sink);
    Ok(())
}

/// `len` deterministic pseudo-random bytes (xorshift64 from `seed`).
pub fn deterministic_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A real `intrustd` on the simulated board, registered with flock under
/// `name` and publishing `apps`, with `--insecure-open` (every browser
/// session is let in).
pub struct Appliance {
    pub process: Process,
    pub name: String,
    pub control_socket: PathBuf,
    pub config: PathBuf,
    dir: tempfile::TempDir,
}

impl Appliance {
    /// Writes the config and starts `intrustd`; returns once its control
    /// socket answers.
    pub fn start(
        intrustd: &Path,
        flock: SocketAddr,
        name: &str,
        apps: &[(&str, SocketAddr)],
    ) -> anyhow::Result<Appliance> {
        let dir = tempfile::Builder::new().prefix("intrust-e2e-").tempdir()?;
        let root = dir.path();
        let q = |p: &Path| serde_json::Value::String(p.to_string_lossy().into_owned()).to_string();
        let control = root.join("control.sock");
        let mut text = format!(
            "# Written by intrust-hil for a browser end-to-end test.\n\
             state_dir = {}\n\
             board = \"sim\"\n\
             board_root = {}\n\
             control_socket = {}\n\
             sim_socket = {}\n\
             \n\
             [log]\n\
             level = \"info\"\n\
             \n\
             [rendezvous]\n\
             flock_url = \"ws://{flock}/device\"\n\
             name = \"{name}\"\n\
             \n\
             [peer]\n\
             bind = \"127.0.0.1\"\n\
             \n\
             [peer.apps]\n",
            q(&root.join("state")),
            q(&root.join("board")),
            q(&control),
            q(&root.join("sim.sock")),
        );
        for (app, addr) in apps {
            text.push_str(&format!("{app} = \"{addr}\"\n"));
        }
        let config = root.join("intrustd.toml");
        std::fs::create_dir_all(root.join("board"))?;
        std::fs::write(&config, &text)
            .with_context(|| format!("cannot write {}", config.display()))?;
        let mut cmd = Command::new(intrustd);
        cmd.arg("--config")
            .arg(&config)
            .arg("--insecure-open")
            .env_remove("RUST_LOG");
        let mut process = Process::spawn("intrustd", cmd, &root.join("intrustd.log"))?;
        let sock = control.clone();
        process
            .wait_until("its control socket", READY, |_| {
                std::os::unix::net::UnixStream::connect(&sock).is_ok()
            })
            .with_context(|| format!("with the config:\n{text}"))?;
        Ok(Appliance {
            process,
            name: name.to_owned(),
            control_socket: control,
            config,
            dir,
        })
    }

    /// The temp directory holding its config, state, sockets and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
