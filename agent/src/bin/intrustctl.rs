//! `intrustctl`: the local CLI. Talks to `intrustd` over the control socket
//! and, for `board …`, to the simulated board's socket.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use intrust_agent::control::{ControlClient, MarkGoodState, PeerSession, Status};
use intrust_board::sim::{SimClient, SimIn, SimOut};
use intrust_board::{Button, Edge, LedPattern};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Control a running intrustd.
#[derive(Debug, Parser)]
#[command(name = "intrustctl", version)]
struct Args {
    /// The agent's control socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/intrustd/control.sock"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the agent's state, LEDs, pairing window and updates.
    Status {
        /// Print the raw status JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the browser sessions: candidate pair type, RTT, bytes.
    Peers {
        /// Print the sessions as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Open or close the pairing window.
    Pairing {
        #[arg(value_parser = ["open", "close"])]
        action: String,
    },
    /// Install an update, or show the A/B slots.
    Update {
        #[command(subcommand)]
        command: UpdateCommand,
    },
    /// The error state (triple-flash LED).
    Error {
        #[command(subcommand)]
        command: ErrorCommand,
    },
    /// Drive or watch the simulated board.
    Board {
        /// The sim socket (default: the one the agent reports in its status).
        #[arg(long, value_name = "PATH")]
        sim_socket: Option<PathBuf>,
        #[command(subcommand)]
        command: BoardCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UpdateCommand {
    /// Install a signed bundle into the other slot; prints progress, exits
    /// non-zero if the install fails. The new slot starts on the next reboot.
    Apply {
        /// The bundle file (a path on this device).
        source: String,
    },
    /// Show the slots: booted, boot order, pending, tries, last error, mark-good.
    Status {
        /// Print the raw status JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ErrorCommand {
    /// Clear the error: the status LED returns to what it showed before.
    Clear,
}

#[derive(Debug, Subcommand)]
enum BoardCommand {
    /// Print LED changes and button edges as they happen.
    Watch,
    /// Press a button (pair, reset) and leave it pressed.
    Press { button: Button },
    /// Release a button.
    Release { button: Button },
    /// Press and release a button.
    Tap {
        button: Button,
        #[arg(long, default_value_t = 100)]
        ms: u64,
    },
    /// Hold a button down for --ms milliseconds.
    Hold {
        button: Button,
        #[arg(long)]
        ms: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("intrustctl: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "intrustctl: error: {}",
                intrust_agent::report::error_chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Status { json } => {
            let status = ControlClient::connect(&args.socket).await?.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
        }
        Command::Peers { json } => {
            let (_, sessions) = ControlClient::connect(&args.socket).await?.peers().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sessions)?);
            } else {
                print_peers(&sessions);
            }
        }
        Command::Pairing { action } => {
            let status = ControlClient::connect(&args.socket)
                .await?
                .pairing(action == "open")
                .await?;
            print_window(&status);
        }
        Command::Update { command } => update(&args.socket, command).await?,
        Command::Error {
            command: ErrorCommand::Clear,
        } => {
            let status = ControlClient::connect(&args.socket)
                .await?
                .clear_error()
                .await?;
            println!("state:           {}", status.state);
        }
        Command::Board {
            sim_socket,
            command,
        } => {
            let sim = match sim_socket {
                Some(p) => p,
                None => {
                    let status = ControlClient::connect(&args.socket).await?.status().await?;
                    match status.sim_socket {
                        Some(p) => p,
                        None => bail!("board {:?} has no simulated board socket", status.board),
                    }
                }
            };
            board(&sim, command).await?;
        }
    }
    Ok(())
}

/// How often `update apply` asks for progress.
const POLL: Duration = Duration::from_millis(100);

async fn update(socket: &Path, command: UpdateCommand) -> anyhow::Result<()> {
    let mut client = ControlClient::connect(socket).await?;
    match command {
        UpdateCommand::Status { json } => {
            let status = client.update_status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_update(&status);
            }
        }
        UpdateCommand::Apply { source } => {
            let source = bundle_source(&source)?;
            let started = client.update_apply(&source).await?;
            let attempt = started.update.as_ref().map_or(0, |u| u.attempts);
            println!("updating from {source}");
            let mut shown = None;
            loop {
                let status = client.status().await?;
                if let Some(p) = status.update_percent {
                    if shown != Some(p) {
                        println!("progress {p}%");
                        shown = Some(p);
                    }
                }
                let last = status
                    .update
                    .as_ref()
                    .and_then(|u| u.last.as_ref())
                    .filter(|l| l.attempt == attempt);
                if let Some(last) = last {
                    if last.ok {
                        println!(
                            "installed {} into slot {}; it starts on the next reboot",
                            last.version.as_deref().unwrap_or("?"),
                            last.slot.as_deref().unwrap_or("?")
                        );
                        return Ok(());
                    }
                    bail!(
                        "update failed: {}",
                        last.error.as_deref().unwrap_or("no reason given")
                    );
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
    Ok(())
}

/// A path the daemon can open: absolute, checked here so a typo fails
/// before the LED says "updating". URLs pass through (the agent says
/// whether it can fetch them).
fn bundle_source(source: &str) -> anyhow::Result<String> {
    if source.contains("://") {
        return Ok(source.to_owned());
    }
    let path = std::fs::canonicalize(source)
        .with_context(|| format!("cannot find the bundle {source}"))?;
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("bundle path {} is not UTF-8", path.display()))
}

fn print_update(s: &Status) {
    let Some(u) = &s.update else {
        println!("updates:         not wired (no recovery_config)");
        return;
    };
    if let Some(slots) = &u.slots {
        println!("booted slot:     {}", slots.booted);
        println!("boot order:      {}", slots.order.join(" "));
        println!(
            "pending:         {}",
            slots
                .pending
                .as_deref()
                .map_or("none".to_owned(), |p| format!(
                    "slot {p} on the next reboot"
                ))
        );
        let tries: Vec<String> = slots
            .tries
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("tries left:      {}", tries.join(" "));
        if let Some(e) = &slots.last_error {
            println!("last error:      {e}");
        }
    } else if let Some(p) = &u.pending_slot {
        println!("pending:         slot {p} on the next reboot");
    }
    if u.running {
        println!(
            "update:          #{} running, {}%",
            u.attempts,
            s.update_percent.unwrap_or(0)
        );
    }
    if let Some(l) = &u.last {
        if l.ok {
            println!(
                "last update:     #{} {} installed into slot {}",
                l.attempt,
                l.version.as_deref().unwrap_or("?"),
                l.slot.as_deref().unwrap_or("?")
            );
        } else {
            println!(
                "last update:     #{} failed: {}",
                l.attempt,
                l.error.as_deref().unwrap_or("?")
            );
        }
    }
    let mark_good = match &u.mark_good {
        MarkGoodState::Waiting => "waiting for the agent to be healthy".to_owned(),
        MarkGoodState::Running => "running".to_owned(),
        MarkGoodState::Marked { slot } => format!("slot {slot} marked good"),
        MarkGoodState::AlreadyGood { slot } => format!("slot {slot} was already good"),
        MarkGoodState::Failed { error } => format!("failed: {error}"),
    };
    println!("mark-good:       {mark_good}");
}

fn lit(p: &LedPattern) -> &'static str {
    if *p == LedPattern::Off {
        "○"
    } else {
        "●"
    }
}

fn print_status(s: &Status) {
    println!("state:           {}", s.state);
    if let Some(p) = s.update_percent {
        println!("update:          {p}%");
    }
    if let Some(e) = &s.error {
        println!("error:           {e}");
    }
    println!("device id:       {}", s.device_id);
    println!("board:           {}", s.board);
    for (i, (role, p)) in s.leds.iter().enumerate() {
        let label = if i == 0 { "LEDs:" } else { "" };
        println!("{label:<17}{:<7}{} {p}", role.name(), lit(p));
    }
    print_window(s);
    println!(
        "factory resets:  {} requested{}",
        s.factory_reset_requests,
        if s.update.is_some() {
            ""
        } else {
            " (not wired: no recovery_config)"
        }
    );
    if s.update.is_some() {
        print_update(s);
    }
    match (&s.rendezvous, s.peers) {
        (Some(r), peers) => {
            println!("flock:           {} ({})", r.detail, r.name);
            println!(
                "peers:           {} session(s){}",
                peers.unwrap_or(0),
                if r.insecure_open {
                    " — INSECURE: --insecure-open lets every browser in"
                } else {
                    ""
                }
            );
        }
        (None, _) => println!("flock:           not configured (no [rendezvous])"),
    }
    if let Some(p) = &s.sim_socket {
        println!("sim socket:      {}", p.display());
    }
    println!("uptime:          {:.1} s", s.uptime_ms as f64 / 1000.0);
    println!(
        "versions:        intrustd {}, control protocol {}",
        s.versions.intrustd, s.versions.control_protocol
    );
}

fn print_peers(sessions: &[PeerSession]) {
    if sessions.is_empty() {
        println!("no peer sessions");
        return;
    }
    println!(
        "{:>4}  {:>10}  {:<9}  {:<7}  {:>9}  {:>12}  {:>12}  {:>8}",
        "id", "signalling", "state", "pair", "rtt", "bytes in", "bytes out", "age"
    );
    for p in sessions {
        let rtt = p
            .rtt_us
            .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>4}  {:>10}  {:<9}  {:<7}  {:>9}  {:>12}  {:>12}  {:>6.0} s",
            p.id,
            p.signalling,
            if p.connected { "connected" } else { "starting" },
            p.pair,
            rtt,
            p.bytes_in,
            p.bytes_out,
            p.age_ms as f64 / 1000.0
        );
    }
}

fn print_window(s: &Status) {
    match (s.pairing_window.open, s.pairing_window.closes_in_ms) {
        (true, Some(ms)) => println!(
            "pairing window:  open, closes in {:.0} s",
            ms as f64 / 1000.0
        ),
        (true, None) => println!("pairing window:  open"),
        (false, _) => println!("pairing window:  closed"),
    }
}

/// A sim board connection that turns `error` messages and EOF into errors
/// and stamps times relative to the hello.
struct Sim {
    path: PathBuf,
    client: SimClient,
    t0_us: u64,
}

impl Sim {
    async fn connect(path: &Path) -> anyhow::Result<(Sim, SimOut)> {
        let client = SimClient::connect(path).await.with_context(|| {
            format!("is intrustd running with a sim board ({})?", path.display())
        })?;
        let mut sim = Sim {
            path: path.to_owned(),
            client,
            t0_us: 0,
        };
        let hello = tokio::time::timeout(Duration::from_secs(5), sim.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!("{}: no hello from the sim board within 5 s", path.display())
            })??;
        match &hello {
            SimOut::Hello { now_us, .. } => sim.t0_us = *now_us,
            other => bail!("{}: expected hello, got {other:?}", path.display()),
        }
        Ok((sim, hello))
    }

    async fn next(&mut self) -> anyhow::Result<SimOut> {
        let msg = self
            .client
            .next()
            .await
            .with_context(|| format!("sim board {}", self.path.display()))?;
        match msg {
            None => bail!(
                "{}: the sim board closed the connection",
                self.path.display()
            ),
            Some(SimOut::Error { message }) => bail!("sim board: {message}"),
            Some(m) => Ok(m),
        }
    }

    async fn send(&mut self, op: SimIn) -> anyhow::Result<()> {
        self.client
            .send(&op)
            .await
            .with_context(|| format!("{}: send failed", self.path.display()))
    }

    fn stamp(&self, at_us: u64) -> String {
        let us = at_us.saturating_sub(self.t0_us);
        format!("{}.{:03}s", us / 1_000_000, (us / 1000) % 1000)
    }

    /// Waits (bounded) until the agent reports `button`'s `edge`.
    async fn await_edge(&mut self, button: Button, edge: Edge) -> anyhow::Result<()> {
        let wait = async {
            loop {
                if let SimOut::Button {
                    button: b, edge: e, ..
                } = self.next().await?
                {
                    if b == button && e == edge {
                        return anyhow::Ok(());
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(2), wait)
            .await
            .map_err(|_| {
                anyhow::anyhow!("the agent did not report the {button} {edge:?} within 2 s")
            })?
    }
}

async fn board(path: &Path, command: BoardCommand) -> anyhow::Result<()> {
    let (mut sim, hello) = Sim::connect(path).await?;
    match command {
        BoardCommand::Watch => {
            if let SimOut::Hello { board, leds, .. } = hello {
                println!("board {board} ({})", path.display());
                for (role, p) in &leds {
                    println!("{} {:<6} {} {p}", sim.stamp(sim.t0_us), role.name(), lit(p));
                }
            }
            loop {
                match sim.next().await? {
                    SimOut::Led {
                        led,
                        pattern,
                        at_us,
                    } => {
                        println!(
                            "{} {:<6} {} {pattern}",
                            sim.stamp(at_us),
                            led.name(),
                            lit(&pattern)
                        )
                    }
                    SimOut::Button {
                        button,
                        edge,
                        at_us,
                    } => {
                        println!(
                            "{} button {button} {}",
                            sim.stamp(at_us),
                            if edge == Edge::Press {
                                "pressed"
                            } else {
                                "released"
                            }
                        )
                    }
                    _ => {}
                }
            }
        }
        BoardCommand::Press { button } => {
            sim.send(SimIn::Press { button }).await?;
            sim.await_edge(button, Edge::Press).await?;
        }
        BoardCommand::Release { button } => {
            sim.send(SimIn::Release { button }).await?;
            sim.await_edge(button, Edge::Release).await?;
        }
        BoardCommand::Tap { button, ms } | BoardCommand::Hold { button, ms } => {
            sim.send(SimIn::Press { button }).await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            sim.send(SimIn::Release { button }).await?;
            sim.await_edge(button, Edge::Release).await?;
        }
    }
    Ok(())
}
