//! The error type of the library modules.

use std::path::PathBuf;

use airlock_proto::control::CloseReason;

use crate::api::ApiError;

/// Everything that can go wrong outside the service's own error responses.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint URL is malformed or not allowed.
    #[error("invalid endpoint {url:?}: {why}")]
    Endpoint {
        /// The endpoint as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// An https endpoint was given without the broker's CA certificate.
    #[error(
        "the https endpoint {0} needs the broker's CA certificate: pass --ca-file FILE or set AIRLOCK_CA_FILE"
    )]
    MissingCa(String),
    /// The CA file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        /// The CA file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// TLS or QUIC set-up failed (bad PEM, bad config).
    #[error("{0}")]
    Tls(#[from] airlock_proto::quic::TlsError),
    /// No usable credentials, or a broken credentials/config file.
    #[error("{0}")]
    Credentials(String),
    /// The named profile exists in neither the credentials nor the config file.
    #[error("The config profile ({0}) could not be found")]
    ProfileNotFound(String),
    /// The command line is incomplete or inconsistent (exit status 2, like clap's errors).
    #[error("{0}")]
    Usage(String),
    /// The request could not be signed.
    #[error("cannot sign the request: {0}")]
    Signing(String),
    /// The service answered with an error, or could not be reached.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The QUIC link to the broker could not be set up or broke.
    #[error("{0}")]
    Connect(String),
    /// The broker refused the session stream.
    #[error("Session {session_id} could not start ({reason:?}): {message}")]
    Rejected {
        /// The session that could not start.
        session_id: String,
        /// Why the broker closed the stream.
        reason: CloseReason,
        /// The broker's human-readable detail.
        message: String,
    },
    /// The peer broke the session protocol.
    #[error("session protocol error: {0}")]
    Protocol(String),
    /// A local port for forwarding could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The local address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Local I/O (terminal, stdin, stdout) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit status this error maps to.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Api(e) => e.exit_code(),
            Error::Usage(_) | Error::Endpoint { .. } | Error::MissingCa(_) => crate::EXIT_USAGE,
            _ => crate::EXIT_FAILURE,
        }
    }
}

/// Renders an error with all its sources, since reqwest and quinn hide the useful part there.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
