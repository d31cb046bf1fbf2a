//! Sessions a previous broker process left running (wire contract §2.4, "Broker restart").
//!
//! At start-up, before anything is served, every session the store says is live was left
//! by the previous process. A shell or command session that was attached, or waiting for a
//! lost connection, and whose recording keeps checkpoints, is adopted: its recording is
//! kept for reopening, it is `Disconnected`, and it waits the resume window for its client
//! (which calls ResumeSession, as after any lost connection: the owner check uses the owner
//! the store recorded) and for its agent (which reconnects on its own and is re-attached
//! with `Attach`). Every other live session ends `Failed`, as does an adopted one whose
//! client or agent does not come back in time. Nothing of the old process's memory is
//! needed: the frame positions come from the recording's checkpoints, the rest from the
//! store.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::{Control, Frame};
use airlock_recordings::resume::{check_reopen, FramePositions};
use airlock_recordings::{EndReason, Recorder};
use airlock_relay::{Attachment, Deadlines, Positions, SharedRecorder};
use futures_util::{FutureExt, SinkExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::linger;
use super::process::{close_on_agent, drive, finish, reattach_agent, Attached};
use super::state;
use crate::app::{now_us, App};
use crate::launch::Launch;
use crate::registry::{ClientReturn, PendingSession, SessionPlan};
use crate::store::{Principal, SessionEnd, SessionRecord, SessionStatus, Store, StoreError};

/// The sessions a previous broker process left live.
pub struct Orphans {
    /// Those to adopt, with what their recordings hold.
    adopt: Vec<(SessionRecord, FramePositions)>,
    /// Those that cannot resume, with why.
    fail: Vec<(SessionRecord, String)>,
    /// What adopted sessions run with: the current preferences.
    launch: Launch,
}

impl Orphans {
    /// The sessions whose unfinished recordings crash recovery must leave for reopening.
    pub fn keep(&self) -> HashSet<String> {
        self.adopt.iter().map(|(r, _)| r.session_id.clone()).collect()
    }
}

/// Sorts the sessions the store says are live: a shell or command session that was running
/// (`Connected` or `Disconnected`) with a recording that can be reopened is adopted; every
/// other one is failed. Call it before crash recovery closes unfinished recordings.
pub async fn find(store: &dyn Store, spool_dir: &Path) -> Result<Orphans, StoreError> {
    let prefs = match crate::preferences::load(store).await {
        Ok(prefs) => prefs,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the session preferences; using the defaults for adopted sessions");
            Default::default()
        }
    };
    // The run-as user only matters when a session starts; these are running.
    let unstarted = crate::preferences::SessionPreferences { run_as_enabled: false, ..prefs };
    let launch = Launch::new(&unstarted, None).unwrap_or_default();
    let resumes = !launch.resume_window.is_zero();
    let mut orphans = Orphans { adopt: Vec::new(), fail: Vec::new(), launch };
    for record in store.sessions(true).await? {
        let why = match record.status {
            SessionStatus::Connecting => "its client had not connected yet".to_owned(),
            SessionStatus::Terminating => "it was being terminated".to_owned(),
            _ if !resumes => "the session preferences disable resuming (resumeWindowSeconds is 0)".to_owned(),
            _ => match check_reopen(spool_dir, &record.session_id).await {
                Ok(positions) => {
                    orphans.adopt.push((record, positions));
                    continue;
                }
                Err(e) => format!("its recording cannot be continued ({e})"),
            },
        };
        orphans.fail.push((record, why));
    }
    Ok(orphans)
}

/// Adopts the sessions [`find`] found resumable and fails the others. Runs before the API
/// and the QUIC endpoint serve, so a ResumeSession or a reconnecting agent finds them.
pub async fn adopt(app: &Arc<App>, orphans: Orphans) {
    let Orphans { adopt, fail: failed, launch } = orphans;
    let window = launch.resume_window;
    for (record, why) in failed {
        fail(app, &record.session_id, &why).await;
    }
    for (record, recorded) in adopt {
        let id = record.session_id.clone();
        let recorder = match Recorder::reopen(app.shipper.spool(), &id, &record.document).await {
            Ok(r) => r.recorder,
            Err(e) => {
                // Its .part file stays; the next start's crash recovery closes it.
                fail(app, &id, &format!("its recording cannot be continued ({e})")).await;
                continue;
            }
        };
        let pending = adopted(&record, launch.clone());
        let terminate = app.registry.adopt(&id);
        let (returns_tx, returns) = mpsc::channel(1);
        app.registry.set_resumable(&id, &record.owner_arn, returns_tx);
        state::detached(app, &id, &terminate).await;
        tracing::warn!(
            session = %id, target = %record.target, window_s = window.as_secs(),
            output_recorded = recorded.output_next, input_recorded = recorded.input_next,
            "session left by the previous broker process adopted; waiting for its client and agent"
        );
        let deadlines = deadlines_of(&record);
        let app = app.clone();
        tokio::spawn(async move {
            let orphan = Orphan { pending, recorded, deadlines, terminate };
            resume(&app, orphan, recorder, returns).await;
        });
    }
}

/// What a session that cannot resume after the restart ends with.
async fn fail(app: &App, id: &str, why: &str) {
    let details = format!("the broker restarted while the session was active, and {why}");
    tracing::warn!(session = %id, %details, "session left by the previous broker process failed");
    let end = SessionEnd { status: SessionStatus::Failed, end_us: now_us(), details, exit_code: None };
    state::ended_or_log(app, id, &end).await;
}

/// The session as the session core runs it, rebuilt from the store: the owner StartSession
/// recorded, the current preferences' idle timeout and resume window.
fn adopted(record: &SessionRecord, launch: Launch) -> PendingSession {
    let name = record.owner_arn.rsplit('/').next().unwrap_or_default().to_owned();
    PendingSession {
        session_id: record.session_id.clone(),
        target: record.target.clone(),
        document: record.document.clone(),
        // Only a shell or command keeps checkpoints; which one no longer matters once it runs.
        plan: SessionPlan::Shell,
        owner: Principal { name, arn: record.owner_arn.clone() },
        launch,
        local_port_number: None,
    }
}

/// The maximum duration recorded at StartSession, counted from the session's start.
fn deadlines_of(record: &SessionRecord) -> Deadlines {
    let end_at = record.max_duration_minutes.and_then(|m| u64::try_from(m).ok()).map(|m| {
        let elapsed = Duration::from_micros(u64::try_from(now_us() - record.start_us).unwrap_or(0));
        let left = Duration::from_secs(m * 60).saturating_sub(elapsed);
        tokio::time::Instant::now() + left
    });
    Deadlines { end_at }
}

/// An adopted session, before its client and agent are back.
struct Orphan {
    pending: PendingSession,
    /// What its recording holds.
    recorded: FramePositions,
    deadlines: Deadlines,
    terminate: CancellationToken,
}

/// Waits (the resume window, from the restart) for the client to come back and the agent to
/// be re-attached, then runs the session as any other.
async fn resume(app: &App, orphan: Orphan, recorder: Recorder, mut returns: mpsc::Receiver<ClientReturn>) {
    let Orphan { pending, recorded, deadlines, terminate } = orphan;
    let id = &pending.session_id;
    let window = pending.launch.resume_window;
    let deadline = super::process::deadline_after(window);
    let rec: SharedRecorder = Arc::new(tokio::sync::Mutex::new(recorder));
    let ended = loop {
        let back = tokio::select! {
            back = returns.recv() => back,
            _ = terminate.cancelled() => None,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(ClientReturn { stream, output_next, link }) = back else {
            close_on_agent(app, &pending).await;
            break if terminate.is_cancelled() {
                (EndReason::Terminated, "session terminated while the broker was restarting".to_owned(), None)
            } else {
                let message = format!(
                    "the broker restarted and the client did not come back within the resume window of {} s",
                    window.as_secs()
                );
                (EndReason::ClientLost, message, None)
            };
        };
        if link.closed().now_or_never().is_some() {
            continue; // the client gave up on this attempt; it comes back with another
        }
        // The recording holds output up to `recorded`, and the client has no output the
        // broker did not record first: a client claiming more gets it again, and skips it.
        let output_next = output_next.min(recorded.output_next);
        let attached = tokio::select! {
            attached = reattach_agent(app, &pending, output_next, &terminate, deadline) => attached,
            _ = link.closed() => continue,
        };
        let (c_read, mut c_write) = stream.split();
        match attached {
            Ok((agent, input_next)) => {
                tracing::info!(session = %id, input_next, output_next, "session resumed after a broker restart");
                if input_next > recorded.input_next {
                    tracing::error!(
                        session = %id, input_next, input_recorded = recorded.input_next,
                        "the agent has input the recording does not: the recording misses it"
                    );
                }
                if c_write.send(Frame::control(&Control::Resumed { input_next })).await.is_err() {
                    tracing::debug!(session = %id, "the resumed client went away at once");
                }
                state::attached(app, id, &terminate).await;
                let at = Positions {
                    input_next,
                    output_next,
                    input_recorded: recorded.input_next,
                    output_recorded: recorded.output_next,
                    rewind: true,
                };
                let attached = Attached { client: (c_read, c_write), link, agent, at };
                let last = drive(app, attached, (rec, deadlines), &pending, (terminate, returns)).await;
                linger(&*last).await;
                return;
            }
            Err((end, reason, message)) => {
                let message = format!("the broker restarted and {message}");
                let close = Control::Close { reason, message: message.clone() };
                let _ = c_write.send(Frame::control(&close)).await;
                let _ = c_write.close().await;
                drop(c_read);
                break (end, message, Some(link));
            }
        }
    };
    app.registry.session_ended(id);
    let (end, message, link) = ended;
    let status = if end == EndReason::Terminated { SessionStatus::Terminated } else { SessionStatus::Failed };
    let outcome = Attachment {
        end,
        exit_code: None,
        message,
        bytes_from_client: 0,
        bytes_from_agent: 0,
        positions: Positions::default(),
        agent_detached: false,
        client_detached: false,
    };
    finish(app, &pending, rec, outcome, status).await;
    if let Some(link) = link {
        linger(&*link).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use airlock_recordings::{RecordingMeta, Spool};

    fn record(id: &str, status: SessionStatus) -> SessionRecord {
        SessionRecord {
            session_id: id.into(),
            target: "mi-0123456789abcdef0".into(),
            document: "SSM-SessionManagerRunShell".into(),
            owner_arn: "arn:airlock:iam::000000000000:user/admin".into(),
            reason: String::new(),
            status,
            start_us: 1,
            end_us: None,
            details: String::new(),
            exit_code: None,
            max_duration_minutes: None,
            s3_output_url: None,
            cloudwatch_output_url: None,
        }
    }

    async fn recorded(spool: &Spool, id: &str) {
        let meta = RecordingMeta {
            session_id: id.into(),
            target: "mi-0123456789abcdef0".into(),
            owner: "arn:airlock:iam::000000000000:user/admin".into(),
            document: String::new(),
            width: 80,
            height: 24,
            term: "xterm".into(),
        };
        let mut rec = Recorder::create(spool, meta, &[]).await.unwrap();
        rec.track_frames().await.unwrap();
        rec.output_frames(b"$ ", 1).await.unwrap();
    }

    #[tokio::test]
    async fn only_running_sessions_with_checkpoints_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("airlock.db")).await.unwrap();
        let spool_dir = dir.path().join("spool");
        let (spool, _new) = Spool::open(&spool_dir, 1 << 30).unwrap();
        for (id, status) in [
            ("running", SessionStatus::Connected),
            ("away", SessionStatus::Disconnected),
            ("unrecorded", SessionStatus::Connected),
            ("starting", SessionStatus::Connecting),
            ("stopping", SessionStatus::Terminating),
            ("ended", SessionStatus::Connected),
        ] {
            store.insert_session(&record(id, status)).await.unwrap();
        }
        for id in ["running", "away", "starting", "stopping", "ended"] {
            recorded(&spool, id).await;
        }
        let end = SessionEnd {
            status: SessionStatus::Terminated,
            end_us: 2,
            details: String::new(),
            exit_code: None,
        };
        store.finish_session("ended", &end).await.unwrap();

        let orphans = find(&store, &spool_dir).await.unwrap();
        let mut kept: Vec<String> = orphans.keep().into_iter().collect();
        kept.sort();
        assert_eq!(kept, ["away", "running"]);
        assert!(orphans.adopt.iter().all(|(_, p)| p.output_next == 1 && p.input_next == 0));
        let mut failed: Vec<(&str, &str)> =
            orphans.fail.iter().map(|(r, why)| (r.session_id.as_str(), why.as_str())).collect();
        failed.sort();
        assert_eq!(failed.len(), 3, "{failed:?}");
        assert!(failed[0].0 == "starting" && failed[0].1.contains("client had not connected"), "{failed:?}");
        assert!(failed[1].0 == "stopping" && failed[1].1.contains("being terminated"), "{failed:?}");
        assert!(
            failed[2].0 == "unrecorded" && failed[2].1.contains("recording cannot be continued"),
            "{failed:?}"
        );
        assert_eq!(orphans.launch.resume_window, Duration::from_secs(600));
    }
}
