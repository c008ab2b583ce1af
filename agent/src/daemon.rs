//! The daemon's tokio shell: config → state dir → board → state machines →
//! one loop over button events, deadlines, control requests and signals.
//!
//! All policy lives in the sans-IO cores ([`Gestures`], [`Appliance`]); this
//! loop only feeds them time and events and carries out their outputs. The
//! button→LED path does no blocking work: an LED is set only when its
//! pattern changes; factory reset, installs, mark-good and slot status run
//! on blocking threads and report back to the loop as `Done` messages.

use crate::appliance::{Action, Appliance, Input, State};
use crate::config::Config;
use crate::control::{
    ControlRequest, ControlServer, ErrorAction, PairingAction, PairingWindow, Request, Response,
    Status, UpdateRequest, Versions,
};
use crate::gestures::{GestureConfig, Gestures};
use crate::peer::service::PeerService;
use crate::recovery::{
    AbRecovery, MarkGood, NotWired, Recovery, RecoveryError, SlotsStatus, UpdateOutcome,
    UpdateSource,
};
use crate::state_dir::StateDir;
use crate::update::Updates;
use anyhow::Context;
use intrust_board::{ButtonEvent, Led, LedPattern, LedRole, Mono};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The agent's version, reported in status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An opened board as the daemon uses it.
pub struct BoardHandle {
    /// The profile's board name.
    pub name: String,
    pub leds: BTreeMap<LedRole, Box<dyn Led>>,
    pub events: mpsc::Receiver<ButtonEvent>,
    /// The simulated board's socket, if the board serves one.
    pub sim_socket: Option<PathBuf>,
    /// Whatever must live as long as the board (backend tasks, sim server).
    pub keep_alive: Option<Box<dyn std::any::Any + Send>>,
}

/// Resolves the config's board profile (name or path). Errors name the
/// profile file and line.
pub fn load_profile(config: &Config) -> anyhow::Result<intrust_board::Profile> {
    intrust_board::Profile::resolve(&config.board)
        .map_err(|e| anyhow::anyhow!("board profile: {e}"))
}

/// Opens the board the config names. Must run within a tokio runtime.
pub fn open_board(config: &Config) -> anyhow::Result<BoardHandle> {
    let profile = load_profile(config)?;
    let sim_socket = profile.uses_sim().then(|| config.sim_socket.clone());
    if let Some(dir) = sim_socket
        .as_deref()
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the directory of the sim socket {}",
                config.sim_socket.display()
            )
        })?;
    }
    let opts = intrust_board::BoardOptions {
        root: config.board_root.clone(),
        sim_socket,
    };
    // BoardError messages already name the profile and the hardware.
    let board = intrust_board::Board::open(&profile, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(BoardHandle {
        name: board.name,
        leds: board.leds,
        events: board.events,
        sim_socket: board.sim.as_ref().map(|s| s.path().to_owned()),
        keep_alive: board
            .sim
            .map(|s| Box::new(s) as Box<dyn std::any::Any + Send>),
    })
}

/// What the command line sets besides the config file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// `--insecure-open`: every browser that reaches the device gets a
    /// session, without login. Development and tests only; warned about at
    /// start and every [`INSECURE_WARNING_EVERY`].
    pub insecure_open: bool,
}

/// How often `--insecure-open` is warned about while the daemon runs.
pub const INSECURE_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Runs the whole daemon until `shutdown` completes. Returns after a clean
/// shutdown (socket removed, LEDs off).
pub async fn run(
    config: Config,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let recovery = open_recovery(&config)?;
    let state = StateDir::open(&config.state_dir)?;
    let board = open_board(&config)?;
    serve(&config, state, board, recovery, options, shutdown).await
}

fn warn_insecure_open() {
    tracing::warn!(
        "INSECURE: intrustd runs with --insecure-open: every browser that reaches this device \
         through flock gets in, without login, and can use all of its apps. \
         For development and tests only."
    );
}

/// The recovery the config names: [`AbRecovery`] from `recovery_config`
/// (a broken file is an error naming its file and line), else [`NotWired`].
/// Finishes a factory reset a power cut interrupted, so it runs before the
/// state directory is read.
pub fn open_recovery(config: &Config) -> anyhow::Result<Arc<dyn Recovery>> {
    match &config.recovery_config {
        Some(path) => {
            let recovery = AbRecovery::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(config = %path.display(), board = %recovery.config().board, "recovery wired");
            recovery.finish_interrupted_reset()?;
            Ok(Arc::new(recovery))
        }
        None => {
            tracing::warn!("no recovery_config in the agent config: a RESET gesture will erase nothing and updates are refused");
            Ok(Arc::new(NotWired))
        }
    }
}

/// Work done on blocking threads, reported back to the loop.
enum Done {
    UpdateProgress {
        attempt: u64,
        percent: u8,
    },
    Update {
        attempt: u64,
        result: Result<UpdateOutcome, RecoveryError>,
    },
    MarkGood {
        result: Result<MarkGood, RecoveryError>,
        slots: Option<SlotsStatus>,
    },
    FactoryReset(Result<(), RecoveryError>),
    /// The answer to `update status`, completed by the loop.
    Slots {
        result: Result<SlotsStatus, RecoveryError>,
        reply: oneshot::Sender<Response>,
    },
}

/// Whether the agent's apps pass their health checks. There are no apps
/// yet; their checks join here, and mark-good waits for them.
fn apps_healthy() -> bool {
    true
}

/// What status reports that the loop does not change.
struct Fixed {
    started: Mono,
    device_id: String,
    board: String,
    sim_socket: Option<PathBuf>,
    /// The peer connection, when `[rendezvous]` is configured.
    peer: Option<PeerService>,
}

/// The main loop over an opened state dir and board.
pub async fn serve(
    config: &Config,
    state: StateDir,
    board: BoardHandle,
    recovery: Arc<dyn Recovery>,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = Mono::now();
    let device_id = state.device_id()?;
    let paired = state.is_paired()?;
    let BoardHandle {
        name: board_name,
        mut leds,
        mut events,
        sim_socket,
        keep_alive,
    } = board;

    let mut gestures = Gestures::new(GestureConfig::from(&config.buttons));
    let mut app = Appliance::new(config.pairing.window());
    let mut updates = Updates::new(recovery.is_wired());
    let mut shown: BTreeMap<LedRole, LedPattern> = BTreeMap::new();
    show_leds(&app.state(), &mut leds, &mut shown);

    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlRequest>(16);
    let server = ControlServer::bind(&config.control_socket, ctl_tx)?;
    if options.insecure_open {
        warn_insecure_open();
    }
    let peer = match &config.rendezvous {
        Some(section) => Some(PeerService::start(
            config,
            section,
            &state,
            options.insecure_open,
        )?),
        None => {
            tracing::info!("no [rendezvous] in the config: running without the peer connection");
            if options.insecure_open {
                tracing::warn!("--insecure-open has no effect without [rendezvous]");
            }
            None
        }
    };
    let mut peer_count = peer.as_ref().map(|p| p.watch_connected());
    let mut insecure_warning = (options.insecure_open && peer.is_some()).then(|| {
        let mut i = tokio::time::interval_at(
            tokio::time::Instant::now() + INSECURE_WARNING_EVERY,
            INSECURE_WARNING_EVERY,
        );
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    // Unbounded: at most one message per percent of one install, plus one
    // per request; the senders are blocking threads that must not wait.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();

    app.handle_input(Input::BootFinished { paired }, Mono::now());
    let mut last_state = app.state();
    show_leds(&last_state, &mut leds, &mut shown);
    let mut fixed = Fixed {
        started,
        device_id: device_id.to_string(),
        board: board_name,
        sim_socket,
        peer,
    };
    tracing::info!(
        device_id = %fixed.device_id,
        board = %fixed.board,
        control = %config.control_socket.display(),
        sim = %fixed.sim_socket.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
        "intrustd {VERSION} ready, {last_state}"
    );
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("state: {last_state}")),
    ]);

    // Up: board open, control socket serving. Once the apps are healthy
    // too, the booted slot is good.
    if apps_healthy() && updates.take_mark_good() {
        let recovery = recovery.clone();
        let done = done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = recovery.mark_good();
            let slots = recovery.status().ok();
            let _ = done.send(Done::MarkGood { result, slots });
        });
    }

    let mut watchdog = sd_notify::watchdog_enabled().map(|d| {
        let mut i = tokio::time::interval((d / 2).max(Duration::from_millis(10)));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut factory_reset_requests: u64 = 0;
    let mut events_open = true;
    tokio::pin!(shutdown);

    loop {
        let deadline = match (gestures.poll_timeout(), app.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async move {
            match deadline {
                Some(d) => tokio::time::sleep(d.saturating_since(Mono::now())).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            ev = events.recv(), if events_open => match ev {
                Some(ev) => {
                    tracing::debug!(button = %ev.button, edge = ?ev.edge, "button");
                    gestures.handle_event(ev);
                }
                None => {
                    tracing::warn!("the board's button events ended; buttons no longer work");
                    events_open = false;
                }
            },
            _ = sleep => {
                let now = Mono::now();
                gestures.handle_timeout(now);
                app.handle_timeout(now);
            }
            Some(done) = done_rx.recv() => {
                let now = Mono::now();
                match done {
                    Done::UpdateProgress { attempt, percent } => {
                        if let Some(input) = updates.progress(attempt, percent) {
                            app.handle_input(input, now);
                        }
                    }
                    Done::Update { attempt, result } => {
                        match &result {
                            Ok(o) => tracing::info!(version = %o.version, slot = %o.slot, bytes = o.bytes, "update installed; slot {} starts on the next reboot", o.slot),
                            Err(e) => tracing::error!(error = %e, "update failed"),
                        }
                        for input in updates.finish(attempt, result) {
                            app.handle_input(input, now);
                        }
                    }
                    Done::MarkGood { result, slots } => {
                        match &result {
                            Ok(MarkGood::Marked(s)) => tracing::info!(slot = %s, "booted slot marked good"),
                            Ok(MarkGood::AlreadyGood(s)) => tracing::info!(slot = %s, "booted slot already good"),
                            Err(e) => tracing::error!(error = %e, "cannot mark the booted slot good; the bootloader may fall back to the other slot"),
                        }
                        updates.mark_good_finished(result);
                        if let Some(s) = &slots {
                            updates.slots_read(s);
                        }
                    }
                    Done::FactoryReset(result) => match result {
                        Ok(()) => {
                            tracing::warn!("factory reset done");
                            app.handle_input(Input::ClearError, now);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "factory reset failed");
                            app.handle_input(Input::SetError(format!("factory reset failed: {e}")), now);
                        }
                    },
                    Done::Slots { result, reply } => {
                        drive(&mut gestures, &mut app, &mut leds, &mut shown, &mut factory_reset_requests, &recovery, &done_tx);
                        let response = match result {
                            Ok(slots) => {
                                updates.slots_read(&slots);
                                Response::ok(status(&fixed, &app, &shown, factory_reset_requests, &updates, Some(&slots), now))
                            }
                            Err(e) => Response::error(format!("recovery status: {e}")),
                        };
                        let _ = reply.send(response);
                    }
                }
            }
            Some(req) = ctl_rx.recv() => {
                let now = Mono::now();
                let mut refused = None;
                let mut reply = Some(req.reply);
                let is_peers = req.request == Request::Peers;
                match req.request {
                    Request::Status => {}
                    Request::Peers => {
                        if fixed.peer.is_none() {
                            refused = Some("no [rendezvous] in the agent config: the peer connection is off".to_owned());
                        }
                    }
                    Request::Pairing { action: PairingAction::Open } => app.handle_input(Input::OpenPairingWindow, now),
                    Request::Pairing { action: PairingAction::Close } => app.handle_input(Input::ClosePairingWindow, now),
                    Request::Error { action: ErrorAction::Clear } => {
                        tracing::info!("error cleared by the owner");
                        app.handle_input(Input::ClearError, now);
                    }
                    Request::Update(UpdateRequest::Apply { source }) => {
                        match UpdateSource::parse(&source).and_then(|s| updates.start(&s).map(|started| (s, started))) {
                            Ok((source, (attempt, input))) => {
                                tracing::info!(attempt, source = %source, "update started");
                                app.handle_input(input, now);
                                spawn_install(&recovery, &done_tx, attempt, source);
                            }
                            Err(e) => refused = Some(e),
                        }
                    }
                    Request::Update(UpdateRequest::Status) => {
                        if recovery.is_wired() {
                            let recovery = recovery.clone();
                            let done = done_tx.clone();
                            let reply = reply.take();
                            tokio::task::spawn_blocking(move || {
                                if let Some(reply) = reply {
                                    let _ = done.send(Done::Slots { result: recovery.status(), reply });
                                }
                            });
                        } else {
                            refused = Some(crate::recovery::NOT_WIRED.to_owned());
                        }
                    }
                }
                // The answer must show the LEDs the request caused.
                drive(&mut gestures, &mut app, &mut leds, &mut shown, &mut factory_reset_requests, &recovery, &done_tx);
                if let Some(reply) = reply {
                    let response = match refused {
                        Some(e) => Response::error(e),
                        None => {
                            let mut r = Response::ok(status(&fixed, &app, &shown, factory_reset_requests, &updates, None, now));
                            if is_peers {
                                r.sessions = fixed.peer.as_ref().map(|p| p.sessions());
                            }
                            r
                        }
                    };
                    let _ = reply.send(response);
                }
            }
            Some(n) = async {
                match peer_count.as_mut() {
                    Some(rx) => rx.changed().await.ok().map(|()| *rx.borrow_and_update()),
                    None => std::future::pending().await,
                }
            } => {
                tracing::debug!(peers = n, "peer sessions changed");
                app.handle_input(Input::PeerCount(u32::try_from(n).unwrap_or(u32::MAX)), Mono::now());
            }
            _ = async { match insecure_warning.as_mut() { Some(i) => { i.tick().await; } None => std::future::pending().await } } => {
                warn_insecure_open();
            }
            _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
        drive(
            &mut gestures,
            &mut app,
            &mut leds,
            &mut shown,
            &mut factory_reset_requests,
            &recovery,
            &done_tx,
        );
        let now_state = app.state();
        if now_state != last_state {
            tracing::info!(from = %last_state, to = %now_state, "state changed");
            notify(&[sd_notify::NotifyState::Status(&format!(
                "state: {now_state}"
            ))]);
            last_state = now_state;
        }
    }

    tracing::info!("shutting down");
    if updates.is_running() {
        tracing::warn!("shutting down during an update: the install thread finishes or is cut off with the process; the booted slot stays as it was");
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    drop(server); // stops accepting, removes the control socket
    if let Some(peer) = fixed.peer.take() {
        peer.stop().await;
    }
    for (role, led) in leds.iter_mut() {
        if let Err(e) = led.set(&LedPattern::Off) {
            tracing::warn!(led = %role, error = %e, "cannot switch LED off");
        }
    }
    drop(leds);
    drop(events);
    drop(keep_alive);
    if let Some(p) = &fixed.sim_socket {
        // The sim server removes it too; make sure nothing is left behind.
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// The status as of `now`; `slots` only in the answer to `update status`.
fn status(
    fixed: &Fixed,
    app: &Appliance,
    shown: &BTreeMap<LedRole, LedPattern>,
    factory_reset_requests: u64,
    updates: &Updates,
    slots: Option<&SlotsStatus>,
    now: Mono,
) -> Status {
    let state = app.state();
    Status {
        state: state.name(),
        device_id: fixed.device_id.clone(),
        board: fixed.board.clone(),
        versions: Versions {
            intrustd: VERSION.into(),
            control_protocol: crate::control::PROTOCOL,
        },
        leds: shown.clone(),
        pairing_window: PairingWindow {
            open: app.pairing_window_closes_at().is_some(),
            closes_in_ms: app
                .pairing_window_closes_at()
                .map(|t| t.saturating_since(now).as_millis() as u64),
        },
        factory_reset_requests,
        sim_socket: fixed.sim_socket.clone(),
        uptime_ms: now.saturating_since(fixed.started).as_millis() as u64,
        update_percent: match &state {
            State::Updating { percent } => Some(*percent),
            _ => None,
        },
        error: match state {
            State::Error { message } => Some(message),
            _ => None,
        },
        update: updates.status(slots),
        rendezvous: fixed.peer.as_ref().map(|p| p.status(now)),
        peers: fixed
            .peer
            .as_ref()
            .map(|p| u32::try_from(*p.watch_connected().borrow()).unwrap_or(u32::MAX)),
    }
}

/// Installs `source` on a blocking thread, reporting progress and the
/// result as install `attempt`.
fn spawn_install(
    recovery: &Arc<dyn Recovery>,
    done: &mpsc::UnboundedSender<Done>,
    attempt: u64,
    source: UpdateSource,
) {
    let recovery = recovery.clone();
    let done = done.clone();
    tokio::task::spawn_blocking(move || {
        let result = recovery.apply_update(&source, &mut |percent| {
            let _ = done.send(Done::UpdateProgress { attempt, percent });
        });
        let _ = done.send(Done::Update { attempt, result });
    });
}

/// Moves gestures into the appliance, carries out actions, updates LEDs.
fn drive(
    gestures: &mut Gestures,
    app: &mut Appliance,
    leds: &mut BTreeMap<LedRole, Box<dyn Led>>,
    shown: &mut BTreeMap<LedRole, LedPattern>,
    factory_reset_requests: &mut u64,
    recovery: &Arc<dyn Recovery>,
    done: &mpsc::UnboundedSender<Done>,
) {
    let now = Mono::now();
    while let Some(g) = gestures.poll_gesture() {
        tracing::info!(gesture = ?g, "button gesture");
        app.handle_input(Input::Gesture(g), now);
    }
    while let Some(action) = app.poll_action() {
        match action {
            Action::FactoryReset => {
                *factory_reset_requests += 1;
                tracing::warn!("factory reset requested with the RESET button");
                let recovery = recovery.clone();
                let done = done.clone();
                // Off the event loop: a real reset does disk IO.
                tokio::task::spawn_blocking(move || {
                    let _ = done.send(Done::FactoryReset(recovery.factory_reset()));
                });
            }
        }
    }
    show_leds(&app.state(), leds, shown);
}

/// Sets each LED whose pattern differs from what it shows.
fn show_leds(
    state: &State,
    leds: &mut BTreeMap<LedRole, Box<dyn Led>>,
    shown: &mut BTreeMap<LedRole, LedPattern>,
) {
    for (role, led) in leds.iter_mut() {
        let want = state.led(*role);
        if shown.get(role) == Some(&want) {
            continue;
        }
        if let Err(e) = led.set(&want) {
            tracing::error!(led = %role, pattern = %want, error = %e, "cannot set LED");
        }
        // Recorded even on error: retrying a broken LED on every event would
        // flood the log; the next change tries again.
        shown.insert(*role, want);
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appliance::StateName;
    use crate::control::ControlClient;
    use crate::recovery::Recorded;
    use intrust_board::{Button, Edge};
    use std::sync::Mutex;

    type Log = Arc<Mutex<Vec<(LedRole, LedPattern)>>>;

    struct FakeLed(LedRole, Log);

    impl Led for FakeLed {
        fn set(&mut self, p: &LedPattern) -> Result<(), intrust_board::BoardError> {
            self.1.lock().unwrap().push((self.0, p.clone()));
            Ok(())
        }
    }

    fn fake_board(log: &Log) -> (BoardHandle, mpsc::Sender<ButtonEvent>) {
        let (tx, rx) = mpsc::channel(16);
        let leds = LedRole::ALL
            .iter()
            .map(|&r| (r, Box::new(FakeLed(r, log.clone())) as Box<dyn Led>))
            .collect();
        (
            BoardHandle {
                name: "fake".into(),
                leds,
                events: rx,
                sim_socket: None,
                keep_alive: None,
            },
            tx,
        )
    }

    async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn last(log: &Log, role: LedRole) -> Option<LedPattern> {
        log.lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p.clone())
    }

    async fn press(tx: &mpsc::Sender<ButtonEvent>, button: Button, edge: Edge) {
        tx.send(ButtonEvent {
            button,
            edge,
            at: Mono::now(),
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn daemon_loop_end_to_end_with_a_fake_board() {
        let t = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: t.path().join("state"),
            control_socket: t.path().join("control.sock"),
            buttons: crate::config::ButtonsConfig {
                pair_min_ms: 1,
                pair_max_ms: 3000,
                reset_arm_ms: 200,
                reset_cancel_ms: 5000,
            },
            ..Config::default()
        };
        let log: Log = Default::default();
        let (board, tx) = fake_board(&log);
        let recovery = Arc::new(Recorded::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = StateDir::open(&config.state_dir).unwrap();
        let cfg = config.clone();
        let rec: Arc<dyn Recovery> = recovery.clone();
        let daemon = tokio::spawn(async move {
            serve(&cfg, state, board, rec, Options::default(), async {
                let _ = stop_rx.await;
            })
            .await
        });
        wait_for("control socket", || config.control_socket.exists()).await;
        let mut c = ControlClient::connect(&config.control_socket)
            .await
            .unwrap();
        let s = c.status().await.unwrap();
        assert_eq!(s.state, StateName::Unpaired);
        assert_eq!(s.board, "fake");
        assert_eq!(s.device_id.len(), 32);
        assert_eq!(
            s.leds[&LedRole::Status],
            LedPattern::Blink {
                on_ms: 500,
                off_ms: 500
            }
        );
        // Booting was shown first.
        assert_eq!(
            log.lock().unwrap()[0],
            (LedRole::Status, State::Booting.led(LedRole::Status))
        );

        // PAIR tap → pairing window pattern.
        press(&tx, Button::Pair, Edge::Press).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        press(&tx, Button::Pair, Edge::Release).await;
        let pw = State::PairingWindow.led(LedRole::Status);
        wait_for("pairing pattern", || {
            last(&log, LedRole::Status) == Some(pw.clone())
        })
        .await;
        let s = c.status().await.unwrap();
        assert_eq!(s.state, StateName::PairingWindow);
        assert!(s.pairing_window.open);
        assert!(s.pairing_window.closes_in_ms.unwrap() > 299_000);

        // Control closes it.
        let s = c.pairing(false).await.unwrap();
        assert_eq!(s.state, StateName::Unpaired);
        assert_eq!(
            s.leds[&LedRole::Status],
            State::Unpaired.led(LedRole::Status)
        );

        // RESET held past arm → fast blink; release → one factory reset.
        let n_before = log.lock().unwrap().len();
        press(&tx, Button::Reset, Edge::Press).await;
        let armed = State::FactoryResetArmed.led(LedRole::Status);
        wait_for("armed pattern", || {
            last(&log, LedRole::Status) == Some(armed.clone())
        })
        .await;
        press(&tx, Button::Reset, Edge::Release).await;
        wait_for("reset recorded", || recovery.calls() == 1).await;
        let s = c.status().await.unwrap();
        assert_eq!(s.factory_reset_requests, 1);
        assert_eq!(s.state, StateName::Unpaired);
        // LEDs are only set on change: exactly armed, then back to unpaired.
        let sets: Vec<_> = log.lock().unwrap()[n_before..].to_vec();
        assert_eq!(
            sets,
            vec![
                (LedRole::Status, armed),
                (LedRole::Status, State::Unpaired.led(LedRole::Status))
            ]
        );

        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), daemon)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!config.control_socket.exists());
        assert_eq!(last(&log, LedRole::Status), Some(LedPattern::Off));
        assert_eq!(last(&log, LedRole::Link), Some(LedPattern::Off));
    }

    /// Starts `serve` on a fake board with `recovery`; returns the control
    /// socket, the stop sender and the task.
    async fn start_with(
        t: &tempfile::TempDir,
        recovery: Arc<dyn Recovery>,
    ) -> (
        PathBuf,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
        Log,
    ) {
        let config = Config {
            state_dir: t.path().join("state"),
            control_socket: t.path().join("control.sock"),
            ..Config::default()
        };
        let state = StateDir::open(&config.state_dir).unwrap();
        let log: Log = Default::default();
        let (board, _tx) = fake_board(&log);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let cfg = config.clone();
        let daemon = tokio::spawn(async move {
            serve(&cfg, state, board, recovery, Options::default(), async {
                let _ = stop_rx.await;
            })
            .await
        });
        wait_for("control socket", || config.control_socket.exists()).await;
        (config.control_socket, stop_tx, daemon, log)
    }

    async fn stop(
        stop_tx: tokio::sync::oneshot::Sender<()>,
        daemon: tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), daemon)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// Polls status until `f` holds.
    async fn status_until(
        c: &mut ControlClient,
        what: &str,
        f: impl Fn(&Status) -> bool,
    ) -> Status {
        let t0 = std::time::Instant::now();
        loop {
            let s = c.status().await.unwrap();
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}; last status {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn update_progress_shows_updating_one_at_a_time_then_pending_slot() {
        let t = tempfile::tempdir().unwrap();
        let recovery = Arc::new(Recorded::default());
        recovery.hold_updates();
        let (socket, stop_tx, daemon, log) = start_with(&t, recovery.clone()).await;
        let mut c = ControlClient::connect(&socket).await.unwrap();
        // Mark-good ran once, after start.
        let s = status_until(&mut c, "mark-good", |s| {
            s.update.as_ref().unwrap().mark_good != crate::control::MarkGoodState::Running
                && s.update.as_ref().unwrap().mark_good != crate::control::MarkGoodState::Waiting
        })
        .await;
        assert_eq!(
            s.update.unwrap().mark_good,
            crate::control::MarkGoodState::Marked { slot: "A".into() }
        );
        assert_eq!(recovery.mark_goods(), 1);

        let s = c.update_apply("/tmp/u.bundle").await.unwrap();
        assert_eq!(s.state, StateName::Updating);
        assert!(s.update.as_ref().unwrap().running);
        let s = status_until(&mut c, "42 %", |s| s.update_percent == Some(42)).await;
        assert_eq!(
            s.leds[&LedRole::Status],
            State::Updating { percent: 42 }.led(LedRole::Status)
        );
        assert_eq!(
            last(&log, LedRole::Status),
            Some(State::Updating { percent: 0 }.led(LedRole::Status))
        );
        // A second update while one runs is refused, with a reason.
        let err = c
            .update_apply("/tmp/other.bundle")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already running"), "{err}");
        let err = c
            .update_apply("http://example.com/u.bundle")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("http"), "{err}");
        recovery.release_updates();
        let s = status_until(&mut c, "update done", |s| {
            !s.update.as_ref().unwrap().running
        })
        .await;
        assert_eq!(s.state, StateName::Unpaired);
        assert_eq!(s.update_percent, None);
        let u = s.update.unwrap();
        assert_eq!(u.pending_slot.as_deref(), Some("B"));
        let l = u.last.unwrap();
        assert!(l.ok);
        assert_eq!((l.attempt, l.slot.as_deref()), (1, Some("B")));
        assert_eq!(
            recovery.updates(),
            [UpdateSource::File("/tmp/u.bundle".into())]
        );
        // update status carries the recovery's slots.
        let s = c.update_status().await.unwrap();
        let slots = s.update.unwrap().slots.unwrap();
        assert_eq!(
            (slots.booted.as_str(), slots.pending.as_deref()),
            ("A", Some("B"))
        );
        assert_eq!(recovery.mark_goods(), 1, "mark-good runs once");
        stop(stop_tx, daemon).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_update_shows_error_until_cleared() {
        let t = tempfile::tempdir().unwrap();
        let recovery = Arc::new(Recorded::default());
        recovery.fail_updates(Some("signature does not verify"));
        let (socket, stop_tx, daemon, _log) = start_with(&t, recovery.clone()).await;
        let mut c = ControlClient::connect(&socket).await.unwrap();
        c.update_apply("/tmp/u.bundle").await.unwrap();
        let s = status_until(&mut c, "error", |s| s.state == StateName::Error).await;
        assert_eq!(
            s.error.as_deref(),
            Some("update failed: signature does not verify")
        );
        assert_eq!(
            s.leds[&LedRole::Status],
            State::Error {
                message: String::new()
            }
            .led(LedRole::Status)
        );
        let l = s.update.unwrap().last.unwrap();
        assert!(!l.ok);
        assert_eq!(l.error.as_deref(), Some("signature does not verify"));
        let s = c.clear_error().await.unwrap();
        assert_eq!(s.state, StateName::Unpaired);
        assert_eq!(s.error, None);
        // The next successful update also clears an error.
        recovery.fail_updates(Some("again"));
        c.update_apply("/tmp/u.bundle").await.unwrap();
        status_until(&mut c, "error", |s| s.state == StateName::Error).await;
        recovery.fail_updates(None);
        c.update_apply("/tmp/u.bundle").await.unwrap();
        let s = status_until(&mut c, "success", |s| {
            s.update
                .as_ref()
                .unwrap()
                .last
                .as_ref()
                .is_some_and(|l| l.attempt == 3)
        })
        .await;
        assert_eq!(s.state, StateName::Unpaired);
        stop(stop_tx, daemon).await;
    }

    #[tokio::test]
    async fn without_recovery_updates_are_refused_and_status_has_no_update() {
        let t = tempfile::tempdir().unwrap();
        let (socket, stop_tx, daemon, _log) =
            start_with(&t, Arc::new(crate::recovery::NotWired)).await;
        let mut c = ControlClient::connect(&socket).await.unwrap();
        assert_eq!(c.status().await.unwrap().update, None);
        for err in [
            c.update_apply("/tmp/u.bundle").await.unwrap_err(),
            c.update_status().await.unwrap_err(),
        ] {
            assert!(err.to_string().contains("recovery_config"), "{err}");
        }
        assert_eq!(c.status().await.unwrap().state, StateName::Unpaired);
        stop(stop_tx, daemon).await;
    }

    #[tokio::test]
    async fn paired_marker_boots_to_paired() {
        let t = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: t.path().join("state"),
            control_socket: t.path().join("control.sock"),
            ..Config::default()
        };
        let state = StateDir::open(&config.state_dir).unwrap();
        state.write(crate::state_dir::PAIRED_FILE, b"").unwrap();
        let log: Log = Default::default();
        let (board, _tx) = fake_board(&log);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let cfg = config.clone();
        let daemon = tokio::spawn(async move {
            serve(
                &cfg,
                state,
                board,
                Arc::new(Recorded::default()),
                Options::default(),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        });
        wait_for("control socket", || config.control_socket.exists()).await;
        let s = ControlClient::connect(&config.control_socket)
            .await
            .unwrap()
            .status()
            .await
            .unwrap();
        assert_eq!(s.state, StateName::Paired);
        assert_eq!(s.leds[&LedRole::Status], LedPattern::On);
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), daemon)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
