//! `intrust-recovery`: make and install signed bundles, show and change the
//! A/B boot selection. Stdout carries results only (one line, or JSON with
//! `--json`); progress and errors go to stderr. Exit status 1 on any error.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use intrust_recovery::bootenv;
use intrust_recovery::bundle::{self, ImageSource, Part, SigningKey};
use intrust_recovery::config::Config;
use intrust_recovery::fetch;
use intrust_recovery::install::{self, ProgressPrinter};
use intrust_recovery::slots;

#[derive(Parser)]
#[command(
    name = "intrust-recovery",
    version,
    about = "A/B updates for the Intrustd appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make bundles and keys.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Verify a bundle and install it into the inactive slot, then activate it.
    Install {
        /// The recovery config.
        #[arg(long)]
        config: PathBuf,
        /// The bundle file, `-` for standard input, or an `https://` URL
        /// (trusted CAs: the config's `update_ca`; streamed, not saved).
        file: PathBuf,
    },
    /// Show slots, the booted slot, what boots next, tries and the last error.
    Status {
        /// The recovery config.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of `key=value` lines.
        #[arg(long)]
        json: bool,
    },
    /// The booted slot works: give it its tries back.
    MarkGood {
        /// The recovery config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Switch to the slot other than the one that boots next (cancels a pending
    /// update; refused for a slot with no tries left).
    Rollback {
        /// The recovery config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Wipe the data area (personas, tokens, app data), keeping the factory
    /// identity (`data_keep` in the config). Finishes an interrupted reset.
    FactoryReset {
        /// The recovery config.
        #[arg(long)]
        config: PathBuf,
        /// Do not ask (required when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Write a signed bundle.
    Create {
        /// ed25519 private key, PKCS#8 DER.
        #[arg(long)]
        key: PathBuf,
        /// The board the bundle is for.
        #[arg(long)]
        board: String,
        /// The software version inside.
        #[arg(long)]
        version: String,
        /// The root file system image.
        #[arg(long)]
        rootfs: PathBuf,
        /// The kernel image.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Where to write the bundle.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Generate a signing key (PKCS#8 DER); prints its public key in hex.
    Keygen {
        /// Where to write the private key (must not exist).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("intrust-recovery: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bundle(BundleCommand::Create {
            key,
            board,
            version,
            rootfs,
            kernel,
            output,
        }) => create(&key, &board, &version, &rootfs, kernel.as_deref(), &output),
        Command::Bundle(BundleCommand::Keygen { output }) => {
            let der = SigningKey::generate_pkcs8()?;
            let public = SigningKey::from_pkcs8(&der)?.public_key();
            let mut file = File::options()
                .write(true)
                .create_new(true)
                .open(&output)
                .with_context(|| format!("creating {}", output.display()))?;
            file.write_all(&der)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", output.display()))?;
            println!("{public}");
            Ok(())
        }
        Command::Install { config, file } => {
            let config = Config::load(&config)?;
            let booted = slots::booted_slot(&config)?;
            let mut env = bootenv::open(&config.bootloader)?;
            let input: Box<dyn Read> = match file.to_str().filter(|f| fetch::looks_like_url(f)) {
                Some(url) => Box::new(fetch::open(url, &config)?),
                None => install::open_input(&file)
                    .with_context(|| format!("opening bundle {}", file.display()))?,
            };
            let stderr = io::stderr();
            let mut printer = ProgressPrinter::new(stderr.lock(), stderr.is_terminal());
            let result = install::install(&config, input, booted, env.as_mut(), &mut |p| {
                printer.update(p)
            });
            drop(printer);
            match result {
                Ok(done) => {
                    slots::record_last_error(&config, None)?;
                    println!("installed {} into slot {}", done.version, done.slot);
                    Ok(())
                }
                Err(e) => {
                    // Recording is best effort: the install error is what matters.
                    if let Err(record) = slots::record_last_error(&config, Some(&e.to_string())) {
                        eprintln!("intrust-recovery: {record}");
                    }
                    Err(e.into())
                }
            }
        }
        Command::Status { config, json } => {
            let config = Config::load(&config)?;
            let booted = slots::booted_slot(&config)?;
            let mut env = bootenv::open(&config.bootloader)?;
            let status = slots::status(&config, booted, env.as_mut())?;
            if json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                let order: Vec<&str> = status.order.iter().map(|s| s.name()).collect();
                println!("booted={}", status.booted);
                println!("order={}", order.join(" "));
                println!("pending={}", status.pending.map_or("", |s| s.name()));
                println!("tries.A={}", status.tries.a);
                println!("tries.B={}", status.tries.b);
                println!("last_error={}", status.last_error.as_deref().unwrap_or(""));
            }
            Ok(())
        }
        Command::MarkGood { config } => {
            let config = Config::load(&config)?;
            let booted = slots::booted_slot(&config)?;
            let mut env = bootenv::open(&config.bootloader)?;
            slots::mark_good(booted, env.as_mut())?;
            println!("marked slot {booted} good");
            Ok(())
        }
        Command::Rollback { config } => {
            let config = Config::load(&config)?;
            let booted = slots::booted_slot(&config)?;
            let mut env = bootenv::open(&config.bootloader)?;
            let next = slots::rollback(booted, env.as_mut())?;
            println!("slot {next} boots next");
            Ok(())
        }
        Command::FactoryReset { config, yes } => factory_reset(&config, yes),
    }
}

fn create(
    key: &Path,
    board: &str,
    version: &str,
    rootfs: &Path,
    kernel: Option<&Path>,
    output: &Path,
) -> Result<()> {
    let der = std::fs::read(key).with_context(|| format!("reading key {}", key.display()))?;
    let key = SigningKey::from_pkcs8(&der).with_context(|| format!("key {}", key.display()))?;
    let mut images = vec![file_source(Part::Rootfs, rootfs)];
    if let Some(kernel) = kernel {
        images.push(file_source(Part::Kernel, kernel));
    }
    // Written next to the output and renamed, so a failed run leaves no
    // half bundle under the final name.
    let tmp = output.with_extension("partial");
    let mut out = io::BufWriter::new(
        File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let manifest = match bundle::create(&key, version, board, &mut images, &mut out) {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("renaming to {}", output.display()))?;
    println!(
        "{} {} bytes of images, signed by {}",
        output.display(),
        manifest.payload_len(),
        key.public_key()
    );
    Ok(())
}

fn file_source(part: Part, path: &Path) -> ImageSource<'static> {
    let path = path.to_path_buf();
    ImageSource {
        part,
        open: Box::new(move || {
            File::open(&path)
                .map(|f| Box::new(io::BufReader::new(f)) as Box<dyn Read>)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }),
    }
}

fn factory_reset(config: &Path, yes: bool) -> Result<()> {
    use intrust_recovery::factory_reset;
    let config = Config::load(config)?;
    if !yes {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            anyhow::bail!(
                "factory-reset wipes {} and standard input is not a terminal to ask on; pass --yes to confirm",
                config.data.display()
            );
        }
        eprint!(
            "Wipe everything in {} except {}? This cannot be undone. Type 'yes': ",
            config.data.display(),
            config.data_keep.join(", ")
        );
        io::stderr().flush()?;
        let mut answer = String::new();
        stdin.read_line(&mut answer)?;
        if answer.trim() != "yes" {
            anyhow::bail!("factory reset cancelled: nothing was wiped");
        }
    }
    let report = factory_reset::factory_reset(&config)?;
    if report.finished_interrupted {
        eprintln!("intrust-recovery: finished an interrupted factory reset");
    }
    println!(
        "wiped {} entries of {}, kept {}",
        report.removed.len(),
        config.data.display(),
        if report.kept.is_empty() {
            "nothing".to_owned()
        } else {
            report.kept.join(", ")
        }
    );
    Ok(())
}
