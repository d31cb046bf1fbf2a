//! The UDP proxy against real sockets on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use airlock_faultproxy::{Faults, ProxyConfig, UdpProxy};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// An upstream that echoes every datagram and reports (source, payload) of each.
struct Upstream {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn upstream(echo: bool) -> Upstream {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            if echo {
                socket.send_to(&buf[..n], from).await.unwrap();
            }
            let _ = tx.send((from, buf[..n].to_vec()));
        }
    });
    Upstream { addr, seen, task }
}

async fn client(proxy: &UdpProxy) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(proxy.local_addr()).await.unwrap();
    socket
}

async fn echo(socket: &UdpSocket, payload: &[u8]) -> Vec<u8> {
    socket.send(payload).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let n = timeout(WAIT, socket.recv(&mut buf)).await.expect("no echo through the proxy").unwrap();
    buf.truncate(n);
    buf
}

/// Waits until `check` holds on the proxy's stats (tasks apply faults asynchronously).
async fn eventually(faults: &Faults, what: &str, check: impl Fn(&airlock_faultproxy::Stats) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check(&faults.stats()) {
        assert!(tokio::time::Instant::now() < deadline, "{what}: {:?}", faults.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `count` numbered datagrams, paced so no socket buffer on the way overflows: any loss
/// then is the proxy's.
async fn send_numbered(socket: &UdpSocket, count: u32) {
    for i in 0..count {
        socket.send(&i.to_be_bytes()).await.unwrap();
        if i % 32 == 31 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test]
async fn echo_round_trips_and_is_counted() {
    let up = upstream(true).await;
    let proxy = UdpProxy::start(up.addr).await.unwrap();
    let c = client(&proxy).await;
    for i in 0..10u8 {
        assert_eq!(echo(&c, &[i; 100]).await, vec![i; 100]);
    }
    let faults = proxy.faults();
    eventually(&faults, "all counted", |s| s.to_client.forwarded == 10).await;
    let s = faults.stats();
    assert_eq!((s.to_upstream.forwarded, s.to_upstream.forwarded_bytes), (10, 1000));
    assert_eq!((s.to_client.forwarded, s.to_client.forwarded_bytes), (10, 1000));
    assert_eq!((s.to_upstream.dropped, s.to_client.dropped), (0, 0));
    assert_eq!((s.clients, s.active_clients), (1, 1));
}

#[tokio::test]
async fn cut_drops_everything_until_restore() {
    let mut up = upstream(true).await;
    let proxy = UdpProxy::start(up.addr).await.unwrap();
    let faults = proxy.faults();
    let c = client(&proxy).await;
    assert_eq!(echo(&c, b"before").await, b"before");
    up.seen.recv().await.unwrap();

    faults.cut();
    for _ in 0..5 {
        c.send(b"during").await.unwrap();
    }
    eventually(&faults, "5 dropped on the way up", |s| s.to_upstream.dropped == 5).await;
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(200), c.recv(&mut buf)).await.is_err(),
        "a reply got through a cut"
    );
    assert!(up.seen.try_recv().is_err(), "a datagram reached the upstream during the cut");

    faults.restore();
    assert_eq!(echo(&c, b"after").await, b"after");
    let s = faults.stats();
    assert_eq!(s.to_upstream.forwarded, 2);
    assert_eq!(s.to_upstream.dropped_bytes, 5 * 6);
}

#[tokio::test]
async fn timed_cut_drops_replies_too_and_ends_by_itself() {
    let up = upstream(true).await;
    let proxy = UdpProxy::start(up.addr).await.unwrap();
    let faults = proxy.faults();
    let c = client(&proxy).await;
    assert_eq!(echo(&c, b"warm").await, b"warm");

    faults.cut_for(Duration::from_millis(300));
    c.send(b"lost").await.unwrap();
    eventually(&faults, "dropped during the timed cut", |s| s.to_upstream.dropped == 1).await;
    assert!(faults.is_cut());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(!faults.is_cut());
    assert_eq!(echo(&c, b"back").await, b"back");
}

#[tokio::test]
async fn half_loss_with_a_seed_is_about_half_and_reproducible() {
    let mut dropped = Vec::new();
    for _ in 0..2 {
        let mut up = upstream(false).await;
        let proxy = UdpProxy::start_with(up.addr, ProxyConfig::default().with_seed(42)).await.unwrap();
        let faults = proxy.faults();
        faults.set_drop_percent(50);
        let c = client(&proxy).await;
        send_numbered(&c, 1000).await;
        eventually(&faults, "all 1000 judged", |s| s.to_upstream.forwarded + s.to_upstream.dropped == 1000)
            .await;
        let s = faults.stats();
        assert!((300..=700).contains(&s.to_upstream.dropped), "dropped {} of 1000", s.to_upstream.dropped);
        let mut received = 0;
        while received < s.to_upstream.forwarded {
            timeout(WAIT, up.seen.recv()).await.expect("a forwarded datagram never arrived").unwrap();
            received += 1;
        }
        dropped.push(s.to_upstream.dropped);
    }
    assert_eq!(dropped[0], dropped[1], "the same seed must lose the same datagrams");
}

#[tokio::test]
async fn reorder_delivers_everything_but_not_in_order() {
    let mut up = upstream(false).await;
    let proxy = UdpProxy::start_with(up.addr, ProxyConfig::default().with_seed(3)).await.unwrap();
    proxy.faults().set_reorder(8);
    let c = client(&proxy).await;
    // 203 is not a multiple of 8: the last partial batch must come out by the flush timer.
    send_numbered(&c, 203).await;
    let mut order = Vec::new();
    while order.len() < 203 {
        let (_, payload) = timeout(WAIT, up.seen.recv()).await.expect("reordering lost a datagram").unwrap();
        order.push(u32::from_be_bytes(payload.try_into().unwrap()));
    }
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..203).collect::<Vec<_>>(), "every datagram exactly once");
    assert_ne!(order, sorted, "reordering left everything in order");
    // Shuffled within a batch of at most 8 consecutive datagrams, never further.
    for (i, n) in order.iter().enumerate() {
        assert!((i as i64 - i64::from(*n)).abs() < 8, "datagram {n} moved to {i}");
    }
}

#[tokio::test]
async fn rebind_gives_the_same_client_a_new_source_port() {
    let mut up = upstream(true).await;
    let proxy = UdpProxy::start(up.addr).await.unwrap();
    let faults = proxy.faults();
    let c = client(&proxy).await;
    assert_eq!(echo(&c, b"one").await, b"one");
    let (first, _) = up.seen.recv().await.unwrap();

    faults.rebind();
    eventually(&faults, "rebound", |s| s.rebinds == 1).await;
    assert_eq!(echo(&c, b"two").await, b"two");
    let (second, _) = up.seen.recv().await.unwrap();
    assert_ne!(first.port(), second.port(), "the upstream saw no new source port");
    assert_eq!(faults.stats().clients, 1, "a rebinding is the same mapping, not a new client");
}

#[tokio::test]
async fn two_clients_get_distinct_upstream_ports_and_their_own_replies() {
    let mut up = upstream(true).await;
    let proxy = UdpProxy::start(up.addr).await.unwrap();
    let (a, b) = (client(&proxy).await, client(&proxy).await);
    assert_eq!(echo(&a, b"from a").await, b"from a");
    assert_eq!(echo(&b, b"from b").await, b"from b");
    let (src_a, _) = up.seen.recv().await.unwrap();
    let (src_b, _) = up.seen.recv().await.unwrap();
    assert_ne!(src_a, src_b);
    assert_eq!(proxy.faults().stats().clients, 2);
}

#[tokio::test]
async fn idle_mappings_expire_and_come_back_on_a_new_port() {
    let mut up = upstream(true).await;
    let config = ProxyConfig::default().with_idle_timeout(Duration::from_millis(150));
    let proxy = UdpProxy::start_with(up.addr, config).await.unwrap();
    let faults = proxy.faults();
    let c = client(&proxy).await;
    assert_eq!(echo(&c, b"one").await, b"one");
    let (first, _) = up.seen.recv().await.unwrap();
    eventually(&faults, "mapping expired", |s| s.active_clients == 0).await;
    assert_eq!(echo(&c, b"two").await, b"two");
    let (second, _) = up.seen.recv().await.unwrap();
    assert_ne!(first, second);
    assert_eq!(faults.stats().clients, 2);
}

#[tokio::test]
async fn clients_over_the_cap_are_refused() {
    let up = upstream(true).await;
    let proxy = UdpProxy::start_with(up.addr, ProxyConfig::default().with_max_clients(1)).await.unwrap();
    let (a, b) = (client(&proxy).await, client(&proxy).await);
    assert_eq!(echo(&a, b"a").await, b"a");
    b.send(b"b").await.unwrap();
    eventually(&proxy.faults(), "refused", |s| s.refused == 1).await;
    assert_eq!(echo(&a, b"a again").await, b"a again");
}

#[tokio::test]
async fn delay_holds_datagrams_in_order() {
    let mut up = upstream(false).await;
    let proxy = UdpProxy::start(up.addr).await.unwrap();
    proxy.faults().set_delay(Duration::from_millis(100));
    let c = client(&proxy).await;
    let sent_at = tokio::time::Instant::now();
    send_numbered(&c, 20).await;
    for i in 0..20u32 {
        let (_, payload) = timeout(WAIT, up.seen.recv()).await.unwrap().unwrap();
        assert_eq!(payload, i.to_be_bytes());
    }
    // A lower bound only: the delay is added, never skipped.
    assert!(sent_at.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_sockets() {
    let mut up = upstream(true).await;
    let proxy = UdpProxy::start(up.addr).await.unwrap();
    let c = client(&proxy).await;
    assert_eq!(echo(&c, b"x").await, b"x");
    let (mapped, _) = up.seen.recv().await.unwrap();
    let listen = proxy.local_addr();
    drop(proxy);
    // Both the listening port and the client's upstream-facing port are free again once the
    // aborted tasks have been dropped.
    let mut free = HashSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while free.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "ports still held after drop: {free:?}");
        for addr in [listen, SocketAddr::from(([127, 0, 0, 1], mapped.port()))] {
            if std::net::UdpSocket::bind(addr).is_ok() {
                free.insert(addr);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
