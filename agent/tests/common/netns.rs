//! Linux network namespaces for tests that need a real network between
//! processes (NATs, dropped paths): made with `ip netns add`, wired with
//! veth pairs, configured with `ip`, `sysctl` and `nft` run inside them.
//! Invariants: names are unique per test process (pid + counter); a
//! [`Netns`] deletes its namespace and kills what still runs in it when
//! dropped, also when the test panics; nothing here touches the host's own
//! interfaces, routes or firewall. Needs root ([`skip_without_netns`]).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Prefix of every namespace these tests create: `intrt-PID-N-TAG`.
const PREFIX: &str = "intrt-";

/// True (after printing why) when namespaces cannot be made here: not root,
/// or `ip netns add` refused (a container without CAP_SYS_ADMIN). The
/// caller returns early; CI runs the tests as root. As root, a missing `ip`
/// is a failure naming its package.
pub fn skip_without_netns(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "{test}: skipped: needs root for network namespaces (CI runs as root; \
             run `sudo -E cargo test -p intrust-agent --test nat`)"
        );
        return true;
    }
    require_tool("ip", "iproute2");
    match Netns::new("probe") {
        Ok(_) => false,
        Err(e) => {
            eprintln!("{test}: skipped: cannot create a network namespace here: {e}");
            true
        }
    }
}

/// Panics with a clear message when `tool` is not on PATH.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: it is in Debian's `{package}` package, which \
         `cargo xtask test` installs (or: apt-get install {package})"
    );
}

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `intrt-PID-N-TAG` with its loopback up.
    pub fn new(tag: &str) -> io::Result<Netns> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        remove_stale();
        let name = format!(
            "{PREFIX}{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip").args(["netns", "add", &name]).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS…`; panics with ip's error on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        checked(cmd, &format!("ip -n {} {}", self.name, args.join(" ")));
    }

    /// `PROGRAM` run inside the namespace (`ip netns exec NAME PROGRAM`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Sets a sysctl inside the namespace (`net.*` keys are per namespace):
    /// written to /proc/sys from a thread in it (no `sysctl` tool needed).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_owned();
        let what = format!("{key}={value} in {}", self.name);
        self.spawn(move || std::fs::write(&path, value))
            .join()
            .expect("sysctl thread")
            .unwrap_or_else(|e| panic!("sysctl {what}: {e}"));
    }

    /// Loads an nftables ruleset (nft's file syntax) inside the namespace.
    pub fn nft(&self, ruleset: &str) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("rules.nft");
        std::fs::write(&file, ruleset).expect("write nft rules");
        let mut cmd = self.command("nft");
        cmd.arg("-f").arg(&file);
        checked(cmd, &format!("nft -f in {}:\n{ruleset}", self.name));
    }

    /// A per-namespace file under `/proc/thread-self/` (e.g.
    /// `net/nf_conntrack`, for failure messages) as seen from inside; empty
    /// when unreadable. (`/proc/net` is the process's namespace, not the
    /// thread's.)
    pub fn read_proc(&self, path: &str) -> String {
        let path = format!("/proc/thread-self/{path}");
        self.spawn(move || std::fs::read_to_string(path).unwrap_or_default())
            .join()
            .unwrap_or_default()
    }

    /// Moves the calling thread into the namespace: sockets it creates from
    /// now on (and threads it spawns) live there. Other threads are not
    /// affected.
    pub fn enter(&self) -> io::Result<()> {
        enter(&self.name)
    }

    /// Runs `f` on a new thread inside the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("in {name}"))
            .spawn(move || {
                enter(&name).unwrap_or_else(|e| panic!("cannot enter namespace {name}: {e}"));
                f()
            })
            .expect("spawn a thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Moves the calling thread into the namespace `name` (setns(2) on
/// `/run/netns/NAME`).
pub fn enter(name: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{name}"))?;
    // SAFETY: a valid namespace fd; CLONE_NEWNET only changes this thread's
    // network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A veth pair from `a` (interface `a_if`) to `b` (`b_if`), both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    let mut cmd = Command::new("ip");
    cmd.args(["link", "add", a_if, "netns", a.name(), "type", "veth"])
        .args(["peer", "name", b_if, "netns", b.name()]);
    checked(
        cmd,
        &format!("veth {}:{a_if} <-> {}:{b_if}", a.name(), b.name()),
    );
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

fn checked(mut cmd: Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Kills what still runs in `name` (only processes this test started end
/// up there) and deletes it.
fn delete(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain kill(2); the pid is in our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// Deletes namespaces left by test processes that no longer exist (killed
/// before their guards ran).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete(&name);
        }
    }
}
