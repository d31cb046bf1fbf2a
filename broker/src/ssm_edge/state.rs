//! What outlives one WebSocket of a session: the SSM channel's sequence state and the input
//! the agent has not acknowledged, so a plugin that reconnects after `ResumeSession`
//! continues exactly where it was.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_proto::ssm::{ChannelConfig, DataChannel, Side};
use airlock_proto::Frame;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use crate::registry::{PendingSession, SessionPlan};

/// Sessions this edge keeps state for at once; more are refused (each holds bounded buffers).
pub const MAX_SESSIONS: usize = 4096;
/// Input bytes kept for resending (not yet acknowledged by the agent) before the plugin's
/// input is refused unacknowledged (it resends it later).
pub const INPUT_KEPT: usize = 1 << 20;
/// How long a reconnecting plugin waits for the previous WebSocket of its session to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What the plugin runs, as its handshake names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `Standard_Stream`: an interactive shell.
    Shell,
    /// `NonInteractiveCommands`: a command, its exit code sent as `EXIT_CODE: <n>`.
    Command(String),
    /// `InteractiveCommands`: a command on a PTY, ended as a shell is.
    InteractiveCommand(String),
    /// `Port` without `type` (`AWS-StartSSHSession`): one connection over the plugin's stdio.
    Stdio {
        /// The agent-side port.
        port: u16,
    },
    /// `Port` with `type: LocalPortForwarding`: smux v1, one connection per smux stream.
    Forward {
        /// The agent-side host.
        host: String,
        /// The agent-side port.
        port: u16,
        /// Whether the document names a host (`…ToRemoteHost`).
        remote_host: bool,
        /// Where the plugin listens (0: a port it picks).
        local_port: u16,
    },
}

impl Kind {
    /// The kind of a session about to start.
    pub fn of(pending: &PendingSession) -> Kind {
        let document = pending.document.rsplit('/').next().unwrap_or(&pending.document);
        match &pending.plan {
            SessionPlan::Shell => Kind::Shell,
            SessionPlan::Command(c) => Kind::Command(c.clone()),
            SessionPlan::InteractiveCommand(c) => Kind::InteractiveCommand(c.clone()),
            SessionPlan::Port(targets) => {
                let (host, port) =
                    targets.first().map(|t| (t.host.clone(), t.port)).unwrap_or(("localhost".into(), 22));
                if document == "AWS-StartSSHSession" {
                    Kind::Stdio { port }
                } else {
                    let remote_host = document == "AWS-StartPortForwardingSessionToRemoteHost";
                    // Only a port number reaches the plugin's listener; anything else is 0.
                    let local_port =
                        pending.local_port_number.as_deref().and_then(|p| p.trim().parse().ok()).unwrap_or(0);
                    Kind::Forward { host, port, remote_host, local_port }
                }
            }
        }
    }

    /// The handshake's `SessionType` and `Properties` (§3.8, §4.3).
    pub fn session_type(&self) -> (&'static str, serde_json::Value) {
        match self {
            Kind::Shell => ("Standard_Stream", serde_json::Value::Null),
            Kind::Command(command) => (
                "NonInteractiveCommands",
                serde_json::json!({ "linux": { "commands": command, "separateOutputStream": true } }),
            ),
            Kind::InteractiveCommand(command) => {
                ("InteractiveCommands", serde_json::json!({ "linux": { "commands": command } }))
            }
            Kind::Stdio { port } => ("Port", serde_json::json!({ "portNumber": port.to_string() })),
            Kind::Forward { host, port, remote_host, local_port } => {
                let mut p = serde_json::json!({
                    "portNumber": port.to_string(),
                    "localPortNumber": local_port.to_string(),
                    "type": "LocalPortForwarding",
                });
                if *remote_host {
                    p["host"] = serde_json::Value::String(host.clone());
                }
                ("Port", p)
            }
        }
    }
}

/// One session's edge state.
#[derive(Debug)]
pub struct SessionState {
    /// The session id.
    pub session_id: String,
    /// The instance it runs on (`channel_closed`'s DestinationId).
    pub target: String,
    /// What runs.
    pub kind: Kind,
    /// Sequencing, acknowledgements and resends towards the plugin.
    pub channel: DataChannel,
    /// The plugin answered the handshake.
    pub handshake_done: bool,
    /// The plugin's version from its handshake response or `OpenDataChannel`.
    pub client_version: String,
    /// Number of the next input frame to the core.
    pub input_next: u64,
    /// Input frames the agent has not acknowledged, for resending after a re-attach.
    pub kept: VecDeque<Frame>,
    /// Payload bytes in `kept`.
    pub kept_bytes: usize,
    /// Number of the first output frame from the core not yet taken.
    pub output_next: u64,
    /// The remote process's exit code, once known.
    pub exit: Option<i32>,
}

impl SessionState {
    /// A fresh session's state.
    pub fn new(pending: &PendingSession, client_version: String) -> SessionState {
        let mut config = ChannelConfig::new(Side::Agent);
        config.incoming_capacity = 128;
        config.outgoing_capacity = 256;
        config.max_payload_len = super::MAX_MESSAGE - 120;
        SessionState {
            session_id: pending.session_id.clone(),
            target: pending.target.clone(),
            kind: Kind::of(pending),
            channel: DataChannel::new(config),
            handshake_done: false,
            client_version,
            input_next: 0,
            kept: VecDeque::new(),
            kept_bytes: 0,
            output_next: 0,
            exit: None,
        }
    }

    /// Forgets kept input the agent acknowledged (every frame below `next`).
    pub fn input_acknowledged(&mut self, next: u64) {
        while self.kept.front().is_some_and(|f| f.seq < next) {
            if let Some(f) = self.kept.pop_front() {
                self.kept_bytes -= f.payload.len();
            }
        }
    }
}

/// One session's slot: its state, held by the WebSocket attached now, and the token that
/// asks that attachment to let go.
#[derive(Default)]
pub struct Slot {
    state: Arc<tokio::sync::Mutex<Option<SessionState>>>,
    kick: Mutex<CancellationToken>,
}

/// The state of one session held by its current WebSocket.
pub type Held = OwnedMutexGuard<Option<SessionState>>;

/// Why a session's state could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// Too many sessions at this edge.
    #[error("too many sessions at this broker's data-channel edge")]
    Full,
    /// The session has no state here (it was not started through this edge, or it ended).
    #[error("the session is not known at this data channel (it ended or was started elsewhere)")]
    Unknown,
    /// The previous WebSocket did not let go in time.
    #[error("the session's previous connection did not let go in time")]
    Busy,
}

/// Every session's slot, by session id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Slot>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sessions {
    /// Creates the slot of a new session and holds its state.
    pub fn start(&self, state: SessionState) -> Result<(Held, CancellationToken), SlotError> {
        let mut map = lock(&self.map);
        if map.len() >= MAX_SESSIONS {
            return Err(SlotError::Full);
        }
        if map.contains_key(&state.session_id) {
            // A second start of one session (its token raced itself): the first keeps it.
            return Err(SlotError::Busy);
        }
        let slot = Arc::new(Slot::default());
        let held = slot.state.clone().try_lock_owned().map_err(|_| SlotError::Busy)?;
        let kick = lock(&slot.kick).clone();
        map.insert(state.session_id.clone(), slot);
        let mut held = held;
        *held = Some(state);
        Ok((held, kick))
    }

    /// Takes a live session's state over from its previous WebSocket, if that one is still
    /// attached (a plugin that noticed the drop before we did).
    pub async fn resume(&self, session_id: &str) -> Result<(Held, CancellationToken), SlotError> {
        let slot = lock(&self.map).get(session_id).cloned().ok_or(SlotError::Unknown)?;
        let kick = {
            let mut kick = lock(&slot.kick);
            kick.cancel();
            *kick = CancellationToken::new();
            kick.clone()
        };
        let held = tokio::time::timeout(TAKEOVER_WAIT, slot.state.clone().lock_owned())
            .await
            .map_err(|_| SlotError::Busy)?;
        if held.is_none() {
            return Err(SlotError::Unknown);
        }
        Ok((held, kick))
    }

    /// Forgets an ended session.
    pub fn remove(&self, session_id: &str) {
        lock(&self.map).remove(session_id);
    }

    /// Ids of sessions no WebSocket holds now (candidates for [`Self::sweep`]).
    pub fn detached(&self) -> Vec<String> {
        lock(&self.map).iter().filter(|(_, s)| s.state.try_lock().is_ok()).map(|(id, _)| id.clone()).collect()
    }

    /// Number of sessions with state here.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether no session has state here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::PortTarget;
    use crate::store::Principal;

    fn pending(id: &str, document: &str, plan: SessionPlan) -> PendingSession {
        PendingSession {
            launch: Default::default(),
            session_id: id.into(),
            target: "mi-0123456789abcdef0".into(),
            document: document.into(),
            plan,
            owner: Principal { name: "admin".into(), arn: "arn".into() },
            local_port_number: Some("8080".into()),
        }
    }

    fn port(host: &str, port: u16) -> SessionPlan {
        SessionPlan::Port(vec![PortTarget { host: host.into(), port }])
    }

    #[test]
    fn documents_map_to_the_plugins_session_types() {
        let shell = pending("s", "SSM-SessionManagerRunShell", SessionPlan::Shell);
        assert_eq!(Kind::of(&shell).session_type(), ("Standard_Stream", serde_json::Value::Null));
        let ssh = pending("s", "AWS-StartSSHSession", port("localhost", 22));
        let (t, p) = Kind::of(&ssh).session_type();
        assert_eq!((t, p), ("Port", serde_json::json!({"portNumber": "22"})), "no type: stdio mode");
        let fwd = pending("s", "AWS-StartPortForwardingSession", port("localhost", 80));
        let (t, p) = Kind::of(&fwd).session_type();
        assert_eq!((t, p["type"].as_str(), p.get("host")), ("Port", Some("LocalPortForwarding"), None));
        assert_eq!(p["localPortNumber"], "8080", "the plugin listens where StartSession said");
        let remote = pending("s", "AWS-StartPortForwardingSessionToRemoteHost", port("db", 5432));
        let (_, p) = Kind::of(&remote).session_type();
        assert_eq!((p["host"].as_str(), p["portNumber"].as_str()), (Some("db"), Some("5432")));
        let cmd = pending("s", "AWS-StartNonInteractiveCommand", SessionPlan::Command("ls".into()));
        assert_eq!(Kind::of(&cmd).session_type().0, "NonInteractiveCommands");
        let tty = pending("s", "AWS-StartInteractiveCommand", SessionPlan::InteractiveCommand("top".into()));
        let (t, p) = Kind::of(&tty).session_type();
        assert_eq!((t, p["linux"]["commands"].as_str()), ("InteractiveCommands", Some("top")));
    }

    #[tokio::test]
    async fn a_resume_takes_the_state_over_from_the_attached_socket() {
        let sessions = Sessions::default();
        let st =
            SessionState::new(&pending("s-1", "SSM-SessionManagerRunShell", SessionPlan::Shell), "1".into());
        let (held, kick) = sessions.start(st).unwrap();
        assert!(sessions.detached().is_empty(), "held by its socket");
        let again =
            SessionState::new(&pending("s-1", "SSM-SessionManagerRunShell", SessionPlan::Shell), "1".into());
        assert_eq!(sessions.start(again).err(), Some(SlotError::Busy), "a second start keeps the first");
        assert_eq!(sessions.resume("nope").await.err(), Some(SlotError::Unknown));
        // The attached socket lets go when kicked.
        let attached = tokio::spawn(async move {
            kick.cancelled().await;
            drop(held);
        });
        let (held, _kick) = sessions.resume("s-1").await.unwrap();
        attached.await.unwrap();
        assert_eq!(held.as_ref().map(|s| s.session_id.as_str()), Some("s-1"));
        drop(held);
        assert_eq!(sessions.detached(), vec!["s-1".to_owned()]);
        sessions.remove("s-1");
        assert!(sessions.is_empty());
    }

    #[test]
    fn acknowledged_input_is_forgotten() {
        let mut st =
            SessionState::new(&pending("s", "SSM-SessionManagerRunShell", SessionPlan::Shell), "1".into());
        for seq in 0..3 {
            st.kept.push_back(Frame::data(seq, bytes::Bytes::from_static(b"ab")));
            st.kept_bytes += 2;
        }
        st.input_acknowledged(2);
        assert_eq!((st.kept.len(), st.kept_bytes), (1, 2));
    }
}
