//! QUIC and TLS set-up shared by the agent and the CLI: rustls with the ring provider, the
//! broker's CA pinned, ALPN [`crate::ALPN`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors setting up TLS or QUIC.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The named input holds no PEM certificate.
    #[error("no PEM certificate found in {0}")]
    NoCertificate(String),
    /// PEM input that does not parse.
    #[error("bad PEM in {what}: {detail}")]
    Pem {
        /// Which input (file or description).
        what: String,
        /// The parser's complaint.
        detail: String,
    },
    /// rustls rejected the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// Quinn rejected the configuration.
    #[error("quic: {0}")]
    Quic(String),
    /// Reading key or certificate files failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Installs ring as the process-wide rustls provider; call first thing in every `main`.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The ring provider, named explicitly so no config depends on the process default.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate in a PEM blob (`what` names it in errors).
pub fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what: what.to_owned(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what.to_owned()));
    }
    Ok(certs)
}

/// Parses the first private key in a PEM blob.
pub fn key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| TlsError::Pem { what: what.to_owned(), detail: e.to_string() })
}

/// A root store holding only the broker's CA.
pub fn pinned_roots(ca_pem: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, "CA file")? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// Transport settings tuned for interactive use and bulk transfer on one link.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    // A 30 s silence means the peer is gone; keep-alives make that independent of traffic.
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
        t.max_idle_timeout(Some(idle));
    }
    // Windows sized for loopback and LAN bandwidth-delay products; bounded all the same.
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(quinn::VarInt::from_u32(RECEIVE_WINDOW));
    t.send_window(u64::from(RECEIVE_WINDOW));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    // Probe for datagrams as large as the path carries (up to 64 KiB on loopback); on a
    // 1500-byte network the probes fail harmlessly and the packets stay at ~1450 bytes.
    // Fewer, larger packets mean fewer encryptions and syscalls per byte.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    t
}

/// Socket buffer size we ask the kernel for, both directions.
const SOCKET_BUFFER: usize = 8 << 20;

/// The largest UDP payload we announce and probe for.
const MAX_UDP_PAYLOAD: u16 = 65_527;

/// Endpoint settings shared by clients and the broker: accept datagrams as large as
/// MTU discovery may reach.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    // In range by construction (1200..=65527), so this cannot fail.
    let _ = config.max_udp_payload_size(MAX_UDP_PAYLOAD);
    config
}

/// Flow-control windows and stream counts a server grants a connection whose peer has not
/// authenticated yet: enough for a hello, too little to pin memory. Raise them with
/// [`grant_full_limits`] once the peer is known.
pub fn unauthenticated_transport_config() -> quinn::TransportConfig {
    let mut t = transport_config();
    // The per-stream window stays large (it is fixed at the handshake and cannot be raised
    // later); the connection window bounds what all streams together may buffer.
    t.receive_window(quinn::VarInt::from_u32(PREAUTH_WINDOW));
    t.send_window(u64::from(PREAUTH_WINDOW));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(PREAUTH_STREAMS));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t
}

/// Raises a live connection from [`unauthenticated_transport_config`] to the limits of
/// [`transport_config`].
pub fn grant_full_limits(connection: &quinn::Connection) {
    connection.set_receive_window(quinn::VarInt::from_u32(RECEIVE_WINDOW));
    connection.set_send_window(u64::from(RECEIVE_WINDOW));
    connection.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
}

/// Connection receive window before authentication (bytes).
const PREAUTH_WINDOW: u32 = 64 << 10;
/// Concurrent bidirectional streams before authentication.
const PREAUTH_STREAMS: u32 = 2;
/// Per-stream receive window once authenticated.
const STREAM_WINDOW: u32 = 8 << 20;
/// Connection receive (and send) window once authenticated.
const RECEIVE_WINDOW: u32 = 32 << 20;
/// Concurrent bidirectional streams once authenticated.
const MAX_STREAMS: u32 = 1024;

/// A QUIC endpoint on `addr` with [`endpoint_config`]; `server` makes it accept connections.
pub fn bind_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    bind_endpoint_with(addr, endpoint_config(), server)
}

/// A QUIC endpoint on `addr` with the given endpoint settings (e.g. a persisted
/// stateless-reset key on top of [`endpoint_config`]).
pub fn bind_endpoint_with(
    addr: SocketAddr,
    config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The default 208 KiB receive buffer overflows at a few Gbit/s, and every dropped
    // datagram halves the congestion window; ask for more (the kernel caps it at rmem_max).
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}

/// A QUIC client config that trusts only `ca_pem` and presents `identity` when given (agents).
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<quinn::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(pinned_roots(ca_pem)?);
    let mut tls = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![crate::ALPN.to_vec()];
    let quic =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// A client endpoint bound to an ephemeral port of the right address family.
pub fn client_endpoint(remote: SocketAddr, config: quinn::ClientConfig) -> Result<quinn::Endpoint, TlsError> {
    let bind: SocketAddr = if remote.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|_| TlsError::Quic("bad bind address".into()))?;
    let mut endpoint = bind_endpoint(bind, None)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}
