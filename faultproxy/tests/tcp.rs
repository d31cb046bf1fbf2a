//! The TCP proxy against real sockets on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use airlock_faultproxy::TcpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn accept(listener: &TcpListener) -> TcpStream {
    timeout(WAIT, listener.accept()).await.expect("the proxy never connected upstream").unwrap().0
}

/// FNV-1a, enough to tell two 4 MiB streams apart.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[tokio::test]
async fn four_mib_survive_a_cut_in_the_middle_both_ways() {
    const TOTAL: usize = 4 << 20;
    let (upstream, addr) = listener().await;
    let proxy = TcpProxy::start(addr).await.unwrap();
    let faults = proxy.faults();
    let client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let server = accept(&upstream).await;
    // The upstream echoes everything back, so both directions cross the cut.
    let echo = tokio::spawn(async move {
        let (mut r, mut w) = server.into_split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });

    let mut rng = fastrand::Rng::with_seed(9);
    let data: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(TOTAL).collect();
    let expected = checksum(&data);
    let (mut r, mut w) = client.into_split();
    let writer = {
        let faults = faults.clone();
        tokio::spawn(async move {
            for (i, chunk) in data.chunks(64 * 1024).enumerate() {
                if i == 16 {
                    // 1 MiB in: cut until the test restores.
                    faults.cut();
                }
                w.write_all(chunk).await.unwrap();
            }
            w.shutdown().await.unwrap();
        })
    };
    let reader = tokio::spawn(async move {
        let mut back = Vec::with_capacity(TOTAL);
        r.read_to_end(&mut back).await.unwrap();
        back
    });

    while !faults.is_cut() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Writes already under way when the cut began may still finish; after that nothing moves.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let during = faults.stats();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(faults.stats(), during, "bytes moved during the cut");
    assert!(during.to_upstream.forwarded_bytes < TOTAL as u64);
    assert!(!writer.is_finished(), "the writer was not held back by the cut");

    faults.restore();
    timeout(WAIT, writer).await.unwrap().unwrap();
    let back = timeout(WAIT, reader).await.unwrap().unwrap();
    timeout(WAIT, echo).await.unwrap().unwrap();
    assert_eq!(back.len(), TOTAL);
    assert_eq!(checksum(&back), expected);
    let s = faults.stats();
    assert_eq!(s.to_upstream.forwarded_bytes, TOTAL as u64);
    assert_eq!(s.to_client.forwarded_bytes, TOTAL as u64);
}

#[tokio::test]
async fn reset_all_resets_both_ends() {
    let (upstream, addr) = listener().await;
    let proxy = TcpProxy::start(addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let mut server = accept(&upstream).await;
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();

    proxy.faults().reset_all();
    for (side, stream) in [("client", &mut client), ("server", &mut server)] {
        let read = timeout(WAIT, stream.read(&mut buf)).await.expect("no reset seen");
        assert_eq!(read.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset), "{side}");
    }
    let s = proxy.faults().stats();
    assert_eq!((s.resets, s.connections), (1, 1));
}

#[tokio::test]
async fn reset_all_also_resets_connections_waiting_out_a_cut() {
    let (_upstream, addr) = listener().await;
    let proxy = TcpProxy::start(addr).await.unwrap();
    let faults = proxy.faults();
    faults.cut();
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    while faults.stats().active_connections == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    faults.reset_all();
    let mut buf = [0u8; 1];
    let read = timeout(WAIT, client.read(&mut buf)).await.expect("no reset seen");
    assert_eq!(read.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
}

#[tokio::test]
async fn half_close_is_kept_both_ways() {
    let (upstream, addr) = listener().await;
    let proxy = TcpProxy::start(addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let mut server = accept(&upstream).await;

    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    timeout(WAIT, server.read_to_end(&mut got)).await.expect("the FIN did not cross").unwrap();
    assert_eq!(got, b"request");

    // The other direction is still open after the client's FIN.
    server.write_all(b"response").await.unwrap();
    server.shutdown().await.unwrap();
    let mut got = Vec::new();
    timeout(WAIT, client.read_to_end(&mut got)).await.expect("the FIN did not cross back").unwrap();
    assert_eq!(got, b"response");
}

#[tokio::test]
async fn connections_during_a_cut_wait_for_restore_to_reach_upstream() {
    let (upstream, addr) = listener().await;
    let proxy = TcpProxy::start(addr).await.unwrap();
    let faults = proxy.faults();
    faults.cut_for(Duration::from_millis(300));
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    client.write_all(b"early").await.unwrap();
    assert!(
        timeout(Duration::from_millis(150), upstream.accept()).await.is_err(),
        "connected upstream during the cut"
    );
    let mut server = accept(&upstream).await;
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"early");
    assert_eq!(faults.stats().connections, 1);
}

#[tokio::test]
async fn an_upstream_reset_resets_the_client() {
    let (upstream, addr) = listener().await;
    let proxy = TcpProxy::start(addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let server = accept(&upstream).await;
    client.write_all(b"x").await.unwrap();
    server.set_zero_linger().unwrap();
    drop(server);
    let mut buf = [0u8; 1];
    let read = timeout(WAIT, client.read(&mut buf)).await.expect("no reset seen");
    assert_eq!(read.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
}

#[tokio::test]
async fn an_unreachable_upstream_resets_the_client() {
    // A port nothing listens on: bind, read the port, close.
    let addr = listener().await.1;
    let proxy = TcpProxy::start(addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let mut buf = [0u8; 1];
    let read = timeout(WAIT, client.read(&mut buf)).await.expect("no reset seen");
    assert_eq!(read.map_err(|e| e.kind()), Err(ErrorKind::ConnectionReset));
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections() {
    let (upstream, addr) = listener().await;
    let proxy = TcpProxy::start(addr).await.unwrap();
    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let mut server = accept(&upstream).await;
    client.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    server.read_exact(&mut buf).await.unwrap();
    drop(proxy);
    // A plain close (FIN) when the aborted task drops its sockets: EOF at both ends.
    assert_eq!(timeout(WAIT, client.read(&mut buf)).await.expect("client still open").unwrap(), 0);
    assert_eq!(timeout(WAIT, server.read(&mut buf)).await.expect("server still open").unwrap(), 0);
}
