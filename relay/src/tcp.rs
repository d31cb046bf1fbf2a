//! One forwarded TCP connection: client stream ⇄ agent stream, each direction ending on its
//! own (half-close travels as the end of a QUIC stream), counted for the recording.

use airlock_proto::{Control, FrameCodec, FrameKind, ProtoError};
use airlock_recordings::Recorder;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// How a forwarded connection ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PipeOutcome {
    /// Bytes forwarded from the client to the agent.
    pub bytes_from_client: u64,
    /// Bytes forwarded from the agent to the client.
    pub bytes_from_agent: u64,
    /// Why it ended early, if it did (a peer's Close, a protocol error, or the session stopping).
    pub error: Option<String>,
}

/// Where a connection's bytes are recorded, when the session preferences ask for them.
#[derive(Clone, Copy)]
pub struct Tap<'a> {
    /// The session's recorder the connection's bytes are written to.
    pub recorder: &'a Mutex<Recorder>,
    /// The connection's number within its session.
    pub conn: u64,
}

/// One direction: frames from `from` to `to` until end of stream, then half-close `to`.
async fn one_way<R, W>(
    mut from: FramedRead<R, FrameCodec>,
    mut to: FramedWrite<W, FrameCodec>,
    side: &str,
    tap: Option<Tap<'_>>,
) -> (u64, Option<String>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut bytes = 0u64;
    let mut expect_seq = 0u64;
    let error = loop {
        let frame = match from.next().await {
            None => break None,
            Some(Err(ProtoError::Io(e))) => break Some(format!("{side} stream failed: {e}")),
            Some(Err(e)) => break Some(format!("{side}: {e}")),
            Some(Ok(f)) => f,
        };
        match frame.kind {
            FrameKind::Data => {
                if frame.seq != expect_seq {
                    break Some(format!(
                        "{side}: data frame {} out of order, expected {expect_seq}",
                        frame.seq
                    ));
                }
                expect_seq += 1;
                bytes += frame.payload.len() as u64;
                if let Some(t) = tap {
                    // Recorded before it is forwarded, like terminal output.
                    let recorded = t
                        .recorder
                        .lock()
                        .await
                        .connection_data(t.conn, side == "client", &frame.payload)
                        .await;
                    if let Err(e) = recorded {
                        break Some(format!("recording failed, connection stopped: {e}"));
                    }
                }
                if let Err(e) = to.send(frame).await {
                    break Some(format!("cannot forward {side}'s data: {e}"));
                }
            }
            FrameKind::Control => match frame.to_control() {
                Ok(Control::Close { message, .. }) => {
                    // Pass the reason on, then stop: the connection is over.
                    let _ = to.send(frame).await;
                    break Some(format!("{side} closed the connection: {message}"));
                }
                Ok(other) => break Some(format!("{side} sent an unexpected {other:?}")),
                Err(e) => break Some(format!("{side}: {e}")),
            },
            FrameKind::Stderr => break Some(format!("{side} sent a stderr frame")),
        }
    };
    // End of stream (or an error): finish our side so the other end sees the half-close.
    let _ = to.close().await;
    (bytes, error)
}

/// Relays one connection until both directions ended or `stop` is cancelled, recording its
/// bytes into `tap` if given.
pub async fn pipe<CR, CW, AR, AW>(
    client: (FramedRead<CR, FrameCodec>, FramedWrite<CW, FrameCodec>),
    agent: (FramedRead<AR, FrameCodec>, FramedWrite<AW, FrameCodec>),
    stop: CancellationToken,
    tap: Option<Tap<'_>>,
) -> PipeOutcome
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    AR: AsyncRead + Unpin,
    AW: AsyncWrite + Unpin,
{
    let (c_read, c_write) = client;
    let (a_read, a_write) = agent;
    let both = async {
        tokio::join!(one_way(c_read, a_write, "client", tap), one_way(a_read, c_write, "agent", tap))
    };
    tokio::select! {
        ((up, e1), (down, e2)) = both => PipeOutcome { bytes_from_client: up, bytes_from_agent: down, error: e1.or(e2) },
        _ = stop.cancelled() => PipeOutcome { error: Some("the session ended".into()), ..Default::default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_proto::{CloseReason, Frame, FramedStream};
    use bytes::Bytes;
    use std::time::Duration;
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

    type Side = FramedStream<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

    fn pair() -> (Side, Side) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        (FramedStream::new(ar, aw, 1 << 20), FramedStream::new(br, bw, 1 << 20))
    }

    async fn recv(s: &mut Side) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), s.recv()).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn half_close_each_way_keeps_the_other_direction() {
        let (mut client, relay_client) = pair();
        let (mut agent, relay_agent) = pair();
        let task =
            tokio::spawn(pipe(relay_client.split(), relay_agent.split(), CancellationToken::new(), None));
        client.send(Frame::data(0, Bytes::from_static(b"GET /"))).await.unwrap();
        let (c_read, mut c_write) = client.split();
        c_write.close().await.unwrap(); // the client half-closes
        assert_eq!(&recv(&mut agent).await.unwrap().payload[..], b"GET /");
        assert!(recv(&mut agent).await.is_none(), "the agent sees the half-close");
        // The agent still answers, then closes its side.
        agent.send(Frame::data(0, Bytes::from_static(b"200 OK"))).await.unwrap();
        agent.send(Frame::data(1, Bytes::from_static(b" body"))).await.unwrap();
        let (_a_read, mut a_write) = agent.split();
        a_write.close().await.unwrap();
        let mut client = FramedStream { reader: c_read, writer: c_write };
        assert_eq!(&recv(&mut client).await.unwrap().payload[..], b"200 OK");
        assert_eq!(&recv(&mut client).await.unwrap().payload[..], b" body");
        assert!(recv(&mut client).await.is_none());
        let outcome = task.await.unwrap();
        assert_eq!(outcome, PipeOutcome { bytes_from_client: 5, bytes_from_agent: 11, error: None });
    }

    #[tokio::test]
    async fn agent_close_is_passed_on() {
        let (mut client, relay_client) = pair();
        let (mut agent, relay_agent) = pair();
        let task =
            tokio::spawn(pipe(relay_client.split(), relay_agent.split(), CancellationToken::new(), None));
        agent
            .send_control(&Control::Close { reason: CloseReason::ConnectFailed, message: "reset".into() })
            .await
            .unwrap();
        drop(agent);
        let got = recv(&mut client).await.unwrap().to_control().unwrap();
        assert!(matches!(got, Control::Close { reason: CloseReason::ConnectFailed, .. }));
        drop(client);
        let outcome = task.await.unwrap();
        assert!(outcome.error.unwrap().contains("reset"));
    }

    #[tokio::test]
    async fn out_of_order_data_stops_the_connection() {
        let (mut client, relay_client) = pair();
        let (agent, relay_agent) = pair();
        let task =
            tokio::spawn(pipe(relay_client.split(), relay_agent.split(), CancellationToken::new(), None));
        client.send(Frame::data(1, Bytes::from_static(b"x"))).await.unwrap();
        drop(client);
        drop(agent);
        assert!(task.await.unwrap().error.unwrap().contains("out of order"));
    }

    #[tokio::test]
    async fn stop_ends_a_quiet_connection() {
        let (_client, relay_client) = pair();
        let (_agent, relay_agent) = pair();
        let stop = CancellationToken::new();
        let task = tokio::spawn(pipe(relay_client.split(), relay_agent.split(), stop.clone(), None));
        stop.cancel();
        assert_eq!(task.await.unwrap().error.as_deref(), Some("the session ended"));
    }

    #[tokio::test]
    async fn a_tap_records_each_direction_before_forwarding() {
        use airlock_recordings::{EndReason, RecordingMeta, Spool};
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let (spool, _no_shipper) = Spool::open(dir.path(), 1 << 30).unwrap();
        let meta = RecordingMeta {
            session_id: "port-1".into(),
            target: "mi-0123456789abcdef0".into(),
            owner: "admin".into(),
            document: "AWS-StartPortForwardingSession".into(),
            width: 80,
            height: 24,
            term: String::new(),
        };
        let recorder = Mutex::new(Recorder::create(&spool, meta, &[]).await.unwrap());
        let (mut client, relay_client) = pair();
        let (mut agent, relay_agent) = pair();
        let tap = Some(Tap { recorder: &recorder, conn: 7 });
        let relay = pipe(relay_client.split(), relay_agent.split(), CancellationToken::new(), tap);
        let peers = async {
            client.send(Frame::data(0, Bytes::from_static(b"\x00\xffquery"))).await.unwrap();
            assert_eq!(&recv(&mut agent).await.unwrap().payload[..], b"\x00\xffquery");
            agent.send(Frame::data(0, Bytes::from_static(b"rows"))).await.unwrap();
            assert_eq!(&recv(&mut client).await.unwrap().payload[..], b"rows");
            drop((client, agent));
        };
        let (outcome, ()) = tokio::join!(relay, peers);
        assert_eq!((outcome.bytes_from_client, outcome.bytes_from_agent), (7, 4));
        recorder.into_inner().finish(EndReason::ClientLost, None).await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("port-1.cast")).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        assert!(text.contains(&format!("conn 7 > {}", b64.encode(b"\x00\xffquery"))), "{text}");
        assert!(text.contains(&format!("conn 7 < {}", b64.encode(b"rows"))), "{text}");
    }
}
