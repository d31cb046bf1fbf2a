//! `airlock iam …`: users, roles, access keys, inline and managed policies, simulation and the
//! audit log, with the AWS CLI's command and flag names.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::api::Service;
use crate::call::{ApiCall, Output};
use crate::iam_params::{load_document, parse_tag_keys, parse_tags};
use crate::simulate::SimulateArgs;

/// A request member, or nothing for an optional flag left out.
type Member = Option<(&'static str, Value)>;

/// A request body from its members, left-out ones skipped.
fn body<const N: usize>(members: [Member; N]) -> Value {
    Value::Object(members.into_iter().flatten().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// `--user-name`.
#[derive(Debug, Args)]
pub struct User {
    /// The user's name.
    #[arg(long, value_name = "NAME")]
    pub user_name: String,
}

/// `--role-name`.
#[derive(Debug, Args)]
pub struct Role {
    /// The role's name.
    #[arg(long, value_name = "NAME")]
    pub role_name: String,
}

/// `--policy-name`.
#[derive(Debug, Args)]
pub struct PolicyName {
    /// The policy's name.
    #[arg(long, value_name = "NAME")]
    pub policy_name: String,
}

/// `--policy-document`.
#[derive(Debug, Args)]
pub struct PolicyDocument {
    /// IAM policy JSON, inline or as file://PATH.
    #[arg(long, value_name = "JSON|file://PATH", value_parser = load_document)]
    pub policy_document: String,
}

/// `--assume-role-policy-document`.
#[derive(Debug, Args)]
pub struct TrustDocument {
    /// The role's trust policy: who may assume it (Principal), as JSON inline or file://PATH.
    #[arg(long, value_name = "JSON|file://PATH", value_parser = load_document)]
    pub assume_role_policy_document: Option<String>,
}

impl TrustDocument {
    fn member(self) -> Member {
        self.assume_role_policy_document.map(|d| ("AssumeRolePolicyDocument", json!(d)))
    }
}

/// `--policy-arn`.
#[derive(Debug, Args)]
pub struct PolicyArn {
    /// ARN of the managed policy, e.g. arn:airlock:iam::<account>:policy/<name>.
    #[arg(long, value_name = "ARN")]
    pub policy_arn: String,
}

/// `--access-key-id`.
#[derive(Debug, Args)]
pub struct AccessKey {
    /// The access key's id (AKIA…).
    #[arg(long, value_name = "ID")]
    pub access_key_id: String,
}

/// Optional `--tags` of a new user or role.
#[derive(Debug, Args)]
pub struct NewTags {
    /// Tags: Key=k,Value=v (repeat, or list several), or JSON [{"Key":"k","Value":"v"}].
    #[arg(long, value_name = "TAGS", num_args = 1.., value_parser = parse_tags)]
    pub tags: Vec<Vec<Value>>,
}

/// Required `--tags` of tag-user and tag-role.
#[derive(Debug, Args)]
pub struct Tags {
    /// Tags: Key=k,Value=v (repeat, or list several), or JSON [{"Key":"k","Value":"v"}].
    #[arg(long, value_name = "TAGS", num_args = 1.., required = true, value_parser = parse_tags)]
    pub tags: Vec<Vec<Value>>,
}

/// `--tag-keys`.
#[derive(Debug, Args)]
pub struct TagKeys {
    /// Keys of the tags to remove (list several, or JSON ["k1","k2"]).
    #[arg(long, value_name = "KEYS", num_args = 1.., required = true, value_parser = parse_tag_keys)]
    pub tag_keys: Vec<Vec<String>>,
}

/// Paging of `list-audit-events`.
#[derive(Debug, Args)]
pub struct AuditPage {
    /// Maximum events per page.
    #[arg(long, value_name = "N")]
    pub max_results: Option<i64>,
    /// Token from a previous page's NextToken.
    #[arg(long, value_name = "TOKEN")]
    pub next_token: Option<String>,
}

impl User {
    fn member(self) -> Member {
        Some(("UserName", json!(self.user_name)))
    }
}

impl Role {
    fn member(self) -> Member {
        Some(("RoleName", json!(self.role_name)))
    }
}

impl PolicyName {
    fn member(self) -> Member {
        Some(("PolicyName", json!(self.policy_name)))
    }
}

impl PolicyDocument {
    fn member(self) -> Member {
        Some(("PolicyDocument", json!(self.policy_document)))
    }
}

impl PolicyArn {
    fn member(self) -> Member {
        Some(("PolicyArn", json!(self.policy_arn)))
    }
}

impl AccessKey {
    fn member(self) -> Member {
        Some(("AccessKeyId", json!(self.access_key_id)))
    }
}

impl NewTags {
    fn member(self) -> Member {
        let tags: Vec<Value> = self.tags.into_iter().flatten().collect();
        (!tags.is_empty()).then_some(("Tags", Value::Array(tags)))
    }
}

impl Tags {
    fn member(self) -> Member {
        Some(("Tags", Value::Array(self.tags.into_iter().flatten().collect())))
    }
}

impl TagKeys {
    fn member(self) -> Member {
        Some(("TagKeys", json!(self.tag_keys.concat())))
    }
}

/// The `airlock iam` subcommands.
// The variants' fields are flattened clap argument groups: clap takes their `--help` text
// from the groups' own fields, not from the doc comments here.
#[derive(Debug, Subcommand)]
pub enum IamCommand {
    /// Create a user.
    CreateUser {
        /// The user.
        #[command(flatten)]
        user: User,
        /// Tags the new principal starts with.
        #[command(flatten)]
        tags: NewTags,
    },
    /// Delete a user (refused while it has access keys or policies).
    DeleteUser {
        /// The user.
        #[command(flatten)]
        user: User,
    },
    /// List the users.
    ListUsers,
    /// Add tags to a user, replacing the values of keys it has.
    TagUser {
        /// The user.
        #[command(flatten)]
        user: User,
        /// The tags to add.
        #[command(flatten)]
        tags: Tags,
    },
    /// Remove tags from a user.
    UntagUser {
        /// The user.
        #[command(flatten)]
        user: User,
        /// The keys of the tags to remove.
        #[command(flatten)]
        keys: TagKeys,
    },
    /// Create a role; without a trust policy it trusts the account (callers' own policies
    /// decide who may assume it).
    CreateRole {
        /// The role.
        #[command(flatten)]
        role: Role,
        /// The role's trust policy.
        #[command(flatten)]
        trust: TrustDocument,
        /// Tags the new principal starts with.
        #[command(flatten)]
        tags: NewTags,
    },
    /// Replace a role's trust policy.
    UpdateAssumeRolePolicy {
        /// The role.
        #[command(flatten)]
        role: Role,
        /// The trust policy, as JSON inline or file://PATH.
        #[arg(long, value_name = "JSON|file://PATH", value_parser = load_document)]
        policy_document: String,
    },
    /// Show a role, with its trust policy.
    GetRole {
        /// The role.
        #[command(flatten)]
        role: Role,
    },
    /// Show a user.
    GetUser {
        /// The user.
        #[command(flatten)]
        user: User,
    },
    /// Delete a role (refused while it has policies).
    DeleteRole {
        /// The role.
        #[command(flatten)]
        role: Role,
    },
    /// List the roles.
    ListRoles,
    /// Add tags to a role, replacing the values of keys it has.
    TagRole {
        /// The role.
        #[command(flatten)]
        role: Role,
        /// The tags to add.
        #[command(flatten)]
        tags: Tags,
    },
    /// Remove tags from a role.
    UntagRole {
        /// The role.
        #[command(flatten)]
        role: Role,
        /// The keys of the tags to remove.
        #[command(flatten)]
        keys: TagKeys,
    },
    /// Create an access key for a user; its secret is shown this once only.
    CreateAccessKey {
        /// The user.
        #[command(flatten)]
        user: User,
    },
    /// List a user's access keys (without their secrets).
    ListAccessKeys {
        /// The user.
        #[command(flatten)]
        user: User,
    },
    /// Activate or deactivate an access key.
    UpdateAccessKey {
        /// The user.
        #[command(flatten)]
        user: User,
        /// The access key.
        #[command(flatten)]
        key: AccessKey,
        /// Active keys sign requests; Inactive ones are refused.
        #[arg(long, value_parser = ["Active", "Inactive"])]
        status: String,
    },
    /// Delete an access key.
    DeleteAccessKey {
        /// The user.
        #[command(flatten)]
        user: User,
        /// The access key.
        #[command(flatten)]
        key: AccessKey,
    },
    /// Add or replace an inline policy of a user.
    PutUserPolicy {
        /// The user.
        #[command(flatten)]
        user: User,
        /// The policy's name.
        #[command(flatten)]
        name: PolicyName,
        /// The policy document (JSON).
        #[command(flatten)]
        document: PolicyDocument,
    },
    /// Show an inline policy of a user.
    GetUserPolicy {
        /// The user.
        #[command(flatten)]
        user: User,
        /// The policy's name.
        #[command(flatten)]
        name: PolicyName,
    },
    /// Delete an inline policy of a user.
    DeleteUserPolicy {
        /// The user.
        #[command(flatten)]
        user: User,
        /// The policy's name.
        #[command(flatten)]
        name: PolicyName,
    },
    /// List the names of a user's inline policies.
    ListUserPolicies {
        /// The user.
        #[command(flatten)]
        user: User,
    },
    /// Add or replace an inline policy of a role.
    PutRolePolicy {
        /// The role.
        #[command(flatten)]
        role: Role,
        /// The policy's name.
        #[command(flatten)]
        name: PolicyName,
        /// The policy document (JSON).
        #[command(flatten)]
        document: PolicyDocument,
    },
    /// Show an inline policy of a role.
    GetRolePolicy {
        /// The role.
        #[command(flatten)]
        role: Role,
        /// The policy's name.
        #[command(flatten)]
        name: PolicyName,
    },
    /// Delete an inline policy of a role.
    DeleteRolePolicy {
        /// The role.
        #[command(flatten)]
        role: Role,
        /// The policy's name.
        #[command(flatten)]
        name: PolicyName,
    },
    /// List the names of a role's inline policies.
    ListRolePolicies {
        /// The role.
        #[command(flatten)]
        role: Role,
    },
    /// Create a managed policy, to attach to users and roles.
    CreatePolicy {
        /// The policy's name.
        #[command(flatten)]
        name: PolicyName,
        /// The policy document (JSON).
        #[command(flatten)]
        document: PolicyDocument,
    },
    /// Delete a managed policy (refused while attached).
    DeletePolicy {
        /// The managed policy's ARN.
        #[command(flatten)]
        arn: PolicyArn,
    },
    /// List the managed policies.
    ListPolicies,
    /// Attach a managed policy to a user.
    AttachUserPolicy {
        /// The user.
        #[command(flatten)]
        user: User,
        /// The managed policy's ARN.
        #[command(flatten)]
        arn: PolicyArn,
    },
    /// Detach a managed policy from a user.
    DetachUserPolicy {
        /// The user.
        #[command(flatten)]
        user: User,
        /// The managed policy's ARN.
        #[command(flatten)]
        arn: PolicyArn,
    },
    /// Attach a managed policy to a role.
    AttachRolePolicy {
        /// The role.
        #[command(flatten)]
        role: Role,
        /// The managed policy's ARN.
        #[command(flatten)]
        arn: PolicyArn,
    },
    /// Detach a managed policy from a role.
    DetachRolePolicy {
        /// The role.
        #[command(flatten)]
        role: Role,
        /// The managed policy's ARN.
        #[command(flatten)]
        arn: PolicyArn,
    },
    /// List the managed policies attached to a user.
    ListAttachedUserPolicies {
        /// The user.
        #[command(flatten)]
        user: User,
    },
    /// List the managed policies attached to a role.
    ListAttachedRolePolicies {
        /// The role.
        #[command(flatten)]
        role: Role,
    },
    /// Evaluate a principal's policies for actions; exits 1 unless every one is allowed.
    #[command(visible_alias = "simulate-principal-policy")]
    Simulate(SimulateArgs),
    /// List audit events (who did what, which statement decided), newest first.
    ListAuditEvents(AuditPage),
    /// Console passwords and virtual MFA devices.
    #[command(flatten)]
    Login(crate::iam_login_cmd::LoginCommand),
}

impl IamCommand {
    /// The API call this command makes.
    pub fn into_call(self) -> ApiCall {
        use IamCommand as C;
        let (operation, body) = match self {
            C::CreateUser { user, tags } => ("CreateUser", body([user.member(), tags.member()])),
            C::DeleteUser { user } => ("DeleteUser", body([user.member()])),
            C::ListUsers => ("ListUsers", body([])),
            C::TagUser { user, tags } => ("TagUser", body([user.member(), tags.member()])),
            C::UntagUser { user, keys } => ("UntagUser", body([user.member(), keys.member()])),
            C::CreateRole { role, trust, tags } => {
                ("CreateRole", body([role.member(), trust.member(), tags.member()]))
            }
            C::UpdateAssumeRolePolicy { role, policy_document } => (
                "UpdateAssumeRolePolicy",
                body([role.member(), Some(("PolicyDocument", json!(policy_document)))]),
            ),
            C::GetRole { role } => ("GetRole", body([role.member()])),
            C::GetUser { user } => ("GetUser", body([user.member()])),
            C::DeleteRole { role } => ("DeleteRole", body([role.member()])),
            C::ListRoles => ("ListRoles", body([])),
            C::TagRole { role, tags } => ("TagRole", body([role.member(), tags.member()])),
            C::UntagRole { role, keys } => ("UntagRole", body([role.member(), keys.member()])),
            C::CreateAccessKey { user } => ("CreateAccessKey", body([user.member()])),
            C::ListAccessKeys { user } => ("ListAccessKeys", body([user.member()])),
            C::UpdateAccessKey { user, key, status } => {
                ("UpdateAccessKey", body([user.member(), key.member(), Some(("Status", json!(status)))]))
            }
            C::DeleteAccessKey { user, key } => ("DeleteAccessKey", body([user.member(), key.member()])),
            C::PutUserPolicy { user, name, document } => {
                ("PutUserPolicy", body([user.member(), name.member(), document.member()]))
            }
            C::GetUserPolicy { user, name } => ("GetUserPolicy", body([user.member(), name.member()])),
            C::DeleteUserPolicy { user, name } => ("DeleteUserPolicy", body([user.member(), name.member()])),
            C::ListUserPolicies { user } => ("ListUserPolicies", body([user.member()])),
            C::PutRolePolicy { role, name, document } => {
                ("PutRolePolicy", body([role.member(), name.member(), document.member()]))
            }
            C::GetRolePolicy { role, name } => ("GetRolePolicy", body([role.member(), name.member()])),
            C::DeleteRolePolicy { role, name } => ("DeleteRolePolicy", body([role.member(), name.member()])),
            C::ListRolePolicies { role } => ("ListRolePolicies", body([role.member()])),
            C::CreatePolicy { name, document } => ("CreatePolicy", body([name.member(), document.member()])),
            C::DeletePolicy { arn } => ("DeletePolicy", body([arn.member()])),
            C::ListPolicies => ("ListPolicies", body([])),
            C::AttachUserPolicy { user, arn } => ("AttachUserPolicy", body([user.member(), arn.member()])),
            C::DetachUserPolicy { user, arn } => ("DetachUserPolicy", body([user.member(), arn.member()])),
            C::AttachRolePolicy { role, arn } => ("AttachRolePolicy", body([role.member(), arn.member()])),
            C::DetachRolePolicy { role, arn } => ("DetachRolePolicy", body([role.member(), arn.member()])),
            C::ListAttachedUserPolicies { user } => ("ListAttachedUserPolicies", body([user.member()])),
            C::ListAttachedRolePolicies { role } => ("ListAttachedRolePolicies", body([role.member()])),
            C::Login(cmd) => return cmd.into_call(),
            C::Simulate(args) => {
                let call = ApiCall::new(Service::Iam, "SimulatePrincipalPolicy", args.body());
                return ApiCall { output: Output::Simulation(args.output), ..call };
            }
            C::ListAuditEvents(page) => (
                "ListAuditEvents",
                body([
                    page.max_results.map(|n| ("MaxResults", json!(n))),
                    page.next_token.map(|t| ("NextToken", json!(t))),
                ]),
            ),
        };
        ApiCall::new(Service::Iam, operation, body)
    }
}

#[cfg(test)]
#[path = "iam_cmd_tests.rs"]
mod tests;
