//! The one writer of a session's status. Every transition goes through here, so the store
//! (DescribeSessions), the metrics and the log agree on a session's life:
//!
//! ```text
//! Connecting ──▶ Connected ◀──▶ Disconnected
//!      │             │               │
//!      └──────▶ Terminating ◀────────┘        (TerminateSession)
//!                    │
//!  any ──────▶ Terminated | Failed            (ended: final, written once)
//! ```
//!
//! At start-up, before anything is served, the sessions a previous broker process left
//! live go through here too ([`super::recover`]): those that can resume become
//! `Disconnected` for the resume window, the others end `Failed`.
//!
//! A terminate under way is not undone: a session being terminated stays `Terminating` until
//! it has ended, whatever its connections do meanwhile.

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::store::{SessionEnd, SessionRecord, SessionStatus, StoreError};

/// A new session, `Connecting` until its client arrives.
pub async fn created(app: &App, record: &SessionRecord) -> Result<(), StoreError> {
    debug_assert_eq!(record.status, SessionStatus::Connecting);
    app.store.insert_session(record).await
}

/// Client and agent are attached (again).
pub async fn attached(app: &App, id: &str, terminate: &CancellationToken) {
    running(app, id, SessionStatus::Connected, terminate).await;
}

/// The client's or the agent's connection was lost; the session waits for it.
pub async fn detached(app: &App, id: &str, terminate: &CancellationToken) {
    running(app, id, SessionStatus::Disconnected, terminate).await;
}

/// TerminateSession reached the session's owner task; it ends shortly.
pub async fn terminating(app: &App, id: &str) -> Result<(), StoreError> {
    app.store.set_session_status(id, SessionStatus::Terminating).await
}

/// The session ended (`Terminated` or `Failed`); later transitions change nothing.
pub async fn ended(app: &App, id: &str, end: &SessionEnd) -> Result<(), StoreError> {
    debug_assert!(matches!(end.status, SessionStatus::Terminated | SessionStatus::Failed));
    app.store.finish_session(id, end).await?;
    crate::metrics::session_ended(end.status);
    Ok(())
}

/// [`ended`], for a session task: a store failure is logged (the session is over either way).
pub async fn ended_or_log(app: &App, id: &str, end: &SessionEnd) {
    if let Err(e) = ended(app, id, end).await {
        tracing::error!(session = %id, error = %e, "cannot record the session's end");
    }
}

async fn running(app: &App, id: &str, status: SessionStatus, terminate: &CancellationToken) {
    if terminate.is_cancelled() {
        return;
    }
    if let Err(e) = app.store.set_session_status(id, status).await {
        tracing::error!(session = %id, error = %e, "cannot record the session's status");
    }
}
