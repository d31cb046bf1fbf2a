//! The QUIC front: agents (with client certificates) and CLI clients (with session
//! tokens) connect to the same UDP port; the presence of a client certificate tells them
//! apart.

mod agent_link;
mod client_link;
mod port_session;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::app::App;

/// Control-stream frames are small; anything bigger is an attack or a bug.
pub const CONTROL_FRAME_LIMIT: usize = 64 * 1024;

/// Errors setting up the QUIC endpoint.
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("quic: {0}")]
    Quic(String),
    #[error("cannot bind UDP {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Binds the QUIC endpoint on `addr` (UDP).
pub fn endpoint(
    addr: SocketAddr,
    ca_pem: &str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
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
    config.transport_config(Arc::new(airlock_proto::quic::transport_config()));
    airlock_proto::quic::bind_endpoint(addr, Some(config))
        .map_err(|source| QuicSetupError::Bind { addr, source })
}

/// Accepts connections until the endpoint closes.
pub async fn serve(app: Arc<App>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let app = app.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let connection = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(%remote, error = %e, "QUIC handshake failed");
                    return;
                }
            };
            match peer_certificate(&connection) {
                Some(cert) => agent_link::run(app, connection, cert).await,
                None => client_link::run(app, connection).await,
            }
        });
    }
}

fn peer_certificate(connection: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().cloned()
}
