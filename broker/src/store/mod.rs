//! Persistent state: principals, access keys, activations, managed instances, sessions,
//! documents.
//!
//! [`Store`] is the interface; [`sqlite::SqliteStore`] the embedded implementation. A
//! PostgreSQL implementation can sit behind the same trait for several brokers.

pub mod commands;
pub mod documents;
pub mod iam;
pub mod login;
pub mod sqlite;
mod sqlite_commands;
mod sqlite_documents;
mod sqlite_iam;
mod sqlite_login;

use async_trait::async_trait;

pub use commands::*;
pub use documents::*;
pub use iam::*;
pub use login::*;
pub use sqlite::SqliteStore;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored value does not parse.
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    /// Applying the schema migrations failed.
    #[error("schema migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// An IAM-style principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name (`aws:username`), also the prefix of its session ids.
    pub name: String,
    /// The principal's ARN.
    pub arn: String,
}

/// A hybrid activation.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The activation id.
    pub activation_id: String,
    /// SHA-256 of the activation code, hex; the code itself is shown once and never stored.
    pub code_hash: String,
    /// The IAM role its instances get.
    pub iam_role: String,
    /// Free text description.
    pub description: String,
    /// Name given to instances registered with it.
    pub default_instance_name: String,
    /// How many instances may register with it.
    pub registration_limit: i64,
    /// How many have.
    pub registrations: i64,
    /// When it stops working, Unix time in microseconds.
    pub expires_us: i64,
    /// When it was created, Unix time in microseconds.
    pub created_us: i64,
    /// Tags stamped on every instance registered with it.
    pub tags: Vec<(String, String)>,
}

/// Why an activation could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationRefusal {
    /// No activation has this id.
    NotFound,
    /// The activation code is wrong.
    CodeMismatch,
    /// The activation has expired.
    Expired {
        /// When it expired, Unix time in microseconds.
        at_us: i64,
    },
    /// The registration limit is reached.
    Exhausted {
        /// The limit.
        limit: i64,
    },
}

/// What an agent last said about its host.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct HostInfo {
    /// Version of the agent.
    pub agent_version: String,
    /// `Linux`, `MacOS` or `Windows`.
    pub platform_type: String,
    /// Name of the operating system distribution.
    pub platform_name: String,
    /// Version of the operating system.
    pub platform_version: String,
    /// The host's name.
    pub computer_name: String,
    /// The host's IP address.
    pub ip_address: String,
}

/// A registered managed instance.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Instance {
    /// The `mi-…` instance id.
    pub instance_id: String,
    /// The activation it registered with.
    pub activation_id: String,
    /// The IAM role it has.
    pub iam_role: String,
    /// Its name.
    pub name: String,
    /// Fingerprint of its agent certificate.
    pub fingerprint: String,
    /// When it registered, Unix time in microseconds.
    pub registered_us: i64,
    /// When its agent last reported, Unix time in microseconds.
    pub last_ping_us: Option<i64>,
    /// What its agent last said about the host.
    #[sqlx(flatten)]
    pub host: HostInfo,
}

/// SSM's session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// The session was started; its client has not connected.
    Connecting,
    /// Client and agent are connected.
    Connected,
    /// The client's or the agent's connection was lost; the session waits for it to come
    /// back within the resume window.
    Disconnected,
    /// TerminateSession was called; the session is ending.
    Terminating,
    /// The session ended.
    Terminated,
    /// The session could not start or broke.
    Failed,
}

impl SessionStatus {
    /// The name SSM uses.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Connecting => "Connecting",
            SessionStatus::Connected => "Connected",
            SessionStatus::Disconnected => "Disconnected",
            SessionStatus::Terminating => "Terminating",
            SessionStatus::Terminated => "Terminated",
            SessionStatus::Failed => "Failed",
        }
    }

    /// Parses SSM's name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Connecting,
            Self::Connected,
            Self::Disconnected,
            Self::Terminating,
            Self::Terminated,
            Self::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// Whether DescribeSessions lists it under `Active` (else `History`).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Connecting | Self::Connected | Self::Disconnected | Self::Terminating)
    }
}

/// A stored session status that is not one of SSM's names.
#[derive(Debug, thiserror::Error)]
#[error("unknown session status {0:?}")]
pub struct UnknownStatus(pub String);

impl TryFrom<String> for SessionStatus {
    type Error = UnknownStatus;

    fn try_from(s: String) -> Result<Self, UnknownStatus> {
        Self::parse(&s).ok_or(UnknownStatus(s))
    }
}

/// A session as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    /// The session's id.
    pub session_id: String,
    /// The instance it runs on.
    pub target: String,
    /// The session document.
    pub document: String,
    /// ARN of who started it.
    pub owner_arn: String,
    /// The reason given at StartSession.
    pub reason: String,
    /// Its state.
    #[sqlx(try_from = "String")]
    pub status: SessionStatus,
    /// When it started, Unix time in microseconds.
    pub start_us: i64,
    /// When it ended, Unix time in microseconds.
    pub end_us: Option<i64>,
    /// How it ended, for people (DescribeSessions `Details`).
    pub details: String,
    /// The remote process's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The preferences' maxSessionDuration when the session started, in minutes.
    pub max_duration_minutes: Option<i64>,
    /// Where its recording goes in S3 (`s3://bucket/key`), if anywhere.
    pub s3_output_url: Option<String>,
    /// Where its recording goes in CloudWatch Logs (`log-group:stream`), if anywhere.
    pub cloudwatch_output_url: Option<String>,
}

/// How a session ended, for [`Store::finish_session`].
#[derive(Debug, Clone)]
pub struct SessionEnd {
    /// The final state.
    pub status: SessionStatus,
    /// When it ended, Unix time in microseconds.
    pub end_us: i64,
    /// How it ended, for people.
    pub details: String,
    /// The remote process's exit code, if it exited.
    pub exit_code: Option<i32>,
}

/// The broker's persistent state.
#[async_trait]
pub trait Store: IamStore + LoginStore + DocumentStore + CommandStore + Send + Sync {
    /// Whether any principal exists yet (first start creates the admin).
    async fn has_principals(&self) -> Result<bool, StoreError>;
    /// Every activation, newest first.
    async fn activations(&self) -> Result<Vec<Activation>, StoreError>;
    /// Deletes an activation (registered instances stay); false if it did not exist.
    async fn delete_activation(&self, activation_id: &str) -> Result<bool, StoreError>;
    /// Stores a new activation.
    async fn insert_activation(&self, activation: &Activation) -> Result<(), StoreError>;
    /// Uses one registration of an activation, atomically, if the code matches and it is
    /// neither expired nor used up.
    async fn consume_activation(
        &self,
        activation_id: &str,
        code_hash: &str,
        now_us: i64,
    ) -> Result<Result<Activation, ActivationRefusal>, StoreError>;

    /// Stores a newly registered instance and accepts its first certificate (the instance's
    /// `fingerprint`) until `cert_not_after_us`.
    async fn insert_instance(&self, instance: &Instance, cert_not_after_us: i64) -> Result<(), StoreError>;
    /// The registered (not deregistered) instance whose accepted, unexpired agent certificate
    /// has this fingerprint.
    async fn instance_by_certificate(
        &self,
        fingerprint: &str,
        now_us: i64,
    ) -> Result<Option<Instance>, StoreError>;
    /// Accepts a renewed certificate of an instance. The certificate the agent presented
    /// for the renewal stays accepted (until its own expiry); every older one is dropped.
    /// False if the instance is unknown or deregistered.
    async fn renew_agent_certificate(
        &self,
        instance_id: &str,
        presented: &str,
        issued: &str,
        not_after_us: i64,
        now_us: i64,
    ) -> Result<bool, StoreError>;
    /// Deregisters an instance: it is no longer listed and none of its certificates is
    /// accepted any more. False if it is unknown or already deregistered.
    async fn deregister_instance(&self, instance_id: &str, now_us: i64) -> Result<bool, StoreError>;
    /// One registered instance.
    async fn instance(&self, instance_id: &str) -> Result<Option<Instance>, StoreError>;
    /// Every registered instance, ordered by id.
    async fn instances(&self) -> Result<Vec<Instance>, StoreError>;
    /// Records what the agent reported and when.
    async fn update_instance_host(
        &self,
        instance_id: &str,
        host: &HostInfo,
        ping_us: i64,
    ) -> Result<(), StoreError>;
    /// Records a heartbeat.
    async fn touch_instance(&self, instance_id: &str, ping_us: i64) -> Result<(), StoreError>;

    /// Stores a new session.
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// Moves a session to another live status.
    async fn set_session_status(&self, session_id: &str, status: SessionStatus) -> Result<(), StoreError>;
    /// Ends a session (only once: an ended session keeps its first ending).
    async fn finish_session(&self, session_id: &str, end: &SessionEnd) -> Result<(), StoreError>;
    /// One session.
    async fn session(&self, session_id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Sessions, newest first.
    async fn sessions(&self, active: bool) -> Result<Vec<SessionRecord>, StoreError>;
    /// How many sessions are live (not ended) in each status.
    async fn live_session_counts(&self) -> Result<Vec<(SessionStatus, u64)>, StoreError>;
}
