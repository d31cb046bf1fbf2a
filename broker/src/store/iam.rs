//! Persistent identity state: principals, keys, policies, instance tags, audit events.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::StoreError;
pub use crate::audit::ChainReport;

/// A user or a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An IAM user.
    User,
    /// An IAM role.
    Role,
}

impl PrincipalKind {
    /// The word used in ARNs and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Role => "role",
        }
    }
}

/// A principal as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    /// The user or role name.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// User or role.
    pub kind: PrincipalKind,
    /// `AIDA…` for users, `AROA…` for roles (`aws:userid`).
    pub principal_id: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// When it was created, Unix time in microseconds.
    pub created_us: i64,
}

/// An access key as stored; the secret is sealed under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The access key id.
    pub access_key_id: String,
    /// Name of the principal the key belongs to.
    pub principal: String,
    /// The secret access key, sealed under the master key.
    pub secret_sealed: String,
    /// Whether the key may sign requests.
    pub active: bool,
    /// When it was created, Unix time in microseconds.
    pub created_us: i64,
    /// Temporary credentials only: when they stop working.
    pub expires_us: Option<i64>,
    /// Temporary credentials only: SHA-256 (hex) of the session token.
    pub token_hash: Option<String>,
    /// Temporary credentials only: the role session name.
    pub session_name: Option<String>,
}

/// A customer-managed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedPolicy {
    /// The policy name.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// The policy document, JSON.
    pub document: String,
    /// When it was created, Unix time in microseconds.
    pub created_us: i64,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// It existed and is gone.
    Yes,
    /// There was nothing to delete.
    NotFound,
    /// Something still refers to it; the text says what.
    Conflict(String),
}

/// One authorization decision on record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When the decision was made, Unix time in microseconds.
    pub at_us: i64,
    /// ARN of the caller.
    pub principal: String,
    /// The action asked for.
    pub action: String,
    /// The resource acted on.
    pub resource: String,
    /// `allowed`, `explicitDeny` or `implicitDeny`.
    pub decision: String,
    /// The policy whose statement decided, if one did.
    pub policy: Option<String>,
    /// That statement's `Sid`, if it has one.
    pub sid: Option<String>,
    /// That statement's index in the policy.
    pub statement_index: Option<i64>,
    /// The caller's IP address.
    pub source_ip: String,
}

/// Identity half of the store.
#[async_trait]
pub trait IamStore: Send + Sync {
    /// Creates a principal; false if the name is taken (users and roles share names).
    async fn create_principal(&self, p: &PrincipalRecord) -> Result<bool, StoreError>;
    /// One principal by name.
    async fn principal(&self, name: &str) -> Result<Option<PrincipalRecord>, StoreError>;
    /// All principals of a kind, by name.
    async fn principals(&self, kind: PrincipalKind) -> Result<Vec<PrincipalRecord>, StoreError>;
    /// Deletes a principal that has no keys and no policies left.
    async fn delete_principal(&self, name: &str) -> Result<Deleted, StoreError>;
    /// Replaces a principal's tags.
    async fn set_principal_tags(&self, name: &str, tags: &BTreeMap<String, String>)
        -> Result<(), StoreError>;
    /// Sets a role's trust policy; false if no role has that name.
    async fn set_trust_policy(&self, role: &str, document: &str) -> Result<bool, StoreError>;
    /// A role's trust policy; `None` for a role that has none (the account is trusted).
    async fn trust_policy(&self, role: &str) -> Result<Option<String>, StoreError>;

    /// Stores a key.
    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    /// One key.
    async fn key(&self, access_key_id: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// A principal's long-term keys.
    async fn keys_of(&self, principal: &str) -> Result<Vec<KeyRecord>, StoreError>;
    /// Activates or deactivates a principal's key; false if no such key.
    async fn set_key_active(
        &self,
        principal: &str,
        access_key_id: &str,
        active: bool,
    ) -> Result<bool, StoreError>;
    /// Deletes a principal's key; false if no such key.
    async fn delete_key(&self, principal: &str, access_key_id: &str) -> Result<bool, StoreError>;
    /// Forgets expired temporary keys.
    async fn purge_expired_keys(&self, now_us: i64) -> Result<u64, StoreError>;

    /// Creates or replaces an inline policy.
    async fn put_inline_policy(&self, principal: &str, name: &str, document: &str) -> Result<(), StoreError>;
    /// Deletes an inline policy; false if absent.
    async fn delete_inline_policy(&self, principal: &str, name: &str) -> Result<bool, StoreError>;
    /// A principal's inline policies as (name, document), by name.
    async fn inline_policies(&self, principal: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Creates a managed policy; false if the name is taken.
    async fn create_managed_policy(&self, p: &ManagedPolicy) -> Result<bool, StoreError>;
    /// Deletes a managed policy that is attached nowhere.
    async fn delete_managed_policy(&self, name: &str) -> Result<Deleted, StoreError>;
    /// All managed policies, by name.
    async fn managed_policies(&self) -> Result<Vec<ManagedPolicy>, StoreError>;
    /// Attaches a managed policy (idempotent); false if the policy does not exist.
    async fn attach_policy(&self, principal: &str, policy: &str) -> Result<bool, StoreError>;
    /// Detaches; false if it was not attached.
    async fn detach_policy(&self, principal: &str, policy: &str) -> Result<bool, StoreError>;
    /// The managed policies attached to a principal, by name.
    async fn attached_policies(&self, principal: &str) -> Result<Vec<ManagedPolicy>, StoreError>;

    /// Adds or overwrites tags of an instance.
    async fn add_instance_tags(&self, instance_id: &str, tags: &[(String, String)])
        -> Result<(), StoreError>;
    /// Removes tags of an instance.
    async fn remove_instance_tags(&self, instance_id: &str, keys: &[String]) -> Result<(), StoreError>;
    /// Tags of one instance.
    async fn instance_tags(&self, instance_id: &str) -> Result<BTreeMap<String, String>, StoreError>;
    /// Tags of every instance.
    async fn all_instance_tags(&self) -> Result<HashMap<String, BTreeMap<String, String>>, StoreError>;

    /// Appends an audit event, chained to the previous one by hash.
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Audit events, newest first.
    async fn audit_events(&self, limit: i64, offset: i64) -> Result<Vec<AuditEvent>, StoreError>;
    /// Recomputes the audit log's hash chain and reports the first event that breaks it.
    async fn verify_audit_chain(&self) -> Result<ChainReport, StoreError>;
}
