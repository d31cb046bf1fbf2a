//! The session core: a client's connection from its hello to the session's end, whatever
//! carries it ([`link::ClientLink`]: the CLI's QUIC connection, or an edge in the broker
//! such as the stock plugin's WebSocket or the browser console).
//!
//! - [`serve`] reads the hello, redeems the token and runs the session (or hands a resumed
//!   client to its live session);
//! - `process` owns a shell or command session's life across lost connections;
//! - `port` runs a port session, one client stream per forwarded TCP connection;
//! - [`recover`] adopts the sessions a previous broker process left running;
//! - [`state`] is the one writer of a session's status.

pub mod link;
mod port;
mod process;
pub mod recover;
mod serve;
pub mod state;

pub use link::{serve_edge, ClientLink, ClientStream, EdgeHandle, LinkClosed};
pub(crate) use serve::serve;
