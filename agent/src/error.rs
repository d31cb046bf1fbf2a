//! The one error type of the agent library.

use std::path::PathBuf;

use airlock_proto::quic::TlsError;
use airlock_proto::ProtoError;

/// Everything that can go wrong in registration, the broker link or a session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operator gave something unusable (endpoint URL, CA file, flags).
    #[error("{0}")]
    Config(String),
    /// A state file in the data directory is missing or malformed.
    #[error("{}: {detail}", path.display())]
    State {
        /// The file or directory concerned.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// `register` found an earlier registration and `--force` was not given.
    #[error("already registered as {instance_id} in {} (pass --force to register again)", dir.display())]
    AlreadyRegistered {
        /// The instance id of the existing registration.
        instance_id: String,
        /// The data directory holding it.
        dir: PathBuf,
    },
    /// The broker's API answered with an SSM error.
    #[error("{code}: {message}")]
    Api {
        /// The SSM error code (`__type`), e.g. `InvalidActivation`.
        code: String,
        /// The broker's explanation.
        message: String,
    },
    /// The HTTP exchange failed or the answer made no sense.
    #[error("http: {0}")]
    Http(String),
    /// Key or CSR generation failed.
    #[error("key generation: {0}")]
    Crypto(String),
    /// Certificates or keys could not be loaded into TLS.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A stream broke the frame protocol or ended early.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The broker broke the session protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The session's process could not be started.
    #[error("start failed: {0}")]
    Spawn(String),
    /// The session cannot run as the user it asks for (unknown user, agent not root, no
    /// `setpriv`); the message is for the client as it is.
    #[error("{0}")]
    RunAs(String),
    /// Local I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
