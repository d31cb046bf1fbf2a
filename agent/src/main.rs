//! `airlock-agent`: the command-line front end of the agent library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use airlock_agent::allow::AllowList;
use airlock_agent::link::{self, LinkConfig};
use airlock_agent::register::{self, RegisterOptions};
use airlock_agent::session::ForwardConfig;
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
        /// Allow port forwarding to HOST:PORT only (repeatable; comma-separated in the
        /// environment). HOST may use * and ? wildcards and is matched against the name asked
        /// for and the addresses it resolves to; IPv6 goes in brackets ([::1]:22). PORT is N,
        /// LO-HI or *. Without any, every host and port is allowed except link-local and
        /// metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254), which need a
        /// pattern naming the address itself in every mode.
        #[arg(
            long = "allow-port",
            value_name = "PATTERN",
            env = "AIRLOCK_AGENT_ALLOW_PORTS",
            value_delimiter = ','
        )]
        allow_port: Vec<String>,
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
        Command::Run { data_dir, allow_port } => {
            // Parsed before anything starts so that a typo stops the agent instead of the
            // forwards it was meant to allow.
            let allow = AllowList::parse(&allow_port)?;
            tracing::info!("port forwarding allowed to: {allow}");
            let forward = ForwardConfig { allow: Arc::new(allow), ..ForwardConfig::default() };
            let config = LinkConfig { forward, ..LinkConfig::default() };
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
            link::run(&data_dir, &config, stop_rx).await?;
            Ok(())
        }
    }
}
