//! The AWS Session Manager (SSM) data-channel dialect, sans-IO: what the stock
//! `session-manager-plugin` speaks over its WebSocket (spec: `ssm-protocol.md` §3–§4).
//!
//! * [`message`]: the 120-byte-header binary [`AgentMessage`] and its odd UUID byte order.
//! * [`payload`]: the JSON payloads (OpenDataChannel, acknowledge, handshake, channel_closed…).
//! * [`smux`]: smux v1 frames carried inside `LocalPortForwarding` Output payloads.
//! * [`channel`]: the sequencing / acknowledgement / resend state machine the WebSocket
//!   edge drives.

pub mod channel;
pub mod message;
pub mod payload;
pub mod smux;

pub use channel::{ChannelConfig, ChannelEvent, DataChannel, DropReason, Receipt, Side};
pub use message::{AgentMessage, MessageType, PayloadType, TypePadding};

/// Errors of the SSM wire codecs and the data-channel state machine.
#[derive(Debug, thiserror::Error)]
pub enum SsmError {
    /// Fewer bytes than the fixed 120-byte prefix.
    #[error("frame of {0} bytes is shorter than the 120-byte AgentMessage header")]
    Truncated(usize),
    /// HeaderLength is not 116.
    #[error("HeaderLength {0} (expected 116)")]
    HeaderLength(u32),
    /// MessageType is all padding.
    #[error("empty MessageType")]
    EmptyMessageType,
    /// MessageType is not one the spec lists.
    #[error("unknown MessageType {0:?}")]
    UnknownMessageType(String),
    /// PayloadType is not one the spec lists.
    #[error("unknown PayloadType {0}")]
    UnknownPayloadType(u32),
    /// PayloadLength disagrees with the bytes after the header.
    #[error("PayloadLength {declared} but {actual} payload bytes present")]
    PayloadLength {
        /// The PayloadLength field.
        declared: usize,
        /// Bytes actually present after the header.
        actual: usize,
    },
    /// The payload exceeds the configured limit.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLong {
        /// Payload size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// CreatedDate is 0 on a message other than start/pause_publication.
    #[error("CreatedDate is zero")]
    ZeroCreatedDate,
    /// A JSON payload does not parse as the expected structure.
    #[error("malformed JSON payload: {0}")]
    Json(#[from] serde_json::Error),
    /// A Flag payload is not exactly 4 bytes or holds an unknown value.
    #[error("malformed Flag payload")]
    BadFlag,
    /// An `EXIT_CODE: <n>` payload does not parse.
    #[error("malformed ExitCode payload")]
    BadExitCode,
    /// An smux frame is malformed (version, command or length).
    #[error("smux: {0}")]
    Smux(&'static str),
    /// The retransmit buffer is full: the caller must wait for acknowledgements.
    #[error("retransmit buffer full ({0} unacknowledged messages)")]
    RetransmitBufferFull(usize),
    /// The head message was resent the configured number of times without an ack.
    #[error("message {0} resent too often without acknowledgement")]
    ResendLimit(i64),
}
