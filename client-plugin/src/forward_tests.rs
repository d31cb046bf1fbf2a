//! Tests of `forward`: one connection over an in-memory stream and a real local TCP pair,
//! then whole port sessions against a fake broker over real QUIC.

use super::*;
use airlock_proto::control::{CloseReason, Control};
use airlock_proto::frame::{Frame, FrameKind};
use airlock_proto::CloseReason as Reason;
use bytes::Bytes;
use futures_util::SinkExt;
use std::io::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::parse_endpoint;
use crate::link::Link;
use crate::session::{client_hello, handshake};
use crate::testutil::{echo_port_stream, fake_broker, pair, pattern, Framed};

const WAIT: Duration = Duration::from_secs(10);

/// A connected local TCP pair: (the local application's end, the end we accepted).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// Reads Data frames until the end of the stream; checks their numbering.
async fn read_data(broker: &mut Framed) -> Vec<u8> {
    let mut got = Vec::new();
    let mut seq = 0;
    while let Some(f) = tokio::time::timeout(WAIT, broker.recv()).await.unwrap().unwrap() {
        assert_eq!((f.kind, f.seq), (FrameKind::Data, seq));
        got.extend_from_slice(&f.payload);
        seq += 1;
    }
    got
}

async fn send_data(broker: &mut Framed, data: &[u8]) {
    for (i, chunk) in data.chunks(40_000).enumerate() {
        broker.send(Frame::data(i as u64, Bytes::copy_from_slice(chunk))).await.unwrap();
    }
}

/// Reads until the end; `Err` when it ended in a reset instead of a clean EOF.
async fn read_until_end(tcp: &mut TcpStream) -> Result<Vec<u8>, ErrorKind> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.unwrap() {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.kind()),
        }
    }
}

async fn expect_connect(broker: &mut Framed, target: u16) {
    assert_eq!(broker.recv_control(WAIT).await.unwrap(), Control::Connect { target });
}

#[tokio::test]
async fn local_half_close_then_far_side_still_sends() {
    let (mut app, accepted) = tcp_pair().await;
    let (quic, mut broker) = pair();
    let carrying = tokio::spawn(carry(accepted, quic, 3, WAIT));
    let up = pattern(300_000, 1);
    let down = pattern(500_000, 2);
    let far = {
        let (up, down) = (up.clone(), down.clone());
        tokio::spawn(async move {
            expect_connect(&mut broker, 3).await;
            broker.send_control(&Control::Started).await.unwrap();
            // Everything the application sent, then the end of the stream for its half-close.
            assert_eq!(read_data(&mut broker).await, up);
            // Only now answer: the other direction must still be open.
            send_data(&mut broker, &down).await;
            broker.writer.close().await.unwrap();
        })
    };
    app.write_all(&up).await.unwrap();
    app.shutdown().await.unwrap();
    assert_eq!(read_until_end(&mut app).await.unwrap(), down);
    far.await.unwrap();
    assert_eq!(carrying.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn far_end_of_stream_then_application_still_sends() {
    let (mut app, accepted) = tcp_pair().await;
    let (quic, mut broker) = pair();
    let carrying = tokio::spawn(carry(accepted, quic, 0, WAIT));
    expect_connect(&mut broker, 0).await;
    broker.send_control(&Control::Started).await.unwrap();
    send_data(&mut broker, b"bye").await;
    broker.writer.close().await.unwrap();
    // The application sees EOF while its own write half is still open …
    assert_eq!(read_until_end(&mut app).await.unwrap(), b"bye");
    // … and what it writes afterwards still arrives.
    let late = pattern(200_000, 3);
    let writer = tokio::spawn(async move {
        app.write_all(&late).await.unwrap();
        app.shutdown().await.unwrap();
        (app, late)
    });
    let got = read_data(&mut broker).await;
    let (_app, late) = writer.await.unwrap();
    assert_eq!(got, late);
    assert_eq!(carrying.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn connect_failed_resets_only_that_connection() {
    let (mut refused_app, refused_tcp) = tcp_pair().await;
    let (mut good_app, good_tcp) = tcp_pair().await;
    let (refused_quic, mut refused_broker) = pair();
    let (good_quic, mut good_broker) = pair();
    let refused = tokio::spawn(carry(refused_tcp, refused_quic, 1, WAIT));
    let good = tokio::spawn(carry(good_tcp, good_quic, 0, WAIT));

    expect_connect(&mut refused_broker, 1).await;
    let close =
        Control::Close { reason: CloseReason::ConnectFailed, message: "connect to db:5432: refused".into() };
    refused_broker.send_control(&close).await.unwrap();
    let failure = refused.await.unwrap().unwrap_err();
    assert_eq!(failure, Failure::Connect { target: 1, message: "connect to db:5432: refused".into() });
    assert_eq!(failure.to_string(), "Connection to target 1 failed: connect to db:5432: refused");
    assert_eq!(read_until_end(&mut refused_app).await, Err(ErrorKind::ConnectionReset));

    // The other connection is unaffected.
    expect_connect(&mut good_broker, 0).await;
    good_broker.send_control(&Control::Started).await.unwrap();
    good_app.write_all(b"still here").await.unwrap();
    good_app.shutdown().await.unwrap();
    assert_eq!(read_data(&mut good_broker).await, b"still here");
    send_data(&mut good_broker, b"yes").await;
    good_broker.writer.close().await.unwrap();
    assert_eq!(read_until_end(&mut good_app).await.unwrap(), b"yes");
    assert_eq!(good.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn no_answer_in_time_resets() {
    let (mut app, accepted) = tcp_pair().await;
    let (quic, mut broker) = pair();
    let failure = carry(accepted, quic, 0, Duration::from_millis(50)).await.unwrap_err();
    assert!(
        matches!(&failure, Failure::Connect { message, .. } if message.starts_with("no answer")),
        "{failure}"
    );
    assert_eq!(read_until_end(&mut app).await, Err(ErrorKind::ConnectionReset));
    expect_connect(&mut broker, 0).await;
}

#[tokio::test]
async fn close_mid_stream_resets_the_application() {
    let (mut app, accepted) = tcp_pair().await;
    let (quic, mut broker) = pair();
    let carrying = tokio::spawn(carry(accepted, quic, 0, WAIT));
    expect_connect(&mut broker, 0).await;
    broker.send_control(&Control::Started).await.unwrap();
    send_data(&mut broker, b"partial").await;
    let close = Control::Close { reason: CloseReason::ConnectFailed, message: "far side reset".into() };
    broker.send_control(&close).await.unwrap();
    let failure = carrying.await.unwrap().unwrap_err();
    assert_eq!(failure.to_string(), "Connection to target 0 aborted: far side reset");
    // A cut-off transfer must not look complete to the application.
    assert_eq!(read_until_end(&mut app).await, Err(ErrorKind::ConnectionReset));
    // We finished our side without echoing a Close to the one who closed.
    assert!(broker.recv().await.unwrap().is_none());
}

#[tokio::test]
async fn application_reset_is_reported_to_the_far_side() {
    let (app, accepted) = tcp_pair().await;
    let (quic, mut broker) = pair();
    let carrying = tokio::spawn(carry(accepted, quic, 0, WAIT));
    expect_connect(&mut broker, 0).await;
    broker.send_control(&Control::Started).await.unwrap();
    reset(app);
    match broker.recv_control(WAIT).await.unwrap() {
        Control::Close { reason: CloseReason::ConnectFailed, message } => {
            assert!(message.starts_with("local side: reading"), "{message}")
        }
        other => panic!("expected Close, got {other:?}"),
    }
    assert!(broker.recv().await.unwrap().is_none(), "then the stream is finished");
    assert!(matches!(carrying.await.unwrap(), Err(Failure::Relay { fault: Fault::Local(_), .. })));
}

#[test]
fn session_ends() {
    let closed = |reason, message: &str| End::Closed { reason, message: message.into() };
    assert_eq!(
        session_end(&closed(Reason::Terminated, "terminated by alice"), "s-1"),
        (0, Some("\nSession s-1 ended: terminated by alice".into()))
    );
    assert_eq!(session_end(&End::StreamEnded, "s").0, 0);
    assert_eq!(
        session_end(&closed(Reason::AgentLost, ""), "s"),
        (255, Some("\nSession s ended: AgentLost".into()))
    );
    assert_eq!(session_end(&End::Failed("timed out".into()), "s").0, 255);
}

/// A fake broker for a whole port session: `Ready`, then every further stream answered by
/// [`echo_port_stream`] (target 1 refused) until `terminate` fires, then `Close{Terminated}`.
/// Returns what the client did with the session stream: `true` if it finished it.
async fn serve_session(server: quinn::Endpoint, terminate: tokio::sync::oneshot::Receiver<()>) -> bool {
    let conn = server.accept().await.unwrap().await.unwrap();
    let (send, recv) = conn.accept_bi().await.unwrap();
    let mut session = FramedStream::new(recv, send, MAX_FRAME_LEN);
    assert!(matches!(session.recv_control(WAIT).await.unwrap(), Control::ClientHelloVersioned { .. }));
    session.send_control(&Control::Ready { session_id: "alice-1".into() }).await.unwrap();
    tokio::pin!(terminate);
    loop {
        tokio::select! {
            bi = conn.accept_bi() => match bi {
                Ok((s, r)) => { tokio::spawn(async move { echo_port_stream(s, r, &[1]).await }); }
                Err(_) => return false,
            },
            // The client finishing the session stream ends the session.
            frame = session.recv() => return matches!(frame, Ok(None)),
            _ = &mut terminate => break,
        }
    }
    let close = Control::Close { reason: CloseReason::Terminated, message: "terminated by alice".into() };
    session.send_control(&close).await.unwrap();
    session.writer.close().await.unwrap();
    let _ = conn.closed().await;
    false
}

async fn ready_session(
    addr: std::net::SocketAddr,
    ca: &str,
) -> (Link, FramedStream<quinn::RecvStream, quinn::SendStream>) {
    let target = parse_endpoint(&format!("http://127.0.0.1:{}", addr.port())).unwrap();
    let link = Link::connect(&target, ca.as_bytes(), None).await.unwrap();
    let (send, recv) = link.open_stream().await.unwrap();
    let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
    handshake(&mut stream, client_hello("tok", None, "xterm".into()), "alice-1").await.unwrap();
    (link, stream)
}

async fn round_trip(port: u16, data: Vec<u8>) {
    let mut app = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut r, mut w) = app.split();
    let ((), got) = tokio::join!(
        async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        },
        async {
            let mut got = Vec::new();
            tokio::time::timeout(WAIT, r.read_to_end(&mut got)).await.unwrap().unwrap();
            got
        }
    );
    assert!(got == data, "echo differs: {} bytes back for {}", got.len(), data.len());
}

#[tokio::test]
async fn port_session_over_real_quic() {
    let broker = fake_broker(&["127.0.0.1"]);
    let (terminate, terminated) = tokio::sync::oneshot::channel();
    let served = tokio::spawn(serve_session(broker.endpoint.clone(), terminated));
    let (link, stream) = ready_session(broker.addr, &broker.ca_pem).await;
    let two = [
        PortTarget { local_port: 0, host: None, port: Some(80) },
        PortTarget { local_port: 0, host: None, port: Some(81) },
    ];
    let listeners = bind(&two).await.unwrap();
    let ports: Vec<u16> = listeners.iter().map(|l| l.port).collect();
    let (notes, mut printed) = mpsc::channel(64);
    let running =
        tokio::spawn(run(link.opener(), stream, "alice-1", listeners, notes, std::future::pending::<()>()));

    let banner = format!(
        "\nStarting session with SessionId: alice-1\nPort {} opened for sessionId alice-1.\n\
         Port {} opened for sessionId alice-1.\nWaiting for connections...",
        ports[0], ports[1]
    );
    assert_eq!(printed.recv().await.unwrap(), Note::Out(banner));

    // Many connections at once, each on its own stream, each byte-identical.
    let many: Vec<_> =
        (0..24).map(|i| tokio::spawn(round_trip(ports[0], pattern(100_000 + i * 997, i as u8)))).collect();
    for conn in many {
        conn.await.unwrap();
    }
    // A refused target resets that connection only and says so on stderr.
    let mut refused = TcpStream::connect(("127.0.0.1", ports[1])).await.unwrap();
    assert_eq!(read_until_end(&mut refused).await, Err(ErrorKind::ConnectionReset));
    assert_eq!(
        printed.recv().await.unwrap(),
        Note::Err("Connection to target 1 failed: target 1 is not allowed".into())
    );
    round_trip(ports[0], pattern(1 << 20, 99)).await;

    terminate.send(()).unwrap();
    let (code, message) = tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
    assert_eq!((code, message.as_deref()), (0, Some("\nSession alice-1 ended: terminated by alice")));
    // No longer listening.
    assert!(TcpStream::connect(("127.0.0.1", ports[0])).await.is_err());
    link.close("done").await;
    assert!(!served.await.unwrap());
}

#[tokio::test]
async fn stop_finishes_the_session_stream() {
    let broker = fake_broker(&["127.0.0.1"]);
    let (_terminate, terminated) = tokio::sync::oneshot::channel();
    let served = tokio::spawn(serve_session(broker.endpoint.clone(), terminated));
    let (link, stream) = ready_session(broker.addr, &broker.ca_pem).await;
    let listeners = bind(&[PortTarget { local_port: 0, host: None, port: None }]).await.unwrap();
    let (notes, mut printed) = mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let _ = stop_rx.await;
    };
    let running = tokio::spawn(run(link.opener(), stream, "alice-1", listeners, notes, stop));
    assert!(
        matches!(printed.recv().await.unwrap(), Note::Out(b) if b.ends_with("Waiting for connections..."))
    );
    stop_tx.send(()).unwrap();
    assert_eq!(tokio::time::timeout(WAIT, running).await.unwrap().unwrap(), (0, None));
    assert_eq!(
        printed.recv().await.unwrap(),
        Note::Out("\n\nExiting session with sessionId: alice-1.\n".into())
    );
    assert!(
        tokio::time::timeout(WAIT, served).await.unwrap().unwrap(),
        "the broker saw the session stream finish"
    );
    link.close("done").await;
}

#[tokio::test]
async fn port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = bind(&[PortTarget { local_port: port, host: None, port: None }]).await.unwrap_err();
    assert!(err.to_string().starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")), "{err}");
}
