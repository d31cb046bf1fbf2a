//! The Airlock agent: registers a managed host with the broker, keeps a QUIC link to it, and
//! runs the shells, commands and forwarded TCP connections of the sessions the broker opens.

#![warn(missing_docs)]

pub mod allow;
pub mod backoff;
pub mod endpoint;
pub mod error;
pub mod host;
pub mod link;
pub mod register;
pub mod renew;
pub mod run_command;
pub mod session;
pub mod state;

pub use error::Error;
