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
mod live;
mod process;
mod pty;
mod run_as;

pub use forward::{ForwardConfig, ForwardEnd, ForwardReport};
pub use live::{LiveSessions, OUTPUT_BUFFER};

use std::time::Duration;

use airlock_proto::{CloseReason, Control, Frame, FrameCodec, FramedStream, SessionId, SessionSpec};
use airlock_proto::{ProtoError, MAX_FRAME_LEN};
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::Instrument;

use crate::error::Error;

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
    /// How long a session whose stream went away (the link dropped) keeps its process,
    /// waiting for the broker to re-attach it.
    pub resume_window: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            open_timeout: Duration::from_secs(10),
            kill_grace: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(2),
            send_timeout: Duration::from_secs(10),
            resume_window: Duration::from_secs(600),
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
    /// A re-attach (`Attach`) handed to the live session.
    Attached(SessionId),
}

/// The first frame of a stream: what the broker asks for.
enum Request {
    Open(SessionId, SessionSpec),
    Dial(SessionId, String, u16),
    Attach(SessionId, u64),
}

/// Serves one broker-opened stream: `Open` runs a process and relays its I/O up to `Exit`
/// (across re-attaches); `Attach` hands the stream to a live session; `Dial` connects to a
/// TCP port (if `forward` allows it) and relays the connection.
pub async fn serve<R, W>(
    reader: R,
    writer: W,
    limits: &SessionLimits,
    forward: &ForwardConfig,
    live: &LiveSessions,
) -> Result<StreamReport, Error>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut stream = FramedStream::new(reader, writer, MAX_FRAME_LEN);
    match read_request(&mut stream, limits.open_timeout).await {
        Ok(Request::Open(session_id, spec)) => {
            let span = tracing::info_span!("session", id = %session_id);
            run(stream, session_id, spec, limits, live).instrument(span).await.map(StreamReport::Session)
        }
        Ok(Request::Attach(session_id, resend_from)) => {
            let (reader, writer) = boxed(stream);
            let attachment = live::Attachment { reader, writer, resend_from, announce: true };
            match live.attach(&session_id, attachment, limits.send_timeout).await {
                Ok(()) => Ok(StreamReport::Attached(session_id)),
                Err(back) => {
                    let message = format!("session {session_id} is not live on this agent");
                    refuse(back.writer, CloseReason::Gone, &message, limits.send_timeout).await;
                    Ok(StreamReport::Attached(session_id))
                }
            }
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

/// Boxes a stream's halves, so streams of any link can be handed to a live session.
fn boxed<R, W>(stream: FramedStream<R, W>) -> (live::Reader, live::Writer)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (reader, writer) = stream.split();
    // Bytes the codec already read past the first frame stay in front of the rest.
    let parts = reader.into_parts();
    let early = std::io::Cursor::new(parts.read_buf.freeze());
    let reader: Box<dyn AsyncRead + Unpin + Send> = Box::new(tokio::io::AsyncReadExt::chain(early, parts.io));
    let writer: Box<dyn AsyncWrite + Unpin + Send> = Box::new(writer.into_inner());
    (
        FramedRead::new(reader, FrameCodec::new(MAX_FRAME_LEN)),
        FramedWrite::new(writer, FrameCodec::new(MAX_FRAME_LEN)),
    )
}

async fn run<R, W>(
    mut stream: FramedStream<R, W>,
    session_id: SessionId,
    spec: SessionSpec,
    limits: &SessionLimits,
    live: &LiveSessions,
) -> Result<SessionReport, Error>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let kind = match spec {
        SessionSpec::Shell { .. } => "shell",
        SessionSpec::Command { .. } => "command",
        SessionSpec::InteractiveCommand { .. } => "interactive command",
    };
    let drain = limits.drain_timeout;
    // fork/exec and the password and group database lookups may block.
    let started = tokio::task::spawn_blocking(move || {
        let (run_as, profile) = match &spec {
            SessionSpec::Shell { run_as, profile, .. } => (run_as, profile.as_deref()),
            // Commands have no profile: nothing reads typed input.
            SessionSpec::Command { run_as, .. } | SessionSpec::InteractiveCommand { run_as, .. } => {
                (run_as, None)
            }
        };
        let who = run_as::resolve(run_as.as_deref())?;
        let process = match &spec {
            SessionSpec::Shell { cols, rows, term, .. } => {
                pty::spawn(*cols, *rows, term, pty::Program::LoginShell { profile }, &who, drain)
            }
            SessionSpec::InteractiveCommand { command, cols, rows, term, .. } => {
                pty::spawn(*cols, *rows, term, pty::Program::Command(command), &who, drain)
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
    let (reader, writer) = boxed(stream);
    let first = live::Attachment { reader, writer, resend_from: 0, announce: false };
    let code = live::run(session_id.clone(), process, first, limits, live).await;
    tracing::info!(?code, "ended");
    Ok(SessionReport { session_id, exit_code: code })
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
        Ok(Control::Attach { session_id, resend_from }) => {
            Ok(Request::Attach(parse(session_id)?, resend_from))
        }
        Ok(other) => Err(format!("expected Open, Attach or Dial, got {}", control_name(&other))),
        Err(ProtoError::Timeout) => Err(format!("no Open, Attach or Dial within {deadline:?}")),
        Err(e) => Err(format!("expected Open, Attach or Dial: {e}")),
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

/// A short name of a control message for logs and errors (never its contents).
fn control_name(msg: &Control) -> &'static str {
    match msg {
        Control::ClientHello(_) => "ClientHello",
        Control::Ready { .. } => "Ready",
        Control::AgentHello(_) => "AgentHello",
        Control::AgentHelloVersioned { .. } => "AgentHelloVersioned",
        Control::ClientHelloVersioned { .. } => "ClientHelloVersioned",
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
        Control::Ack { .. } => "Ack",
        Control::Attach { .. } => "Attach",
        Control::Attached { .. } => "Attached",
        Control::ClientResume { .. } => "ClientResume",
        Control::Resumed { .. } => "Resumed",
        Control::ResumeWindow { .. } => "ResumeWindow",
        Control::RunCommand(_) => "RunCommand",
        Control::CancelCommand { .. } => "CancelCommand",
        Control::CommandStarted { .. } => "CommandStarted",
        Control::CommandResult(_) => "CommandResult",
        Control::CommandResultAck { .. } => "CommandResultAck",
    }
}
