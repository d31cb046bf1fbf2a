//! The JSON (and small binary) payloads of the SSM data channel, with SSM's exact member
//! names (spec §3.1, §3.3–§3.10). Field order follows what the stock peers emit, so
//! `serde_json::to_vec` reproduces their compact JSON byte for byte.
//!
//! `start_publication` / `pause_publication` carry no payload (their MessageType is the
//! whole message), so they have no type here.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::message::MessageType;
use super::SsmError;

/// The first (text) WebSocket frame the client sends: `OpenDataChannel` (§3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpenDataChannel {
    /// Always `"1.0"`.
    pub message_schema_version: String,
    /// A fresh UUID per (re)connect.
    pub request_id: String,
    /// The token issued by StartSession / ResumeSession.
    pub token_value: String,
    /// Per-process client UUID, constant across reconnects (absent from the agent's form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Plugin version (1.2.677.0 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// The agent's instance id, in the agent → MGS form only (§3.1 item 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_instance_id: Option<String>,
}

/// The `acknowledge` message payload (§3.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AcknowledgeContent {
    /// MessageType of the acknowledged message (`input_stream_data`/`output_stream_data`).
    pub acknowledged_message_type: String,
    /// MessageId of the acknowledged message, canonical hyphenated form.
    pub acknowledged_message_id: Uuid,
    /// SequenceNumber of the acknowledged message (what senders match on).
    pub acknowledged_message_sequence_number: i64,
    /// Always true in practice.
    pub is_sequential_message: bool,
}

impl AcknowledgeContent {
    /// The acknowledgement of one received stream-data message.
    pub fn for_message(message_type: MessageType, message_id: Uuid, sequence_number: i64) -> Self {
        AcknowledgeContent {
            acknowledged_message_type: message_type.as_str().to_owned(),
            acknowledged_message_id: message_id,
            acknowledged_message_sequence_number: sequence_number,
            is_sequential_message: true,
        }
    }
}

/// The `channel_closed` payload the service sends to end a session (§3.10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChannelClosed {
    /// A message id (canonical UUID string).
    pub message_id: String,
    /// ISO-8601 time, e.g. `2026-11-26T13:16:36.000Z`.
    pub created_date: String,
    /// The target id (`i-…` / `mi-…`).
    pub destination_id: String,
    /// The session id.
    pub session_id: String,
    /// Always `"channel_closed"`.
    pub message_type: String,
    /// Always 1.
    pub schema_version: u32,
    /// Text the plugin prints as `SessionId: <id> : <Output>` (empty: a plain exit line).
    pub output: String,
}

/// `agent_session_state` payload (agent → service only; never forwarded to the client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentSessionState {
    /// Always 1.
    pub schema_version: u32,
    /// `Connected` or `Terminating`.
    pub session_state: String,
    /// The session id.
    pub session_id: String,
}

/// The handshake action kinds (`ActionType`, §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    /// Tell the client the session type and its properties.
    SessionType,
    /// Ask the client for a KMS data key.
    #[serde(rename = "KMSEncryption")]
    KmsEncryption,
}

/// One requested client action of a HandshakeRequest, tagged by `ActionType`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ActionType", content = "ActionParameters")]
pub enum RequestedClientAction {
    /// `SessionType`: `{SessionType, Properties}`.
    SessionType(SessionTypeParameters),
    /// `KMSEncryption`: `{KMSKeyId, Challenge}`.
    #[serde(rename = "KMSEncryption")]
    KmsEncryption(KmsEncryptionParameters),
}

/// ActionParameters of the `SessionType` action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionTypeParameters {
    /// `Standard_Stream`, `InteractiveCommands`, `NonInteractiveCommands` or `Port`.
    pub session_type: String,
    /// The document's substituted properties, or null (Go sorts map keys, as serde_json does).
    pub properties: serde_json::Value,
}

/// ActionParameters of the `KMSEncryption` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsEncryptionParameters {
    /// Key id or ARN.
    #[serde(rename = "KMSKeyId")]
    pub kms_key_id: String,
    /// Opaque challenge string.
    #[serde(rename = "Challenge")]
    pub challenge: String,
}

/// PayloadType 5, agent → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HandshakeRequest {
    /// The agent's version (`x.y.z.w`).
    pub agent_version: String,
    /// Actions the client must process.
    pub requested_client_actions: Vec<RequestedClientAction>,
}

/// `ActionStatus` of a processed action: 1 Success, 2 Failed, 3 Unsupported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum ActionStatus {
    /// 1.
    Success,
    /// 2.
    Failed,
    /// 3.
    Unsupported,
}

impl From<ActionStatus> for u8 {
    fn from(s: ActionStatus) -> u8 {
        match s {
            ActionStatus::Success => 1,
            ActionStatus::Failed => 2,
            ActionStatus::Unsupported => 3,
        }
    }
}

impl TryFrom<u8> for ActionStatus {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(ActionStatus::Success),
            2 => Ok(ActionStatus::Failed),
            3 => Ok(ActionStatus::Unsupported),
            other => Err(format!("unknown ActionStatus {other}")),
        }
    }
}

/// One entry of `ProcessedClientActions` in a HandshakeResponse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessedClientAction {
    /// Which action this answers.
    pub action_type: ActionType,
    /// Outcome.
    pub action_status: ActionStatus,
    /// null for SessionType; `{KMSCipherTextKey, KMSCipherTextHash}` for KMSEncryption.
    pub action_result: serde_json::Value,
    /// Error text, empty on success.
    pub error: String,
}

/// PayloadType 6, client → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HandshakeResponse {
    /// The plugin version; drives smux, keepalive and stderr decisions.
    pub client_version: String,
    /// One entry per requested action.
    pub processed_client_actions: Vec<ProcessedClientAction>,
    /// null or a list of error strings.
    pub errors: Option<Vec<String>>,
}

/// PayloadType 7, agent → client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HandshakeComplete {
    /// Handshake duration in nanoseconds.
    pub handshake_time_to_complete: i64,
    /// Printed by the plugin when non-empty.
    pub customer_message: String,
}

/// PayloadType 8 / 9: the KMS challenge (base64 text, kept opaque here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncChallenge {
    /// Base64 challenge bytes.
    pub challenge: String,
}

/// PayloadType 3, client → agent terminal size (`cols` before `rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeData {
    /// Columns.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
}

/// PayloadType 10 values (a 4-byte big-endian uint32, §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// 1: client → agent, basic port forwarding: the local TCP client went away.
    DisconnectToPort,
    /// 2: client → agent: end the session (port-session Ctrl-C).
    TerminateSession,
    /// 3: agent → client: dialling the destination failed.
    ConnectToPortError,
}

impl Flag {
    /// The numeric flag value.
    pub fn value(self) -> u32 {
        match self {
            Flag::DisconnectToPort => 1,
            Flag::TerminateSession => 2,
            Flag::ConnectToPortError => 3,
        }
    }

    /// The 4-byte payload.
    pub fn encode(self) -> [u8; 4] {
        self.value().to_be_bytes()
    }

    /// Parses a 4-byte payload.
    pub fn decode(payload: &[u8]) -> Result<Flag, SsmError> {
        let b: [u8; 4] = payload.try_into().map_err(|_| SsmError::BadFlag)?;
        match u32::from_be_bytes(b) {
            1 => Ok(Flag::DisconnectToPort),
            2 => Ok(Flag::TerminateSession),
            3 => Ok(Flag::ConnectToPortError),
            _ => Err(SsmError::BadFlag),
        }
    }
}

/// Prefix of the PayloadType 12 text.
pub const EXIT_CODE_PREFIX: &str = "EXIT_CODE: ";

/// Formats a PayloadType 12 payload (`EXIT_CODE: <n>`); only NonInteractiveCommands with
/// separated streams carry one, otherwise the exit status never reaches the client (§3.10).
pub fn encode_exit_code(code: i32) -> String {
    format!("{EXIT_CODE_PREFIX}{code}")
}

/// Parses a PayloadType 12 payload.
pub fn decode_exit_code(payload: &[u8]) -> Result<i32, SsmError> {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.trim().strip_prefix(EXIT_CODE_PREFIX.trim_end()))
        .and_then(|n| n.trim().parse().ok())
        .ok_or(SsmError::BadExitCode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledge_matches_captured_bytes() {
        let id = Uuid::parse_str("6894d55e-1a81-469d-9d46-59402c1a956f").unwrap();
        let ack = AcknowledgeContent::for_message(MessageType::OutputStreamData, id, 0);
        assert_eq!(
            serde_json::to_string(&ack).unwrap(),
            r#"{"AcknowledgedMessageType":"output_stream_data","AcknowledgedMessageId":"6894d55e-1a81-469d-9d46-59402c1a956f","AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}"#
        );
    }

    #[test]
    fn handshake_request_serializes_like_the_agent() {
        let req = HandshakeRequest {
            agent_version: "3.3.1142.0".into(),
            requested_client_actions: vec![RequestedClientAction::SessionType(SessionTypeParameters {
                session_type: "Port".into(),
                properties: serde_json::json!({"type":"LocalPortForwarding","portNumber":"80","localPortNumber":"18906"}),
            })],
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"AgentVersion":"3.3.1142.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"localPortNumber":"18906","portNumber":"80","type":"LocalPortForwarding"}}}]}"#
        );
        let kms = RequestedClientAction::KmsEncryption(KmsEncryptionParameters {
            kms_key_id: "k".into(),
            challenge: "c".into(),
        });
        assert_eq!(
            serde_json::to_string(&kms).unwrap(),
            r#"{"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"k","Challenge":"c"}}"#
        );
    }

    #[test]
    fn handshake_response_round_trips_the_plugin_bytes() {
        let raw = r#"{"ClientVersion":"1.2.677.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null}"#;
        let r: HandshakeResponse = serde_json::from_str(raw).unwrap();
        assert_eq!(r.processed_client_actions[0].action_status, ActionStatus::Success);
        assert_eq!(serde_json::to_string(&r).unwrap(), raw);
        assert!(serde_json::from_str::<HandshakeResponse>(&raw.replace(":1,", ":9,")).is_err());
    }

    #[test]
    fn size_flag_and_exit_code() {
        assert_eq!(
            serde_json::to_string(&SizeData { cols: 80, rows: 24 }).unwrap(),
            r#"{"cols":80,"rows":24}"#
        );
        assert_eq!(Flag::TerminateSession.encode(), [0, 0, 0, 2]);
        assert_eq!(Flag::decode(&[0, 0, 0, 1]).unwrap(), Flag::DisconnectToPort);
        assert!(Flag::decode(&[0, 0, 2]).is_err());
        assert!(Flag::decode(&[0, 0, 0, 4]).is_err());
        assert_eq!(encode_exit_code(-3), "EXIT_CODE: -3");
        assert_eq!(decode_exit_code(b"EXIT_CODE: 17\n").unwrap(), 17);
        assert!(decode_exit_code(b"EXIT_CODE: x").is_err());
    }

    #[test]
    fn open_data_channel_keeps_member_order() {
        let raw = r#"{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"t","ClientId":"c","ClientVersion":"1.2.677.0"}"#;
        let o: OpenDataChannel = serde_json::from_str(raw).unwrap();
        assert_eq!(o.client_instance_id, None);
        assert_eq!(serde_json::to_string(&o).unwrap(), raw);
    }
}
