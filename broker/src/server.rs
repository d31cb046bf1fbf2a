//! Starts a broker: data folder, store, CA, the HTTP API on TCP and QUIC on UDP, same port.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;
use tokio::net::TcpListener;

use airlock_recordings::aws::{AwsClients, AwsSettings};
use airlock_recordings::sink::shipper::Shipper;
use airlock_recordings::Spool;

use crate::app::{App, Settings};
use crate::ca::{CaError, CertificateAuthority};
use crate::registry::Registry;
use crate::secrets::MasterKey;
use crate::store::{SqliteStore, StoreError};

/// How to run a broker.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the database, keys, CA and recordings live.
    pub data_dir: PathBuf,
    /// Address of the HTTP API (TCP) and the QUIC endpoint (UDP).
    pub listen: SocketAddr,
    /// Plain HTTP instead of TLS (loopback only).
    pub insecure_http: bool,
    /// The region the broker answers as.
    pub region: String,
    /// Extra DNS names or IPs for the broker's certificate, and the host clients use.
    pub public_host: Option<String>,
    /// Bytes the recording spool may hold before it refuses new recordings.
    pub spool_cap: u64,
    /// How the S3 and CloudWatch Logs sinks reach their services.
    pub aws: AwsSettings,
    /// Bounds on API connections (deadlines, connection caps).
    pub http: crate::http::HttpLimits,
    /// Bounds on QUIC connections that have not authenticated yet.
    pub quic: crate::quic::QuicLimits,
    /// Lifetimes and bounds of browser console sessions.
    pub console: crate::console::ConsoleSettings,
    /// Serve `GET /metrics` to requests bearing the token in this file (none: no `/metrics`).
    pub metrics_token_file: Option<PathBuf>,
}

/// The default spool cap.
pub const DEFAULT_SPOOL_CAP: u64 = 10 << 30;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `--insecure-http` on an address that is not loopback.
    #[error("--insecure-http is allowed only on a loopback address, not {0}")]
    InsecureNotLoopback(IpAddr),
    /// The data folder cannot be used.
    #[error("cannot use data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The API socket cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CA could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The QUIC endpoint could not be set up.
    #[error(transparent)]
    Quic(#[from] crate::quic::QuicSetupError),
    /// The TLS configuration was rejected.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The master key could not be loaded or created.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// The first admin key could not be made.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// The recording spool could not be opened.
    #[error("recording spool: {0}")]
    Spool(#[from] airlock_recordings::RecordingError),
    /// The recording sinks could not be set up.
    #[error("recording sinks: {0}")]
    Sinks(#[from] airlock_recordings::sink::SinkError),
    /// Metrics were asked for but could not be set up.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// A running broker.
pub struct Broker {
    /// The shared state.
    pub app: Arc<App>,
    /// The URL clients use (`https://host:port` or `http://127.0.0.1:port`).
    pub url: String,
    /// Address the API listens on.
    pub local_addr: SocketAddr,
    /// Set on first start: the admin's new access key, to show once.
    pub first_admin_key: Option<crate::keys::NewKey>,
    /// The QUIC endpoint.
    pub quic: quinn::Endpoint,
}

/// The account id of a data folder (created on first start).
pub fn account_id(dir: &Path) -> Result<String, StartError> {
    let path = dir.join("account-id");
    let io = |source| StartError::DataDir { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id: String = (0..12).map(|_| char::from(b'0' + rand::rng().random_range(0..10u8))).collect();
            std::fs::write(&path, &id).map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

/// Opens the store in a data folder.
pub async fn open_store(dir: &Path) -> Result<SqliteStore, StartError> {
    std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir { path: dir.to_owned(), source })?;
    Ok(SqliteStore::open(&dir.join("airlock.db")).await?)
}

/// Binds TCP then UDP on the same port; with port 0 it retries until both are free.
async fn bind_pair(
    listen: SocketAddr,
    make_quic: impl Fn(SocketAddr) -> Result<quinn::Endpoint, crate::quic::QuicSetupError>,
) -> Result<(TcpListener, quinn::Endpoint), StartError> {
    let mut last = None;
    for _ in 0..20 {
        let tcp =
            TcpListener::bind(listen).await.map_err(|source| StartError::Listen { addr: listen, source })?;
        let addr = tcp.local_addr().map_err(|source| StartError::Listen { addr: listen, source })?;
        match make_quic(addr) {
            Ok(q) => return Ok((tcp, q)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map(StartError::from).unwrap_or(StartError::Listen {
        addr: listen,
        source: std::io::Error::other("no free TCP+UDP port pair"),
    }))
}

/// Starts serving; returns once both listeners are up.
pub async fn start(opts: Options) -> Result<Broker, StartError> {
    let ip = opts.listen.ip();
    if opts.insecure_http && !ip.is_loopback() {
        return Err(StartError::InsecureNotLoopback(ip));
    }
    let dir = &opts.data_dir;
    crate::private_files::secure_data_dir(dir)
        .map_err(|source| StartError::DataDir { path: dir.clone(), source })?;
    // First, so every agent and request from the start is counted.
    let exporter = opts.metrics_token_file.as_deref().map(crate::metrics::Exporter::install).transpose()?;
    let store = open_store(dir).await?;
    let account = account_id(dir)?;
    let recordings_dir = dir.join("recordings");
    std::fs::create_dir_all(&recordings_dir)
        .map_err(|source| StartError::DataDir { path: recordings_dir.clone(), source })?;
    let spool_dir = dir.join("spool");
    // Sessions a previous process left live: those that can resume keep their recordings.
    let orphans = crate::session::recover::find(&store, &spool_dir).await?;
    let keep = orphans.keep();
    // Before serving, so no new session's recording is ever mistaken for a crashed one. The
    // recordings folder held unfinished recordings before the spool existed.
    for folder in [&spool_dir, &recordings_dir] {
        match airlock_recordings::recover_unfinished_except(folder, &keep).await {
            Ok(done) if !done.is_empty() => {
                tracing::warn!(
                    recovered = done.len(),
                    "recordings left unfinished by a previous run were closed"
                )
            }
            Ok(_) => tracing::debug!("no unfinished recordings to recover"),
            // One damaged file must not keep every session out; it stays as .cast.part.
            Err(e) => tracing::error!(error = %e, "cannot recover unfinished recordings"),
        }
    }
    let (spool, new_recordings) = Spool::open(&spool_dir, opts.spool_cap)?;
    let aws = AwsClients::new(&opts.aws).await;
    let shipper = Shipper::start(spool, new_recordings, recordings_dir.clone(), Some(aws)).await?;
    let ca = CertificateAuthority::load_or_create(dir)?;

    let host = match (&opts.public_host, ip) {
        (Some(h), _) => h.clone(),
        (None, ip) if ip.is_unspecified() => "localhost".to_owned(),
        (None, IpAddr::V6(v6)) => format!("[{v6}]"),
        (None, ip) => ip.to_string(),
    };
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    if let Some(h) = &opts.public_host {
        names.push(h.clone());
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(h.trim().to_owned());
    }
    names.sort();
    names.dedup();
    let (chain, key) = ca.server_identity(&names)?;
    let ca_pem = ca.cert_pem().to_owned();
    let reset_path = dir.join("quic-reset-key");
    let reset_key = crate::quic::load_or_create_reset_key(dir)
        .map_err(|source| StartError::DataDir { path: reset_path, source })?;
    let (tcp, quic) = bind_pair(opts.listen, |addr| {
        crate::quic::endpoint(addr, &ca_pem, chain.clone(), key.clone_key(), &reset_key)
    })
    .await?;
    let local_addr = tcp.local_addr().map_err(|source| StartError::Listen { addr: opts.listen, source })?;
    let scheme = if opts.insecure_http { "http" } else { "https" };
    let url = format!("{scheme}://{host}:{}", local_addr.port());

    let master = MasterKey::load_or_create(dir)?;
    let first_admin_key = crate::keys::bootstrap_admin(&store, &master, &account).await?;
    let app = Arc::new(App {
        store: Arc::new(store),
        registry: Registry::default(),
        ca,
        master,
        policy_cache: Default::default(),
        settings: Settings { account, public_url: url.clone(), region: opts.region.clone(), recordings_dir },
        shipper,
        console: crate::console::Console::new(opts.console.clone()),
        commands: Default::default(),
    });
    // Before serving: a ResumeSession or a reconnecting agent must find them.
    crate::session::recover::adopt(&app, orphans).await;
    let tls = if opts.insecure_http { None } else { Some(crate::http::tls_config(chain, key)?) };
    let mut router = crate::api::router(app.clone())
        .merge(crate::console::router(app.clone()))
        .merge(crate::ssm_edge::router(app.clone()));
    if let Some(exporter) = exporter {
        router = router.merge(crate::metrics::router(app.clone(), exporter));
    }
    // Commands a previous process left unfinished get their schedulers before any agent can
    // connect and report on them.
    app.commands.resume(app.store.clone()).await;
    tokio::spawn(crate::http::serve(tcp, router, tls, opts.http.clone()));
    tokio::spawn(crate::quic::serve(app.clone(), quic.clone(), opts.quic.clone()));
    tokio::spawn(crate::api::close_abandoned_sessions(app.clone()));
    tokio::spawn(crate::password::warm_up());
    Ok(Broker { app, url, local_addr, first_admin_key, quic })
}
