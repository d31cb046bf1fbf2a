//! One broker-opened stream: a session that runs a shell on a PTY or a command on pipes
//! (wire contract §2.2), or, when the first frame is `Dial`, a forwarded TCP connection
//! (§3, in [`forward`]).
//!
//! The driver is generic over the stream halves, so tests run it over an in-memory pipe.
//! Two loops share the session: output (process → peer: Data/Stderr frames, then `Exit`) and
//! input (peer → process: Data, Resize, Close). Neither waits on the other, so a process
//! that does not read its input can still be heard, and killed.

mod command;
mod forward;
mod process;
mod pty;
mod run_as;

pub use forward::{ForwardConfig, ForwardEnd, ForwardReport};

use std::time::Duration;

use airlock_proto::{
    CloseReason, Control, Frame, FrameCodec, FrameKind, FramedStream, SessionId, SessionSpec,
};
use airlock_proto::{ProtoError, MAX_FRAME_LEN};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::Instrument;

use crate::error::Error;
use process::{Output, Process, ProcessControl};

/// Time limits of a session.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// How long the broker has to send `Open` or `Dial` after opening the stream.
    pub open_timeout: Duration,
    /// Between SIGHUP and SIGKILL when a session is ended from outside.
    pub kill_grace: Duration,
    /// How long output may keep coming after the process exited (a background job holding
    /// the terminal or pipes) before the session stops reading it.
    pub drain_timeout: Duration,
    /// Deadline for a control frame we send (`Started`, `Close`) to be taken by the peer.
    pub send_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            open_timeout: Duration::from_secs(10),
            kill_grace: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(2),
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// How a session that got past `Open` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// The broker's id for the session.
    pub session_id: SessionId,
    /// The exit code sent to the broker; `None` if the process never started.
    pub exit_code: Option<i32>,
}

/// What a broker-opened stream turned out to be, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamReport {
    /// A shell or command session (`Open`).
    Session(SessionReport),
    /// A forwarded TCP connection (`Dial`).
    Forward(ForwardReport),
}

/// The first frame of a stream: what the broker asks for.
enum Request {
    Open(SessionId, SessionSpec),
    Dial(SessionId, String, u16),
}

/// Why the input loop stopped.
#[derive(Debug)]
enum InputEnd {
    /// The broker sent `Close`.
    Closed { reason: CloseReason, message: String },
    /// The stream ended or broke.
    PeerGone(String),
}

/// Serves one broker-opened stream: `Open` runs a process and relays its I/O up to `Exit`;
/// `Dial` connects to a TCP port (if `forward` allows it) and relays the connection.
pub async fn serve<R, W>(
    reader: R,
    writer: W,
    limits: &SessionLimits,
    forward: &ForwardConfig,
) -> Result<StreamReport, Error>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut stream = FramedStream::new(reader, writer, MAX_FRAME_LEN);
    match read_request(&mut stream, limits.open_timeout).await {
        Ok(Request::Open(session_id, spec)) => {
            let span = tracing::info_span!("session", id = %session_id);
            run(stream, session_id, spec, limits).instrument(span).await.map(StreamReport::Session)
        }
        Ok(Request::Dial(session_id, host, port)) => {
            forward::run(stream, session_id, host, port, limits, forward).await.map(StreamReport::Forward)
        }
        Err(detail) => {
            refuse(stream.writer, CloseReason::ProtocolError, &detail, limits.send_timeout).await;
            Err(Error::Protocol(detail))
        }
    }
}

async fn run<R, W>(
    mut stream: FramedStream<R, W>,
    session_id: SessionId,
    spec: SessionSpec,
    limits: &SessionLimits,
) -> Result<SessionReport, Error>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let kind = if matches!(spec, SessionSpec::Shell { .. }) { "shell" } else { "command" };
    let drain = limits.drain_timeout;
    // fork/exec and the password and group database lookups may block.
    let started = tokio::task::spawn_blocking(move || {
        let (run_as, profile) = match &spec {
            SessionSpec::Shell { run_as, profile, .. } => (run_as, profile.as_deref()),
            // Commands have no profile: nothing reads typed input.
            SessionSpec::Command { run_as, .. } => (run_as, None),
        };
        let who = run_as::resolve(run_as.as_deref())?;
        let process = match &spec {
            SessionSpec::Shell { cols, rows, term, .. } => {
                pty::spawn(*cols, *rows, term, profile, &who, drain)
            }
            SessionSpec::Command { command, .. } => command::spawn(command, &who, drain),
        }?;
        Ok((process, who.user().to_owned()))
    })
    .await
    .unwrap_or_else(|e| Err(Error::Spawn(format!("spawning task failed: {e}"))));
    let process = match started {
        Ok((process, user)) => {
            tracing::info!(kind, user, "started");
            process
        }
        Err(e) => {
            tracing::warn!("{e}");
            refuse(stream.writer, CloseReason::StartFailed, &e.to_string(), limits.send_timeout).await;
            return Ok(SessionReport { session_id, exit_code: None });
        }
    };
    // If this fails the peer is gone; dropping `process` kills what we started.
    send_within(&mut stream.writer, Frame::control(&Control::Started), limits.send_timeout).await?;
    let (reader, writer) = stream.split();
    let code = relay(reader, writer, process, limits).await?;
    tracing::info!(code, "exited");
    Ok(SessionReport { session_id, exit_code: Some(code) })
}

/// Reads the first frame, which must be `Open` or `Dial` with a well-formed session id.
async fn read_request<R, W>(stream: &mut FramedStream<R, W>, deadline: Duration) -> Result<Request, String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let parse = |id: String| id.parse::<SessionId>().map_err(|e| e.to_string());
    match stream.recv_control(deadline).await {
        Ok(Control::Open { session_id, spec }) => Ok(Request::Open(parse(session_id)?, spec)),
        Ok(Control::Dial { session_id, host, port }) => Ok(Request::Dial(parse(session_id)?, host, port)),
        Ok(other) => Err(format!("expected Open or Dial, got {}", control_name(&other))),
        Err(ProtoError::Timeout) => Err(format!("no Open or Dial within {deadline:?}")),
        Err(e) => Err(format!("expected Open or Dial: {e}")),
    }
}

/// Sends `Close{reason}` and finishes the stream, giving up after `deadline`.
async fn refuse<W: AsyncWrite + Unpin>(
    mut writer: FramedWrite<W, FrameCodec>,
    reason: CloseReason,
    message: &str,
    deadline: Duration,
) {
    let close = Frame::control(&Control::Close { reason, message: message.to_owned() });
    let finish = async {
        writer.send(close).await?;
        writer.close().await
    };
    if let Ok(Err(e)) | Err(e) = tokio::time::timeout(deadline, finish).await.map_err(|_| ProtoError::Timeout)
    {
        tracing::debug!("could not send Close: {e}");
    }
}

async fn send_within<W: AsyncWrite + Unpin>(
    writer: &mut FramedWrite<W, FrameCodec>,
    frame: Frame,
    deadline: Duration,
) -> Result<(), Error> {
    match tokio::time::timeout(deadline, writer.send(frame)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ProtoError::Timeout.into()),
    }
}

/// Runs both directions until the process exited and `Exit` went out (or the peer is gone).
async fn relay<R, W>(
    reader: FramedRead<R, FrameCodec>,
    writer: FramedWrite<W, FrameCodec>,
    process: Process,
    limits: &SessionLimits,
) -> Result<i32, Error>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let Process { output, input, control } = process;
    let outbound = send_output(writer, output, &control);
    let inbound = receive_input(reader, input, &control);
    tokio::pin!(outbound, inbound);
    tokio::select! {
        sent = &mut outbound => {
            if sent.is_err() {
                // We cannot report to the peer any more, so nothing should keep running.
                control.terminate(limits.kill_grace).await;
            }
            sent
        }
        end = &mut inbound => {
            match &end {
                InputEnd::Closed { reason, message } => tracing::info!(?reason, message, "closed by the broker"),
                InputEnd::PeerGone(why) => tracing::info!("peer went away: {why}"),
            }
            // The remaining output and `Exit` still go out if the peer reads them, but a peer
            // that stopped reading must not keep this session alive.
            let bound = limits.kill_grace + limits.drain_timeout + limits.send_timeout;
            let finish = async { tokio::join!(control.terminate(limits.kill_grace), &mut outbound).1 };
            match tokio::time::timeout(bound, finish).await {
                Ok(sent) => sent,
                Err(_) => Err(ProtoError::Timeout.into()),
            }
        }
    }
}

/// The most output merged into one frame.
const MERGE_LIMIT: usize = 64 * 1024;

/// Process → peer: output frames numbered from 0, then `Exit`, then the end of the stream.
async fn send_output<W: AsyncWrite + Unpin>(
    mut writer: FramedWrite<W, FrameCodec>,
    mut output: mpsc::Receiver<Output>,
    control: &ProcessControl,
) -> Result<i32, Error> {
    let mut seq = 0u64;
    let mut held: Option<Output> = None;
    loop {
        let first = match held.take() {
            Some(chunk) => chunk,
            None => match output.recv().await {
                Some(chunk) => chunk,
                None => break,
            },
        };
        // A PTY hands out a few KiB per read; merging what is already waiting into one
        // frame (same stream, in order) cuts per-frame work all the way to the client.
        let (is_err, first) = match first {
            Output::Stdout(b) => (false, b),
            Output::Stderr(b) => (true, b),
        };
        let mut merged: Option<BytesMut> = None;
        loop {
            let len = merged.as_ref().map_or(first.len(), BytesMut::len);
            let more = match output.try_recv() {
                Ok(Output::Stdout(b)) if !is_err && len + b.len() <= MERGE_LIMIT => b,
                Ok(Output::Stderr(b)) if is_err && len + b.len() <= MERGE_LIMIT => b,
                Ok(other) => {
                    held = Some(other);
                    break;
                }
                Err(_) => break,
            };
            // Copy only when there is something to merge with.
            merged.get_or_insert_with(|| BytesMut::from(&first[..])).extend_from_slice(&more);
        }
        let bytes = merged.map_or(first, BytesMut::freeze);
        let frame = if is_err { Frame::stderr(seq, bytes) } else { Frame::data(seq, bytes) };
        seq += 1;
        writer.send(frame).await?;
    }
    let code = control.wait().await;
    writer.send(Frame::control(&Control::Exit { code })).await?;
    writer.close().await?;
    Ok(code)
}

/// Peer → process: stdin bytes, resizes, and the broker's `Close`.
async fn receive_input<R: AsyncRead + Unpin>(
    mut reader: FramedRead<R, FrameCodec>,
    mut input: Option<mpsc::Sender<Bytes>>,
    control: &ProcessControl,
) -> InputEnd {
    let mut next_seq = 0u64;
    loop {
        let frame = match reader.next().await {
            None => return InputEnd::PeerGone("stream finished".into()),
            Some(Err(e)) => return InputEnd::PeerGone(e.to_string()),
            Some(Ok(frame)) => frame,
        };
        match frame.kind {
            FrameKind::Data => {
                if frame.seq != next_seq {
                    tracing::debug!(expected = next_seq, got = frame.seq, "input sequence gap");
                }
                next_seq = frame.seq.wrapping_add(1);
                if frame.payload.is_empty() {
                    continue;
                }
                if let Some(tx) = &input {
                    // Waiting here when the process is not reading is the backpressure
                    // towards the peer; a process that closed its input just drops data.
                    if tx.send(frame.payload).await.is_err() {
                        input = None;
                    }
                }
            }
            FrameKind::Stderr => tracing::debug!("ignoring a Stderr frame from the broker"),
            FrameKind::Control => match frame.to_control() {
                Ok(Control::Resize { cols, rows }) => control.resize(cols, rows),
                Ok(Control::Close { reason, message }) => return InputEnd::Closed { reason, message },
                Ok(other) => tracing::debug!("ignoring {} on a session stream", control_name(&other)),
                Err(e) => return InputEnd::PeerGone(format!("bad control frame: {e}")),
            },
        }
    }
}

/// A short name of a control message for logs and errors (never its contents).
fn control_name(msg: &Control) -> &'static str {
    match msg {
        Control::ClientHello(_) => "ClientHello",
        Control::Ready { .. } => "Ready",
        Control::AgentHello(_) => "AgentHello",
        Control::Heartbeat { .. } => "Heartbeat",
        Control::Open { .. } => "Open",
        Control::Started => "Started",
        Control::Resize { .. } => "Resize",
        Control::Exit { .. } => "Exit",
        Control::Close { .. } => "Close",
        Control::Connect { .. } => "Connect",
        Control::Dial { .. } => "Dial",
        Control::RenewCertificate { .. } => "RenewCertificate",
        Control::CertificateRenewed { .. } => "CertificateRenewed",
        Control::RenewalRefused { .. } => "RenewalRefused",
    }
}
