//! Wire types shared by the Airlock agent, the broker's relay and the `airlock` CLI.
//!
//! Everything that crosses a QUIC stream is a [`Frame`]: a fixed 16-byte binary header
//! followed by the payload. Data frames carry terminal or TCP bytes untouched; control
//! frames carry a [`control`] message encoded with postcard.

#![forbid(unsafe_code)]

pub mod clock;
pub mod command;
pub mod control;
pub mod endpoint;
pub mod frame;
pub mod ids;
pub mod quic;
pub mod ssm;
pub mod stream;
pub mod version;

pub use command::{CommandOutcome, CommandResult, RunCommand};
pub use control::{AgentHello, ClientRequest, CloseReason, Control, SessionSpec};
pub use endpoint::{Endpoint, EndpointError};
pub use frame::{Frame, FrameCodec, FrameKind, ProtoError, HEADER_LEN, MAX_FRAME_LEN};
pub use ids::{CommandId, IdError, InstanceId, SessionId};
pub use stream::FramedStream;
pub use version::{PeerVersion, VersionError};

/// ALPN protocol id of every Airlock QUIC connection (agents and CLI clients alike).
pub const ALPN: &[u8] = b"airlock/1";
