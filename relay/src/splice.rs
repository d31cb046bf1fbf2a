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

/// A session's recorder, shared by the directions of each attachment and kept by the
/// session across attachments.
pub type SharedRecorder = Arc<Mutex<Recorder>>;
type Shared = SharedRecorder;

/// Where each direction of a session stands, carried from one attachment to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Positions {
    /// The number of the next input frame the agent expects (the client resends from here).
    pub input_next: u64,
    /// The number of the next output frame to forward to the client.
    pub output_next: u64,
    /// Input frames below this number are already in the recording.
    pub input_recorded: u64,
    /// Output frames below this number are already in the recording.
    pub output_recorded: u64,
    /// The client was just told to resend input from `input_next` (`Resumed`): frames it
    /// sent before it heard that, numbered past `input_next`, are skipped until the resend.
    pub rewind: bool,
}

/// How one attachment (a client stream and an agent stream) ended.
#[derive(Debug)]
pub struct Attachment {
    /// Which side or event ended it.
    pub end: EndReason,
    /// The remote process's exit code, when the agent reported one.
    pub exit_code: Option<i32>,
    /// Why, for people.
    pub message: String,
    /// Payload bytes forwarded from the client to the agent.
    pub bytes_from_client: u64,
    /// Payload bytes forwarded from the agent to the client.
    pub bytes_from_agent: u64,
    /// Where the directions stand now.
    pub positions: Positions,
    /// The agent's stream broke (its link dropped) while the client is still there: the
    /// session may re-attach the agent; nothing was sent to the client.
    pub agent_detached: bool,
    /// The client's connection was lost (not ended on purpose): the session may wait for
    /// the client to resume; the agent's stream was dropped without a `Close`.
    pub client_detached: bool,
}

enum UpEnd {
    Terminated,
    Idle(Duration),
    MaxDuration(Duration),
    ClientGone(String),
    /// The client's stream broke (not a deliberate end): the session may wait for it.
    ClientLost(String),
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
    /// The client detached: stopped between frames, never inside a recording write.
    Detached,
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
    let (mut c_read, mut c_write) = client;
    let rec: Shared = Arc::new(Mutex::new(recorder));
    let deadlines = Deadlines::from_now(limits);
    let a = splice_attached(
        (&mut c_read, &mut c_write),
        agent,
        rec.clone(),
        terminate,
        (limits, deadlines, &|| false),
        Positions::default(),
    )
    .await;
    let recording = finish_recording(rec, a.end, a.exit_code).await;
    SpliceOutcome {
        end: a.end,
        exit_code: a.exit_code,
        message: a.message,
        bytes_from_client: a.bytes_from_client,
        bytes_from_agent: a.bytes_from_agent,
        recording,
    }
}

/// Finishes a session's recording once no attachment holds it any more.
pub async fn finish_recording(
    rec: SharedRecorder,
    end: EndReason,
    exit_code: Option<i32>,
) -> Result<Manifest, RecordingError> {
    match Arc::try_unwrap(rec) {
        Ok(m) => m.into_inner().finish(end, exit_code).await,
        Err(_) => Err(RecordingError::BadName("recording still shared".into())),
    }
}

/// A session's time limits as instants: the maximum duration counts from the start, not
/// from each attachment.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// When the maximum duration is reached.
    pub end_at: Option<Instant>,
}

impl Deadlines {
    /// Deadlines of a session starting now.
    pub fn from_now(limits: Limits) -> Self {
        Deadlines { end_at: limits.max.map(|m| Instant::now() + m) }
    }
}

/// Relays one attachment: the session's client stream (borrowed: it outlives an agent
/// re-attach) and one agent stream, from `at`. Ends like [`splice`], or with
/// `agent_detached` when the agent's stream broke (the client was told nothing), or with
/// `client_detached` when the client's stream broke and `client_resumable` says the
/// connection was lost rather than closed (the agent was told nothing).
pub async fn splice_attached<CR, CW, AR, AW>(
    client: (&mut FramedRead<CR, FrameCodec>, &mut FramedWrite<CW, FrameCodec>),
    agent: (FramedRead<AR, FrameCodec>, FramedWrite<AW, FrameCodec>),
    rec: SharedRecorder,
    terminate: CancellationToken,
    (limits, deadlines, client_resumable): (Limits, Deadlines, &(dyn Fn() -> bool + Sync)),
    at: Positions,
) -> Attachment
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    AR: AsyncRead + Unpin,
    AW: AsyncWrite + Unpin,
{
    let (c_read, c_write) = client;
    let (a_read, a_write) = agent;
    let client_gone = CancellationToken::new();
    let stop = CancellationToken::new();
    let detach = CancellationToken::new();
    let mut up_pos =
        UpPos { next: at.input_next, recorded: at.input_recorded, bytes: 0, rewinding: at.rewind };
    let mut down_pos = DownPos { next: at.output_next, recorded: at.output_recorded };

    let mut detached_bytes_down = 0;
    let (up_end, down) = {
        let up = upstream(
            c_read,
            a_write,
            rec.clone(),
            (terminate.clone(), limits, deadlines),
            (&mut up_pos, client_resumable),
        );
        let stops = Stops {
            terminate: terminate.clone(),
            client_gone: client_gone.clone(),
            stop: stop.clone(),
            detach: detach.clone(),
        };
        let down = downstream(a_read, &mut *c_write, rec.clone(), stops, &mut down_pos);
        tokio::pin!(up, down);
        tokio::select! {
            d = &mut down => (None, Some(d)),
            u = &mut up => {
                if matches!(u, UpEnd::ClientLost(_)) && client_resumable() {
                    // Detached: the agent's stream is dropped without a Close (the agent
                    // keeps the session) and the client is told nothing. The other
                    // direction stops between frames, so what it recorded is whole.
                    detach.cancel();
                    detached_bytes_down = down.await.bytes;
                    (Some(u), None)
                } else {
                    match u {
                        UpEnd::ClientGone(_) | UpEnd::ClientLost(_) => client_gone.cancel(),
                        _ => stop.cancel(),
                    }
                    (Some(u), Some(down.await))
                }
            }
        }
    };
    let Some(down) = down else {
        return detached_client(up_end, up_pos, down_pos, detached_bytes_down);
    };
    let Down { end: down_end, forwarding, bytes: bytes_down, exit_code } = down;
    let pos = down_pos;
    let positions = Positions {
        input_next: up_pos.next,
        output_next: pos.next,
        input_recorded: up_pos.recorded,
        output_recorded: pos.recorded,
        rewind: up_pos.rewinding,
    };
    let agent_detached = up_end.is_none()
        && !terminate.is_cancelled()
        && exit_code.is_none()
        && forwarding
        && matches!(down_end, DownEnd::AgentClosed(CloseReason::AgentLost, _));

    let (end, reason, message) = classify(&terminate, up_end, down_end, exit_code);
    if forwarding && !agent_detached {
        let _ = c_write.send(Frame::control(&Control::Close { reason, message: message.clone() })).await;
        let _ = c_write.close().await;
    }
    Attachment {
        end,
        exit_code,
        message,
        bytes_from_client: up_pos.bytes,
        bytes_from_agent: bytes_down,
        positions,
        agent_detached,
        client_detached: false,
    }
}

/// The outcome of an attachment whose client went away: where the input stands (the output
/// position is the client's to say when it resumes).
fn detached_client(up: Option<UpEnd>, pos: UpPos, down: DownPos, bytes_down: u64) -> Attachment {
    let message = match up {
        Some(UpEnd::ClientLost(m)) => m,
        _ => String::new(),
    };
    Attachment {
        end: EndReason::ClientLost,
        exit_code: None,
        message,
        bytes_from_client: pos.bytes,
        bytes_from_agent: bytes_down,
        positions: Positions {
            input_next: pos.next,
            input_recorded: pos.recorded,
            rewind: pos.rewinding,
            output_next: down.next,
            output_recorded: down.recorded,
        },
        agent_detached: false,
        client_detached: true,
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
        (Some(UpEnd::ClientGone(m) | UpEnd::ClientLost(m)), _) => {
            (EndReason::ClientLost, CloseReason::ClientLost, m)
        }
        (_, DownEnd::Finished) if exit_code.is_some() => {
            (EndReason::Exited, CloseReason::Exited, format!("exited with code {}", exit_code.unwrap_or(0)))
        }
        (_, DownEnd::AgentClosed(reason, m)) => (EndReason::AgentLost, reason, m),
        (_, DownEnd::Detached) => {
            (EndReason::ClientLost, CloseReason::ClientLost, "the client's connection was lost".into())
        }
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

/// The client-to-agent direction's position.
struct UpPos {
    /// The next input frame to forward.
    next: u64,
    /// Input frames below this are recorded.
    recorded: u64,
    bytes: u64,
    /// See [`Positions::rewind`].
    rewinding: bool,
}

/// The agent-to-client direction's position.
#[derive(Clone, Copy)]
struct DownPos {
    /// The next output frame to forward.
    next: u64,
    /// Output frames below this are recorded.
    recorded: u64,
}

async fn upstream<CR, AW>(
    c_read: &mut FramedRead<CR, FrameCodec>,
    mut a_write: FramedWrite<AW, FrameCodec>,
    rec: Shared,
    (terminate, limits, deadlines): (CancellationToken, Limits, Deadlines),
    (pos, resumable): (&mut UpPos, &(dyn Fn() -> bool + Sync)),
) -> UpEnd
where
    CR: AsyncRead + Unpin,
    AW: AsyncWrite + Unpin,
{
    let started = Instant::now();
    let end_at = deadlines.end_at;
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
                break UpEnd::ClientLost(format!("the client's stream failed: {e}"))
            }
            Some(Err(e)) => break UpEnd::Protocol(format!("client: {e}")),
            Some(Ok(frame)) => frame,
        };
        // Acknowledgements are bookkeeping, not activity: only input keeps a session alive.
        let is_ack =
            frame.kind == FrameKind::Control && matches!(frame.to_control(), Ok(Control::Ack { .. }));
        if !is_ack {
            idle_at = limits.idle.map(|i| Instant::now() + i);
        }
        match frame.kind {
            FrameKind::Data => {
                if frame.seq < pos.next || (pos.rewinding && frame.seq > pos.next) {
                    continue; // the agent has it, or the client is about to resend it
                }
                if frame.seq != pos.next {
                    break UpEnd::Protocol(format!(
                        "client: data frame {} out of order, expected {}",
                        frame.seq, pos.next
                    ));
                }
                pos.rewinding = false;
                pos.next += 1;
                // Recorded once: a resend after a re-attach is forwarded, not recorded again.
                if frame.seq >= pos.recorded {
                    if let Err(e) = rec.lock().await.input(&frame.payload).await {
                        break UpEnd::RecordingFailed(e.to_string());
                    }
                    pos.recorded = frame.seq + 1;
                }
                pos.bytes += frame.payload.len() as u64;
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
    if let UpEnd::ClientLost(_) = &end {
        if resumable() {
            // A detach: the agent keeps the session for the resume window.
            return end;
        }
    }
    if let UpEnd::ClientGone(m) | UpEnd::ClientLost(m) | UpEnd::Protocol(m) | UpEnd::RecordingFailed(m) = &end
    {
        let reason = match end {
            UpEnd::ClientGone(_) | UpEnd::ClientLost(_) => CloseReason::ClientLost,
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
    /// The client detached: stop reading the agent at once.
    detach: CancellationToken,
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
    pos: &mut DownPos,
) -> Down
where
    AR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
{
    let Stops { terminate, client_gone, stop, detach } = stops;
    let (mut bytes, mut exit_code) = (0u64, None);
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
                _ = detach.cancelled() => break DownEnd::Detached,
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
            if f.seq != pos.next {
                bad_seq = Some(f.seq);
                break;
            }
            pos.next += 1;
            // Recorded once: output the agent resends after a re-attach is already there.
            if f.seq >= pos.recorded {
                text.extend_from_slice(&f.payload);
                pos.recorded = f.seq + 1;
            }
        }
        if let Some(seq) = bad_seq {
            let expected = pos.next;
            break DownEnd::Protocol(format!("agent: data frame {seq} out of order, expected {expected}"));
        }
        if !text.is_empty() {
            if let Err(e) = rec.lock().await.output(&text).await {
                break DownEnd::RecordingFailed(format!("recording failed, session stopped: {e}"));
            }
        }
        // Counted once recorded: a batch the recording refused was never relayed.
        bytes += size as u64;
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
