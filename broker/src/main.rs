//! `airlock-broker`: the broker daemon and its admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use airlock_broker::server::{self, Options};

#[derive(Parser)]
#[command(name = "airlock-broker", version, about = "Airlock broker: SSM-compatible session broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the broker: the API over HTTPS on TCP PORT, agents and clients over QUIC on UDP PORT.
    Serve {
        #[arg(long, default_value = "/var/lib/airlock")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Serve the API as plain HTTP (loopback addresses only).
        #[arg(long)]
        insecure_http: bool,
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// The host name clients use to reach this broker (added to its certificate).
        #[arg(long)]
        public_host: Option<String>,
    },
    /// Mints a new admin access key and prints it as environment variable lines.
    AdminKey {
        #[arg(long, default_value = "/var/lib/airlock")]
        data_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    airlock_proto::quic::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        match Cli::parse().command {
            Command::Serve { data_dir, listen, insecure_http, region, public_host } => {
                let broker = server::start(Options {
                    data_dir: data_dir.clone(),
                    listen,
                    insecure_http,
                    region,
                    public_host,
                })
                .await
                .context("cannot start the broker")?;
                if let Some(key) = &broker.first_admin_key {
                    println!("Created the admin principal. Its secret is shown only this once:");
                    println!("AWS_ACCESS_KEY_ID={}", key.access_key_id);
                    println!("AWS_SECRET_ACCESS_KEY={}", key.secret);
                }
                println!(
                    "airlock-broker listening on {} (TCP API, UDP QUIC); CA certificate: {}",
                    broker.url,
                    data_dir.join("ca.pem").display()
                );
                use std::io::Write;
                let _ = std::io::stdout().flush();
                shutdown_signal().await;
                tracing::info!("shutting down");
                broker.quic.close(0u32.into(), b"broker shutting down");
                Ok(())
            }
            Command::AdminKey { data_dir } => {
                let store = server::open_store(&data_dir).await.context("cannot open the store")?;
                let master = airlock_broker::secrets::MasterKey::load_or_create(&data_dir)?;
                let account = server::account_id(&data_dir)?;
                let key = match airlock_broker::keys::bootstrap_admin(&store, &master, &account).await? {
                    Some(first) => first,
                    None => airlock_broker::keys::mint(&store, &master, "admin").await?,
                };
                println!("AWS_ACCESS_KEY_ID={}", key.access_key_id);
                println!("AWS_SECRET_ACCESS_KEY={}", key.secret);
                Ok(())
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
