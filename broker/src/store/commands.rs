//! Persistent Run Command state: commands with their resolved targets, and invocations (a
//! command on one instance). The command's scheduler is the only writer of its rows.

use async_trait::async_trait;

use super::StoreError;

/// SSM's statuses of commands and invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Not sent to the agent yet (waiting for a concurrency slot).
    Pending,
    /// Sent to the agent, or running there.
    InProgress,
    /// Waiting for its agent to connect, within the delivery timeout.
    Delayed,
    /// Ran and exited 0 (a command: every invocation did).
    Success,
    /// Cancelled before or while it ran.
    Cancelled,
    /// Ran and failed, or could not run.
    Failed,
    /// Not delivered within the delivery timeout, or killed by the execution timeout.
    TimedOut,
    /// A cancel was sent; the agent has not confirmed it yet.
    Cancelling,
}

impl RunStatus {
    /// The name SSM uses.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "Pending",
            RunStatus::InProgress => "InProgress",
            RunStatus::Delayed => "Delayed",
            RunStatus::Success => "Success",
            RunStatus::Cancelled => "Cancelled",
            RunStatus::Failed => "Failed",
            RunStatus::TimedOut => "TimedOut",
            RunStatus::Cancelling => "Cancelling",
        }
    }

    /// Parses SSM's name.
    pub fn parse(s: &str) -> Option<Self> {
        use RunStatus::*;
        [Pending, InProgress, Delayed, Success, Cancelled, Failed, TimedOut, Cancelling]
            .into_iter()
            .find(|v| v.as_str() == s)
    }

    /// Whether nothing more happens to it.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::Cancelled | RunStatus::Failed | RunStatus::TimedOut)
    }
}

pub(super) fn parse_status(s: &str) -> Result<RunStatus, StoreError> {
    RunStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown run status {s:?}")))
}

/// A command as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// The command's id (a UUID).
    pub command_id: String,
    /// The document it runs.
    pub document_name: String,
    /// The document version it runs (`$DEFAULT` for built-in documents).
    pub document_version: String,
    /// The sender's comment.
    pub comment: String,
    /// The parameters as sent, JSON (`{"name": ["value", …]}`).
    pub parameters: String,
    /// The script the agents run.
    pub script: String,
    /// Where the script starts; empty for the agent's default.
    pub working_directory: String,
    /// Seconds each invocation may run.
    pub execution_timeout_s: i64,
    /// The `InstanceIds` of the request, JSON.
    pub instance_ids: String,
    /// The `Targets` of the request, JSON.
    pub targets: String,
    /// When it was sent, Unix time in microseconds.
    pub requested_us: i64,
    /// The delivery timeout in seconds (`TimeoutSeconds`).
    pub timeout_seconds: i64,
    /// `MaxConcurrency` as given (a number or a percentage).
    pub max_concurrency: String,
    /// `MaxErrors` as given.
    pub max_errors: String,
    /// The command's status.
    pub status: RunStatus,
    /// Its `StatusDetails`.
    pub status_details: String,
    /// ARN of who sent it.
    pub owner_arn: String,
}

/// One invocation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvocationRecord {
    /// The command.
    pub command_id: String,
    /// The instance.
    pub instance_id: String,
    /// Its place in the command's target list (the order invocations start in).
    pub seq: i64,
    /// Its status.
    pub status: Option<RunStatus>,
    /// Its `StatusDetails`.
    pub status_details: String,
    /// Whether the agent was sent the command.
    pub delivered: bool,
    /// When the script started on the agent, Unix time in microseconds.
    pub started_us: Option<i64>,
    /// When it ended.
    pub ended_us: Option<i64>,
    /// The script's exit code (SSM's `ResponseCode`).
    pub exit_code: Option<i32>,
    /// Standard output, cut at 24,000 characters.
    pub stdout: String,
    /// Standard error, cut at 8,000 characters.
    pub stderr: String,
    /// The whole standard output's length in bytes.
    pub stdout_bytes: i64,
    /// The whole standard error's length in bytes.
    pub stderr_bytes: i64,
    /// SHA-256 of the whole standard output, hex.
    pub stdout_sha256: String,
    /// SHA-256 of the whole standard error, hex.
    pub stderr_sha256: String,
}

impl InvocationRecord {
    /// The status, `Pending` for a record made without one.
    pub fn status(&self) -> RunStatus {
        self.status.unwrap_or(RunStatus::Pending)
    }
}

/// Run Command half of the store.
#[async_trait]
pub trait CommandStore: Send + Sync {
    /// Stores a new command and its invocations in one transaction.
    async fn insert_command(
        &self,
        command: &CommandRecord,
        invocations: &[InvocationRecord],
    ) -> Result<(), StoreError>;
    /// Sets a command's status.
    async fn set_command_status(
        &self,
        command_id: &str,
        status: RunStatus,
        details: &str,
    ) -> Result<(), StoreError>;
    /// Writes an invocation's state (its keys must exist).
    async fn update_invocation(&self, invocation: &InvocationRecord) -> Result<(), StoreError>;
    /// One command.
    async fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError>;
    /// Commands, newest first; only those with an invocation on `instance_id` if given.
    async fn commands(&self, instance_id: Option<&str>) -> Result<Vec<CommandRecord>, StoreError>;
    /// Invocations in target order, of one command and/or one instance.
    async fn invocations(
        &self,
        command_id: Option<&str>,
        instance_id: Option<&str>,
    ) -> Result<Vec<InvocationRecord>, StoreError>;
    /// Ids of commands not yet finished (for a restarted broker to resume them).
    async fn unfinished_commands(&self) -> Result<Vec<String>, StoreError>;
}
