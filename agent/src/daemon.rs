//! The daemon's tokio shell: config → state dir → board → state machines →
//! one loop over button events, deadlines, control requests and signals.
//!
//! All policy lives in the sans-IO cores ([`Gestures`], [`Appliance`]); this
//! loop only feeds them time and events and carries out their outputs. The
//! button→LED path does no blocking work: an LED is set only when its
//! pattern changes, and a factory reset runs on a blocking thread.

use crate::appliance::{Action, Appliance, Input, State};
use crate::config::Config;
use crate::control::{
    ControlRequest, ControlServer, PairingAction, PairingWindow, Request, Response, Status,
    Versions,
};
use crate::gestures::{GestureConfig, Gestures};
use crate::recovery::Recovery;
use crate::state_dir::StateDir;
use anyhow::Context;
use intrust_board::{ButtonEvent, Led, LedPattern, LedRole, Mono};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

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

/// Runs the whole daemon until `shutdown` completes. Returns after a clean
/// shutdown (socket removed, LEDs off).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let state = StateDir::open(&config.state_dir)?;
    let board = open_board(&config)?;
    serve(
        &config,
        state,
        board,
        Arc::new(crate::recovery::NotWired),
        shutdown,
    )
    .await
}

/// The main loop over an opened state dir and board.
pub async fn serve(
    config: &Config,
    state: StateDir,
    board: BoardHandle,
    recovery: Arc<dyn Recovery>,
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
    let mut shown: BTreeMap<LedRole, LedPattern> = BTreeMap::new();
    show_leds(&app.state(), &mut leds, &mut shown);

    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlRequest>(16);
    let server = ControlServer::bind(&config.control_socket, ctl_tx)?;

    app.handle_input(Input::BootFinished { paired }, Mono::now());
    let mut last_state = app.state();
    show_leds(&last_state, &mut leds, &mut shown);
    tracing::info!(
        device_id = %device_id,
        board = %board_name,
        control = %config.control_socket.display(),
        sim = %sim_socket.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
        "intrustd {VERSION} ready, {last_state}"
    );
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("state: {last_state}")),
    ]);

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
            Some(req) = ctl_rx.recv() => {
                let now = Mono::now();
                match req.request {
                    Request::Status => {}
                    Request::Pairing { action: PairingAction::Open } => app.handle_input(Input::OpenPairingWindow, now),
                    Request::Pairing { action: PairingAction::Close } => app.handle_input(Input::ClosePairingWindow, now),
                }
                // The answer must show the LEDs the request caused.
                drive(&mut gestures, &mut app, &mut leds, &mut shown, &mut factory_reset_requests, &recovery);
                let status = Status {
                    state: app.state().name(),
                    device_id: device_id.to_string(),
                    board: board_name.clone(),
                    versions: Versions { intrustd: VERSION.into(), control_protocol: crate::control::PROTOCOL },
                    leds: shown.clone(),
                    pairing_window: PairingWindow {
                        open: app.pairing_window_closes_at().is_some(),
                        closes_in_ms: app
                            .pairing_window_closes_at()
                            .map(|t| t.saturating_since(now).as_millis() as u64),
                    },
                    factory_reset_requests,
                    sim_socket: sim_socket.clone(),
                    uptime_ms: now.saturating_since(started).as_millis() as u64,
                    update_percent: match app.state() { State::Updating { percent } => Some(percent), _ => None },
                    error: match app.state() { State::Error { message } => Some(message), _ => None },
                };
                let _ = req.reply.send(Response::ok(status));
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
    notify(&[sd_notify::NotifyState::Stopping]);
    drop(server); // stops accepting, removes the control socket
    for (role, led) in leds.iter_mut() {
        if let Err(e) = led.set(&LedPattern::Off) {
            tracing::warn!(led = %role, error = %e, "cannot switch LED off");
        }
    }
    drop(leds);
    drop(events);
    drop(keep_alive);
    if let Some(p) = &sim_socket {
        // The sim server removes it too; make sure nothing is left behind.
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Moves gestures into the appliance, carries out actions, updates LEDs.
fn drive(
    gestures: &mut Gestures,
    app: &mut Appliance,
    leds: &mut BTreeMap<LedRole, Box<dyn Led>>,
    shown: &mut BTreeMap<LedRole, LedPattern>,
    factory_reset_requests: &mut u64,
    recovery: &Arc<dyn Recovery>,
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
                // Off the event loop: a real reset does disk IO.
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = recovery.factory_reset() {
                        tracing::error!(error = %e, "factory reset failed");
                    }
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
            serve(&cfg, state, board, rec, async {
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
            serve(&cfg, state, board, Arc::new(Recorded::default()), async {
                let _ = stop_rx.await;
            })
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
