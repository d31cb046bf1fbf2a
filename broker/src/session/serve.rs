//! One client connection: redeem its token, open the session on the agent, run it.

use std::sync::Arc;
use std::time::Duration;

use airlock_proto::{
    ClientRequest, CloseReason, Control, FramedStream, PeerVersion, SessionSpec, MAX_FRAME_LEN,
};
use airlock_recordings::{EndReason, Recorder, RecordingError, RecordingMeta};

use super::link::{linger, ClientLink, ClientStream};
use super::port::refuse;
use crate::app::{now_us, App};
use crate::registry::{ClientReturn, PendingSession, SessionPlan, TokenRefusal};
use crate::store::{SessionEnd, SessionStatus};

const HELLO_DEADLINE: Duration = Duration::from_secs(10);
/// How long the agent may take to start a shell or command.
pub(super) const START_DEADLINE: Duration = Duration::from_secs(15);

/// A stream to an agent.
pub(super) type AgentStream = FramedStream<quinn::RecvStream, quinn::SendStream>;

/// Serves one client connection: its first stream's hello (a session token, or a resume
/// token), then the session to its end.
pub(crate) async fn serve(app: Arc<App>, link: Arc<dyn ClientLink>) {
    let remote = link.remote();
    let Ok(Ok(mut client)) = tokio::time::timeout(HELLO_DEADLINE, link.accept_stream()).await else {
        link.close("no session stream");
        return;
    };
    let (version, hello) = match client.recv_control(HELLO_DEADLINE).await {
        Ok(Control::ClientHello(h)) => (PeerVersion::unversioned(), h),
        Ok(Control::ClientHelloVersioned { version, request }) => (version, request),
        Ok(Control::ClientResume { token, output_next }) => {
            return resume(&app, link, client, &token, output_next).await;
        }
        other => {
            tracing::info!(%remote, ?other, "client did not present a token");
            refuse(&mut client, CloseReason::ProtocolError, "expected ClientHello".into()).await;
            linger(&*link).await;
            return;
        }
    };
    if let Err(e) = version.check("client") {
        tracing::info!(%remote, error = %e, "client refused");
        refuse(&mut client, CloseReason::ProtocolError, e.to_string()).await;
        linger(&*link).await;
        return;
    }
    let (pending, terminate) = match app.registry.redeem(&hello.token) {
        Ok(redeemed) => redeemed,
        Err(refusal) => {
            tracing::warn!(%remote, %refusal, "session token refused");
            refuse(&mut client, CloseReason::Unauthorized, refusal.to_string()).await;
            linger(&*link).await;
            return;
        }
    };
    link.admitted();
    let id = pending.session_id.clone();
    if let SessionPlan::Port(targets) = pending.plan.clone() {
        match start_recording(&app, &pending, 0, 0, String::new()).await {
            Ok(recorder) => {
                super::port::run(app.clone(), &*link, client, pending, targets, recorder, terminate).await
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
                let last =
                    super::process::run(&app, (client, link), agent, recorder, &pending, terminate).await;
                app.registry.session_ended(&id);
                linger(&*last).await;
                return;
            }
        }
    }
    app.registry.session_ended(&id);
    linger(&*link).await;
}

/// A client back after a lost connection (`ClientResume` with a ResumeSession token): hands
/// the stream to its live session, then keeps the connection until the session is done
/// with it.
async fn resume(
    app: &App,
    link: Arc<dyn ClientLink>,
    mut client: ClientStream,
    token: &str,
    output_next: u64,
) {
    let remote = link.remote();
    let (id, returns) = match app.registry.redeem_resume(token) {
        Ok(found) => found,
        Err(refusal) => {
            tracing::warn!(%remote, %refusal, "resume token refused");
            let reason =
                if refusal == TokenRefusal::Expired { CloseReason::Gone } else { CloseReason::Unauthorized };
            refuse(&mut client, reason, refusal.to_string()).await;
            linger(&*link).await;
            return;
        }
    };
    link.admitted();
    tracing::info!(session = %id, %remote, output_next, "client resuming");
    let back = ClientReturn { stream: client, output_next, link: link.clone() };
    if returns.send(back).await.is_err() {
        // The session ended meanwhile; its stream went with the message.
        link.close("session ended");
        return;
    }
    // The session owns the stream now and closes the connection when it ends.
    link.closed().await;
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
    super::state::ended_or_log(app, id, &end).await;
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
) -> Result<(AgentStream, Recorder), (CloseReason, String)> {
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
        SessionPlan::InteractiveCommand(command) => SessionSpec::InteractiveCommand {
            command: command.clone(),
            cols,
            rows,
            term: term.clone(),
            run_as: pending.launch.run_as.clone(),
        },
        SessionPlan::Port(_) => {
            return Err((CloseReason::ProtocolError, "a port session runs no process".into()))
        }
    };
    let mut recorder = start_recording(app, pending, cols, rows, term).await?;
    // Checkpoints of what is recorded let a restarted broker resume the session (wire.md §2.4).
    if let Err(e) = recorder.track_frames().await {
        tracing::warn!(session = %pending.session_id, error = %e, "the session will not survive a broker restart");
    }
    let started = match app.registry.agent(&pending.target) {
        // A new kind of session only goes to an agent that says it knows it (wire.md §2.6).
        Some(agent)
            if matches!(spec, SessionSpec::InteractiveCommand { .. })
                && !agent.version.has(airlock_proto::version::INTERACTIVE_COMMAND) =>
        {
            Err((
                CloseReason::StartFailed,
                format!(
                    "the agent on {} is too old for interactive commands (AWS-StartInteractiveCommand): upgrade it",
                    pending.target
                ),
            ))
        }
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
) -> Result<AgentStream, (CloseReason, String)> {
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
