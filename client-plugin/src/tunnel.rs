//! One TCP connection of a port session on its own stream (wire contract §3): `Connect`,
//! the broker's answer, then `Data` both ways with each direction ending on its own.
//!
//! Generic over the byte streams so tests can run it over in-memory pipes.

use std::time::Duration;

use airlock_proto::control::{CloseReason, Control};
use airlock_proto::frame::{Frame, FrameCodec, FrameKind, ProtoError};
use airlock_proto::stream::FramedStream;
use bytes::{BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::session::SEND_TIMEOUT;

/// How long the broker and agent have to answer `Connect` (the agent dials for up to 10 s).
pub const CONNECT_ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest local read, and so the largest `Data` payload we send.
pub const CHUNK: usize = 64 << 10;
/// How long a goodbye (`Close`, end of stream) may take once a connection has failed.
pub const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `Connect{target}` and waits for `Started`. The error is the human-readable reason
/// the connection could not be made (the broker's `Close` message, a timeout, …).
pub async fn connect<R, W>(
    stream: &mut FramedStream<R, W>,
    target: u16,
    deadline: Duration,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match tokio::time::timeout(SEND_TIMEOUT, stream.send_control(&Control::Connect { target })).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot send the connect request: {e}")),
        Err(_) => return Err("the broker did not accept the connect request in time".to_owned()),
    }
    match stream.recv_control(deadline).await {
        Ok(Control::Started) => Ok(()),
        Ok(Control::Close { reason, message }) => Err(describe(reason, &message)),
        Ok(other) => Err(format!("protocol error: expected Started, got {other:?}")),
        Err(ProtoError::Timeout) => Err(format!("no answer within {} s", deadline.as_secs_f32())),
        Err(ProtoError::Closed) => Err("the broker ended the stream without an answer".to_owned()),
        Err(e) => Err(format!("protocol error: {e}")),
    }
}

/// The broker's message, or the reason's name when the message is empty.
pub fn describe(reason: CloseReason, message: &str) -> String {
    if message.is_empty() {
        format!("{reason:?}")
    } else {
        message.to_owned()
    }
}

/// Why one direction of a relay stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Reading or writing the local side failed.
    Local(String),
    /// The stream or the QUIC connection failed, or the peer broke the protocol.
    Remote(String),
    /// The peer sent `Close` in the middle of the relay.
    Closed {
        /// Why the peer closed the stream.
        reason: CloseReason,
        /// The peer's human-readable detail.
        message: String,
    },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Local(e) => write!(f, "local side: {e}"),
            Fault::Remote(e) => write!(f, "{e}"),
            Fault::Closed { reason, message } => write!(f, "{}", describe(*reason, message)),
        }
    }
}

/// Local bytes → `Data` frames numbered from 0; local end of file finishes the send stream
/// (the half-close reaches the far side) and returns.
///
/// No deadline on sends: a slow far-side reader holds us back through QUIC flow control
/// exactly as a slow TCP peer would, and the session's end cancels us.
pub async fn upstream<L, W>(local: &mut L, quic: &mut FramedWrite<W, FrameCodec>) -> Result<(), Fault>
where
    L: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut seq = 0u64;
    loop {
        buf.reserve(CHUNK);
        let read = local.read_buf(&mut (&mut buf).limit(CHUNK)).await;
        match read {
            Ok(0) => {
                return quic.close().await.map_err(|e| Fault::Remote(format!("finishing the stream: {e}")));
            }
            Ok(_) => {
                quic.send(Frame::data(seq, buf.split().freeze()))
                    .await
                    .map_err(|e| Fault::Remote(format!("sending: {e}")))?;
                seq += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fault::Local(format!("reading: {e}"))),
        }
    }
}

/// `Data` frames → local bytes (flushed per frame, so stdout output is not held back); the
/// stream's end shuts down the local write half and returns.
pub async fn downstream<R, L>(quic: &mut FramedRead<R, FrameCodec>, local: &mut L) -> Result<(), Fault>
where
    R: AsyncRead + Unpin,
    L: AsyncWrite + Unpin,
{
    let mut expected = 0u64;
    loop {
        // No deadline: a forwarded connection may be idle for hours; QUIC keep-alives and the
        // idle timeout end this read if the broker goes away.
        let frame = match quic.next().await {
            None => {
                return local.shutdown().await.map_err(|e| Fault::Local(format!("closing for writing: {e}")))
            }
            Some(Err(e)) => return Err(Fault::Remote(format!("receiving: {e}"))),
            Some(Ok(frame)) => frame,
        };
        match frame.kind {
            FrameKind::Data => {
                if frame.seq != expected {
                    tracing::debug!(got = frame.seq, expected, "data frame out of sequence");
                }
                expected = frame.seq.wrapping_add(1);
                local.write_all(&frame.payload).await.map_err(|e| Fault::Local(format!("writing: {e}")))?;
                local.flush().await.map_err(|e| Fault::Local(format!("writing: {e}")))?;
            }
            FrameKind::Control => match frame.to_control() {
                Ok(Control::Close { reason, message }) => return Err(Fault::Closed { reason, message }),
                Ok(other) => tracing::debug!(?other, "ignoring an unexpected control message"),
                Err(e) => return Err(Fault::Remote(format!("protocol error: {e}"))),
            },
            FrameKind::Stderr => tracing::debug!("ignoring a stderr frame on a port stream"),
        }
    }
}

/// After a fault: tells the far side with `Close{ConnectFailed}` (unless it was the one
/// closing) and finishes the send stream, within [`GOODBYE_TIMEOUT`].
pub async fn goodbye<W: AsyncWrite + Unpin>(quic: &mut FramedWrite<W, FrameCodec>, fault: &Fault) {
    let bye = async {
        if !matches!(fault, Fault::Closed { .. }) {
            let close = Control::Close { reason: CloseReason::ConnectFailed, message: fault.to_string() };
            quic.send(Frame::control(&close)).await?;
        }
        quic.close().await
    };
    // The stream may already be finished or broken; the goodbye is best effort.
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, bye).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use tokio::io::duplex;

    use crate::testutil::pair;

    #[tokio::test]
    async fn connect_answers() {
        let answers = [
            (Some(Control::Started), Ok(())),
            (
                Some(Control::Close { reason: CloseReason::Refused, message: "not allowed".into() }),
                Err("not allowed".to_owned()),
            ),
            (
                Some(Control::Close { reason: CloseReason::ConnectFailed, message: String::new() }),
                Err("ConnectFailed".to_owned()),
            ),
            (None, Err("the broker ended the stream without an answer".to_owned())),
        ];
        for (answer, want) in answers {
            let (mut client, mut broker) = pair();
            let b = tokio::spawn(async move {
                let got = broker.recv_control(Duration::from_secs(5)).await.unwrap();
                assert_eq!(got, Control::Connect { target: 7 });
                match answer {
                    Some(msg) => broker.send_control(&msg).await.unwrap(),
                    None => broker.writer.close().await.unwrap(),
                }
                broker
            });
            assert_eq!(connect(&mut client, 7, Duration::from_secs(5)).await, want);
            drop(b.await.unwrap());
        }
    }

    #[tokio::test]
    async fn connect_deadline() {
        let (mut client, _broker) = pair();
        let err = connect(&mut client, 0, Duration::from_millis(30)).await.unwrap_err();
        assert!(err.starts_with("no answer within"), "{err}");
    }

    #[tokio::test]
    async fn connect_data_before_started_is_an_error() {
        let (mut client, mut broker) = pair();
        broker.send(Frame::data(0, Bytes::from_static(b"x"))).await.unwrap();
        let err = connect(&mut client, 0, Duration::from_secs(5)).await.unwrap_err();
        assert!(err.starts_with("protocol error"), "{err}");
    }

    #[tokio::test]
    async fn upstream_chunks_numbers_and_finishes() {
        let (client, mut broker) = pair();
        let (_r, mut writer) = client.split();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut local, mut feed) = duplex(1 << 20);
        feed.write_all(&data).await.unwrap();
        drop(feed);
        upstream(&mut local, &mut writer).await.unwrap();
        let mut got = Vec::new();
        let mut seq = 0;
        while let Some(f) = broker.recv().await.unwrap() {
            assert_eq!((f.kind, f.seq), (FrameKind::Data, seq));
            assert!(f.payload.len() <= CHUNK);
            got.extend_from_slice(&f.payload);
            seq += 1;
        }
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn downstream_close_is_a_fault() {
        let (client, mut broker) = pair();
        let (mut reader, _w) = client.split();
        broker.send(Frame::data(0, Bytes::from_static(b"part"))).await.unwrap();
        let close = Control::Close { reason: CloseReason::ConnectFailed, message: "reset by peer".into() };
        broker.send_control(&close).await.unwrap();
        let mut out = Vec::new();
        let fault = downstream(&mut reader, &mut out).await.unwrap_err();
        assert_eq!(out, b"part");
        assert_eq!(
            fault,
            Fault::Closed { reason: CloseReason::ConnectFailed, message: "reset by peer".into() }
        );
        assert_eq!(fault.to_string(), "reset by peer");
    }

    #[tokio::test]
    async fn goodbye_sends_close_then_finishes() {
        let (client, mut broker) = pair();
        let (_r, mut writer) = client.split();
        goodbye(&mut writer, &Fault::Local("reading: connection reset".into())).await;
        let got = broker.recv_control(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            got,
            Control::Close {
                reason: CloseReason::ConnectFailed,
                message: "local side: reading: connection reset".into()
            }
        );
        assert!(broker.recv().await.unwrap().is_none(), "then the stream ends");

        let (client, mut broker) = pair();
        let (_r, mut writer) = client.split();
        goodbye(&mut writer, &Fault::Closed { reason: CloseReason::ConnectFailed, message: String::new() })
            .await;
        assert!(broker.recv().await.unwrap().is_none(), "no Close echoed back to a closer");
    }
}
