//! A real Chromium driven over WebDriver, for tests of the browser client.
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a free loopback port
//! and opens one headless Chromium session with a fresh profile and the
//! flags that make WebRTC work on loopback. Every call is bounded in time;
//! the driver, Chromium and every process using the profile are killed
//! when the [`Browser`] is dropped (and if the test process dies). The
//! WebDriver client is [`http`], a few dozen lines over a `TcpStream`.

pub mod bench;
pub mod flock;
pub mod http;
pub mod stack;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

/// Environment variables naming other binaries than Debian's.
pub const CHROMIUM_ENV: &str = "INTRUST_CHROMIUM";
pub const CHROMEDRIVER_ENV: &str = "INTRUST_CHROMEDRIVER";

const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver may take to listen, and Chromium to start.
const DRIVER_START: Duration = Duration::from_secs(20);
const SESSION_START: Duration = Duration::from_secs(45);
/// Any other WebDriver command (page loads and async scripts have their
/// own WebDriver timeouts below this one).
const COMMAND: Duration = Duration::from_secs(40);
const PAGE_LOAD_MS: u64 = 30_000;
const SCRIPT_MS: u64 = 30_000;
const POLL: Duration = Duration::from_millis(100);

/// W3C WebDriver's key for an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Headless, no sandbox (tests run as root), nothing contacted but what a
/// page asks for, and WebRTC host candidates on loopback with their real
/// addresses (not mDNS names).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--window-size=1024,768",
];

/// A reference to an element of the current page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(String);

/// One console message, as chromedriver reports it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub level: String,
    pub message: String,
}

/// One Chromium session behind its own chromedriver.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: tempfile::TempDir,
}

/// The binaries to run: `$INTRUST_CHROMIUM` / `$INTRUST_CHROMEDRIVER`, else
/// Debian's. A missing one is an error that says how to install it.
pub fn locate() -> anyhow::Result<(PathBuf, PathBuf)> {
    let pick = |env: &str, default: &str, package: &str| -> anyhow::Result<PathBuf> {
        let (path, from_env) = match std::env::var_os(env) {
            Some(p) => (PathBuf::from(p), true),
            None => (PathBuf::from(default), false),
        };
        if path.is_file() {
            return Ok(path);
        }
        if from_env {
            bail!("{env} names {}, which does not exist", path.display());
        }
        bail!(
            "{} not found: the browser tests need Debian's `chromium` and `chromium-driver`. \
             `cargo xtask test` installs them (or run `apt-get install {package}` as root), \
             or name other binaries with {CHROMIUM_ENV} and {CHROMEDRIVER_ENV}",
            path.display()
        )
    };
    Ok((
        pick(CHROMIUM_ENV, DEFAULT_CHROMIUM, "chromium chromium-driver")?,
        pick(
            CHROMEDRIVER_ENV,
            DEFAULT_CHROMEDRIVER,
            "chromium chromium-driver",
        )?,
    ))
}

impl Browser {
    /// Starts chromedriver and one headless Chromium session.
    pub async fn start() -> anyhow::Result<Browser> {
        let (chromium, chromedriver) = locate()?;
        let profile = tempfile::Builder::new()
            .prefix("intrust-chromium-")
            .tempdir()
            .context("cannot create a Chromium profile directory")?;
        let (driver, addr) = spawn_driver(&chromedriver, profile.path())?;
        // From here on, `Drop` cleans up if the session cannot be created.
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser.profile.path().join("profile").display()
        ));
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium.to_string_lossy(),
                        "args": args,
                    },
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "timeouts": { "implicit": 0, "pageLoad": PAGE_LOAD_MS, "script": SCRIPT_MS },
                }
            }
        });
        let v = browser
            .command_within("POST", "/session", Some(&caps), SESSION_START)
            .await
            .context("Chromium did not start (is the chromium package installed and runnable?)")?;
        browser.session = v
            .get("sessionId")
            .and_then(Value::as_str)
            .context("chromedriver's new session has no sessionId")?
            .to_owned();
        Ok(browser)
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session_cmd("POST", "/url", Some(&json!({ "url": url })))
            .await
            .with_context(|| format!("cannot open {url}"))?;
        Ok(())
    }

    /// The first element matching the CSS selector; an error if none does.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        self.try_find(css)
            .await?
            .with_context(|| format!("no element matches {css:?}"))
    }

    /// The first element matching the CSS selector, if any.
    pub async fn try_find(&self, css: &str) -> anyhow::Result<Option<Element>> {
        let body = json!({ "using": "css selector", "value": css });
        match self.session_cmd("POST", "/element", Some(&body)).await {
            Ok(v) => Ok(Some(element_of(&v)?)),
            Err(e) if is_webdriver_error(&e, "no such element") => Ok(None),
            Err(e) => Err(e.context(format!("finding {css:?}"))),
        }
    }

    /// Types `text` into the element (after what it holds).
    pub async fn type_into(&self, el: &Element, text: &str) -> anyhow::Result<()> {
        let path = format!("/element/{}/value", el.0);
        self.session_cmd("POST", &path, Some(&json!({ "text": text })))
            .await?;
        Ok(())
    }

    /// Empties an input.
    pub async fn clear(&self, el: &Element) -> anyhow::Result<()> {
        let path = format!("/element/{}/clear", el.0);
        self.session_cmd("POST", &path, Some(&json!({}))).await?;
        Ok(())
    }

    /// Clicks the element as a user would (scrolls it into view first).
    pub async fn click(&self, el: &Element) -> anyhow::Result<()> {
        let path = format!("/element/{}/click", el.0);
        self.session_cmd("POST", &path, Some(&json!({}))).await?;
        Ok(())
    }

    /// The element's rendered text.
    pub async fn text(&self, el: &Element) -> anyhow::Result<String> {
        let path = format!("/element/{}/text", el.0);
        let v = self.session_cmd("GET", &path, None).await?;
        v.as_str()
            .map(str::to_owned)
            .context("element text is not a string")
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and
    /// returns what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.session_cmd(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs `script` whose last argument is a callback; returns the value
    /// it is called with. Bounded by the session's script timeout (30 s).
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.session_cmd(
            "POST",
            "/execute/async",
            Some(&json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The handle of the current window (tab).
    pub async fn window(&self) -> anyhow::Result<String> {
        let v = self.session_cmd("GET", "/window", None).await?;
        v.as_str()
            .map(str::to_owned)
            .context("the window handle is not a string")
    }

    /// The handles of all open windows (tabs).
    pub async fn windows(&self) -> anyhow::Result<Vec<String>> {
        let v = self.session_cmd("GET", "/window/handles", None).await?;
        v.as_array()
            .context("the window handles are not a list")?
            .iter()
            .map(|h| {
                h.as_str()
                    .map(str::to_owned)
                    .context("a window handle is not a string")
            })
            .collect()
    }

    /// Opens a new tab and returns its handle (the current window stays).
    pub async fn new_tab(&self) -> anyhow::Result<String> {
        let v = self
            .session_cmd("POST", "/window/new", Some(&json!({ "type": "tab" })))
            .await?;
        v.get("handle")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .context("the new window has no handle")
    }

    /// Makes `handle` the window that later commands act on.
    pub async fn switch_to(&self, handle: &str) -> anyhow::Result<()> {
        self.session_cmd("POST", "/window", Some(&json!({ "handle": handle })))
            .await
            .with_context(|| format!("cannot switch to window {handle}"))?;
        Ok(())
    }

    /// Polls the JavaScript expression `expr` until it is neither `null`,
    /// `undefined` nor `false`, and returns its value. `what` names the
    /// condition in the timeout error, with the last value seen.
    pub async fn wait_for(&self, what: &str, expr: &str, limit: Duration) -> anyhow::Result<Value> {
        let started = Instant::now();
        let script = format!("return ({expr});");
        loop {
            let v = self
                .execute(&script, vec![])
                .await
                .with_context(|| format!("waiting for {what}"))?;
            if !(v.is_null() || v == Value::Bool(false)) {
                return Ok(v);
            }
            if started.elapsed() >= limit {
                bail!("timed out after {limit:?} waiting for {what} (`{expr}` is {v})");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sets a permission (`"microphone"`, `"camera"`, …) for the current
    /// page's origin, as if the user had answered the prompt.
    pub async fn grant(&self, permission: &str) -> anyhow::Result<()> {
        let body = json!({ "descriptor": { "name": permission }, "state": "granted" });
        self.session_cmd("POST", "/permissions", Some(&body))
            .await
            .with_context(|| format!("cannot grant {permission}"))?;
        Ok(())
    }

    /// Lets WebRTC on the current origin gather host candidates on every
    /// interface, loopback included. Without a capture permission Chromium
    /// offers only the default route's addresses; with one it enumerates
    /// all (`--allow-loopback-in-peer-connection` then keeps 127.0.0.1).
    /// Needs a secure context (`http://127.0.0.1` is one, `data:` is not)
    /// and applies to peer connections created afterwards.
    pub async fn allow_all_interfaces(&self) -> anyhow::Result<()> {
        self.grant("microphone").await?;
        self.grant("camera").await
    }

    /// The console messages since the last call (chromedriver's log API).
    pub async fn console_logs(&self) -> anyhow::Result<Vec<LogEntry>> {
        let v = self
            .session_cmd("POST", "/se/log", Some(&json!({ "type": "browser" })))
            .await?;
        let entries = v.as_array().context("the browser log is not a list")?;
        Ok(entries
            .iter()
            .map(|e| LogEntry {
                level: e
                    .get("level")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect())
    }

    /// A PNG of the viewport, written to `target/browser-shots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let v = self.session_cmd("GET", "/screenshot", None).await?;
        let b64 = v.as_str().context("the screenshot is not a string")?;
        let png = data_encoding::BASE64
            .decode(b64.as_bytes())
            .context("the screenshot is not base64")?;
        let dir = shots_dir();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Runs `steps`; if they fail, the error carries a screenshot
    /// (`target/browser-shots/NAME.png`) and the page's console messages.
    pub async fn scenario<T>(
        &self,
        name: &str,
        steps: impl AsyncFnOnce(&Browser) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match steps(self).await {
            Ok(v) => Ok(v),
            Err(e) => {
                let shot = match self.screenshot(name).await {
                    Ok(p) => format!("screenshot: {}", p.display()),
                    Err(s) => format!("no screenshot: {s:#}"),
                };
                let console = match self.console_logs().await {
                    Ok(l) if l.is_empty() => "console: (empty)".to_owned(),
                    Ok(l) => l.iter().fold("console:".to_owned(), |acc, e| {
                        format!("{acc}\n  [{}] {}", e.level, e.message)
                    }),
                    Err(c) => format!("no console log: {c:#}"),
                };
                Err(e.context(format!("browser scenario {name} failed\n{shot}\n{console}")))
            }
        }
    }

    /// Ends the session cleanly (Chromium exits); `Drop` kills what is left.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let path = format!("/session/{}", self.session);
        self.session.clear();
        self.command_within("DELETE", &path, None, COMMAND).await?;
        Ok(())
    }

    async fn session_cmd(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        if self.session.is_empty() {
            bail!("the browser session is closed");
        }
        let path = format!("/session/{}{path}", self.session);
        self.command_within(method, &path, body, COMMAND).await
    }

    /// One WebDriver command: the `value` of a 2xx answer, or an error
    /// carrying WebDriver's `error` code and message.
    async fn command_within(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        let r = http::request(self.addr, method, path, body, limit).await?;
        let value = match r.body {
            Value::Object(mut o) => o.remove("value").unwrap_or(Value::Null),
            other => other,
        };
        if (200..300).contains(&r.status) {
            return Ok(value);
        }
        let code = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        let message = value
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Err(anyhow!(WebDriverError {
            code: code.to_owned(),
            message: message.lines().next().unwrap_or_default().to_owned(),
        })
        .context(format!("{method} {path}: HTTP {}", r.status)))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let pid = self.driver.id() as libc::pid_t;
        // SAFETY: kill has no memory effects; the group is chromedriver's own
        // (it was started as a group leader), so only what it started dies.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium's helpers may have left the group: end every process
        // that still uses this run's profile.
        kill_users_of(self.profile.path());
    }
}

/// An error answer from WebDriver (`error` is the W3C code, e.g.
/// "no such element", "javascript error", "timeout").
#[derive(Debug)]
pub struct WebDriverError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebDriver error \"{}\": {}", self.code, self.message)
    }
}

impl std::error::Error for WebDriverError {}

fn is_webdriver_error(e: &anyhow::Error, code: &str) -> bool {
    e.downcast_ref::<WebDriverError>()
        .is_some_and(|w| w.code == code)
}

fn element_of(v: &Value) -> anyhow::Result<Element> {
    v.get(ELEMENT_KEY)
        .and_then(Value::as_str)
        .map(|s| Element(s.to_owned()))
        .with_context(|| format!("not an element reference: {v}"))
}

/// Starts chromedriver on a free loopback port, in its own process group
/// and killed if this process dies; returns it and its address.
fn spawn_driver(bin: &Path, dir: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let mut cmd = Command::new(bin);
    cmd.arg("--port=0")
        .arg(format!(
            "--log-path={}",
            dir.join("chromedriver.log").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("chromedriver has no stdout pipe");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(port) = started_port(&line) {
                let _ = tx.send(Ok(port));
                // Keep draining so chromedriver never blocks on a full pipe.
                for _ in lines.by_ref() {}
                return;
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        let _ = tx.send(Err(seen));
    });
    let port = match rx.recv_timeout(DRIVER_START) {
        Ok(Ok(port)) => port,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            match other {
                Ok(Err(out)) => bail!("chromedriver exited before listening; it printed:\n{out}"),
                _ => bail!("chromedriver did not say it was listening within {DRIVER_START:?}"),
            }
        }
    };
    Ok((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// The port in "ChromeDriver was started successfully on port N."
fn started_port(line: &str) -> Option<u16> {
    line.split("started successfully on port ")
        .nth(1)?
        .trim()
        .trim_end_matches('.')
        .parse()
        .ok()
}

/// SIGKILLs every process whose command line mentions `profile`.
fn kill_users_of(profile: &Path) {
    let needle = profile.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            // SAFETY: kill has no memory effects; the pid runs with our profile.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// `target/browser-shots`, from where the running test binary lives
/// (`target/<profile>/deps/<test>`); the temp dir if that cannot be told.
pub fn shots_dir() -> PathBuf {
    let target = std::env::current_exe().ok().and_then(|exe| {
        let mut dir = exe.parent()?.to_owned();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir = dir.parent()?.to_owned();
        }
        Some(dir.parent()?.to_owned())
    });
    target
        .unwrap_or_else(std::env::temp_dir)
        .join("browser-shots")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chromedriver_port_line() {
        assert_eq!(
            started_port("ChromeDriver was started successfully on port 44155."),
            Some(44155)
        );
        assert_eq!(started_port("Only local connections are allowed."), None);
    }

    #[test]
    fn element_references_are_parsed_or_refused() {
        let v = json!({ ELEMENT_KEY: "abc" });
        assert_eq!(element_of(&v).unwrap(), Element("abc".into()));
        assert!(element_of(&json!({"x": 1})).is_err());
    }
}
