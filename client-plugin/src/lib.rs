//! The `airlock` CLI as a library: SigV4-signed calls to the broker's SSM-style JSON API and
//! interactive sessions, port forwarding and ssh's ProxyCommand carried over QUIC.
//!
//! The binary (`src/main.rs`) is a thin clap front end over these modules, so integration
//! tests and benches can drive the same code paths. The `iam` and `sts` administration
//! commands are defined here too (`iam_cmd`, `sts_cmd`, `simulate`), as clap subcommands that
//! each become one [`ApiCall`].

pub mod api;
pub mod audit_cmd;
pub mod call;
pub mod cast;
pub mod command_cmd;
pub mod config;
pub mod credentials;
pub mod error;
pub mod fetch;
pub mod forward;
pub mod iam_cmd;
pub mod iam_login_cmd;
pub mod iam_params;
pub mod link;
pub mod params;
pub mod playback;
pub mod ports;
pub mod recordings_cmd;
pub mod resume;
pub mod session;
pub mod signing;
pub mod simulate;
pub mod start;
pub mod stdio;
pub mod sts_cmd;
pub mod terminal;
pub mod tunnel;

#[cfg(test)]
mod testutil;

pub use api::{ApiError, ApiErrorKind, Client, Service};
pub use call::ApiCall;
pub use config::{ConfigInput, Endpoint, Settings};
pub use credentials::Credentials;
pub use error::Error;

/// Exit status for a command line that is wrong (clap uses the same for its own errors).
pub const EXIT_USAGE: i32 = 2;
/// Exit status for an error returned by the service (as the AWS CLI v2 uses).
pub const EXIT_SERVICE_ERROR: i32 = 254;
/// Exit status for everything else that went wrong: connection, configuration, protocol.
pub const EXIT_FAILURE: i32 = 255;
