//! The session core's in-process link, as the edge uses it: one [`EdgeHandle`] per
//! WebSocket, its first stream the session's, each further one a port session's connection.

pub use crate::session::link::{serve_edge, EdgeHandle, LinkClosed};
