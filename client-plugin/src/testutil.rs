//! A throw-away CA, and QUIC and HTTPS listeners standing in for the broker in tests.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Both ends of an in-memory framed stream.
pub(crate) type Framed = airlock_proto::FramedStream<
    tokio::io::ReadHalf<tokio::io::DuplexStream>,
    tokio::io::WriteHalf<tokio::io::DuplexStream>,
>;

/// Two framed streams connected to each other in memory.
pub(crate) fn pair() -> (Framed, Framed) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let max = airlock_proto::MAX_FRAME_LEN;
    (airlock_proto::FramedStream::new(ar, aw, max), airlock_proto::FramedStream::new(br, bw, max))
}

/// A CA certificate (PEM) and a rustls server config whose certificate it signed.
pub(crate) struct TestCa {
    pub ca_pem: String,
    pub server: rustls::ServerConfig,
}

/// A fresh CA and a server certificate for `names` (DNS names or IP literals).
pub(crate) fn test_ca(names: &[&str], alpn: &[u8]) -> TestCa {
    airlock_proto::quic::install_crypto_provider();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(airlock_proto::quic::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![alpn.to_vec()];
    TestCa { ca_pem: ca_cert.pem(), server }
}

/// A CA PEM and a QUIC server endpoint on 127.0.0.1 whose certificate it signed.
pub(crate) struct FakeBroker {
    pub ca_pem: String,
    pub endpoint: quinn::Endpoint,
    pub addr: SocketAddr,
}

/// Starts a QUIC listener on 127.0.0.1 with a certificate for `names`.
pub(crate) fn fake_broker(names: &[&str]) -> FakeBroker {
    let ca = test_ca(names, airlock_proto::ALPN);
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(ca.server).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    FakeBroker { ca_pem: ca.ca_pem, endpoint, addr }
}

/// Answers one port-session connection stream like broker and agent together: `Connect` to a
/// target in `refused` gets `Close{Refused}`, any other target is an echo server that
/// finishes its side when ours ends (half-close kept).
pub(crate) async fn echo_port_stream(send: quinn::SendStream, recv: quinn::RecvStream, refused: &[u16]) {
    use airlock_proto::control::{CloseReason, Control};
    use airlock_proto::frame::{Frame, FrameKind};
    use airlock_proto::stream::FramedStream;
    use futures_util::SinkExt;

    let mut s = FramedStream::new(recv, send, airlock_proto::MAX_FRAME_LEN);
    let Control::Connect { target } = s.recv_control(std::time::Duration::from_secs(5)).await.unwrap() else {
        panic!("expected Connect")
    };
    if refused.contains(&target) {
        let close = Control::Close {
            reason: CloseReason::Refused,
            message: format!("target {target} is not allowed"),
        };
        s.send_control(&close).await.unwrap();
        s.writer.close().await.unwrap();
        return;
    }
    s.send_control(&Control::Started).await.unwrap();
    let mut seq = 0;
    while let Some(frame) = s.recv().await.unwrap() {
        assert_eq!(frame.kind, FrameKind::Data);
        s.send(Frame::data(seq, frame.payload)).await.unwrap();
        seq += 1;
    }
    s.writer.close().await.unwrap();
}

/// `len` bytes of a pattern that differs per `salt`, so swapped or shifted data shows.
pub(crate) fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ ((i >> 8) as u8)).collect()
}
