//! `intrustd`: the appliance daemon. Loads the config, opens the state
//! directory and the board, and serves until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use intrust_agent::config::Config;
use intrust_agent::{daemon, logging};
use std::path::PathBuf;
use std::process::ExitCode;

/// The Intrustd appliance daemon.
#[derive(Debug, Parser)]
#[command(name = "intrustd", version)]
struct Args {
    /// Configuration file (TOML; see intrustd.example.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Validate the config and the board profile, then exit.
    #[arg(long)]
    check_config: bool,
    /// DEVELOPMENT ONLY: let every browser that reaches this device through
    /// flock in, without login. Warned about at start and every minute.
    /// (A flag, not a config key, so it cannot be left in a config file.)
    #[arg(long)]
    insecure_open: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Under systemd, keep the error priority in the journal.
            let prefix = if logging::stderr_is_journal() {
                "<3>"
            } else {
                ""
            };
            eprintln!(
                "{prefix}intrustd: error: {}",
                intrust_agent::report::error_chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if args.check_config {
        let profile = daemon::load_profile(&config)?;
        let recovery = match &config.recovery_config {
            Some(path) => {
                intrust_agent::recovery::AbRecovery::load(path)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                format!("recovery from {}", path.display())
            }
            None => "no recovery_config: resets and updates not wired".into(),
        };
        println!(
            "{}: OK (board {:?} from {}, state in {}, {recovery})",
            args.config.display(),
            profile.name,
            profile.origin,
            config.state_dir.display()
        );
        return Ok(());
    }
    logging::init(config.log.level);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let shutdown = shutdown_signal().context("cannot install signal handlers")?;
        let options = daemon::Options {
            insecure_open: args.insecure_open,
        };
        daemon::run(config, options, shutdown).await
    })
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
