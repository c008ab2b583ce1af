//! `intrust-hil`: runs HIL scenarios and the board benchmark against a rig.
//!
//! `intrust-hil [--rig sim] [--intrustd PATH] [--launcher CMD] [--record-dir DIR] run NAME|all`,
//! `intrust-hil list`, `intrust-hil bench board [--presses N]`,
//! `intrust-hil bench tunnel --flock PATH --hello-app PATH --client PATH`.
//! One line per scenario on stdout; exits non-zero if any scenario fails.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use intrust_hil::daemon::locate_intrustd;
use intrust_hil::record::Outcome;
use intrust_hil::rig::RigFactory;
use intrust_hil::sim_rig::SimRigFactory;
use intrust_hil::{bench, scenarios};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "intrust-hil",
    version,
    about = "Hardware-in-the-loop scenarios and benchmarks for intrustd"
)]
struct Cli {
    /// Which rig drives the DUT.
    #[arg(long, value_enum, default_value = "sim", global = true)]
    rig: RigKind,
    /// The intrustd binary (default: $INTRUST_HIL_INTRUSTD, else next to this executable).
    #[arg(long, global = true, value_name = "PATH")]
    intrustd: Option<PathBuf>,
    /// Command prefix to run intrustd under, split on whitespace,
    /// e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu".
    #[arg(long, global = true, value_name = "CMD")]
    launcher: Option<String>,
    /// Where test records go (default: target/hil-records/).
    #[arg(long, global = true, value_name = "DIR")]
    record_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum RigKind {
    /// intrustd with the simulated board, driven over its sim socket.
    Sim,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one scenario, or all of them.
    Run {
        /// A scenario name (see `list`) or `all`.
        name: String,
    },
    /// Lists the scenarios.
    List,
    /// Runs a benchmark group; figures go to stdout as JSON lines.
    Bench {
        #[command(subcommand)]
        group: BenchGroup,
    },
}

#[derive(Subcommand)]
enum BenchGroup {
    /// PAIR press to LED change latency on the simulated board.
    Board {
        /// Number of PAIR taps.
        #[arg(long, default_value_t = 1000)]
        presses: usize,
    },
    /// The tunnel through flock and intrustd: Rust-client connect time,
    /// intrustd's memory, Chromium connect/download/upload.
    Tunnel(TunnelArgs),
}

#[derive(clap::Args)]
struct TunnelArgs {
    /// The flock binary.
    #[arg(long, value_name = "PATH")]
    flock: PathBuf,
    /// The hello-app binary.
    #[arg(long, value_name = "PATH")]
    hello_app: PathBuf,
    /// The agent's `tunnel_bench` example (the Rust client).
    #[arg(long, value_name = "PATH")]
    client: PathBuf,
    /// The built portal (default: flock/web/dist, built if missing).
    #[arg(long, value_name = "DIR")]
    portal: Option<PathBuf>,
    /// Rust-client connects to time.
    #[arg(long, default_value_t = 20)]
    rust_runs: usize,
    /// Sessions held for the memory reading.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// Measured Chromium runs (after one warm-up).
    #[arg(long, default_value_t = 3)]
    chromium_runs: usize,
    /// MiB per Chromium download and upload.
    #[arg(long, default_value_t = 64)]
    chromium_mib: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::List = cli.command {
        return list();
    }
    // One thread: the harness mostly waits, and user-mode emulators that run
    // the aarch64 build (qemu-aarch64 7.2 here) can hang creating threads.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("intrust-hil: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("intrust-hil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn list() -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for s in scenarios::SCENARIOS {
        // A closed pipe (`| head`) is not an error worth a panic.
        if writeln!(out, "{:<18} {}", s.name, s.summary).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::List => Ok(list()),
        Command::Run { name } => {
            let chosen: Vec<_> = if name == "all" {
                scenarios::SCENARIOS.iter().collect()
            } else {
                let s = scenarios::find(name).with_context(|| {
                    let names: Vec<_> = scenarios::SCENARIOS.iter().map(|s| s.name).collect();
                    format!(
                        "no scenario called {name:?}; there are: {}, or all",
                        names.join(", ")
                    )
                })?;
                vec![s]
            };
            let factory = factory(&cli)?;
            let dir = cli
                .record_dir
                .clone()
                .unwrap_or_else(intrust_hil::record::default_dir);
            let mut all_passed = true;
            for s in chosen {
                let record = scenarios::run(&*factory, s).await;
                let path = record.write_to(&dir)?;
                let secs = record.duration_ms as f64 / 1000.0;
                let problem = record
                    .first_problem()
                    // One line per scenario: fold multi-line messages (daemon stderr).
                    .map(|p| format!(": {}", p.split_whitespace().collect::<Vec<_>>().join(" ")))
                    .unwrap_or_default();
                println!(
                    "{} {} ({secs:.1} s){problem} [{}]",
                    record.outcome,
                    s.name,
                    path.display()
                );
                all_passed &= record.outcome == Outcome::Pass;
            }
            Ok(if all_passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench {
            group: BenchGroup::Board { presses },
        } => {
            let factory = factory(&cli)?;
            let run = bench::board(&*factory, *presses).await?;
            eprint!("{}", bench::table(&run));
            for line in bench::lines(&run, *presses) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            group: BenchGroup::Tunnel(t),
        } => {
            let portal = match &t.portal {
                Some(p) => p.clone(),
                None => intrust_hil::browser::flock::portal_dist()?,
            };
            let cfg = intrust_hil::browser::bench::TunnelBench {
                intrustd: locate_intrustd(cli.intrustd.as_deref())?,
                flock: t.flock.clone(),
                hello_app: t.hello_app.clone(),
                client: t.client.clone(),
                portal,
                rust_runs: t.rust_runs,
                sessions: t.sessions,
                chromium_runs: t.chromium_runs,
                chromium_bytes: t.chromium_mib << 20,
            };
            let (lines, result) = intrust_hil::browser::bench::tunnel(&cfg).await;
            eprint!("{}", intrust_hil::browser::bench::table(&lines));
            for line in &lines {
                println!("{line}");
            }
            result?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn factory(cli: &Cli) -> anyhow::Result<Box<dyn RigFactory>> {
    match cli.rig {
        RigKind::Sim => {
            let intrustd = locate_intrustd(cli.intrustd.as_deref())?;
            Ok(Box::new(SimRigFactory::new(
                intrustd,
                cli.launcher.as_deref(),
            )))
        }
    }
}
