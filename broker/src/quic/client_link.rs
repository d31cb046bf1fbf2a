//! One CLI client's connection: redeem its token, open the session on the agent, splice.

use std::sync::Arc;
use std::time::Duration;

use airlock_proto::{ClientRequest, CloseReason, Control, Frame, FramedStream, SessionSpec, MAX_FRAME_LEN};
use airlock_recordings::{EndReason, Recorder, RecordingError, RecordingMeta};
use airlock_relay::{
    finish_recording, splice_attached, Attachment, Deadlines, Positions, SharedRecorder, SpliceOutcome,
};
use futures_util::SinkExt;

use super::port_session::refuse;
use crate::app::{now_us, App};
use crate::registry::{PendingSession, SessionPlan};
use crate::store::{SessionEnd, SessionStatus};
use tokio_util::sync::CancellationToken;

const HELLO_DEADLINE: Duration = Duration::from_secs(10);
/// How long the agent may take to start a shell or command.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// How long we wait for the client to read the final frames before closing.
const LINGER: Duration = Duration::from_secs(5);
/// How long a session waits for its agent to come back after the agent's link dropped
/// (the agent keeps the process as long, `SessionLimits::resume_window`).
const RESUME_WINDOW: Duration = Duration::from_secs(600);
/// How often a detached session looks for its agent's new link.
const REATTACH_POLL: Duration = Duration::from_millis(250);

type Stream = FramedStream<quinn::RecvStream, quinn::SendStream>;

pub(super) async fn run(app: Arc<App>, connection: quinn::Connection) {
    let remote = connection.remote_address();
    let Ok(Ok((send, recv))) = tokio::time::timeout(HELLO_DEADLINE, connection.accept_bi()).await else {
        connection.close(1u32.into(), b"no session stream");
        return;
    };
    let mut client = FramedStream::new(recv, send, MAX_FRAME_LEN);
    let hello = match client.recv_control(HELLO_DEADLINE).await {
        Ok(Control::ClientHello(h)) => h,
        other => {
            tracing::info!(%remote, ?other, "client did not present a token");
            refuse(&mut client, CloseReason::ProtocolError, "expected ClientHello".into()).await;
            linger(&connection).await;
            return;
        }
    };
    let (pending, terminate) = match app.registry.redeem(&hello.token) {
        Ok(redeemed) => redeemed,
        Err(refusal) => {
            tracing::warn!(%remote, %refusal, "session token refused");
            refuse(&mut client, CloseReason::Unauthorized, refusal.to_string()).await;
            linger(&connection).await;
            return;
        }
    };
    super::admitted(&connection);
    let id = pending.session_id.clone();
    if let SessionPlan::Port(targets) = pending.plan.clone() {
        match start_recording(&app, &pending, 0, 0, String::new()).await {
            Ok(recorder) => {
                super::port_session::run(
                    app.clone(),
                    &connection,
                    client,
                    pending,
                    targets,
                    recorder,
                    terminate,
                )
                .await
            }
            Err((reason, message)) => {
                refuse(&mut client, reason, message.clone()).await;
                fail(&app, &id, message, terminate.is_cancelled()).await;
            }
        }
    } else {
        match open_session(&app, &pending, &hello).await {
            Err((reason, message)) => {
                tracing::warn!(session = %id, %message, "session could not start");
                refuse(&mut client, reason, message.clone()).await;
                fail(&app, &id, message, terminate.is_cancelled()).await;
            }
            // Terminated while the agent was starting it: the splice sees the cancelled token
            // at once and ends the process on the agent like any terminate.
            Ok((agent, recorder)) => {
                process_session(&app, client, agent, recorder, &pending, terminate).await
            }
        }
    }
    app.registry.session_ended(&id);
    linger(&connection).await;
}

/// Splices a shell or command session until it ends, then records how.
async fn process_session(
    app: &App,
    mut client: Stream,
    agent: Stream,
    recorder: Recorder,
    pending: &PendingSession,
    terminate: CancellationToken,
) {
    let id = &pending.session_id;
    // A session terminated while it was starting stays Terminating until it has ended.
    if !terminate.is_cancelled() {
        if let Err(e) = app.store.set_session_status(id, SessionStatus::Connected).await {
            tracing::error!(error = %e, "cannot record session start");
        }
    }
    if client.send_control(&Control::Ready { session_id: id.clone() }).await.is_ok() {
        tracing::info!(session = %id, target = %pending.target, owner = %pending.owner.arn, "session connected");
    }
    let limits = pending.launch.limits;
    let deadlines = Deadlines::from_now(limits);
    let rec: SharedRecorder = Arc::new(tokio::sync::Mutex::new(recorder));
    let (mut c_read, mut c_write) = client.split();
    let (mut agent, mut at) = (agent, Positions::default());
    let outcome = loop {
        let client = (&mut c_read, &mut c_write);
        let a =
            splice_attached(client, agent.split(), rec.clone(), terminate.clone(), (limits, deadlines), at)
                .await;
        if !a.agent_detached {
            break a;
        }
        tracing::info!(session = %id, "the agent's link dropped; waiting for it to re-attach the session");
        match reattach_agent(app, pending, a.positions.output_next, &terminate).await {
            Ok((stream, input_next)) => {
                tracing::info!(session = %id, input_next, output_next = a.positions.output_next, "agent re-attached");
                if c_write.send(Frame::control(&Control::Resumed { input_next })).await.is_err() {
                    break Attachment {
                        end: EndReason::ClientLost,
                        message: "the client went away".into(),
                        ..a
                    };
                }
                at = Positions { input_next, rewind: true, ..a.positions };
                agent = stream;
            }
            Err((end, reason, message)) => {
                let _ =
                    c_write.send(Frame::control(&Control::Close { reason, message: message.clone() })).await;
                let _ = c_write.close().await;
                break Attachment { end, message, ..a };
            }
        }
    };
    let outcome = SpliceOutcome {
        recording: finish_recording(rec, outcome.end, outcome.exit_code).await,
        end: outcome.end,
        exit_code: outcome.exit_code,
        message: outcome.message,
        bytes_from_client: outcome.bytes_from_client,
        bytes_from_agent: outcome.bytes_from_agent,
    };
    app.registry.session_ended(id);
    let status = match outcome.end {
        EndReason::ProtocolError => SessionStatus::Failed,
        _ => SessionStatus::Terminated,
    };
    let end = SessionEnd {
        status,
        end_us: now_us(),
        details: outcome.message.clone(),
        exit_code: outcome.exit_code,
    };
    if let Err(e) = app.store.finish_session(id, &end).await {
        tracing::error!(error = %e, "cannot record session end");
    }
    match &outcome.recording {
        Ok(m) => tracing::info!(
            session = %id, end = ?outcome.end, exit = ?outcome.exit_code, bytes_in = outcome.bytes_from_client,
            bytes_out = outcome.bytes_from_agent, recording_sha256 = %m.sha256, "session ended"
        ),
        Err(RecordingError::NotRecorded(_)) => tracing::info!(
            session = %id, end = ?outcome.end, exit = ?outcome.exit_code, "unrecorded session ended"
        ),
        Err(e) => {
            tracing::error!(session = %id, error = %e, "session ended but its recording could not be finished")
        }
    }
}

/// Records a session that never ran: Terminated when a terminate came while it was starting
/// (that is what ended it), Failed otherwise.
async fn fail(app: &App, id: &str, message: String, terminated: bool) {
    let (status, details) = if terminated {
        (SessionStatus::Terminated, format!("terminated while starting ({message})"))
    } else {
        (SessionStatus::Failed, message)
    };
    let end = SessionEnd { status, end_us: now_us(), details, exit_code: None };
    if let Err(e) = app.store.finish_session(id, &end).await {
        tracing::error!(error = %e, "cannot record session end");
    }
}

/// Opens the session's recording. When that fails the session is refused, unless the
/// preferences let it run unrecorded (`requireRecording: false`), which is logged loudly.
async fn start_recording(
    app: &App,
    pending: &PendingSession,
    cols: u16,
    rows: u16,
    term: String,
) -> Result<Recorder, (CloseReason, String)> {
    if app.registry.agent(&pending.target).is_none() {
        return Err((CloseReason::TargetNotConnected, format!("{} is not connected", pending.target)));
    }
    let meta = RecordingMeta {
        session_id: pending.session_id.clone(),
        target: pending.target.clone(),
        owner: pending.owner.arn.clone(),
        document: pending.document.clone(),
        width: cols,
        height: rows,
        term,
    };
    let launch = &pending.launch;
    match Recorder::create(app.shipper.spool(), meta.clone(), &launch.sinks).await {
        Ok(recorder) => Ok(recorder),
        Err(e) if launch.require_recording => Err((
            CloseReason::Internal,
            format!(
                "the session cannot be recorded, so it was refused (the session preferences require \
                 recording): {e}"
            ),
        )),
        Err(e) => {
            tracing::warn!(
                session = %pending.session_id, owner = %pending.owner.arn, error = %e,
                "session runs UNRECORDED: recording failed and the session preferences allow that"
            );
            Ok(Recorder::unrecorded(meta))
        }
    }
}

/// Starts the recording first (no recording, no session), then the agent's side.
async fn open_session(
    app: &App,
    pending: &PendingSession,
    hello: &ClientRequest,
) -> Result<(Stream, Recorder), (CloseReason, String)> {
    let (cols, rows) = if hello.cols == 0 || hello.rows == 0 { (80, 24) } else { (hello.cols, hello.rows) };
    let term = if hello.term.is_empty() {
        "xterm-256color".to_owned()
    } else {
        hello.term.chars().take(64).collect()
    };
    let spec = match &pending.plan {
        SessionPlan::Shell => SessionSpec::Shell {
            cols,
            rows,
            term: term.clone(),
            run_as: pending.launch.run_as.clone(),
            profile: pending.launch.shell_profile.clone(),
        },
        SessionPlan::Command(command) => {
            SessionSpec::Command { command: command.clone(), run_as: pending.launch.run_as.clone() }
        }
        SessionPlan::Port(_) => {
            return Err((CloseReason::ProtocolError, "a port session runs no process".into()))
        }
    };
    let recorder = start_recording(app, pending, cols, rows, term).await?;
    let started = match app.registry.agent(&pending.target) {
        Some(agent) => start_on_agent(&agent.connection, pending, spec).await,
        None => Err((CloseReason::TargetNotConnected, format!("{} is not connected", pending.target))),
    };
    match started {
        Ok(stream) => Ok((stream, recorder)),
        Err(e) => {
            // The attempt stays on record, closed, like any other session.
            match recorder.finish(EndReason::AgentLost, None).await {
                Ok(_) | Err(RecordingError::NotRecorded(_)) => {}
                Err(err) => tracing::error!(error = %err, "cannot finish the recording of a failed start"),
            }
            Err(e)
        }
    }
}

async fn start_on_agent(
    connection: &quinn::Connection,
    pending: &PendingSession,
    spec: SessionSpec,
) -> Result<Stream, (CloseReason, String)> {
    let lost = |e: &dyn std::fmt::Display| {
        (CloseReason::TargetNotConnected, format!("{} went away: {e}", pending.target))
    };
    let (send, recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
    let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
    let open = Control::Open { session_id: pending.session_id.clone(), spec };
    stream.send_control(&open).await.map_err(|e| lost(&e))?;
    match stream.recv_control(START_DEADLINE).await {
        Ok(Control::Started) => Ok(stream),
        Ok(Control::Close { message, .. }) => {
            Err((CloseReason::StartFailed, format!("the agent could not start the session: {message}")))
        }
        Ok(other) => {
            Err((CloseReason::ProtocolError, format!("the agent answered {other:?} instead of Started")))
        }
        Err(e) => Err((CloseReason::StartFailed, format!("the agent did not start the session: {e}"))),
    }
}

/// Waits for the session's agent to be connected again (within the resume window) and
/// re-attaches the session on a new stream: `Attach` from `resend_from`, answered by
/// `Attached` with the next input frame the agent expects.
async fn reattach_agent(
    app: &App,
    pending: &PendingSession,
    resend_from: u64,
    terminate: &CancellationToken,
) -> Result<(Stream, u64), (EndReason, CloseReason, String)> {
    let deadline = tokio::time::Instant::now() + RESUME_WINDOW;
    let gone = || {
        let window = RESUME_WINDOW.as_secs();
        let message = format!("{} did not come back within the resume window of {window} s", pending.target);
        (EndReason::AgentLost, CloseReason::AgentLost, message)
    };
    loop {
        if terminate.is_cancelled() {
            // The agent ends the process itself when nobody re-attaches it in its window.
            return Err((EndReason::Terminated, CloseReason::Terminated, "session terminated".into()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(gone());
        }
        if let Some(link) = app.registry.agent(&pending.target) {
            match attach_on(&link.connection, pending, resend_from).await {
                Ok(attached) => return Ok(attached),
                Err(AttachError::Gone(message)) => {
                    return Err((EndReason::AgentLost, CloseReason::AgentLost, message))
                }
                Err(AttachError::Retry(e)) => {
                    tracing::debug!(session = %pending.session_id, "re-attach failed: {e}")
                }
            }
        }
        tokio::select! {
            _ = terminate.cancelled() => {}
            _ = tokio::time::sleep(REATTACH_POLL) => {}
        }
    }
}

/// Why a re-attach attempt failed.
enum AttachError {
    /// The agent no longer has the session.
    Gone(String),
    /// The link failed; try again on the next one.
    Retry(String),
}

async fn attach_on(
    connection: &quinn::Connection,
    pending: &PendingSession,
    resend_from: u64,
) -> Result<(Stream, u64), AttachError> {
    let retry = |e: &dyn std::fmt::Display| AttachError::Retry(e.to_string());
    let (send, recv) = connection.open_bi().await.map_err(|e| retry(&e))?;
    let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
    let attach = Control::Attach { session_id: pending.session_id.clone(), resend_from };
    stream.send_control(&attach).await.map_err(|e| retry(&e))?;
    match stream.recv_control(START_DEADLINE).await {
        Ok(Control::Attached { input_next }) => Ok((stream, input_next)),
        Ok(Control::Close { message, .. }) => {
            Err(AttachError::Gone(format!("the agent no longer has the session: {message}")))
        }
        Ok(other) => Err(AttachError::Retry(format!("the agent answered {other:?} instead of Attached"))),
        Err(e) => Err(retry(&e)),
    }
}

/// Gives the client time to read what was sent, then closes.
async fn linger(connection: &quinn::Connection) {
    let stats = connection.stats();
    tracing::debug!(
        remote = %connection.remote_address(), mtu = stats.path.current_mtu, rtt_us = stats.path.rtt.as_micros() as u64,
        lost_packets = stats.path.lost_packets, congestion_events = stats.path.congestion_events, "client link stats"
    );
    let _ = tokio::time::timeout(LINGER, connection.closed()).await;
    connection.close(0u32.into(), b"done");
}
