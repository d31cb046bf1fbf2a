//! The client side of a session stream: hello and ready, then input and output pumps.
//!
//! Generic over the byte streams so tests can run it over an in-memory pipe.

use std::time::Duration;

use airlock_proto::control::{ClientRequest, CloseReason, Control};
use airlock_proto::frame::{Frame, FrameCodec, FrameKind, ProtoError};
use airlock_proto::stream::FramedStream;
use airlock_proto::PeerVersion;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// How long the broker has to answer `ClientHello` with `Ready` or `Close`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one frame may take to be accepted by the stream before we give up on the peer.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The first message of the session stream.
pub fn client_hello(token: &str, size: Option<(u16, u16)>, term: String) -> ClientRequest {
    let (cols, rows) = size.unwrap_or((0, 0));
    ClientRequest {
        token: token.to_owned(),
        client_version: env!("CARGO_PKG_VERSION").to_owned(),
        cols,
        rows,
        term,
    }
}

/// Sends `ClientHelloVersioned` and waits for `Ready`; a `Close` instead becomes [`Error::Rejected`].
pub async fn handshake<R, W>(
    stream: &mut FramedStream<R, W>,
    hello: ClientRequest,
    session_id: &str,
) -> Result<(), Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let sent = tokio::time::timeout(
        SEND_TIMEOUT,
        stream
            .send_control(&Control::ClientHelloVersioned { version: PeerVersion::current(), request: hello }),
    )
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Connect(format!("cannot send the session request: {e}"))),
        Err(_) => {
            return Err(Error::Connect("the broker did not accept the session request in time".to_owned()))
        }
    }
    match stream.recv_control(READY_TIMEOUT).await {
        Ok(Control::Ready { .. }) => Ok(()),
        Ok(Control::Close { reason, message }) => {
            Err(Error::Rejected { session_id: session_id.to_owned(), reason, message })
        }
        Ok(other) => Err(Error::Protocol(format!("expected Ready, got {other:?}"))),
        Err(ProtoError::Timeout) => Err(Error::Connect(format!(
            "the broker did not confirm session {session_id} within {} s",
            READY_TIMEOUT.as_secs()
        ))),
        Err(ProtoError::Closed) => {
            Err(Error::Connect(format!("the broker closed the stream before session {session_id} was ready")))
        }
        Err(e) => Err(Error::Protocol(e.to_string())),
    }
}

/// How the output side of a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The broker sent `Close`.
    Closed {
        /// Why the peer closed the stream.
        reason: CloseReason,
        /// The peer's human-readable detail.
        message: String,
    },
    /// The stream finished without a `Close`.
    StreamEnded,
    /// The stream or connection failed.
    Failed(String),
    /// Writing our own stdout or stderr failed (e.g. a closed pipe).
    LocalOutput(String),
}

/// The result of a session's output side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The remote exit code, if an `Exit` arrived.
    pub exit: Option<i32>,
    /// How the stream ended.
    pub end: End,
}

/// What the output side learns that the input side acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Feedback {
    /// The number of the next output frame expected: acknowledged to the agent, which keeps
    /// output until then.
    pub output_next: u64,
    /// The agent has every input frame below this (its `Ack`): no need to keep them.
    pub input_acked: u64,
    /// How many `Resumed` came: each asks to resend input from `resume_from`.
    pub resumes: u64,
    /// Where the last `Resumed` asked the input to resume.
    pub resume_from: u64,
}

/// The most input kept for resending before stdin is no longer read (until acknowledged).
pub const INPUT_KEPT: usize = 1 << 20;

/// Copies `Data` to `out` and `Stderr` to `err` (flushing each, so interactive output shows at
/// once), remembers `Exit`, and returns at `Close` or the end of the stream. `feedback` gets
/// what [`pump_input`] needs: output to acknowledge, the agent's acknowledgements of input,
/// and `Resumed` (the agent re-attached: resend input from there).
pub async fn pump_output<R, O, E>(
    reader: &mut FramedRead<R, FrameCodec>,
    out: &mut O,
    err: &mut E,
    feedback: &watch::Sender<Feedback>,
) -> Outcome
where
    R: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut exit = None;
    loop {
        // No deadline: an idle shell is silent for hours; QUIC keep-alives and the idle
        // timeout end this read if the broker itself goes away.
        let frame = match reader.next().await {
            None => return Outcome { exit, end: End::StreamEnded },
            Some(Err(e)) => return Outcome { exit, end: End::Failed(e.to_string()) },
            Some(Ok(frame)) => frame,
        };
        let written = match frame.kind {
            FrameKind::Data => {
                write_flush(out, &frame.payload).await.map_err(|e| format!("writing stdout: {e}"))
            }
            FrameKind::Stderr => {
                write_flush(err, &frame.payload).await.map_err(|e| format!("writing stderr: {e}"))
            }
            FrameKind::Control => match frame.to_control() {
                Ok(Control::Exit { code }) => {
                    exit = Some(code);
                    Ok(())
                }
                Ok(Control::Close { reason, message }) => {
                    return Outcome { exit, end: End::Closed { reason, message } }
                }
                Ok(Control::Ack { next }) => {
                    feedback.send_modify(|f| f.input_acked = f.input_acked.max(next));
                    Ok(())
                }
                Ok(Control::Resumed { input_next }) => {
                    tracing::debug!(input_next, "the agent re-attached; resending input");
                    feedback.send_modify(|f| {
                        f.resumes += 1;
                        f.resume_from = input_next;
                    });
                    Ok(())
                }
                Ok(other) => {
                    tracing::debug!(?other, "ignoring an unexpected control message");
                    Ok(())
                }
                Err(e) => return Outcome { exit, end: End::Failed(e.to_string()) },
            },
        };
        if let Err(e) = written {
            return Outcome { exit, end: End::LocalOutput(e) };
        }
        if frame.kind != FrameKind::Control {
            feedback.send_modify(|f| f.output_next = frame.seq + 1);
        }
    }
}

async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Sends stdin chunks as `Data` frames numbered 0, 1, 2, … and window sizes as `Resize`,
/// until both sources are exhausted or the stream fails.
///
/// Sizes come through a `watch` so a burst of SIGWINCHs collapses to the latest size
/// instead of queueing.
///
/// Returning does not finish the stream: the caller keeps `writer` alive until the session
/// ends, because a finished client stream would read as the client leaving.
pub async fn pump_input<W>(
    writer: &mut FramedWrite<W, FrameCodec>,
    stdin: Option<mpsc::Receiver<Bytes>>,
    resize: Option<watch::Receiver<(u16, u16)>>,
    feedback: Option<watch::Receiver<Feedback>>,
) -> Result<(), Error>
where
    W: AsyncWrite + Unpin,
{
    Input::new(stdin, resize, feedback).pump(writer, &CancellationToken::new()).await
}

/// The input side of a session, kept across the streams of a resumed session: its sources,
/// the numbering of input frames, and the input the agent has not acknowledged yet.
pub struct Input {
    stdin: Option<mpsc::Receiver<Bytes>>,
    resize: Option<watch::Receiver<(u16, u16)>>,
    feedback: Option<watch::Receiver<Feedback>>,
    /// Number of the next input frame.
    seq: u64,
    /// Input the agent has not acknowledged yet, kept to resend after a re-attach.
    kept: std::collections::VecDeque<Frame>,
    kept_bytes: usize,
    seen: Feedback,
}

impl Input {
    /// Input from these sources; without `feedback` nothing is kept or acknowledged.
    pub fn new(
        stdin: Option<mpsc::Receiver<Bytes>>,
        resize: Option<watch::Receiver<(u16, u16)>>,
        feedback: Option<watch::Receiver<Feedback>>,
    ) -> Self {
        let seen = feedback.as_ref().map(|f| *f.borrow()).unwrap_or_default();
        Input { stdin, resize, feedback, seq: 0, kept: Default::default(), kept_bytes: 0, seen }
    }

    /// Resends the kept input from frame `from` (the agent has everything before it).
    pub async fn resend<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut FramedWrite<W, FrameCodec>,
        from: u64,
    ) -> Result<(), Error> {
        let resend: Vec<Frame> = self.kept.iter().filter(|f| f.seq >= from).cloned().collect();
        for f in resend {
            send_within(writer, f).await?;
        }
        Ok(())
    }

    /// Pumps until the sources are exhausted, the stream fails, or `stop` is cancelled.
    pub async fn pump<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut FramedWrite<W, FrameCodec>,
        stop: &CancellationToken,
    ) -> Result<(), Error> {
        loop {
            if self.stdin.is_none() && self.resize.is_none() && self.feedback.is_none() {
                return Ok(());
            }
            let frame = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                chunk = recv(&mut self.stdin), if self.stdin.is_some() && self.kept_bytes < INPUT_KEPT => match chunk {
                    Some(bytes) => {
                        let f = Frame::data(self.seq, bytes);
                        self.seq += 1;
                        if self.feedback.is_some() {
                            self.kept_bytes += f.payload.len();
                            self.kept.push_back(f.clone());
                        }
                        f
                    }
                    None => {
                        self.stdin = None;
                        continue;
                    }
                },
                // A burst of output frames collapses into one acknowledgement of the latest.
                now = changed(&mut self.feedback), if self.feedback.is_some() => {
                    let Some(now) = now else {
                        self.feedback = None;
                        continue;
                    };
                    while self.kept.front().is_some_and(|f| f.seq < now.input_acked) {
                        if let Some(f) = self.kept.pop_front() {
                            self.kept_bytes -= f.payload.len();
                        }
                    }
                    let resumed = now.resumes != self.seen.resumes;
                    let ack = now.output_next != self.seen.output_next;
                    self.seen = now;
                    if resumed {
                        self.resend(writer, now.resume_from).await?;
                    }
                    if !ack {
                        continue;
                    }
                    Frame::control(&Control::Ack { next: now.output_next })
                },
                size = changed(&mut self.resize), if self.resize.is_some() => match size {
                    Some((cols, rows)) => Frame::control(&Control::Resize { cols, rows }),
                    None => {
                        self.resize = None;
                        continue;
                    }
                },
            };
            send_within(writer, frame).await?;
        }
    }

    /// Acknowledges all output received so far (on a fresh stream after a resume).
    pub async fn acknowledge<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut FramedWrite<W, FrameCodec>,
    ) -> Result<(), Error> {
        if let Some(now) = self.feedback.as_mut().map(|f| *f.borrow_and_update()) {
            self.seen.output_next = now.output_next;
            if now.output_next > 0 {
                send_within(writer, Frame::control(&Control::Ack { next: now.output_next })).await?;
            }
        }
        Ok(())
    }
}

async fn send_within<W: AsyncWrite + Unpin>(
    writer: &mut FramedWrite<W, FrameCodec>,
    frame: Frame,
) -> Result<(), Error> {
    match tokio::time::timeout(SEND_TIMEOUT, writer.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Connect(format!("sending input: {e}"))),
        Err(_) => Err(Error::Connect("the broker stopped accepting input".to_owned())),
    }
}

async fn changed<T: Copy>(rx: &mut Option<watch::Receiver<T>>) -> Option<T> {
    let rx = rx.as_mut()?;
    rx.changed().await.ok()?;
    Some(*rx.borrow_and_update())
}

async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// The exit status of a finished session and the message to print on stderr, if any.
///
/// An `Exit` code wins (with the broker's reason shown when it stopped the session);
/// otherwise a `Close` for `Terminated` is success (as the SSM plugin treats
/// TerminateSession) and anything else is failure.
pub fn conclude(outcome: &Outcome, session_id: &str) -> (i32, Option<String>) {
    let local_failure = match &outcome.end {
        End::LocalOutput(e) => Some(e.clone()),
        _ => None,
    };
    let ended = |text: &str| Some(format!("\r\nSession {session_id} ended: {text}"));
    if let Some(code) = outcome.exit {
        // The broker stopped it (TerminateSession, a time limit): say why, keep the exit code.
        if let End::Closed { reason: CloseReason::Terminated, message } = &outcome.end {
            if !message.is_empty() && local_failure.is_none() {
                return (code, ended(message));
            }
        }
        return (code, local_failure.map(|e| format!("\r\nSession {session_id}: {e}")));
    }
    match &outcome.end {
        End::Closed { reason: CloseReason::Terminated, message } => {
            (0, ended(or_reason(message, "terminated")))
        }
        End::Closed { reason, message } => {
            let fallback = format!("{reason:?}");
            (crate::EXIT_FAILURE, ended(or_reason(message, &fallback)))
        }
        End::StreamEnded => (crate::EXIT_FAILURE, ended("the broker ended the stream without a reason")),
        End::Failed(e) => (crate::EXIT_FAILURE, ended(&format!("connection lost: {e}"))),
        End::LocalOutput(e) => (crate::EXIT_FAILURE, ended(e)),
    }
}

fn or_reason<'a>(message: &'a str, fallback: &'a str) -> &'a str {
    if message.is_empty() {
        fallback
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pair;

    #[test]
    fn hello_carries_version_and_size() {
        let h = client_hello("tok", Some((120, 40)), "screen".into());
        assert_eq!((h.token.as_str(), h.cols, h.rows, h.term.as_str()), ("tok", 120, 40, "screen"));
        assert_eq!(h.client_version, env!("CARGO_PKG_VERSION"));
        let h = client_hello("tok", None, "xterm".into());
        assert_eq!((h.cols, h.rows), (0, 0));
    }

    #[tokio::test]
    async fn handshake_ready() {
        let (mut client, mut broker) = pair();
        let b = tokio::spawn(async move {
            let hello = broker.recv_control(Duration::from_secs(5)).await.unwrap();
            assert!(
                matches!(hello, Control::ClientHelloVersioned { request: ClientRequest { ref token, .. }, ref version } if token == "tok" && version.protocol == airlock_proto::version::PROTOCOL)
            );
            broker.send_control(&Control::Ready { session_id: "s-1".into() }).await.unwrap();
            broker
        });
        handshake(&mut client, client_hello("tok", None, "xterm".into()), "s-1").await.unwrap();
        drop(b.await.unwrap());
    }

    #[tokio::test]
    async fn handshake_close_is_rejection() {
        let (mut client, mut broker) = pair();
        let b = tokio::spawn(async move {
            broker.recv_control(Duration::from_secs(5)).await.unwrap();
            broker
                .send_control(&Control::Close {
                    reason: CloseReason::TargetNotConnected,
                    message: "offline".into(),
                })
                .await
                .unwrap();
            broker
        });
        let err = handshake(&mut client, client_hello("tok", None, "xterm".into()), "s-1").await.unwrap_err();
        assert!(
            matches!(&err, Error::Rejected { reason: CloseReason::TargetNotConnected, message, .. } if message == "offline"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 255);
        drop(b.await.unwrap());
    }

    #[tokio::test]
    async fn handshake_stream_end_and_garbage() {
        let (mut client, broker) = pair();
        drop(broker);
        let err = handshake(&mut client, client_hello("t", None, "x".into()), "s").await.unwrap_err();
        assert!(matches!(err, Error::Connect(_)), "{err}");

        let (mut client, mut broker) = pair();
        let b = tokio::spawn(async move {
            broker.recv_control(Duration::from_secs(5)).await.unwrap();
            broker.send(Frame::data(0, Bytes::from_static(b"early"))).await.unwrap();
            broker
        });
        let err = handshake(&mut client, client_hello("t", None, "x".into()), "s").await.unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err}");
        drop(b.await.unwrap());
    }

    #[tokio::test]
    async fn output_routes_frames_and_keeps_exit() {
        let (client, mut broker) = pair();
        let (mut reader, _w) = client.split();
        broker.send(Frame::data(0, Bytes::from_static(b"hello "))).await.unwrap();
        broker.send(Frame::stderr(1, Bytes::from_static(b"oops"))).await.unwrap();
        broker.send(Frame::data(2, Bytes::from_static(b"world"))).await.unwrap();
        broker.send_control(&Control::Exit { code: 3 }).await.unwrap();
        broker
            .send_control(&Control::Close { reason: CloseReason::Exited, message: String::new() })
            .await
            .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (feedback, fed) = watch::channel(Feedback::default());
        let outcome = pump_output(&mut reader, &mut out, &mut err, &feedback).await;
        assert_eq!(fed.borrow().output_next, 3, "the last output frame was number 2");
        assert_eq!(out, b"hello world");
        assert_eq!(err, b"oops");
        assert_eq!(
            outcome,
            Outcome {
                exit: Some(3),
                end: End::Closed { reason: CloseReason::Exited, message: String::new() }
            }
        );
        assert_eq!(conclude(&outcome, "s"), (3, None));
    }

    #[tokio::test]
    async fn output_stream_end_without_close() {
        let (client, mut broker) = pair();
        let (mut reader, _w) = client.split();
        broker.send(Frame::data(0, Bytes::from_static(b"x"))).await.unwrap();
        drop(broker);
        let outcome = pump_output(
            &mut reader,
            &mut Vec::new(),
            &mut Vec::new(),
            &watch::channel(Feedback::default()).0,
        )
        .await;
        assert_eq!(outcome, Outcome { exit: None, end: End::StreamEnded });
        let (code, msg) = conclude(&outcome, "s-9");
        assert_eq!(code, 255);
        assert!(msg.unwrap().starts_with("\r\nSession s-9 ended: "));
    }

    #[tokio::test]
    async fn input_numbers_data_and_sends_resize() {
        let (client, mut broker) = pair();
        let (_r, mut writer) = client.split();
        let (stdin_tx, stdin_rx) = mpsc::channel(4);
        let (size_tx, size_rx) = watch::channel((80, 24));
        stdin_tx.send(Bytes::from_static(b"ls\r")).await.unwrap();
        size_tx.send((90, 20)).unwrap();
        size_tx.send((100, 30)).unwrap();
        stdin_tx.send(Bytes::from_static(b"exit\r")).await.unwrap();
        drop((stdin_tx, size_tx));
        pump_input(&mut writer, Some(stdin_rx), Some(size_rx), None).await.unwrap();
        let mut data = Vec::new();
        let mut resized = false;
        for _ in 0..3 {
            let f = broker.recv().await.unwrap().unwrap();
            match f.kind {
                FrameKind::Data => data.push((f.seq, f.payload)),
                FrameKind::Control => {
                    assert_eq!(f.to_control().unwrap(), Control::Resize { cols: 100, rows: 30 });
                    resized = true;
                }
                FrameKind::Stderr => panic!("client never sends stderr"),
            }
        }
        assert!(resized);
        assert_eq!(data, vec![(0, Bytes::from_static(b"ls\r")), (1, Bytes::from_static(b"exit\r"))]);
        // Both sources ended without finishing the stream: nothing more arrives yet.
        let more = tokio::time::timeout(Duration::from_millis(50), broker.recv()).await;
        assert!(more.is_err(), "stream must stay open");
        drop(writer);
    }

    #[test]
    fn conclusions() {
        let closed = |reason, message: &str| Outcome {
            exit: None,
            end: End::Closed { reason, message: message.to_owned() },
        };
        assert_eq!(
            conclude(&closed(CloseReason::Terminated, "terminated by alice"), "s-1"),
            (0, Some("\r\nSession s-1 ended: terminated by alice".to_owned()))
        );
        assert_eq!(
            conclude(&closed(CloseReason::AgentLost, "agent went away"), "s-1"),
            (255, Some("\r\nSession s-1 ended: agent went away".to_owned()))
        );
        assert_eq!(
            conclude(&closed(CloseReason::Internal, ""), "s").1.unwrap(),
            "\r\nSession s ended: Internal"
        );
        let failed = Outcome { exit: Some(7), end: End::Failed("reset".into()) };
        assert_eq!(conclude(&failed, "s"), (7, None));
        let message = "session ended at its maximum duration of 1 min (maxSessionDuration)";
        let stopped = Outcome {
            exit: Some(143),
            end: End::Closed { reason: CloseReason::Terminated, message: message.to_owned() },
        };
        assert_eq!(conclude(&stopped, "s"), (143, Some(format!("\r\nSession s ended: {message}"))));
        let exited =
            Outcome { exit: Some(0), end: End::Closed { reason: CloseReason::Exited, message: "x".into() } };
        assert_eq!(conclude(&exited, "s"), (0, None));
        let broken_pipe = Outcome { exit: None, end: End::LocalOutput("writing stdout: broken pipe".into()) };
        assert_eq!(conclude(&broken_pipe, "s").0, 255);
    }
}
