//! Run Command messages on the agent's control stream (docs/wire.md §2.7): the broker asks an
//! agent to run one command invocation, the agent reports its result until the broker
//! acknowledges it.

use serde::{Deserialize, Serialize};

use crate::ids::CommandId;

/// The most characters of standard output a result carries inline (SSM's
/// `StandardOutputContent` limit).
pub const MAX_INLINE_STDOUT_CHARS: usize = 24_000;
/// The most characters of standard error a result carries inline (SSM's
/// `StandardErrorContent` limit).
pub const MAX_INLINE_STDERR_CHARS: usize = 8_000;
/// The most bytes of standard output inline: keeps a result of multi-byte text inside one
/// control frame of the agent link (64 KiB).
pub const MAX_INLINE_STDOUT_BYTES: usize = 40_000;
/// The most bytes of standard error inline.
pub const MAX_INLINE_STDERR_BYTES: usize = 16_000;
/// The longest script a `RunCommand` may carry.
pub const MAX_SCRIPT_BYTES: usize = 32 * 1024;

/// broker → agent: run `script` through `sh -c` for the command `command_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCommand {
    /// The command this invocation belongs to; one invocation per agent and command.
    pub command_id: CommandId,
    /// The script, passed to `sh -c` (the document's `commands`, one per line).
    pub script: String,
    /// Seconds the process may run before its process group is killed (`executionTimeout`).
    pub execution_timeout_s: u32,
    /// Directory the script starts in; empty for the agent's default.
    pub working_directory: String,
    /// Run as this OS user; `None` for the agent's own user (same rules as a session's).
    pub run_as: Option<String>,
}

/// How an invocation ended on the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutcome {
    /// The script exited by itself; `exit_code` says how.
    Exited,
    /// The execution timeout passed and the process group was killed.
    TimedOut,
    /// The broker cancelled it and the process group was killed.
    Cancelled,
    /// The script could not be started (no shell, unknown user, bad directory).
    StartFailed,
    /// The agent stopped or restarted while the script ran.
    Interrupted,
}

/// agent → broker: the result of an invocation, sent again after each reconnect until the
/// broker answers `CommandResultAck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command the invocation belongs to.
    pub command_id: CommandId,
    /// How it ended.
    pub outcome: CommandOutcome,
    /// The exit code (128+signal if killed; -1 when it never ran).
    pub exit_code: i32,
    /// The first characters of standard output, cut at [`MAX_INLINE_STDOUT_CHARS`].
    pub stdout: String,
    /// The first characters of standard error, cut at [`MAX_INLINE_STDERR_CHARS`].
    pub stderr: String,
    /// The whole standard output's length in bytes (more than `stdout` holds: it was cut).
    pub stdout_bytes: u64,
    /// The whole standard error's length in bytes.
    pub stderr_bytes: u64,
    /// SHA-256 of the whole standard output, lower-case hex.
    pub stdout_sha256: String,
    /// SHA-256 of the whole standard error, lower-case hex.
    pub stderr_sha256: String,
    /// When the script started, Unix time in microseconds (0 if it never did).
    pub started_us: i64,
    /// When it ended, Unix time in microseconds.
    pub ended_us: i64,
}
