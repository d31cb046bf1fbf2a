//! `airlock-broker`: the broker daemon and its admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use airlock_broker::console::ConsoleSettings;
use airlock_broker::http::HttpLimits;
use airlock_broker::quic::QuicLimits;
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
    // A later flag overrides an earlier one (a restart can pin the port a harness left at 0).
    #[command(args_override_self = true)]
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
        /// Serve Prometheus metrics at GET /metrics on the API port, only to requests with
        /// `Authorization: Bearer <token>`, the token (16+ bytes) read from this file.
        #[arg(long, value_name = "FILE")]
        metrics_token_file: Option<PathBuf>,
        /// Connection deadlines and caps (boxed: they would make every command as large).
        #[command(flatten)]
        limits: Box<LimitFlags>,
        /// Browser console session lifetimes.
        #[command(flatten)]
        console: Box<ConsoleFlags>,
    },
    /// Mints a new admin access key and prints it as environment variable lines.
    AdminKey {
        #[arg(long, default_value = "/var/lib/airlock")]
        data_dir: PathBuf,
    },
}

/// Bounds on connections from peers that have not authenticated yet.
#[derive(clap::Args)]
struct LimitFlags {
    /// Time an API client has to send a request's headers, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    http_header_timeout: Duration,
    /// Time an API client has to complete the TLS handshake.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    tls_handshake_timeout: Duration,
    /// Time an API client has to send a request's body once its headers are in.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    http_body_timeout: Duration,
    /// An API connection with no request in progress for this long is closed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    http_idle_timeout: Duration,
    /// API connections served at once; more wait briefly, then are closed.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// API connections served at once from one source address.
    #[arg(long, default_value_t = 128)]
    max_connections_per_ip: usize,
    /// Time a QUIC peer has to authenticate (agent certificate or client hello).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    quic_hello_timeout: Duration,
    /// QUIC connections not yet authenticated at once; more are refused.
    #[arg(long, default_value_t = 64)]
    max_unauthenticated_quic: usize,
}

/// Lifetimes of browser console sessions.
#[derive(clap::Args)]
struct ConsoleFlags {
    /// A console session unused for this long is signed out, e.g. 30m, 1h.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    console_idle_timeout: Duration,
    /// A console session ends this long after sign-in, however busy, e.g. 8h, 12h.
    #[arg(long, default_value = "12h", value_parser = parse_duration)]
    console_session_lifetime: Duration,
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

/// A duration with a unit: 500ms, 10s, 2m, 1h.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration like 500ms or 10s"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(|| format!("{text:?} is too long"))?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(|| format!("{text:?} is too long"))?),
        other => return Err(format!("unknown duration unit {other:?} (use ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err("a duration must be more than zero".into());
    }
    Ok(d)
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
                metrics_token_file,
                limits,
                console,
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
                    http: HttpLimits {
                        tls_handshake_timeout: limits.tls_handshake_timeout,
                        header_timeout: limits.http_header_timeout,
                        body_timeout: limits.http_body_timeout,
                        idle_timeout: limits.http_idle_timeout,
                        max_connections: limits.max_connections,
                        max_connections_per_ip: limits.max_connections_per_ip,
                    },
                    quic: QuicLimits {
                        hello_timeout: limits.quic_hello_timeout,
                        max_unauthenticated: limits.max_unauthenticated_quic,
                    },
                    console: ConsoleSettings {
                        idle_timeout: console.console_idle_timeout,
                        absolute_timeout: console.console_session_lifetime,
                        ..ConsoleSettings::default()
                    },
                    metrics_token_file,
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
    use super::{parse_duration, parse_size};
    use std::time::Duration;

    #[test]
    fn durations_take_units_and_refuse_zero() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(parse_duration("10").unwrap_err().contains("unknown duration unit"));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
    }

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
