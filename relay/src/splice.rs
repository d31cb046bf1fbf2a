//! One session's splice: client ⇄ agent, two directions, one recording.
//!
//! Each direction reads a frame, records it, then writes it on; the write must finish
//! before the next read, so a slow reader slows its own session and nothing queues without
//! bound (QUIC flow control carries the backpressure to the producer).

use std::sync::Arc;
use std::time::Duration;

use airlock_proto::{CloseReason, Control, Frame, FrameCodec, FrameKind, ProtoError};
use airlock_recordings::{EndReason, Manifest, Recorder, RecordingError};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// The most output gathered into one recording write.
const BATCH_LIMIT: usize = 256 * 1024;

/// How long the agent gets to report an exit after being told to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Time limits of a session, from the session preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// End the session after this long without input from the client (keys, resizes).
    /// Output alone does not keep a session alive: a forgotten `tail -f` is still idle.
    pub idle: Option<Duration>,
    /// End the session this long after it started, whatever happens in it.
    pub max: Option<Duration>,
}

/// How a splice ended.
#[derive(Debug)]
pub struct SpliceOutcome {
    /// Which side or event ended the session.
    pub end: EndReason,
    /// The remote process's exit code, when the agent reported one.
    pub exit_code: Option<i32>,
    /// Why, for people (logs, DescribeSessions `Details`).
    pub message: String,
    /// Payload bytes forwarded from the client to the agent.
    pub bytes_from_client: u64,
    /// Payload bytes forwarded from the agent to the client.
    pub bytes_from_agent: u64,
    /// The finished recording, or why it could not be finished.
    pub recording: Result<Manifest, RecordingError>,
}

type Shared = Arc<Mutex<Recorder>>;

enum UpEnd {
    Terminated,
    Idle(Duration),
    MaxDuration(Duration),
    ClientGone(String),
    AgentUnwritable,
    Protocol(String),
    RecordingFailed(String),
}

enum DownEnd {
    Finished,
    AgentClosed(CloseReason, String),
    Protocol(String),
    RecordingFailed(String),
    StopTimeout,
}

/// Relays frames between `client` and `agent` until the session ends, recording into
/// `recorder`. Cancelling `terminate` ends the session as TerminateSession does.
pub async fn splice<CR, CW, AR, AW>(
    client: (FramedRead<CR, FrameCodec>, FramedWrite<CW, FrameCodec>),
    agent: (FramedRead<AR, FrameCodec>, FramedWrite<AW, FrameCodec>),
    recorder: Recorder,
    terminate: CancellationToken,
    limits: Limits,
) -> SpliceOutcome
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    AR: AsyncRead + Unpin,
    AW: AsyncWrite + Unpin,
{
    let (c_read, mut c_write) = client;
    let (a_read, a_write) = agent;
    let rec: Shared = Arc::new(Mutex::new(recorder));
    let client_gone = CancellationToken::new();
    let stop = CancellationToken::new();
    let mut bytes_up = 0u64;

    let (up_end, down) = {
        let up = upstream(c_read, a_write, rec.clone(), (terminate.clone(), limits), &mut bytes_up);
        let stops =
            Stops { terminate: terminate.clone(), client_gone: client_gone.clone(), stop: stop.clone() };
        let down = downstream(a_read, &mut c_write, rec.clone(), stops);
        tokio::pin!(up, down);
        tokio::select! {
            d = &mut down => (None, d),
            u = &mut up => {
                match u {
                    UpEnd::ClientGone(_) => client_gone.cancel(),
                    _ => stop.cancel(),
                }
                (Some(u), down.await)
            }
        }
    };
    let Down { end: down_end, forwarding, bytes: bytes_down, exit_code } = down;

    let (end, reason, message) = classify(&terminate, up_end, down_end, exit_code);
    if forwarding {
        let _ = c_write.send(Frame::control(&Control::Close { reason, message: message.clone() })).await;
        let _ = c_write.close().await;
    }
    let recording = match Arc::try_unwrap(rec) {
        Ok(m) => m.into_inner().finish(end, exit_code).await,
        // Both directions have returned, so no other owner is left.
        Err(_) => Err(RecordingError::BadName("recording still shared".into())),
    };
    SpliceOutcome {
        end,
        exit_code,
        message,
        bytes_from_client: bytes_up,
        bytes_from_agent: bytes_down,
        recording,
    }
}

fn classify(
    terminate: &CancellationToken,
    up: Option<UpEnd>,
    down: DownEnd,
    exit_code: Option<i32>,
) -> (EndReason, CloseReason, String) {
    if let DownEnd::RecordingFailed(m) | DownEnd::Protocol(m) = &down {
        let (end, reason) = match down {
            DownEnd::Protocol(_) => (EndReason::ProtocolError, CloseReason::ProtocolError),
            _ => (EndReason::ProtocolError, CloseReason::Internal),
        };
        return (end, reason, m.clone());
    }
    match up {
        Some(UpEnd::Idle(d)) => {
            let m = format!("session ended after {} without input (idleSessionTimeout)", minutes(d));
            return (EndReason::IdleTimeout, CloseReason::Terminated, m);
        }
        Some(UpEnd::MaxDuration(d)) => {
            let m = format!("session ended at its maximum duration of {} (maxSessionDuration)", minutes(d));
            return (EndReason::MaxDuration, CloseReason::Terminated, m);
        }
        Some(UpEnd::Protocol(m)) => return (EndReason::ProtocolError, CloseReason::ProtocolError, m),
        Some(UpEnd::RecordingFailed(m)) => return (EndReason::ProtocolError, CloseReason::Internal, m),
        _ => {}
    }
    if terminate.is_cancelled() {
        return (EndReason::Terminated, CloseReason::Terminated, "session terminated".into());
    }
    match (up, down) {
        (Some(UpEnd::ClientGone(m)), _) => (EndReason::ClientLost, CloseReason::ClientLost, m),
        (_, DownEnd::Finished) if exit_code.is_some() => {
            (EndReason::Exited, CloseReason::Exited, format!("exited with code {}", exit_code.unwrap_or(0)))
        }
        (_, DownEnd::AgentClosed(reason, m)) => (EndReason::AgentLost, reason, m),
        (_, DownEnd::StopTimeout) => {
            (EndReason::AgentLost, CloseReason::AgentLost, "agent did not stop the session in time".into())
        }
        (Some(UpEnd::AgentUnwritable), _) | (_, _) => (
            EndReason::AgentLost,
            CloseReason::AgentLost,
            "the agent's stream ended without an exit status".into(),
        ),
    }
}

/// "20 min", or seconds when shorter than a minute.
fn minutes(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Sleeps until `at`, or forever when there is no deadline (a disabled time limit).
pub async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn upstream<CR, AW>(
    mut c_read: FramedRead<CR, FrameCodec>,
    mut a_write: FramedWrite<AW, FrameCodec>,
    rec: Shared,
    (terminate, limits): (CancellationToken, Limits),
    bytes: &mut u64,
) -> UpEnd
where
    CR: AsyncRead + Unpin,
    AW: AsyncWrite + Unpin,
{
    let mut expect_seq = 0u64;
    let started = Instant::now();
    let end_at = limits.max.map(|m| started + m);
    let mut idle_at = limits.idle.map(|i| started + i);
    let end = loop {
        let next = tokio::select! {
            _ = terminate.cancelled() => {
                let msg = Control::Close { reason: CloseReason::Terminated, message: "session terminated".into() };
                let _ = a_write.send(Frame::control(&msg)).await;
                break UpEnd::Terminated;
            }
            _ = until(idle_at) => break UpEnd::Idle(limits.idle.unwrap_or_default()),
            _ = until(end_at) => break UpEnd::MaxDuration(limits.max.unwrap_or_default()),
            next = c_read.next() => next,
        };
        let frame = match next {
            None => break UpEnd::ClientGone("the client disconnected".into()),
            Some(Err(ProtoError::Io(e))) => {
                break UpEnd::ClientGone(format!("the client's stream failed: {e}"))
            }
            Some(Err(e)) => break UpEnd::Protocol(format!("client: {e}")),
            Some(Ok(frame)) => frame,
        };
        // Acknowledgements are bookkeeping, not activity: only input keeps a session alive.
        let is_ack = frame.kind == FrameKind::Control && matches!(frame.to_control(), Ok(Control::Ack { .. }));
        if !is_ack {
            idle_at = limits.idle.map(|i| Instant::now() + i);
        }
        match frame.kind {
            FrameKind::Data => {
                if frame.seq != expect_seq {
                    break UpEnd::Protocol(format!(
                        "client: data frame {} out of order, expected {expect_seq}",
                        frame.seq
                    ));
                }
                expect_seq += 1;
                *bytes += frame.payload.len() as u64;
                if let Err(e) = rec.lock().await.input(&frame.payload).await {
                    break UpEnd::RecordingFailed(e.to_string());
                }
            }
            FrameKind::Control => match frame.to_control() {
                Ok(Control::Resize { cols, rows }) => {
                    if let Err(e) = rec.lock().await.resize(cols, rows).await {
                        break UpEnd::RecordingFailed(e.to_string());
                    }
                }
                Ok(Control::Close { .. }) => break UpEnd::ClientGone("the client closed the session".into()),
                // The client's acknowledgement of output, for the agent.
                Ok(Control::Ack { .. }) => {}
                Ok(other) => break UpEnd::Protocol(format!("client sent an unexpected {other:?}")),
                Err(e) => break UpEnd::Protocol(format!("client: {e}")),
            },
            FrameKind::Stderr => break UpEnd::Protocol("client sent a stderr frame".into()),
        }
        if a_write.send(frame).await.is_err() {
            break UpEnd::AgentUnwritable;
        }
    };
    if let UpEnd::Idle(_) | UpEnd::MaxDuration(_) = &end {
        let msg =
            Control::Close { reason: CloseReason::Terminated, message: "session time limit reached".into() };
        let _ = a_write.send(Frame::control(&msg)).await;
    }
    if let UpEnd::ClientGone(m) | UpEnd::Protocol(m) | UpEnd::RecordingFailed(m) = &end {
        let reason = match end {
            UpEnd::ClientGone(_) => CloseReason::ClientLost,
            UpEnd::Protocol(_) => CloseReason::ProtocolError,
            _ => CloseReason::Internal,
        };
        let _ = a_write.send(Frame::control(&Control::Close { reason, message: m.clone() })).await;
    }
    let _ = a_write.close().await;
    end
}

/// What tells the agent-to-client direction to wind down.
struct Stops {
    /// TerminateSession.
    terminate: CancellationToken,
    /// The client went away: stop forwarding, give the agent its grace period.
    client_gone: CancellationToken,
    /// The other direction ended for another reason: give the agent its grace period.
    stop: CancellationToken,
}

/// How the agent-to-client direction ended.
struct Down {
    end: DownEnd,
    /// Whether the client can still be written to.
    forwarding: bool,
    bytes: u64,
    exit_code: Option<i32>,
}

async fn downstream<AR, CW>(
    mut a_read: FramedRead<AR, FrameCodec>,
    c_write: &mut FramedWrite<CW, FrameCodec>,
    rec: Shared,
    stops: Stops,
) -> Down
where
    AR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
{
    let Stops { terminate, client_gone, stop } = stops;
    let (mut bytes, mut exit_code) = (0u64, None);
    let mut expect_seq = 0u64;
    let mut forwarding = true;
    let mut stop_at: Option<Instant> = None;
    // A frame read while gathering a batch that is not data; handled next round.
    let mut held: Option<Option<Result<Frame, ProtoError>>> = None;
    let end = loop {
        let next = match (held.take(), stop_at) {
            (Some(next), _) => next,
            (None, Some(at)) => match tokio::time::timeout_at(at, a_read.next()).await {
                Ok(next) => next,
                Err(_) => break DownEnd::StopTimeout,
            },
            (None, None) => tokio::select! {
                next = a_read.next() => next,
                _ = terminate.cancelled() => { stop_at = Some(Instant::now() + STOP_GRACE); continue; }
                _ = stop.cancelled() => { stop_at = Some(Instant::now() + STOP_GRACE); continue; }
                _ = client_gone.cancelled() => {
                    forwarding = false;
                    stop_at = Some(Instant::now() + STOP_GRACE);
                    continue;
                }
            },
        };
        let frame = match next {
            None => break DownEnd::Finished,
            Some(Err(ProtoError::Io(e))) => {
                break DownEnd::AgentClosed(CloseReason::AgentLost, format!("the agent's stream failed: {e}"))
            }
            Some(Err(e)) => break DownEnd::Protocol(format!("agent: {e}")),
            Some(Ok(frame)) => frame,
        };
        if frame.kind == FrameKind::Control {
            match frame.to_control() {
                Ok(Control::Exit { code }) => exit_code = Some(code),
                // The agent's acknowledgement of input, for the client.
                Ok(Control::Ack { .. }) => {}
                Ok(Control::Close { reason, message }) => break DownEnd::AgentClosed(reason, message),
                Ok(other) => break DownEnd::Protocol(format!("agent sent an unexpected {other:?}")),
                Err(e) => break DownEnd::Protocol(format!("agent: {e}")),
            }
            if forwarding && c_write.send(frame).await.is_err() {
                forwarding = false;
            }
            continue;
        }
        // Output: take what the agent already sent as well, so one recording write and one
        // flush towards the client serve the whole batch under bulk output, while a lone
        // keystroke echo still goes out at once.
        let mut batch = vec![frame];
        let mut size = batch[0].payload.len();
        while size < BATCH_LIMIT {
            match a_read.next().now_or_never() {
                Some(Some(Ok(f))) if f.kind != FrameKind::Control => {
                    size += f.payload.len();
                    batch.push(f);
                }
                Some(other) => {
                    held = Some(other);
                    break;
                }
                None => break,
            }
        }
        let mut text = Vec::with_capacity(size);
        let mut bad_seq = None;
        for f in &batch {
            if f.seq != expect_seq {
                bad_seq = Some(f.seq);
                break;
            }
            expect_seq += 1;
            text.extend_from_slice(&f.payload);
        }
        if let Some(seq) = bad_seq {
            break DownEnd::Protocol(format!("agent: data frame {seq} out of order, expected {expect_seq}"));
        }
        bytes += size as u64;
        if let Err(e) = rec.lock().await.output(&text).await {
            break DownEnd::RecordingFailed(format!("recording failed, session stopped: {e}"));
        }
        if forwarding {
            let mut sent = Ok(());
            for f in batch {
                sent = c_write.feed(f).await;
                if sent.is_err() {
                    break;
                }
            }
            if sent.is_err() || c_write.flush().await.is_err() {
                forwarding = false;
            }
        }
    };
    Down { end, forwarding, bytes, exit_code }
}

#[cfg(test)]
mod tests;
