//! [`SimRig`]: a real `intrustd` with the simulated board, driven over its
//! sim socket and watched through it.
//!
//! Each rig starts its own daemon in a temporary directory with a generated
//! config, optionally under a launcher (e.g. `qemu-aarch64 -L …` for the
//! cross-built binary). A background task reads the sim socket and keeps
//! every LED change and debounced button edge with two timestamps: the
//! agent's `at_us` and the rig's receive time. Dropping the rig kills the
//! daemon and removes the directory.

use crate::daemon::{self, Daemon, DutPaths};
use crate::rig::{
    host_name, BoxFuture, DutEdge, DutIdentity, DutSettings, DutStatus, Observation,
    PatternPredicate, Rig, RigFactory, RigInfo, Timeline,
};
use crate::wire::{
    self, ControlRequest, ControlResponse, PairingAction, SimEvent, SimOp, SimOpKind, MAX_LINE,
};
use anyhow::{anyhow, bail, Context};
use intrust_board::{Button, LedRole, Mono};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a control request may take before the rig gives up.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts [`SimRig`]s: which `intrustd`, under which launcher.
#[derive(Debug, Clone)]
pub struct SimRigFactory {
    pub intrustd: PathBuf,
    /// Command prefix, e.g. `["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]`.
    pub launcher: Vec<String>,
    /// How long the daemon may take to open its sockets.
    pub startup_timeout: Duration,
    /// `[log] level` of the daemon.
    pub log_level: String,
}

impl SimRigFactory {
    /// A factory for `intrustd`, with `launcher` given as one string split
    /// on whitespace (empty: none). Startup may take 10 s natively, 60 s
    /// under a launcher (emulators are slow to start).
    pub fn new(intrustd: PathBuf, launcher: Option<&str>) -> SimRigFactory {
        let launcher: Vec<String> = launcher
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let startup_timeout = Duration::from_secs(if launcher.is_empty() { 10 } else { 60 });
        SimRigFactory {
            intrustd,
            launcher,
            startup_timeout,
            log_level: "info".into(),
        }
    }

    fn rig_info(&self) -> RigInfo {
        RigInfo {
            kind: "sim".into(),
            host: host_name(),
            launcher: (!self.launcher.is_empty()).then(|| self.launcher.join(" ")),
        }
    }
}

impl RigFactory for SimRigFactory {
    fn info(&self) -> RigInfo {
        self.rig_info()
    }

    fn start<'a>(
        &'a self,
        settings: &'a DutSettings,
    ) -> BoxFuture<'a, anyhow::Result<Box<dyn Rig>>> {
        Box::pin(async move { Ok(Box::new(SimRig::start(self, settings).await?) as Box<dyn Rig>) })
    }
}

/// What the sim socket told us, shared with the reader task.
#[derive(Debug, Default)]
struct Tracked {
    /// Every pattern each LED showed, oldest first; never empty after hello.
    leds: BTreeMap<LedRole, Vec<Observation>>,
    edges: Vec<DutEdge>,
    /// Why the sim socket stopped, once it has.
    closed: Option<String>,
}

struct Shared {
    tracked: Mutex<Tracked>,
    /// Bumped after every change of `tracked`.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tracked> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Tracked)) {
        f(&mut self.lock());
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }
}

/// A rig around one `intrustd` with the simulated board.
pub struct SimRig {
    // Field order is drop order: stop reading, kill the daemon, then remove its files.
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    shared: Arc<Shared>,
    daemon: Daemon,
    paths: DutPaths,
    info: RigInfo,
    _dir: tempfile::TempDir,
}

impl SimRig {
    /// Starts `intrustd` as `factory` says, waits for its control socket and
    /// its sim socket's `hello`.
    pub async fn start(factory: &SimRigFactory, settings: &DutSettings) -> anyhow::Result<SimRig> {
        let dir = tempfile::Builder::new()
            .prefix("intrust-hil-")
            .tempdir()
            .context("cannot create a temporary directory for the DUT")?;
        let paths = DutPaths::under(dir.path());
        std::fs::create_dir_all(&paths.board_root)
            .with_context(|| format!("cannot create {}", paths.board_root.display()))?;
        std::fs::write(
            &paths.config,
            daemon::sim_config(&paths, settings, &factory.log_level),
        )
        .with_context(|| format!("cannot write {}", paths.config.display()))?;
        let daemon = Daemon::spawn(&factory.intrustd, &factory.launcher, &paths)?;
        let deadline = Instant::now() + factory.startup_timeout;

        wait_for_control(
            &daemon,
            &paths.control_socket,
            deadline,
            factory.startup_timeout,
        )
        .await?;
        let stream = loop {
            match UnixStream::connect(&paths.sim_socket).await {
                Ok(s) => break s,
                Err(e) => {
                    if let Some(st) = daemon.exited() {
                        bail!(
                            "intrustd exited with {st} before its sim socket appeared; its stderr: {}",
                            daemon.stderr_tail()
                        );
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "cannot connect to intrustd's sim socket {} within {:?} ({e}); {}",
                            paths.sim_socket.display(),
                            factory.startup_timeout,
                            daemon.diagnosis()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let (read, write) = stream.into_split();
        let mut read = BufReader::new(read);
        let hello = tokio::time::timeout_at(deadline, read_line(&mut read))
            .await
            .map_err(|_| {
                anyhow!(
                    "no hello on the sim socket within {:?}; {}",
                    factory.startup_timeout,
                    daemon.diagnosis()
                )
            })?
            .with_context(|| {
                format!("reading hello from the sim socket; {}", daemon.diagnosis())
            })?;
        let received = Mono::now();
        let leds = match hello {
            Some(SimEvent::Hello {
                protocol: 1,
                leds,
                now_us,
                ..
            }) => leds
                .into_iter()
                .map(|(led, pattern)| {
                    (
                        led,
                        vec![Observation {
                            pattern,
                            rig_at: received,
                            dut_at_us: Some(now_us),
                        }],
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            Some(SimEvent::Hello { protocol, .. }) => {
                bail!("the sim socket speaks protocol {protocol}; this harness knows protocol 1")
            }
            Some(other) => bail!("the sim socket's first message is not a hello: {other:?}"),
            None => bail!(
                "the sim socket closed before its hello; {}",
                daemon.diagnosis()
            ),
        };
        if !leds.contains_key(&LedRole::Status) {
            bail!("the sim socket's hello has no status LED");
        }
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            tracked: Mutex::new(Tracked {
                leds,
                ..Tracked::default()
            }),
            changed,
        });
        let reader = tokio::spawn(track(read, shared.clone()));
        Ok(SimRig {
            reader,
            writer: tokio::sync::Mutex::new(write),
            shared,
            daemon,
            paths,
            info: factory.rig_info(),
            _dir: dir,
        })
    }

    /// The daemon's process id (of the launcher, when there is one).
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The DUT's files (config, captured output, sockets).
    pub fn paths(&self) -> &DutPaths {
        &self.paths
    }

    /// `err` with the daemon's state and stderr appended.
    fn explain(&self, err: anyhow::Error) -> anyhow::Error {
        err.context(self.daemon.diagnosis())
    }

    async fn send(&self, op: SimOpKind, button: Button) -> anyhow::Result<Mono> {
        let mut line = serde_json::to_vec(&SimOp { op, button })?;
        line.push(b'\n');
        let mut w = self.writer.lock().await;
        let at = Mono::now();
        w.write_all(&line).await.map_err(|e| {
            self.explain(anyhow!(
                "cannot send {op:?} {button} on the sim socket: {e}"
            ))
        })?;
        Ok(at)
    }

    async fn control(&self, req: ControlRequest) -> anyhow::Result<wire::Status> {
        let resp = control_request(&self.paths.control_socket, &req)
            .await
            .map_err(|e| self.explain(e))?;
        resp.into_status().map_err(|e| anyhow!("{req:?}: {e}"))
    }

    fn closed(&self) -> anyhow::Result<()> {
        match &self.shared.lock().closed {
            Some(why) => Err(self.explain(anyhow!("lost the sim socket: {why}"))),
            None => Ok(()),
        }
    }

    fn latest(&self, led: LedRole) -> anyhow::Result<Observation> {
        self.closed()?;
        let t = self.shared.lock();
        t.leds
            .get(&led)
            .and_then(|h| h.last())
            .cloned()
            .ok_or_else(|| anyhow!("the simulated board has no {led} LED"))
    }
}

impl Drop for SimRig {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Rig for SimRig {
    fn info(&self) -> RigInfo {
        self.info.clone()
    }

    fn press(&self, button: Button) -> BoxFuture<'_, anyhow::Result<Mono>> {
        Box::pin(self.send(SimOpKind::Press, button))
    }

    fn release(&self, button: Button) -> BoxFuture<'_, anyhow::Result<Mono>> {
        Box::pin(self.send(SimOpKind::Release, button))
    }

    fn current(&self, led: LedRole) -> BoxFuture<'_, anyhow::Result<Observation>> {
        Box::pin(async move { self.latest(led) })
    }

    fn observe(&self, led: LedRole, window: Duration) -> BoxFuture<'_, anyhow::Result<Timeline>> {
        Box::pin(async move {
            self.latest(led)?;
            let start = Mono::now();
            tokio::time::sleep(window).await;
            let end = Mono::now();
            self.closed()?;
            let t = self.shared.lock();
            let history = t.leds.get(&led).map(Vec::as_slice).unwrap_or(&[]);
            let mut entries = Vec::new();
            if let Some(first) = history.iter().rev().find(|o| o.rig_at <= start) {
                entries.push(Observation {
                    rig_at: start,
                    ..first.clone()
                });
            }
            entries.extend(
                history
                    .iter()
                    .filter(|o| o.rig_at > start && o.rig_at <= end)
                    .cloned(),
            );
            Ok(Timeline {
                led,
                start,
                end,
                entries,
            })
        })
    }

    fn wait_for<'a>(
        &'a self,
        led: LedRole,
        pred: PatternPredicate<'a>,
        timeout: Duration,
    ) -> BoxFuture<'a, anyhow::Result<Option<Observation>>> {
        Box::pin(async move {
            let deadline = Instant::now() + timeout;
            let mut rx = self.shared.changed.subscribe();
            loop {
                let now = self.latest(led)?;
                if pred(&now.pattern) {
                    return Ok(Some(now));
                }
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Err(_) => return Ok(None),
                    Ok(Err(_)) => {
                        return Err(self.explain(anyhow!("the sim socket reader stopped")))
                    }
                    Ok(Ok(())) => {}
                }
            }
        })
    }

    fn dut_edges_since(&self, since: Mono) -> Option<Vec<DutEdge>> {
        let t = self.shared.lock();
        Some(
            t.edges
                .iter()
                .filter(|e| e.rig_at >= since)
                .copied()
                .collect(),
        )
    }

    fn status(&self) -> BoxFuture<'_, anyhow::Result<DutStatus>> {
        Box::pin(async move { Ok(dut_status(self.control(ControlRequest::Status).await?)) })
    }

    fn close_pairing_window(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.control(ControlRequest::Pairing {
                action: PairingAction::Close,
            })
            .await?;
            Ok(())
        })
    }
}

fn dut_status(s: wire::Status) -> DutStatus {
    DutStatus {
        identity: DutIdentity {
            id: s.device_id,
            board: s.board,
            versions: s.versions,
        },
        state: s.state,
        pairing_window_open: s.pairing_window.open,
        factory_reset_requests: s.factory_reset_requests,
    }
}

/// Polls until the control socket answers a status request, the daemon
/// exits, or `deadline`.
async fn wait_for_control(
    daemon: &Daemon,
    socket: &Path,
    deadline: Instant,
    budget: Duration,
) -> anyhow::Result<()> {
    let mut last_err = None;
    loop {
        if let Some(st) = daemon.exited() {
            bail!(
                "intrustd exited with {st} before its control socket appeared; its stderr: {}",
                daemon.stderr_tail()
            );
        }
        if socket.exists() {
            match control_request(socket, &ControlRequest::Status).await {
                Ok(resp) => {
                    resp.into_status()
                        .map_err(|e| anyhow!("first status request failed: {e}"))?;
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
        }
        if Instant::now() >= deadline {
            let why = match last_err {
                Some(e) => format!("it does not answer: {e:#}"),
                None => format!("{} does not exist", socket.display()),
            };
            bail!(
                "intrustd's control socket is not ready after {budget:?} ({why}); {}",
                daemon.diagnosis()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request on a fresh connection to the control socket.
pub async fn control_request(
    socket: &Path,
    req: &ControlRequest,
) -> anyhow::Result<ControlResponse> {
    let exchange = async {
        let stream = UnixStream::connect(socket).await.with_context(|| {
            format!("cannot connect to the control socket {}", socket.display())
        })?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        write
            .write_all(&line)
            .await
            .context("cannot send to the control socket")?;
        let mut read = BufReader::new(read);
        let line = read_raw_line(&mut read)
            .await
            .context("reading the control socket")?
            .ok_or_else(|| anyhow!("the control socket closed without answering {req:?}"))?;
        serde_json::from_slice::<ControlResponse>(&line).with_context(|| {
            format!(
                "malformed control response {:?}",
                String::from_utf8_lossy(&line)
            )
        })
    };
    tokio::time::timeout(CONTROL_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            anyhow!("the control socket did not answer {req:?} within {CONTROL_TIMEOUT:?}")
        })?
}

/// Reads one line (without its newline), at most [`MAX_LINE`] bytes; `None` at EOF.
async fn read_raw_line(r: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let n = r
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        bail!("line longer than {MAX_LINE} bytes");
    } else {
        bail!("connection closed in the middle of a line");
    }
    Ok(Some(buf))
}

async fn read_line(r: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<Option<SimEvent>> {
    match read_raw_line(r).await? {
        None => Ok(None),
        Some(line) => serde_json::from_slice(&line).map(Some).with_context(|| {
            format!(
                "malformed sim socket message {:?}",
                String::from_utf8_lossy(&line)
            )
        }),
    }
}

/// The reader task: records every LED change and button edge until the
/// socket closes or says something we do not understand.
async fn track(mut read: BufReader<OwnedReadHalf>, shared: Arc<Shared>) {
    loop {
        let msg = read_line(&mut read).await;
        let rig_at = Mono::now();
        let stop = match msg {
            Ok(Some(SimEvent::Led {
                led,
                pattern,
                at_us,
            })) => {
                shared.update(|t| {
                    t.leds.entry(led).or_default().push(Observation {
                        pattern,
                        rig_at,
                        dut_at_us: Some(at_us),
                    })
                });
                None
            }
            Ok(Some(SimEvent::Button {
                button,
                edge,
                at_us,
            })) => {
                shared.update(|t| {
                    t.edges.push(DutEdge {
                        button,
                        edge,
                        dut_at_us: at_us,
                        rig_at,
                    })
                });
                None
            }
            Ok(Some(SimEvent::Hello { .. })) => {
                Some("a second hello on the same connection".to_owned())
            }
            Ok(Some(SimEvent::Error { message })) => {
                Some(format!("intrustd reported an error: {message}"))
            }
            Ok(None) => Some("intrustd closed the sim socket".to_owned()),
            Err(e) => Some(format!("{e:#}")),
        };
        if let Some(why) = stop {
            shared.update(|t| t.closed = Some(why));
            return;
        }
    }
}
