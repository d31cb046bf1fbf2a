//! The stock `session-manager-plugin`'s data channel (`GET /v1/data-channel/<id>`), spoken at
//! the edge and translated to the session core's own framed protocol over an in-process link.
//!
//! * [`accept`]: the WebSocket upgrade (unsigned, SigV4-signed or presigned), the `Origin`
//!   check and the `OpenDataChannel` frame with the session's single-use token.
//! * [`pump`]: AgentMessage ↔ Airlock frames for one attachment of a WebSocket: the SSM
//!   handshake, acknowledgements and resends (proto's sans-IO `DataChannel`), resize, exit
//!   and `channel_closed`.
//! * [`port`]: port sessions: `AWS-StartSSHSession`'s single byte stream and smux v1 for
//!   `LocalPortForwarding`, each smux stream one TCP connection of the core.
//! * [`state`]: what outlives one WebSocket (sequence numbers, unacknowledged input), so a
//!   plugin that reconnects after `ResumeSession` continues without loss.

pub mod accept;
pub mod core;
pub mod port;
pub mod pump;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;

use crate::app::App;

/// WebSocket connections served at once (they leave the HTTP layer's connection cap when
/// they upgrade).
pub const MAX_CONNECTIONS: usize = 512;
/// Of those, connections that have not presented a valid token yet: unauthenticated peers
/// get the least, and cannot keep the plugins' sessions out.
pub const MAX_UNAUTHENTICATED: usize = 64;
/// How long an upgraded connection may take to send a valid `OpenDataChannel`.
pub const OPEN_DEADLINE: Duration = Duration::from_secs(10);
/// Largest WebSocket message accepted: the plugin sends 1 KiB payloads; headroom for others.
pub const MAX_MESSAGE: usize = 64 * 1024 + 120;
/// Largest `OpenDataChannel` text frame accepted (the token is at most 300 characters).
pub const MAX_OPEN_FRAME: usize = 4 * 1024;
/// Largest payload this edge puts into one `output_stream_data` message.
pub const OUTPUT_CHUNK: usize = 16 * 1024;

/// Shared state of the data-channel edge.
pub struct Edge {
    /// The broker.
    pub app: Arc<App>,
    /// One permit per WebSocket connection being served.
    pub slots: Arc<Semaphore>,
    /// One permit per connection that has not presented a valid token yet.
    pub unauthenticated: Arc<Semaphore>,
    /// Per-session state that outlives one WebSocket.
    pub sessions: state::Sessions,
}

/// The data-channel routes, to merge into the API router.
pub fn router(app: Arc<App>) -> Router {
    let edge = Arc::new(Edge {
        app,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        unauthenticated: Arc::new(Semaphore::new(MAX_UNAUTHENTICATED)),
        sessions: state::Sessions::default(),
    });
    tokio::spawn(sweep(Arc::downgrade(&edge)));
    Router::new().route("/v1/data-channel/{session_id}", get(accept::data_channel)).with_state(edge)
}

/// How often state left by plugins that never came back is looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Forgets the state of detached sessions that have ended (a plugin that never resumed).
async fn sweep(edge: std::sync::Weak<Edge>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(edge) = edge.upgrade() else { return };
        for id in edge.sessions.detached() {
            match edge.app.store.session(&id).await {
                Ok(Some(s)) if s.end_us.is_none() => {}
                Ok(_) => edge.sessions.remove(&id),
                Err(e) => tracing::warn!(session = %id, error = %e, "cannot look a session up"),
            }
        }
    }
}

/// Microseconds since the Unix epoch, as the SSM channel's clock.
pub(crate) fn clock_us() -> u64 {
    u64::try_from(crate::app::now_us()).unwrap_or(0)
}
