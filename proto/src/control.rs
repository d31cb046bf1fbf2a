//! Control messages carried in [`crate::FrameKind::Control`] frames.

use serde::{Deserialize, Serialize};

use crate::command::{CommandResult, RunCommand};
use crate::ids::CommandId;
use crate::version::PeerVersion;

/// What the agent runs for a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionSpec {
    /// An interactive login shell on a PTY of the given size.
    Shell {
        /// Terminal width in columns.
        cols: u16,
        /// Terminal height in rows.
        rows: u16,
        /// The `TERM` value the shell is started with.
        term: String,
        /// Run the shell as this OS user (SSM's RunAs, resolved by the broker: the
        /// principal's `SSMSessionRunAs` tag, else `runAsDefaultUser`). `None`: the agent's
        /// own user. The user must exist on the host, and the agent must run as root unless
        /// it is the agent's own user; otherwise the session fails to start.
        run_as: Option<String>,
        /// Shell profile (SSM's `shellProfile.linux`): typed into the shell, followed by a
        /// newline, right after it starts; echoed like any input.
        profile: Option<String>,
    },
    /// A command run through `sh -c` without a PTY; stdout and stderr kept apart.
    Command {
        /// The command line, passed to `sh -c`.
        command: String,
        /// Run the command as this OS user; same rules as the `run_as` of a `Shell`.
        run_as: Option<String>,
    },
    /// A command run through `sh -c` on a PTY of the given size (SSM's
    /// `InteractiveCommands`): keys in, terminal output out, resizes honoured, the command's
    /// exit code at the end as for a `Shell`. Appended last so the other variants keep their
    /// postcard indices.
    InteractiveCommand {
        /// The command line, passed to `sh -c`.
        command: String,
        /// Terminal width in columns.
        cols: u16,
        /// Terminal height in rows.
        rows: u16,
        /// The `TERM` value the command is started with.
        term: String,
        /// Run the command as this OS user; same rules as the `run_as` of a `Shell`.
        run_as: Option<String>,
    },
}

/// Facts an agent reports about its host when it connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentHello {
    /// Version of the agent binary.
    pub agent_version: String,
    /// `Linux`, `MacOS` or `Windows` (SSM's PlatformType).
    pub platform_type: String,
    /// Name of the operating system distribution (SSM's PlatformName).
    pub platform_name: String,
    /// Version of the operating system (SSM's PlatformVersion).
    pub platform_version: String,
    /// The host's name.
    pub hostname: String,
    /// The host's primary IP address, as the agent sees it.
    pub ip_address: String,
}

/// First message of a CLI client on its session stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The `TokenValue` returned by StartSession.
    pub token: String,
    /// Version of the `airlock` CLI.
    pub client_version: String,
    /// Initial terminal size for shells (0 when unknown, e.g. stdin is not a terminal).
    pub cols: u16,
    /// Initial terminal height in rows (0 when unknown).
    pub rows: u16,
    /// The client's `TERM`, passed to the remote shell.
    pub term: String,
}

/// Why a stream or session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// The remote process exited (an `Exit` message came before).
    Exited,
    /// TerminateSession was called.
    Terminated,
    /// The token was unknown, already used or expired.
    Unauthorized,
    /// The target agent is not connected.
    TargetNotConnected,
    /// The agent could not start what was asked (e.g. no shell, spawn failure).
    StartFailed,
    /// The peer broke the protocol.
    ProtocolError,
    /// The agent's link went away.
    AgentLost,
    /// The client went away.
    ClientLost,
    /// Anything else; the message says what.
    Internal,
    /// The agent's operator does not allow the requested host and port.
    Refused,
    /// The TCP connection on the far side failed (refused, unreachable, reset).
    ConnectFailed,
    /// The session is not live any more (ended, or its resume window passed).
    Gone,
}

/// Every control message. Which side may send which is documented per variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// client → broker: first frame of a client's session stream.
    ClientHello(ClientRequest),
    /// broker → client: the agent started the session; data may flow.
    Ready {
        /// The session the stream belongs to.
        session_id: String,
    },
    /// agent → broker: first frame of the agent's control stream.
    AgentHello(AgentHello),
    /// agent → broker on the control stream, answered by the broker with the same `seq`.
    Heartbeat {
        /// Sequence number the answer echoes.
        seq: u64,
    },
    /// broker → agent: first frame of a broker-opened session stream.
    Open {
        /// The session the stream carries.
        session_id: String,
        /// What to run for it.
        spec: SessionSpec,
    },
    /// agent → broker: the session's process is running.
    Started,
    /// client → agent: the terminal changed size.
    Resize {
        /// New width in columns.
        cols: u16,
        /// New height in rows.
        rows: u16,
    },
    /// agent → client: the remote process ended with this exit code (128+signal if killed).
    Exit {
        /// The exit code (128+signal if the process was killed).
        code: i32,
    },
    /// any direction: the stream ends; `message` is for humans.
    Close {
        /// Why the stream ends.
        reason: CloseReason,
        /// Human-readable detail.
        message: String,
    },
    /// client → broker: first frame of each further stream of a port session; carries one
    /// TCP connection to the session's port target number `target` (0-based, in the order
    /// of the StartSession parameters).
    Connect {
        /// 0-based index of the port target in the StartSession parameters.
        target: u16,
    },
    /// broker → agent: first frame of a broker-opened stream: connect to `host:port` for
    /// the port session `session_id` and relay that TCP connection on this stream.
    Dial {
        /// The port session this connection belongs to.
        session_id: String,
        /// Host to connect to, as seen from the agent.
        host: String,
        /// TCP port to connect to.
        port: u16,
    },
    /// agent → broker on the control stream: renew my certificate. `csr` is a PEM CSR for a
    /// fresh key pair made on the host; the broker answers `CertificateRenewed` or
    /// `RenewalRefused` on the same stream.
    RenewCertificate {
        /// PEM certificate signing request for a fresh key pair made on the host.
        csr: String,
    },
    /// broker → agent on the control stream: the renewed certificate (PEM, same instance id,
    /// signed by the broker CA) for the key of the last `RenewCertificate`.
    CertificateRenewed {
        /// The renewed certificate, PEM.
        certificate: String,
    },
    /// broker → agent on the control stream: the renewal failed; the current certificate
    /// stays valid until its own expiry. `message` is for humans.
    RenewalRefused {
        /// Human-readable reason.
        message: String,
    },
    /// Cumulative acknowledgement of the opposite direction's data frames: every frame
    /// numbered below `next` arrived. The client acknowledges output, the agent input; the
    /// broker passes each on to the other end, which then drops what it kept for resending.
    Ack {
        /// The number of the first data frame not yet received.
        next: u64,
    },
    /// broker → agent: first frame of a broker-opened stream that re-attaches the live
    /// session `session_id` after a detach; the agent resends its output frames from
    /// `resend_from` on this stream and answers `Attached`, or `Close` if the session is gone.
    Attach {
        /// The live session to re-attach.
        session_id: String,
        /// The number of the first output frame the client has not received.
        resend_from: u64,
    },
    /// agent → broker: the answer to `Attach` (and, with 0, implied by `Started`): the
    /// number of the next input frame the agent expects.
    Attached {
        /// The number of the first input frame the agent has not received.
        input_next: u64,
    },
    /// client → broker: first frame of a client stream that resumes its session after the
    /// connection was lost. `token` comes from ResumeSession (single use).
    ClientResume {
        /// The `TokenValue` returned by ResumeSession.
        token: String,
        /// The number of the first output frame the client has not received.
        output_next: u64,
    },
    /// broker → client: the session is attached again (on the stream of a `ClientResume`,
    /// or on the live stream after the agent came back): resend input from `input_next`.
    Resumed {
        /// The number of the first input frame the agent has not received.
        input_next: u64,
    },
    /// broker → agent on a session stream: how long to keep the session when its stream goes
    /// away (the preferences' `resumeWindowSeconds`). Agents that predate it ignore it and
    /// use their own default.
    ResumeWindow {
        /// The window in seconds; 0 ends the session as soon as its stream goes away.
        seconds: u32,
    },
    /// agent → broker: first frame of the agent's control stream from protocol 2 on
    /// (`AgentHello` with the agent's protocol version and capabilities, §2.5).
    AgentHelloVersioned {
        /// The agent's protocol and capabilities.
        version: PeerVersion,
        /// Facts about its host.
        hello: AgentHello,
    },
    /// client → broker: first frame of a client's session stream from protocol 2 on
    /// (`ClientHello` with the client's protocol version and capabilities, §2.5).
    ClientHelloVersioned {
        /// The client's protocol and capabilities.
        version: PeerVersion,
        /// The session it asks for.
        request: ClientRequest,
    },
    /// broker → agent on the control stream, only to agents with the `run-command`
    /// capability: run one Run Command invocation. Sent again after a reconnect while the
    /// broker has no result; the agent runs each command id at most once.
    RunCommand(RunCommand),
    /// broker → agent on the control stream: kill the invocation's process group; its result
    /// says `Cancelled`. Unknown or finished commands are ignored.
    CancelCommand {
        /// The command to cancel.
        command_id: CommandId,
    },
    /// agent → broker on the control stream: the invocation's process started.
    CommandStarted {
        /// The command that started.
        command_id: CommandId,
        /// When it started, Unix time in microseconds.
        started_us: i64,
    },
    /// agent → broker on the control stream: an invocation's result, resent after every
    /// reconnect until acknowledged.
    CommandResult(CommandResult),
    /// broker → agent on the control stream: the result of `command_id` is recorded; the
    /// agent forgets it.
    CommandResultAck {
        /// The command whose result is recorded.
        command_id: CommandId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips() {
        let msgs = vec![
            Control::ClientHello(ClientRequest {
                token: "t".into(),
                client_version: "1".into(),
                cols: 80,
                rows: 24,
                term: "xterm".into(),
            }),
            Control::Ready { session_id: "alice-0123".into() },
            Control::AgentHello(AgentHello { hostname: "h".into(), ..Default::default() }),
            Control::Heartbeat { seq: u64::MAX },
            Control::Open {
                session_id: "s".into(),
                spec: SessionSpec::Shell {
                    cols: 80,
                    rows: 24,
                    term: "xterm".into(),
                    run_as: None,
                    profile: None,
                },
            },
            Control::Open {
                session_id: "s".into(),
                spec: SessionSpec::Shell {
                    cols: 80,
                    rows: 24,
                    term: "xterm".into(),
                    run_as: Some("alice".into()),
                    profile: Some("export A=1\ncd /tmp".into()),
                },
            },
            Control::Open {
                session_id: "s".into(),
                spec: SessionSpec::Command { command: "ls".into(), run_as: None },
            },
            Control::Open {
                session_id: "s".into(),
                spec: SessionSpec::Command { command: "id -un".into(), run_as: Some("bob".into()) },
            },
            Control::Open {
                session_id: "s".into(),
                spec: SessionSpec::InteractiveCommand {
                    command: "top".into(),
                    cols: 80,
                    rows: 24,
                    term: "xterm".into(),
                    run_as: Some("bob".into()),
                },
            },
            Control::Started,
            Control::Resize { cols: 120, rows: 40 },
            Control::Exit { code: -1 },
            Control::Close { reason: CloseReason::AgentLost, message: "gone".into() },
            Control::Close { reason: CloseReason::Refused, message: "no".into() },
            Control::Connect { target: 3 },
            Control::Dial { session_id: "s".into(), host: "db.internal".into(), port: 5432 },
            Control::RenewCertificate { csr: "-----BEGIN CERTIFICATE REQUEST-----".into() },
            Control::CertificateRenewed { certificate: "-----BEGIN CERTIFICATE-----".into() },
            Control::RenewalRefused { message: "deregistered".into() },
            Control::Ack { next: 7 },
            Control::Attach { session_id: "s".into(), resend_from: 3 },
            Control::Attached { input_next: 9 },
            Control::ClientResume { token: "t".into(), output_next: 12 },
            Control::Resumed { input_next: 4 },
            Control::ResumeWindow { seconds: 600 },
            Control::Close { reason: CloseReason::Gone, message: "expired".into() },
            Control::AgentHelloVersioned {
                version: PeerVersion::current(),
                hello: AgentHello { hostname: "h".into(), ..Default::default() },
            },
            Control::ClientHelloVersioned {
                version: PeerVersion::unversioned(),
                request: ClientRequest {
                    token: "t".into(),
                    client_version: "1".into(),
                    cols: 80,
                    rows: 24,
                    term: "xterm".into(),
                },
            },
            Control::RunCommand(crate::command::RunCommand {
                command_id: CommandId::generate(),
                script: "uptime\ndf -h".into(),
                execution_timeout_s: 3600,
                working_directory: String::new(),
                run_as: None,
            }),
            Control::CancelCommand { command_id: CommandId::generate() },
            Control::CommandStarted { command_id: CommandId::generate(), started_us: 1 },
            Control::CommandResult(crate::command::CommandResult {
                command_id: CommandId::generate(),
                outcome: crate::command::CommandOutcome::TimedOut,
                exit_code: 137,
                stdout: "out".into(),
                stderr: String::new(),
                stdout_bytes: 99_999,
                stderr_bytes: 0,
                stdout_sha256: "ab".into(),
                stderr_sha256: "cd".into(),
                started_us: 5,
                ended_us: 6,
            }),
            Control::CommandResultAck { command_id: CommandId::generate() },
        ];
        for msg in msgs {
            let bytes = postcard::to_allocvec(&msg).unwrap();
            assert_eq!(postcard::from_bytes::<Control>(&bytes).unwrap(), msg);
        }
    }

    #[test]
    fn truncated_control_is_an_error() {
        let bytes = postcard::to_allocvec(&Control::Ready { session_id: "abcdef".into() }).unwrap();
        for cut in 0..bytes.len() {
            assert!(postcard::from_bytes::<Control>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}

/// Property tests: control messages come from unauthenticated peers (a client's hello), so
/// decoding any bytes must fail cleanly, never panic or allocate beyond the input.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Vec<u8>> {
        let msgs = [
            Control::ClientHello(ClientRequest {
                token: "token".into(),
                client_version: "1".into(),
                cols: 80,
                rows: 24,
                term: "xterm".into(),
            }),
            Control::AgentHello(AgentHello { hostname: "h".into(), ..Default::default() }),
            Control::Open {
                session_id: "s".into(),
                spec: SessionSpec::Shell { cols: 1, rows: 2, term: "t".into(), run_as: None, profile: None },
            },
            Control::Close { reason: CloseReason::Internal, message: "m".into() },
            Control::Dial { session_id: "s".into(), host: "h".into(), port: 22 },
        ];
        msgs.iter().filter_map(|m| postcard::to_allocvec(m).ok()).collect()
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_decode_or_fail_cleanly(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = postcard::from_bytes::<Control>(&input);
        }

        #[test]
        fn mutated_messages_decode_or_fail_cleanly(
            which in any::<usize>(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let samples = samples();
            let mut bytes = samples[which % samples.len()].clone();
            for (at, value) in edits {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            if let Ok(msg) = postcard::from_bytes::<Control>(&bytes) {
                // Whatever decodes re-encodes, and no string is longer than the input.
                let again = postcard::to_allocvec(&msg).unwrap();
                prop_assert!(again.len() <= bytes.len() + 16);
            }
        }
    }
}

/// The encoding agents and CLIs already in the field speak: postcard names a variant by its
/// index, so new messages are only ever appended. These bytes were produced by the release
/// before resume; a change that reorders or reshapes an existing message fails here.
#[cfg(test)]
mod frozen {
    use super::*;

    /// A command id for the Run Command messages.
    const ID: &str = "0b5c3a4e-2f1d-4c8e-9a6b-3d2e1f0a9b8c";

    #[test]
    fn existing_messages_keep_their_bytes() {
        let cases: Vec<(Control, &str)> = vec![
            (
                Control::ClientHello(ClientRequest {
                    token: "t".into(),
                    client_version: "1".into(),
                    cols: 80,
                    rows: 24,
                    term: "xterm".into(),
                }),
                "0001740131501805787465726d",
            ),
            (Control::Ready { session_id: "s".into() }, "010173"),
            (Control::Heartbeat { seq: 300 }, "03ac02"),
            (
                Control::Open {
                    session_id: "s".into(),
                    spec: SessionSpec::Command { command: "ls".into(), run_as: None },
                },
                "04017301026c7300",
            ),
            (Control::Started, "05"),
            (Control::Resize { cols: 120, rows: 40 }, "067828"),
            (Control::Exit { code: -1 }, "0701"),
            (Control::Close { reason: CloseReason::ConnectFailed, message: "m".into() }, "080a016d"),
            (Control::Connect { target: 3 }, "0903"),
            (Control::Dial { session_id: "s".into(), host: "h".into(), port: 22 }, "0a0173016816"),
            (Control::RenewalRefused { message: "m".into() }, "0d016d"),
            // Protocol 1's resume messages.
            (Control::Ack { next: 5 }, "0e05"),
            (Control::Attach { session_id: "s".into(), resend_from: 3 }, "0f017303"),
            (Control::Attached { input_next: 9 }, "1009"),
            (Control::ClientResume { token: "t".into(), output_next: 12 }, "1101740c"),
            (Control::Resumed { input_next: 4 }, "1204"),
            (Control::ResumeWindow { seconds: 600 }, "13d804"),
            (Control::Close { reason: CloseReason::Gone, message: "e".into() }, "080b0165"),
            // Protocol 2's versioned hellos.
            (
                Control::AgentHelloVersioned {
                    version: PeerVersion { protocol: 2, capabilities: vec![] },
                    hello: AgentHello { hostname: "h".into(), ..Default::default() },
                },
                "14020000000000016800",
            ),
            (
                Control::ClientHelloVersioned {
                    version: PeerVersion { protocol: 2, capabilities: vec!["resume".into()] },
                    request: ClientRequest {
                        token: "t".into(),
                        client_version: "1".into(),
                        cols: 80,
                        rows: 24,
                        term: "xterm".into(),
                    },
                },
                "15020106726573756d6501740131501805787465726d",
            ),
            // Protocol 2's interactive commands: index 2 of `SessionSpec`, after `Shell` and `Command`.
            (
                Control::Open {
                    session_id: "s".into(),
                    spec: SessionSpec::InteractiveCommand {
                        command: "ls".into(),
                        cols: 80,
                        rows: 24,
                        term: "x".into(),
                        run_as: None,
                    },
                },
                "04017302026c735018017800",
            ),
            // Run Command (capability `run-command`), appended after the versioned hellos.
            (
                Control::RunCommand(crate::command::RunCommand {
                    command_id: ID.parse().unwrap(),
                    script: "ls".into(),
                    execution_timeout_s: 600,
                    working_directory: String::new(),
                    run_as: None,
                }),
                "162430623563336134652d326631642d346338652d396136622d336432653166306139623863026c73d8040000",
            ),
            (Control::CancelCommand { command_id: ID.parse().unwrap() }, "172430623563336134652d326631642d346338652d396136622d336432653166306139623863"),
            (Control::CommandStarted { command_id: ID.parse().unwrap(), started_us: 2 }, "182430623563336134652d326631642d346338652d396136622d33643265316630613962386304"),
            (
                Control::CommandResult(crate::command::CommandResult {
                    command_id: ID.parse().unwrap(),
                    outcome: crate::command::CommandOutcome::Exited,
                    exit_code: 1,
                    stdout: "o".into(),
                    stderr: "e".into(),
                    stdout_bytes: 1,
                    stderr_bytes: 1,
                    stdout_sha256: "a".into(),
                    stderr_sha256: "b".into(),
                    started_us: 1,
                    ended_us: 2,
                }),
                "192430623563336134652d326631642d346338652d396136622d3364326531663061396238630002016f01650101016101620204",
            ),
            (Control::CommandResultAck { command_id: ID.parse().unwrap() }, "1a2430623563336134652d326631642d346338652d396136622d336432653166306139623863"),
        ];
        for (msg, hex) in cases {
            let bytes = postcard::to_allocvec(&msg).unwrap();
            let got: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, hex, "{msg:?}");
        }
    }
}
