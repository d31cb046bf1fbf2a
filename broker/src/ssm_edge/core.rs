//! The session core's in-process link, as the edge uses it (`crate::session::link`).
//!
//! TEMPORARY stub until the session core's refactor lands: every stream open fails.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::DuplexStream;

use crate::app::App;

/// The link was closed; no stream can be opened on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session's link is closed")]
pub struct LinkClosed;

/// The edge's end of one in-process client connection.
pub struct EdgeHandle;

/// Starts serving one in-process client connection.
pub fn serve_edge(_app: Arc<App>, _remote: SocketAddr) -> EdgeHandle {
    EdgeHandle
}

impl EdgeHandle {
    /// Opens a stream to the session core.
    pub async fn open_stream(&self) -> Result<DuplexStream, LinkClosed> {
        Err(LinkClosed)
    }
    /// The client's transport dropped without closing.
    pub fn lost(&self) {}
    /// The client closed on purpose.
    pub fn close(&self) {}
    /// Resolves when the broker closed this link.
    pub async fn closed(&self) {
        std::future::pending::<()>().await
    }
}
