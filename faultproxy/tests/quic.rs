//! Real QUIC (quinn) through the UDP proxy: NAT rebinding is ridden out by migration, and a
//! short cut or loss only slows the connection down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_faultproxy::{ProxyConfig, UdpProxy};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

struct Quic {
    client: quinn::Endpoint,
    server: quinn::Endpoint,
    /// Connections the server accepted, in order.
    accepted: mpsc::UnboundedReceiver<quinn::Connection>,
}

/// A quinn server that echoes every bidirectional stream, and a client endpoint trusting it
/// that sends keep-alives at `keep_alive` (quinn's default is none).
fn quic(keep_alive: Option<Duration>) -> Quic {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = CertificateDer::from(key.cert.der().to_vec());
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let server_config = quinn::ServerConfig::with_single_cert(vec![cert.clone()], private).unwrap();
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut client_config = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(keep_alive);
    client_config.transport_config(Arc::new(transport));
    client.set_default_client_config(client_config);

    let (tx, accepted) = mpsc::unbounded_channel();
    let endpoint = server.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.await else { continue };
            let _ = tx.send(conn.clone());
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let Ok(data) = recv.read_to_end(16 << 20).await else { return };
                        if send.write_all(&data).await.is_ok() {
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
    });
    Quic { client, server, accepted }
}

async fn round_trip(conn: &quinn::Connection, payload: &[u8]) -> Vec<u8> {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(payload).await.unwrap();
        send.finish().unwrap();
        recv.read_to_end(16 << 20).await.unwrap()
    };
    timeout(WAIT, exchange).await.expect("the QUIC exchange did not finish")
}

async fn connect(quic: &mut Quic, via: SocketAddr) -> (quinn::Connection, quinn::Connection) {
    let client = timeout(WAIT, quic.client.connect(via, "localhost").unwrap()).await.unwrap().unwrap();
    let server = timeout(WAIT, quic.accepted.recv()).await.unwrap().unwrap();
    (client, server)
}

#[tokio::test]
async fn quic_migrates_across_a_nat_rebinding() {
    let mut quic = quic(None);
    let proxy = UdpProxy::start(quic.server.local_addr().unwrap()).await.unwrap();
    let faults = proxy.faults();
    let (conn, server_side) = connect(&mut quic, proxy.local_addr()).await;
    assert_eq!(round_trip(&conn, b"before").await, b"before");
    let before = server_side.remote_address();

    faults.rebind();
    // The client does not know its path changed: it keeps talking, the server sees the same
    // connection IDs from a new address, validates the new path and moves to it.
    assert_eq!(round_trip(&conn, b"after").await, b"after");
    let after = server_side.remote_address();
    assert_ne!(before.port(), after.port(), "the server did not migrate");
    assert_eq!(faults.stats().rebinds, 1);
    assert!(conn.close_reason().is_none());

    // A second rebinding while 1 MiB is under way: the transfer completes on the new path.
    let big = vec![7u8; 1 << 20];
    let base = faults.stats().to_upstream.forwarded_bytes;
    let transfer = {
        let (conn, big) = (conn.clone(), big.clone());
        tokio::spawn(async move { round_trip(&conn, &big).await })
    };
    while faults.stats().to_upstream.forwarded_bytes < base + (64 << 10) && !transfer.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    faults.rebind();
    assert_eq!(transfer.await.unwrap(), big);
    // Whether or not the transfer outran the rebinding, the next exchange is on the new path.
    assert_eq!(round_trip(&conn, b"again").await, b"again");
    assert_ne!(server_side.remote_address(), after, "the server did not migrate a second time");
    assert_eq!(faults.stats().rebinds, 2);
    assert_eq!(quic.accepted.try_recv().err(), Some(mpsc::error::TryRecvError::Empty), "a new connection");
}

#[tokio::test]
async fn quic_survives_a_short_cut_loss_and_reordering() {
    let mut quic = quic(None);
    let config = ProxyConfig::default().with_seed(5);
    let proxy = UdpProxy::start_with(quic.server.local_addr().unwrap(), config).await.unwrap();
    let faults = proxy.faults();
    let (conn, _server_side) = connect(&mut quic, proxy.local_addr()).await;
    assert_eq!(round_trip(&conn, b"warm").await, b"warm");

    faults.cut_for(Duration::from_millis(500));
    assert_eq!(round_trip(&conn, b"through the cut").await, b"through the cut");
    assert!(faults.stats().to_upstream.dropped > 0 || faults.stats().to_client.dropped > 0);

    faults.set_drop_percent(10);
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| i as u8).collect();
    assert_eq!(round_trip(&conn, &big).await, big);
    let s = faults.stats();
    assert!(s.to_upstream.dropped + s.to_client.dropped > 10, "{s:?}");

    faults.set_drop_percent(0);
    faults.set_reorder(4);
    let before = faults.stats();
    assert_eq!(round_trip(&conn, &big).await, big);
    assert!(faults.stats().to_upstream.forwarded > before.to_upstream.forwarded + 100);
    assert!(conn.close_reason().is_none());
}

#[tokio::test]
async fn after_a_rebinding_server_data_waits_for_the_client_to_speak() {
    // The server only learns the new address from the client's next packet: data it pushes
    // meanwhile goes to the closed old port. With a keep-alive the client speaks soon anyway;
    // without one (quinn's default) this push never arrives while the client stays silent.
    let mut quic = quic(Some(Duration::from_millis(300)));
    let proxy = UdpProxy::start(quic.server.local_addr().unwrap()).await.unwrap();
    let faults = proxy.faults();
    let (conn, server_side) = connect(&mut quic, proxy.local_addr()).await;
    assert_eq!(round_trip(&conn, b"warm").await, b"warm");
    let before = server_side.remote_address();
    // Let delayed ACKs go out so the client is truly silent when the mapping changes.
    tokio::time::sleep(Duration::from_millis(100)).await;

    faults.rebind();
    while faults.stats().rebinds < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut push = server_side.open_uni().await.unwrap();
    push.write_all(b"output while the user is idle").await.unwrap();
    push.finish().unwrap();
    let received = timeout(WAIT, async {
        let mut recv = conn.accept_uni().await.unwrap();
        recv.read_to_end(1024).await.unwrap()
    })
    .await
    .expect("server data never reached the client after the rebinding");
    assert_eq!(received, b"output while the user is idle");
    assert_ne!(server_side.remote_address(), before);
}
