//! A port session (port forwarding, ssh ProxyCommand): the client's first stream stays open
//! as the session; every further stream it opens carries one TCP connection, which the
//! broker asks the agent to dial and then pipes, recording each connection's life.

use std::sync::Arc;
use std::time::Duration;

use airlock_proto::{CloseReason, Control, FramedStream, MAX_FRAME_LEN};
use airlock_recordings::{EndReason, Recorder};
use airlock_relay::until;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::{now_us, App};
use crate::registry::{PendingSession, PortTarget};
use crate::store::{SessionEnd, SessionStatus};

use super::link::{ClientLink, ClientStream};
use super::serve::AgentStream;

/// How many forwarded connections one session may have open at once.
const MAX_CONNECTIONS: usize = 1024;
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// The agent resolves and connects within 10 s; this leaves room for the link.
const DIAL_DEADLINE: Duration = Duration::from_secs(15);

/// What every connection task of a session shares.
struct Shared {
    app: Arc<App>,
    session: PendingSession,
    targets: Vec<PortTarget>,
    recorder: Mutex<Recorder>,
    client_addr: std::net::SocketAddr,
}

impl Shared {
    async fn note(&self, text: String) {
        if let Err(e) = self.recorder.lock().await.marker(&text).await {
            tracing::error!(session = %self.session.session_id, error = %e, "cannot record");
        }
    }
}

/// Runs a port session after its token was redeemed.
pub(super) async fn run(
    app: Arc<App>,
    link: &dyn ClientLink,
    mut client: ClientStream,
    session: PendingSession,
    targets: Vec<PortTarget>,
    recorder: Recorder,
    terminate: CancellationToken,
) {
    let id = session.session_id.clone();
    let listing: Vec<String> = targets.iter().map(|t| format!("{}:{}", t.host, t.port)).collect();
    let shared = Arc::new(Shared {
        app: app.clone(),
        session,
        targets,
        recorder: Mutex::new(recorder),
        client_addr: link.remote(),
    });
    shared.note(format!("port session to {} from {}", listing.join(", "), shared.client_addr)).await;
    super::state::attached(&app, &id, &terminate).await;
    let _ = client.send_control(&Control::Ready { session_id: id.clone() }).await;
    tracing::info!(session = %id, targets = %listing.join(", "), "port session connected");

    let stop_connections = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = JoinSet::new();
    let mut number = 0u64;
    // Time limits: the maximum duration as for shells; idle means no connection open (an open
    // connection, such as an ssh session, is in use however quiet it is).
    let limits = shared.session.launch.limits;
    let end_at = limits.max.map(|m| Instant::now() + m);
    let mut idle_at = limits.idle.map(|i| Instant::now() + i);
    let (end, message) = loop {
        tokio::select! {
            _ = terminate.cancelled() => break (EndReason::Terminated, "session terminated".to_owned()),
            _ = until(end_at) => {
                let m = limits.max.unwrap_or_default().as_secs() / 60;
                break (EndReason::MaxDuration, format!("session ended at its maximum duration of {m} min (maxSessionDuration)"));
            }
            _ = until(idle_at), if tasks.is_empty() => {
                let m = limits.idle.unwrap_or_default().as_secs() / 60;
                break (EndReason::IdleTimeout, format!("session ended after {m} min without a connection (idleSessionTimeout)"));
            }
            frame = client.recv() => match frame {
                Ok(Some(f)) if matches!(f.to_control(), Ok(Control::Close { .. })) => {
                    break (EndReason::ClientLost, "the client ended the session".to_owned())
                }
                Ok(Some(_)) => break (EndReason::ProtocolError, "unexpected frame on a port session's stream".to_owned()),
                Ok(None) => break (EndReason::ClientLost, "the client ended the session".to_owned()),
                Err(e) => break (EndReason::ClientLost, format!("the client's session stream failed: {e}")),
            },
            incoming = link.accept_stream() => match incoming {
                Ok(stream) => {
                    number += 1;
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        let mut s = stream;
                        let message = format!("more than {MAX_CONNECTIONS} connections at once");
                        tokio::spawn(async move { refuse(&mut s, CloseReason::ConnectFailed, message).await });
                        continue;
                    };
                    let (shared, stop) = (shared.clone(), stop_connections.clone());
                    idle_at = limits.idle.map(|i| Instant::now() + i);
                    tasks.spawn(async move {
                        forward(&shared, stream, number, stop).await;
                        drop(permit);
                    });
                }
                Err(e) => break (EndReason::ClientLost, format!("the client's connection ended: {e}")),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                // The idle time counts from the last connection's end.
                idle_at = limits.idle.map(|i| Instant::now() + i);
            }
        }
    };
    stop_connections.cancel();
    while tasks.join_next().await.is_some() {}
    app.registry.session_ended(&id);
    let reason = match end {
        EndReason::Terminated | EndReason::MaxDuration | EndReason::IdleTimeout => CloseReason::Terminated,
        _ => CloseReason::ClientLost,
    };
    refuse(&mut client, reason, message.clone()).await;
    let status =
        if end == EndReason::ProtocolError { SessionStatus::Failed } else { SessionStatus::Terminated };
    let record = SessionEnd { status, end_us: now_us(), details: message.clone(), exit_code: None };
    super::state::ended_or_log(&app, &id, &record).await;
    let Ok(shared) = Arc::try_unwrap(shared) else {
        tracing::error!(session = %id, "recording still in use at session end");
        return;
    };
    match shared.recorder.into_inner().finish(end, None).await {
        Ok(m) => {
            tracing::info!(session = %id, connections = number, reason = %message, recording_sha256 = %m.sha256, "port session ended")
        }
        Err(e) => {
            tracing::error!(session = %id, error = %e, "port session ended but its recording could not be finished")
        }
    }
}

/// One forwarded connection: `Connect` from the client, `Dial` to the agent, then the pipe.
async fn forward(shared: &Shared, mut client: ClientStream, number: u64, stop: CancellationToken) {
    let target = match client.recv_control(CONNECT_DEADLINE).await {
        Ok(Control::Connect { target }) => target,
        other => {
            let message = format!("expected Connect, got {other:?}");
            return refuse(&mut client, CloseReason::ProtocolError, message).await;
        }
    };
    let Some(t) = shared.targets.get(target as usize) else {
        let message = format!("this session has no port target {target}");
        return refuse(&mut client, CloseReason::ProtocolError, message).await;
    };
    let dest = format!("{}:{}", t.host, t.port);
    let mut agent = match dial(shared, t).await {
        Ok(a) => a,
        Err((reason, message)) => {
            shared.note(format!("conn {number} to {dest} refused: {message}")).await;
            return refuse(&mut client, reason, message).await;
        }
    };
    if client.send_control(&Control::Started).await.is_err() {
        let _ = agent
            .send_control(&Control::Close { reason: CloseReason::ClientLost, message: "client left".into() })
            .await;
        return;
    }
    shared.note(format!("conn {number} open to {dest} for {}", shared.client_addr)).await;
    let tap = shared
        .session
        .launch
        .record_port_data
        .then_some(airlock_relay::Tap { recorder: &shared.recorder, conn: number });
    let outcome = airlock_relay::pipe(client.split(), agent.split(), stop, tap).await;
    let how = outcome.error.map(|e| format!(" ({e})")).unwrap_or_default();
    shared
        .note(format!(
            "conn {number} closed: {} bytes to {dest}, {} bytes back{how}",
            outcome.bytes_from_client, outcome.bytes_from_agent
        ))
        .await;
}

/// Asks the agent to connect to `t`; the agent's refusal reason is passed on as is.
async fn dial(shared: &Shared, t: &PortTarget) -> Result<AgentStream, (CloseReason, String)> {
    let instance = &shared.session.target;
    let Some(agent) = shared.app.registry.agent(instance) else {
        return Err((CloseReason::TargetNotConnected, format!("{instance} is not connected")));
    };
    let lost =
        |e: &dyn std::fmt::Display| (CloseReason::TargetNotConnected, format!("{instance} went away: {e}"));
    let (send, recv) = agent.connection.open_bi().await.map_err(|e| lost(&e))?;
    let mut stream = FramedStream::new(recv, send, MAX_FRAME_LEN);
    let dial =
        Control::Dial { session_id: shared.session.session_id.clone(), host: t.host.clone(), port: t.port };
    stream.send_control(&dial).await.map_err(|e| lost(&e))?;
    match stream.recv_control(DIAL_DEADLINE).await {
        Ok(Control::Started) => Ok(stream),
        Ok(Control::Close { reason, message }) => Err((reason, message)),
        Ok(other) => {
            Err((CloseReason::ProtocolError, format!("the agent answered {other:?} instead of Started")))
        }
        Err(e) => Err((
            CloseReason::ConnectFailed,
            format!("the agent did not connect to {}:{}: {e}", t.host, t.port),
        )),
    }
}

/// Sends a final `Close` and finishes the stream.
pub(super) async fn refuse(stream: &mut ClientStream, reason: CloseReason, message: String) {
    let _ = stream.send_control(&Control::Close { reason, message }).await;
    let _ = futures_util::SinkExt::close(&mut stream.writer).await;
}
