//! A session that outlives its stream (wire contract §2.4): the process, the output the
//! client has not acknowledged and the position of the input, kept across detaches for the
//! resume window.
//!
//! One task owns the session's life ([`run`]). It attaches the stream that opened the
//! session, and later streams the broker opens with `Attach`, one at a time. Output is
//! numbered once, when it is read from the process, and kept until the client's `Ack`
//! (passed on by the broker) releases it; a re-attach resends from the frame the client
//! says it lacks. When the kept output reaches [`OUTPUT_BUFFER`] the session stops reading
//! the process, which then blocks on its terminal: backpressure, never loss.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_proto::{CloseReason, Control, Frame, FrameCodec, FrameKind, SessionId};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::process::{Output, Process, ProcessControl};
use super::SessionLimits;

/// The most unacknowledged output one session keeps (then the process is made to wait).
pub const OUTPUT_BUFFER: usize = 8 << 20;
/// The most output merged into one frame.
const MERGE_LIMIT: usize = 64 * 1024;

/// A reader half of an attached stream.
pub(crate) type Reader = FramedRead<Box<dyn AsyncRead + Unpin + Send>, FrameCodec>;
/// A writer half of an attached stream.
pub(crate) type Writer = FramedWrite<Box<dyn AsyncWrite + Unpin + Send>, FrameCodec>;

/// A stream handed to a live session, and where its output resumes.
pub(crate) struct Attachment {
    pub reader: Reader,
    pub writer: Writer,
    /// The first output frame the client lacks.
    pub resend_from: u64,
    /// Whether to answer `Attached` first (a re-attach; the first stream got `Started`).
    pub announce: bool,
}

/// The agent's live sessions, across links: where `Attach` streams are handed over.
#[derive(Clone, Default)]
pub struct LiveSessions(Arc<Mutex<HashMap<SessionId, mpsc::Sender<Attachment>>>>);

impl LiveSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, mpsc::Sender<Attachment>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many sessions are live (running or waiting for a re-attach).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands `attachment` to the live session `id` (waiting, at most `patience`, while the
    /// session takes an earlier one); gives it back when there is no such session.
    pub(crate) async fn attach(
        &self,
        id: &SessionId,
        attachment: Attachment,
        patience: std::time::Duration,
    ) -> Result<(), Box<Attachment>> {
        let sender = self.lock().get(id).cloned();
        let Some(tx) = sender else { return Err(Box::new(attachment)) };
        match tx.send_timeout(attachment, patience).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(a) | mpsc::error::SendTimeoutError::Closed(a)) => {
                Err(Box::new(a))
            }
        }
    }

    fn register(&self, id: SessionId) -> mpsc::Receiver<Attachment> {
        let (tx, rx) = mpsc::channel(1);
        self.lock().insert(id, tx);
        rx
    }

    fn remove(&self, id: &SessionId) {
        self.lock().remove(id);
    }
}

/// Output numbered and kept until acknowledged.
#[derive(Default)]
struct Kept {
    frames: VecDeque<Frame>,
    /// Number of `frames[0]`.
    first: u64,
    /// Number the next frame gets.
    next: u64,
    bytes: usize,
    /// The exit code, once the process ended and all its output is kept.
    exit: Option<i32>,
}

impl Kept {
    /// Drops what the client acknowledged (everything numbered below `next`).
    fn release(&mut self, next: u64) {
        while self.first < next.min(self.next) {
            if let Some(f) = self.frames.pop_front() {
                self.bytes -= f.payload.len();
            }
            self.first += 1;
        }
    }

    fn get(&self, number: u64) -> Option<Frame> {
        let index = usize::try_from(number.checked_sub(self.first)?).ok()?;
        self.frames.get(index).cloned()
    }
}

/// What the session's tasks share.
struct Shared {
    kept: Mutex<Kept>,
    /// The number of the next input frame expected; acknowledged to the client by the
    /// output side.
    input_next: std::sync::atomic::AtomicU64,
    /// The resume window in milliseconds, as the broker set it (else the agent's default).
    window_ms: std::sync::atomic::AtomicU64,
    /// Bumped on every change of `kept` (new output, release, exit).
    changed: watch::Sender<u64>,
    control: ProcessControl,
}

impl Shared {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// How one attachment ended.
enum Detach {
    /// `Exit` went out: the session is over.
    Exited(i32),
    /// The broker sent `Close`: end the process, send what is left, and end.
    Closed(CloseReason, String),
    /// The stream went away without a `Close`: wait for a re-attach.
    Lost(String),
}

/// Runs a started session for its whole life: attaches `first`, then every re-attach, until
/// the process exited and `Exit` went out, the broker closed it, or the resume window passed
/// without a re-attach. Returns the exit code.
pub(crate) async fn run(
    id: SessionId,
    process: Process,
    first: Attachment,
    limits: &SessionLimits,
    live: &LiveSessions,
) -> Option<i32> {
    let mut attachments = live.register(id.clone());
    let Process { output, input, control } = process;
    let (changed, _) = watch::channel(0u64);
    let shared = Arc::new(Shared {
        kept: Mutex::new(Kept::default()),
        input_next: std::sync::atomic::AtomicU64::new(0),
        window_ms: std::sync::atomic::AtomicU64::new(
            u64::try_from(limits.resume_window.as_millis()).unwrap_or(u64::MAX),
        ),
        changed,
        control,
    });
    let pump = tokio::spawn(pump(output, shared.clone()));
    let mut input = input;
    let mut attachment = Some(first);
    let code = loop {
        let Some(a) = attachment.take() else {
            let window = Duration::from_millis(shared.window_ms.load(Ordering::Acquire));
            let wait = tokio::time::timeout(window, attachments.recv());
            match wait.await {
                Ok(Some(a)) => {
                    attachment = Some(a);
                    continue;
                }
                Ok(None) | Err(_) => {
                    tracing::info!(
                        window_s = limits.resume_window.as_secs(),
                        "not re-attached in time; ending"
                    );
                    shared.control.terminate(limits.kill_grace).await;
                    break None;
                }
            }
        };
        match attached(a, &shared, &mut input, &mut attachments, limits).await {
            (Detach::Exited(code), _) => break Some(code),
            (Detach::Closed(reason, message), _) => {
                tracing::info!(?reason, message, "closed by the broker");
                break finish(&shared, limits).await;
            }
            (Detach::Lost(why), next) => {
                tracing::info!("detached: {why}");
                attachment = next;
            }
        }
    };
    live.remove(&id);
    pump.abort();
    code
}

/// After `Close`: stop the process; its exit code is the session's.
async fn finish(shared: &Shared, limits: &SessionLimits) -> Option<i32> {
    shared.control.terminate(limits.kill_grace).await;
    tokio::time::timeout(limits.kill_grace + limits.drain_timeout, shared.control.wait()).await.ok()
}

/// Reads the process's output into numbered frames while there is room, then records the
/// exit code once the output ended.
async fn pump(mut output: mpsc::Receiver<Output>, shared: Arc<Shared>) {
    let mut room = shared.changed.subscribe();
    let mut held: Option<Output> = None;
    loop {
        while shared.kept().bytes >= OUTPUT_BUFFER {
            if room.changed().await.is_err() {
                return;
            }
        }
        let first = match held.take() {
            Some(chunk) => chunk,
            None => match output.recv().await {
                Some(chunk) => chunk,
                None => break,
            },
        };
        let (is_err, first) = match first {
            Output::Stdout(b) => (false, b),
            Output::Stderr(b) => (true, b),
        };
        // A PTY hands out a few KiB per read; merging what is already waiting into one
        // frame (same stream, in order) cuts per-frame work all the way to the client.
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
            merged.get_or_insert_with(|| BytesMut::from(&first[..])).extend_from_slice(&more);
        }
        let bytes: Bytes = merged.map_or(first, BytesMut::freeze);
        {
            let mut kept = shared.kept();
            let number = kept.next;
            kept.bytes += bytes.len();
            kept.frames.push_back(if is_err {
                Frame::stderr(number, bytes)
            } else {
                Frame::data(number, bytes)
            });
            kept.next += 1;
        }
        shared.bump();
    }
    let code = shared.control.wait().await;
    shared.kept().exit = Some(code);
    shared.bump();
}

/// Serves one attachment until it ends. A new `Attach` arriving meanwhile replaces this one
/// (the broker gave up on it); it is returned as the next attachment.
async fn attached(
    a: Attachment,
    shared: &Arc<Shared>,
    input: &mut Option<mpsc::Sender<Bytes>>,
    attachments: &mut mpsc::Receiver<Attachment>,
    limits: &SessionLimits,
) -> (Detach, Option<Attachment>) {
    let Attachment { reader, mut writer, resend_from, announce } = a;
    if announce {
        let input_next = shared.input_next.load(Ordering::Acquire);
        let answer = Frame::control(&Control::Attached { input_next });
        if let Err(e) = writer.send(answer).await {
            return (Detach::Lost(format!("answering Attach: {e}")), None);
        }
    }
    let send = send_output(writer, shared.clone(), resend_from);
    let recv = receive_input(reader, shared, input);
    tokio::pin!(send, recv);
    tokio::select! {
        sent = &mut send => match sent {
            Ok(code) => (Detach::Exited(code), None),
            Err(why) => (Detach::Lost(why), None),
        },
        end = &mut recv => match end {
            Detach::Closed(reason, message) => {
                // The rest of the output and `Exit` still go out if the broker reads them;
                // a broker that stopped reading must not keep the session alive.
                shared.control.terminate(limits.kill_grace).await;
                let bound = limits.drain_timeout + limits.send_timeout;
                match tokio::time::timeout(bound, &mut send).await {
                    Ok(Ok(code)) => (Detach::Exited(code), None),
                    _ => (Detach::Closed(reason, message), None),
                }
            }
            other => (other, None),
        },
        next = attachments.recv() => (Detach::Lost("replaced by a newer attachment".into()), next),
    }
}

/// Sends kept output from `from` on, then `Exit` once the process ended and everything went.
async fn send_output(mut writer: Writer, shared: Arc<Shared>, from: u64) -> Result<i32, String> {
    let mut changes = shared.changed.subscribe();
    let mut cursor = {
        let kept = shared.kept();
        if from < kept.first || from > kept.next {
            // Only a broker that lost track asks for this (or one that re-attaches just to
            // send `Close`); sending what there is beats refusing.
            tracing::warn!(
                from,
                first = kept.first,
                next = kept.next,
                "resend asked from outside the kept output"
            );
        }
        from.clamp(kept.first, kept.next)
    };
    // Input acknowledged on this stream so far; the first `Ack` goes out with the first batch.
    let mut acked_input = 0u64;
    loop {
        changes.borrow_and_update();
        let input_next = shared.input_next.load(Ordering::Acquire);
        if input_next > acked_input {
            acked_input = input_next;
            let ack = Frame::control(&Control::Ack { next: input_next });
            writer.feed(ack).await.map_err(|e| format!("sending an acknowledgement: {e}"))?;
        }
        let (frame, exit) = {
            let kept = shared.kept();
            (kept.get(cursor), kept.exit.filter(|_| cursor >= kept.next))
        };
        if let Some(frame) = frame {
            cursor += 1;
            writer.feed(frame).await.map_err(|e| format!("sending output: {e}"))?;
            continue;
        }
        writer.flush().await.map_err(|e| format!("sending output: {e}"))?;
        if let Some(code) = exit {
            writer.send(Frame::control(&Control::Exit { code })).await.map_err(|e| e.to_string())?;
            writer.close().await.map_err(|e| e.to_string())?;
            return Ok(code);
        }
        if changes.changed().await.is_err() {
            return Err("session ended".into());
        }
    }
}

/// Broker → process: input exactly once (frames already delivered are skipped), resizes,
/// acknowledgements of output, and `Close`.
async fn receive_input(
    mut reader: Reader,
    shared: &Shared,
    input: &mut Option<mpsc::Sender<Bytes>>,
) -> Detach {
    loop {
        let input_next = shared.input_next.load(Ordering::Acquire);
        let frame = match reader.next().await {
            None => return Detach::Lost("stream finished".into()),
            Some(Err(e)) => return Detach::Lost(e.to_string()),
            Some(Ok(frame)) => frame,
        };
        match frame.kind {
            FrameKind::Data => {
                if frame.seq < input_next {
                    continue; // resent after a re-attach; delivered before
                }
                if frame.seq > input_next {
                    return Detach::Lost(format!("input frame {} skips {input_next}", frame.seq));
                }
                if let Some(tx) = input.as_ref() {
                    // Waiting here when the process is not reading is the backpressure
                    // towards the client; a process that closed its input just drops data.
                    if tx.send(frame.payload).await.is_err() {
                        *input = None;
                    }
                }
                // Delivered (or dropped by a process that closed its input): acknowledged.
                shared.input_next.store(input_next + 1, Ordering::Release);
                shared.bump();
            }
            FrameKind::Stderr => tracing::debug!("ignoring a Stderr frame from the broker"),
            FrameKind::Control => match frame.to_control() {
                Ok(Control::Resize { cols, rows }) => shared.control.resize(cols, rows),
                Ok(Control::ResumeWindow { seconds }) => {
                    shared.window_ms.store(u64::from(seconds) * 1000, Ordering::Release);
                }
                Ok(Control::Ack { next }) => {
                    shared.kept().release(next);
                    shared.bump();
                }
                Ok(Control::Close { reason, message }) => return Detach::Closed(reason, message),
                Ok(other) => tracing::debug!("ignoring {} on a session stream", super::control_name(&other)),
                Err(e) => return Detach::Lost(format!("bad control frame: {e}")),
            },
        }
    }
}

#[cfg(test)]
mod tests;
