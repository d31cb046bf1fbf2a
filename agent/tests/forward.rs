//! Port forwarding over an in-memory pipe, playing the broker's side of wire contract §3
//! against real TCP servers on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use airlock_agent::allow::AllowList;
use airlock_agent::session::{
    serve, ForwardConfig, ForwardEnd, ForwardReport, LiveSessions, SessionLimits, StreamReport,
};
use airlock_agent::Error;
use airlock_proto::{CloseReason, Control, Frame, FrameCodec, FrameKind, FramedStream, MAX_FRAME_LEN};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::codec::FramedRead;

/// Upper bound for anything a test waits for; a healthy run takes a fraction of it.
const PATIENCE: Duration = Duration::from_secs(30);
const SESSION: &str = "tester-0123456789abcdef0";

type Stream = FramedStream<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;
type Reader = FramedRead<ReadHalf<DuplexStream>, FrameCodec>;
type Task = JoinHandle<Result<StreamReport, Error>>;

fn start(config: ForwardConfig) -> (Stream, Task) {
    let (ours, agents) = tokio::io::duplex(64 * 1024);
    let (r, w) = tokio::io::split(agents);
    let task = tokio::spawn(async move {
        serve(r, w, &SessionLimits::default(), &config, &LiveSessions::default()).await
    });
    let (r, w) = tokio::io::split(ours);
    (FramedStream::new(r, w, MAX_FRAME_LEN), task)
}

fn allowing(patterns: &[&str]) -> ForwardConfig {
    ForwardConfig { allow: Arc::new(AllowList::parse(patterns).unwrap()), ..ForwardConfig::default() }
}

/// Sends `Dial` and returns the agent's answer.
async fn dial(stream: &mut Stream, host: &str, port: u16) -> Control {
    let msg = Control::Dial { session_id: SESSION.into(), host: host.into(), port };
    stream.send_control(&msg).await.unwrap();
    next(&mut stream.reader).await.to_control().unwrap()
}

/// The next frame; panics on end of stream or when nothing comes within PATIENCE.
async fn next(reader: &mut Reader) -> Frame {
    match timeout(PATIENCE, reader.next()).await {
        Ok(Some(Ok(frame))) => frame,
        other => panic!("expected a frame, got {other:?}"),
    }
}

async fn expect_end(reader: &mut Reader) {
    let end = timeout(PATIENCE, reader.next()).await.unwrap();
    assert!(end.is_none(), "expected the stream to finish, got {end:?}");
}

/// Reads Data frames (checking their numbering and size) until the agent finishes the stream.
async fn read_to_end(reader: &mut Reader) -> Vec<u8> {
    let mut got = Vec::new();
    let mut seq = 0;
    loop {
        let Some(frame) = timeout(PATIENCE, reader.next()).await.unwrap() else { return got };
        let frame = frame.unwrap();
        assert_eq!(frame.kind, FrameKind::Data, "{:?}", frame.to_control());
        assert_eq!(frame.seq, seq, "data frames are numbered from 0");
        assert!(frame.payload.len() <= 64 * 1024, "frame of {}", frame.payload.len());
        seq += 1;
        got.extend_from_slice(&frame.payload);
    }
}

async fn report(task: Task) -> ForwardReport {
    match timeout(PATIENCE, task).await.unwrap().unwrap().unwrap() {
        StreamReport::Forward(report) => report,
        other => panic!("expected a forward, got {other:?}"),
    }
}

/// A TCP server on 127.0.0.1 that runs `handle` on its first connection; returns the port
/// and the handler's task.
async fn server<F, Fut, T>(handle: F) -> (u16, JoinHandle<T>)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        handle(tcp).await
    });
    (port, task)
}

/// Echoes until EOF, then closes.
async fn echo(mut tcp: TcpStream) {
    let (mut r, mut w) = tcp.split();
    tokio::io::copy(&mut r, &mut w).await.unwrap();
    w.shutdown().await.unwrap();
}

/// Reads to EOF, only then answers with the SHA-256 of what it read, and closes.
async fn digest_after_eof(mut tcp: TcpStream) -> usize {
    let mut all = Vec::new();
    tcp.read_to_end(&mut all).await.unwrap();
    tcp.write_all(&Sha256::digest(&all)).await.unwrap();
    tcp.shutdown().await.unwrap();
    all.len()
}

/// A port on 127.0.0.1 where nothing listens.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_mebibyte_round_trips_through_an_echo_server() {
    let (port, server) = server(echo).await;
    let (mut stream, task) = start(ForwardConfig::default());
    assert_eq!(dial(&mut stream, "127.0.0.1", port).await, Control::Started);

    let mut data = vec![0u8; 1 << 20];
    let mut rng = fastrand::Rng::with_seed(7);
    rng.fill(&mut data);
    let (mut reader, mut writer) = stream.split();
    let sent = data.clone();
    // The echo only drains as fast as we read, so sending runs alongside reading.
    let sender = tokio::spawn(async move {
        let (mut at, mut seq) = (0, 0);
        while at < sent.len() {
            let len = rng.usize(1..=64 * 1024).min(sent.len() - at);
            writer.send(Frame::data(seq, Bytes::copy_from_slice(&sent[at..at + len]))).await.unwrap();
            (at, seq) = (at + len, seq + 1);
        }
        // Our end of stream becomes the echo server's EOF, which ends its side too.
        writer.close().await.unwrap();
    });
    let got = read_to_end(&mut reader).await;
    assert!(got == data, "echo differs: {} bytes back of {}", got.len(), data.len());
    timeout(PATIENCE, sender).await.unwrap().unwrap();
    timeout(PATIENCE, server).await.unwrap().unwrap();
    let report = report(task).await;
    assert_eq!(report.end, ForwardEnd::Finished);
    assert_eq!((report.to_broker, report.from_broker), (1 << 20, 1 << 20));
    assert_eq!(report.target, format!("127.0.0.1:{port}"));
}

#[tokio::test]
async fn half_close_reaches_the_server_and_its_answer_still_comes_back() {
    let (port, server) = server(digest_after_eof).await;
    let (mut stream, task) = start(ForwardConfig::default());
    assert_eq!(dial(&mut stream, "127.0.0.1", port).await, Control::Started);
    let payload = b"the quick brown fox".repeat(1000);
    for (seq, chunk) in payload.chunks(5000).enumerate() {
        stream.send(Frame::data(seq as u64, Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    // The server answers only after EOF, so its answer proves the agent shut down the TCP
    // write half, and that the other direction kept flowing after our end of stream.
    stream.writer.close().await.unwrap();
    let answer = read_to_end(&mut stream.reader).await;
    assert_eq!(answer, Sha256::digest(&payload).to_vec());
    assert_eq!(timeout(PATIENCE, server).await.unwrap().unwrap(), payload.len());
    assert_eq!(report(task).await.end, ForwardEnd::Finished);
}

#[tokio::test]
async fn the_server_half_closing_first_finishes_our_stream_while_we_keep_sending() {
    // Says hello, closes its write half, then reads what comes until EOF.
    let (port, server) = server(|mut tcp: TcpStream| async move {
        tcp.write_all(b"hello\n").await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut all = Vec::new();
        tcp.read_to_end(&mut all).await.unwrap();
        all
    })
    .await;
    let (mut stream, task) = start(ForwardConfig::default());
    assert_eq!(dial(&mut stream, "127.0.0.1", port).await, Control::Started);
    assert_eq!(read_to_end(&mut stream.reader).await, b"hello\n");
    // Our direction is still open after the agent finished its side.
    stream.send(Frame::data(0, Bytes::from_static(b"after"))).await.unwrap();
    stream.send(Frame::data(1, Bytes::from_static(b"wards"))).await.unwrap();
    stream.writer.close().await.unwrap();
    assert_eq!(timeout(PATIENCE, server).await.unwrap().unwrap(), b"afterwards");
    let report = report(task).await;
    assert_eq!((report.end, report.to_broker, report.from_broker), (ForwardEnd::Finished, 6, 10));
}

#[tokio::test]
async fn a_banner_is_the_first_data_after_started() {
    let (port, _server) = server(|mut tcp: TcpStream| async move {
        tcp.write_all(b"SSH-2.0-Test\r\n").await.unwrap();
        // Hold the connection until the agent closes it.
        let _ = tcp.read_to_end(&mut Vec::new()).await;
    })
    .await;
    let (mut stream, _task) = start(ForwardConfig::default());
    // By name: localhost may resolve to ::1 first, where nothing listens.
    assert_eq!(dial(&mut stream, "localhost", port).await, Control::Started);
    let frame = next(&mut stream.reader).await;
    assert_eq!((frame.kind, frame.seq, &frame.payload[..]), (FrameKind::Data, 0, &b"SSH-2.0-Test\r\n"[..]));
}

#[tokio::test]
async fn a_closed_port_is_connect_failed() {
    let port = closed_port().await;
    let (mut stream, task) = start(ForwardConfig::default());
    match dial(&mut stream, "127.0.0.1", port).await {
        Control::Close { reason: CloseReason::ConnectFailed, message } => {
            assert!(message.contains("refused"), "{message}");
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        }
        other => panic!("expected Close{{ConnectFailed}}, got {other:?}"),
    }
    expect_end(&mut stream.reader).await;
    assert!(matches!(report(task).await.end, ForwardEnd::ConnectFailed(_)));
}

#[tokio::test]
async fn an_unresolvable_name_is_connect_failed() {
    let (mut stream, _task) = start(ForwardConfig::default());
    // .invalid never resolves (RFC 6761).
    match dial(&mut stream, "no-such-host.invalid", 22).await {
        Control::Close { reason: CloseReason::ConnectFailed, message } => {
            assert!(message.contains("no-such-host.invalid"), "{message}")
        }
        other => panic!("expected Close{{ConnectFailed}}, got {other:?}"),
    }
    expect_end(&mut stream.reader).await;
    for host in [String::new(), "a".repeat(300)] {
        let (mut stream, _task) = start(ForwardConfig::default());
        match dial(&mut stream, &host, 22).await {
            Control::Close { reason: CloseReason::ConnectFailed, message } => {
                assert!(message.contains("invalid host name"), "{message}")
            }
            other => panic!("expected Close{{ConnectFailed}}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_target_outside_the_allow_list_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (mut stream, task) = start(allowing(&["db.internal:5432", "127.0.0.1:1-1000"]));
    match dial(&mut stream, "127.0.0.1", port).await {
        Control::Close { reason: CloseReason::Refused, message } => {
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
            assert!(message.contains("allow-list"), "{message}");
        }
        other => panic!("expected Close{{Refused}}, got {other:?}"),
    }
    expect_end(&mut stream.reader).await;
    assert!(matches!(report(task).await.end, ForwardEnd::Refused(_)));
}

#[tokio::test]
async fn a_target_in_the_allow_list_connects() {
    let (port, server) = server(echo).await;
    let (mut stream, _task) = start(allowing(&["db.internal:5432", &format!("127.0.0.*:{port}")]));
    assert_eq!(dial(&mut stream, "127.0.0.1", port).await, Control::Started);
    stream.send(Frame::data(0, Bytes::from_static(b"ping"))).await.unwrap();
    stream.writer.close().await.unwrap();
    assert_eq!(read_to_end(&mut stream.reader).await, b"ping");
    timeout(PATIENCE, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn metadata_and_link_local_are_refused_by_default() {
    for host in ["169.254.169.254", "fe80::1", "[fe80::1]", "fd00:ec2::254"] {
        let (mut stream, _task) = start(ForwardConfig::default());
        match dial(&mut stream, host, 80).await {
            Control::Close { reason: CloseReason::Refused, message } => {
                assert!(message.contains("link-local"), "{host}: {message}")
            }
            other => panic!("{host}: expected Close{{Refused}}, got {other:?}"),
        }
        expect_end(&mut stream.reader).await;
    }
}

#[tokio::test]
async fn a_sequence_gap_is_a_protocol_error() {
    let (port, _server) = server(echo).await;
    let (mut stream, task) = start(ForwardConfig::default());
    assert_eq!(dial(&mut stream, "127.0.0.1", port).await, Control::Started);
    stream.send(Frame::data(0, Bytes::from_static(b"a"))).await.unwrap();
    stream.send(Frame::data(2, Bytes::from_static(b"c"))).await.unwrap();
    // The echo of "a" may or may not come before the Close.
    let close = loop {
        let frame = next(&mut stream.reader).await;
        if frame.kind == FrameKind::Control {
            break frame.to_control().unwrap();
        }
    };
    assert!(matches!(close, Control::Close { reason: CloseReason::ProtocolError, .. }), "{close:?}");
    expect_end(&mut stream.reader).await;
    assert!(matches!(report(task).await.end, ForwardEnd::Broken(_)));
}

#[tokio::test]
async fn close_from_the_broker_drops_the_connection() {
    let (port, server) = server(|mut tcp: TcpStream| async move {
        let mut all = Vec::new();
        // Ends, by EOF or reset, only when the agent lets go of the connection.
        let _ = tcp.read_to_end(&mut all).await;
        all
    })
    .await;
    let (mut stream, task) = start(ForwardConfig::default());
    assert_eq!(dial(&mut stream, "127.0.0.1", port).await, Control::Started);
    stream.send(Frame::data(0, Bytes::from_static(b"x"))).await.unwrap();
    let close = Control::Close { reason: CloseReason::Terminated, message: "TerminateSession".into() };
    stream.send_control(&close).await.unwrap();
    expect_end(&mut stream.reader).await;
    timeout(PATIENCE, server).await.unwrap().unwrap();
    let report = report(task).await;
    assert_eq!(
        report.end,
        ForwardEnd::Closed { reason: CloseReason::Terminated, message: "TerminateSession".into() }
    );
}

#[tokio::test]
async fn a_reset_mid_stream_is_connect_failed() {
    let (port, server) = server(|tcp: TcpStream| async move {
        tcp.set_zero_linger().unwrap();
        let mut buf = [0u8; 4];
        let mut tcp = tcp;
        tcp.read_exact(&mut buf).await.unwrap();
        // Dropping with a zero linger sends RST instead of FIN.
        drop(tcp);
    })
    .await;
    let (mut stream, task) = start(ForwardConfig::default());
    assert_eq!(dial(&mut stream, "127.0.0.1", port).await, Control::Started);
    stream.send(Frame::data(0, Bytes::from_static(b"boom"))).await.unwrap();
    timeout(PATIENCE, server).await.unwrap().unwrap();
    match next(&mut stream.reader).await.to_control().unwrap() {
        Control::Close { reason: CloseReason::ConnectFailed, message } => {
            assert!(message.contains("reset"), "{message}")
        }
        other => panic!("expected Close{{ConnectFailed}}, got {other:?}"),
    }
    expect_end(&mut stream.reader).await;
    assert!(matches!(report(task).await.end, ForwardEnd::Broken(_)));
}

#[tokio::test]
async fn losing_the_link_ends_a_half_closed_connection() {
    let (saw_eof_tx, saw_eof) = tokio::sync::oneshot::channel();
    // Never writes and never closes: once our side is finished, only the agent can end this.
    let (port, server) = server(|mut tcp: TcpStream| async move {
        let _ = tcp.read_to_end(&mut Vec::new()).await;
        let _ = saw_eof_tx.send(());
        std::future::pending::<()>().await
    })
    .await;
    let config = ForwardConfig::default();
    let link_gone = config.link_gone.clone();
    let (mut stream, task) = start(config);
    assert_eq!(dial(&mut stream, "127.0.0.1", port).await, Control::Started);
    stream.writer.close().await.unwrap();
    // Now the agent waits on a silent TCP peer, with no broker stream left to read.
    timeout(PATIENCE, saw_eof).await.unwrap().unwrap();
    link_gone.cancel();
    let report = report(task).await;
    assert!(matches!(&report.end, ForwardEnd::Broken(why) if why.contains("link")), "{report:?}");
    expect_end(&mut stream.reader).await;
    server.abort();
}

#[tokio::test]
async fn a_dial_with_a_bad_session_id_is_a_protocol_error() {
    let (mut stream, task) = start(ForwardConfig::default());
    let msg = Control::Dial { session_id: "no spaces allowed".into(), host: "localhost".into(), port: 1 };
    stream.send_control(&msg).await.unwrap();
    assert!(matches!(
        next(&mut stream.reader).await.to_control().unwrap(),
        Control::Close { reason: CloseReason::ProtocolError, .. }
    ));
    expect_end(&mut stream.reader).await;
    assert!(matches!(timeout(PATIENCE, task).await.unwrap().unwrap(), Err(Error::Protocol(_))));
}
