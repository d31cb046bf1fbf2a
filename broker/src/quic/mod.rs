//! The QUIC front: agents (with client certificates) and CLI clients (with session
//! tokens) connect to the same UDP port; the presence of a client certificate tells them
//! apart.

mod agent_link;
mod client;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::App;

/// Control-stream frames are small; anything bigger is an attack or a bug.
pub const CONTROL_FRAME_LIMIT: usize = 64 * 1024;

/// Errors setting up the QUIC endpoint.
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    /// rustls rejected the configuration.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// Quinn rejected the configuration.
    #[error("quic: {0}")]
    Quic(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Bounds on QUIC connections whose peer has not authenticated yet.
#[derive(Debug, Clone)]
pub struct QuicLimits {
    /// Time from a connection's first packet to an accepted hello (clients) or a verified
    /// certificate (agents); then the connection is closed.
    pub hello_timeout: Duration,
    /// Connections handshaking or waiting for their hello at once; further ones are refused.
    pub max_unauthenticated: usize,
}

impl Default for QuicLimits {
    fn default() -> Self {
        QuicLimits { hello_timeout: Duration::from_secs(10), max_unauthenticated: 64 }
    }
}

/// Application close code: the peer did not authenticate in time.
const CLOSE_HELLO_TIMEOUT: u32 = 4;

/// File in the data folder holding the stateless-reset key.
const RESET_KEY_FILE: &str = "quic-reset-key";
const RESET_KEY_LEN: usize = 64;

/// Binds the QUIC endpoint on `addr` (UDP). `reset_key` signs stateless resets: the same key
/// after a restart lets peers of the old process learn at their next packet that their
/// connection is gone.
pub fn endpoint(
    addr: SocketAddr,
    ca_pem: &str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    reset_key: &[u8],
) -> Result<quinn::Endpoint, QuicSetupError> {
    let provider = airlock_proto::quic::provider();
    let roots = airlock_proto::quic::pinned_roots(ca_pem.as_bytes())
        .map_err(|e| QuicSetupError::Verifier(e.to_string()))?;
    // Clients may come without a certificate (CLI users authenticate with a session token);
    // a certificate, when presented, must chain to our CA.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| QuicSetupError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![airlock_proto::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| QuicSetupError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    // Small windows and few streams until the peer authenticates; see `Admission::admit`.
    config.transport_config(Arc::new(airlock_proto::quic::unauthenticated_transport_config()));
    let mut endpoint_config = airlock_proto::quic::endpoint_config();
    // quinn's default connection IDs carry a check keyed per process, and a packet whose ID
    // fails it is dropped, not reset: a restarted broker would stay silent towards the old
    // process's peers. Plain random IDs let every such packet meet a stateless reset.
    endpoint_config
        .reset_key(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key)))
        .cid_generator(|| Box::new(RandomCids));
    airlock_proto::quic::bind_endpoint_with(addr, endpoint_config, Some(config))
        .map_err(|source| QuicSetupError::Bind { addr, source })
}

/// Random 8-byte connection IDs that any process accepts as possibly its own.
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut id = [0u8; CID_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

const CID_LEN: usize = 8;

/// Reads the stateless-reset key from the data folder, creating it (mode 0600) on first start.
pub fn load_or_create_reset_key(dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(RESET_KEY_FILE);
    match std::fs::read(&path) {
        Ok(key) if key.len() == RESET_KEY_LEN => {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(key);
        }
        Ok(key) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds {} bytes, not {RESET_KEY_LEN}", path.display(), key.len()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = vec![0u8; RESET_KEY_LEN];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    // Written whole under a temporary name, so a crash never leaves a short key behind.
    let tmp = dir.join(format!("{RESET_KEY_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(&key)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(key)
}

/// Accepts connections until the endpoint closes.
pub async fn serve(app: Arc<App>, endpoint: quinn::Endpoint, limits: QuicLimits) {
    let unauthenticated = Arc::new(Semaphore::new(limits.max_unauthenticated));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = unauthenticated.clone().try_acquire_owned() else {
            // Debug, not warn: a flood would otherwise flood the log too.
            tracing::debug!(
                remote = %incoming.remote_address(),
                max = limits.max_unauthenticated,
                "too many unauthenticated QUIC connections; refusing"
            );
            incoming.refuse();
            continue;
        };
        let app = app.clone();
        let hello_timeout = limits.hello_timeout;
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + hello_timeout;
            let remote = incoming.remote_address();
            // Dropping an unfinished handshake closes it.
            let connection = match tokio::time::timeout_at(deadline, incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "QUIC handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "QUIC handshake deadline passed");
                    return;
                }
            };
            let admission =
                Arc::new(Admission { permit: Mutex::new(Some(permit)), admitted: AtomicBool::new(false) });
            match peer_certificate(&connection) {
                // The certificate chains to our CA (the TLS verifier saw to it): authenticated.
                Some(cert) => {
                    admission.admit(&connection);
                    agent_link::run(app, connection, cert).await
                }
                None => {
                    let link = Arc::new(client::QuicClient(connection.clone()));
                    let run = ADMISSION.scope(admission.clone(), crate::session::serve(app, link));
                    tokio::pin!(run);
                    tokio::select! {
                        () = &mut run => return,
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                    if !admission.admitted.load(Ordering::Acquire) {
                        tracing::info!(%remote, "no client hello in time; closing");
                        connection.close(CLOSE_HELLO_TIMEOUT.into(), b"no hello in time");
                    }
                    run.await
                }
            }
        });
    }
}

tokio::task_local! {
    /// The admission of the connection the current task serves.
    static ADMISSION: Arc<Admission>;
}

/// A connection's slot among the unauthenticated ones, given up once the peer is known.
struct Admission {
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    admitted: AtomicBool,
}

impl Admission {
    fn admit(&self, connection: &quinn::Connection) {
        airlock_proto::quic::grant_full_limits(connection);
        self.admitted.store(true, Ordering::Release);
        self.permit.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Marks the connection the current task serves as authenticated (its hello was accepted):
/// it gets full flow-control windows and streams, and leaves the unauthenticated count.
pub(crate) fn admitted(connection: &quinn::Connection) {
    if ADMISSION.try_with(|a| a.admit(connection)).is_err() {
        airlock_proto::quic::grant_full_limits(connection);
    }
}

fn peer_certificate(connection: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().cloned()
}
