//! A shell or command session from `Ready` to its end, across lost connections (wire
//! contract §2.4): one attachment after another, each a client stream and an agent stream
//! spliced from where the last one stopped.
//!
//! - The agent's link drops: the client keeps its stream; the session waits (the resume
//!   window) for the agent's next link, re-attaches there (`Attach` from the output the
//!   client has, `Attached` with the input the agent has) and tells the client to resend
//!   input from there (`Resumed`).
//! - The client's connection is lost (timed out or reset, not closed): the agent's stream is
//!   dropped without a `Close` (the agent keeps the process); the session is `Disconnected`
//!   until the client comes back with a ResumeSession token (`ClientResume` with the output it
//!   has), then re-attaches the agent and answers `Resumed`.
//!
//! This task writes the session's status while it runs; every byte is recorded once however
//! often it is resent.

use std::sync::Arc;
use std::time::Duration;

use airlock_proto::{CloseReason, Control, Frame, FramedStream, MAX_FRAME_LEN};
use airlock_recordings::{EndReason, Recorder, RecordingError};
use airlock_relay::{
    finish_recording, splice_attached, Attachment, Deadlines, Positions, SharedRecorder, SpliceOutcome,
};
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::{ClientLink, ClientStream};
use super::serve::{AgentStream, START_DEADLINE};
use super::state;
use crate::app::{now_us, App};
use crate::registry::{ClientReturn, PendingSession};
use crate::store::{SessionEnd, SessionStatus};

/// How often a detached session looks for its agent's new link.
const REATTACH_POLL: Duration = Duration::from_millis(250);

/// Runs the session until it ends and records how; returns the client connection it ended
/// on (to linger on).
pub(super) async fn run(
    app: &App,
    (mut client, link): (ClientStream, Arc<dyn ClientLink>),
    agent: AgentStream,
    recorder: Recorder,
    pending: &PendingSession,
    terminate: CancellationToken,
) -> Arc<dyn ClientLink> {
    let id = &pending.session_id;
    // A session terminated while it was starting stays Terminating until it has ended.
    state::attached(app, id, &terminate).await;
    if client.send_control(&Control::Ready { session_id: id.clone() }).await.is_ok() {
        tracing::info!(session = %id, target = %pending.target, owner = %pending.owner.arn, "session connected");
    }
    let (returns_tx, returns) = mpsc::channel(1);
    app.registry.set_resumable(id, &pending.owner.arn, returns_tx);
    let deadlines = Deadlines::from_now(pending.launch.limits);
    let rec: SharedRecorder = Arc::new(tokio::sync::Mutex::new(recorder));
    let (c_read, c_write) = client.split();
    let attached = Attached { client: (c_read, c_write), link, agent, at: Positions::default() };
    drive(app, attached, (rec, deadlines), pending, (terminate, returns)).await
}

/// A client stream and an agent stream spliced from `at`.
pub(super) struct Attached {
    /// The client's stream, split.
    pub(super) client: (ClientReader, ClientWriter),
    /// The connection it came on.
    pub(super) link: Arc<dyn ClientLink>,
    /// The agent's stream.
    pub(super) agent: AgentStream,
    /// Where the directions stand.
    pub(super) at: Positions,
}

type ClientReader = tokio_util::codec::FramedRead<super::link::ClientRead, airlock_proto::FrameCodec>;
type ClientWriter = tokio_util::codec::FramedWrite<super::link::ClientWrite, airlock_proto::FrameCodec>;

/// Relays attachment after attachment until the session ends, then records how; returns
/// the client connection it ended on.
pub(super) async fn drive(
    app: &App,
    attached: Attached,
    (rec, deadlines): (SharedRecorder, Deadlines),
    pending: &PendingSession,
    (terminate, mut returns): (CancellationToken, mpsc::Receiver<ClientReturn>),
) -> Arc<dyn ClientLink> {
    let id = &pending.session_id;
    let limits = pending.launch.limits;
    let Attached { client: (mut c_read, mut c_write), mut link, mut agent, mut at } = attached;
    // Bytes relayed over every attachment (each splice counts its own).
    let mut relayed = (0u64, 0u64);
    let window = pending.launch.resume_window;
    let outcome = loop {
        // The agent keeps the process as long as we wait for it.
        let seconds = u32::try_from(window.as_secs()).unwrap_or(u32::MAX);
        if let Err(e) = agent.send_control(&Control::ResumeWindow { seconds }).await {
            tracing::debug!(session = %id, "cannot send the resume window: {e}");
        }
        let lost = {
            let link = link.clone();
            move || link.lost()
        };
        let client = (&mut c_read, &mut c_write);
        let a = splice_attached(
            client,
            agent.split(),
            rec.clone(),
            terminate.clone(),
            (limits, deadlines, &lost),
            at,
        )
        .await;
        relayed.0 += a.bytes_from_client;
        relayed.1 += a.bytes_from_agent;
        crate::metrics::bytes_relayed(crate::metrics::FROM_CLIENT, a.bytes_from_client);
        crate::metrics::bytes_relayed(crate::metrics::FROM_AGENT, a.bytes_from_agent);
        if a.client_detached && window.is_zero() {
            close_on_agent(app, pending).await;
            break Attachment { end: EndReason::ClientLost, ..a };
        }
        if a.client_detached {
            tracing::info!(session = %id, reason = %a.message, "the client's connection was lost; waiting for it to resume");
            state::detached(app, id, &terminate).await;
            let back = tokio::select! {
                back = returns.recv() => back,
                _ = terminate.cancelled() => None,
                _ = tokio::time::sleep(window) => None,
            };
            let Some(back) = back else {
                let (end, message) = if terminate.is_cancelled() {
                    (EndReason::Terminated, "session terminated while its client was away".to_owned())
                } else {
                    let window = window.as_secs();
                    (
                        EndReason::ClientLost,
                        format!("the client did not come back within the resume window of {window} s"),
                    )
                };
                close_on_agent(app, pending).await;
                break Attachment { end, message, ..a };
            };
            let ClientReturn { stream, output_next, link: next } = back;
            link = next;
            (c_read, c_write) = stream.split();
            match reattach_agent(app, pending, output_next, &terminate, deadline_after(window)).await {
                Ok((stream, input_next)) => {
                    tracing::info!(session = %id, input_next, output_next, "client resumed");
                    if c_write.send(Frame::control(&Control::Resumed { input_next })).await.is_err() {
                        // Lost again at once: the next splice sees it and waits again.
                        tracing::debug!(session = %id, "the resumed client went away at once");
                    }
                    state::attached(app, id, &terminate).await;
                    at = Positions { input_next, output_next, rewind: true, ..a.positions };
                    agent = stream;
                    continue;
                }
                Err((end, reason, message)) => {
                    let _ = c_write
                        .send(Frame::control(&Control::Close { reason, message: message.clone() }))
                        .await;
                    let _ = c_write.close().await;
                    break Attachment { end, message, ..a };
                }
            }
        }
        if !a.agent_detached {
            break a;
        }
        tracing::info!(session = %id, "the agent's link dropped; waiting for it to re-attach the session");
        state::detached(app, id, &terminate).await;
        match reattach_agent(app, pending, a.positions.output_next, &terminate, deadline_after(window)).await
        {
            Ok((stream, input_next)) => {
                tracing::info!(session = %id, input_next, output_next = a.positions.output_next, "agent re-attached");
                if c_write.send(Frame::control(&Control::Resumed { input_next })).await.is_err() {
                    tracing::debug!(session = %id, "the client went away while the agent was away");
                }
                state::attached(app, id, &terminate).await;
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
    app.registry.session_ended(id);
    let outcome = Attachment { bytes_from_client: relayed.0, bytes_from_agent: relayed.1, ..outcome };
    let status = match outcome.end {
        EndReason::ProtocolError => SessionStatus::Failed,
        _ => SessionStatus::Terminated,
    };
    finish(app, pending, rec, outcome, status).await;
    link
}

/// The instant `window` from now.
pub(super) fn deadline_after(window: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + window
}

/// Finishes the recording and records the session's end with `status`.
pub(super) async fn finish(
    app: &App,
    pending: &PendingSession,
    rec: SharedRecorder,
    a: Attachment,
    status: SessionStatus,
) {
    let id = &pending.session_id;
    let outcome = SpliceOutcome {
        recording: finish_recording(rec, a.end, a.exit_code).await,
        end: a.end,
        exit_code: a.exit_code,
        message: a.message,
        bytes_from_client: a.bytes_from_client,
        bytes_from_agent: a.bytes_from_agent,
    };
    let end = SessionEnd {
        status,
        end_us: now_us(),
        details: outcome.message.clone(),
        exit_code: outcome.exit_code,
    };
    state::ended_or_log(app, id, &end).await;
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

/// Ends a detached session's process on the agent at once, if the agent is connected (else
/// the agent ends it when its own resume window passes).
pub(super) async fn close_on_agent(app: &App, pending: &PendingSession) {
    let Some(link) = app.registry.agent(&pending.target) else { return };
    let close = async {
        let (mut stream, _) = attach_on(&link.connection, pending, u64::MAX).await.ok()?;
        let message = "the session ended while detached".to_owned();
        stream.send_control(&Control::Close { reason: CloseReason::Terminated, message }).await.ok()?;
        let _ = SinkExt::close(&mut stream.writer).await;
        Some(())
    };
    if tokio::time::timeout(START_DEADLINE, close).await.ok().flatten().is_none() {
        tracing::debug!(session = %pending.session_id, "could not reach the agent to end the detached session");
    }
}

/// Waits for the session's agent to be connected (within the resume window) and re-attaches
/// the session on a new stream: `Attach` from `resend_from`, answered by `Attached` with the
/// next input frame the agent expects.
pub(super) async fn reattach_agent(
    app: &App,
    pending: &PendingSession,
    resend_from: u64,
    terminate: &CancellationToken,
    deadline: tokio::time::Instant,
) -> Result<(AgentStream, u64), (EndReason, CloseReason, String)> {
    let window = pending.launch.resume_window;
    loop {
        if terminate.is_cancelled() {
            close_on_agent(app, pending).await;
            return Err((EndReason::Terminated, CloseReason::Terminated, "session terminated".into()));
        }
        if tokio::time::Instant::now() >= deadline {
            let window = window.as_secs();
            let message =
                format!("{} did not come back within the resume window of {window} s", pending.target);
            return Err((EndReason::AgentLost, CloseReason::AgentLost, message));
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
) -> Result<(AgentStream, u64), AttachError> {
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
