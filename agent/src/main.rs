//! `airlock-agent`: the command-line front end of the agent library.

use std::path::PathBuf;
use std::process::ExitCode;

use airlock_agent::link::{self, LinkConfig};
use airlock_agent::register::{self, RegisterOptions};
use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// The Airlock agent: the managed-host side of Airlock sessions.
#[derive(Debug, Parser)]
#[command(name = "airlock-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register this host with the broker using an activation.
    Register {
        /// Directory for the agent's key, certificate and state.
        #[arg(long)]
        data_dir: PathBuf,
        /// The broker's API endpoint (https://host:port, or http://127.0.0.1:port).
        #[arg(long)]
        endpoint: String,
        /// The activation code.
        #[arg(long, env = "AIRLOCK_ACTIVATION_CODE", hide_env_values = true)]
        activation_code: String,
        /// The activation id.
        #[arg(long)]
        activation_id: String,
        /// PEM file with the broker's CA certificate (required for https).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Replace an existing registration in the data directory.
        #[arg(long)]
        force: bool,
    },
    /// Connect to the broker and serve sessions until SIGTERM or SIGINT.
    Run {
        /// Directory holding the registration.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    airlock_proto::quic::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("airlock-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Register { data_dir, endpoint, activation_code, activation_id, ca_file, force } => {
            let opts = RegisterOptions { data_dir, endpoint, activation_code, activation_id, ca_file, force };
            let id = register::register(&opts).await.context("registration failed")?;
            println!("Registered as {id}");
            Ok(())
        }
        Command::Run { data_dir } => {
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
            let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
                let _ = stop_tx.send(true);
            });
            link::run(&data_dir, &LinkConfig::default(), stop_rx).await?;
            Ok(())
        }
    }
}
