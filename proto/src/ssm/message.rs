//! The binary `AgentMessage` of the SSM data channel (spec §3.2): a 120-byte big-endian
//! header followed by the payload, one message per WebSocket binary frame.
//!
//! `decode` is structural and strict (exact header length, payload length equal to the bytes
//! that follow, a payload limit, a known ASCII message type). The digest is checked by a
//! separate method because receivers drop a frame with a wrong digest without acking it, so
//! the peer resends it, rather than treating it as a protocol error.

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::SsmError;

/// Value every sender writes into HeaderLength: the header size excluding PayloadLength.
pub const HEADER_LENGTH: u32 = 116;
/// Size of the fixed prefix before the payload (HeaderLength + the 4-byte PayloadLength).
pub const PREFIX_LEN: usize = 120;
/// Width of the space- (or NUL-) padded MessageType field.
pub const MESSAGE_TYPE_LEN: usize = 32;
/// SchemaVersion every sender writes.
pub const SCHEMA_VERSION: u32 = 1;
/// Default upper bound on a payload accepted by [`AgentMessage::decode`] (1 MiB).
pub const DEFAULT_MAX_PAYLOAD_LEN: usize = 1 << 20;
/// Header Flags of `acknowledge` and `agent_session_state` messages (SYN | FIN, §3.5).
pub const FLAGS_ACKNOWLEDGE: u64 = 3;
/// Header Flags of the agent's first stream-data message (SYN, §3.5).
pub const FLAGS_SYN: u64 = 1;

/// The MessageType string of an AgentMessage (§3.3 data channel, §7 control channel).
///
/// Closed on purpose: the spec's peers log an unknown type and drop the message, which is
/// what a decode error makes the edge do too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `input_stream_data`: stream data client → agent.
    InputStreamData,
    /// `output_stream_data`: stream data agent → client.
    OutputStreamData,
    /// `acknowledge`: acknowledgement of one stream-data message.
    Acknowledge,
    /// `channel_closed`: the service ends the channel.
    ChannelClosed,
    /// `start_publication`: the service lets the peer send again.
    StartPublication,
    /// `pause_publication`: the service asks the peer to stop sending.
    PausePublication,
    /// `agent_session_state`: agent → service session state.
    AgentSessionState,
    /// `interactive_shell`: control channel, service → agent session start.
    InteractiveShell,
    /// `agent_task_complete`: control channel, agent → service.
    AgentTaskComplete,
    /// `agent_task_acknowledge`: control channel, service → agent.
    AgentTaskAcknowledge,
    /// `agent_job`: control channel Run Command.
    AgentJob,
    /// `agent_job_ack`: control channel Run Command.
    AgentJobAck,
    /// `agent_job_reply`: control channel Run Command.
    AgentJobReply,
    /// `agent_job_reply_ack`: control channel Run Command.
    AgentJobReplyAck,
}

impl MessageType {
    const ALL: [MessageType; 14] = [
        MessageType::InputStreamData,
        MessageType::OutputStreamData,
        MessageType::Acknowledge,
        MessageType::ChannelClosed,
        MessageType::StartPublication,
        MessageType::PausePublication,
        MessageType::AgentSessionState,
        MessageType::InteractiveShell,
        MessageType::AgentTaskComplete,
        MessageType::AgentTaskAcknowledge,
        MessageType::AgentJob,
        MessageType::AgentJobAck,
        MessageType::AgentJobReply,
        MessageType::AgentJobReplyAck,
    ];

    /// The wire string, without padding.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::InputStreamData => "input_stream_data",
            MessageType::OutputStreamData => "output_stream_data",
            MessageType::Acknowledge => "acknowledge",
            MessageType::ChannelClosed => "channel_closed",
            MessageType::StartPublication => "start_publication",
            MessageType::PausePublication => "pause_publication",
            MessageType::AgentSessionState => "agent_session_state",
            MessageType::InteractiveShell => "interactive_shell",
            MessageType::AgentTaskComplete => "agent_task_complete",
            MessageType::AgentTaskAcknowledge => "agent_task_acknowledge",
            MessageType::AgentJob => "agent_job",
            MessageType::AgentJobAck => "agent_job_ack",
            MessageType::AgentJobReply => "agent_job_reply",
            MessageType::AgentJobReplyAck => "agent_job_reply_ack",
        }
    }

    /// Parses the unpadded wire string.
    pub fn parse(s: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// True for the two sequenced kinds (`input_stream_data`, `output_stream_data`).
    pub fn is_stream_data(self) -> bool {
        matches!(self, MessageType::InputStreamData | MessageType::OutputStreamData)
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The PayloadType field (§3.4); `Undefined` (0) is what non-data messages carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum PayloadType {
    /// 0: not stream data (acknowledge, channel_closed, ...).
    Undefined = 0,
    /// 1: the data itself (keystrokes, terminal output, TCP/smux bytes).
    Output = 1,
    /// 2: defined, not produced by current code.
    Error = 2,
    /// 3: terminal size JSON.
    Size = 3,
    /// 4: defined, not produced by current code.
    Parameter = 4,
    /// 5: agent → client handshake request JSON.
    HandshakeRequest = 5,
    /// 6: client → agent handshake response JSON.
    HandshakeResponse = 6,
    /// 7: agent → client handshake complete JSON.
    HandshakeComplete = 7,
    /// 8: agent → client KMS challenge.
    EncChallengeRequest = 8,
    /// 9: client → agent KMS challenge answer.
    EncChallengeResponse = 9,
    /// 10: a 4-byte big-endian flag value.
    Flag = 10,
    /// 11: agent → client stderr text.
    StdErr = 11,
    /// 12: agent → client `EXIT_CODE: <n>` text.
    ExitCode = 12,
}

impl TryFrom<u32> for PayloadType {
    type Error = SsmError;
    fn try_from(v: u32) -> Result<Self, SsmError> {
        Ok(match v {
            0 => PayloadType::Undefined,
            1 => PayloadType::Output,
            2 => PayloadType::Error,
            3 => PayloadType::Size,
            4 => PayloadType::Parameter,
            5 => PayloadType::HandshakeRequest,
            6 => PayloadType::HandshakeResponse,
            7 => PayloadType::HandshakeComplete,
            8 => PayloadType::EncChallengeRequest,
            9 => PayloadType::EncChallengeResponse,
            10 => PayloadType::Flag,
            11 => PayloadType::StdErr,
            12 => PayloadType::ExitCode,
            other => return Err(SsmError::UnknownPayloadType(other)),
        })
    }
}

/// How the MessageType field is padded to 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypePadding {
    /// 0x20, what every sender writes.
    Spaces,
    /// 0x00, accepted by readers (edge case D5).
    Nuls,
}

/// Converts a UUID to SSM's wire order: canonical bytes 8–15 first, then bytes 0–7.
pub fn uuid_to_wire(id: &Uuid) -> [u8; 16] {
    let b = id.as_bytes();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&b[8..]);
    out[8..].copy_from_slice(&b[..8]);
    out
}

/// Converts SSM's half-swapped wire bytes back to a UUID.
pub fn uuid_from_wire(wire: &[u8; 16]) -> Uuid {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&wire[8..]);
    b[8..].copy_from_slice(&wire[..8]);
    Uuid::from_bytes(b)
}

/// SHA-256 of a payload, as carried in PayloadDigest.
pub fn payload_digest(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// One decoded (or to-be-encoded) AgentMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMessage {
    /// The MessageType string.
    pub message_type: MessageType,
    /// SchemaVersion (always 1 from real senders).
    pub schema_version: u32,
    /// CreatedDate: Unix epoch milliseconds.
    pub created_date: u64,
    /// SequenceNumber: the stream counter for stream data, 0 otherwise.
    pub sequence_number: i64,
    /// Header Flags (§3.5); no receiver acts on them.
    pub flags: u64,
    /// MessageId, in canonical form (converted from the wire order).
    pub message_id: Uuid,
    /// PayloadDigest as carried (not necessarily correct: see [`Self::digest_matches`]).
    pub payload_digest: [u8; 32],
    /// PayloadType.
    pub payload_type: PayloadType,
    /// The payload bytes.
    pub payload: Bytes,
}

impl AgentMessage {
    /// A message with schema version 1 and the correct digest of `payload`.
    pub fn new(
        message_type: MessageType,
        created_date: u64,
        sequence_number: i64,
        flags: u64,
        message_id: Uuid,
        payload_type: PayloadType,
        payload: Bytes,
    ) -> AgentMessage {
        AgentMessage {
            message_type,
            schema_version: SCHEMA_VERSION,
            created_date,
            sequence_number,
            flags,
            message_id,
            payload_digest: payload_digest(&payload),
            payload_type,
            payload,
        }
    }

    /// True when PayloadDigest is the SHA-256 of the payload.
    pub fn digest_matches(&self) -> bool {
        self.payload_digest == payload_digest(&self.payload)
    }

    /// Encodes with the space padding every sender uses.
    pub fn encode(&self) -> Bytes {
        self.encode_with_padding(TypePadding::Spaces)
    }

    /// Encodes with the given MessageType padding (NULs exist only to reproduce edge case D5).
    pub fn encode_with_padding(&self, padding: TypePadding) -> Bytes {
        let mut buf = BytesMut::with_capacity(PREFIX_LEN + self.payload.len());
        buf.put_u32(HEADER_LENGTH);
        let name = self.message_type.as_str().as_bytes();
        buf.put_slice(name);
        let pad = match padding {
            TypePadding::Spaces => b' ',
            TypePadding::Nuls => 0,
        };
        // Every known name is shorter than the field, so this never underflows.
        buf.put_bytes(pad, MESSAGE_TYPE_LEN.saturating_sub(name.len()));
        buf.put_u32(self.schema_version);
        buf.put_u64(self.created_date);
        buf.put_i64(self.sequence_number);
        buf.put_u64(self.flags);
        buf.put_slice(&uuid_to_wire(&self.message_id));
        buf.put_slice(&self.payload_digest);
        buf.put_u32(self.payload_type as u32);
        // Payloads are bounded far below 4 GiB by every producer; saturate rather than wrap.
        buf.put_u32(u32::try_from(self.payload.len()).unwrap_or(u32::MAX));
        buf.put_slice(&self.payload);
        buf.freeze()
    }

    /// Decodes one frame with the default payload limit.
    pub fn decode(frame: &[u8]) -> Result<AgentMessage, SsmError> {
        Self::decode_with_limit(frame, DEFAULT_MAX_PAYLOAD_LEN)
    }

    /// Decodes one frame, refusing payloads longer than `max_payload_len`.
    pub fn decode_with_limit(frame: &[u8], max_payload_len: usize) -> Result<AgentMessage, SsmError> {
        let header: &[u8; PREFIX_LEN] = frame
            .get(..PREFIX_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(SsmError::Truncated(frame.len()))?;
        let header_length = be_u32(header, 0);
        if header_length != HEADER_LENGTH {
            return Err(SsmError::HeaderLength(header_length));
        }
        let message_type = parse_message_type(&header[4..36])?;
        let schema_version = be_u32(header, 36);
        let created_date = be_u64(header, 40);
        let sequence_number = be_u64(header, 48) as i64;
        let flags = be_u64(header, 56);
        let mut wire_id = [0u8; 16];
        wire_id.copy_from_slice(&header[64..80]);
        let mut payload_digest = [0u8; 32];
        payload_digest.copy_from_slice(&header[80..112]);
        let payload_type = PayloadType::try_from(be_u32(header, 112))?;
        let payload_length = be_u32(header, 116) as usize;
        let payload = &frame[PREFIX_LEN..];
        if payload.len() > max_payload_len {
            return Err(SsmError::PayloadTooLong { len: payload.len(), max: max_payload_len });
        }
        if payload_length != payload.len() {
            return Err(SsmError::PayloadLength { declared: payload_length, actual: payload.len() });
        }
        // Both peers skip the remaining checks for the publication messages (§3.2).
        let publication =
            matches!(message_type, MessageType::StartPublication | MessageType::PausePublication);
        if created_date == 0 && !publication {
            return Err(SsmError::ZeroCreatedDate);
        }
        Ok(AgentMessage {
            message_type,
            schema_version,
            created_date,
            sequence_number,
            flags,
            message_id: uuid_from_wire(&wire_id),
            payload_digest,
            payload_type,
            payload: Bytes::copy_from_slice(payload),
        })
    }
}

/// Strips NUL and whitespace padding (readers accept both) and maps the name.
fn parse_message_type(field: &[u8]) -> Result<MessageType, SsmError> {
    let trimmed: &[u8] = {
        let end = field.iter().rposition(|b| *b != 0 && !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
        let start = field[..end].iter().position(|b| *b != 0 && !b.is_ascii_whitespace()).unwrap_or(end);
        &field[start..end]
    };
    if trimmed.is_empty() {
        return Err(SsmError::EmptyMessageType);
    }
    let name = std::str::from_utf8(trimmed)
        .map_err(|_| SsmError::UnknownMessageType(String::from_utf8_lossy(trimmed).into()))?;
    MessageType::parse(name).ok_or_else(|| SsmError::UnknownMessageType(name.to_owned()))
}

fn be_u32(h: &[u8; PREFIX_LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&h[at..at + 4]);
    u32::from_be_bytes(b)
}

fn be_u64(h: &[u8; PREFIX_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> AgentMessage {
        AgentMessage::new(
            MessageType::InputStreamData,
            1_795_698_986_305,
            7,
            0,
            Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
            PayloadType::Output,
            Bytes::from_static(b"ls\r"),
        )
    }

    #[test]
    fn uuid_wire_order_is_second_half_first() {
        let id = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(hex::encode(uuid_to_wire(&id)), "8899aabbccddeeff0011223344556677");
        assert_eq!(uuid_from_wire(&uuid_to_wire(&id)), id);
    }

    #[test]
    fn round_trip_and_layout() {
        let m = sample();
        let wire = m.encode();
        assert_eq!(wire.len(), PREFIX_LEN + 3);
        assert_eq!(&wire[..4], &116u32.to_be_bytes());
        assert_eq!(&wire[4..21], b"input_stream_data");
        assert!(wire[21..36].iter().all(|b| *b == b' '));
        assert_eq!(&wire[116..120], &3u32.to_be_bytes());
        let back = AgentMessage::decode(&wire).unwrap();
        assert_eq!(back, m);
        assert!(back.digest_matches());
    }

    #[test]
    fn nul_and_space_padding_both_decode() {
        let m = sample();
        let nul = m.encode_with_padding(TypePadding::Nuls);
        assert!(nul[21..36].iter().all(|b| *b == 0));
        assert_eq!(AgentMessage::decode(&nul).unwrap(), m);
    }

    #[test]
    fn strict_bounds() {
        let wire = sample().encode();
        assert!(matches!(AgentMessage::decode(&wire[..119]), Err(SsmError::Truncated(119))));
        let mut bad = wire.to_vec();
        bad[3] = 0;
        assert!(matches!(AgentMessage::decode(&bad), Err(SsmError::HeaderLength(0))));
        // A declared length that disagrees with the bytes present.
        let mut short = wire.to_vec();
        short.push(b'!');
        assert!(matches!(
            AgentMessage::decode(&short),
            Err(SsmError::PayloadLength { declared: 3, actual: 4 })
        ));
        assert!(matches!(
            AgentMessage::decode_with_limit(&wire, 2),
            Err(SsmError::PayloadTooLong { len: 3, max: 2 })
        ));
        let mut empty = wire.to_vec();
        empty[4..36].fill(b' ');
        assert!(matches!(AgentMessage::decode(&empty), Err(SsmError::EmptyMessageType)));
        let mut unknown = wire.to_vec();
        unknown[4..9].copy_from_slice(b"bogus");
        assert!(matches!(AgentMessage::decode(&unknown), Err(SsmError::UnknownMessageType(_))));
        let mut pt = wire.to_vec();
        pt[112..116].copy_from_slice(&13u32.to_be_bytes());
        assert!(matches!(AgentMessage::decode(&pt), Err(SsmError::UnknownPayloadType(13))));
    }

    #[test]
    fn zero_created_date_is_refused_except_for_publication() {
        let mut m = sample();
        m.created_date = 0;
        assert!(matches!(AgentMessage::decode(&m.encode()), Err(SsmError::ZeroCreatedDate)));
        m.message_type = MessageType::PausePublication;
        assert!(AgentMessage::decode(&m.encode()).is_ok());
    }

    #[test]
    fn wrong_digest_decodes_but_does_not_match() {
        let mut m = sample();
        m.payload_digest[0] ^= 1;
        let back = AgentMessage::decode(&m.encode()).unwrap();
        assert!(!back.digest_matches());
    }

    #[test]
    fn every_message_type_round_trips() {
        for t in MessageType::ALL {
            assert_eq!(MessageType::parse(t.as_str()), Some(t));
            assert!(t.as_str().len() < MESSAGE_TYPE_LEN);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = AgentMessage::decode(&bytes);
        }

        #[test]
        fn mutated_frames_never_panic(
            flips in proptest::collection::vec((0usize..140, any::<u8>()), 1..8),
            cut in 0usize..160,
        ) {
            let mut wire = sample().encode().to_vec();
            wire.extend_from_slice(&[0xAA; 17]);
            for (at, v) in flips {
                if let Some(b) = wire.get_mut(at) { *b = v; }
            }
            wire.truncate(cut);
            if let Ok(m) = AgentMessage::decode(&wire) {
                // Whatever decodes must re-encode to the same bytes (modulo padding style).
                let again = AgentMessage::decode(&m.encode()).unwrap();
                prop_assert_eq!(again, m);
            }
        }
    }
}
