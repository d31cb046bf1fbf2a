//! The Airlock broker: SSM-dialect API, identity, node and session registry, store, and
//! the QUIC front that hands sessions to the relay.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod authz;
pub mod ca;
pub mod console;
pub mod error;
pub mod http;
pub mod identity;
pub mod keys;
pub mod launch;
pub mod metrics;
pub mod ops;
pub mod password;
pub mod policy;
pub mod preferences;
pub mod private_files;
pub mod quic;
pub mod registry;
pub mod run_command;
pub mod secrets;
pub mod server;
pub mod session;
pub mod sigv4;
pub mod ssm_edge;
pub mod store;
pub mod totp;
