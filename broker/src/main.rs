//! `airlock-broker`: the broker daemon and its admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use airlock_broker::server::{self, Options};
use airlock_recordings::aws::AwsSettings;

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
        /// Disk the recording spool may use before new sessions that require recording are
        /// refused and the alarm is raised, e.g. 500MiB, 20GiB.
        #[arg(long, default_value = "10GiB", value_parser = parse_size)]
        spool_cap: u64,
        /// Endpoint of an S3 and CloudWatch Logs compatible service (e.g. a moto or MinIO
        /// server) instead of AWS's; S3 is then addressed path-style.
        #[arg(long, env = "AIRLOCK_AWS_ENDPOINT_URL")]
        aws_endpoint_url: Option<String>,
        /// The AWS region of the recording sinks (default: the SDK's AWS_REGION or profile,
        /// else --region).
        #[arg(long)]
        aws_region: Option<String>,
    },
    /// Mints a new admin access key and prints it as environment variable lines.
    AdminKey {
        #[arg(long, default_value = "/var/lib/airlock")]
        data_dir: PathBuf,
    },
}

/// A byte count with an optional binary unit: 1048576, 512KiB, 500MiB, 20GiB, 1TiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size like 500MiB or 20GiB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "K" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        "TiB" | "T" => 40,
        other => return Err(format!("unknown size unit {other:?} (use B, KiB, MiB, GiB or TiB)")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
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
            Command::Serve {
                data_dir,
                listen,
                insecure_http,
                region,
                public_host,
                spool_cap,
                aws_endpoint_url,
                aws_region,
            } => {
                let aws_region = aws_region
                    .or_else(|| std::env::var("AWS_REGION").ok())
                    .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                    .unwrap_or_else(|| region.clone());
                let broker = server::start(Options {
                    data_dir: data_dir.clone(),
                    listen,
                    insecure_http,
                    region,
                    public_host,
                    spool_cap,
                    aws: AwsSettings {
                        region: Some(aws_region),
                        endpoint_url: aws_endpoint_url,
                        static_credentials: None,
                    },
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

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units_and_refuse_the_rest() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("2 G"), Ok(2 << 30));
        assert!(parse_size("10GB").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999TiB").unwrap_err().contains("too large"));
    }
}
