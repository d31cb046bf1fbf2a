//! Identity administration (`AirlockIAM.*`) and AssumeRole (`AirlockSTS.AssumeRole`),
//! in IAM's and STS's shapes. Every operation is authorized as `iam:<Op>` / `sts:AssumeRole`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{paginate, parse, ApiError, Tag};
use crate::app::now_us;
use crate::authz::{decision_name, policies_of, Dialect, Gate};
use crate::keys;
use crate::policy::{evaluate, Context, Policy, Request};
use crate::store::{Deleted, KeyRecord, ManagedPolicy, PrincipalKind, PrincipalRecord};

/// The members IAM operations take; each operation reads the ones it needs.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct IamRequest {
    user_name: Option<String>,
    role_name: Option<String>,
    tags: Vec<Tag>,
    tag_keys: Vec<String>,
    access_key_id: Option<String>,
    status: Option<String>,
    policy_name: Option<String>,
    policy_document: Option<String>,
    policy_arn: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

/// AssumeRole's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AssumeRole {
    role_arn: String,
    role_session_name: String,
    duration_seconds: Option<i64>,
}

/// SimulatePrincipalPolicy's input.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Simulate {
    policy_source_arn: String,
    action_names: Vec<String>,
    #[serde(default)]
    resource_arns: Vec<String>,
    #[serde(default)]
    context_entries: Vec<ContextEntry>,
}

/// One simulated context key.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContextEntry {
    context_key_name: String,
    context_key_values: Vec<String>,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

fn no_such(what: &str, name: &str) -> ApiError {
    ApiError::bad("NoSuchEntity", format!("The {what} with name {name} cannot be found."))
}

fn time(us: i64) -> i64 {
    us / 1_000_000
}

fn principal_json(p: &PrincipalRecord) -> Value {
    let (name_key, id_key) =
        if p.kind == PrincipalKind::User { ("UserName", "UserId") } else { ("RoleName", "RoleId") };
    let tags: Vec<Tag> = p.tags.iter().map(|(k, v)| Tag { key: k.clone(), value: v.clone() }).collect();
    json!({ name_key: p.name, id_key: p.principal_id, "Arn": p.arn, "CreateDate": time(p.created_us), "Tags": tags })
}

/// Checks a policy document the way IAM does when it is attached.
fn check_document(name: &str, doc: &str) -> Result<(), ApiError> {
    if doc.len() > 10_240 {
        return Err(ApiError::bad("LimitExceeded", "policy documents are limited to 10,240 characters"));
    }
    Policy::parse(name, doc).map(|_| ()).map_err(|e| ApiError::bad("MalformedPolicyDocument", e.to_string()))
}

/// The `PolicyName` and checked `PolicyDocument` of a put or create request.
fn named_document(req: &IamRequest) -> Result<(String, String), ApiError> {
    let policy = req
        .policy_name
        .clone()
        .filter(|p| valid_name(p))
        .ok_or_else(|| ApiError::bad("InvalidInput", "PolicyName is missing or invalid"))?;
    let doc = req
        .policy_document
        .clone()
        .ok_or_else(|| ApiError::bad("InvalidInput", "PolicyDocument is required"))?;
    check_document(&policy, &doc)?;
    Ok((policy, doc))
}

fn managed_name_from_arn(gate: &Gate<'_>, arn: &str) -> Result<String, ApiError> {
    let prefix = format!("arn:airlock:iam::{}:policy/", gate.app.settings.account);
    arn.strip_prefix(&prefix)
        .filter(|n| valid_name(n))
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad("InvalidInput", format!("{arn} is not a policy ARN of this account")))
}

/// Runs one `AirlockIAM.<op>`.
pub async fn dispatch(gate: &Gate<'_>, op: &str, body: &[u8]) -> Result<Value, ApiError> {
    if op == "SimulatePrincipalPolicy" {
        gate.check_plain("iam:SimulatePrincipalPolicy", "*", Dialect::Iam).await?;
        return simulate(gate, parse(body)?).await;
    }
    let req: IamRequest = parse(body)?;
    let app = gate.app;
    let account = &app.settings.account;
    // Which principal the operation is about, and its kind.
    let (kind, name) = match (&req.user_name, &req.role_name) {
        (Some(u), None) => (Some(PrincipalKind::User), u.clone()),
        (None, Some(r)) => (Some(PrincipalKind::Role), r.clone()),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad("InvalidInput", "give UserName or RoleName, not both"))
        }
        (None, None) => (None, String::new()),
    };
    let resource = match (kind, &req.policy_arn, &req.policy_name) {
        (Some(k), _, _) => format!("arn:airlock:iam::{account}:{}/{name}", k.as_str()),
        (None, Some(arn), _) => arn.clone(),
        (None, None, Some(p)) => format!("arn:airlock:iam::{account}:policy/{p}"),
        _ => "*".to_owned(),
    };
    gate.check_plain(&format!("iam:{op}"), &resource, Dialect::Iam).await?;
    let needs_principal = |want: PrincipalKind| -> Result<String, ApiError> {
        match kind {
            Some(k) if k == want => Ok(name.clone()),
            _ => Err(ApiError::bad(
                "InvalidInput",
                format!("{op} needs {}", if want == PrincipalKind::User { "UserName" } else { "RoleName" }),
            )),
        }
    };
    let existing = |n: &str| {
        let n = n.to_owned();
        async move {
            app.store
                .principal(&n)
                .await?
                .filter(|p| Some(p.kind) == kind)
                .ok_or_else(|| no_such(kind.map(|k| k.as_str()).unwrap_or("entity"), &n))
        }
    };
    let result = match op {
        "CreateUser" | "CreateRole" => {
            let want = if op == "CreateUser" { PrincipalKind::User } else { PrincipalKind::Role };
            let name = needs_principal(want)?;
            if !valid_name(&name) {
                return Err(ApiError::bad(
                    "InvalidInput",
                    format!("{name:?} is not a valid name ([A-Za-z0-9+=,.@_-]{{1,64}})"),
                ));
            }
            super::check_tags(&req.tags)?;
            let record = PrincipalRecord {
                arn: format!("arn:airlock:iam::{account}:{}/{name}", want.as_str()),
                name,
                kind: want,
                principal_id: keys::principal_id(want),
                tags: req.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect(),
                created_us: now_us(),
            };
            if !app.store.create_principal(&record).await? {
                return Err(ApiError::bad(
                    "EntityAlreadyExists",
                    format!("A user or role named {} already exists.", record.name),
                ));
            }
            let key = if want == PrincipalKind::User { "User" } else { "Role" };
            json!({ key: principal_json(&record) })
        }
        "DeleteUser" | "DeleteRole" => {
            existing(&name).await?;
            match app.store.delete_principal(&name).await? {
                Deleted::Yes => json!({}),
                Deleted::NotFound => return Err(no_such("entity", &name)),
                Deleted::Conflict(m) => {
                    return Err(ApiError::bad("DeleteConflict", format!("Cannot delete: {m}.")))
                }
            }
        }
        "ListUsers" | "ListRoles" => {
            let want = if op == "ListUsers" { PrincipalKind::User } else { PrincipalKind::Role };
            let all: Vec<Value> = app.store.principals(want).await?.iter().map(principal_json).collect();
            let (page, next) =
                paginate(all, req.max_results.unwrap_or(100).clamp(1, 1000), req.next_token.as_deref())?;
            let mut out = json!({ if want == PrincipalKind::User { "Users" } else { "Roles" }: page, "IsTruncated": next.is_some() });
            if let Some(n) = next {
                out["Marker"] = json!(n);
            }
            out
        }
        "TagUser" | "TagRole" | "UntagUser" | "UntagRole" => {
            let p = existing(&name).await?;
            let mut tags: BTreeMap<String, String> = p.tags;
            if op.starts_with("Tag") {
                super::check_tags(&req.tags)?;
                tags.extend(req.tags.iter().map(|t| (t.key.clone(), t.value.clone())));
            } else {
                for k in &req.tag_keys {
                    tags.remove(k);
                }
            }
            app.store.set_principal_tags(&name, &tags).await?;
            json!({})
        }
        "CreateAccessKey" => {
            existing(&needs_principal(PrincipalKind::User)?).await?;
            if app.store.keys_of(&name).await?.len() >= 2 {
                return Err(ApiError::bad("LimitExceeded", format!("{name} already has 2 access keys.")));
            }
            let key = keys::mint(app.store.as_ref(), &app.master, &name).await.map_err(ApiError::internal)?;
            json!({ "AccessKey": { "UserName": name, "AccessKeyId": key.access_key_id, "Status": "Active",
                "SecretAccessKey": key.secret, "CreateDate": time(key.created_us) } })
        }
        "ListAccessKeys" => {
            existing(&needs_principal(PrincipalKind::User)?).await?;
            let list: Vec<Value> = app
                .store
                .keys_of(&name)
                .await?
                .iter()
                .map(|k| json!({ "UserName": name, "AccessKeyId": k.access_key_id,
                    "Status": if k.active { "Active" } else { "Inactive" }, "CreateDate": time(k.created_us) }))
                .collect();
            json!({ "AccessKeyMetadata": list, "IsTruncated": false })
        }
        "UpdateAccessKey" | "DeleteAccessKey" => {
            existing(&needs_principal(PrincipalKind::User)?).await?;
            let id = req.access_key_id.clone().unwrap_or_default();
            let done = if op == "UpdateAccessKey" {
                let active = match req.status.as_deref() {
                    Some("Active") => true,
                    Some("Inactive") => false,
                    other => {
                        return Err(ApiError::bad(
                            "InvalidInput",
                            format!("Status {other:?} must be Active or Inactive"),
                        ))
                    }
                };
                app.store.set_key_active(&name, &id, active).await?
            } else {
                app.store.delete_key(&name, &id).await?
            };
            if !done {
                return Err(ApiError::bad(
                    "NoSuchEntity",
                    format!("The Access Key with id {id} cannot be found."),
                ));
            }
            json!({})
        }
        "PutUserPolicy" | "PutRolePolicy" => {
            existing(&name).await?;
            let (policy, doc) = named_document(&req)?;
            app.store.put_inline_policy(&name, &policy, &doc).await?;
            json!({})
        }
        "GetUserPolicy" | "GetRolePolicy" => {
            existing(&name).await?;
            let policy = req.policy_name.clone().unwrap_or_default();
            let doc = app.store.inline_policies(&name).await?.into_iter().find(|(n, _)| *n == policy);
            let Some((_, doc)) = doc else { return Err(no_such("policy", &policy)) };
            let key = if op == "GetUserPolicy" { "UserName" } else { "RoleName" };
            json!({ key: name, "PolicyName": policy, "PolicyDocument": doc })
        }
        "DeleteUserPolicy" | "DeleteRolePolicy" => {
            existing(&name).await?;
            let policy = req.policy_name.clone().unwrap_or_default();
            if !app.store.delete_inline_policy(&name, &policy).await? {
                return Err(no_such("policy", &policy));
            }
            json!({})
        }
        "ListUserPolicies" | "ListRolePolicies" => {
            existing(&name).await?;
            let names: Vec<String> =
                app.store.inline_policies(&name).await?.into_iter().map(|(n, _)| n).collect();
            json!({ "PolicyNames": names, "IsTruncated": false })
        }
        "CreatePolicy" => {
            let (policy, doc) = named_document(&req)?;
            let record = ManagedPolicy {
                arn: format!("arn:airlock:iam::{account}:policy/{policy}"),
                name: policy,
                document: doc,
                created_us: now_us(),
            };
            if !app.store.create_managed_policy(&record).await? {
                return Err(ApiError::bad(
                    "EntityAlreadyExists",
                    format!("A policy called {} already exists.", record.name),
                ));
            }
            json!({ "Policy": { "PolicyName": record.name, "Arn": record.arn, "CreateDate": time(record.created_us) } })
        }
        "DeletePolicy" => {
            let policy = managed_name_from_arn(gate, req.policy_arn.as_deref().unwrap_or(""))?;
            match app.store.delete_managed_policy(&policy).await? {
                Deleted::Yes => json!({}),
                Deleted::NotFound => return Err(no_such("policy", &policy)),
                Deleted::Conflict(m) => {
                    return Err(ApiError::bad("DeleteConflict", format!("Cannot delete: {m}.")))
                }
            }
        }
        "ListPolicies" => {
            let list: Vec<Value> = app
                .store
                .managed_policies()
                .await?
                .iter()
                .map(|p| json!({ "PolicyName": p.name, "Arn": p.arn, "CreateDate": time(p.created_us) }))
                .collect();
            json!({ "Policies": list, "IsTruncated": false })
        }
        "AttachUserPolicy" | "AttachRolePolicy" | "DetachUserPolicy" | "DetachRolePolicy" => {
            existing(&name).await?;
            let policy = managed_name_from_arn(gate, req.policy_arn.as_deref().unwrap_or(""))?;
            let done = if op.starts_with("Attach") {
                app.store.attach_policy(&name, &policy).await?
            } else {
                app.store.detach_policy(&name, &policy).await?
            };
            if !done {
                return Err(no_such("policy", &policy));
            }
            json!({})
        }
        "ListAttachedUserPolicies" | "ListAttachedRolePolicies" => {
            existing(&name).await?;
            let list: Vec<Value> = app
                .store
                .attached_policies(&name)
                .await?
                .iter()
                .map(|p| json!({ "PolicyName": p.name, "PolicyArn": p.arn }))
                .collect();
            json!({ "AttachedPolicies": list, "IsTruncated": false })
        }
        "ListAuditEvents" => {
            let limit = req.max_results.unwrap_or(100).clamp(1, 1000) as i64;
            let offset: i64 = match req.next_token.as_deref() {
                None | Some("") => 0,
                Some(t) => t
                    .parse()
                    .map_err(|_| ApiError::bad("InvalidNextToken", "The specified token is not valid."))?,
            };
            let events = app.store.audit_events(limit + 1, offset).await?;
            let more = events.len() as i64 > limit;
            let list: Vec<Value> = events.iter().take(limit as usize).map(|e| json!({
                "Time": e.at_us / 1_000_000, "Principal": e.principal, "Action": e.action, "Resource": e.resource,
                "Decision": e.decision, "Policy": e.policy, "Sid": e.sid, "StatementIndex": e.statement_index,
                "SourceIp": e.source_ip })).collect();
            let mut out = json!({ "Events": list });
            if more {
                out["NextToken"] = json!((offset + limit).to_string());
            }
            out
        }
        "VerifyAuditLog" => {
            let report = app.store.verify_audit_chain().await?;
            let mut out =
                json!({ "Valid": report.valid, "Events": report.events, "Message": report.message });
            if let Some(seq) = report.first_broken_seq {
                out["FirstBrokenSeq"] = json!(seq);
            }
            out
        }
        other => {
            return Err(ApiError::bad(
                "UnknownOperationException",
                format!("AirlockIAM.{other} is not an operation"),
            ))
        }
    };
    if !op.starts_with("List") && !op.starts_with("Get") {
        app.policy_cache.clear();
    }
    Ok(result)
}

/// Issues temporary credentials for a role of this account.
pub async fn assume_role(gate: &Gate<'_>, req: AssumeRole) -> Result<Value, ApiError> {
    let app = gate.app;
    gate.check_plain("sts:AssumeRole", &req.role_arn, Dialect::Iam).await?;
    let prefix = format!("arn:airlock:iam::{}:role/", app.settings.account);
    let role_name = req.role_arn.strip_prefix(&prefix).ok_or_else(|| {
        ApiError::bad("ValidationError", format!("{} is not a role of this account", req.role_arn))
    })?;
    let role = app
        .store
        .principal(role_name)
        .await?
        .filter(|p| p.kind == PrincipalKind::Role)
        .ok_or_else(|| no_such("role", role_name))?;
    let session = &req.role_session_name;
    if !(2..=64).contains(&session.len())
        || !session.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
    {
        return Err(ApiError::bad(
            "ValidationError",
            "RoleSessionName must be 2 to 64 characters of [A-Za-z0-9+=,.@_-]",
        ));
    }
    let duration = req.duration_seconds.unwrap_or(3600);
    if !(900..=43_200).contains(&duration) {
        return Err(ApiError::bad("ValidationError", "DurationSeconds must be between 900 and 43200"));
    }
    let (id, secret) = (keys::key_id(true), keys::secret());
    let token = keys::random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 96);
    let expires = now_us() + duration * 1_000_000;
    app.store
        .insert_key(&KeyRecord {
            access_key_id: id.clone(),
            principal: role.name.clone(),
            secret_sealed: app.master.seal(&secret).map_err(ApiError::internal)?,
            active: true,
            created_us: now_us(),
            expires_us: Some(expires),
            token_hash: Some(hex::encode(Sha256::digest(token.as_bytes()))),
            session_name: Some(session.clone()),
        })
        .await?;
    let _ = app.store.purge_expired_keys(now_us()).await;
    Ok(json!({
        "Credentials": { "AccessKeyId": id, "SecretAccessKey": secret, "SessionToken": token, "Expiration": expires / 1_000_000 },
        "AssumedRoleUser": {
            "Arn": format!("arn:airlock:sts::{}:assumed-role/{}/{session}", app.settings.account, role.name),
            "AssumedRoleId": format!("{}:{session}", role.principal_id),
        },
    }))
}

/// Evaluates a principal's policies for actions and resources with a given context.
async fn simulate(gate: &Gate<'_>, req: Simulate) -> Result<Value, ApiError> {
    let app = gate.app;
    let name = req.policy_source_arn.rsplit('/').next().unwrap_or_default();
    let principal = app
        .store
        .principal(name)
        .await?
        .filter(|p| p.arn == req.policy_source_arn)
        .ok_or_else(|| no_such("principal", &req.policy_source_arn))?;
    let policies = policies_of(app, &principal.name).await?;
    let mut ctx = Context::new();
    if principal.kind == PrincipalKind::User {
        ctx.insert("aws:username", principal.name.clone());
    }
    ctx.insert("aws:userid", principal.principal_id.clone())
        .insert("aws:PrincipalArn", principal.arn.clone());
    for (k, v) in &principal.tags {
        ctx.insert(&format!("aws:PrincipalTag/{k}"), v.clone());
    }
    for e in &req.context_entries {
        ctx.insert_multi(&e.context_key_name, e.context_key_values.clone());
    }
    let resources = if req.resource_arns.is_empty() { vec!["*".to_owned()] } else { req.resource_arns };
    let mut results = Vec::new();
    for action in &req.action_names {
        for resource in &resources {
            let d = evaluate(&policies, &Request { action, resource, context: &ctx });
            let matched: Vec<Value> = d
                .statement
                .iter()
                .map(|s| json!({ "SourcePolicyId": s.policy.as_ref(), "Sid": s.sid.as_deref(), "StatementIndex": s.index }))
                .collect();
            results.push(json!({ "EvalActionName": action, "EvalResourceName": resource,
                "EvalDecision": decision_name(d.effect), "MatchedStatements": matched }));
        }
    }
    Ok(json!({ "EvaluationResults": results, "IsTruncated": false }))
}
