//! The agent's QUIC link (wire contract §2.1) against a mock broker endpoint on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use airlock_agent::link::{self, LinkConfig};
use airlock_agent::state::{AgentState, Registration, StateDir};
use airlock_proto::quic::{certs_from_pem, key_from_pem, pinned_roots, provider, transport_config};
use airlock_proto::{Control, Frame, FrameKind, FramedStream, SessionSpec, ALPN, MAX_FRAME_LEN};
use bytes::Bytes;
use common::TestCa;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const PATIENCE: Duration = Duration::from_secs(30);

/// A broker QUIC endpoint whose certificate is from `ca` and which accepts agent
/// certificates signed by `client_ca_pem`.
fn broker_endpoint(ca: &TestCa, client_ca_pem: &str) -> quinn::Endpoint {
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
    let roots = pinned_roots(client_ca_pem.as_bytes()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs_from_pem(cert.as_bytes(), "server cert").unwrap(),
            key_from_pem(key.as_bytes(), "server key").unwrap(),
        )
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// Writes a registration for an agent whose certificate `ca` signed.
fn register_agent(ca: &TestCa, port: u16, dir: &Path) {
    let (cert_pem, key_pem) = ca.issue(&["agent"]);
    StateDir::new(dir)
        .save(&Registration {
            state: AgentState {
                instance_id: "mi-0123456789abcdef0".parse().unwrap(),
                endpoint: format!("http://127.0.0.1:{port}/"),
            },
            key_pem,
            cert_pem,
            ca_pem: ca.pem.clone(),
        })
        .unwrap();
}

fn fast() -> LinkConfig {
    LinkConfig {
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(100),
        ..LinkConfig::default()
    }
}

/// A running agent, registered with a CA, and a mock broker that trusts agent certificates
/// from `client_ca_pem` (`None`: the same CA).
struct Linked {
    broker: quinn::Endpoint,
    _tmp: tempfile::TempDir,
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<Result<(), airlock_agent::Error>>,
}

fn linked(client_ca_pem: Option<&str>, config: LinkConfig) -> Linked {
    let ca = TestCa::new();
    let broker = broker_endpoint(&ca, client_ca_pem.unwrap_or(&ca.pem));
    let tmp = tempfile::tempdir().unwrap();
    register_agent(&ca, broker.local_addr().unwrap().port(), tmp.path());
    let (stop_tx, task) = start_agent(tmp.path().to_owned(), config);
    Linked { broker, _tmp: tmp, stop_tx, task }
}

fn start_agent(
    dir: PathBuf,
    config: LinkConfig,
) -> (watch::Sender<bool>, JoinHandle<Result<(), airlock_agent::Error>>) {
    airlock_proto::quic::install_crypto_provider();
    // Shown only when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new("airlock_agent=debug"))
        .try_init();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move { link::run(&dir, &config, stop_rx).await });
    (stop_tx, task)
}

async fn accept(endpoint: &quinn::Endpoint) -> quinn::Connection {
    let incoming = timeout(PATIENCE, endpoint.accept()).await.unwrap().unwrap();
    timeout(PATIENCE, incoming).await.unwrap().unwrap()
}

type Control_ = FramedStream<quinn::RecvStream, quinn::SendStream>;

/// Accepts the control stream and returns it with the hello it carried.
async fn control_stream(conn: &quinn::Connection) -> (Control_, airlock_proto::AgentHello) {
    let (send, recv) = timeout(PATIENCE, conn.accept_bi()).await.unwrap().unwrap();
    let mut control = FramedStream::new(recv, send, MAX_FRAME_LEN);
    match control.recv_control(PATIENCE).await.unwrap() {
        Control::AgentHelloVersioned { version, hello } => {
            assert_eq!(version, airlock_proto::PeerVersion::current());
            (control, hello)
        }
        other => panic!("expected AgentHelloVersioned, got {other:?}"),
    }
}

async fn stop(stop_tx: watch::Sender<bool>, task: JoinHandle<Result<(), airlock_agent::Error>>) {
    stop_tx.send(true).unwrap();
    timeout(PATIENCE, task).await.expect("agent did not stop").unwrap().unwrap();
}

#[tokio::test]
async fn hello_heartbeats_a_session_and_clean_shutdown() {
    let Linked { broker, _tmp, stop_tx, task } = linked(None, fast());

    let conn = accept(&broker).await;
    let (mut control, hello) = control_stream(&conn).await;
    assert_eq!(hello.platform_type, "Linux");
    assert_eq!(hello.ip_address, "127.0.0.1");
    assert_eq!(hello.agent_version, format!("{}.0", env!("CARGO_PKG_VERSION")));
    assert!(!hello.hostname.is_empty());

    for expected in 1..=2u64 {
        match control.recv_control(PATIENCE).await.unwrap() {
            Control::Heartbeat { seq } => {
                assert_eq!(seq, expected);
                control.send_control(&Control::Heartbeat { seq }).await.unwrap();
            }
            other => panic!("expected Heartbeat, got {other:?}"),
        }
    }
    // Keep answering while the session runs.
    let echo = tokio::spawn(async move {
        while let Ok(Control::Heartbeat { seq }) = control.recv_control(PATIENCE).await {
            if control.send_control(&Control::Heartbeat { seq }).await.is_err() {
                break;
            }
        }
    });

    let (send, recv) = conn.open_bi().await.unwrap();
    let mut session = FramedStream::new(recv, send, MAX_FRAME_LEN);
    let spec = SessionSpec::Command { command: "echo hi-from-$(echo agent)".into(), run_as: None };
    session.send_control(&Control::Open { session_id: "tester-1".into(), spec }).await.unwrap();
    assert_eq!(session.recv_control(PATIENCE).await.unwrap(), Control::Started);
    let out = timeout(PATIENCE, session.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!((out.kind, out.seq, &out.payload[..]), (FrameKind::Data, 0, &b"hi-from-agent\n"[..]));
    assert_eq!(session.recv_control(PATIENCE).await.unwrap(), Control::Exit { code: 0 });
    assert!(timeout(PATIENCE, session.recv()).await.unwrap().unwrap().is_none());

    stop(stop_tx, task).await;
    match timeout(PATIENCE, conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(close.error_code, 0u32.into()),
        other => panic!("expected an application close, got {other:?}"),
    }
    echo.abort();
}

#[tokio::test]
async fn a_forward_over_quic_keeps_half_close() {
    let Linked { broker, _tmp, stop_tx, task } = linked(None, fast());
    let conn = accept(&broker).await;
    let (mut control, _) = control_stream(&conn).await;
    let beats = tokio::spawn(async move {
        while let Ok(Control::Heartbeat { seq }) = control.recv_control(PATIENCE).await {
            if control.send_control(&Control::Heartbeat { seq }).await.is_err() {
                break;
            }
        }
    });
    // Answers only after EOF, so the answer shows that finishing our QUIC stream reached
    // the server as a TCP half-close and that the other direction still worked.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        tcp.read_to_end(&mut all).await.unwrap();
        tcp.write_all(format!("got {}", all.len()).as_bytes()).await.unwrap();
    });

    let (send, recv) = conn.open_bi().await.unwrap();
    let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
    let dial = Control::Dial { session_id: "tester-1".into(), host: "127.0.0.1".into(), port };
    stream.send_control(&dial).await.unwrap();
    assert_eq!(stream.recv_control(PATIENCE).await.unwrap(), Control::Started);
    stream.send(Frame::data(0, Bytes::from_static(b"12345"))).await.unwrap();
    stream.writer.close().await.unwrap();
    let answer = timeout(PATIENCE, stream.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!((answer.kind, answer.seq, &answer.payload[..]), (FrameKind::Data, 0, &b"got 5"[..]));
    assert!(timeout(PATIENCE, stream.recv()).await.unwrap().unwrap().is_none());
    timeout(PATIENCE, server).await.unwrap().unwrap();
    stop(stop_tx, task).await;
    beats.abort();
}

#[tokio::test]
async fn unanswered_heartbeats_drop_the_link_and_redial() {
    let config = LinkConfig { heartbeat_timeout: Duration::from_millis(400), ..fast() };
    let Linked { broker, _tmp, stop_tx, task } = linked(None, config);

    let first = accept(&broker).await;
    let (_control, _) = control_stream(&first).await;
    // Never answer: the agent must give up on this link and dial again.
    let second = accept(&broker).await;
    let (_control2, hello) = control_stream(&second).await;
    assert_eq!(hello.platform_type, "Linux");
    match timeout(PATIENCE, first.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(close) => assert_ne!(close.error_code, 0u32.into()),
        other => panic!("expected an application close, got {other:?}"),
    }
    stop(stop_tx, task).await;
}

#[tokio::test]
async fn broker_refusal_is_retried() {
    let Linked { broker, _tmp, stop_tx, task } = linked(None, fast());

    let first = accept(&broker).await;
    let _ = control_stream(&first).await;
    first.close(7u32.into(), b"unknown instance");
    let second = accept(&broker).await;
    let _ = control_stream(&second).await;
    stop(stop_tx, task).await;
}

#[tokio::test]
async fn unknown_certificate_keeps_retrying_and_stops_on_request() {
    // The broker only trusts agent certificates from another CA.
    let Linked { broker, _tmp, stop_tx, task } = linked(Some(&TestCa::new().pem), fast());

    for _ in 0..3 {
        let incoming = timeout(PATIENCE, broker.accept()).await.unwrap().unwrap();
        assert!(timeout(PATIENCE, incoming).await.unwrap().is_err(), "the handshake must fail");
    }
    stop(stop_tx, task).await;
}

#[tokio::test]
async fn run_without_registration_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_stop_tx, task) = start_agent(tmp.path().to_owned(), fast());
    let err = timeout(PATIENCE, task).await.unwrap().unwrap().unwrap_err();
    assert!(err.to_string().contains("register"), "{err}");
}
