//! Connections without credentials are bounded: slow or silent HTTP clients are closed after
//! short deadlines, a cap keeps descriptors for the API, oversized bodies get SSM's error
//! shape, and unauthenticated QUIC connections get small windows, a hello deadline and a cap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use common::{wait_for, Broker};

/// Generous upper bound for something a deadline of a second or two should cause.
const PATIENCE: Duration = Duration::from_secs(10);

fn addr(broker: &Broker) -> SocketAddr {
    broker.url.split("://").nth(1).unwrap().parse().unwrap()
}

/// A TCP connection that sent the start of a request's headers and then nothing.
fn half_sent(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le").unwrap();
    s
}

/// Waits until the broker closes `s` (EOF or reset); false if it is still open at `until`.
fn closed_by(s: &mut TcpStream, until: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Sends `GET /ca.pem` on a new connection from `from` and returns the status line, or None
/// when the broker closed the connection without answering.
fn get_ca(to: SocketAddr, from: Option<std::net::IpAddr>) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut s = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(ip) = from {
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
        }
        socket.connect(to).await.ok()?.into_std().ok()
    })?;
    s.set_nonblocking(false).unwrap();
    s.write_all(b"GET /ca.pem HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines().next().filter(|l| l.starts_with("HTTP/")).map(str::to_owned)
}

fn describe_sessions(broker: &Broker) -> u16 {
    let (status, body) = broker.raw_call(
        "DescribeSessions",
        r#"{"State":"Active"}"#,
        &broker.key_id,
        &broker.secret,
        SystemTime::now(),
    );
    assert_eq!(status, 200, "{body}");
    status
}

#[test]
fn half_sent_requests_are_closed_while_the_api_answers() {
    let broker = Broker::start_with(&[
        "--insecure-http",
        "--http-header-timeout",
        "2s",
        "--max-connections",
        "400",
        "--max-connections-per-ip",
        "300",
    ]);
    let to = addr(&broker);
    let mut flood: Vec<TcpStream> = (0..200).map(|_| half_sent(to)).collect();
    // Silent ones too: they never even start a request.
    flood.extend((0..20).map(|_| TcpStream::connect(to).unwrap()));
    assert_eq!(describe_sessions(&broker), 200, "a signed call answers during the flood");
    let until = Instant::now() + PATIENCE;
    let open = flood.iter_mut().map(|s| closed_by(s, until)).filter(|closed| !closed).count();
    assert_eq!(open, 0, "{open} of {} slow connections are still open", flood.len());
    describe_sessions(&broker);
}

#[test]
fn connections_over_the_cap_are_closed_and_the_api_recovers() {
    let broker = Broker::start_with(&[
        "--insecure-http",
        "--http-header-timeout",
        "3s",
        "--max-connections",
        "20",
        "--max-connections-per-ip",
        "100",
    ]);
    let to = addr(&broker);
    let mut holders: Vec<TcpStream> = (0..20).map(|_| half_sent(to)).collect();
    // Give the broker time to accept all of them before the extra one comes.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get_ca(to, None), None, "a connection over the cap is closed unanswered");
    let until = Instant::now() + PATIENCE;
    assert!(holders.iter_mut().all(|s| closed_by(s, until)), "the holders are closed by the header timeout");
    let status = wait_for("the API to answer again", PATIENCE, || get_ca(to, None));
    assert!(status.contains(" 200 "), "{status}");
    describe_sessions(&broker);
}

#[test]
fn one_address_cannot_take_every_connection() {
    let broker = Broker::start_with(&[
        "--insecure-http",
        "--http-header-timeout",
        "30s",
        "--max-connections-per-ip",
        "10",
    ]);
    let to = addr(&broker);
    let _holders: Vec<TcpStream> = (0..10).map(|_| half_sent(to)).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get_ca(to, None), None, "an 11th connection from 127.0.0.1 is closed");
    let other = get_ca(to, Some("127.0.0.2".parse().unwrap())).expect("127.0.0.2 is answered");
    assert!(other.contains(" 200 "), "{other}");
}

#[test]
fn slow_bodies_and_idle_connections_are_closed() {
    let broker = Broker::start_with(&[
        "--insecure-http",
        "--http-body-timeout",
        "2s",
        "--http-idle-timeout",
        "2s",
        "--http-header-timeout",
        "30s",
    ]);
    let to = addr(&broker);
    // Headers announce 100 bytes; 10 come.
    let mut slow = TcpStream::connect(to).unwrap();
    slow.write_all(
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.1\r\n\
          X-Amz-Target: AmazonSSM.DescribeSessions\r\nContent-Length: 100\r\n\r\n{\"State\":",
    )
    .unwrap();
    slow.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("\"__type\":\"RequestTimeoutException\""), "{answer:?}");

    // A keep-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(to).unwrap();
    idle.write_all(b"GET /ca.pem HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(closed_by(&mut idle, Instant::now() + PATIENCE), "an idle keep-alive connection is closed");
}

#[test]
fn silent_tls_clients_are_closed_after_the_handshake_deadline() {
    let broker = Broker::start_with(&["--tls-handshake-timeout", "1s", "--http-idle-timeout", "60s"]);
    let to = addr(&broker);
    let mut silent: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(to).unwrap()).collect();
    let until = Instant::now() + PATIENCE;
    assert!(silent.iter_mut().all(|s| closed_by(s, until)));
    describe_sessions(&broker);
}

#[test]
fn oversized_bodies_get_ssm_json_413() {
    let broker = Broker::start();
    let big =
        format!(r#"{{"State":"Active","Filters":[{{"key":"Owner","value":"{}"}}]}}"#, "x".repeat(300 << 10));
    let (status, body) =
        broker.raw_call("DescribeSessions", &big, &broker.key_id, &broker.secret, SystemTime::now());
    assert_eq!(status, 413, "{body}");
    assert!(body["__type"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert!(body["message"].is_string(), "{body}");

    // Unsigned, and larger than anything the broker buffers; the content type is SSM's.
    let ca = std::fs::read(broker.ca_file()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(airlock_proto::quic::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(airlock_proto::quic::pinned_roots(&ca).unwrap())
        .with_no_client_auth();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for size in [300 << 10, 3 << 20] {
        let (status, content_type, text) = rt.block_on(async {
            let client = reqwest::Client::builder().use_preconfigured_tls(tls.clone()).build().unwrap();
            let resp = client
                .post(format!("{}/", broker.url))
                .header("content-type", "application/x-amz-json-1.1")
                .header("x-amz-target", "AmazonSSM.DescribeSessions")
                .body(vec![b' '; size])
                .send()
                .await
                .unwrap();
            let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
            (resp.status().as_u16(), ct, resp.text().await.unwrap())
        });
        assert_eq!(status, 413, "{size}: {text}");
        assert_eq!(content_type.as_deref(), Some("application/x-amz-json-1.1"), "{size}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["__type"].is_string() && v["message"].is_string(), "{size}: {v}");
    }
}

mod quic {
    use super::*;

    fn rss_kib(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn client(broker: &Broker) -> (quinn::Endpoint, SocketAddr) {
        let ca = std::fs::read(broker.ca_file()).unwrap();
        let to = addr(broker);
        let mut config = airlock_proto::quic::client_config(&ca, None).unwrap();
        // Without MTU probes (large padded datagrams), bytes on the wire are nearly all data.
        let mut transport = airlock_proto::quic::transport_config();
        transport.mtu_discovery_config(None);
        config.transport_config(std::sync::Arc::new(transport));
        (airlock_proto::quic::client_endpoint(to, config).unwrap(), to)
    }

    /// Opens streams and queues as much as the broker's windows let through for a few seconds,
    /// never saying hello; returns the bytes queued and the streams, to keep them open.
    async fn flood(conn: quinn::Connection) -> (u64, Vec<(quinn::SendStream, quinn::RecvStream)>) {
        let chunk = vec![0u8; 64 << 10];
        let mut sent = 0u64;
        let mut streams = Vec::new();
        let started = Instant::now();
        // The first stream carries one byte of a frame header: a hello that never finishes.
        if let Ok(Ok((mut send, recv))) = tokio::time::timeout(Duration::from_secs(1), conn.open_bi()).await {
            let _ = send.write_all(&[3]).await;
            streams.push((send, recv));
        }
        while streams.len() < 9 && started.elapsed() < Duration::from_secs(4) {
            let Ok(Ok((mut send, recv))) =
                tokio::time::timeout(Duration::from_millis(500), conn.open_bi()).await
            else {
                break;
            };
            while started.elapsed() < Duration::from_secs(4) {
                match tokio::time::timeout(Duration::from_millis(300), send.write_all(&chunk)).await {
                    Ok(Ok(())) => sent += chunk.len() as u64,
                    _ => break,
                }
            }
            streams.push((send, recv));
        }
        (sent, streams)
    }

    #[test]
    fn unauthenticated_connections_stay_small() {
        let broker = Broker::start();
        let pid = broker.proc.0.id();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (endpoint, to) = rt.block_on(async { client(&broker) });
        // Warm up: one complete connection, so lazily made buffers are not counted.
        rt.block_on(async {
            let c = endpoint.connect(to, "127.0.0.1").unwrap().await.unwrap();
            c.close(0u32.into(), b"");
        });
        std::thread::sleep(Duration::from_millis(500));
        let before = rss_kib(pid);
        // The peak while the flood runs: the broker may free what it held once it gives up.
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let (conns, sent) = rt.block_on(async {
            let mut conns = Vec::new();
            let mut tasks = Vec::new();
            for _ in 0..12 {
                let c = endpoint.connect(to, "127.0.0.1").unwrap().await.unwrap();
                tasks.push(tokio::spawn(flood(c.clone())));
                conns.push(c);
            }
            let mut streams = Vec::new();
            for t in tasks {
                streams.push(t.await.unwrap().1);
            }
            // What was queued reaches the broker as far as its windows allow.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let sent: u64 = conns.iter().map(|c| c.stats().udp_tx.bytes).sum();
            ((conns, streams), sent)
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().unwrap();
        let after = peak.load(std::sync::atomic::Ordering::Relaxed);
        let grown = after.saturating_sub(before);
        eprintln!(
            "12 unauthenticated QUIC connections: broker RSS {before} KiB -> peak {after} KiB \
             (+{grown} KiB, {} KiB per connection); {} KiB went over the wire to it",
            grown / 12,
            sent >> 10
        );
        assert!(sent <= 12 * (256 << 10), "the broker let {} KiB in before any hello", sent >> 10);
        assert!(grown < 64 << 10, "broker grew by {grown} KiB for 12 unauthenticated connections");
        drop(conns);
    }

    #[test]
    fn no_hello_in_time_closes_the_connection() {
        let broker = Broker::start_with(&["--quic-hello-timeout", "2s"]);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (endpoint, to) = client(&broker);
            let conn = endpoint.connect(to, "127.0.0.1").unwrap().await.unwrap();
            // One byte of a frame header, then nothing: the old per-read deadlines ran 10 s
            // for the stream and 10 s more for the frame.
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            send.write_all(&[3]).await.unwrap();
            let reason =
                tokio::time::timeout(PATIENCE, conn.closed()).await.expect("closed within the deadline");
            match reason {
                quinn::ConnectionError::ApplicationClosed(c) => {
                    assert_eq!(c.error_code, quinn::VarInt::from_u32(4), "{c:?}")
                }
                other => panic!("unexpected close: {other}"),
            }
        });
    }

    #[test]
    fn excess_unauthenticated_connections_are_refused() {
        let broker = Broker::start_with(&["--max-unauthenticated-quic", "4", "--quic-hello-timeout", "3s"]);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (endpoint, to) = client(&broker);
            let mut held = Vec::new();
            for _ in 0..4 {
                held.push(endpoint.connect(to, "127.0.0.1").unwrap().await.unwrap());
            }
            let refused = endpoint.connect(to, "127.0.0.1").unwrap().await;
            assert!(
                matches!(refused, Err(quinn::ConnectionError::ConnectionClosed(ref c))
                    if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED),
                "{refused:?}"
            );
            // Once the deadline has closed them, there is room again.
            for c in &held {
                tokio::time::timeout(PATIENCE, c.closed()).await.unwrap();
            }
            let again = tokio::time::timeout(PATIENCE, endpoint.connect(to, "127.0.0.1").unwrap()).await;
            assert!(matches!(again, Ok(Ok(_))), "{again:?}");
        });
    }

    #[test]
    fn the_reset_key_is_private_and_survives_a_restart() {
        use std::os::unix::fs::PermissionsExt;
        let broker = Broker::start();
        let path = broker.data_dir().join("quic-reset-key");
        let key = std::fs::read(&path).expect("the reset key is stored");
        assert_eq!(key.len(), 64);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let Broker { dir, proc, .. } = broker;
        drop(proc);
        let again = Broker::start_in(dir, &[]);
        assert_eq!(std::fs::read(&path).unwrap(), key, "a restart keeps the key");
        drop(again);
    }

    #[test]
    fn an_agent_notices_a_broker_restart_quickly() {
        let broker = Broker::start();
        let agent = broker.agent("restart");
        let port = addr(&broker).port().to_string();
        let Broker { dir, proc, key_id, secret, .. } = broker;
        // Killed, not shut down: no close frame reaches the agent, only stateless resets.
        drop(proc);
        let listen = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let mut again = Broker::start_in(dir, &["--listen", &listen]);
        (again.key_id, again.secret) = (key_id, secret);
        // The agent's keep-alive (every 5 s) meets a stateless reset made with the same key;
        // without it the agent waits out its 30 s idle timeout.
        wait_for("the agent to reconnect", Duration::from_secs(15), || {
            let v = again.api(&["describe-instance-information"]);
            v["InstanceInformationList"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["InstanceId"] == agent.instance_id.as_str() && i["PingStatus"] == "Online")
                .then_some(())
        });
        eprintln!("agent back online {:?} after the restart", started.elapsed());
    }
}
