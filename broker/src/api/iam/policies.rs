//! Inline policies of a user or role, managed policies, and their attachments.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{no_such, policy_arn, time, valid_name, Kind, On, Page};
use crate::api::{ApiError, Op};
use crate::app::{now_us, App};
use crate::authz::Gate;
use crate::policy::Policy;
use crate::store::{Deleted, ManagedPolicy};

/// PutUserPolicy's and PutRolePolicy's members besides the name.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct PutPolicy {
    policy_name: String,
    policy_document: String,
}

/// The members of Get/Delete{User,Role}Policy besides the name.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct InlineName {
    policy_name: String,
}

/// The members of Attach/Detach{User,Role}Policy besides the name.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct PolicyArn {
    policy_arn: String,
}

/// CreatePolicy's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct CreatePolicy {
    policy_name: String,
    policy_document: String,
    description: Option<String>,
}

/// DeletePolicy's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct DeletePolicy {
    policy_arn: String,
}

/// Checks a policy's name and document the way IAM does when it is attached.
pub(super) fn check_document(name: &str, doc: &str) -> Result<(), ApiError> {
    if !valid_name(name) {
        return Err(ApiError::bad(
            "InvalidInput",
            format!("PolicyName {name:?} is not valid ([A-Za-z0-9+=,.@_-]{{1,64}})"),
        ));
    }
    if doc.len() > 10_240 {
        return Err(ApiError::bad("LimitExceeded", "policy documents are limited to 10,240 characters"));
    }
    Policy::parse(name, doc).map(|_| ()).map_err(|e| ApiError::bad("MalformedPolicyDocument", e.to_string()))
}

/// The name of a managed policy of this account from its ARN.
fn managed_name(app: &App, arn: &str) -> Result<String, ApiError> {
    let prefix = policy_arn(app, "");
    arn.strip_prefix(&prefix)
        .filter(|n| valid_name(n))
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad("InvalidInput", format!("{arn} is not a policy ARN of this account")))
}

/// PutUserPolicy / PutRolePolicy.
pub(crate) async fn put_inline_policy<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, PutPolicy>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(op, &req.arn(app)).await?;
    req.existing(app).await?;
    check_document(&req.rest.policy_name, &req.rest.policy_document)?;
    app.store.put_inline_policy(&req.name, &req.rest.policy_name, &req.rest.policy_document).await?;
    Ok(json!({}))
}

/// GetUserPolicy / GetRolePolicy.
pub(crate) async fn get_inline_policy<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, InlineName>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(op, &req.arn(app)).await?;
    req.existing(app).await?;
    let policy = &req.rest.policy_name;
    let doc = app.store.inline_policies(&req.name).await?.into_iter().find(|(n, _)| n == policy);
    let Some((_, doc)) = doc else { return Err(no_such("policy", policy)) };
    Ok(json!({ K::MEMBER: req.name, "PolicyName": policy, "PolicyDocument": doc }))
}

/// DeleteUserPolicy / DeleteRolePolicy.
pub(crate) async fn delete_inline_policy<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, InlineName>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(op, &req.arn(app)).await?;
    req.existing(app).await?;
    if !app.store.delete_inline_policy(&req.name, &req.rest.policy_name).await? {
        return Err(no_such("policy", &req.rest.policy_name));
    }
    Ok(json!({}))
}

/// ListUserPolicies / ListRolePolicies.
pub(crate) async fn list_inline_policies<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, Page>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(op, &req.arn(app)).await?;
    req.existing(app).await?;
    let names: Vec<String> =
        app.store.inline_policies(&req.name).await?.into_iter().map(|(n, _)| n).collect();
    req.rest.answer("PolicyNames", names)
}

/// CreatePolicy: a managed policy of this account.
pub(crate) async fn create_policy(gate: &Gate<'_>, req: CreatePolicy) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::CreatePolicy, &policy_arn(app, &req.policy_name)).await?;
    check_document(&req.policy_name, &req.policy_document)?;
    if req.description.as_ref().is_some_and(|d| d.chars().count() > 1000) {
        return Err(ApiError::bad("ValidationError", "Description is at most 1000 characters"));
    }
    let record = ManagedPolicy {
        arn: policy_arn(app, &req.policy_name),
        name: req.policy_name,
        document: req.policy_document,
        created_us: now_us(),
    };
    if !app.store.create_managed_policy(&record).await? {
        return Err(ApiError::bad(
            "EntityAlreadyExists",
            format!("A policy called {} already exists.", record.name),
        ));
    }
    Ok(
        json!({ "Policy": { "PolicyName": record.name, "Arn": record.arn, "CreateDate": time(record.created_us) } }),
    )
}

/// DeletePolicy: refused while it is attached.
pub(crate) async fn delete_policy(gate: &Gate<'_>, req: DeletePolicy) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(Op::DeletePolicy, &req.policy_arn).await?;
    let policy = managed_name(app, &req.policy_arn)?;
    match app.store.delete_managed_policy(&policy).await? {
        Deleted::Yes => Ok(json!({})),
        Deleted::NotFound => Err(no_such("policy", &policy)),
        Deleted::Conflict(m) => Err(ApiError::bad("DeleteConflict", format!("Cannot delete: {m}."))),
    }
}

/// ListPolicies.
pub(crate) async fn list_policies(gate: &Gate<'_>, page: Page) -> Result<Value, ApiError> {
    gate.require(Op::ListPolicies, "*").await?;
    let list: Vec<Value> = gate
        .app
        .store
        .managed_policies()
        .await?
        .iter()
        .map(|p| json!({ "PolicyName": p.name, "Arn": p.arn, "CreateDate": time(p.created_us) }))
        .collect();
    page.answer("Policies", list)
}

/// AttachUserPolicy / AttachRolePolicy.
pub(crate) async fn attach_policy<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, PolicyArn>,
) -> Result<Value, ApiError> {
    set_attachment(gate, op, req, true).await
}

/// DetachUserPolicy / DetachRolePolicy.
pub(crate) async fn detach_policy<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, PolicyArn>,
) -> Result<Value, ApiError> {
    set_attachment(gate, op, req, false).await
}

/// Attaches (or detaches) the managed policy a request names, once `op` is authorized on the
/// principal.
async fn set_attachment<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, PolicyArn>,
    attach: bool,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(op, &req.arn(app)).await?;
    req.existing(app).await?;
    let policy = managed_name(app, &req.rest.policy_arn)?;
    let done = if attach {
        app.store.attach_policy(&req.name, &policy).await?
    } else {
        app.store.detach_policy(&req.name, &policy).await?
    };
    if !done {
        return Err(no_such("policy", &policy));
    }
    Ok(json!({}))
}

/// ListAttachedUserPolicies / ListAttachedRolePolicies.
pub(crate) async fn list_attached_policies<K: Kind>(
    gate: &Gate<'_>,
    op: Op,
    req: On<K, Page>,
) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.require(op, &req.arn(app)).await?;
    req.existing(app).await?;
    let list: Vec<Value> = app
        .store
        .attached_policies(&req.name)
        .await?
        .iter()
        .map(|p| json!({ "PolicyName": p.name, "PolicyArn": p.arn }))
        .collect();
    req.rest.answer("AttachedPolicies", list)
}
